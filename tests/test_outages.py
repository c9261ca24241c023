"""The database goes away: at startup, between requests, and in the middle of a stream.

Every test runs against a PostgreSQL server of this module's own (not the
session's shared one), which it stops and starts at will: a real outage, with
real pooled connections going stale. What must hold:

- the example app starts with the database down, answers ``/chatkit`` with a
  503 JSON (never a traceback or an HTML page), keeps serving its login page,
  and once the database is back serves again without a restart
  (``pool_pre_ping``), finishing its start-up step (demo user) on its own;
- a stream that loses the database becomes an ``error`` event and ends
  cleanly, and the user's message is either saved whole or the client is told
  it was not (``NOT_SAVED_TEXT``);
- ``GET /chatkit/health`` answers 503 ``fail`` within 2 s while the database is
  away and ``pass`` again once it is back, without a restart.
"""

from __future__ import annotations

import logging
import re
import time
import typing as t
import uuid

import pytest
import sqlalchemy as sa
from flask import Flask
from flask_sqlalchemy import SQLAlchemy

from example_app import RETRY_INTERVAL
from example_app import create_app
from example_app.extensions import db as example_db
from example_app.models import create_user
from example_app.models import issue_token
from flask_chatkit import ChatKit
from flask_chatkit import stream_text
from flask_chatkit.testing import ChatKitClient
from flask_chatkit.testing import Exchange
from flask_chatkit.testing import user_input
from flask_chatkit.turn_engine import BUSY_TEXT
from flask_chatkit.turn_engine import NOT_SAVED_TEXT

from .conftest import REQUIRE_POSTGRES
from .conftest import SKIP_REASON
from .conftest import dispose_after_test
from .conftest import make_app
from .pg import PostgresServer
from .pg import find_bin_dir
from .servers import isolate_example_app
from .servers import login_with_form

# database outages: PostgreSQL servers stopped and started
pytestmark = pytest.mark.slow

UNAVAILABLE = "The database is unavailable right now; try again in a moment."
DEMO_LINE = re.compile(r"Demo login: username=(\S+) password=(\S+)")
ALICE = {"Authorization": "Bearer token-alice"}


@pytest.fixture(scope="module")
def pg() -> t.Iterator[PostgresServer]:
    """A PostgreSQL server for this module alone: the tests stop and start it."""
    if find_bin_dir() is None:
        if REQUIRE_POSTGRES:
            pytest.fail("CHATKIT_REQUIRE_POSTGRES=1 but PostgreSQL binaries were not found")
        pytest.skip(SKIP_REASON)
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def url(pg: PostgresServer) -> t.Iterator[str]:
    """A fresh database on the module's server (running when the test starts)."""
    pg.start()
    name = f"outage_{uuid.uuid4().hex[:12]}"
    try:
        yield pg.create_database(name)
    finally:
        pg.start()  # a failed test may have left it stopped
        pg.drop_database(name)


@pytest.fixture
def isolated(tmp_path: t.Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The example app with its instance folder in *tmp_path*, none of the developer's settings."""
    isolate_example_app(monkeypatch, tmp_path / "instance")


def example(url: str, **config: t.Any) -> Flask:
    app = create_app(
        {"TESTING": True, "SQLALCHEMY_DATABASE_URI": url, "DEMO_STREAM_DELAY": 0, **config}
    )
    dispose_after_test(app, example_db)
    app.test_client_class = ChatKitClient
    return app


def chat(
    client: t.Any, type_: str, headers: dict[str, str] | None = None, **params: t.Any
) -> Exchange:
    return client.chatkit(type_, headers=headers, **params)  # type: ignore[no-any-return]


def assert_unavailable(ex: Exchange) -> None:
    """A 503 JSON with the clear message (``wire`` has checked the body's shape)."""
    assert ex.status == 503, ex.body
    assert ex.error["code"] == "store_unavailable"
    assert ex.error["message"] == UNAVAILABLE


def assert_no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    spam = [r.getMessage() for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]
    assert spam == []


def answer_of(ex: Exchange) -> str:
    done = [
        e["item"]
        for e in ex.of_type("thread.item.done")
        if e["item"]["type"] == "assistant_message"
    ]
    assert len(done) == 1, ex.types
    return done[0]["content"][0]["text"]  # type: ignore[no-any-return]


# --- the example app -------------------------------------------------------------------


def test_example_app_runs_postgresql_with_psycopg_a_pre_pinged_pool_and_warm_connections(
    pg: PostgresServer, url: str, isolated: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = url.rsplit("/", 1)[1]
    # as hosts hand it out: no driver (SQLAlchemy would pick psycopg2, which blocks gevent)
    monkeypatch.setenv("DATABASE_URL", url.replace("postgresql+psycopg://", "postgres://"))
    monkeypatch.setenv("DATABASE_POOL_SIZE", "3")
    monkeypatch.setenv("DATABASE_MAX_OVERFLOW", "1")
    monkeypatch.setenv("DATABASE_POOL_TIMEOUT", "4")
    app = create_app({"TESTING": True, "CREATE_TABLES": True})
    dispose_after_test(app, example_db)
    assert app.config["SQLALCHEMY_DATABASE_URI"] == url
    with app.app_context():
        engine = example_db.engine
        assert engine.dialect.driver == "psycopg"
        pool: t.Any = engine.pool
        assert pool.size() == 3 and pool._max_overflow == 1
        assert pool.timeout() == 4 and pool._pre_ping
        assert pool.checkedin() == 2  # warmed up at start, and given back
    with pg.admin() as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (name,))
        assert row.fetchone() == (2,)


def test_example_app_on_sqlite_pre_pings_and_takes_no_pool_settings(isolated: None) -> None:
    app = create_app({"TESTING": True, "DATABASE_POOL_SIZE": 3})
    dispose_after_test(app, example_db)
    assert app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite:///")
    assert app.config["SQLALCHEMY_ENGINE_OPTIONS"] == {"pool_pre_ping": True}


def test_example_app_starts_with_the_database_down_and_recovers_without_a_restart(
    pg: PostgresServer, url: str, isolated: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    pg.stop()
    app = example(url)
    warnings = [r.getMessage() for r in caplog.records]
    assert any("database is unreachable" in m and "Serving anyway" in m for m in warnings)

    bearer = app.test_client()
    assert_unavailable(chat(bearer, "threads.list", {"Authorization": "Bearer some-token"}))
    cookie = app.test_client()
    with cookie.session_transaction() as session:  # a session from before the outage
        session["_user_id"] = "1"
        session["_fresh"] = True
    assert_unavailable(chat(cookie, "threads.create", input=user_input("hello")))
    page = cookie.get("/")
    assert page.status_code == 503 and page.mimetype == "text/html"
    assert b"database is unavailable" in page.data
    login = app.test_client().get("/login")  # needs no database
    assert login.status_code == 200 and b"<form" in login.data
    assert_no_tracebacks(caplog)
    assert not any(DEMO_LINE.search(m) for m in [r.getMessage() for r in caplog.records])

    pg.start()
    with app.app_context():
        example_db.create_all()
    time.sleep(RETRY_INTERVAL)
    # The first request after the outage finishes the start-up step: the demo user.
    assert app.test_client().get("/login").status_code == 200
    found = [DEMO_LINE.search(r.getMessage()) for r in caplog.records]
    username, password = next(m for m in found if m).groups()
    assert any("reachable again" in r.getMessage() for r in caplog.records)

    client = app.test_client()
    response = login_with_form(client, username, password)
    assert response.status_code == 302
    ex = chat(client, "threads.create", input=user_input("after the outage"))
    assert ex.status == 200
    assert "You said: “after the outage”" in answer_of(ex)
    with app.app_context():
        token = issue_token(create_user("carol", "pw"))
    listed = chat(app.test_client(), "threads.list", {"Authorization": f"Bearer {token}"})
    assert listed.status == 200 and listed.body["data"] == []
    assert chat(cookie, "threads.list").status == 200  # the old session's user exists now
    assert_no_tracebacks(caplog)


def test_a_remembered_bearer_token_meets_the_outage_at_the_first_save(
    pg: PostgresServer, url: str, isolated: None
) -> None:
    app = example(url, CREATE_TABLES=True, DEMO_USER=False)
    with app.app_context():
        token = issue_token(create_user("carol", "pw"))
    bearer = {"Authorization": f"Bearer {token}"}
    client = app.test_client()
    assert chat(client, "threads.list", bearer).status == 200  # the owner is remembered
    pg.stop()
    try:
        assert_unavailable(chat(client, "threads.list", bearer))  # a read: 503 before a stream
        ex = chat(client, "threads.create", bearer, input=user_input("during"))
        # a new thread reads nothing first: its one write fails, and says so, nothing kept
        assert ex.status == 200 and ex.types == ["error"]
        assert ex.events[0]["message"] == NOT_SAVED_TEXT
    finally:
        pg.start()
    assert chat(client, "threads.list", bearer).body["data"] == []


def test_example_app_answers_503_while_the_database_is_away_and_then_serves_again(
    pg: PostgresServer, url: str, isolated: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    # every bearer request looks its token up: the outage shows before any stream
    # (a remembered token starts the stream, whose first save then fails: below)
    app = example(url, CREATE_TABLES=True, TOKEN_CACHE_SECONDS=0)
    username, password = next(
        m for m in (DEMO_LINE.search(r.getMessage()) for r in caplog.records) if m
    ).groups()
    cookie = app.test_client()
    assert login_with_form(cookie, username, password).status_code == 302
    with app.app_context():
        token = issue_token(create_user("carol", "pw"))
    bearer = {"Authorization": f"Bearer {token}"}
    tokened = app.test_client()
    first = chat(cookie, "threads.create", input=user_input("before"))
    thread_id = first.of_type("thread.created")[0]["thread"]["id"]
    for _ in range(3):  # several pooled connections, all about to go stale
        assert chat(tokened, "threads.list", bearer).status == 200
        assert chat(cookie, "items.list", thread_id=thread_id).status == 200

    pg.stop()
    for _ in range(2):
        assert_unavailable(chat(cookie, "items.list", thread_id=thread_id))
        assert_unavailable(
            chat(
                cookie, "threads.add_user_message", thread_id=thread_id, input=user_input("during")
            )
        )
        assert_unavailable(chat(tokened, "threads.create", bearer, input=user_input("during")))
        assert_unavailable(chat(tokened, "threads.list", bearer))
    page = cookie.get("/")
    assert page.status_code == 503 and b"database is unavailable" in page.data
    assert app.test_client().get("/login").status_code == 200
    assert_no_tracebacks(caplog)

    pg.start()
    ex = chat(cookie, "threads.add_user_message", thread_id=thread_id, input=user_input("after"))
    assert ex.status == 200 and "You said: “after”" in answer_of(ex)
    assert chat(tokened, "threads.list", bearer).status == 200
    assert cookie.get("/").status_code == 200
    items = chat(cookie, "items.list", thread_id=thread_id, order="asc").body["data"]
    # nothing of the refused requests was written
    assert [i["type"] for i in items] == ["user_message", "assistant_message"] * 2
    assert [i["content"][0]["text"] for i in items if i["type"] == "user_message"] == [
        "before",
        "after",
    ]
    assert_no_tracebacks(caplog)


# --- streams that lose the database --------------------------------------------------------


def bare_app(url: str, tmp_path: t.Any, **config: t.Any) -> tuple[Flask, ChatKit, SQLAlchemy]:
    """ChatKit on a SQLAlchemyStore at *url*, with a bearer user known without the
    database: ``threads.create`` reads nothing before its stream starts."""
    app = make_app(
        "postgresql",
        tmp_path,
        database_url=url,
        SQLALCHEMY_ENGINE_OPTIONS={"pool_pre_ping": True},
        CHATKIT_HEARTBEAT_INTERVAL=0,
        **config,
    )
    return app, app.extensions["chatkit"], app.extensions["test_db"]


def dies_at(app: Flask, db: SQLAlchemy, pg: PostgresServer, statement: str) -> list[str]:
    """Stop *pg* just before the first statement starting with *statement* runs
    (a real outage at a precise moment); returns the statements that hit it."""
    hit: list[str] = []
    with app.app_context():
        engine = db.engine

    @sa.event.listens_for(engine, "before_cursor_execute")
    def stop(conn: t.Any, cursor: t.Any, sql: str, *args: t.Any) -> None:
        if not hit and sql.lstrip().upper().startswith(statement):
            hit.append(sql)
            pg.stop()

    return hit


def stored_items(app: Flask, db: SQLAlchemy) -> list[tuple[str, str]]:
    """``(thread_id, type)`` of every stored item, hidden ones included."""
    with app.app_context():
        with db.engine.connect() as conn:
            rows = conn.execute(
                sa.text("SELECT thread_id, type FROM chatkit_items ORDER BY pk")
            ).all()
    return [(r.thread_id, r.type) for r in rows]


def stored_threads(app: Flask, db: SQLAlchemy) -> list[str]:
    with app.app_context():
        with db.engine.connect() as conn:
            return list(conn.execute(sa.text("SELECT id FROM chatkit_threads")).scalars())


def test_losing_the_database_between_deltas_ends_the_stream_with_an_error_event(
    pg: PostgresServer, url: str, tmp_path: t.Any
) -> None:
    app, chatkit, db = bare_app(url, tmp_path, CHATKIT_TURN_TIMEOUT=6)

    @chatkit.respond
    def respond(thread: t.Any, message: t.Any, ctx: t.Any) -> t.Iterator[t.Any]:
        def chunks() -> t.Iterator[str]:
            yield "Half an "
            pg.stop()  # the answer cannot be saved any more
            yield "answer"

        yield from stream_text(thread, chunks())

    client = app.test_client()
    started = time.monotonic()
    ex = chat(client, "threads.create", ALICE, input=user_input("keep me"))
    assert ex.status == 200
    assert ex.types[:3] == ["thread.created", "thread.item.done", "stream_options"]
    deltas = [
        e["update"]["delta"]
        for e in ex.of_type("thread.item.updated")
        if e["update"]["type"].endswith(".text_delta")
    ]
    assert deltas == ["Half an ", "answer"]  # streamed to the client...
    error = ex.events[-1]  # ...then one clean error, no broken connection
    assert error["type"] == "error" and ex.types.count("error") == 1
    assert error["message"] == UNAVAILABLE and error["allow_retry"] is False
    thread_id = ex.of_type("thread.created")[0]["thread"]["id"]

    pg.start()
    items = chat(client, "items.list", ALICE, thread_id=thread_id, order="asc").body["data"]
    assert [i["type"] for i in items] == ["user_message"]  # saved before: intact
    assert items[0]["content"][0]["text"] == "keep me"
    assert stored_items(app, db) == [(thread_id, "user_message")]  # no half answer

    # The lease could not be released while the database was down: the thread is
    # busy until it expires (CHATKIT_TURN_TIMEOUT), then takes turns again.
    @chatkit.respond  # type: ignore[no-redef]
    def respond(thread: t.Any, message: t.Any, ctx: t.Any) -> t.Iterator[t.Any]:
        yield from stream_text(thread, ["whole answer"])

    busy = chat(
        client,
        "threads.add_user_message",
        ALICE,
        thread_id=thread_id,
        input=user_input("too early"),
    )
    if time.monotonic() - started < 5:
        assert busy.events[-1]["message"] == BUSY_TEXT
    time.sleep(max(0.0, started + 6.5 - time.monotonic()))
    again = chat(
        client, "threads.add_user_message", ALICE, thread_id=thread_id, input=user_input("again")
    )
    assert answer_of(again) == "whole answer"
    # the turn that lost the database never gave its lease back: the next one
    # closed it as interrupted, with the visible note after what was kept (nothing)
    items = chat(client, "items.list", ALICE, thread_id=thread_id, order="asc").body["data"]
    assert [
        (i["type"], i["task"]["title"] if i["type"] == "task" else i["content"][0]["text"])
        for i in items
    ] == [
        ("user_message", "keep me"),
        ("task", "Answer interrupted"),
        ("user_message", "again"),
        ("assistant_message", "whole answer"),
    ]


def test_a_new_thread_with_the_database_down_says_the_message_was_not_saved(
    pg: PostgresServer, url: str, tmp_path: t.Any
) -> None:
    app, chatkit, db = bare_app(url, tmp_path)
    answered = []

    @chatkit.respond
    def respond(thread: t.Any, message: t.Any, ctx: t.Any) -> t.Iterator[t.Any]:
        answered.append(message)
        yield from stream_text(thread, ["hi"])

    client = app.test_client()
    pg.stop()
    ex = chat(client, "threads.create", ALICE, input=user_input("lost"))
    assert ex.status == 200  # no database read before the stream: the failure is in it
    assert ex.types == ["error"]
    assert ex.events[0]["message"] == NOT_SAVED_TEXT and ex.events[0]["allow_retry"] is False
    assert answered == []  # never sent to the model

    pg.start()
    assert stored_threads(app, db) == [] and stored_items(app, db) == []
    assert chat(client, "threads.list", ALICE).body["data"] == []
    assert answer_of(chat(client, "threads.create", ALICE, input=user_input("again"))) == "hi"


def test_a_message_whose_insert_loses_the_database_is_reported_not_saved(
    pg: PostgresServer, url: str, tmp_path: t.Any
) -> None:
    app, chatkit, db = bare_app(url, tmp_path, CHATKIT_TURN_TIMEOUT=2)
    answered = []

    @chatkit.respond
    def respond(thread: t.Any, message: t.Any, ctx: t.Any) -> t.Iterator[t.Any]:
        answered.append(message.content[0].text)
        yield from stream_text(thread, ["fine"])

    client = app.test_client()
    # A new thread: the database dies at the message, in the transaction that also
    # writes the thread and its lease, so neither is left behind half-made.
    hit = dies_at(app, db, pg, "INSERT INTO CHATKIT_ITEMS")
    ex = chat(client, "threads.create", ALICE, input=user_input("first"))
    assert len(hit) == 1
    assert ex.types == ["error"]
    assert ex.events[-1]["message"] == NOT_SAVED_TEXT
    pg.start()
    assert stored_threads(app, db) == []
    assert stored_items(app, db) == []
    assert answered == []

    # An existing thread: the database dies as the next message is inserted.
    hit.append("(disarmed while the thread is made)")
    ex = chat(client, "threads.create", ALICE, input=user_input("zero"))
    thread_id = ex.events[0]["thread"]["id"]
    before = stored_items(app, db)
    assert [kind for _, kind in before] == ["user_message", "assistant_message"]
    answered.clear()
    hit.clear()
    ex = chat(
        client, "threads.add_user_message", ALICE, thread_id=thread_id, input=user_input("second")
    )
    assert len(hit) == 1
    assert ex.types == ["error"] and ex.events[0]["message"] == NOT_SAVED_TEXT
    pg.start()
    assert stored_items(app, db) == before and answered == []

    time.sleep(2.2)  # (the lease, if one was left behind, expires)
    ex = chat(
        client, "threads.add_user_message", ALICE, thread_id=thread_id, input=user_input("third")
    )
    assert answer_of(ex) == "fine" and answered == ["third"]
    items = chat(client, "items.list", ALICE, thread_id=thread_id, order="asc").body["data"]
    assert [i["type"] for i in items] == ["user_message", "assistant_message"] * 2


def test_a_turn_that_loses_the_database_at_its_lease_is_reported_not_saved(
    pg: PostgresServer, url: str, tmp_path: t.Any
) -> None:
    app, chatkit, db = bare_app(url, tmp_path)

    @chatkit.respond
    def respond(thread: t.Any, message: t.Any, ctx: t.Any) -> t.Iterator[t.Any]:
        yield from stream_text(thread, [f"re: {message.content[0].text}"])

    client = app.test_client()
    thread_id = chat(client, "threads.create", ALICE, input=user_input("one")).events[0]["thread"][
        "id"
    ]
    before = stored_items(app, db)
    # The thread was read before the stream; the database dies as the turn takes its lease.
    hit = dies_at(app, db, pg, "UPDATE CHATKIT_THREADS SET TURN_TOKEN")
    ex = chat(
        client, "threads.add_user_message", ALICE, thread_id=thread_id, input=user_input("two")
    )
    assert len(hit) == 1
    assert ex.types == ["error"]
    assert ex.events[0]["message"] == NOT_SAVED_TEXT and ex.events[0]["allow_retry"] is False

    pg.start()
    assert stored_items(app, db) == before
    # no lease was taken, so the thread takes the next turn at once
    ex = chat(
        client, "threads.add_user_message", ALICE, thread_id=thread_id, input=user_input("two")
    )
    assert answer_of(ex) == "re: two"
    items = chat(client, "items.list", ALICE, thread_id=thread_id, order="asc").body["data"]
    assert [i["content"][0]["text"] for i in items] == ["one", "re: one", "two", "re: two"]


# --- the health check ------------------------------------------------------------------------


def test_health_fails_within_2_s_while_postgresql_is_down_and_passes_again_without_a_restart(
    pg: PostgresServer, url: str, tmp_path: t.Any
) -> None:
    # no pool_pre_ping: the first ping after the outage meets a dead pooled connection
    app = make_app("postgresql", tmp_path, database_url=url)
    client = app.test_client()  # anonymous: the check needs no login

    def check() -> tuple[int, str, float]:
        started = time.monotonic()
        response = client.get("/chatkit/health")
        assert response.mimetype == "application/health+json"
        return (
            response.status_code,
            response.get_json(force=True)["status"],
            (time.monotonic() - started),
        )

    for _ in range(3):  # pooled connections, all about to go stale
        assert check()[:2] == (200, "pass")
    pg.stop()
    try:
        for _ in range(2):
            status, verdict, elapsed = check()
            assert (status, verdict) == (503, "fail") and elapsed < 2.0
        body = client.get("/chatkit/health").data
        assert b"127.0.0.1" not in body and url.rsplit("/", 1)[1].encode() not in body
    finally:
        pg.start()
    assert check()[:2] == (200, "pass")
    # a restart nobody checked during: the pooled connections died unnoticed
    pg.stop()
    pg.start()
    assert check()[:2] == (200, "pass")
