"""Scale: SQL statement counts do not grow with thread length, thread count or deltas.

Every statement the store's engine sends is counted (``before_cursor_execute``)
around one request; the same request on a short and a long history must send
the same number, below a small absolute bound. SQL stores only.
"""

from __future__ import annotations

import contextlib
import typing as t
from datetime import UTC
from datetime import datetime
from datetime import timedelta

import pytest
import sqlalchemy as sa
from flask import Flask

from flask_chatkit import stream_text
from flask_chatkit.testing import user_input
from flask_chatkit.types import AssistantMessageContent
from flask_chatkit.types import AssistantMessageItem
from flask_chatkit.types import ThreadMetadata
from flask_chatkit.types import UserMessageItem

pytestmark = pytest.mark.parametrize("store_kind", ["sqlalchemy", "postgresql"], indirect=True)

SMALL, LARGE = 5, 300


def backend(app: Flask) -> t.Any:
    return app.extensions["chatkit"].state(app).server.store


@contextlib.contextmanager
def capturing(app: Flask) -> t.Iterator[list[tuple[str, t.Any]]]:
    """The SQL statements (with parameters) the store's engine sends inside the block."""
    captured: list[tuple[str, t.Any]] = []

    def record(conn: t.Any, cursor: t.Any, statement: str, parameters: t.Any, *a: t.Any) -> None:
        captured.append((statement, parameters))

    with app.app_context():
        engine = backend(app).engine
    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        yield captured
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)


@contextlib.contextmanager
def counting(app: Flask) -> t.Iterator[list[str]]:
    """The SQL statements sent inside the block (filled in when it ends)."""
    statements: list[str] = []
    with capturing(app) as captured:
        yield statements
    statements.extend(statement for statement, _ in captured)


def add_history(app: Flask, thread_id: str, count: int, user_id: str = "alice") -> None:
    """*count* earlier messages in one multi-row INSERT, serialized by the store itself."""
    store = backend(app)
    start = datetime.now(UTC) - timedelta(days=1)
    rows = []
    for i in range(count):
        base = {
            "id": f"msg_{thread_id[4:]}_{i:05d}",
            "thread_id": thread_id,
            "created_at": start + timedelta(seconds=i),
        }
        if i % 2:
            item: t.Any = AssistantMessageItem(
                **base, content=[AssistantMessageContent(text=f"answer {i}")]
            )
        else:
            item = UserMessageItem(
                **base, content=[{"type": "input_text", "text": f"question {i}"}]
            )
        rows.append(store._item_values(thread_id, item, user_id))
    with app.app_context(), store.engine.begin() as conn:
        conn.execute(sa.insert(store.items), rows)


def add_threads(app: Flask, user_id: str, count: int) -> None:
    """*count* threads of *user_id* in one multi-row INSERT."""
    store = backend(app)
    start = datetime.now(UTC) - timedelta(days=1)
    rows = []
    for i in range(count):
        when = start + timedelta(seconds=i)
        thread = ThreadMetadata(id=f"thr_{user_id}{i:05d}", created_at=when, title=f"#{i}")
        rows.append(
            {
                "id": thread.id,
                "user_id": user_id,
                "created_at": when.replace(tzinfo=None),
                "updated_at": when.replace(tzinfo=None),
                "title": thread.title,
                "data": thread.model_dump_json(exclude_none=True),
            }
        )
    with app.app_context(), store.engine.begin() as conn:
        conn.execute(sa.insert(store.threads), rows)


def start(client: t.Any) -> str:
    ex = client.chatkit("threads.create", input=user_input("hi"))
    assert ex.status == 200 and "error" not in ex.types, ex.body
    return ex.events[0]["thread"]["id"]  # type: ignore[no-any-return]


def statements_of(app: Flask, client: t.Any, type_: str, **params: t.Any) -> list[str]:
    client.chatkit(type_, **params)  # warm up: connections opened, dialect initialized
    with counting(app) as statements:
        ex = client.chatkit(type_, **params)
    assert ex.status == 200, ex.body
    return statements


def assert_pages_items(statements: list[str]) -> None:
    """Item rows are only ever read a page at a time."""
    for statement in statements:
        if "chatkit_items.data" in statement:
            assert "LIMIT" in statement.upper(), statement


@pytest.fixture
def histories(app: Flask, chatkit: t.Any, alice: t.Any) -> dict[int, str]:
    """Two threads of alice: SMALL and LARGE earlier items (plus the first exchange)."""

    @chatkit.respond
    def respond(thread: t.Any, message: t.Any, context: t.Any) -> t.Any:
        yield from stream_text(thread, "ok")

    threads = {}
    for count in (SMALL, LARGE):
        threads[count] = start(alice)
        add_history(app, threads[count], count)
    return threads


# --- JSON requests ---------------------------------------------------------------------


def test_items_list_and_get_by_id_send_as_many_statements_for_300_items_as_for_5(
    app: Flask, alice: t.Any, histories: dict[int, str]
) -> None:
    big = alice.chatkit("items.list", thread_id=histories[LARGE], limit=20).body
    assert len(big["data"]) == 20 and big["has_more"] is True
    for type_, params, bound in [
        ("items.list", {}, 2),
        ("items.list", {"limit": 50, "order": "asc"}, 2),
        ("threads.get_by_id", {}, 3),
    ]:
        counts = {}
        for size, thread_id in histories.items():
            statements = statements_of(app, alice, type_, thread_id=thread_id, **params)
            assert_pages_items(statements)
            counts[size] = len(statements)
        assert counts[SMALL] == counts[LARGE] <= bound, (type_, params, counts)


def test_items_list_after_a_cursor_is_bounded_whatever_the_thread_length(
    app: Flask, alice: t.Any, histories: dict[int, str]
) -> None:
    counts = {}
    for size, thread_id in histories.items():
        page = alice.chatkit("items.list", thread_id=thread_id, limit=3, order="asc").body
        statements = statements_of(
            app, alice, "items.list", thread_id=thread_id, limit=3, order="asc", after=page["after"]
        )
        assert_pages_items(statements)
        counts[size] = len(statements)
    assert counts[SMALL] == counts[LARGE] <= 3, counts


def test_threads_list_sends_as_many_statements_for_300_threads_as_for_5(
    app: Flask, alice: t.Any, bob: t.Any
) -> None:
    add_threads(app, "alice", SMALL)
    add_threads(app, "bob", LARGE)
    page = bob.chatkit("threads.list", limit=20).body
    assert len(page["data"]) == 20 and page["has_more"] is True
    for params, bound in [
        ({}, 1),
        ({"limit": 2, "order": "asc"}, 1),
        ({"limit": 2, "after": "{user}00001"}, 2),
    ]:
        counts = {}
        for user, client, size in [("alice", alice, SMALL), ("bob", bob, LARGE)]:
            if "after" in params:
                params = {**params, "after": f"thr_{user}00001"}
            statements = statements_of(app, client, "threads.list", **params)
            for statement in statements:
                if "chatkit_threads.data" in statement:
                    assert "LIMIT" in statement.upper(), statement
            counts[size] = len(statements)
        assert counts[SMALL] == counts[LARGE] <= bound, (params, counts)


# --- streamed turns ----------------------------------------------------------------------


@pytest.fixture
def deltas(chatkit: t.Any) -> dict[str, int]:
    """The responder streams ``deltas["n"]`` text deltas and one done item."""
    setting = {"n": 10}

    @chatkit.respond
    def respond(thread: t.Any, message: t.Any, context: t.Any) -> t.Any:
        yield from stream_text(thread, ["w "] * setting["n"])

    return setting


def turn_statements(app: Flask, client: t.Any, thread_id: str, text: str) -> list[str]:
    with counting(app) as statements:
        ex = client.chatkit("threads.add_user_message", thread_id=thread_id, input=user_input(text))
    assert ex.status == 200 and "error" not in ex.types, ex.body
    assert ex.types[-1] == "thread.item.done"
    return statements


def test_a_streamed_turn_sends_as_many_statements_after_300_items_as_after_5(
    app: Flask, alice: t.Any, histories: dict[int, str], deltas: dict[str, int]
) -> None:
    counts = {}
    for size, thread_id in histories.items():
        turn_statements(app, alice, thread_id, "warm up")
        statements = turn_statements(app, alice, thread_id, "measured")
        assert_pages_items(statements)
        counts[size] = len(statements)
    assert counts[SMALL] == counts[LARGE] <= 10, counts


def test_a_streamed_turn_sends_as_many_statements_for_200_deltas_as_for_10(
    app: Flask, alice: t.Any, histories: dict[int, str], deltas: dict[str, int]
) -> None:
    thread_id = histories[SMALL]
    turn_statements(app, alice, thread_id, "warm up")
    counts = {}
    for n in (10, 200):
        deltas["n"] = n
        counts[n] = len(turn_statements(app, alice, thread_id, f"{n} deltas"))
    assert counts[10] == counts[200] <= 10, counts


@contextlib.contextmanager
def transactions(app: Flask) -> t.Iterator[list[list[str]]]:
    """The transactions the store's engine runs inside the block, each as the
    statements it sent (the ``BEGIN`` and ``COMMIT`` themselves not counted)."""
    runs: list[list[str]] = []

    def begin(conn: t.Any) -> None:
        runs.append([])

    def record(conn: t.Any, cursor: t.Any, statement: str, *args: t.Any) -> None:
        runs[-1].append(statement)

    with app.app_context():
        engine = backend(app).engine
    sa.event.listen(engine, "begin", begin)
    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        yield runs
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)
        sa.event.remove(engine, "begin", begin)


def is_write(transaction: list[str]) -> bool:
    return any(s.lstrip().split()[0].upper() in ("INSERT", "UPDATE", "DELETE") for s in transaction)


def test_a_streamed_turn_on_an_existing_thread_is_two_writes_and_two_reads_at_most(
    app: Flask, alice: t.Any, histories: dict[int, str], deltas: dict[str, int]
) -> None:
    thread_id = histories[SMALL]
    turn_statements(app, alice, thread_id, "warm up")
    with transactions(app) as runs:
        ex = alice.chatkit(
            "threads.add_user_message", thread_id=thread_id, input=user_input("measured")
        )
    assert ex.status == 200 and ex.types[-1] == "thread.item.done", ex.body
    writes = [run for run in runs if is_write(run)]
    reads = [run for run in runs if not is_write(run)]
    # the lease and the user message; the answer and the lease's release
    assert len(writes) <= 2, writes
    assert len(reads) <= 2, reads
    # the end finds its lease, which proves the thread is the user's: no read of its own
    end = writes[-1]
    assert not any(s.lstrip().upper().startswith("SELECT") for s in end), end
    # the answer's done event went out after its write was committed, and it is stored
    listed = alice.chatkit("items.list", thread_id=thread_id, order="desc", limit=1).body
    assert listed["data"][0]["id"] == ex.events[-1]["item"]["id"]


# --- indexes ------------------------------------------------------------------------------


def plans(app: Flask, captured: list[tuple[str, t.Any]]) -> list[tuple[str, str]]:
    """Each captured SELECT with its query plan (as one text)."""
    out = []
    with app.app_context(), backend(app).engine.connect() as conn:
        sqlite = conn.dialect.name == "sqlite"
        if not sqlite:  # tiny tables: make the planner show whether an index *could* serve
            for setting in ("enable_seqscan", "enable_bitmapscan", "enable_sort"):
                conn.exec_driver_sql(f"SET {setting} = off")
        for statement, parameters in captured:
            if not statement.lstrip().upper().startswith("SELECT"):
                continue
            prefix = "EXPLAIN QUERY PLAN " if sqlite else "EXPLAIN "
            rows = conn.exec_driver_sql(prefix + statement, parameters).all()
            out.append((statement, "\n".join(str(row[-1]) for row in rows)))
        conn.rollback()
    return out


def test_pages_are_read_through_indexes_in_index_order(
    app: Flask, alice: t.Any, bob: t.Any, histories: dict[int, str]
) -> None:
    add_threads(app, "bob", LARGE)
    thread_id = histories[LARGE]
    requests = [
        (alice, "items.list", {"thread_id": thread_id}),
        (
            alice,
            "items.list",
            {"thread_id": thread_id, "order": "asc", "after": f"msg_{thread_id[4:]}_00010"},
        ),
        (alice, "threads.get_by_id", {"thread_id": thread_id}),
        (bob, "threads.list", {}),
        (bob, "threads.list", {"order": "asc", "after": "thr_bob00005"}),
    ]
    for client, type_, params in requests:
        with capturing(app) as captured:
            assert client.chatkit(type_, **params).status == 200
        explained = plans(app, captured)
        assert explained, type_
        for statement, plan in explained:
            assert "Seq Scan" not in plan, (type_, plan)  # PostgreSQL: a full table read
            assert not any(line.startswith("SCAN ") for line in plan.splitlines()), plan
            assert "Sort" not in plan and "TEMP B-TREE" not in plan, (type_, plan)
            # a page of items is found by its thread, a page of threads by their user
            by_id = "chatkit_threads.id =" in statement  # a lookup by unique id
            key = (
                "thread_id"
                if "chatkit_items.data" in statement
                else "user_id"
                if "chatkit_threads.data" in statement and not by_id
                else None
            )
            if key is not None:
                # SQLite "(thread_id=?...", PostgreSQL "Index Cond: ((thread_id)..." alone
                # or "Index Cond: (((thread_id)... AND (created_at ...))" with a range
                assert (
                    f"({key}=" in plan
                    or f"Index Cond: (({key})" in plan
                    or f"Index Cond: ((({key})" in plan
                ), (type_, plan)
