"""A :class:`~flask_chatkit.store.Store` on the app's Flask-SQLAlchemy ``db``.

Tables (names prefixed with *table_prefix*): ``threads``, ``items``,
``attachments`` and ``feedback``. Each row keeps the full wire JSON in a
``data`` column beside a few indexed columns used for lookups and ordering
(``id``, ``user_id``, ``thread_id``, ``created_at``, and an autoincrement
``pk`` as a stable tiebreak), so protocol additions need no migration.

Every method runs in its own short transaction on a connection taken from the
pool and given back at once: a stream waiting for a model holds no connection.

The models and the prebuilt statements are in :mod:`flask_chatkit.sqlalchemy_schema`.
"""

from __future__ import annotations

import contextlib
import json
import sys
import threading
import time
import typing as t
import weakref
from datetime import UTC
from datetime import datetime

import sqlalchemy as sa
from flask import current_app
from flask_sqlalchemy import SQLAlchemy

from .agents import agent_of
from .config import BY_NAME
from .errors import NotFoundError
from .errors import RequestError
from .errors import StoreUnavailableError
from .group_commit import GroupCommit
from .sqlalchemy_schema import Deferring
from .sqlalchemy_schema import Statements
from .sqlalchemy_schema import beyond
from .sqlalchemy_schema import define_models
from .sqlalchemy_schema import live
from .sqlalchemy_schema import naive_utc
from .sqlalchemy_schema import plain
from .sqlalchemy_turns import SQLAlchemyTurns
from .sqlite import WRITE
from .sqlite import prepare_engine
from .sqlite import write_lock
from .store import Lease
from .store import Order
from .store import Removed
from .types import HIDDEN_ITEM_TYPES
from .types import AttachmentAdapter
from .types import Page
from .types import ThreadItemAdapter
from .types import ThreadMetadata
from .types import utcnow

T = t.TypeVar("T")


#: ``CHATKIT_SQLITE_WAL``, read when a SQLite engine is first used (the store has no app of its own).
WAL = BY_NAME["CHATKIT_SQLITE_WAL"]


def _raise_masked_stop(exc: sa.exc.DBAPIError, handling: BaseException | None) -> None:
    """Re-raise a stop (``GreenletExit``: a stream killed because its client went
    away) that a driver's cleanup turned into a database error.

    SQLAlchemy's psycopg pre-ping restores ``autocommit`` in a ``finally``; killed
    during the ping, that fails with "connection in transaction status ACTIVE"
    and the kill would pass for a failed query (the pool discards the connection).
    """
    stop = getattr(exc.orig, "__context__", None)
    if stop is not None and stop is not handling and not isinstance(stop, Exception):
        raise stop


class SQLAlchemyStore(SQLAlchemyTurns):
    """Threads, items, attachments and feedback in the app's database.

    :param db: the app's :class:`flask_sqlalchemy.SQLAlchemy` instance; the
        tables are defined on its ``db.Model`` (so ``db.create_all()`` and
        migrations see them).
    :param table_prefix: prefix of the four table names.
    :param bind_key: the Flask-SQLAlchemy bind to use, if not the default.
    """

    def __init__(
        self, db: SQLAlchemy, *, table_prefix: str = "chatkit_", bind_key: str | None = None
    ) -> None:
        self.db = db
        self.bind_key = bind_key
        #: Told ``("read" or "write", seconds)`` after each transaction (the metrics'
        #: ``chatkit_store_seconds``, set by ``init_app`` when ``CHATKIT_METRICS`` is on).
        self.transaction_timer: t.Callable[[str, float], None] | None = None
        self.models = define_models(db, table_prefix, bind_key)
        self.threads: sa.Table = self.models["Thread"].__table__
        self.items: sa.Table = self.models["Item"].__table__
        self.attachments: sa.Table = self.models["Attachment"].__table__
        self.feedback: sa.Table = self.models["Feedback"].__table__
        self._prepared: weakref.WeakSet[sa.Engine] = weakref.WeakSet()
        self._statements = Statements(self.threads, self.items)
        self._committers: weakref.WeakKeyDictionary[sa.Engine, GroupCommit] = (
            weakref.WeakKeyDictionary()
        )
        self._probes: weakref.WeakKeyDictionary[sa.Engine, _Probe] = weakref.WeakKeyDictionary()

    @property
    def engine(self) -> sa.Engine:
        """The engine of the configured bind (needs an app context).

        A SQLite file engine is prepared on first use: its driver calls leave the
        gevent hub, and it runs in WAL mode unless ``CHATKIT_SQLITE_WAL`` is false
        (see :mod:`flask_chatkit.sqlite`).
        """
        engine = self.db.engines[self.bind_key]
        if engine not in self._prepared:
            self._prepared.add(engine)
            wal = WAL.coerce(current_app.config.get("CHATKIT_SQLITE_WAL"))
            prepare_engine(engine, wal=wal)
        return engine

    @contextlib.contextmanager
    def _begin(self, *, write: bool = True) -> t.Iterator[sa.Connection]:
        """One short transaction of its own; an unreachable database becomes a 503.

        *write*: the transaction may write, so on SQLite it takes the write lock
        first (``BEGIN IMMEDIATE``, see :mod:`flask_chatkit.sqlite`). The writes
        of a turn go through :meth:`_write` instead, to share commits.
        """
        with self._transaction(self.engine, write) as conn:
            yield conn

    def _write(self, write: t.Callable[[sa.Connection], T]) -> T:
        """Run *write* in a transaction shared with the concurrent writes of other
        turns (:mod:`flask_chatkit.group_commit`); its value once committed."""
        return self._committer(self.engine).submit(write)

    def _committer(self, engine: sa.Engine) -> GroupCommit:
        committer = self._committers.get(engine)
        if committer is None:
            committer = self._committers[engine] = GroupCommit(
                lambda: self._batch_transaction(engine)
            )
        return committer

    def group_commit_stats(self) -> dict[str, int]:
        """This process's shared write transactions on the current app's database so
        far: ``batches`` (transactions tried) and ``writes`` (the writes they held)."""
        committer = self._committers.get(self.engine)
        if committer is None:
            return {"batches": 0, "writes": 0}
        return {"batches": committer.batches, "writes": committer.writes}

    @contextlib.contextmanager
    def _transaction(self, engine: sa.Engine, write: bool) -> t.Iterator[sa.Connection]:
        handling = sys.exc_info()[1]
        timer = self.transaction_timer
        started = time.perf_counter() if timer is not None else 0.0
        try:
            with (
                write_lock(engine) if write else contextlib.nullcontext(),
                engine.connect() as conn,
                conn.execution_options(**{WRITE: write}).begin(),
            ):
                yield conn
        except sa.exc.DBAPIError as exc:
            _raise_masked_stop(exc, handling)
            if isinstance(exc, (sa.exc.OperationalError, sa.exc.InterfaceError)):
                raise StoreUnavailableError() from exc
            if isinstance(exc, sa.exc.DataError):  # a value the database cannot hold
                raise RequestError("The request holds a value that cannot be stored.") from exc
            raise
        except sa.exc.TimeoutError as exc:
            raise StoreUnavailableError() from exc
        finally:
            if timer is not None:
                timer("write" if write else "read", time.perf_counter() - started)

    @contextlib.contextmanager
    def _batch_transaction(self, engine: sa.Engine) -> t.Iterator[t.Any]:
        """A group commit's transaction: its writes get a :class:`~flask_chatkit.sqlalchemy_schema.Deferring`
        connection, flushed before the commit."""
        with self._transaction(engine, True) as conn:
            batch = Deferring(conn, self._statements.deferrable)
            yield batch
            batch.flush()

    def warm_up(self, connections: int = 1) -> None:
        """Open *connections* pooled connections now, so the first requests do not pay
        for connecting (call it at startup, inside an app context)."""
        held = []
        try:
            for _ in range(connections):
                conn = self.engine.connect()
                held.append(conn)
                conn.execute(sa.text("SELECT 1"))
        finally:
            for conn in held:
                conn.close()

    def ping(self, timeout: float) -> None:
        """Read one row of the threads table within *timeout* seconds, or raise
        :class:`StoreUnavailableError` (needs an app context).

        The read runs in a thread (a greenlet under gevent) of its own and is
        waited for at most *timeout*: a database that does not answer (down, a
        host that drops packets, a lock) cannot hold the caller longer. On
        PostgreSQL a ``statement_timeout`` bounds the statement itself. A read
        still running from an earlier ping is waited for instead of starting
        another. A pooled connection that died with an outage is dropped and the
        read tried once more on a fresh one, so the first ping after the
        database came back passes, with or without ``pool_pre_ping``.
        """
        engine = self.engine
        probe = self._probes.get(engine)
        if probe is None or probe.finished.is_set():
            probe = self._probes[engine] = _Probe(engine, self.threads, timeout)
        if not probe.finished.wait(timeout):
            raise StoreUnavailableError()
        if probe.error is not None:
            raise StoreUnavailableError() from probe.error

    def _thread_scope(self, context: t.Any) -> list[t.Any]:
        """The user's threads; of one agent when the request names one."""
        th = self.threads
        scope = [th.c.user_id == str(context.user_id)]
        agent_id = agent_of(context)
        if agent_id is not None:
            scope.append(th.c.agent_id == agent_id)
        return scope

    # --- threads -------------------------------------------------------------

    def _thread_row(self, conn: sa.Connection, thread_id: str, context: t.Any) -> t.Any:
        agent_id = agent_of(context)
        params = {"b_id": thread_id, "b_user": str(context.user_id)}
        if agent_id is None:
            statement = self._statements.thread_row
        else:
            statement = self._statements.agent_thread_row
            params["b_agent"] = agent_id
        row = conn.execute(statement, params).first()
        if row is None:
            raise NotFoundError(f"No thread with id {thread_id!r}.", field="params.thread_id")
        return row

    def load_thread(self, thread_id: str, context: t.Any) -> ThreadMetadata:
        return self.load_thread_and_turn(thread_id, context)[0]

    def load_thread_and_turn(self, thread_id: str, context: t.Any) -> tuple[ThreadMetadata, bool]:
        with self._begin(write=False) as conn:
            row = self._thread_row(conn, thread_id, context)
        return ThreadMetadata.model_validate_json(row.data), live(row, utcnow())

    def load_thread_and_lease(
        self, thread_id: str, context: t.Any
    ) -> tuple[ThreadMetadata, Lease | None]:
        with self._begin(write=False) as conn:
            row = self._thread_row(conn, thread_id, context)
        lease = None
        if row.turn_token is not None:
            lease = Lease(row.turn_token, row.turn_expires_at.replace(tzinfo=UTC))
        return ThreadMetadata.model_validate_json(row.data), lease

    @staticmethod
    def _thread_update_values(thread: ThreadMetadata) -> dict[str, t.Any]:
        return {
            "data": thread.model_dump_json(exclude_none=True),
            "title": plain(thread.title),
            "updated_at": naive_utc(utcnow()),
        }

    def _new_thread_values(self, thread: ThreadMetadata, context: t.Any) -> dict[str, t.Any]:
        values = self._thread_update_values(thread)
        return {
            **values,
            "id": thread.id,
            "user_id": str(context.user_id),
            "created_at": naive_utc(thread.created_at),
            "agent_id": agent_of(context),
        }

    def _update_thread(self, conn: sa.Connection, thread: ThreadMetadata, context: t.Any) -> int:
        """Save *thread* over its row, if the user has it; the rows changed."""
        values = self._thread_update_values(thread)
        params = {
            "b_id": thread.id,
            "b_user": str(context.user_id),
            "b_data": values["data"],
            "b_title": values["title"],
            "b_updated": values["updated_at"],
        }
        agent_id = agent_of(context)
        if agent_id is None:
            statement = self._statements.update_thread
        else:
            statement = self._statements.agent_update_thread
            params["b_agent"] = agent_id
        return conn.execute(statement, params).rowcount

    def save_thread(self, thread: ThreadMetadata, context: t.Any) -> None:
        def update(conn: sa.Connection) -> int:
            return self._update_thread(conn, thread, context)

        def insert(conn: sa.Connection) -> None:
            conn.execute(self._statements.insert_thread, self._new_thread_values(thread, context))

        if self._write(update):
            return
        try:
            self._write(insert)
        except sa.exc.IntegrityError:
            # The id exists, but for someone else: as good as missing.
            raise NotFoundError(f"No thread with id {thread.id!r}.") from None

    def load_threads(
        self, limit: int, after: str | None, order: Order, context: t.Any
    ) -> Page[ThreadMetadata]:
        return self.load_threads_and_turns(limit, after, order, context)[0]

    def load_threads_and_turns(
        self, limit: int, after: str | None, order: Order, context: t.Any
    ) -> tuple[Page[ThreadMetadata], set[str]]:
        th = self.threads
        scope = sa.and_(*self._thread_scope(context))
        query: sa.Select[t.Any] = sa.select(
            th.c.id, th.c.data, th.c.turn_token, th.c.turn_expires_at
        ).where(scope)
        with self._begin(write=False) as conn:
            query = self._after(conn, query, th, after, order, scope, "thread")
            rows = conn.execute(self._ordered(query, th, order).limit(limit + 1)).all()
        data = [ThreadMetadata.model_validate_json(r.data) for r in rows[:limit]]
        more = len(rows) > limit
        now = utcnow()
        running = {r.id for r in rows[:limit] if live(r, now)}
        return Page(data=data, has_more=more, after=data[-1].id if more else None), running

    def delete_thread(self, thread_id: str, context: t.Any) -> None:
        user_id = str(context.user_id)
        it, fb, att, th = self.items, self.feedback, self.attachments, self.threads
        with self._begin() as conn:
            self._thread_row(conn, thread_id, context)
            conn.execute(sa.delete(it).where(it.c.thread_id == thread_id, it.c.user_id == user_id))
            conn.execute(sa.delete(fb).where(fb.c.thread_id == thread_id, fb.c.user_id == user_id))
            conn.execute(
                sa.update(att)
                .where(att.c.thread_id == thread_id, att.c.user_id == user_id)
                .values(thread_id=None)
            )
            conn.execute(sa.delete(th).where(th.c.id == thread_id, th.c.user_id == user_id))

    # --- items ---------------------------------------------------------------

    @staticmethod
    def _ordered(query: sa.Select[t.Any], table: sa.Table, order: Order) -> sa.Select[t.Any]:
        if order == "asc":
            return query.order_by(table.c.created_at.asc(), table.c.pk.asc())
        return query.order_by(table.c.created_at.desc(), table.c.pk.desc())

    @staticmethod
    def _after(
        conn: sa.Connection,
        query: sa.Select[t.Any],
        table: sa.Table,
        after: str | None,
        order: Order,
        scope: t.Any,
        what: str,
    ) -> sa.Select[t.Any]:
        """Restrict *query* to rows strictly after the cursor row in *order*."""
        if after is None:
            return query
        pivot = conn.execute(
            sa.select(table.c.created_at, table.c.pk).where(table.c.id == after, scope)
        ).first()
        if pivot is None:
            raise NotFoundError(f"No {what} with id {after!r}.", field="params.after")
        return query.where(beyond(table, pivot, order))

    def load_thread_items(
        self,
        thread_id: str,
        after: str | None,
        limit: int,
        order: Order,
        context: t.Any,
        *,
        include_hidden: bool = True,
    ) -> Page[t.Any]:
        it = self.items
        # By thread alone: _thread_row below checks the user owns it (and all its items
        # are theirs). A user_id condition here would let SQLite, which has no table
        # statistics, walk the user's index across all their threads instead.
        scope = it.c.thread_id == thread_id
        query = sa.select(it.c.data).where(scope)
        if not include_hidden:
            query = query.where(it.c.type.not_in(HIDDEN_ITEM_TYPES))
        with self._begin(write=False) as conn:
            self._thread_row(conn, thread_id, context)
            query = self._after(conn, query, it, after, order, scope, "item")
            rows = conn.execute(self._ordered(query, it, order).limit(limit + 1)).all()
        data = [ThreadItemAdapter.validate_json(r.data) for r in rows[:limit]]
        more = len(rows) > limit
        return Page(data=data, has_more=more, after=data[-1].id if more else None)

    def _item_values(self, thread_id: str, item: t.Any, user_id: str) -> dict[str, t.Any]:
        return {
            "id": item.id,
            "thread_id": thread_id,
            "user_id": user_id,
            "type": item.type,
            "created_at": naive_utc(item.created_at),
            "data": item.model_dump_json(exclude_none=True),
        }

    def add_thread_item(self, thread_id: str, item: t.Any, context: t.Any) -> None:
        user_id = str(context.user_id)
        values = self._item_values(thread_id, item, user_id)

        def insert(conn: sa.Connection) -> None:
            self._thread_row(conn, thread_id, context)  # never into another user's thread
            conn.execute(self._statements.insert_item, values)

        try:
            self._write(insert)
        except sa.exc.IntegrityError:
            self.save_item(thread_id, item, context)  # a tolerant insert: the id exists

    def save_item(self, thread_id: str, item: t.Any, context: t.Any) -> None:
        user_id = str(context.user_id)
        values = self._item_values(thread_id, item, user_id)

        def upsert(conn: sa.Connection) -> None:
            updated = self._update_item(conn, thread_id, item, user_id, values)
            if not updated:
                self._thread_row(conn, thread_id, context)
                conn.execute(self._statements.insert_item, values)

        self._write(upsert)

    def _update_item(
        self,
        conn: sa.Connection,
        thread_id: str,
        item: t.Any,
        user_id: str,
        values: dict[str, t.Any] | None = None,
    ) -> int:
        """Save *item* over its row in the user's thread; the rows changed."""
        values = values or self._item_values(thread_id, item, user_id)
        return conn.execute(
            self._statements.update_item,
            {
                "b_id": item.id,
                "b_thread": thread_id,
                "b_user": user_id,
                "b_type": values["type"],
                "b_data": values["data"],
            },
        ).rowcount

    def load_item(self, thread_id: str, item_id: str, context: t.Any) -> t.Any:
        it = self.items
        with self._begin(write=False) as conn:
            row = conn.execute(
                sa.select(it.c.data).where(
                    it.c.id == item_id,
                    it.c.thread_id == thread_id,
                    it.c.user_id == str(context.user_id),
                )
            ).first()
        if row is None:
            raise NotFoundError(f"No item with id {item_id!r}.", field="params.item_id")
        return ThreadItemAdapter.validate_json(row.data)

    def delete_thread_item(self, thread_id: str, item_id: str, context: t.Any) -> None:
        it = self.items
        user_id = str(context.user_id)
        with self._begin() as conn:
            deleted = conn.execute(
                sa.delete(it).where(
                    it.c.id == item_id,
                    it.c.thread_id == thread_id,
                    it.c.user_id == user_id,
                )
            ).rowcount
            if not deleted:
                self._thread_row(conn, thread_id, context)  # a missing thread is an error

    def delete_items_after(self, thread_id: str, item_id: str, context: t.Any) -> int:
        it = self.items
        scope = sa.and_(it.c.thread_id == thread_id, it.c.user_id == str(context.user_id))
        with self._begin() as conn:
            pivot = conn.execute(
                sa.select(it.c.created_at, it.c.pk).where(it.c.id == item_id, scope)
            ).first()
            if pivot is None:
                raise NotFoundError(f"No item with id {item_id!r}.", field="params.item_id")
            return conn.execute(sa.delete(it).where(scope, beyond(it, pivot, "asc"))).rowcount

    # --- attachments ------------------------------------------------------------

    def save_attachment(self, attachment: t.Any, context: t.Any) -> None:
        att = self.attachments
        user_id = str(context.user_id)
        values = {
            "thread_id": attachment.thread_id,
            "data": attachment.model_dump_json(exclude_none=True),
            "meta": json.dumps(attachment.metadata) if attachment.metadata is not None else None,
        }
        with self._begin() as conn:
            updated = conn.execute(
                sa.update(att)
                .where(att.c.id == attachment.id, att.c.user_id == user_id)
                .values(**values)
            ).rowcount
        if updated:
            return
        try:
            with self._begin() as conn:
                conn.execute(
                    sa.insert(att).values(
                        id=attachment.id, user_id=user_id, created_at=naive_utc(utcnow()), **values
                    )
                )
        except sa.exc.IntegrityError:
            raise NotFoundError(f"No attachment with id {attachment.id!r}.") from None

    @staticmethod
    def _attachment(row: t.Any) -> t.Any:
        attachment = AttachmentAdapter.validate_json(row.data)
        # the column is authoritative: delete_thread detaches by updating it alone
        attachment.thread_id = row.thread_id
        if row.meta is not None:
            attachment.metadata = json.loads(row.meta)
        return attachment

    def load_attachment(self, attachment_id: str, context: t.Any) -> t.Any:
        return self.load_attachments([attachment_id], context)[0]

    def load_attachments(self, attachment_ids: list[str], context: t.Any) -> list[t.Any]:
        att = self.attachments
        with self._begin(write=False) as conn:
            rows = conn.execute(
                sa.select(att.c.id, att.c.data, att.c.meta, att.c.thread_id).where(
                    att.c.id.in_(attachment_ids), att.c.user_id == str(context.user_id)
                )
            ).all()
        found = {r.id: r for r in rows}
        for attachment_id in attachment_ids:
            if attachment_id not in found:
                raise NotFoundError(
                    f"No attachment with id {attachment_id!r}.", field="params.attachment_id"
                )
        return [self._attachment(found[i]) for i in attachment_ids]

    def delete_attachment(self, attachment_id: str, context: t.Any) -> None:
        att = self.attachments
        with self._begin() as conn:
            deleted = conn.execute(
                sa.delete(att).where(
                    att.c.id == attachment_id, att.c.user_id == str(context.user_id)
                )
            ).rowcount
        if not deleted:
            raise NotFoundError(f"No attachment with id {attachment_id!r}.")

    def load_thread_attachments(self, thread_id: str, context: t.Any) -> list[t.Any]:
        att = self.attachments
        with self._begin(write=False) as conn:
            rows = conn.execute(
                sa.select(att.c.id, att.c.data, att.c.meta, att.c.thread_id)
                .where(att.c.thread_id == thread_id, att.c.user_id == str(context.user_id))
                .order_by(att.c.pk)
            ).all()
        return [self._attachment(r) for r in rows]

    def attachment_bytes(self, user_id: str) -> int:
        att = self.attachments
        with self._begin(write=False) as conn:
            metas = conn.execute(
                sa.select(att.c.meta).where(att.c.user_id == str(user_id), att.c.meta.is_not(None))
            ).scalars()
            return sum(int((json.loads(m) or {}).get("size") or 0) for m in metas)

    def delete_stale_attachments(self, created_before: datetime) -> list[t.Any]:
        att = self.attachments
        stale = sa.and_(att.c.thread_id.is_(None), att.c.created_at < naive_utc(created_before))
        with self._begin() as conn:
            rows = conn.execute(
                sa.select(att.c.id, att.c.data, att.c.meta, att.c.thread_id)
                .where(stale)
                .order_by(att.c.pk)
            ).all()
        removed = []
        for row in rows:
            # conditional: a concurrent run (or a message sending it) may have won
            with self._begin() as conn:
                if conn.execute(sa.delete(att).where(att.c.id == row.id, stale)).rowcount:
                    removed.append(self._attachment(row))
        return removed

    # --- feedback -----------------------------------------------------------------

    def save_feedback(self, thread_id: str, item_ids: list[str], kind: str, context: t.Any) -> None:
        it, fb = self.items, self.feedback
        user_id = str(context.user_id)
        unique = list(dict.fromkeys(item_ids))
        with self._begin() as conn:
            self._thread_row(conn, thread_id, context)
            known = set(
                conn.execute(
                    sa.select(it.c.id).where(
                        it.c.id.in_(unique), it.c.thread_id == thread_id, it.c.user_id == user_id
                    )
                ).scalars()
            )
            missing = [i for i in unique if i not in known]
            if missing:
                raise NotFoundError(f"No item with id {missing[0]!r}.", field="params.item_ids")
            # A repeated vote replaces the earlier one.
            conn.execute(
                sa.delete(fb).where(
                    fb.c.user_id == user_id, fb.c.thread_id == thread_id, fb.c.item_id.in_(unique)
                )
            )
            now = naive_utc(utcnow())
            conn.execute(
                sa.insert(fb),
                [
                    {
                        "user_id": user_id,
                        "thread_id": thread_id,
                        "item_id": i,
                        "kind": kind,
                        "created_at": now,
                    }
                    for i in unique
                ],
            )

    # --- administration -------------------------------------------------------------

    def export_feedback(self, user_id: str | None = None) -> list[dict[str, t.Any]]:
        fb = self.feedback
        query = sa.select(fb.c.user_id, fb.c.thread_id, fb.c.item_id, fb.c.kind, fb.c.created_at)
        if user_id is not None:
            query = query.where(fb.c.user_id == str(user_id))
        with self._begin(write=False) as conn:
            rows = conn.execute(query.order_by(fb.c.created_at, fb.c.pk)).all()
        return [{**row._asdict(), "created_at": row.created_at.replace(tzinfo=UTC)} for row in rows]

    def _remove(self, conn: sa.Connection, threads: t.Any, attachments: t.Any) -> Removed:
        """Delete the threads selected by *threads* (a subquery of ids) with their
        items and votes, and the attachment rows selected by *attachments*."""
        it, fb, att, th = self.items, self.feedback, self.attachments, self.threads
        doomed = conn.execute(
            sa.select(att.c.id, att.c.data, att.c.meta, att.c.thread_id).where(attachments)
        ).all()
        removed = Removed(attachments=[self._attachment(r) for r in doomed])
        removed.items = conn.execute(sa.delete(it).where(it.c.thread_id.in_(threads))).rowcount
        removed.feedback = conn.execute(sa.delete(fb).where(fb.c.thread_id.in_(threads))).rowcount
        conn.execute(sa.delete(att).where(attachments))
        removed.threads = conn.execute(sa.delete(th).where(th.c.id.in_(threads))).rowcount
        return removed

    def load_user_attachments(self, user_id: str) -> list[t.Any]:
        att = self.attachments
        with self._begin(write=False) as conn:
            rows = conn.execute(
                sa.select(att.c.id, att.c.data, att.c.meta, att.c.thread_id)
                .where(att.c.user_id == str(user_id))
                .order_by(att.c.created_at, att.c.id)
            ).all()
        return [self._attachment(row) for row in rows]

    def delete_user_data(self, user_id: str) -> Removed:
        th, att, fb = self.threads, self.attachments, self.feedback
        user_id = str(user_id)
        with self._begin() as conn:
            threads = sa.select(th.c.id).where(th.c.user_id == user_id).scalar_subquery()
            removed = self._remove(conn, threads, att.c.user_id == user_id)
            # votes left on threads that are already gone
            removed.feedback += conn.execute(sa.delete(fb).where(fb.c.user_id == user_id)).rowcount
        return removed

    def purge_threads(self, inactive_since: datetime) -> Removed:
        th, it, att = self.threads, self.items, self.attachments
        cutoff = naive_utc(inactive_since)
        recent_items = sa.select(it.c.pk).where(
            it.c.thread_id == th.c.id, it.c.created_at >= cutoff
        )
        with self._begin() as conn:
            # Materialize the ids first: deleting items would change "last activity".
            idle = list(
                conn.execute(
                    sa.select(th.c.id).where(th.c.updated_at < cutoff, ~recent_items.exists())
                ).scalars()
            )
            removed = Removed()
            # In chunks: drivers limit the number of bound parameters per statement.
            for start in range(0, len(idle), 1000):
                chunk = idle[start : start + 1000]
                removed.merge(self._remove(conn, chunk, att.c.thread_id.in_(chunk)))
        return removed

    def load_feedback(self, context: t.Any) -> list[dict[str, t.Any]]:
        """The user's votes, oldest first: ``{thread_id, item_id, kind, created_at}``."""
        fb = self.feedback
        with self._begin(write=False) as conn:
            rows = conn.execute(
                sa.select(fb.c.thread_id, fb.c.item_id, fb.c.kind, fb.c.created_at)
                .where(fb.c.user_id == str(context.user_id))
                .order_by(fb.c.created_at, fb.c.pk)
            ).all()
        return [
            {
                "thread_id": r.thread_id,
                "item_id": r.item_id,
                "kind": r.kind,
                "created_at": r.created_at.replace(tzinfo=UTC),
            }
            for r in rows
        ]


class _Probe:
    """One health read of an engine, running in a daemon thread from creation."""

    def __init__(self, engine: sa.Engine, table: sa.Table, timeout: float) -> None:
        self.error: BaseException | None = None
        self.finished = threading.Event()
        self._engine = engine
        self._query = sa.select(sa.literal(1)).select_from(table).limit(1)
        self._timeout_ms = max(int(timeout * 1000), 1)
        threading.Thread(target=self._run, name="chatkit-health", daemon=True).start()

    def _run(self) -> None:
        try:
            for attempt in (1, 2):
                try:
                    with self._engine.connect() as conn:
                        if conn.dialect.name == "postgresql":
                            conn.execute(
                                sa.text(f"SET LOCAL statement_timeout = {self._timeout_ms}")
                            )
                        conn.execute(self._query).all()
                    return
                except sa.exc.DBAPIError as exc:
                    if attempt == 1 and exc.connection_invalidated:
                        continue  # a connection from before an outage: once more, fresh
                    raise
        except Exception as exc:  # any failure is a "fail"; the caller logs its type
            self.error = exc
        finally:
            self.finished.set()


__all__ = ["SQLAlchemyStore"]
