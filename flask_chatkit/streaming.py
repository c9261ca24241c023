"""Building blocks for ``respond`` and ``action`` hooks (no Flask here).

::

    @chatkit.respond
    def respond(thread, user_message, context):
        yield progress("Thinking...")
        yield from stream_text(thread, ["Hel", "lo"])

Formerly ``flask_chatkit.responses`` (a name that read as OpenAI's Responses
API); that module remains as a deprecated alias of this one.
"""

from __future__ import annotations

import typing as t

from .store import ID_PREFIXES
from .store import generate_id
from .types import Annotation
from .types import AssistantMessageContent
from .types import AssistantMessageContentPartAdded
from .types import AssistantMessageContentPartAnnotationAdded
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
_validate_updated = ThreadItemUpdatedEvent.__pydantic_validator__.validate_python


def new_item_id(item_type: str = "message") -> str:
    """A fresh item id with the SDK's prefix for *item_type* (``msg_...``)."""
    return generate_id(ID_PREFIXES.get(item_type, item_type))


class MessageStream:
    """One assistant message streamed piece by piece, for responders that do not
    have all their text up front (a model stream with citations, say)::

        message = MessageStream(thread.id, new_item_id())
        yield from message.start()
        yield message.delta("Hello")
        yield message.annotation(Annotation(source=URLSource(url=..., title=...)))
        yield from message.finish()      # message.done is the finished item

    If the client stops mid-way, the server saves the text streamed so far.
    """

    def __init__(self, thread_id: str, item_id: str) -> None:
        self.item = AssistantMessageItem(
            id=item_id, thread_id=thread_id, created_at=utcnow(), content=[]
        )
        self.text: list[str] = []
        self.annotations: list[Annotation] = []
        #: The finished item, once :meth:`finish` has run.
        self.done: AssistantMessageItem | None = None

    def start(self) -> t.Iterator[t.Any]:
        """``thread.item.added`` and the content part's ``added``."""
        yield ThreadItemAddedEvent(item=self.item)
        yield ThreadItemUpdatedEvent(
            item_id=self.item.id,
            update=AssistantMessageContentPartAdded(
                content_index=0, content=AssistantMessageContent()
            ),
        )

    def delta(self, text: str) -> ThreadItemUpdatedEvent | None:
        """The event for one more piece of text (``None`` for an empty one)."""
        if not text:
            return None
        self.text.append(text)
        # One validation per delta, of the whole event at once: half the cost of
        # building the update model and then the event around it.
        return _validate_updated(  # type: ignore[no-any-return]
            {
                "item_id": self.item.id,
                "update": {"type": _TEXT_DELTA, "content_index": 0, "delta": text},
            }
        )

    def annotation(self, annotation: Annotation) -> ThreadItemUpdatedEvent:
        """The event adding a citation to the text."""
        self.annotations.append(annotation)
        return ThreadItemUpdatedEvent(
            item_id=self.item.id,
            update=AssistantMessageContentPartAnnotationAdded(
                content_index=0,
                annotation_index=len(self.annotations) - 1,
                annotation=annotation,
            ),
        )

    def finish(self) -> t.Iterator[t.Any]:
        """The content part's ``done`` and ``thread.item.done`` with the whole text."""
        part = AssistantMessageContent(text="".join(self.text), annotations=self.annotations)
        yield ThreadItemUpdatedEvent(
            item_id=self.item.id,
            update=AssistantMessageContentPartDone(content_index=0, content=part),
        )
        self.done = self.item.model_copy(update={"content": [part]})
        yield ThreadItemDoneEvent(item=self.done)


def stream_text(
    thread: ThreadMetadata, chunks: t.Iterable[str] | str, *, item_id: str | None = None
) -> t.Iterator[t.Any]:
    """Stream one assistant message: ``added``, a text delta per chunk, ``done``.

    If the client stops mid-way, the server saves the text streamed so far.
    """
    if isinstance(chunks, str):
        chunks = [chunks]
    message = MessageStream(thread.id, item_id or new_item_id())
    yield from message.start()
    for chunk in chunks:
        event = message.delta(chunk)
        if event is not None:
            yield event
    yield from message.finish()


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


__all__ = [
    "MessageStream",
    "new_item_id",
    "progress",
    "stream_text",
    "user_text",
    "widget_item",
]
