"""(b) The official ``openai-chatkit`` server (the reference implementation) under FastAPI + uvicorn.

::

    BENCH_DATABASE_URL=sqlite:////tmp/b.sqlite3 uvicorn benchmarks.servers.official_bench:app \\
        --workers 1 --backlog 4096 --no-access-log --host 127.0.0.1 --port 8000

A ``chatkit.server.ChatKitServer`` subclass whose ``respond`` yields the same
events as (a) with ``await asyncio.sleep(d)`` between the deltas, and a
``chatkit.store.Store`` of the same design as flask_chatkit's
``SQLAlchemyStore`` (the wire JSON in a ``data`` column beside indexed
``id``/``user_id``/``thread_id``/``created_at`` columns, one short transaction
per call):

* SQLite: stdlib ``sqlite3`` in the default thread pool (``asyncio.to_thread``),
  one connection per pool thread;
* PostgreSQL: ``psycopg.AsyncConnection`` in a small pool (``psycopg_pool`` if
  installed, else a queue of at most ``BENCH_PG_CONNECTIONS`` connections, 15 by
  default like SQLAlchemy's 5 + 10 overflow).

The endpoint follows the SDK's FastAPI example: ``StreamingResponse`` for
streaming results, ``Response(result.json)`` otherwise. The user id comes from
the same bearer tokens (``token-<i>``), passed in the context.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import threading
import typing as t
from datetime import datetime
from urllib.parse import unquote
from urllib.parse import urlsplit

from chatkit.server import ChatKitServer
from chatkit.server import StreamingResult
from chatkit.store import NotFoundError
from chatkit.store import Store
from chatkit.types import AssistantMessageContent
from chatkit.types import AssistantMessageContentPartAdded
from chatkit.types import AssistantMessageContentPartDone
from chatkit.types import AssistantMessageContentPartTextDelta
from chatkit.types import AssistantMessageItem
from chatkit.types import Attachment
from chatkit.types import Page
from chatkit.types import ThreadItem
from chatkit.types import ThreadItemAddedEvent
from chatkit.types import ThreadItemDoneEvent
from chatkit.types import ThreadItemUpdatedEvent
from chatkit.types import ThreadMetadata
from fastapi import FastAPI
from fastapi import Request
from fastapi.responses import Response
from fastapi.responses import StreamingResponse
from pydantic import TypeAdapter

from . import database_url
from . import sqlite_pragmas
from . import user_of
from . import workload

Context = dict[str, t.Any]
ItemAdapter: TypeAdapter[ThreadItem] = TypeAdapter(ThreadItem)
AttachmentAdapter: TypeAdapter[Attachment] = TypeAdapter(Attachment)

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS bench_threads (
        pk {pk}, id VARCHAR(255) NOT NULL UNIQUE, user_id VARCHAR(255) NOT NULL,
        created_at {ts} NOT NULL, data TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS ix_bench_threads_user ON bench_threads (user_id, created_at, pk)",
    """CREATE TABLE IF NOT EXISTS bench_items (
        pk {pk}, id VARCHAR(255) NOT NULL UNIQUE, thread_id VARCHAR(255) NOT NULL,
        user_id VARCHAR(255) NOT NULL, type VARCHAR(64) NOT NULL,
        created_at {ts} NOT NULL, data TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS ix_bench_items_thread ON bench_items (thread_id, created_at, pk)",
    """CREATE TABLE IF NOT EXISTS bench_attachments (
        pk {pk}, id VARCHAR(255) NOT NULL UNIQUE, user_id VARCHAR(255) NOT NULL,
        data TEXT NOT NULL)""",
]


def _naive(value: datetime) -> datetime:
    return value.replace(tzinfo=None) if value.tzinfo is not None else value


class SQLStore(Store[Context]):
    """The shared SQL of both backends; ``_fetch``/``_exec`` run one transaction.

    Placeholders are ``%s`` (PostgreSQL); the SQLite backend rewrites them to ``?``.
    """

    async def _tx(
        self, statements: list[tuple[str, tuple[t.Any, ...]]], fetch: bool
    ) -> list[t.Any]:
        raise NotImplementedError

    async def _fetch(self, sql: str, *params: t.Any) -> list[t.Any]:
        return await self._tx([(sql, params)], fetch=True)

    async def _exec(self, sql: str, *params: t.Any) -> None:
        await self._tx([(sql, params)], fetch=False)

    # --- threads ---------------------------------------------------------------

    async def load_thread(self, thread_id: str, context: Context) -> ThreadMetadata:
        rows = await self._fetch(
            "SELECT data FROM bench_threads WHERE id = %s AND user_id = %s",
            thread_id,
            context["user_id"],
        )
        if not rows:
            raise NotFoundError(f"Thread {thread_id} not found")
        return ThreadMetadata.model_validate_json(rows[0][0])

    async def save_thread(self, thread: ThreadMetadata, context: Context) -> None:
        data = thread.model_dump_json()
        await self._exec(
            "INSERT INTO bench_threads (id, user_id, created_at, data) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT (id) DO UPDATE SET data = excluded.data"
            " WHERE bench_threads.user_id = excluded.user_id",
            thread.id,
            context["user_id"],
            _naive(thread.created_at),
            data,
        )

    async def load_threads(
        self, limit: int, after: str | None, order: str, context: Context
    ) -> Page[ThreadMetadata]:
        return await self._page(
            "bench_threads",
            "user_id = %s",
            (context["user_id"],),
            limit,
            after,
            order,
            ThreadMetadata.model_validate_json,
        )

    async def delete_thread(self, thread_id: str, context: Context) -> None:
        await self._tx(
            [
                (
                    "DELETE FROM bench_items WHERE thread_id = %s AND user_id = %s",
                    (thread_id, context["user_id"]),
                ),
                (
                    "DELETE FROM bench_threads WHERE id = %s AND user_id = %s",
                    (thread_id, context["user_id"]),
                ),
            ],
            fetch=False,
        )

    # --- items -----------------------------------------------------------------

    async def _page(
        self,
        table: str,
        where: str,
        params: tuple[t.Any, ...],
        limit: int,
        after: str | None,
        order: str,
        parse: t.Callable[[str], t.Any],
    ) -> Page[t.Any]:
        direction = "DESC" if order == "desc" else "ASC"
        compare = "<" if order == "desc" else ">"
        sql = f"SELECT id, data FROM {table} WHERE {where}"
        if after:
            sql += (
                f" AND (created_at, pk) {compare}"
                f" (SELECT created_at, pk FROM {table} WHERE id = %s)"
            )
            params = (*params, after)
        sql += f" ORDER BY created_at {direction}, pk {direction} LIMIT %s"
        rows = await self._fetch(sql, *params, limit + 1)
        has_more = len(rows) > limit
        rows = rows[:limit]
        return Page(
            data=[parse(data) for _, data in rows],
            has_more=has_more,
            after=rows[-1][0] if has_more and rows else None,
        )

    async def load_thread_items(
        self, thread_id: str, after: str | None, limit: int, order: str, context: Context
    ) -> Page[ThreadItem]:
        return await self._page(
            "bench_items",
            "thread_id = %s AND user_id = %s",
            (thread_id, context["user_id"]),
            limit,
            after,
            order,
            ItemAdapter.validate_json,
        )

    async def add_thread_item(self, thread_id: str, item: ThreadItem, context: Context) -> None:
        await self._exec(
            "INSERT INTO bench_items (id, thread_id, user_id, type, created_at, data)"
            " VALUES (%s, %s, %s, %s, %s, %s)",
            item.id,
            thread_id,
            context["user_id"],
            item.type,
            _naive(item.created_at),
            item.model_dump_json(),
        )

    async def save_item(self, thread_id: str, item: ThreadItem, context: Context) -> None:
        await self._exec(
            "INSERT INTO bench_items (id, thread_id, user_id, type, created_at, data)"
            " VALUES (%s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (id) DO UPDATE SET data = excluded.data"
            " WHERE bench_items.user_id = excluded.user_id",
            item.id,
            thread_id,
            context["user_id"],
            item.type,
            _naive(item.created_at),
            item.model_dump_json(),
        )

    async def load_item(self, thread_id: str, item_id: str, context: Context) -> ThreadItem:
        rows = await self._fetch(
            "SELECT data FROM bench_items WHERE id = %s AND thread_id = %s AND user_id = %s",
            item_id,
            thread_id,
            context["user_id"],
        )
        if not rows:
            raise NotFoundError(f"Item {item_id} not found")
        return ItemAdapter.validate_json(rows[0][0])

    async def delete_thread_item(self, thread_id: str, item_id: str, context: Context) -> None:
        await self._exec(
            "DELETE FROM bench_items WHERE id = %s AND thread_id = %s AND user_id = %s",
            item_id,
            thread_id,
            context["user_id"],
        )

    # --- attachments -------------------------------------------------------------

    async def save_attachment(self, attachment: Attachment, context: Context) -> None:
        await self._exec(
            "INSERT INTO bench_attachments (id, user_id, data) VALUES (%s, %s, %s)"
            " ON CONFLICT (id) DO UPDATE SET data = excluded.data",
            attachment.id,
            context["user_id"],
            attachment.model_dump_json(),
        )

    async def load_attachment(self, attachment_id: str, context: Context) -> Attachment:
        rows = await self._fetch(
            "SELECT data FROM bench_attachments WHERE id = %s AND user_id = %s",
            attachment_id,
            context["user_id"],
        )
        if not rows:
            raise NotFoundError(f"Attachment {attachment_id} not found")
        return AttachmentAdapter.validate_json(rows[0][0])

    async def delete_attachment(self, attachment_id: str, context: Context) -> None:
        await self._exec(
            "DELETE FROM bench_attachments WHERE id = %s AND user_id = %s",
            attachment_id,
            context["user_id"],
        )


class SQLiteStore(SQLStore):
    """stdlib ``sqlite3`` in the default executor's threads, a connection per thread."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._local = threading.local()
        with contextlib.closing(sqlite3.connect(path)) as conn:
            for statement in SCHEMA:
                conn.execute(
                    statement.format(pk="INTEGER PRIMARY KEY AUTOINCREMENT", ts="TIMESTAMP")
                )
            conn.commit()

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=60, check_same_thread=False)
            for (
                pragma
            ) in sqlite_pragmas():  # WAL, synchronous=NORMAL: the example app's SQLite defaults
                conn.execute(pragma)
            self._local.conn = conn
        return conn

    def _run(self, statements: list[tuple[str, tuple[t.Any, ...]]], fetch: bool) -> list[t.Any]:
        conn = self._conn()
        rows: list[t.Any] = []
        with conn:  # one transaction: commit, or roll back on error
            for sql, params in statements:
                params = tuple(p.isoformat(" ") if isinstance(p, datetime) else p for p in params)
                cursor = conn.execute(sql.replace("%s", "?"), params)
                if fetch:
                    rows = cursor.fetchall()
        return rows

    async def _tx(
        self, statements: list[tuple[str, tuple[t.Any, ...]]], fetch: bool
    ) -> list[t.Any]:
        return await asyncio.to_thread(self._run, statements, fetch)


class PostgresStore(SQLStore):
    """``psycopg.AsyncConnection``s in a small pool, one transaction per call."""

    def __init__(self, conninfo: str, size: int) -> None:
        import psycopg

        self.conninfo = conninfo
        self.size = size
        with psycopg.connect(conninfo, autocommit=True) as conn:
            for statement in SCHEMA:
                conn.execute(statement.format(pk="BIGSERIAL PRIMARY KEY", ts="TIMESTAMP"))
        self._pool: t.Any = None
        self._idle: asyncio.Queue[t.Any] | None = None
        self._opened = 0

    async def _acquire(self) -> t.Any:
        import psycopg

        assert self._idle is not None
        if self._idle.empty() and self._opened < self.size:
            self._opened += 1
            try:
                return await psycopg.AsyncConnection.connect(self.conninfo)
            except BaseException:
                self._opened -= 1
                raise
        return await self._idle.get()

    async def _tx(
        self, statements: list[tuple[str, tuple[t.Any, ...]]], fetch: bool
    ) -> list[t.Any]:
        if self._pool is None and self._idle is None:
            try:
                from psycopg_pool import AsyncConnectionPool
            except ImportError:
                self._idle = asyncio.Queue()
            else:
                self._pool = AsyncConnectionPool(
                    self.conninfo, min_size=1, max_size=self.size, open=False
                )
                await self._pool.open()
        if self._pool is not None:
            async with self._pool.connection() as conn:
                return await self._run(conn, statements, fetch)
        conn = await self._acquire()
        broken = False
        try:
            return await self._run(conn, statements, fetch)
        except BaseException:
            broken = conn.closed or conn.broken
            raise
        finally:
            if broken:
                self._opened -= 1
            else:
                assert self._idle is not None
                self._idle.put_nowait(conn)

    @staticmethod
    async def _run(
        conn: t.Any, statements: list[tuple[str, tuple[t.Any, ...]]], fetch: bool
    ) -> list[t.Any]:
        rows: list[t.Any] = []
        async with conn.transaction():
            for sql, params in statements:
                cursor = await conn.execute(sql, params)
                if fetch:
                    rows = await cursor.fetchall()
        return rows


class MemoryStore(Store[Context]):
    """Dicts per user, like the SDK samples' in-memory store (``BENCH_DATABASE_URL=memory``)."""

    def __init__(self) -> None:
        self.threads: dict[tuple[str, str], ThreadMetadata] = {}
        self.items: dict[tuple[str, str], list[ThreadItem]] = {}
        self.attachments: dict[tuple[str, str], Attachment] = {}

    async def load_thread(self, thread_id: str, context: Context) -> ThreadMetadata:
        try:
            return self.threads[context["user_id"], thread_id].model_copy()
        except KeyError:
            raise NotFoundError(f"Thread {thread_id} not found") from None

    async def save_thread(self, thread: ThreadMetadata, context: Context) -> None:
        self.threads[context["user_id"], thread.id] = thread.model_copy()

    async def load_threads(
        self, limit: int, after: str | None, order: str, context: Context
    ) -> Page[ThreadMetadata]:
        mine = [th for (user, _), th in self.threads.items() if user == context["user_id"]]
        return _page(sorted(mine, key=lambda th: th.created_at), limit, after, order)

    async def delete_thread(self, thread_id: str, context: Context) -> None:
        self.threads.pop((context["user_id"], thread_id), None)
        self.items.pop((context["user_id"], thread_id), None)

    async def load_thread_items(
        self, thread_id: str, after: str | None, limit: int, order: str, context: Context
    ) -> Page[ThreadItem]:
        return _page(self.items.get((context["user_id"], thread_id), []), limit, after, order)

    async def add_thread_item(self, thread_id: str, item: ThreadItem, context: Context) -> None:
        self.items.setdefault((context["user_id"], thread_id), []).append(item.model_copy())

    async def save_item(self, thread_id: str, item: ThreadItem, context: Context) -> None:
        items = self.items.setdefault((context["user_id"], thread_id), [])
        for i, old in enumerate(items):
            if old.id == item.id:
                items[i] = item.model_copy()
                return
        items.append(item.model_copy())

    async def load_item(self, thread_id: str, item_id: str, context: Context) -> ThreadItem:
        for item in self.items.get((context["user_id"], thread_id), []):
            if item.id == item_id:
                return item.model_copy()
        raise NotFoundError(f"Item {item_id} not found")

    async def delete_thread_item(self, thread_id: str, item_id: str, context: Context) -> None:
        items = self.items.get((context["user_id"], thread_id), [])
        items[:] = [item for item in items if item.id != item_id]

    async def save_attachment(self, attachment: Attachment, context: Context) -> None:
        self.attachments[context["user_id"], attachment.id] = attachment.model_copy()

    async def load_attachment(self, attachment_id: str, context: Context) -> Attachment:
        try:
            return self.attachments[context["user_id"], attachment_id].model_copy()
        except KeyError:
            raise NotFoundError(f"Attachment {attachment_id} not found") from None

    async def delete_attachment(self, attachment_id: str, context: Context) -> None:
        self.attachments.pop((context["user_id"], attachment_id), None)


def _page(rows: list[t.Any], limit: int, after: str | None, order: str) -> Page[t.Any]:
    """One page of *rows* (oldest first) in *order*, after the row whose id is *after*."""
    rows = list(reversed(rows)) if order == "desc" else list(rows)
    if after:
        ids = [row.id for row in rows]
        rows = rows[ids.index(after) + 1 :] if after in ids else []
    has_more = len(rows) > limit
    rows = rows[:limit]
    return Page(data=rows, has_more=has_more, after=rows[-1].id if has_more and rows else None)


def make_store() -> Store[Context]:
    url = database_url()
    if url == "memory":
        return MemoryStore()
    parts = urlsplit(url)
    if parts.scheme.startswith("sqlite"):
        path = unquote(parts.path)
        return SQLiteStore(path[1:] if path.startswith("//") else path)
    conninfo = url.replace("postgresql+psycopg://", "postgresql://", 1)
    return PostgresStore(conninfo, int(os.environ.get("BENCH_PG_CONNECTIONS", "15")))


class BenchServer(ChatKitServer[Context]):
    def __init__(self, store: Store[Context]) -> None:
        super().__init__(store)
        self.chunks, self.delay = workload()

    async def respond(
        self, thread: ThreadMetadata, input_user_message: t.Any, context: Context
    ) -> t.AsyncIterator[t.Any]:
        item = AssistantMessageItem(
            id=self.store.generate_item_id("message", thread, context),
            thread_id=thread.id,
            created_at=datetime.now(),
            content=[],
        )
        yield ThreadItemAddedEvent(item=item)
        yield ThreadItemUpdatedEvent(
            item_id=item.id,
            update=AssistantMessageContentPartAdded(
                content_index=0, content=AssistantMessageContent(text="")
            ),
        )
        for i, chunk in enumerate(self.chunks):
            if i:
                await asyncio.sleep(self.delay)
            yield ThreadItemUpdatedEvent(
                item_id=item.id,
                update=AssistantMessageContentPartTextDelta(content_index=0, delta=chunk),
            )
        part = AssistantMessageContent(text="".join(self.chunks))
        yield ThreadItemUpdatedEvent(
            item_id=item.id, update=AssistantMessageContentPartDone(content_index=0, content=part)
        )
        yield ThreadItemDoneEvent(item=item.model_copy(update={"content": [part]}))


server = BenchServer(make_store())
app = FastAPI()


@app.post("/chatkit")
async def chatkit_endpoint(request: Request) -> Response:
    user_id = user_of(request.headers.get("authorization"))
    if user_id is None:
        return Response(
            content=json.dumps({"error": {"code": "unauthorized"}}),
            status_code=401,
            media_type="application/json",
        )
    result = await server.process(await request.body(), {"user_id": user_id})
    if isinstance(result, StreamingResult):
        return StreamingResponse(result, media_type="text/event-stream")
    return Response(content=result.json, media_type="application/json")


@app.get("/health")
async def health() -> Response:
    return Response(content="ok", media_type="text/plain")
