"""The Alembic revisions of the ChatKit tables, run through Flask-Migrate.

Each test builds an app the way a user would (``Migrate`` +
``register_migrations``, then ``flask db init``), migrates an empty SQLite or
PostgreSQL database, and asks Alembic's autogenerate comparison whether the
models and the database still differ: they must not.
"""

from __future__ import annotations

import contextlib
import logging
import types
import typing as t
from pathlib import Path

import flask_migrate  # type: ignore[import-untyped]
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask import Flask
from flask_migrate import Migrate  # type: ignore[import-untyped]
from flask_sqlalchemy import SQLAlchemy

from example_app import create_app
from example_app.extensions import db as example_db
from example_app.models import DEMO_USERNAME
from example_app.models import find_user
from flask_chatkit.migrate import VERSION_LOCATION
from flask_chatkit.migrate import register_migrations
from flask_chatkit.sqlalchemy_store import SQLAlchemyStore
from flask_chatkit.types import AssistantMessageContent
from flask_chatkit.types import AssistantMessageItem
from flask_chatkit.types import ThreadMetadata

from .conftest import dispose_after_test
from .conftest import make_app
from .servers import isolate_example_app

# migrations: Alembic runs on fresh SQLite and PostgreSQL databases
pytestmark = pytest.mark.slow

CHATKIT_HEAD = "chatkit_0002_user_turns"
CHATKIT_TABLES = {"chatkit_threads", "chatkit_items", "chatkit_attachments", "chatkit_feedback"}

# The env.py that `flask db init` writes tries db.get_engine() first; the example
# app's hand-checked env.py does not, so its test runs without this.
generated_env = pytest.mark.filterwarnings("ignore:'get_engine' is deprecated:DeprecationWarning")


@contextlib.contextmanager
def logging_kept() -> t.Iterator[None]:
    """Undo what Alembic's ``env.py`` does to logging.

    Its ``fileConfig`` replaces the root handlers (pytest's capture among
    them) and disables every logger it does not name, which would silence
    ``flask_chatkit`` for the tests that run after these.
    """
    root = logging.getLogger()
    saved_root = (root.level, list(root.handlers))
    saved = {
        name: (lg.disabled, lg.level, list(lg.handlers), lg.propagate)
        for name, lg in logging.Logger.manager.loggerDict.items()
        if isinstance(lg, logging.Logger)
    }
    try:
        yield
    finally:
        root.setLevel(saved_root[0])
        root.handlers[:] = saved_root[1]
        for name, lg in list(logging.Logger.manager.loggerDict.items()):
            if not isinstance(lg, logging.Logger):
                continue
            disabled, level, handlers, propagate = saved.get(name, (False, 0, [], True))
            lg.disabled, lg.propagate = disabled, propagate
            lg.setLevel(level)
            lg.handlers[:] = handlers


@pytest.fixture(autouse=True)
def _keep_logging() -> t.Iterator[None]:
    with logging_kept():
        yield


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database: a new SQLite file, or a fresh PostgreSQL database."""
    if request.param == "postgresql":
        return request.getfixturevalue("postgres_db")  # type: ignore[no-any-return]
    return f"sqlite:///{tmp_path / 'app.db'}"


def build(url: str, tmp_path: Path) -> tuple[Flask, SQLAlchemy, SQLAlchemyStore]:
    """An app with the ChatKit tables on ``db.Model`` and Flask-Migrate set up for them."""
    app = make_app(None, tmp_path, login=False, SQLALCHEMY_DATABASE_URI=url)
    db = SQLAlchemy()
    store = SQLAlchemyStore(db)
    migrate = Migrate()
    register_migrations(migrate)
    db.init_app(app)
    migrate.init_app(app, db, directory=str(tmp_path / "migrations"))
    dispose_after_test(app, db)
    return app, db, store


def init_repository() -> None:
    """``flask db init``: the app's own ``migrations/`` folder, with no revisions."""
    flask_migrate.init()


def schema_diff(db: SQLAlchemy) -> list[t.Any]:
    """What ``flask db migrate`` would write: the models against the database."""
    with db.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return compare_metadata(context, db.metadata)  # type: ignore[no-any-return]


def applied(db: SQLAlchemy) -> set[str]:
    with db.engine.connect() as conn:
        return set(MigrationContext.configure(conn).get_current_heads())


def tables(db: SQLAlchemy) -> set[str]:
    return set(sa.inspect(db.engine).get_table_names())


def package_revisions() -> set[Path]:
    return set(Path(VERSION_LOCATION).glob("*.py"))


@contextlib.contextmanager
def no_strays() -> t.Iterator[set[Path]]:
    """Never leave a revision the test wrote inside the package, even when it fails.

    Yields the package's revisions from before.
    """
    before = package_revisions()
    try:
        yield before
    finally:
        for path in package_revisions() - before:
            path.unlink()


def notes_app(tmp_path: Path, *, with_body: bool = False) -> tuple[Flask, SQLAlchemy]:
    """A SQLite app with a model of its own: ``notes`` (an id, and a body if asked)."""
    app, db, _ = build(f"sqlite:///{tmp_path / 'app.db'}", tmp_path)

    class Note(db.Model):  # type: ignore[name-defined,misc]
        __tablename__ = "notes"
        id = sa.Column(sa.Integer, primary_key=True)
        if with_body:
            body = sa.Column(sa.Text, nullable=False)

    return app, db


# --- flask_chatkit's revisions --------------------------------------------------------


@generated_env
def test_upgrade_creates_the_chatkit_tables_exactly_as_the_models_define_them(
    database_url: str, tmp_path: Path
) -> None:
    app, db, store = build(database_url, tmp_path)
    with app.app_context():
        init_repository()
        flask_migrate.upgrade()  # `flask db upgrade`

        assert applied(db) == {CHATKIT_HEAD}
        assert CHATKIT_TABLES <= tables(db)
        assert schema_diff(db) == []

        # and the store works on the migrated tables (autoincrement keys included)
        alice = types.SimpleNamespace(user_id="alice")
        store.save_thread(ThreadMetadata(id="thr_1", title="first"), alice)
        store.save_thread(ThreadMetadata(id="thr_2", title="second"), alice)
        reply = AssistantMessageItem(
            id="msg_1", thread_id="thr_1", content=[AssistantMessageContent(text="hi")]
        )
        store.add_thread_item("thr_1", reply, alice)
        store.save_feedback("thr_1", ["msg_1"], "positive", alice)
        store.save_feedback("thr_1", ["msg_1"], "negative", alice)  # replaces the vote
        page = store.load_threads(10, None, "asc", alice)
        assert [thread.title for thread in page.data] == ["first", "second"]
        items = store.load_thread_items("thr_1", None, 10, "asc", alice).data
        assert [item.content[0].text for item in items] == ["hi"]
        assert [row["kind"] for row in store.load_feedback(alice)] == ["negative"]


@generated_env
def test_the_schema_check_reports_a_missing_index_and_an_extra_column(
    database_url: str, tmp_path: Path
) -> None:
    app, db, _ = build(database_url, tmp_path)
    with app.app_context():
        init_repository()
        flask_migrate.upgrade()
        with db.engine.begin() as conn:
            conn.execute(sa.text("DROP INDEX ix_chatkit_items_user_created"))
            conn.execute(sa.text("ALTER TABLE chatkit_threads ADD COLUMN extra INTEGER"))

        diff = schema_diff(db)

    assert sorted(d[0] for d in diff) == ["add_index", "remove_column"]
    index = next(d[1] for d in diff if d[0] == "add_index")
    column = next(d for d in diff if d[0] == "remove_column")
    assert index.name == "ix_chatkit_items_user_created"
    assert (column[2], column[3].name) == ("chatkit_threads", "extra")


@generated_env
def test_downgrade_to_base_drops_the_chatkit_tables_and_upgrade_restores_them(
    database_url: str, tmp_path: Path
) -> None:
    app, db, _ = build(database_url, tmp_path)
    with app.app_context():
        init_repository()
        flask_migrate.upgrade()
        flask_migrate.downgrade(revision="base")  # `flask db downgrade base`

        assert not {name for name in tables(db) if name.startswith("chatkit_")}
        assert applied(db) == set()

        flask_migrate.upgrade()
        assert applied(db) == {CHATKIT_HEAD}
        assert schema_diff(db) == []


@generated_env
def test_a_database_made_by_create_all_joins_the_migrations_with_stamp(
    database_url: str, tmp_path: Path
) -> None:
    app, db, _ = build(database_url, tmp_path)
    with app.app_context():
        init_repository()
        db.create_all()  # the path for apps without migrations
        assert schema_diff(db) == []

        flask_migrate.stamp(revision="heads")  # `flask db stamp heads`
        flask_migrate.upgrade(revision="heads")  # nothing left to do
        assert applied(db) == {CHATKIT_HEAD}


# --- an app with revisions of its own -------------------------------------------------


@generated_env
def test_flask_db_migrate_writes_the_apps_revision_into_the_apps_folder(tmp_path: Path) -> None:
    app, db = notes_app(tmp_path, with_body=True)
    own = tmp_path / "migrations" / "versions"
    with no_strays() as ours_before, app.app_context():
        init_repository()
        flask_migrate.upgrade()
        flask_migrate.migrate(message="notes", rev_id="app_0001")  # `flask db migrate`
        flask_migrate.upgrade()
        flask_migrate.migrate(message="nothing")  # no changes: no revision

        assert package_revisions() == ours_before
        assert [p.name for p in own.glob("*.py")] == ["app_0001_notes.py"]
        assert f"down_revision = '{CHATKIT_HEAD}'" in (own / "app_0001_notes.py").read_text()
        assert applied(db) == {"app_0001"}
        assert "notes" in tables(db)
        assert schema_diff(db) == []


FLASK_MIGRATE_4_ENV = """\
    conf_args = current_app.extensions['migrate'].configure_args
    if conf_args.get("process_revision_directives") is None:
        conf_args["process_revision_directives"] = process_revision_directives
"""
FLASK_MIGRATE_4_CALL = """\
            target_metadata=get_metadata(),
            **conf_args
"""
FLASK_MIGRATE_3_CALL = """\
            target_metadata=get_metadata(),
            process_revision_directives=process_revision_directives,
            **current_app.extensions['migrate'].configure_args
"""


@generated_env
def test_an_env_py_from_flask_migrate_3_still_autogenerates(tmp_path: Path) -> None:
    # Its env.py passes its own hook beside configure_args: adding ours there
    # would fail with "multiple values for keyword argument".
    app, db = notes_app(tmp_path)
    own = tmp_path / "migrations" / "versions"
    with no_strays(), app.app_context():
        init_repository()
        env = tmp_path / "migrations" / "env.py"
        source = env.read_text()
        assert FLASK_MIGRATE_4_ENV in source and FLASK_MIGRATE_4_CALL in source
        env.write_text(
            source.replace(FLASK_MIGRATE_4_ENV, "").replace(
                FLASK_MIGRATE_4_CALL, FLASK_MIGRATE_3_CALL
            )
        )
        flask_migrate.upgrade()
        # without the redirect, the documented --version-path keeps it home
        flask_migrate.migrate(message="notes", rev_id="app_0001", version_path=str(own))
        flask_migrate.upgrade()

        assert [p.name for p in own.glob("*.py")] == ["app_0001_notes.py"]
        assert applied(db) == {"app_0001"}
        assert schema_diff(db) == []


APP_BASE_REVISION = """
from alembic import op
import sqlalchemy as sa

revision = "app_0001"
down_revision = None
branch_labels = ("app",)
depends_on = None


def upgrade():
    op.create_table("notes", sa.Column("id", sa.Integer(), primary_key=True))


def downgrade():
    op.drop_table("notes")
"""


@generated_env
def test_an_app_chain_of_its_own_is_migrated_with_upgrade_heads(tmp_path: Path) -> None:
    app, db = notes_app(tmp_path)
    with app.app_context():
        init_repository()
        (tmp_path / "migrations" / "versions" / "app_0001.py").write_text(APP_BASE_REVISION)

        with pytest.raises(SystemExit):  # two heads: plain `flask db upgrade` refuses
            flask_migrate.upgrade()
        assert applied(db) == set()

        flask_migrate.upgrade(revision="heads")  # `flask db upgrade heads`
        assert applied(db) == {CHATKIT_HEAD, "app_0001"}
        assert schema_diff(db) == []


@generated_env
def test_register_migrations_adds_the_package_folder_once_after_the_apps_folders(
    tmp_path: Path,
) -> None:
    app, db, _ = build(f"sqlite:///{tmp_path / 'app.db'}", tmp_path)
    migrate = app.extensions["migrate"].migrate
    register_migrations(migrate)  # a second call changes nothing
    folder = tmp_path / "migrations"
    with app.app_context():
        init_repository()
        assert migrate.get_config().get_version_locations_list() == [
            str(folder / "versions"),
            VERSION_LOCATION,
        ]

        ini = folder / "alembic.ini"
        ini.write_text(
            ini.read_text().replace(
                "[alembic]\n",
                "[alembic]\npath_separator = space\n"
                "version_locations = %(here)s/versions %(here)s/more\n",
            )
        )
        assert migrate.get_config().get_version_locations_list() == [
            str(folder / "versions"),
            str(folder / "more"),
            VERSION_LOCATION,
        ]


# --- the example app ------------------------------------------------------------------


def test_example_app_migrations_bring_an_empty_database_to_its_models(
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    isolate_example_app(monkeypatch, tmp_path / "instance")
    config: dict[str, t.Any] = {"TESTING": True, "SQLALCHEMY_DATABASE_URI": database_url}
    if database_url.startswith("sqlite"):
        config["CREATE_TABLES"] = False  # on by default for SQLite only

    caplog.set_level(logging.WARNING)
    app = create_app(config)
    dispose_after_test(app, example_db)
    assert "db upgrade heads" in caplog.text  # it starts, and says what to run
    with app.app_context():
        assert tables(example_db) == set()

    with logging_kept():
        result = app.test_cli_runner().invoke(args=["db", "upgrade", "heads"])
    assert result.exit_code == 0, result.output

    with app.app_context():
        assert applied(example_db) == {"example_0002_agents", "chatkit_0002_user_turns"}
        assert CHATKIT_TABLES | {"users", "api_tokens", "example_agents"} <= tables(example_db)
        assert schema_diff(example_db) == []

    restarted = create_app(config)  # now the demo user can be created
    dispose_after_test(restarted, example_db)
    with restarted.app_context():
        assert find_user(DEMO_USERNAME) is not None
