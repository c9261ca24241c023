"""The storage interface of the protocol core, id generation, and an in-memory store.

Every store method takes the request context and scopes its work to
``context.user_id``: another user's records behave exactly like missing ones
(:class:`~flask_chatkit.errors.NotFoundError`), and lists never include them.
This module imports nothing from Flask.
"""

from __future__ import annotations

import abc
import dataclasses
import itertools
import secrets
import threading
import typing as t
from datetime import datetime

from .agents import agent_of
from .agents import sees_agent
from .errors import NotFoundError
from .turns import CANCEL_PREFIX
from .turns import cancel_token
from .types import HIDDEN_ITEM_TYPES
from .types import Page
from .types import ThreadMetadata
from .types import utcnow

if t.TYPE_CHECKING:
    from .types import Attachment
    from .types import ThreadItem

TContext = t.TypeVar("TContext")
Order = t.Literal["asc", "desc"]

#: Id prefixes by item type, as in the official SDK.
ID_PREFIXES = {
    "thread": "thr",
    "message": "msg",
    "tool_call": "tc",
    "workflow": "wf",
    "task": "tsk",
    "attachment": "atc",
    "sdk_hidden_context": "shcx",
}


def generate_id(prefix: str) -> str:
    """A new random id: *prefix*, an underscore and 20 hex digits (80 random bits).

    The SDK uses 8 hex digits; that collides after ~65k records, too few for a
    shared database.
    """
    return f"{prefix}_{secrets.token_hex(10)}"


@dataclasses.dataclass(frozen=True)
class Lease:
    """A thread's turn lease as stored: who holds it (the turn's token) and until when."""

    token: str
    expires_at: datetime

    def live(self, now: datetime | None = None) -> bool:
        """Whether it has not run out (a turn holds the thread)."""
        return self.expires_at > (now or utcnow())


class Store(abc.ABC, t.Generic[TContext]):
    """Persistence of threads, items, attachments and feedback.

    Subclasses implement the abstract methods; ``context`` is the object the
    blueprint built for the request (it has a ``user_id``).
    """

    def generate_thread_id(self, context: TContext) -> str:
        """A new thread id (``thr_...``)."""
        return generate_id(ID_PREFIXES["thread"])

    def generate_item_id(self, item_type: str, thread: ThreadMetadata, context: TContext) -> str:
        """A new item id; *item_type* is one of the keys of :data:`ID_PREFIXES`."""
        return generate_id(ID_PREFIXES.get(item_type, item_type))

    def generate_attachment_id(self, mime_type: str, context: TContext) -> str:
        """A new attachment id (``atc_...``)."""
        return generate_id(ID_PREFIXES["attachment"])

    def ping(self, timeout: float) -> None:
        """Check that the store answers now, within about *timeout* seconds (for
        ``GET {prefix}/health``); raise :class:`~flask_chatkit.errors.StoreUnavailableError`
        when it does not. The default (a store in process memory) always answers."""

    # threads

    @abc.abstractmethod
    def load_thread(self, thread_id: str, context: TContext) -> ThreadMetadata:
        """The thread; :class:`NotFoundError` if missing or not the user's."""

    @abc.abstractmethod
    def save_thread(self, thread: ThreadMetadata, context: TContext) -> None:
        """Insert or update the thread (metadata only)."""

    @abc.abstractmethod
    def load_threads(
        self, limit: int, after: str | None, order: Order, context: TContext
    ) -> Page[ThreadMetadata]:
        """A page of the user's threads ordered by ``created_at``."""

    @abc.abstractmethod
    def delete_thread(self, thread_id: str, context: TContext) -> None:
        """Delete the thread, its items and feedback; detach its attachments."""

    # items

    @abc.abstractmethod
    def load_thread_items(
        self,
        thread_id: str,
        after: str | None,
        limit: int,
        order: Order,
        context: TContext,
        *,
        include_hidden: bool = True,
    ) -> Page[ThreadItem]:
        """A page of the thread's items ordered by ``created_at``.

        :param after: exclusive cursor: the id of the last item already seen.
        :param include_hidden: ``False`` leaves hidden-context items out of the
            page itself (so that ``has_more`` stays exact).
        """

    @abc.abstractmethod
    def add_thread_item(self, thread_id: str, item: ThreadItem, context: TContext) -> None:
        """Insert a new item (an existing id is overwritten)."""

    @abc.abstractmethod
    def save_item(self, thread_id: str, item: ThreadItem, context: TContext) -> None:
        """Insert or update an item by id."""

    @abc.abstractmethod
    def load_item(self, thread_id: str, item_id: str, context: TContext) -> ThreadItem:
        """One item; :class:`NotFoundError` if missing."""

    @abc.abstractmethod
    def delete_thread_item(self, thread_id: str, item_id: str, context: TContext) -> None:
        """Delete one item (no error if it is already gone)."""

    @abc.abstractmethod
    def delete_items_after(self, thread_id: str, item_id: str, context: TContext) -> int:
        """Delete every item newer than *item_id*; return how many were deleted."""

    # attachments

    @abc.abstractmethod
    def save_attachment(self, attachment: Attachment, context: TContext) -> None:
        """Insert or update an attachment's metadata."""

    @abc.abstractmethod
    def load_attachment(self, attachment_id: str, context: TContext) -> Attachment:
        """The attachment; :class:`NotFoundError` if missing or not the user's."""

    @abc.abstractmethod
    def delete_attachment(self, attachment_id: str, context: TContext) -> None:
        """Delete an attachment's metadata."""

    def load_attachments(self, attachment_ids: list[str], context: TContext) -> list[Attachment]:
        """Several attachments in the order given; :class:`NotFoundError` if any is missing."""
        return [self.load_attachment(i, context) for i in attachment_ids]

    def load_thread_attachments(self, thread_id: str, context: TContext) -> list[Attachment]:
        """The user's attachments sent in *thread_id* (deleted with the thread).

        The default finds none: the thread's attachments are then only detached
        by :meth:`delete_thread`, and ``cleanup-attachments`` removes them later.
        """
        return []

    def attachment_bytes(self, user_id: str) -> int:
        """Bytes of uploaded attachments the user has stored (for ``CHATKIT_USER_QUOTA_BYTES``)."""
        return 0

    def delete_stale_attachments(self, created_before: datetime) -> list[Attachment]:
        """Delete attachment records created before *created_before* and never sent
        in a message (no thread); return the ones this call deleted, so that
        concurrent calls never both claim one. The default deletes none."""
        return []

    # feedback

    @abc.abstractmethod
    def save_feedback(
        self, thread_id: str, item_ids: list[str], kind: str, context: TContext
    ) -> None:
        """Record (or replace) the user's vote on each item."""

    # turns: one responder at a time per thread

    def acquire_turn(
        self, thread_id: str, token: str, expires_at: datetime, context: TContext
    ) -> bool:
        """Take the thread's turn lease unless another live one holds it.

        Stores shared by several processes must override this (and
        :meth:`renew_turn`, :meth:`release_turn`) with an atomic update in the
        shared database; the default only serializes turns within this process.
        """
        with _turn_lock:
            turns = self.__dict__.setdefault("_local_turns", {})
            held = turns.get(thread_id)
            if held is not None and held[1] > utcnow():
                return False
            turns[thread_id] = (token, expires_at)
            return True

    def renew_turn(
        self, thread_id: str, token: str, expires_at: datetime, context: TContext
    ) -> None:
        """Extend a lease this turn holds."""
        with _turn_lock:
            turns = self.__dict__.setdefault("_local_turns", {})
            if turns.get(thread_id, (None,))[0] == token:
                turns[thread_id] = (token, expires_at)

    def release_turn(self, thread_id: str, token: str, context: TContext) -> None:
        """Give back a lease this turn holds, also once a Stop marked it (no error
        if it expired meanwhile)."""
        with _turn_lock:
            turns = self.__dict__.setdefault("_local_turns", {})
            if turns.get(thread_id, (None,))[0] in (token, cancel_token(token)):
                del turns[thread_id]

    def request_cancel(self, thread_id: str, context: TContext) -> str | None:
        """Mark the thread's live lease as stopped (see :mod:`flask_chatkit.turns`):
        the process running the turn stops it when it next looks, and gives the
        lease back. The marked token, or ``None`` when no turn runs.

        Stores shared by several processes must override it with an update in
        the shared database, as :meth:`acquire_turn`.
        """
        with _turn_lock:
            turns = self.__dict__.setdefault("_local_turns", {})
            held = turns.get(thread_id)
            if held is None or held[1] <= utcnow() or held[0].startswith(CANCEL_PREFIX):
                return None
            marked = cancel_token(held[0])
            turns[thread_id] = (marked, held[1])
            return marked

    def load_thread_and_turn(
        self, thread_id: str, context: TContext
    ) -> tuple[ThreadMetadata, bool]:
        """:meth:`load_thread`, and whether a turn runs on the thread now (a
        store may tell both in one read)."""
        thread, lease = self.load_thread_and_lease(thread_id, context)
        return thread, lease is not None and lease.live()

    def load_thread_and_lease(
        self, thread_id: str, context: TContext
    ) -> tuple[ThreadMetadata, Lease | None]:
        """:meth:`load_thread`, and its turn lease as stored, also one that ran out
        (its holder died: see :meth:`close_abandoned_turn`); ``None``: no lease."""
        thread = self.load_thread(thread_id, context)
        with _turn_lock:
            held = self.__dict__.setdefault("_local_turns", {}).get(thread.id)
        return thread, None if held is None else Lease(*held)

    def renew_turns(self, leases: t.Mapping[str, str], expires_at: datetime) -> None:
        """Extend the leases these turns hold (thread id -> token), all at once:
        a process renews its running turns together. Not scoped to a user: for
        the process running those turns."""
        for thread_id, token in leases.items():
            self.renew_turn(thread_id, token, expires_at, None)  # type: ignore[arg-type]

    def close_abandoned_turn(
        self, thread_id: str, token: str, notes: t.Sequence[ThreadItem], context: TContext
    ) -> bool:
        """End a turn whose process died (its lease *token* ran out unreleased):
        give back the lease and save *notes* after what its checkpoints kept, in
        one step; whether it did (``False``: someone else did, or a turn runs).

        Stores shared by several processes must override it with one
        transaction, as :meth:`acquire_turn`.
        """
        try:
            self.load_thread(thread_id, context)  # the user's own thread only
        except NotFoundError:
            return False
        with _turn_lock:
            turns = self.__dict__.setdefault("_local_turns", {})
            held = turns.get(thread_id)
            if held is None or held[0] != token or held[1] > utcnow():
                return False
            del turns[thread_id]
        for note in notes:
            self.add_thread_item(thread_id, note, context)
        return True

    def load_threads_and_turns(
        self, limit: int, after: str | None, order: Order, context: TContext
    ) -> tuple[Page[ThreadMetadata], set[str]]:
        """:meth:`load_threads`, and which of the page's threads a turn runs on now."""
        page = self.load_threads(limit, after, order, context)
        return page, self.live_turns([thread.id for thread in page.data])

    def save_checkpoint(
        self,
        thread_id: str,
        items: t.Sequence[ThreadItem],
        saved: t.Collection[str],
        context: TContext,
    ) -> None:
        """Save a running turn's unfinished *items* (those whose ids are in *saved*
        were saved by an earlier checkpoint). Nobody waits for it: a store may
        queue it (:class:`~flask_chatkit.sqlalchemy_store.SQLAlchemyStore` does),
        and a failure only delays what readers see."""
        for item in items:
            self.save_item(thread_id, item, context)

    def live_turns(self, thread_ids: t.Sequence[str]) -> set[str]:
        """Those of *thread_ids* whose turn runs now (a lease that has not run out).
        Not scoped to a user: the caller has loaded these threads for its user."""
        now = utcnow()
        with _turn_lock:
            turns = self.__dict__.setdefault("_local_turns", {})
            return {tid for tid in thread_ids if tid in turns and turns[tid][1] > now}

    def count_live_turns(self, context: TContext) -> int:
        """How many turns the context's user runs now, in every process on this store."""
        with _turn_lock:
            turns = dict(self.__dict__.setdefault("_local_turns", {}))
        now = utcnow()
        count = 0
        for thread_id, (_, expires_at) in turns.items():
            if expires_at > now:
                try:
                    self.load_thread(thread_id, context)
                except NotFoundError:  # another user's
                    continue
                count += 1
        return count

    def turn_tokens(self, thread_ids: t.Sequence[str]) -> dict[str, str | None]:
        """The lease token each of *thread_ids* holds now (``None``: no lease).
        Not scoped to a user: for the process running those threads' turns."""
        with _turn_lock:
            turns = self.__dict__.setdefault("_local_turns", {})
            return {thread_id: turns.get(thread_id, (None,))[0] for thread_id in thread_ids}

    def begin_turn(
        self,
        thread: ThreadMetadata,
        token: str,
        expires_at: datetime,
        message: ThreadItem | None,
        context: TContext,
        *,
        new: bool = False,
        max_turns: int | None = None,
    ) -> bool | None:
        """Start a turn in one step: save a *new* thread, take its turn lease, and
        save the turn's user *message* (stamping its attachments with the thread).

        :param max_turns: the most turns the user may run at once, across every
            process on this store (``None``: no limit).
        :return: ``True`` when started; ``False``, with nothing saved but a new
            thread, when another live turn holds the lease; ``None``, with
            nothing saved at all, when the user already runs *max_turns* turns.

        :class:`~flask_chatkit.sqlalchemy_store.SQLAlchemyStore` does it in one
        transaction; this default calls the single-step methods in turn.
        """
        if max_turns is not None and self.count_live_turns(context) >= max_turns:
            return None
        if new:
            self.save_thread(thread, context)
        if not self.acquire_turn(thread.id, token, expires_at, context):
            return False
        if message is not None:
            for attachment in getattr(message, "attachments", ()):
                self.save_attachment(attachment, context)
            self.add_thread_item(thread.id, message, context)
        return True

    def end_turn(
        self,
        thread_id: str,
        token: str,
        items: t.Sequence[ThreadItem],
        thread: ThreadMetadata | None,
        context: TContext,
        *,
        saved: t.Collection[str] = (),
    ) -> None:
        """End a turn in one step: save its last finished *items*, the changed
        *thread* (``None``: unchanged), and give back its lease. Items whose ids
        are in *saved* were stored by a checkpoint of the turn: they are updated.

        :class:`~flask_chatkit.sqlalchemy_store.SQLAlchemyStore` does it in one
        transaction; this default calls the single-step methods in turn.
        """
        for item in items:
            if item.id in saved:
                self.save_item(thread_id, item, context)
            else:
                self.add_thread_item(thread_id, item, context)
        if thread is not None:
            self.save_thread(thread, context)
        self.release_turn(thread_id, token, context)

    # administration: not scoped by a request context

    def export_feedback(self, user_id: str | None = None) -> list[dict[str, t.Any]]:
        """Every vote (of one user, if given), oldest first:
        ``{user_id, thread_id, item_id, kind, created_at}``."""
        raise NotImplementedError(f"{type(self).__name__} cannot export feedback.")

    def load_user_attachments(self, user_id: str) -> list[Attachment]:
        """Every attachment record of a user, sent in a thread or not, oldest first
        (for ``export-user-data``)."""
        raise NotImplementedError(f"{type(self).__name__} cannot list a user's attachments.")

    def delete_user_data(self, user_id: str) -> Removed:
        """Delete every thread, item, attachment record and vote of a user."""
        raise NotImplementedError(f"{type(self).__name__} cannot delete user data.")

    def purge_threads(self, inactive_since: datetime) -> Removed:
        """Delete threads (with their items, votes and attachment records) not
        updated since *inactive_since*."""
        raise NotImplementedError(f"{type(self).__name__} cannot purge threads.")


@dataclasses.dataclass
class Removed:
    """What an administrative deletion removed. The caller deletes the bytes of
    :attr:`attachments` with its Attachments."""

    threads: int = 0
    items: int = 0
    feedback: int = 0
    attachments: list[t.Any] = dataclasses.field(default_factory=list)

    def merge(self, other: Removed) -> None:
        """Add *other*'s counts and attachments to these."""
        self.threads += other.threads
        self.items += other.items
        self.feedback += other.feedback
        self.attachments.extend(other.attachments)

    def summary(self) -> str:
        """``"3 threads, 12 items, 2 attachments, 1 feedback vote"``."""
        parts = [
            (self.threads, "thread"),
            (self.items, "item"),
            (len(self.attachments), "attachment"),
            (self.feedback, "feedback vote"),
        ]
        return ", ".join(f"{n} {word}{'' if n == 1 else 's'}" for n, word in parts)


_turn_lock = threading.Lock()


def _ordered_page(
    records: list[t.Any],
    key: t.Callable[[t.Any], str],
    after: str | None,
    limit: int,
    order: Order,
    what: str,
) -> tuple[list[t.Any], bool]:
    """Slice an already ordered list at the cursor; shared by the in-memory store."""
    if order == "desc":
        records = records[::-1]
    start = 0
    if after is not None:
        for index, record in enumerate(records):
            if key(record) == after:
                start = index + 1
                break
        else:
            raise NotFoundError(f"No {what} with id {after!r}.", field="params.after")
    chunk = records[start : start + limit + 1]
    return chunk[:limit], len(chunk) > limit


class InMemoryStore(Store[t.Any]):
    """A store that keeps everything in process memory, for tests and demos.

    It is safe to share between threads or greenlets of one process; it stores
    copies, so callers may mutate what they pass in or get back.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._seq = itertools.count()
        self._threads: dict[str, _ThreadEntry] = {}
        self._items: dict[str, dict[str, tuple[tuple[datetime, int], t.Any]]] = {}
        self._attachments: dict[str, tuple[str, t.Any]] = {}
        self._attachment_created: dict[str, datetime] = {}
        #: (user_id, thread_id, item_id) -> (kind, time of the vote)
        self.feedback: dict[tuple[str, str, str], tuple[str, datetime]] = {}

    def _thread_entry(self, thread_id: str, context: t.Any) -> _ThreadEntry:
        entry = self._threads.get(thread_id)
        if entry is None or not entry.visible_to(context):
            raise NotFoundError(f"No thread with id {thread_id!r}.", field="params.thread_id")
        return entry

    def load_thread(self, thread_id: str, context: t.Any) -> ThreadMetadata:
        with self._lock:
            return self._thread_entry(thread_id, context).thread.model_copy(deep=True)

    def save_thread(self, thread: ThreadMetadata, context: t.Any) -> None:
        with self._lock:
            entry = self._threads.get(thread.id)
            if entry is None:
                self._threads[thread.id] = _ThreadEntry(
                    user_id=context.user_id,
                    key=(thread.created_at, next(self._seq)),
                    thread=thread.model_copy(deep=True),
                    agent_id=agent_of(context),
                )
                self._items.setdefault(thread.id, {})
                return
            if not entry.visible_to(context):
                raise NotFoundError(f"No thread with id {thread.id!r}.")
            entry.thread = thread.model_copy(deep=True)
            entry.updated_at = utcnow()

    def load_threads(
        self, limit: int, after: str | None, order: Order, context: t.Any
    ) -> Page[ThreadMetadata]:
        with self._lock:
            mine = sorted(
                (e for e in self._threads.values() if e.visible_to(context)), key=lambda e: e.key
            )
            chunk, more = _ordered_page(mine, lambda e: e.thread.id, after, limit, order, "thread")
            data = [e.thread.model_copy(deep=True) for e in chunk]
        return Page(data=data, has_more=more, after=data[-1].id if more else None)

    def delete_thread(self, thread_id: str, context: t.Any) -> None:
        with self._lock:
            self._thread_entry(thread_id, context)
            self._remove_threads([thread_id], detach=True)

    def _remove_threads(self, thread_ids: list[str], *, detach: bool) -> Removed:
        """Drop threads with their items and votes; detach (or delete) their attachments."""
        removed = Removed()
        doomed = set(thread_ids)
        for thread_id in doomed:
            del self._threads[thread_id]
            removed.threads += 1
            removed.items += len(self._items.pop(thread_id, {}))
            self._touch_turns_of(thread_id)
        for key in [k for k in self.feedback if k[1] in doomed]:
            del self.feedback[key]
            removed.feedback += 1
        for att_id, (user, att) in list(self._attachments.items()):
            if att.thread_id in doomed:
                if detach:
                    self._attachments[att_id] = (user, att.model_copy(update={"thread_id": None}))
                else:
                    del self._attachments[att_id]
                    removed.attachments.append(att)
        return removed

    def _touch_turns_of(self, thread_id: str) -> None:
        self.__dict__.get("_local_turns", {}).pop(thread_id, None)

    def acquire_turn(
        self, thread_id: str, token: str, expires_at: datetime, context: t.Any
    ) -> bool:
        # Like the SQL store: no lease on a missing thread or another user's.
        with self._lock:
            entry = self._threads.get(thread_id)
            if entry is None or entry.user_id != context.user_id:
                return False
            return super().acquire_turn(thread_id, token, expires_at, context)

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
        with self._lock:
            self._thread_entry(thread_id, context)
            records = sorted(self._items[thread_id].values(), key=lambda e: e[0])
            if not include_hidden:
                records = [
                    e for e in records if e[1].type not in HIDDEN_ITEM_TYPES or e[1].id == after
                ]
            chunk, more = _ordered_page(records, lambda e: e[1].id, after, limit, order, "item")
            data = [e[1].model_copy(deep=True) for e in chunk]
        return Page(data=data, has_more=more, after=data[-1].id if more else None)

    def add_thread_item(self, thread_id: str, item: t.Any, context: t.Any) -> None:
        self.save_item(thread_id, item, context)

    def save_item(self, thread_id: str, item: t.Any, context: t.Any) -> None:
        with self._lock:
            self._thread_entry(thread_id, context)
            items = self._items[thread_id]
            old = items.get(item.id)
            key = old[0] if old else (item.created_at, next(self._seq))
            items[item.id] = (key, item.model_copy(deep=True))

    def load_item(self, thread_id: str, item_id: str, context: t.Any) -> t.Any:
        with self._lock:
            self._thread_entry(thread_id, context)
            entry = self._items[thread_id].get(item_id)
            if entry is None:
                raise NotFoundError(f"No item with id {item_id!r}.", field="params.item_id")
            return entry[1].model_copy(deep=True)

    def delete_thread_item(self, thread_id: str, item_id: str, context: t.Any) -> None:
        with self._lock:
            self._thread_entry(thread_id, context)
            self._items[thread_id].pop(item_id, None)

    def delete_items_after(self, thread_id: str, item_id: str, context: t.Any) -> int:
        with self._lock:
            self._thread_entry(thread_id, context)
            items = self._items[thread_id]
            if item_id not in items:
                raise NotFoundError(f"No item with id {item_id!r}.", field="params.item_id")
            pivot = items[item_id][0]
            doomed = [i for i, (key, _) in items.items() if key > pivot]
            for i in doomed:
                del items[i]
            return len(doomed)

    def save_attachment(self, attachment: t.Any, context: t.Any) -> None:
        with self._lock:
            old = self._attachments.get(attachment.id)
            if old is not None and old[0] != context.user_id:
                raise NotFoundError(f"No attachment with id {attachment.id!r}.")
            self._attachments[attachment.id] = (context.user_id, attachment.model_copy(deep=True))
            self._attachment_created.setdefault(attachment.id, utcnow())

    def load_attachment(self, attachment_id: str, context: t.Any) -> t.Any:
        with self._lock:
            entry = self._attachments.get(attachment_id)
            if entry is None or entry[0] != context.user_id:
                raise NotFoundError(
                    f"No attachment with id {attachment_id!r}.", field="params.attachment_id"
                )
            return entry[1].model_copy(deep=True)

    def delete_attachment(self, attachment_id: str, context: t.Any) -> None:
        with self._lock:
            self.load_attachment(attachment_id, context)
            del self._attachments[attachment_id]

    def load_thread_attachments(self, thread_id: str, context: t.Any) -> list[t.Any]:
        with self._lock:
            return [
                att.model_copy(deep=True)
                for user, att in self._attachments.values()
                if user == context.user_id and att.thread_id == thread_id
            ]

    def attachment_bytes(self, user_id: str) -> int:
        with self._lock:
            return sum(
                int((att.metadata or {}).get("size") or 0)
                for user, att in self._attachments.values()
                if str(user) == str(user_id)
            )

    def delete_stale_attachments(self, created_before: datetime) -> list[t.Any]:
        with self._lock:
            doomed = [
                att_id
                for att_id, (_, att) in self._attachments.items()
                if att.thread_id is None
                and self._attachment_created.get(att_id, created_before) < created_before
            ]
            removed = [self._attachments.pop(att_id)[1] for att_id in doomed]
            for att_id in doomed:
                self._attachment_created.pop(att_id, None)
            return removed

    def save_feedback(self, thread_id: str, item_ids: list[str], kind: str, context: t.Any) -> None:
        with self._lock:
            self._thread_entry(thread_id, context)
            for item_id in item_ids:
                if item_id not in self._items[thread_id]:
                    raise NotFoundError(f"No item with id {item_id!r}.", field="params.item_ids")
            for item_id in item_ids:
                self.feedback[(context.user_id, thread_id, item_id)] = (kind, utcnow())

    def export_feedback(self, user_id: str | None = None) -> list[dict[str, t.Any]]:
        with self._lock:
            votes = [
                {"user_id": u, "thread_id": th, "item_id": i, "kind": kind, "created_at": at}
                for (u, th, i), (kind, at) in self.feedback.items()
                if user_id is None or u == user_id
            ]
        return sorted(votes, key=lambda v: v["created_at"])

    def load_user_attachments(self, user_id: str) -> list[t.Any]:
        with self._lock:
            mine = [
                (self._attachment_created.get(att_id), att.model_copy(deep=True))
                for att_id, (user, att) in self._attachments.items()
                if str(user) == str(user_id)
            ]
        return [att for _, att in sorted(mine, key=lambda entry: entry[0] or utcnow())]

    def delete_user_data(self, user_id: str) -> Removed:
        with self._lock:
            removed = self._remove_threads(
                [i for i, e in self._threads.items() if e.user_id == user_id], detach=False
            )
            for key in [k for k in self.feedback if k[0] == user_id]:
                del self.feedback[key]
                removed.feedback += 1
            for att_id, (user, att) in list(self._attachments.items()):
                if user == user_id:
                    del self._attachments[att_id]
                    removed.attachments.append(att)
            return removed

    def purge_threads(self, inactive_since: datetime) -> Removed:
        with self._lock:
            # last activity: the thread's own updates and its newest item
            idle = [
                thread_id
                for thread_id, e in self._threads.items()
                if e.updated_at < inactive_since
                and all(key[0] < inactive_since for key, _ in self._items[thread_id].values())
            ]
            return self._remove_threads(idle, detach=False)


@dataclasses.dataclass
class _ThreadEntry:
    user_id: str
    key: tuple[datetime, int]
    thread: ThreadMetadata
    agent_id: str | None = None
    updated_at: datetime = dataclasses.field(default_factory=utcnow)

    def visible_to(self, context: t.Any) -> bool:
        """Owned by the context's user and, when the request names an agent, of that agent."""
        return self.user_id == context.user_id and sees_agent(context, self.agent_id)


def __getattr__(name: str) -> t.Any:
    if name == "AttachmentStore":  # renamed: one name per concept
        from .attachments import _deprecated

        return _deprecated(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ID_PREFIXES", "InMemoryStore", "Lease", "Store", "generate_id"]
