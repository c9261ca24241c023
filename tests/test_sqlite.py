"""The database under gevent: SQLite in WAL mode, and writes that never stall the hub.

The serving test runs ``tests/fault_app.py`` under ``gunicorn -k gevent`` on a
database whose user-message inserts are made 300 ms slow on purpose (a trigger:
on SQLite it calls a SQL function that blocks the thread running the
statement, on PostgreSQL ``pg_sleep``), and measures the gaps between the text
deltas of another stream on the same worker, as its client receives them.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import typing as t
from pathlib import Path

import pytest
from flask import Flask

from flask_chatkit import RequestContext
from flask_chatkit.sqlalchemy_store import SQLAlchemyStore
from flask_chatkit.types import ThreadMetadata
from flask_chatkit.types import utcnow

from .conftest import make_app
from .test_faults import Reader
from .test_faults import serve
from .test_faults import start_stream

DELAY = 0.3  # seconds the slow insert blocks its thread
PACE = 0.02  # seconds between the observed stream's deltas


def sqlite_app(path: Path, **config: t.Any) -> tuple[Flask, SQLAlchemyStore]:
    """ChatKit on a new SQLite file at *path* (its tables created by ``db.create_all()``)."""
    app = make_app(
        "sqlalchemy", path.parent, database_url=f"sqlite:///{path}", login=False, **config
    )
    return app, app.extensions["test_store"]


def pragmas(app: Flask, store: SQLAlchemyStore) -> tuple[str, int]:
    with app.app_context():
        store.save_thread(  # the store's first use prepares the engine
            ThreadMetadata(id="thr_wal", created_at=utcnow()), RequestContext(user_id="u")
        )
        with store.engine.connect() as conn:
            mode = conn.exec_driver_sql("PRAGMA journal_mode").scalar()
            sync = conn.exec_driver_sql("PRAGMA synchronous").scalar()
        store.engine.dispose()
    return str(mode), int(sync)


def test_sqlite_files_run_in_wal_mode_with_synchronous_normal(tmp_path: Path) -> None:
    app, store = sqlite_app(tmp_path / "wal.db")
    assert pragmas(app, store) == ("wal", 1)  # 1: NORMAL
    with sqlite3.connect(tmp_path / "wal.db") as raw:  # kept in the file
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_chatkit_sqlite_wal_false_keeps_the_files_own_settings(tmp_path: Path) -> None:
    app, store = sqlite_app(tmp_path / "plain.db", CHATKIT_SQLITE_WAL="false")
    assert pragmas(app, store) == ("delete", 2)  # SQLite's defaults: rollback journal, FULL


def test_a_bad_chatkit_sqlite_wal_fails_at_start_up(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="CHATKIT_SQLITE_WAL must be true or false"):
        sqlite_app(tmp_path / "bad.db", CHATKIT_SQLITE_WAL="maybe")


def delta_arrivals(sock: t.Any, arrivals: list[float], limit: float = 30.0) -> None:
    """Read a stream to its end, noting when each text delta arrived."""
    deadline = time.monotonic() + limit
    pending = b""
    while time.monotonic() < deadline:
        chunk = sock.recv(65536)
        if not chunk:
            return
        now = time.monotonic()
        pending += chunk
        *frames, pending = pending.split(b"\n\n")
        arrivals.extend(now for frame in frames if b'.text_delta"' in frame)


def slow_trigger(kind: str, marker: str, delay: float) -> list[str]:
    """The statements making the insert of a user message holding *marker* take
    *delay* seconds more (on SQLite, through fault_app's ``fault_delay``)."""
    if kind == "sqlite":
        return [
            "CREATE TRIGGER slow_user_message AFTER INSERT ON chatkit_items "
            f"WHEN NEW.type = 'user_message' AND NEW.data LIKE '%{marker}%' "
            f"BEGIN SELECT fault_delay({delay}); END",
        ]
    return [
        "CREATE FUNCTION fault_delay() RETURNS trigger AS $$ BEGIN "
        f"PERFORM pg_sleep({delay}); RETURN NEW; END $$ LANGUAGE plpgsql",
        "CREATE TRIGGER slow_user_message AFTER INSERT ON chatkit_items FOR EACH ROW "
        f"WHEN (NEW.type = 'user_message' AND strpos(NEW.data, '{marker}') > 0) "
        "EXECUTE FUNCTION fault_delay()",
    ]


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    """The kind and URL of a fresh database (PostgreSQL: the suite's throwaway server)."""
    if request.param == "postgresql":
        return "postgresql", request.getfixturevalue("postgres_db")
    return "sqlite", f"sqlite:///{tmp_path / 'slow.db'}"


@pytest.mark.server
def test_a_slow_write_does_not_hold_up_other_streams(
    tmp_path: Path, database: tuple[str, str]
) -> None:
    kind, url = database
    reader = Reader(url)  # the tables, before the server starts
    try:
        with reader.app.app_context():
            with reader.store.engine.begin() as conn:
                for statement in slow_trigger(kind, "slow-write", DELAY):
                    conn.exec_driver_sql(statement)
    finally:
        reader.close()

    delay_function = {"FAULT_SQLITE_DELAY": 1} if kind == "sqlite" else {}
    with serve(tmp_path, url, CHATKIT_HEARTBEAT_INTERVAL=5, **delay_function) as server:
        server.post("warm", {"type": "threads.list", "params": {}})
        arrivals: list[float] = []
        watched = start_stream(server.port, "ann", f"n=100 delay={PACE}")
        reading = threading.Thread(target=delta_arrivals, args=(watched, arrivals))
        reading.start()
        while len(arrivals) < 10:  # the watched stream is under way
            time.sleep(0.01)
        slow_started = time.monotonic()
        slow = server.post(
            "bob",
            {
                "type": "threads.create",
                "params": {
                    "input": {
                        "content": [{"type": "input_text", "text": "slow-write n=1 delay=0"}],
                        "attachments": [],
                        "inference_options": {},
                    }
                },
            },
        )
        slow_took = time.monotonic() - slow_started
        reading.join(30)
        watched.close()

    assert slow[-1]["type"] == "thread.item.done"
    assert slow_took >= DELAY  # the slow write did happen, and was waited for
    assert len(arrivals) == 100
    during = [
        b - a
        for a, b in zip(arrivals, arrivals[1:])
        if slow_started - 0.1 <= a <= slow_started + slow_took + 0.1
    ]
    assert during, "no delta of the watched stream arrived while the slow write ran"
    assert max(during) <= PACE + 0.05, f"a delta was held up {max(during):.3f} s"


def test_a_greenlet_killed_during_a_driver_call_waits_for_the_call_to_end() -> None:
    import gevent

    from flask_chatkit.greenlets import CallThread

    ended: list[float] = []

    def slow_call() -> str:
        time.sleep(0.2)  # unpatched here: blocks the call thread, not the hub
        ended.append(time.monotonic())
        return "done"

    calls = CallThread("test")
    assert gevent.spawn(calls.call, slow_call).get(timeout=5) == "done"
    caller = gevent.spawn(calls.call, slow_call)
    gevent.sleep(0.05)  # the call is running on the thread
    caller.kill(block=True, timeout=5)
    killed_at = time.monotonic()
    assert len(ended) == 2 and ended[1] <= killed_at  # the kill waited for the call
    assert isinstance(caller.value, gevent.GreenletExit)


def test_a_call_threads_error_is_raised_in_the_caller_and_calls_run_in_order() -> None:
    import gevent

    from flask_chatkit.greenlets import CallThread

    calls = CallThread("test")
    seen: list[int] = []

    def step(n: int) -> int:
        seen.append(n)
        if n == 3:
            raise ValueError("three")
        return n * 10

    callers = [gevent.spawn(calls.call, step, n) for n in range(6)]
    gevent.joinall(callers, timeout=5)
    assert seen == list(range(6))
    assert [c.value for c in callers if c.successful()] == [0, 10, 20, 40, 50]
    assert isinstance(callers[3].exception, ValueError)


class CountingThread:
    """A stand-in for a :class:`CallThread` that counts the calls it is handed."""

    def __init__(self, name: str) -> None:
        from flask_chatkit.greenlets import CallThread

        self.inner = CallThread(name)
        self.calls: list[str] = []

    def call(self, function: t.Callable[..., t.Any], *args: t.Any) -> t.Any:
        self.calls.append(getattr(function, "__name__", repr(function)))
        return self.inner.call(function, *args)


def test_a_transaction_costs_one_thread_call_per_statement_plus_a_commit_that_wrote(
    tmp_path: Path,
) -> None:
    """BEGIN rides with the first statement, rows come back with it, and the end of
    a transaction that only read (or ran nothing) takes no thread at all."""
    import gevent

    from flask_chatkit.sqlite import CooperativeConnection
    from flask_chatkit.sqlite import Threads

    reader, writer = CountingThread("r"), CountingThread("w")
    raw = sqlite3.connect(tmp_path / "calls.db", check_same_thread=False, isolation_level=None)
    conn = CooperativeConnection(raw, Threads(reader, writer))  # type: ignore[arg-type]

    def work() -> list[t.Any]:
        conn.execute("CREATE TABLE t (n INTEGER)")
        conn.begin(write=True)
        conn.execute("INSERT INTO t VALUES (1)")
        conn.execute("INSERT INTO t VALUES (2)")
        conn.commit()
        conn.begin(write=False)
        rows = conn.cursor().execute("SELECT n FROM t ORDER BY n").fetchall()
        conn.commit()
        conn.begin(write=True)  # a transaction that runs nothing
        conn.rollback()
        return rows

    assert gevent.spawn(work).get(timeout=5) == [(1,), (2,)]
    assert writer.calls == ["_execute", "_execute", "commit"]
    assert reader.calls == ["_execute", "_execute"]  # the CREATE, then the SELECT
    assert not raw.in_transaction
    raw.close()
