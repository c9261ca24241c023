"""Building blocks for ``respond`` and ``action`` hooks (no Flask here).

::

    @chatkit.respond
    def respond(thread, user_message, context):
        yield progress("Thinking...")
        yield from stream_text(thread, ["Hel", "lo"])
"""

from __future__ import annotations

import typing as t

from .store import ID_PREFIXES
from .store import generate_id
from .types import AssistantMessageContent
from .types import AssistantMessageContentPartAdded
from .types import AssistantMessageContentPartDone
from .types import AssistantMessageContentPartTextDelta
from .types import AssistantMessageItem
from .types import ProgressUpdateEvent
from .types import ThreadItemAddedEvent
from .types import ThreadItemDoneEvent
from .types import ThreadItemUpdatedEvent
from .types import ThreadMetadata
from .types import WidgetItem
from .types import utcnow


_TEXT_DELTA = AssistantMessageContentPartTextDelta.model_fields["type"].default


def new_item_id(item_type: str = "message") -> str:
    """A fresh item id with the SDK's prefix for *item_type* (``msg_...``)."""
    return generate_id(ID_PREFIXES.get(item_type, item_type))


def stream_text(
    thread: ThreadMetadata, chunks: t.Iterable[str] | str, *, item_id: str | None = None
) -> t.Iterator[t.Any]:
    """Stream one assistant message: ``added``, a text delta per chunk, ``done``.

    If the client stops mid-way, the server saves the text streamed so far.
    """
    if isinstance(chunks, str):
        chunks = [chunks]
    item = AssistantMessageItem(
        id=item_id or new_item_id(), thread_id=thread.id, created_at=utcnow(), content=[]
    )
    yield ThreadItemAddedEvent(item=item)
    yield ThreadItemUpdatedEvent(
        item_id=item.id,
        update=AssistantMessageContentPartAdded(content_index=0, content=AssistantMessageContent()),
    )
    text = []
    # One validation per delta, of the whole event at once: half the cost of
    # building the update model and then the event around it.
    validate = ThreadItemUpdatedEvent.__pydantic_validator__.validate_python
    for chunk in chunks:
        if not chunk:
            continue
        text.append(chunk)
        yield validate({"item_id": item.id, "update": {"type": _TEXT_DELTA, "content_index": 0,
                                                       "delta": chunk}})
    part = AssistantMessageContent(text="".join(text))
    yield ThreadItemUpdatedEvent(
        item_id=item.id, update=AssistantMessageContentPartDone(content_index=0, content=part)
    )
    yield ThreadItemDoneEvent(item=item.model_copy(update={"content": [part]}))


def progress(text: str, icon: str | None = None) -> ProgressUpdateEvent:
    """A transient progress line (never stored)."""
    return ProgressUpdateEvent(text=text, icon=icon)


def widget_item(
    thread: ThreadMetadata,
    widget: dict[str, t.Any],
    *,
    copy_text: str | None = None,
    item_id: str | None = None,
) -> WidgetItem:
    """A widget item for *thread*; yield ``ThreadItemDoneEvent(item=...)`` to show it."""
    return WidgetItem(
        id=item_id or new_item_id(),
        thread_id=thread.id,
        created_at=utcnow(),
        widget=widget,
        copy_text=copy_text,
    )


def user_text(item: t.Any) -> str:
    """The plain text of a user message (tags contribute their text)."""
    return "".join(part.text for part in getattr(item, "content", ()))


__all__ = ["new_item_id", "progress", "stream_text", "user_text", "widget_item"]
