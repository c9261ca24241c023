"""The tables of :class:`~flask_chatkit.sqlalchemy_store.SQLAlchemyStore` and the
statements it runs on them (no Flask here: plain SQLAlchemy).

- :func:`define_models`: the four models on the app's ``db.Model``;
- :class:`Statements`: the statements every turn runs, built once;
- :class:`Deferring`: the connection a group commit's writes get, which sends
  their inserts together;
- the conventions of the columns: naive UTC datetimes (:func:`naive_utc`), text
  without NUL (:func:`plain`), a lease that is live (:func:`live`), keyset
  pagination on ``(created_at, pk)`` (:func:`beyond`).
"""

from __future__ import annotations

import operator
import typing as t
from datetime import UTC
from datetime import datetime

import sqlalchemy as sa

from .turns import cancel_token

if t.TYPE_CHECKING:
    from flask_sqlalchemy import SQLAlchemy

    from .store import Order

__all__ = [
    "BigId",
    "Deferring",
    "Statements",
    "beyond",
    "define_models",
    "live",
    "naive_utc",
    "plain",
    "release_params",
]


def plain(text: str | None) -> str | None:
    """Text for a plain column: PostgreSQL cannot store NUL (the JSON copy keeps it)."""
    return None if text is None else text.replace("\x00", "")


def live(row: t.Any, now: datetime) -> bool:
    """Whether a thread row's turn lease is held and has not run out."""
    return row.turn_token is not None and row.turn_expires_at > naive_utc(now)


def release_params(thread_id: str, token: str) -> dict[str, str]:
    """The release of *token*'s lease, also once a Stop marked it."""
    return {"b_id": thread_id, "b_token": token, "b_cancel": cancel_token(token)}


def naive_utc(value: datetime) -> datetime:
    """*value* as the columns hold datetimes: naive, in UTC."""
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value


def _sqlite_insert(table: sa.Table) -> t.Any:
    from sqlalchemy.dialects.sqlite import insert

    return insert(table)


def _postgresql_insert(table: sa.Table) -> t.Any:
    from sqlalchemy.dialects.postgresql import insert

    return insert(table)


#: The dialects whose ``INSERT ... ON CONFLICT DO UPDATE`` checkpoints use.
_UPSERTS: dict[str, t.Callable[[sa.Table], t.Any]] = {
    "sqlite": _sqlite_insert,
    "postgresql": _postgresql_insert,
}


def _upsert(insert: t.Callable[[sa.Table], t.Any], items: sa.Table) -> t.Any:
    statement = insert(items)
    new = statement.excluded
    return statement.on_conflict_do_update(
        index_elements=[items.c.id],
        set_={"type": new.type, "data": new.data},
        where=sa.and_(items.c.thread_id == new.thread_id, items.c.user_id == new.user_id),
    )


class Deferring:
    """The connection the writes of a group commit get (see
    :meth:`~flask_chatkit.sqlalchemy_store.SQLAlchemyStore._write`).

    The store's own inserts of items and threads, whose results no write reads,
    wait and go out together, one ``executemany`` per statement and set of
    columns, before any other statement and before the commit: a batch of
    turns that each insert a thread and a message sends two statements, not
    two per turn (on SQLite under gevent every statement is a hand-over to a
    thread, which waits for the hub's next turn). Within a write, its inserts
    keep their order; a failing insert fails the batch, whose writes then run
    again one by one (:func:`~flask_chatkit.group_commit.run_batch`), so the
    failure still lands on its own write.
    """

    def __init__(self, conn: sa.Connection, deferrable: t.Collection[t.Any]) -> None:
        self.conn = conn
        self._deferrable = {id(statement) for statement in deferrable}
        # (statement id, columns) -> (statement, rows), in order of first appearance
        self._pending: dict[tuple[int, tuple[str, ...]], tuple[t.Any, list[t.Any]]] = {}

    def execute(self, statement: t.Any, parameters: t.Any = None) -> t.Any:
        if id(statement) in self._deferrable and parameters:
            rows = parameters if isinstance(parameters, list) else [parameters]
            for row in rows:
                key = (id(statement), tuple(row))
                self._pending.setdefault(key, (statement, []))[1].append(row)
            return None
        self.flush()
        return self.conn.execute(statement, parameters)

    def flush(self) -> None:
        """Send the inserts that wait."""
        pending, self._pending = self._pending, {}
        for statement, rows in pending.values():
            self.conn.execute(statement, rows if len(rows) > 1 else rows[0])

    def __getattr__(self, name: str) -> t.Any:
        return getattr(self.conn, name)


class Statements:
    """The statements every turn runs, built once: building a Core statement per
    call (coercing its values, computing its cache key) cost more than running it
    on SQLite. Parameters are named ``b_*``, apart from the columns' own."""

    def __init__(self, threads: sa.Table, items: sa.Table) -> None:
        th = threads
        self.insert_item = sa.insert(items)
        self.insert_thread = sa.insert(th)
        self.thread_row = sa.select(th.c.data, th.c.turn_token, th.c.turn_expires_at).where(
            th.c.id == sa.bindparam("b_id"), th.c.user_id == sa.bindparam("b_user")
        )
        self.agent_thread_row = self.thread_row.where(th.c.agent_id == sa.bindparam("b_agent"))
        self.acquire = (
            sa.update(th)
            .where(
                th.c.id == sa.bindparam("b_id"),
                th.c.user_id == sa.bindparam("b_user"),
                sa.or_(th.c.turn_token.is_(None), th.c.turn_expires_at < sa.bindparam("b_now")),
            )
            .values(turn_token=sa.bindparam("b_token"), turn_expires_at=sa.bindparam("b_expires"))
        )
        #: The user's live turns, counted on ``ix_*threads_user_turn``.
        self.count_live = (
            sa.select(sa.func.count())
            .select_from(th)
            .where(
                th.c.user_id == sa.bindparam("b_user"),
                th.c.turn_expires_at > sa.bindparam("b_now"),
                th.c.turn_token.is_not(None),
            )
        )
        #: A PostgreSQL lock per user, to the end of the transaction.
        self.lock_user = sa.select(
            sa.func.pg_advisory_xact_lock(sa.func.hashtext(sa.bindparam("b_key")))
        )
        self.release = (
            sa.update(th)
            .where(
                th.c.id == sa.bindparam("b_id"),
                th.c.turn_token.in_([sa.bindparam("b_token"), sa.bindparam("b_cancel")]),
            )
            .values(turn_token=None, turn_expires_at=None)
        )
        self.update_thread = (
            sa.update(th)
            .where(th.c.id == sa.bindparam("b_id"), th.c.user_id == sa.bindparam("b_user"))
            .values(
                data=sa.bindparam("b_data"),
                title=sa.bindparam("b_title"),
                updated_at=sa.bindparam("b_updated"),
            )
        )
        self.agent_update_thread = self.update_thread.where(
            th.c.agent_id == sa.bindparam("b_agent")
        )
        self.update_item = (
            sa.update(items)
            .where(
                items.c.id == sa.bindparam("b_id"),
                items.c.thread_id == sa.bindparam("b_thread"),
                items.c.user_id == sa.bindparam("b_user"),
            )
            .values(type=sa.bindparam("b_type"), data=sa.bindparam("b_data"))
        )
        #: A checkpoint: insert the item, or update it in place when it exists in
        #: the same thread of the same user (never someone else's row), per dialect.
        self.upsert_item = {name: _upsert(insert, items) for name, insert in _UPSERTS.items()}
        #: What a group commit may send together (see :class:`Deferring`).
        self.deferrable = (self.insert_thread, self.insert_item, *self.upsert_item.values())


def beyond(table: sa.Table, pivot: t.Any, order: Order) -> t.Any:
    """Rows after *pivot* in ``(created_at, pk)`` order (descending: before it).

    Written ``created_at <= c AND (created_at < c OR pk < p)`` (ascending: the
    mirror image) rather than ``created_at < c OR (created_at = c AND pk < p)``:
    the same rows, but the first condition bounds the index range, so that SQLite
    and PostgreSQL seek to the cursor instead of walking (and filtering out) every
    row before it: a page deep in a long thread costs what the first page costs.
    """
    after = operator.gt if order == "asc" else operator.lt
    reach = operator.ge if order == "asc" else operator.le
    return sa.and_(
        reach(table.c.created_at, pivot.created_at),
        sa.or_(after(table.c.created_at, pivot.created_at), after(table.c.pk, pivot.pk)),
    )


#: 64-bit keys (SQLite only autoincrements an INTEGER primary key, which is 64-bit there).
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def define_models(db: SQLAlchemy, prefix: str, bind_key: str | None) -> dict[str, t.Any]:
    """The four models on ``db.Model``; ``data`` holds the wire JSON."""
    Id = sa.String(255)
    base: dict[str, t.Any] = {"__bind_key__": bind_key} if bind_key else {}

    def model(name: str, table: str, columns: dict[str, t.Any], *args: t.Any) -> t.Any:
        attrs = {
            "__tablename__": prefix + table,
            "__table_args__": args,
            "pk": sa.Column(BigId, primary_key=True, autoincrement=True),
            **base,
            **columns,
        }
        return type(f"ChatKit{name}", (db.Model,), attrs)

    p = prefix
    models = {
        "Thread": model(
            "Thread",
            "threads",
            {
                "id": sa.Column(Id, nullable=False),
                "user_id": sa.Column(Id, nullable=False),
                "created_at": sa.Column(sa.DateTime, nullable=False),
                "updated_at": sa.Column(sa.DateTime, nullable=False),
                "agent_id": sa.Column(Id),
                "title": sa.Column(sa.Text),
                # a lease that serializes turns on one thread across workers
                "turn_token": sa.Column(sa.String(64)),
                "turn_expires_at": sa.Column(sa.DateTime),
                "data": sa.Column(sa.Text, nullable=False),
            },
            sa.UniqueConstraint("id", name=f"uq_{p}threads_id"),
            sa.Index(f"ix_{p}threads_user_created", "user_id", "created_at", "pk"),
            sa.Index(
                f"ix_{p}threads_user_agent_created", "user_id", "agent_id", "created_at", "pk"
            ),
            # a user's live turns (CHATKIT_MAX_TURNS_PER_USER): only their leases' rows
            sa.Index(f"ix_{p}threads_user_turn", "user_id", "turn_expires_at"),
        ),
        "Item": model(
            "Item",
            "items",
            {
                "id": sa.Column(Id, nullable=False),
                "thread_id": sa.Column(Id, nullable=False),
                "user_id": sa.Column(Id, nullable=False),
                "type": sa.Column(sa.String(64), nullable=False),
                "created_at": sa.Column(sa.DateTime, nullable=False),
                "data": sa.Column(sa.Text, nullable=False),
            },
            sa.UniqueConstraint("id", name=f"uq_{p}items_id"),
            sa.Index(f"ix_{p}items_thread_created", "thread_id", "created_at", "pk"),
            sa.Index(f"ix_{p}items_user_created", "user_id", "created_at"),
        ),
        "Attachment": model(
            "Attachment",
            "attachments",
            {
                "id": sa.Column(Id, nullable=False),
                "user_id": sa.Column(Id, nullable=False),
                "thread_id": sa.Column(Id),
                "created_at": sa.Column(sa.DateTime, nullable=False),
                "data": sa.Column(sa.Text, nullable=False),
                "meta": sa.Column(sa.Text),
            },
            sa.UniqueConstraint("id", name=f"uq_{p}attachments_id"),
            sa.Index(f"ix_{p}attachments_user_created", "user_id", "created_at"),
            sa.Index(f"ix_{p}attachments_thread", "thread_id"),
            sa.Index(f"ix_{p}attachments_created", "created_at"),
        ),
        "Feedback": model(
            "Feedback",
            "feedback",
            {
                "user_id": sa.Column(Id, nullable=False),
                "thread_id": sa.Column(Id, nullable=False),
                "item_id": sa.Column(Id, nullable=False),
                "kind": sa.Column(sa.String(16), nullable=False),
                "created_at": sa.Column(sa.DateTime, nullable=False),
            },
            sa.UniqueConstraint("user_id", "thread_id", "item_id", name=f"uq_{p}feedback_vote"),
            sa.Index(f"ix_{p}feedback_thread", "thread_id"),
            sa.Index(f"ix_{p}feedback_created", "created_at"),
        ),
    }
    return models
