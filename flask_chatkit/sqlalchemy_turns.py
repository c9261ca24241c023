"""The turn steps of :class:`~flask_chatkit.sqlalchemy_store.SQLAlchemyStore`
(no Flask here): the thread's lease, a turn's start and end in one transaction
each, checkpoints, Stop marks, and the lease lookups other workers make.

:class:`SQLAlchemyTurns` is the base class of SQLAlchemyStore: its methods run
on the store's transactions, prebuilt statements
(:class:`~flask_chatkit.sqlalchemy_schema.Statements`) and row helpers, which
it declares for type checkers.
"""

from __future__ import annotations

import contextlib
import typing as t
from datetime import datetime

import sqlalchemy as sa

from .sqlalchemy_schema import naive_utc
from .sqlalchemy_schema import release_params
from .store import Store
from .turns import CANCEL_PREFIX
from .turns import cancel_token
from .types import ThreadMetadata
from .types import utcnow

if t.TYPE_CHECKING:
    from .group_commit import GroupCommit
    from .sqlalchemy_schema import Statements

__all__ = ["SQLAlchemyTurns"]

T = t.TypeVar("T")


class SQLAlchemyTurns(Store[t.Any]):
    """The turn steps of the :class:`~flask_chatkit.store.Store` interface on
    SQLAlchemy; :class:`~flask_chatkit.sqlalchemy_store.SQLAlchemyStore` is this
    class with the rest of the interface."""

    if t.TYPE_CHECKING:  # provided by SQLAlchemyStore
        threads: sa.Table
        _statements: Statements

        @property
        def engine(self) -> sa.Engine: ...
        def _begin(
            self, *, write: bool = True
        ) -> contextlib.AbstractContextManager[sa.Connection]: ...
        def _write(self, write: t.Callable[[sa.Connection], T]) -> T: ...
        def _committer(self, engine: sa.Engine) -> GroupCommit: ...
        def _thread_scope(self, context: t.Any) -> list[t.Any]: ...
        def _thread_row(self, conn: sa.Connection, thread_id: str, context: t.Any) -> t.Any: ...
        def _new_thread_values(
            self, thread: ThreadMetadata, context: t.Any
        ) -> dict[str, t.Any]: ...
        def _update_thread(
            self, conn: sa.Connection, thread: ThreadMetadata, context: t.Any
        ) -> int: ...
        def _item_values(self, thread_id: str, item: t.Any, user_id: str) -> dict[str, t.Any]: ...
        def _update_item(
            self,
            conn: sa.Connection,
            thread_id: str,
            item: t.Any,
            user_id: str,
            values: dict[str, t.Any] | None = None,
        ) -> int: ...

    def acquire_turn(
        self, thread_id: str, token: str, expires_at: datetime, context: t.Any
    ) -> bool:
        return self._write(lambda conn: self._acquire(conn, thread_id, token, expires_at, context))

    def _acquire(
        self,
        conn: sa.Connection,
        thread_id: str,
        token: str,
        expires_at: datetime,
        context: t.Any,
    ) -> bool:
        # One atomic UPDATE: whichever worker's statement lands first wins the row.
        return bool(
            conn.execute(
                self._statements.acquire,
                {
                    "b_id": thread_id,
                    "b_user": str(context.user_id),
                    "b_now": naive_utc(utcnow()),
                    "b_token": token,
                    "b_expires": naive_utc(expires_at),
                },
            ).rowcount
        )

    def begin_turn(
        self,
        thread: ThreadMetadata,
        token: str,
        expires_at: datetime,
        message: t.Any,
        context: t.Any,
        *,
        new: bool = False,
        max_turns: int | None = None,
    ) -> bool | None:
        """The new thread (with its lease), or the lease, and the user message: one
        transaction. A message with attachments, or an id that exists already,
        takes the step-by-step way of :class:`Store`. With *max_turns*, the count
        of the user's live turns is taken in the same transaction (on PostgreSQL
        under a lock per user, so that two workers cannot both take the last place)."""
        if message is not None and getattr(message, "attachments", None):
            return super().begin_turn(
                thread, token, expires_at, message, context, new=new, max_turns=max_turns
            )

        def begin(conn: sa.Connection) -> bool | None:
            if max_turns is not None and self._count_live(conn, context, lock=True) >= max_turns:
                return None
            if new:
                conn.execute(
                    self._statements.insert_thread,
                    {
                        **self._new_thread_values(thread, context),
                        "turn_token": token,
                        "turn_expires_at": naive_utc(expires_at),
                    },
                )
            elif not self._acquire(conn, thread.id, token, expires_at, context):
                return False
            if message is not None:
                conn.execute(
                    self._statements.insert_item,
                    self._item_values(thread.id, message, str(context.user_id)),
                )
            return True

        try:
            return self._write(begin)
        except sa.exc.IntegrityError:
            return super().begin_turn(
                thread, token, expires_at, message, context, new=new, max_turns=max_turns
            )

    def count_live_turns(self, context: t.Any) -> int:
        with self._begin(write=False) as conn:
            return self._count_live(conn, context)

    def _count_live(self, conn: sa.Connection, context: t.Any, *, lock: bool = False) -> int:
        user_id = str(context.user_id)
        if lock and conn.dialect.name == "postgresql":
            # held to the commit: the user's next start counts this one's lease
            conn.execute(self._statements.lock_user, {"b_key": "chatkit.turns:" + user_id})
        return int(
            conn.execute(
                self._statements.count_live,
                {
                    "b_user": user_id,
                    "b_now": naive_utc(utcnow()),
                },
            ).scalar_one()
        )

    def end_turn(
        self,
        thread_id: str,
        token: str,
        items: t.Sequence[t.Any],
        thread: ThreadMetadata | None,
        context: t.Any,
        *,
        saved: t.Collection[str] = (),
    ) -> None:
        """The last items, the thread and the lease's release: one transaction
        (an item id that exists already takes the step-by-step way)."""
        user_id = str(context.user_id)
        new = [item for item in items if item.id not in saved]
        checkpointed = [item for item in items if item.id in saved]

        def end(conn: sa.Connection) -> None:
            # The release first: when it finds the lease, the thread is this user's
            # (the lease was taken in their scope) and needs no check of its own.
            held = conn.execute(self._statements.release, release_params(thread_id, token))
            if new:
                if not held.rowcount:  # the lease ran out: never into another's thread
                    self._thread_row(conn, thread_id, context)
                conn.execute(
                    self._statements.insert_item,
                    [self._item_values(thread_id, item, user_id) for item in new],
                )
            for item in checkpointed:  # its checkpoint may have failed: then a new row
                values = self._item_values(thread_id, item, user_id)
                if not self._update_item(conn, thread_id, item, user_id, values):
                    conn.execute(self._statements.insert_item, values)
            if thread is not None:
                self._update_thread(conn, thread, context)

        try:
            self._write(end)
        except sa.exc.IntegrityError:
            super().end_turn(thread_id, token, items, thread, context, saved=saved)

    def renew_turn(self, thread_id: str, token: str, expires_at: datetime, context: t.Any) -> None:
        th = self.threads
        self._write(
            lambda conn: conn.execute(
                sa.update(th)
                .where(th.c.id == thread_id, th.c.turn_token == token)
                .values(turn_expires_at=naive_utc(expires_at))
            )
        )

    def renew_turns(self, leases: t.Mapping[str, str], expires_at: datetime) -> None:
        if not leases:
            return
        th = self.threads
        renew = (
            sa.update(th)
            .where(th.c.id == sa.bindparam("b_id"), th.c.turn_token == sa.bindparam("b_token"))
            .values(turn_expires_at=sa.bindparam("b_expires"))
        )
        until = naive_utc(expires_at)
        rows = [
            {"b_id": tid, "b_token": token, "b_expires": until} for tid, token in leases.items()
        ]
        self._write(lambda conn: conn.execute(renew, rows))

    def close_abandoned_turn(
        self, thread_id: str, token: str, notes: t.Sequence[t.Any], context: t.Any
    ) -> bool:
        th = self.threads
        user_id = str(context.user_id)

        def close(conn: sa.Connection) -> bool:
            freed = conn.execute(
                sa.update(th)
                .where(
                    th.c.id == thread_id,
                    th.c.user_id == user_id,
                    th.c.turn_token == token,
                    th.c.turn_expires_at <= naive_utc(utcnow()),
                )
                .values(turn_token=None, turn_expires_at=None)
            ).rowcount
            if freed and notes:
                conn.execute(
                    self._statements.insert_item,
                    [self._item_values(thread_id, note, user_id) for note in notes],
                )
            return bool(freed)

        return self._write(close)

    def release_turn(self, thread_id: str, token: str, context: t.Any) -> None:
        release = self._statements.release
        self._write(lambda conn: conn.execute(release, release_params(thread_id, token)))

    def request_cancel(self, thread_id: str, context: t.Any) -> str | None:
        th = self.threads
        live = sa.and_(
            th.c.id == thread_id,
            *self._thread_scope(context),
            th.c.turn_token.is_not(None),
            th.c.turn_expires_at > naive_utc(utcnow()),
        )

        def mark(conn: sa.Connection) -> str | None:
            row = conn.execute(sa.select(th.c.turn_token).where(live)).first()
            if row is None or row.turn_token.startswith(CANCEL_PREFIX):
                return None
            marked = cancel_token(row.turn_token)
            changed = conn.execute(
                sa.update(th)
                .where(live, th.c.turn_token == row.turn_token)
                .values(turn_token=marked)
            ).rowcount
            return marked if changed else None

        return self._write(mark)

    def save_checkpoint(
        self,
        thread_id: str,
        items: t.Sequence[t.Any],
        saved: t.Collection[str],
        context: t.Any,
    ) -> None:
        # Queued in the group commit without waiting: a stream never stalls on it.
        # The turn holds the thread's lease, taken in the user's scope: no check.
        user_id = str(context.user_id)
        rows = [
            (item.id in saved, item, self._item_values(thread_id, item, user_id)) for item in items
        ]
        upsert = self._statements.upsert_item.get(self.engine.dialect.name)

        def checkpoint(conn: sa.Connection) -> None:
            for known, item, values in rows:
                if upsert is not None:  # one statement, sent with the batch's others
                    conn.execute(upsert, values)
                elif not (known and self._update_item(conn, thread_id, item, user_id, values)):
                    conn.execute(self._statements.insert_item, values)

        self._committer(self.engine).submit_later(checkpoint, f"a checkpoint of {thread_id}")

    def live_turns(self, thread_ids: t.Sequence[str]) -> set[str]:
        if not thread_ids:
            return set()
        th = self.threads
        with self._begin(write=False) as conn:
            rows = (
                conn.execute(
                    sa.select(th.c.id).where(
                        th.c.id.in_(list(thread_ids)),
                        th.c.turn_token.is_not(None),
                        th.c.turn_expires_at > naive_utc(utcnow()),
                    )
                )
                .scalars()
                .all()
            )
        return set(rows)

    def turn_tokens(self, thread_ids: t.Sequence[str]) -> dict[str, str | None]:
        th = self.threads
        with self._begin(write=False) as conn:
            rows = conn.execute(
                sa.select(th.c.id, th.c.turn_token).where(th.c.id.in_(list(thread_ids)))
            ).all()
        held = {row.id: row.turn_token for row in rows}
        return {thread_id: held.get(thread_id) for thread_id in thread_ids}
