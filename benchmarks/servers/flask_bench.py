"""(a) flask_chatkit: Flask + Flask-Login + ``SQLAlchemyStore``, under gunicorn's gevent worker.

::

    BENCH_DATABASE_URL=sqlite:////tmp/b.sqlite3 gunicorn -k gevent -w 1 \\
        --worker-connections 10000 --backlog 4096 -b 127.0.0.1:8000 \\
        benchmarks.servers.flask_bench:app

Users come from bearer tokens ``token-<i>`` (a ``request_loader`` that accepts
any ``i`` without a database lookup). The respond hook streams K deltas with
``time.sleep(d)`` between them (gevent's sleep: the module patches first, like
``wsgi.py``). Everything else is flask_chatkit's defaults, heartbeats (15 s)
included. For PostgreSQL the pool is SQLAlchemy's default (5 + 10 overflow)
unless ``BENCH_POOL_SIZE`` / ``BENCH_MAX_OVERFLOW`` say otherwise: the store
holds a connection only for each short transaction, not for the stream.
``BENCH_PROFILE=<file>`` writes a cProfile of the worker when it exits.
"""

from gevent import monkey

monkey.patch_all()

import os  # noqa: E402
import time  # noqa: E402
import typing as t  # noqa: E402

import sqlalchemy as sa  # noqa: E402
from flask import Flask  # noqa: E402
from flask_login import LoginManager  # noqa: E402
from flask_login import UserMixin  # noqa: E402
from flask_sqlalchemy import SQLAlchemy  # noqa: E402

from flask_chatkit import ChatKit  # noqa: E402
from flask_chatkit.sqlalchemy_store import SQLAlchemyStore  # noqa: E402
from flask_chatkit.responses import stream_text  # noqa: E402

from . import database_url  # noqa: E402
from . import settings  # noqa: E402
from . import sqlite_pragmas  # noqa: E402
from . import user_of  # noqa: E402


class BenchUser(UserMixin):
    def __init__(self, user_id: str) -> None:
        self.id = user_id


def create_app() -> Flask:
    k, delay, chunk = settings()
    app = Flask(__name__)
    app.config["SECRET_KEY"] = "bench"
    app.config["SQLALCHEMY_DATABASE_URI"] = database_url()
    engine_options: dict[str, t.Any] = {}
    if os.environ.get("BENCH_POOL_SIZE"):
        engine_options["pool_size"] = int(os.environ["BENCH_POOL_SIZE"])
    if os.environ.get("BENCH_MAX_OVERFLOW"):
        engine_options["max_overflow"] = int(os.environ["BENCH_MAX_OVERFLOW"])
    # how long a request may wait for a pooled connection; the official server's
    # stand-in pool waits without a limit, so this one waits long too
    engine_options["pool_timeout"] = float(os.environ.get("BENCH_POOL_TIMEOUT", "300"))
    app.config["SQLALCHEMY_ENGINE_OPTIONS"] = engine_options

    db = SQLAlchemy()
    db.init_app(app)
    login = LoginManager()
    login.init_app(app)

    @login.user_loader
    def load_user(user_id: str) -> BenchUser:
        return BenchUser(user_id)

    @login.request_loader
    def load_user_from_token(request: t.Any) -> BenchUser | None:
        user_id = user_of(request.headers.get("Authorization"))
        return BenchUser(user_id) if user_id is not None else None

    chatkit = ChatKit(store=SQLAlchemyStore(db))

    @chatkit.respond
    def respond(thread: t.Any, user_message: t.Any, context: t.Any) -> t.Iterator[t.Any]:
        def chunks() -> t.Iterator[str]:
            for i in range(k):
                if i:
                    time.sleep(delay)
                yield chunk

        yield from stream_text(thread, chunks())

    chatkit.init_app(app)

    @app.get("/health")
    def health() -> str:
        return "ok"

    with app.app_context():
        if db.engine.dialect.name == "sqlite" and sqlite_pragmas():
            @sa.event.listens_for(db.engine, "connect")
            def _pragmas(connection: t.Any, record: t.Any) -> None:
                cursor = connection.cursor()
                for pragma in sqlite_pragmas():
                    cursor.execute(pragma)
                cursor.close()

            db.engine.dispose()  # connections made before the listener get the pragmas too
        db.create_all()
    return app


app = create_app()

if os.environ.get("BENCH_PROFILE"):  # cProfile of the worker, written when it exits
    import atexit
    import cProfile

    _profiler = cProfile.Profile()
    _profiler.enable()
    atexit.register(lambda: _profiler.dump_stats(os.environ["BENCH_PROFILE"]))
