"""A small app serving ChatKit with flask_chatkit: logins, tokens, a demo responder.

Without ``OPENAI_API_KEY`` an offline demo answers (no network); with it, an
OpenAI model does (see :mod:`example_app.assistant`).

Run it with ``flask --app example_app run`` or, for real streaming,
``gunicorn -k gevent --worker-connections 10000 wsgi:app``. On first start it
creates a ``demo`` user and prints the password. With ``DATABASE_URL`` set to
a server database (PostgreSQL), create the tables with
``flask --app example_app db upgrade heads`` before the first start.
"""

from __future__ import annotations

import logging
import os
import time
import typing as t

import click
import sqlalchemy as sa
from flask import Flask
from flask import current_app

from flask_chatkit.access_log import JSONFormatter

from . import auth  # registers the Flask-Login loaders
from . import cli
from . import demo  # registers the ChatKit hooks
from .assistant import bind_responder
from .config import configure
from .extensions import chatkit
from .extensions import db
from .extensions import login_manager
from .extensions import migrate
from .extensions import store
from .models import DEMO_USERNAME
from .models import User
from .models import ensure_demo_user
from .models import find_user
from .views import bp

#: The app's Alembic folder: its own revisions; flask_chatkit's come from the package.
MIGRATIONS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "migrations")


def create_app(test_config: t.Mapping[str, t.Any] | None = None) -> Flask:
    """Build the app.

    Configuration comes from defaults, then the environment (every
    ``CHATKIT_*`` variable, ``SECRET_KEY``, ``DATABASE_URL``, ``OPENAI_API_KEY``,
    ``OPENAI_BASE_URL``, ``MCP_SERVER_COMMAND``, ``MCP_SERVER_URL``), then
    *test_config*. With ``OPENAI_API_KEY`` set, the model responder answers
    (kept in ``app.extensions["example_responder"]``), else the offline demo.
    The instance folder is ``EXAMPLE_INSTANCE_PATH`` if set.
    On SQLite the tables are created on first start (``CREATE_TABLES``
    defaults to true there); other databases are migrated with
    ``flask --app example_app db upgrade heads``. Once the tables exist, the
    demo user is created if there are no users, and a few pooled connections
    are opened. A database that is down (or not migrated yet) does not stop
    the start: see :class:`StartupStep`.
    """
    instance_path = os.environ.get("EXAMPLE_INSTANCE_PATH")
    app = Flask(
        __name__,
        instance_path=os.path.abspath(instance_path) if instance_path else None,
    )
    os.makedirs(app.instance_path, exist_ok=True)
    configure(app, test_config)
    configure_logging(os.environ.get("LOG_FORMAT", ""))

    db.init_app(app)
    migrate.init_app(app, db, directory=MIGRATIONS)
    login_manager.init_app(app)
    chatkit.init_app(app)
    app.extensions[auth.TOKEN_CACHE] = auth.TokenCache(float(app.config["TOKEN_CACHE_SECONDS"]))
    app.register_blueprint(bp)
    cli.register(app)

    # with OPENAI_API_KEY the model answers; the demo's hooks hand over to it
    bind_responder(app, action_fallback=lambda: demo.widget_action)
    # Under `flask --app example_app ...` the commands say what the database lacks
    # themselves (see cli.needs_tables), and a server start is not announced.
    startup = StartupStep(serving=click.get_current_context(silent=True) is None)
    with app.app_context():
        startup.run(app, warm_up=True)

    @app.before_request
    def finish_startup() -> None:
        startup.retry(app)

    # The pages' answer to an unreachable database (/chatkit has its own: 503 JSON).
    app.register_error_handler(sa.exc.OperationalError, database_unavailable)
    app.register_error_handler(sa.exc.InterfaceError, database_unavailable)
    app.register_error_handler(sa.exc.TimeoutError, database_unavailable)
    return app


#: Errors meaning the database cannot be reached (down, restarting, pool exhausted).
UNREACHABLE = (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.TimeoutError)
#: Seconds between two tries of an unfinished start-up step (one per process).
RETRY_INTERVAL = 1.0
#: Pooled connections opened at start-up (at most the pool size).
WARM_CONNECTIONS = 2


class StartupStep:
    """What start-up does with the database: tables (SQLite), the demo user, and a
    warm connection pool.

    When the database is unreachable (or has no tables yet), the app starts and
    serves anyway: requests that need the database answer 503 until it is back.
    The step is then retried before requests, at most once per
    :data:`RETRY_INTERVAL`, until it completes, so nothing needs a restart
    (the pool then fills as requests need connections).
    """

    def __init__(self, *, serving: bool = True) -> None:
        #: False under the ``flask`` command: its commands say what is wrong themselves.
        self.serving = serving
        self.done = False
        self.next_try = 0.0
        self.warned: set[str] = set()

    def retry(self, app: Flask) -> None:
        """Before a request: run the unfinished step again, if it is time."""
        if not self.done and time.monotonic() >= self.next_try:
            self.run(app)

    def run(self, app: Flask, *, warm_up: bool = False) -> None:
        # claimed before any I/O: concurrent requests (greenlets) do not pile up here
        self.next_try = time.monotonic() + RETRY_INTERVAL
        try:
            self.done = prepare_database(app, self.warn_once)
            db.session.remove()  # give its connection back: the warm-up may need the pool
            pool_size = app.config["SQLALCHEMY_ENGINE_OPTIONS"].get("pool_size")
            if warm_up and pool_size:
                # with gunicorn, create_app runs in each worker (without --preload),
                # so these connections belong to the worker that uses them
                store.warm_up(min(pool_size, WARM_CONNECTIONS))
        except UNREACHABLE as exc:
            self.warn_once(
                app,
                "unreachable",
                "The database is unreachable (%s). Serving anyway: requests that need it "
                "answer 503 until it is back, then the app reconnects on its own.",
                describe(exc),
            )
        finally:
            db.session.remove()
        if self.done and "unreachable" in self.warned:
            app.logger.warning("The database is reachable again.")

    def warn_once(self, app: Flask, key: str, message: str, *args: t.Any) -> None:
        if self.serving and key not in self.warned:
            self.warned.add(key)
            app.logger.warning(message, *args)


def prepare_database(app: Flask, warn: t.Callable[..., None]) -> bool:
    """Create the tables when configured to, and the demo user if there are no
    users; ``False`` if the tables do not exist yet.

    :raises sqlalchemy.exc.OperationalError: (and the other :data:`UNREACHABLE`
        errors) when the database cannot be reached.
    """
    if app.config.get("CREATE_TABLES", db.engine.dialect.name == "sqlite"):
        create_tables()
    elif not sa.inspect(db.engine).has_table(User.__tablename__):
        warn(
            app,
            "no tables",
            "The database has no tables yet; create them with "
            "'flask --app example_app db upgrade heads'.",
        )
        return False
    if app.config["DEMO_USER"]:
        password = ensure_demo_user()
        if password is not None:
            app.logger.warning("Demo login: username=%s password=%s", DEMO_USERNAME, password)
        elif find_user(DEMO_USERNAME) is not None:
            # the password was printed once, on the first start; never again
            warn(
                app,
                "demo user",
                "The demo user %r exists (its password was printed on the first start); "
                "set a new one with 'flask --app example_app set-password %s'.",
                DEMO_USERNAME,
                DEMO_USERNAME,
            )
    return True


def configure_logging(log_format: str) -> None:
    """``LOG_FORMAT=json``: flask_chatkit's lines (access lines included) to stderr as
    JSON objects; ``text``: as text with the request id; otherwise left to Python's
    defaults (warnings only). Once per process."""
    log_format = log_format.strip().lower()
    chatkit_logger = logging.getLogger("flask_chatkit")
    if log_format not in ("json", "text") or any(
        getattr(h, "example_app", False) for h in chatkit_logger.handlers
    ):
        return
    handler = logging.StreamHandler()
    handler.example_app = True  # type: ignore[attr-defined]
    handler.setFormatter(
        JSONFormatter()
        if log_format == "json"
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")
    )
    chatkit_logger.addHandler(handler)
    chatkit_logger.setLevel(logging.INFO)


def describe(exc: Exception) -> str:
    """The first line of the driver's message: what went wrong, without a traceback."""
    cause = getattr(exc, "orig", None) or exc
    lines = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {lines[0]}" if lines else type(cause).__name__


def database_unavailable(error: Exception) -> tuple[str, int, dict[str, str]]:
    """A page's request failed because the database is unreachable: 503, no traceback."""
    current_app.logger.warning("Database unavailable: %s", describe(error))
    page = (
        "<!doctype html><title>Unavailable</title><h1>Service unavailable</h1>"
        "<p>The database is unavailable right now; try again in a moment.</p>"
    )
    return page, 503, {"Content-Type": "text/html; charset=utf-8", "Retry-After": "5"}


def create_tables() -> None:
    """``db.create_all()``, tolerating another worker creating the tables at the same time."""
    for attempt in range(3):
        try:
            db.create_all()
            return
        except (sa.exc.OperationalError, sa.exc.ProgrammingError, sa.exc.IntegrityError):
            # Lost a race ("table ... already exists"): the next pass sees that table.
            if attempt == 2:
                raise


__all__ = ["create_app"]
