"""A small app for the fault tests (``tests/test_faults.py``), served by gunicorn.

``gunicorn -k gevent tests.fault_app:app`` from the repository root. Not
imported by the test process (it patches the standard library with gevent).

Environment:

- ``FAULT_DATABASE_URL``: the SQLAlchemy URL (SQLite file or PostgreSQL); the
  tables must exist (the tests create them before starting the server).
- ``FAULT_DELTAS`` / ``FAULT_DELAY`` / ``FAULT_DELTA_SIZE``: the answer's number
  of text deltas, the seconds between them, and the length of each; a user
  message ``n=<deltas> delay=<s> size=<chars> ...`` overrides them per turn.
- ``CHATKIT_TURN_TIMEOUT``, ``CHATKIT_HEARTBEAT_INTERVAL``, ``CHATKIT_DISCONNECT``,
  ``CHATKIT_MAX_DETACHED_TURNS``, ``CHATKIT_MAX_TURNS_PER_USER``,
  ``CHATKIT_TURN_LEASE``: as in the extension.
- ``FAULT_SQLITE_DELAY``: set, SQLite connections get a SQL function
  ``fault_delay(seconds)`` that blocks the thread running the statement (the
  real ``time.sleep``): a trigger calling it makes a write slow on purpose.

Users come from bearer tokens ``token-<user>`` (any user, no lookup).
``GET /_stats`` (this test app only) reports the worker's live greenlets, the
pool's checked-out connections, its RSS, its pid, and the store's group-commit
``batches`` and ``writes``.
"""

from gevent import monkey

monkey.patch_all()

import gc  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import time  # noqa: E402
import typing as t  # noqa: E402

import greenlet  # noqa: E402
import sqlalchemy as sa  # noqa: E402
from flask import Flask  # noqa: E402
from flask import jsonify  # noqa: E402
from flask_login import LoginManager  # noqa: E402
from flask_login import UserMixin  # noqa: E402
from flask_sqlalchemy import SQLAlchemy  # noqa: E402
from gevent import get_hub  # noqa: E402

from flask_chatkit import ChatKit  # noqa: E402
from flask_chatkit.auth import bearer_token  # noqa: E402
from flask_chatkit.sqlalchemy_store import SQLAlchemyStore  # noqa: E402
from flask_chatkit.streaming import stream_text  # noqa: E402
from flask_chatkit.streaming import user_text  # noqa: E402

SETTING = re.compile(r"\b(n|delay|size)=([0-9.]+)")


class User(UserMixin):
    def __init__(self, user_id: str) -> None:
        self.id = user_id


def delta(index: int, size: int) -> str:
    """The *index*-th delta: ``<index>`` padded with dots to *size* characters."""
    head = f"<{index}>"
    return head + "." * max(0, size - len(head))


def full_text(deltas: int, size: int) -> str:
    """The whole answer to a turn of *deltas* deltas of *size* characters."""
    return "".join(delta(i, size) for i in range(deltas))


def live_greenlets() -> int:
    """Greenlets that are not dead, except the hub (this request's own included)."""
    hub = get_hub()
    return sum(
        1
        for obj in gc.get_objects()
        if isinstance(obj, greenlet.greenlet) and not obj.dead and obj is not hub
    )


def rss_kib() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def create_app() -> Flask:
    app = Flask(__name__)
    url = os.environ["FAULT_DATABASE_URL"]
    app.config.update(
        SECRET_KEY="fault-tests",
        SQLALCHEMY_DATABASE_URI=url,
        CHATKIT_TURN_TIMEOUT=float(os.environ.get("CHATKIT_TURN_TIMEOUT", 120)),
        CHATKIT_HEARTBEAT_INTERVAL=float(os.environ.get("CHATKIT_HEARTBEAT_INTERVAL", 15)),
        CHATKIT_DISCONNECT=os.environ.get("CHATKIT_DISCONNECT", "cancel"),
        CHATKIT_MAX_DETACHED_TURNS=int(os.environ.get("CHATKIT_MAX_DETACHED_TURNS", 100)),
        CHATKIT_MAX_TURNS_PER_USER=os.environ.get("CHATKIT_MAX_TURNS_PER_USER"),
        CHATKIT_TURN_LEASE=float(os.environ.get("CHATKIT_TURN_LEASE", 15)),
    )
    options: dict[str, t.Any] = {"pool_pre_ping": True}
    if not url.startswith("sqlite"):
        options.update(pool_size=10, max_overflow=20, pool_timeout=30)
    app.config["SQLALCHEMY_ENGINE_OPTIONS"] = options

    login = LoginManager(app)

    @login.request_loader
    def load_from_token(request: t.Any) -> User | None:
        token = bearer_token(request)
        if token and token.startswith("token-") and len(token) > 6:
            return User(token[6:])
        return None

    db = SQLAlchemy(app)
    store = SQLAlchemyStore(db)
    chatkit = ChatKit(app, store=store)
    if os.environ.get("FAULT_SQLITE_DELAY"):
        blocking_sleep = monkey.get_original("time", "sleep")

        def add_delay_function(dbapi_connection: t.Any, record: t.Any) -> None:
            dbapi_connection.create_function("fault_delay", 1, blocking_sleep)

        with app.app_context():
            sa.event.listen(db.engine, "connect", add_delay_function)
            db.engine.dispose()
    defaults = {
        "n": int(os.environ.get("FAULT_DELTAS", 20)),
        "delay": float(os.environ.get("FAULT_DELAY", 0.05)),
        "size": int(os.environ.get("FAULT_DELTA_SIZE", 8)),
    }

    @chatkit.respond
    def respond(thread: t.Any, message: t.Any, context: t.Any) -> t.Iterator[t.Any]:
        settings: dict[str, t.Any] = dict(defaults)
        for key, value in SETTING.findall(user_text(message) if message else ""):
            settings[key] = float(value) if key == "delay" else int(value)

        def chunks() -> t.Iterator[str]:
            for index in range(settings["n"]):
                if settings["delay"]:
                    time.sleep(settings["delay"])
                yield delta(index, settings["size"])

        yield from stream_text(thread, chunks())

    @app.get("/_stats")
    def stats() -> t.Any:
        pool = db.engine.pool
        checked_out = pool.checkedout() if hasattr(pool, "checkedout") else 0
        return jsonify(
            greenlets=live_greenlets(),
            checkedout=checked_out,
            rss_kib=rss_kib(),
            pid=os.getpid(),
            **store.group_commit_stats(),
        )

    return app


app = create_app()
