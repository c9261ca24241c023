"""The storage interface of the protocol core, id generation, and an in-memory store.

Every store method takes the request context and scopes its work to
``context.user_id``: another user's records behave exactly like missing ones
(:class:`~flask_chatkit.errors.NotFoundError`), and lists never include them.
This module imports nothing from Flask.
"""

from __future__ import annotations

import abc
import itertools
import secrets
import threading
import typing as t
from datetime import datetime

from .errors import NotFoundError
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


class Store(abc.ABC, t.Generic[TContext]):
    """Persistence of threads, items, attachments and feedback.

    Subclasses implement the abstract methods; ``context`` is the object the
    blueprint built for the request (it has a ``user_id``).
    """

    def generate_thread_id(self, context: TContext) -> str:
        """A new thread id (``thr_...``)."""
        return generate_id(ID_PREFIXES["thread"])

    def generate_item_id(
        self, item_type: str, thread: ThreadMetadata, context: TContext
    ) -> str:
        """A new item id; *item_type* is one of the keys of :data:`ID_PREFIXES`."""
        return generate_id(ID_PREFIXES.get(item_type, item_type))

    def generate_attachment_id(self, mime_type: str, context: TContext) -> str:
        """A new attachment id (``atc_...``)."""
        return generate_id(ID_PREFIXES["attachment"])

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

    # feedback

    @abc.abstractmethod
    def save_feedback(
        self, thread_id: str, item_ids: list[str], kind: str, context: TContext
    ) -> None:
        """Record (or replace) the user's vote on each item."""


def _ordered_page(
    records: list[t.Any], key: t.Callable[[t.Any], str], after: str | None, limit: int,
    order: Order, what: str,
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
        # id -> (user_id, sort key, model)
        self._threads: dict[str, tuple[str, tuple[datetime, int], ThreadMetadata]] = {}
        self._items: dict[str, dict[str, tuple[tuple[datetime, int], t.Any]]] = {}
        self._attachments: dict[str, tuple[str, t.Any]] = {}
        self.feedback: dict[tuple[str, str, str], tuple[str, datetime]] = {}

    def _thread_entry(self, thread_id: str, context: t.Any) -> tuple[str, t.Any, ThreadMetadata]:
        entry = self._threads.get(thread_id)
        if entry is None or entry[0] != context.user_id:
            raise NotFoundError(f"No thread with id {thread_id!r}.", field="params.thread_id")
        return entry

    def load_thread(self, thread_id: str, context: t.Any) -> ThreadMetadata:
        with self._lock:
            return self._thread_entry(thread_id, context)[2].model_copy(deep=True)

    def save_thread(self, thread: ThreadMetadata, context: t.Any) -> None:
        with self._lock:
            entry = self._threads.get(thread.id)
            if entry is not None and entry[0] != context.user_id:
                raise NotFoundError(f"No thread with id {thread.id!r}.")
            key = entry[1] if entry else (thread.created_at, next(self._seq))
            self._threads[thread.id] = (context.user_id, key, thread.model_copy(deep=True))
            self._items.setdefault(thread.id, {})

    def load_threads(
        self, limit: int, after: str | None, order: Order, context: t.Any
    ) -> Page[ThreadMetadata]:
        with self._lock:
            mine = sorted(
                (e for e in self._threads.values() if e[0] == context.user_id),
                key=lambda e: e[1],
            )
            chunk, more = _ordered_page(mine, lambda e: e[2].id, after, limit, order, "thread")
            data = [e[2].model_copy(deep=True) for e in chunk]
        return Page(data=data, has_more=more, after=data[-1].id if more else None)

    def delete_thread(self, thread_id: str, context: t.Any) -> None:
        with self._lock:
            self._thread_entry(thread_id, context)
            del self._threads[thread_id]
            self._items.pop(thread_id, None)
            for key in [k for k in self.feedback if k[1] == thread_id]:
                del self.feedback[key]
            for att_id, (user, att) in list(self._attachments.items()):
                if user == context.user_id and att.thread_id == thread_id:
                    self._attachments[att_id] = (user, att.model_copy(update={"thread_id": None}))

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

    def save_feedback(self, thread_id: str, item_ids: list[str], kind: str, context: t.Any) -> None:
        with self._lock:
            self._thread_entry(thread_id, context)
            for item_id in item_ids:
                if item_id not in self._items[thread_id]:
                    raise NotFoundError(f"No item with id {item_id!r}.", field="params.item_ids")
            for item_id in item_ids:
                self.feedback[(context.user_id, thread_id, item_id)] = (kind, utcnow())


class AttachmentStore(abc.ABC, t.Generic[TContext]):
    """Where attachment *bytes* live; the :class:`Store` keeps their metadata."""

    def create_attachment(self, params: t.Any, context: TContext) -> Attachment:
        """Start a two-phase upload: return an attachment with an ``upload_descriptor``.

        :param params: the ``attachments.create`` params (``name``, ``size``, ``mime_type``).
        """
        from .errors import NotImplementedHookError

        raise NotImplementedHookError("This attachment store does not support two-phase uploads.")

    @abc.abstractmethod
    def delete_attachment(self, attachment: Attachment, context: TContext) -> None:
        """Delete the attachment's bytes (no error if there are none)."""


__all__ = ["ID_PREFIXES", "AttachmentStore", "InMemoryStore", "Store", "generate_id"]
