"""Point 3 of issue 7: costs that must not grow with thread length or thread count.

Run it from the repository root with the dev venv::

    /work/venv/bin/python -m benchmarks.costs                     # SQLite and PostgreSQL
    /work/venv/bin/python -m benchmarks.costs --store sqlite --repeat 21
    /work/venv/bin/python -m benchmarks.costs --items 10,1000,100000 --threads 10,100000

What is measured, for ``SQLAlchemyStore`` on a SQLite file and on a throwaway
PostgreSQL server (started from the OS binaries by ``tests/pg.py``):

* **thread length**: one user owns threads of 10, 1,000 and 100,000 items;
  ``items.list`` (first page, default limit), ``items.list`` after a cursor in
  the middle of the thread, ``threads.get_by_id`` (thread + first page) and a
  streamed turn (``threads.add_user_message``, the responder streams 10 text
  deltas with no delay, the whole stream is read) on each thread;
* **threads per user**: one user owns 10 threads, another 100,000;
  ``threads.list`` (first page), ``threads.list`` after a cursor in the middle,
  and a streamed turn on one of the user's threads.

Every request goes through the real HTTP layer in-process: the Flask test client
posts to ``/chatkit`` as a user authenticated by a bearer token (Flask-Login's
request loader), with heartbeats off so that the stream runs in the request.
Statements are counted with SQLAlchemy's ``before_cursor_execute`` event on the
store's engine; times are wall-clock medians of ``--repeat`` runs after a
warm-up, measured round-robin over the sizes so that drift hits all alike. The
ratio is the largest median over the smallest (target: at most 1.5x).

The data is written in bulk (SQLAlchemy Core ``insert()`` with executemany)
with exactly the rows the store writes itself: item rows come from the store's
own ``_item_values`` and thread rows mirror ``save_thread``; a sample is read
back through the store API before measuring. On PostgreSQL the tables are
``ANALYZE``d after the fill (as autovacuum would soon do); SQLite keeps no
statistics unless asked, and is left as an app would leave it.

Not part of the test run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
import typing as t
from datetime import UTC
from datetime import datetime
from datetime import timedelta

import sqlalchemy as sa
from flask import Flask
from flask_login import LoginManager
from flask_login import UserMixin
from flask_sqlalchemy import SQLAlchemy

from flask_chatkit import ChatKit
from flask_chatkit import RequestContext
from flask_chatkit import stream_text
from flask_chatkit.auth import bearer_token
from flask_chatkit.sqlalchemy_store import SQLAlchemyStore
from flask_chatkit.testing import chatkit_request
from flask_chatkit.testing import parse_sse
from flask_chatkit.testing import user_input
from flask_chatkit.types import AssistantMessageContent
from flask_chatkit.types import AssistantMessageItem
from flask_chatkit.types import ThreadMetadata
from flask_chatkit.types import UserMessageItem

#: Rows per executemany call while filling.
CHUNK = 5_000
#: Text deltas streamed by the responder of a measured turn.
TURN_DELTAS = 10
FILLER = "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor. "


class User(UserMixin):
    def __init__(self, user_id: str) -> None:
        self.id = user_id


# --- the app ------------------------------------------------------------------------


def make_app(uri: str) -> tuple[Flask, SQLAlchemy, SQLAlchemyStore]:
    """An app like the tests' ``make_app``: any ``Bearer token-<user>`` logs *user* in."""
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY="bench",
        SQLALCHEMY_DATABASE_URI=uri,
        CHATKIT_HEARTBEAT_INTERVAL=0,
    )
    login = LoginManager(app)

    @login.request_loader
    def load_from_token(request: t.Any) -> User | None:
        token = bearer_token(request)
        return User(token[6:]) if token and token.startswith("token-") else None

    db = SQLAlchemy()
    store = SQLAlchemyStore(db)
    db.init_app(app)
    with app.app_context():
        db.create_all()
    chatkit = ChatKit(app, store=store)

    @chatkit.respond
    def respond(thread: t.Any, message: t.Any, context: t.Any) -> t.Any:
        yield from stream_text(thread, ["w "] * TURN_DELTAS)

    return app, db, store


# --- filling ------------------------------------------------------------------------


def item_of(thread_id: str, i: int, when: datetime) -> t.Any:
    """The *i*-th earlier message of a thread: questions and answers in turn."""
    base = {"id": f"msg_{thread_id[4:]}_{i:06d}", "thread_id": thread_id, "created_at": when}
    if i % 2:
        return AssistantMessageItem(
            **base, content=[AssistantMessageContent(text=f"answer {i}. {FILLER * 2}")]
        )
    return UserMessageItem(**base, content=[{"type": "input_text", "text": f"question {i}?"}])


def thread_row(thread: ThreadMetadata, user_id: str, updated: datetime) -> dict[str, t.Any]:
    """The row ``SQLAlchemyStore.save_thread`` inserts for a new thread."""
    return {
        "id": thread.id,
        "user_id": user_id,
        "created_at": thread.created_at.astimezone(UTC).replace(tzinfo=None),
        "updated_at": updated.astimezone(UTC).replace(tzinfo=None),
        "agent_id": None,
        "title": thread.title,
        "data": thread.model_dump_json(exclude_none=True),
    }


def insert(app: Flask, store: SQLAlchemyStore, table: sa.Table, rows: t.Iterable[dict]) -> None:
    batch: list[dict[str, t.Any]] = []
    with app.app_context(), store.engine.begin() as conn:
        for row in rows:
            batch.append(row)
            if len(batch) == CHUNK:
                conn.execute(sa.insert(table), batch)
                batch = []
        if batch:
            conn.execute(sa.insert(table), batch)


def add_threads(
    app: Flask, store: SQLAlchemyStore, user_id: str, count: int, start: datetime
) -> list[str]:
    """*count* threads of *user_id*, one second apart from *start*; their ids, oldest first."""
    ids = [f"thr_{user_id}_{i:06d}" for i in range(count)]

    def rows() -> t.Iterator[dict[str, t.Any]]:
        for i, thread_id in enumerate(ids):
            when = start + timedelta(seconds=i)
            thread = ThreadMetadata(id=thread_id, created_at=when, title=f"Conversation {i}")
            yield thread_row(thread, user_id, when)

    insert(app, store, store.threads, rows())
    return ids


def add_items(
    app: Flask, store: SQLAlchemyStore, thread_id: str, user_id: str, count: int, start: datetime
) -> list[str]:
    """*count* items in *thread_id*, rows built by the store's own ``_item_values``."""
    ids = []

    def rows() -> t.Iterator[dict[str, t.Any]]:
        for i in range(count):
            item = item_of(thread_id, i, start + timedelta(seconds=i))
            ids.append(item.id)
            yield store._item_values(thread_id, item, user_id)

    insert(app, store, store.items, rows())
    return ids


def verify(
    app: Flask,
    store: SQLAlchemyStore,
    user_id: str,
    thread_id: str,
    ids: list[str],
    start: datetime,
) -> None:
    """Read a sample back through the store API: the rows are what the store writes."""
    ctx = RequestContext(user_id=user_id)
    with app.app_context():
        store.load_thread(thread_id, ctx)
        for i in sorted({0, len(ids) // 2, len(ids) - 1}):
            expected = item_of(thread_id, i, start + timedelta(seconds=i))
            got = store.load_item(thread_id, ids[i], ctx)
            assert got == expected, (got, expected)
        page = store.load_thread_items(thread_id, None, 5, "desc", ctx)
        assert [i.id for i in page.data] == ids[::-1][:5], page
        page = store.load_thread_items(thread_id, ids[len(ids) // 2], 3, "asc", ctx)
        assert [i.id for i in page.data] == ids[len(ids) // 2 + 1 :][:3], page


def verify_threads(app: Flask, store: SQLAlchemyStore, user_id: str, ids: list[str]) -> None:
    ctx = RequestContext(user_id=user_id)
    with app.app_context():
        page = store.load_threads(5, None, "desc", ctx)
        assert [th.id for th in page.data] == ids[::-1][:5], page
        middle = ids[len(ids) // 2]
        assert store.load_thread(middle, ctx).title == f"Conversation {len(ids) // 2}"
        page = store.load_threads(3, middle, "desc", ctx)
        assert [th.id for th in page.data] == ids[: len(ids) // 2][::-1][:3], page


# --- measuring ------------------------------------------------------------------------


class Counter:
    """Counts the statements the store's engine sends."""

    def __init__(self, engine: sa.Engine) -> None:
        self.count = 0
        sa.event.listen(engine, "before_cursor_execute", self._record)

    def _record(self, *args: t.Any) -> None:
        self.count += 1


def call(app: Flask, user_id: str, type_: str, **params: t.Any) -> bytes:
    client = app.test_client()
    body = chatkit_request(type_, **params)
    if type_ == "threads.add_user_message":
        body["params"]["input"] = user_input("one more question")
    response = client.post(
        "/chatkit",
        data=json.dumps(body),
        content_type="application/json",
        headers={"Authorization": f"Bearer token-{user_id}"},
    )
    data = response.data  # reads a stream to its end
    assert response.status_code == 200, data[:500]
    if response.mimetype == "text/event-stream":
        events = parse_sse(data)
        assert events[-1]["type"] == "thread.item.done", events[-1]
        assert not any(e["type"] == "error" for e in events), events
    return data


class Operation(t.NamedTuple):
    name: str
    type_: str
    # size -> (user id, params)
    cases: dict[int, tuple[str, dict[str, t.Any]]]


def measure(
    app: Flask, counter: Counter, op: Operation, repeat: int
) -> dict[int, tuple[float, int]]:
    """Median ms and statements per request, for each size of *op*."""
    times: dict[int, list[float]] = {size: [] for size in op.cases}
    counts: dict[int, set[int]] = {size: set() for size in op.cases}
    for size, (user_id, params) in op.cases.items():
        call(app, user_id, op.type_, **params)  # warm up
    for _ in range(repeat):
        for size, (user_id, params) in op.cases.items():
            before = counter.count
            began = time.perf_counter()
            call(app, user_id, op.type_, **params)
            times[size].append((time.perf_counter() - began) * 1000)
            counts[size].add(counter.count - before)
    out = {}
    for size in op.cases:
        assert len(counts[size]) == 1, (op.name, size, counts[size])  # deterministic
        out[size] = (statistics.median(times[size]), counts[size].pop())
    return out


# --- one store --------------------------------------------------------------------------


@contextlib.contextmanager
def database(kind: str) -> t.Iterator[tuple[str, str]]:
    """(SQLAlchemy URL, description) of an empty database of *kind*."""
    if kind == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            yield f"sqlite:///{os.path.join(tmp, 'costs.db')}", f"SQLite {sqlite3.sqlite_version}"
        return
    sys.path.insert(0, os.getcwd())
    from tests.pg import PostgresServer
    from tests.pg import find_bin_dir

    if find_bin_dir() is None:
        raise SystemExit("PostgreSQL binaries not found (apt-get install postgresql)")
    server = PostgresServer()
    try:
        server.start()
        with server.admin() as conn:
            version = conn.info.parameter_status("server_version")
        yield server.create_database("chatkit_costs"), f"PostgreSQL {version}"
    finally:
        server.cleanup()


def run_store(kind: str, item_sizes: list[int], thread_sizes: list[int], repeat: int) -> str:
    with database(kind) as (uri, label):
        app, db, store = make_app(uri)
        start = datetime.now(UTC) - timedelta(days=30)
        began = time.perf_counter()

        # thread length: user "reader" owns one thread per size
        item_threads = add_threads(app, store, "reader", len(item_sizes), start)
        items_of: dict[int, list[str]] = {}
        for size, thread_id in zip(item_sizes, item_threads):
            items_of[size] = add_items(app, store, thread_id, "reader", size, start)
            verify(app, store, "reader", thread_id, items_of[size], start)
        # threads per user: one user per size
        threads_of: dict[int, list[str]] = {}
        for size in thread_sizes:
            user_id = f"owner{size}"
            threads_of[size] = add_threads(app, store, user_id, size, start)
            verify_threads(app, store, user_id, threads_of[size])
            # one thread of the user holds a short conversation to answer in
            add_items(app, store, threads_of[size][-1], user_id, 10, start)
        if kind == "postgresql":
            with app.app_context(), store.engine.connect() as conn:
                conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("ANALYZE")
        fill = time.perf_counter() - began

        by_thread = dict(zip(item_sizes, item_threads))
        ops = [
            Operation(
                "items.list, first page",
                "items.list",
                {n: ("reader", {"thread_id": by_thread[n]}) for n in item_sizes},
            ),
            Operation(
                "items.list, page after the middle",
                "items.list",
                {
                    n: ("reader", {"thread_id": by_thread[n], "after": items_of[n][n // 2]})
                    for n in item_sizes
                },
            ),
            Operation(
                "threads.get_by_id",
                "threads.get_by_id",
                {n: ("reader", {"thread_id": by_thread[n]}) for n in item_sizes},
            ),
            Operation(
                f"streamed turn ({TURN_DELTAS} deltas)",
                "threads.add_user_message",
                {n: ("reader", {"thread_id": by_thread[n]}) for n in item_sizes},
            ),
            Operation(
                "threads.list, first page",
                "threads.list",
                {n: (f"owner{n}", {}) for n in thread_sizes},
            ),
            Operation(
                "threads.list, page after the middle",
                "threads.list",
                {n: (f"owner{n}", {"after": threads_of[n][n // 2]}) for n in thread_sizes},
            ),
            Operation(
                f"streamed turn ({TURN_DELTAS} deltas)",
                "threads.add_user_message",
                {n: (f"owner{n}", {"thread_id": threads_of[n][-1]}) for n in thread_sizes},
            ),
        ]
        with app.app_context():
            counter = Counter(store.engine)
        results = [(op, measure(app, counter, op, repeat)) for op in ops]
        with app.app_context():
            for engine in db.engines.values():
                engine.dispose()

    lines = [
        f"### {label}: {fill:.1f} s to fill {sum(item_sizes):,} items and "
        f"{sum(thread_sizes) + len(item_sizes):,} threads; median of {repeat}\n"
    ]
    for axis, sizes, unit, picked in [
        ("items in the thread", item_sizes, "items", results[:4]),
        ("threads of the user", thread_sizes, "threads", results[4:]),
    ]:
        head = " | ".join(f"{n:,} {unit}" for n in sizes)
        lines.append(f"| operation ({axis}) | {head} | time ratio | statements |")
        lines.append("|---|" + "---:|" * len(sizes) + "---:|---|")
        for op, res in picked:
            cells = " | ".join(f"{res[n][0]:.2f} ms" for n in sizes)
            medians = [res[n][0] for n in sizes]
            ratio = max(medians) / min(medians)
            counts = [res[n][1] for n in sizes]
            stmts = (
                f"{counts[0]} at every size"
                if len(set(counts)) == 1
                else " / ".join(map(str, counts)) + " (grows!)"
            )
            flag = "" if ratio <= 1.5 else " ⚠"
            lines.append(f"| {op.name} | {cells} | {ratio:.2f}x{flag} | {stmts} |")
        lines.append("")
    return "\n".join(lines)


def sizes(text: str) -> list[int]:
    return [int(part.replace("_", "")) for part in text.split(",")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument(
        "--items", type=sizes, default=[10, 1_000, 100_000], help="thread lengths, comma-separated"
    )
    parser.add_argument(
        "--threads", type=sizes, default=[10, 100_000], help="threads per user, comma-separated"
    )
    parser.add_argument("--repeat", type=int, default=15, help="runs per cell (median)")
    args = parser.parse_args(argv)
    kinds = ["sqlite", "postgresql"] if args.store == "both" else [args.store]
    print(
        f"## Costs by thread length and thread count (Python {sys.version.split()[0]}, "
        f"SQLAlchemy {sa.__version__})\n"
    )
    for kind in kinds:
        print(run_store(kind, args.items, args.threads, args.repeat), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
