"""Fixtures: an app per test (parametrized over stores, all built by ``make_app``),
users, and ``flask_chatkit.testing.ChatKitClient``, the shipped test client that
validates every ``/chatkit`` exchange with the official models (``tests/wire.py``).

Stores: ``memory``, ``sqlalchemy`` (SQLite file) and ``postgresql`` (SQLAlchemyStore
on a throwaway PostgreSQL server started once per session from the OS binaries, see
``tests/pg.py``). Without PostgreSQL binaries the ``postgresql`` tests are skipped,
unless ``CHATKIT_REQUIRE_POSTGRES=1`` (set by CI) turns that into a failure.
"""

from __future__ import annotations

import functools
import os
import shutil
import sys
import tempfile
import typing as t
import uuid
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from flask import Flask
from flask_login import LoginManager
from flask_login import UserMixin
from flask_login import login_user
from flask_sqlalchemy import SQLAlchemy
from werkzeug.security import generate_password_hash

from flask_chatkit import ChatKit
from flask_chatkit import InMemoryStore
from flask_chatkit.auth import bearer_token
from flask_chatkit.sqlalchemy_store import SQLAlchemyStore
from flask_chatkit.testing import ChatKitClient

# the suite's judge needs the official openai-chatkit models, so every client's
# default WireCheck validates with them (tests/test_testing.py checks it does)
from . import wire  # noqa: F401
from .pg import PostgresServer
from .pg import find_bin_dir

ORIGIN = ChatKitClient.origin
USERS = ("alice", "bob")


class User(UserMixin):
    def __init__(self, user_id: str) -> None:
        self.id = user_id


# --- PostgreSQL ------------------------------------------------------------------------

REQUIRE_POSTGRES = os.environ.get("CHATKIT_REQUIRE_POSTGRES") == "1"
SKIP_REASON = (
    "PostgreSQL binaries not found (apt-get install postgresql): skipping PostgreSQL tests"
)
SHARED_DB = "chatkit_tests"
_pg: dict[str, t.Any] = {"server": None, "version": None, "error": None}
# the clean shared database of the running ``postgresql`` test, for make_app
_pg_current: list[str] = []
# SQLAlchemy() instances of this test's apps, disposed after it (open pooled psycopg
# connections would otherwise be garbage-collected with a ResourceWarning)
_engines_to_dispose: list[tuple[Flask, SQLAlchemy]] = []


def pytest_report_header(config: pytest.Config) -> str:
    return f"PostgreSQL: {_pg_plan()}"


def _pg_plan() -> str:
    bin_dir = find_bin_dir()
    if bin_dir is None:
        if REQUIRE_POSTGRES:
            return "binaries not found, and CHATKIT_REQUIRE_POSTGRES=1: PostgreSQL tests FAIL"
        return "binaries not found (apt-get install postgresql): PostgreSQL tests are SKIPPED"
    return f"tests run on a throwaway server from {bin_dir}"


def pytest_terminal_summary(terminalreporter: t.Any) -> None:
    if _pg["server"] is not None:
        line = f"PostgreSQL: tests ran on PostgreSQL {_pg['version']} (throwaway server, stopped)"
    elif _pg["error"] is not None:
        line = f"PostgreSQL: tests did NOT run: {_pg['error']}"
    elif find_bin_dir() is None and not REQUIRE_POSTGRES:
        line = SKIP_REASON
    else:
        line = "PostgreSQL: no selected test needed it"
    terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def postgres() -> t.Iterator[PostgresServer]:
    """A started throwaway PostgreSQL server for the whole session (skips without binaries)."""
    if find_bin_dir() is None:
        if REQUIRE_POSTGRES:
            _pg["error"] = "binaries not found but CHATKIT_REQUIRE_POSTGRES=1"
            pytest.fail(
                "CHATKIT_REQUIRE_POSTGRES=1 but PostgreSQL binaries (initdb, pg_ctl) were not"
                " found: apt-get install postgresql",
                pytrace=False,
            )
        pytest.skip(SKIP_REASON)
    server = PostgresServer()
    try:
        try:
            server.start()
        except Exception as exc:
            _pg["error"] = f"the server did not start: {str(exc).splitlines()[0]}"
            raise
        with server.admin() as conn:
            _pg["version"] = conn.info.parameter_status("server_version")
        server.create_database(SHARED_DB)
        _pg["server"] = server
        yield server
    finally:
        if "admin" in _pg:
            _pg.pop("admin").close()
        server.cleanup()


@pytest.fixture
def postgres_db(postgres: PostgresServer) -> t.Iterator[str]:
    """The URL of a fresh, empty database of its own, dropped after the test."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    url = postgres.create_database(name)
    try:
        yield url
    finally:
        postgres.drop_database(name)


@pytest.fixture
def postgres_clean_db(postgres: PostgresServer) -> t.Iterator[str]:
    """The URL of the session's shared database, emptied for this test.

    Far cheaper than a database per test: the store's tables (``chatkit_*``) that
    ``db.create_all()`` made for an earlier test stay and only lose their rows; any
    other table an earlier test created is dropped. A test that needs a schema of
    its own (migrations, changed models) uses ``postgres_db`` instead.
    """
    postgres.start()  # no-op, unless a test stopped the server
    try:
        _reset_shared_db(postgres)
    except psycopg.OperationalError:  # the kept connection died with a server restart
        if "admin" not in _pg:
            raise
        _pg.pop("admin").close()
        _reset_shared_db(postgres)
    url = postgres.url(SHARED_DB)
    _pg_current.append(url)
    try:
        yield url
    finally:
        _pg_current.remove(url)


RESET_SQL = """
DO $$
DECLARE tbl text;
BEGIN
    -- leftovers of an earlier test (a leaked connection) must not block the reset
    PERFORM pg_terminate_backend(pid) FROM pg_stat_activity
        WHERE datname = current_database() AND pid <> pg_backend_pid();
    FOR tbl IN SELECT tablename FROM pg_tables WHERE schemaname = 'public' LOOP
        IF tbl LIKE 'chatkit\\_%' THEN
            EXECUTE 'DELETE FROM ' || quote_ident(tbl);
        ELSE
            EXECUTE 'DROP TABLE IF EXISTS ' || quote_ident(tbl) || ' CASCADE';
        END IF;
    END LOOP;
END $$
"""


def _reset_shared_db(postgres: PostgresServer) -> None:
    """Delete every row of the shared database, in one round trip on a kept connection;
    the store's tables are made once, by the first test that needs them."""
    if "admin" not in _pg:
        conn = postgres.admin(SHARED_DB)
        conn.execute("SET lock_timeout = '10s'")
        _pg["admin"] = conn
    _pg["admin"].execute(RESET_SQL)
    if not _pg.get("schema"):
        create_schema(postgres.url(SHARED_DB))
        _pg["schema"] = True


def create_schema(url: str) -> None:
    """The store's tables (``chatkit_*``), as ``db.create_all()`` makes them, at *url*."""
    db = SQLAlchemy()  # no app: only its metadata is used
    SQLAlchemyStore(db)
    engine = sa.create_engine(url)
    try:
        db.metadata.create_all(engine)
    finally:
        engine.dispose()


# a SQLite file holding the store's tables, made once per session and copied for
# each test (a copy costs far less than creating the tables and their indexes)
_sqlite_schema: list[Path] = []


def _sqlite_template() -> Path:
    if not _sqlite_schema:
        path = Path(tempfile.mkdtemp(prefix="chatkit-tests-")) / "schema.db"
        create_schema(f"sqlite:///{path}")
        _sqlite_schema.append(path)
    return _sqlite_schema[0]


def pytest_unconfigure(config: pytest.Config) -> None:
    for path in _sqlite_schema:
        shutil.rmtree(path.parent, ignore_errors=True)


def dispose_after_test(app: Flask, db: SQLAlchemy) -> None:
    """Close *db*'s pooled connections when the running test ends."""
    _engines_to_dispose.append((app, db))


@pytest.fixture(autouse=True)
def _dispose_engines() -> t.Iterator[None]:
    yield
    while _engines_to_dispose:
        app, db = _engines_to_dispose.pop()
        with app.app_context():
            for engine in db.engines.values():
                engine.dispose()


def database_uri(store_kind: str, tmp_path: t.Any, filename: str = "chat.db") -> str:
    """The SQLAlchemy URL of a database with the store's tables for a SQL store kind:
    a SQLite file in *tmp_path* (a copy of the session's schema, unless the file is
    there already), or the running test's clean PostgreSQL database (``store_kind``
    fixture = ``postgresql``)."""
    if store_kind == "postgresql":
        if not _pg_current:
            raise RuntimeError("'postgresql' needs the store_kind or postgres_clean_db fixture")
        return _pg_current[-1]
    path = Path(tmp_path) / filename
    if not path.exists():
        shutil.copyfile(_sqlite_template(), path)
    return f"sqlite:///{path}"


# --- apps and clients ------------------------------------------------------------------


def make_app(
    store_kind: str | None = None,
    tmp_path: t.Any = None,
    chatkit_options: dict[str, t.Any] | None = None,
    *,
    store: t.Any = None,
    store_class: t.Callable[..., t.Any] | None = None,
    database_url: str | None = None,
    register: bool = True,
    login: bool = True,
    instance: str = "instance",
    **config: t.Any,
) -> Flask:
    """The one way the suite builds a Flask app (``TESTING``, the checked
    ``ChatKitClient`` as test client, its instance folder ``tmp_path/<instance>``).

    *login*: Flask-Login with the users of ``USERS``, by session (``POST /_login/<id>``)
    or bearer token (``Authorization: Bearer token-<id>``).

    *store_kind* (``memory``, ``sqlalchemy`` or ``postgresql``) or a ready *store*:
    ChatKit on that store, ``app.extensions["chatkit"]``; with neither the app has
    no ChatKit (the test registers one). *chatkit_options*: more ``ChatKit(...)``
    arguments (e.g. ``responder=``); *register* false: only the store is made
    (``app.extensions["test_store"]``). *store_class*: what builds the store
    (called with the ``SQLAlchemy`` instance for the SQL kinds). SQL stores use
    the ``store_kind``'s database (tables made once per session, rows removed per
    test, see ``database_uri``), or *database_url*, a database of the test's own
    whose tables are created here. The ``SQLAlchemy`` instance is
    ``app.extensions["test_db"]``.
    """
    app = Flask(__name__, instance_path=str(tmp_path / instance) if tmp_path is not None else None)
    app.config.update(TESTING=True, SECRET_KEY="test")
    sql = store is None and store_kind in ("sqlalchemy", "postgresql")
    if sql:
        app.config["SQLALCHEMY_DATABASE_URI"] = database_url or database_uri(store_kind, tmp_path)
    if store_kind is not None or store is not None:
        app.config["CHATKIT_HEARTBEAT_INTERVAL"] = 5
    app.config.update(config)
    app.test_client_class = ChatKitClient
    if login:
        _add_login(app)

    if sql:
        db = SQLAlchemy()
        store = (store_class or SQLAlchemyStore)(db)
        db.init_app(app)
        dispose_after_test(app, db)
        if database_url is not None:
            with app.app_context():
                db.create_all()
        app.extensions["test_db"] = db
    elif store is None and store_kind == "memory":
        store = (store_class or InMemoryStore)()
    elif store is None and store_kind is not None:
        raise ValueError(f"unknown store kind {store_kind!r}")
    if store is not None:
        app.extensions["test_store"] = store
        if register:
            ChatKit(app, store=store, **(chatkit_options or {}))
    return app


def _add_login(app: Flask) -> None:
    """Flask-Login: session users of ``USERS`` and their bearer tokens ``token-<id>``."""
    login = LoginManager(app)

    @login.user_loader
    def load_user(user_id: str) -> User | None:
        return User(user_id) if user_id in USERS else None

    @login.request_loader
    def load_from_token(request: t.Any) -> User | None:
        token = bearer_token(request)
        if token and token.startswith("token-") and token[6:] in USERS:
            return User(token[6:])
        return None

    @app.post("/_login/<user_id>")
    def _login(user_id: str) -> str:
        login_user(User(user_id))
        return "ok"


# --- the fast tier ---------------------------------------------------------------------

#: Fixtures of tests/browser.py: a test that uses one drives a real Chromium.
BROWSER_FIXTURES = frozenset({"browser", "page", "example_site"})


def _uses_postgres(item: pytest.Item) -> bool:
    """The test needs the throwaway PostgreSQL server: a ``postgres*`` fixture, or a
    ``postgresql`` parameter (``store_kind`` and the like fetch the server when run)."""
    if "postgres" in getattr(item, "fixturenames", ()):
        return True
    callspec = getattr(item, "callspec", None)
    return callspec is not None and any(
        isinstance(value, str) and value == "postgresql" for value in callspec.params.values()
    )


@pytest.hookimpl(tryfirst=True)  # before -m "not slow" deselects
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Real servers make a test ``slow``: every ``server`` test, every test using a
    browser fixture, and every test on PostgreSQL (also marked ``postgresql``), besides
    the tests marked ``slow`` themselves. ``-m "not slow"`` is the fast tier."""
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if _uses_postgres(item):
            item.add_marker(pytest.mark.postgresql)
            item.add_marker(pytest.mark.slow)
        elif item.get_closest_marker("server") or fixtures & BROWSER_FIXTURES:
            item.add_marker(pytest.mark.slow)


#: For a test whose checks never depend on the store (parsing, routing, hooks, limits
#: met before any store call): it runs on the in-memory store only, where the SQL
#: stores would only repeat it. Store-dependent tests keep all three.
any_store = pytest.mark.parametrize("store_kind", ["memory"], indirect=True)


@pytest.fixture(params=["memory", "sqlalchemy", "postgresql"])
def store_kind(request: pytest.FixtureRequest) -> str:
    """``memory``, ``sqlalchemy`` (SQLite) or ``postgresql``: make_app builds on it."""
    if request.param == "postgresql":
        request.getfixturevalue("postgres_clean_db")
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def app(store_kind: str, tmp_path: t.Any) -> Flask:
    return make_app(store_kind, tmp_path)


@pytest.fixture
def chatkit(app: Flask) -> ChatKit:
    """The app's extension: register hooks on it inside a test."""
    return app.extensions["chatkit"]  # type: ignore[no-any-return]


def logged_in(app: Flask, user_id: str) -> ChatKitClient:
    client = app.test_client()
    assert client.post(f"/_login/{user_id}").status_code == 200
    return client  # type: ignore[return-value]


@pytest.fixture
def alice(app: Flask) -> ChatKitClient:
    return logged_in(app, "alice")


@pytest.fixture
def bob(app: Flask) -> ChatKitClient:
    return logged_in(app, "bob")


@pytest.fixture
def ctx_of(app: Flask) -> t.Callable[[str], t.Any]:
    """A store context for a user id, to read what the server persisted."""
    from flask_chatkit import RequestContext

    return lambda user_id: RequestContext(user_id=user_id)


class StoreInContext:
    """The app's store, each call in its own short app context.

    Holding one app context open for a whole test would make every test-client
    request reuse it, sharing ``g`` (and Flask-Login's cached user) between
    clients.
    """

    def __init__(self, app: Flask) -> None:
        self._app = app
        self._store = app.extensions["chatkit"].state(app).server.store

    def __getattr__(self, name: str) -> t.Any:
        attr = getattr(self._store, name)
        if not callable(attr):
            return attr

        def call(*args: t.Any, **kwargs: t.Any) -> t.Any:
            with self._app.app_context():
                return attr(*args, **kwargs)

        return call


@pytest.fixture
def store(app: Flask) -> StoreInContext:
    """The app's store, for direct reads in asserts (safe beside test clients)."""
    return StoreInContext(app)


#: One PBKDF2 round instead of werkzeug's default scrypt (0.1 s a hash, most of the
#: time of the example app's tests); check_password_hash reads the method from the hash.
_cheap_password_hash = functools.partial(generate_password_hash, method="pbkdf2:sha256:1")


@pytest.fixture(autouse=True)
def _cheap_password_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    """The example app hashes passwords cheaply in-process (servers it runs do not)."""
    models = sys.modules.get("example_app.models")
    if models is not None:
        monkeypatch.setattr(models, "generate_password_hash", _cheap_password_hash)


@pytest.fixture(scope="session")
def llm_server() -> t.Iterator[t.Any]:
    """One loopback server playing the OpenAI API (tests/llm_server.py) for the session."""
    from .llm_server import LLMServer

    with LLMServer() as server:
        yield server


@pytest.fixture
def llm(llm_server: t.Any) -> t.Any:
    """The loopback OpenAI server, with its script, records and defaults reset."""
    llm_server.reset()
    return llm_server


# Real Chromium and the example app under gunicorn, for the browser tests; registered
# here once so that every module shares one browser (see tests/browser.py).
from .browser import browser  # noqa: E402,F401
from .browser import example_site  # noqa: E402,F401
from .browser import page  # noqa: E402,F401
