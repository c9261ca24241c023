"""Group commit: concurrent turns share write transactions; a failing write fails alone.

``run_batch`` on a real SQLite file, then ``tests/fault_app.py`` under
``gunicorn -k gevent`` on SQLite and PostgreSQL: a burst of turns, whose writes
must take far fewer transactions than there are writes, and a burst holding
one turn whose user message the database refuses (a trigger), which must fail
that turn alone.
"""

from __future__ import annotations

import typing as t
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import sqlalchemy as sa

from flask_chatkit.group_commit import run_batch
from flask_chatkit.testing import chatkit_request
from flask_chatkit.testing import user_input
from flask_chatkit.turn_engine import NOT_SAVED_TEXT

from .test_faults import Reader
from .test_faults import answer_to
from .test_faults import ask
from .test_faults import serve
from .test_sqlite import database  # noqa: F401  (the fixture: SQLite, PostgreSQL)
from .test_store import sqlite_store  # noqa: F401  (the fixture)
from .test_store import user_msg

BURST = 200

#: Makes the database refuse the insert of a user message holding "poison".
POISON = {
    "sqlite": [
        "CREATE TRIGGER poison AFTER INSERT ON chatkit_items "
        "WHEN NEW.type = 'user_message' AND NEW.data LIKE '%poison%' "
        "BEGIN SELECT RAISE(ABORT, 'poisoned message'); END",
    ],
    "postgresql": [
        "CREATE FUNCTION poison() RETURNS trigger AS $$ BEGIN "
        "RAISE EXCEPTION 'poisoned message'; END $$ LANGUAGE plpgsql",
        "CREATE TRIGGER poison AFTER INSERT ON chatkit_items FOR EACH ROW "
        "WHEN (NEW.type = 'user_message' AND strpos(NEW.data, 'poison') > 0) "
        "EXECUTE FUNCTION poison()",
    ],
}


def test_a_batch_whose_write_fails_runs_each_write_alone(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'batch.db'}")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (n INTEGER PRIMARY KEY)")
    transactions: list[int] = []

    def transaction() -> t.ContextManager[t.Any]:
        transactions.append(1)
        return engine.begin()

    def insert(n: int) -> t.Callable[[t.Any], int]:
        def write(conn: t.Any) -> int:
            conn.exec_driver_sql(f"INSERT INTO t VALUES ({n})")
            return n

        return write

    outcomes = run_batch(transaction, [insert(1), insert(2), insert(3)])
    assert [o.value for o in outcomes] == [1, 2, 3] and len(transactions) == 1

    transactions.clear()
    outcomes = run_batch(transaction, [insert(4), insert(1), insert(5)])  # 1 exists
    assert [o.value for o in outcomes] == [4, None, 5]
    assert isinstance(outcomes[1].error, sa.exc.IntegrityError)
    assert len(transactions) == 4  # the batch, rolled back, then each alone
    with engine.connect() as conn:
        assert [r.n for r in conn.exec_driver_sql("SELECT n FROM t ORDER BY n")] == [1, 2, 3, 4, 5]
    engine.dispose()


def test_a_batchs_inserts_go_out_together_before_any_other_statement(
    sqlite_store: t.Any,
) -> None:
    store = sqlite_store
    engine = store.engine
    sent: list[str] = []
    sa.event.listen(engine, "before_cursor_execute", lambda *a: sent.append(a[2].split()[0]))

    def insert(n: int, item_id: str | None = None) -> t.Callable[[t.Any], int]:
        def write(conn: t.Any) -> int:
            message = user_msg(f"thr_{n}", item_id or f"msg_{n}")
            conn.execute(
                store._statements.insert_item, store._item_values(f"thr_{n}", message, "u")
            )
            return n

        return write

    def count(conn: t.Any) -> int:  # a read sees the inserts before it
        return int(conn.execute(sa.select(sa.func.count()).select_from(store.items)).scalar())

    outcomes = run_batch(
        lambda: store._batch_transaction(engine),
        [
            insert(1),
            insert(2),
            insert(3),
            count,
            insert(4),
            insert(5),
        ],
    )
    assert [o.value for o in outcomes] == [1, 2, 3, 3, 4, 5]
    assert sent == ["INSERT", "SELECT", "INSERT"]  # two executemany, around the read

    sent.clear()  # an id that exists fails its own write only
    outcomes = run_batch(
        lambda: store._batch_transaction(engine),
        [
            insert(6),
            insert(7, item_id="msg_2"),
            insert(8),
        ],
    )
    assert [o.value for o in outcomes] == [6, None, 8]
    assert isinstance(outcomes[1].error, sa.exc.IntegrityError)
    with engine.connect() as conn:
        assert count(conn) == 7


def turn(port_post: t.Callable[..., t.Any], i: int, text: str) -> list[dict[str, t.Any]]:
    return port_post(f"user{i % 10}", chatkit_request("threads.create", input=user_input(text)))


@pytest.mark.server
def test_concurrent_turns_share_commits_and_a_refused_write_fails_its_turn_alone(
    tmp_path: Path,
    database: tuple[str, str],  # noqa: F811
) -> None:
    kind, url = database
    reader = Reader(url)
    try:
        with reader.app.app_context(), reader.store.engine.begin() as conn:
            for statement in POISON[kind]:
                conn.exec_driver_sql(statement)
        with serve(tmp_path, url, CHATKIT_HEARTBEAT_INTERVAL=5) as server:
            server.post("warm", chatkit_request("threads.create", input=user_input(ask(1, 0))))
            before = server.stats()
            texts = [ask(3, 0.05, tag=f"burst {i}") for i in range(BURST)]
            texts[BURST // 2] = ask(3, 0.05, tag="poison")
            with ThreadPoolExecutor(max_workers=50) as pool:
                replies = list(pool.map(lambda i: turn(server.post, i, texts[i]), range(BURST)))
            after = server.stats()
    finally:
        reader.close()

    failed = [i for i, events in enumerate(replies) if events[-1]["type"] == "error"]
    assert failed == [BURST // 2]
    assert replies[BURST // 2][-1]["message"] == NOT_SAVED_TEXT
    for i, events in enumerate(replies):
        if i != BURST // 2:
            assert events[-1]["item"]["content"][0]["text"] == answer_to(texts[i])
    writes = after["writes"] - before["writes"]
    batches = after["batches"] - before["batches"]
    assert writes >= 2 * (BURST - 1)  # each turn's start and end at least
    assert batches <= writes / 4, f"{writes} writes took {batches} transactions"
    print(f"\ngroup commit on {kind}: {writes} writes in {batches} transactions")
