"""``GET {prefix}/health``: ``application/health+json``, 200 ``pass`` while the
store answers, 503 ``fail`` within 2 s when it does not, ``pass`` again once it
is back. The PostgreSQL outage (a server stopped and started) is in
``tests/test_outages.py``.
"""

from __future__ import annotations

import logging
import sqlite3
import time
import typing as t

import pytest
import sqlalchemy as sa
from flask import Flask

from flask_chatkit import InMemoryStore
from flask_chatkit.errors import StoreUnavailableError

from .conftest import make_app

HEALTH_TYPE = "application/health+json"


def health(app: Flask, prefix: str = "/chatkit") -> tuple[int, dict[str, t.Any], float]:
    """Status, body and seconds taken of an anonymous ``GET {prefix}/health``."""
    started = time.monotonic()
    response = app.test_client().get(f"{prefix}/health")
    elapsed = time.monotonic() - started
    assert response.mimetype == HEALTH_TYPE
    assert response.headers["Cache-Control"] == "no-store"
    body = response.get_json(force=True)
    assert set(body) == {"status", "checks"}
    (check,) = body["checks"]["store:responseTime"]
    assert check["componentType"] == "datastore" and check["observedUnit"] == "ms"
    assert check["status"] == body["status"]
    assert set(check) == {"componentType", "observedValue", "observedUnit", "status", "time"}
    return response.status_code, body, elapsed


def assert_pass(app: Flask) -> None:
    status, body, _ = health(app)
    assert (status, body["status"]) == (200, "pass")


def assert_fail(app: Flask) -> float:
    status, body, elapsed = health(app)
    assert (status, body["status"]) == (503, "fail")
    return elapsed


@pytest.mark.parametrize("kind", ["memory", "sqlalchemy"])
def test_health_passes_without_authentication_or_csrf(tmp_path: t.Any, kind: str) -> None:
    app = make_app(kind, tmp_path, CHATKIT_URL_PREFIX="/api/chat", CHATKIT_SELF_HOSTED=False)
    status, body, _ = health(app, "/api/chat")
    assert (status, body["status"]) == (200, "pass")
    posted = app.test_client().post("/api/chat/health")  # GET only: the JSON 404 of the prefix
    assert posted.status_code == 404 and posted.mimetype == "application/json"


class FailingStore(InMemoryStore):
    """A store whose backend is down: its ping fails with a message naming a host."""

    def ping(self, timeout: float) -> None:
        raise ConnectionError("could not connect to db.internal.example:5432 as admin")


def test_a_store_that_fails_its_ping_answers_503_without_the_error_text(
    tmp_path: t.Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "flask_chatkit")
    app = make_app(tmp_path=tmp_path, store=FailingStore())
    response = app.test_client().get("/chatkit/health")
    assert response.status_code == 503
    assert b"internal" not in response.data and b"admin" not in response.data
    assert_fail(app)
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "ConnectionError" in logged and "internal" not in logged


def test_sqlite_health_fails_while_the_tables_are_gone_and_passes_once_they_are_back(
    tmp_path: t.Any,
) -> None:
    app = make_app("sqlalchemy", tmp_path)
    assert_pass(app)
    store = app.extensions["test_store"]
    with app.app_context():
        store.threads.drop(store.engine)
    response = app.test_client().get("/chatkit/health")
    assert response.status_code == 503
    assert b"chatkit_threads" not in response.data and str(tmp_path).encode() not in response.data
    with app.app_context():
        store.threads.create(store.engine)
    assert_pass(app)


def test_sqlite_health_fails_within_the_timeout_while_another_process_locks_the_file(
    tmp_path: t.Any,
) -> None:
    # rollback-journal mode: an exclusive lock keeps readers out (30 s busy timeout)
    app = make_app("sqlalchemy", tmp_path, CHATKIT_SQLITE_WAL=False, CHATKIT_HEALTH_TIMEOUT=0.5)
    assert_pass(app)
    locker = sqlite3.connect(tmp_path / "chat.db", isolation_level=None)
    try:
        assert locker.execute("PRAGMA journal_mode").fetchone() == ("delete",)
        locker.execute("BEGIN EXCLUSIVE")
        for _ in range(2):  # the second waits on the read still running, as long
            elapsed = assert_fail(app)
            assert 0.4 < elapsed < 2.0
        locker.execute("COMMIT")
    finally:
        locker.close()
    deadline = time.monotonic() + 5
    while health(app)[0] != 200:  # the blocked read finishes once the lock is gone
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_the_sqlalchemy_store_ping_raises_store_unavailable(tmp_path: t.Any) -> None:
    app = make_app("sqlalchemy", tmp_path)
    store = app.extensions["test_store"]
    with app.app_context():
        store.ping(1.0)
        with store.engine.begin() as conn:
            conn.execute(sa.text("DROP TABLE chatkit_threads"))
        with pytest.raises(StoreUnavailableError):
            store.ping(1.0)


def test_health_passes_on_sqlite_in_memory(tmp_path: t.Any) -> None:
    # the read runs in a thread of its own: Flask-SQLAlchemy shares the one
    # in-memory database between threads (a StaticPool)
    app = make_app("sqlalchemy", tmp_path, database_url="sqlite://")
    assert_pass(app)
