"""How a running stream keeps track of itself (no Flask here).

The pipeline of :class:`~flask_chatkit.turn_engine.TurnEngine` coerces each
event a hook yields (:func:`coerce_event`), keeps the items it added but has not
finished up to date (:class:`Pending`, so that a stopped stream saves what the
user saw), notices when a hook changed the thread (:class:`ThreadSnapshot`), and
turns a failure into one ``error`` event (:func:`error_event`).
"""

from __future__ import annotations

import copy
import logging
import typing as t

from pydantic import BaseModel

from .errors import CustomStreamError
from .errors import ErrorCode
from .errors import RequestError
from .errors import StreamError
from .types import AssistantMessageContent
from .types import AssistantMessageItem
from .types import ErrorEvent
from .types import ThreadStreamEventAdapter
from .types import WorkflowItem

if t.TYPE_CHECKING:
    from .types import ThreadMetadata

logger = logging.getLogger("flask_chatkit")


#: The update types that replace a whole content part of an assistant message.
_PART_REPLACED = frozenset(
    {"assistant_message.content_part.added", "assistant_message.content_part.done"}
)
_TEXT_DELTA = "assistant_message.content_part.text_delta"


def _own_copy(item: t.Any) -> t.Any:
    """A copy of *item* that the hook's later changes to its own object do not reach.

    An assistant message (the usual case) gets new content parts and annotation
    lists, which is all that :class:`Pending` changes, at a fraction of the cost
    of a deep copy; other items are copied deeply.
    """
    if type(item) is AssistantMessageItem:
        return item.model_copy(
            update={
                "content": [
                    part.model_copy(update={"annotations": list(part.annotations)})
                    for part in item.content
                ]
            }
        )
    return item.model_copy(deep=True)


class Pending:
    """The items a stream added but has not finished, kept up to date so that a
    stop saves what the user saw; and what the turn's end is to save (a finished
    message :meth:`hold` keeps back, whether the thread changed).

    Text deltas are collected as chunks and joined only when the items are read:
    ``part.text += delta`` copies the whole text on every delta (quadratic in
    the answer's length).
    """

    def __init__(self) -> None:
        #: The events produced but not handed to the client, asked by :meth:`items`
        #: (set by the transport; see ``StreamResult.track_unsent``).
        self.unsent: t.Callable[[], t.Sequence[t.Any]] = tuple
        #: A finished item not saved yet: saved with the turn's end unless more follows.
        self.held: t.Any = None
        #: Whether the hook changed the thread after the last change was saved.
        self.thread_changed = False
        #: Set when the process stops the turn because it is going away: what it
        #: has is saved with a note that it was interrupted, not cancelled.
        self.interrupted = False
        #: Items a checkpoint saved while they were pending, by id, with what the
        #: last checkpoint held (later saves of them update the row).
        self.checkpointed: dict[str, t.Any] = {}
        self._items: dict[str, t.Any] = {}
        # item id -> content index -> text chunks not yet added to that part
        self._chunks: dict[str, dict[int, list[str]]] = {}

    def add(self, item: t.Any) -> None:
        self._chunks.pop(item.id, None)
        self._items[item.id] = _own_copy(item)

    def discard(self, item_id: str) -> None:
        if self.held is not None and self.held.id == item_id:
            self.held = None
        self._chunks.pop(item_id, None)
        self._items.pop(item_id, None)

    def hold(self, item: t.Any) -> None:
        """Keep the finished *item* (a cancel saves it as it is) until it is saved."""
        self._chunks.pop(item.id, None)
        self._items[item.id] = item
        self.held = item

    def finished(self) -> tuple[list[t.Any], bool]:
        """What the turn's end saves: the held item (if any), and whether the
        thread changed; the item is no longer pending."""
        items = [] if self.held is None else [self.held]
        for item in items:
            self.discard(item.id)
        return items, self.thread_changed

    def update(self, item_id: str, update: t.Any) -> None:
        kind = update.type
        if kind == _TEXT_DELTA:  # fast path: the part already takes chunks
            by_part = self._chunks.get(item_id)
            if by_part is not None:
                chunks = by_part.get(update.content_index)
                if chunks is not None:
                    chunks.append(update.delta)
                    return
        item = self._items.get(item_id)
        if item is None:
            return
        if kind == _TEXT_DELTA and isinstance(item, AssistantMessageItem):
            parts = item.content
            index = update.content_index
            while len(parts) <= index:
                parts.append(AssistantMessageContent())
            parts[index]  # an index out of range fails here, as an immediate += would
            if index < 0:
                index += len(parts)
            by_part = self._chunks.get(item_id)
            if by_part is None:
                by_part = self._chunks[item_id] = {}
            chunks = by_part.get(index)
            if chunks is None:
                by_part[index] = [update.delta]
            else:  # a negative index (the fast path only knows the normalized one)
                chunks.append(update.delta)
            return
        if kind in _PART_REPLACED and isinstance(item, AssistantMessageItem):
            by_part = self._chunks.get(item_id)
            if by_part:  # the new part replaces the text streamed into the old one
                index = update.content_index
                by_part.pop(index + len(item.content) if index < 0 else index, None)
        apply_update(item, update)

    def retract(self, events: t.Sequence[t.Any]) -> None:
        """Take back *events* (oldest first) that were applied but never reached the
        client: text deltas come off the end of their part, an added item goes.

        Only the newest events can be undelivered, so each delta is the last
        chunk of its part. Finished items (``thread.item.done``, stored as they
        come or held for the turn's end, see :meth:`hold`) are kept whole.
        """
        for event in reversed(events):
            kind = event.type
            if kind == "thread.item.updated" and event.update.type == _TEXT_DELTA:
                by_part = self._chunks.get(event.item_id)
                item = self._items.get(event.item_id)
                if not by_part or item is None:
                    continue
                index = event.update.content_index
                chunks = by_part.get(index + len(item.content) if index < 0 else index)
                if chunks and chunks[-1] == event.update.delta:
                    chunks.pop()
            elif kind == "thread.item.added":
                self.discard(event.item.id)

    def snapshot(self) -> list[t.Any]:
        """Copies of the pending items with all the text produced so far (a
        checkpoint of a running turn); the pending state itself is left as it is."""
        copies = []
        for item_id, item in self._items.items():
            copy = _own_copy(item)
            for index, chunks in self._chunks.get(item_id, {}).items():
                part = copy.content[index]
                copy.content[index] = part.model_copy(update={"text": part.text + "".join(chunks)})
            copies.append(copy)
        return copies

    def items(self) -> list[t.Any]:
        """The pending items as the client got them: with all text streamed so far,
        less what :attr:`unsent` says never reached it. Read when the stream is
        cancelled, so nothing can be produced after it."""
        self.retract(self.unsent())
        for item_id, by_part in self._chunks.items():
            parts = self._items[item_id].content
            for index, chunks in by_part.items():
                parts[index].text += "".join(chunks)
        self._chunks.clear()
        return list(self._items.values())


class ThreadSnapshot:
    """What the client sees of a thread, to notice when a hook changes it."""

    def __init__(self, thread: ThreadMetadata) -> None:
        self._take(thread)

    def _take(self, thread: ThreadMetadata) -> None:
        self.title = thread.title
        # the status's class and fields: what its == compares, without the cost of
        # pydantic's __eq__ on every event
        self.status_type = type(thread.status)
        self.status_fields = dict(thread.status.__dict__)
        self.domains = copy.copy(thread.allowed_image_domains)
        self.metadata = copy.deepcopy(thread.metadata)

    def changed(self, thread: ThreadMetadata) -> bool:
        """Whether *thread* differs from the snapshot (which then follows it)."""
        status = thread.status
        if (
            thread.title == self.title
            and type(status) is self.status_type
            and status.__dict__ == self.status_fields
            and thread.allowed_image_domains == self.domains
            and thread.metadata == self.metadata
        ):
            return False
        self._take(thread)
        return True


#: Event classes already seen to be models (``isinstance`` on a pydantic model class
#: goes through ``ABCMeta.__instancecheck__``: a set lookup is cheaper per event).
_MODEL_TYPES: set[type] = set()


def coerce_event(raw: t.Any) -> t.Any:
    cls = type(raw)
    if cls in _MODEL_TYPES:
        return raw
    if isinstance(raw, BaseModel):
        _MODEL_TYPES.add(cls)
        return raw
    return ThreadStreamEventAdapter.validate_python(raw)


def close_quietly(source: t.Any) -> None:
    close = getattr(source, "close", None)
    if close is not None:
        try:
            close()
        except Exception:
            logger.exception("A responder raised while being closed.")


def error_event(exc: Exception) -> ErrorEvent:
    if isinstance(exc, CustomStreamError):
        return ErrorEvent(code=ErrorCode.CUSTOM, message=exc.message, allow_retry=exc.allow_retry)
    if isinstance(exc, StreamError):
        return ErrorEvent(code=exc.code, allow_retry=exc.allow_retry)
    if isinstance(exc, RequestError):
        return ErrorEvent(code=ErrorCode.CUSTOM, message=exc.message, allow_retry=False)
    logger.exception("A ChatKit stream failed.")
    return ErrorEvent(code=ErrorCode.STREAM_ERROR, allow_retry=True)


def apply_update(item: t.Any, update: t.Any) -> None:
    """Apply an item update to a pending item, so that a cancel saves its latest state."""
    kind = update.type
    if isinstance(item, AssistantMessageItem) and kind.startswith("assistant_message."):
        parts = item.content
        index = update.content_index
        while len(parts) <= index:
            parts.append(AssistantMessageContent())
        if kind.endswith(".text_delta"):
            parts[index].text += update.delta
        elif kind.endswith(".annotation_added"):
            annotations = parts[index].annotations
            if update.annotation_index < len(annotations):
                annotations.insert(update.annotation_index, update.annotation)
            else:
                annotations.append(update.annotation)
        else:  # content_part.added / content_part.done
            parts[index] = update.content.model_copy(deep=True)
    elif isinstance(item, WorkflowItem) and kind.startswith("workflow.task."):
        tasks = item.workflow.tasks
        if kind == "workflow.task.added":
            tasks.append(update.task)
        elif update.task_index < len(tasks):
            tasks[update.task_index] = update.task


__all__ = [
    "Pending",
    "ThreadSnapshot",
    "apply_update",
    "close_quietly",
    "coerce_event",
    "error_event",
]
