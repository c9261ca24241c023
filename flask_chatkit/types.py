"""Pydantic models of the ChatKit wire protocol: threads, items, events, pages.

These mirror the shapes the official ``openai-chatkit`` SDK puts on the wire
(see ``PROTOCOL.md``). They import nothing from Flask. Requests live in
:mod:`flask_chatkit.requests`.
"""

from __future__ import annotations

import typing as t
from datetime import UTC
from datetime import datetime

from pydantic import AfterValidator
from pydantic import BaseModel
from pydantic import ConfigDict
from pydantic import Field
from pydantic import PlainSerializer
from pydantic import TypeAdapter

from .errors import ErrorCode


def _to_utc(value: datetime) -> datetime:
    # Input may carry no offset (the SDK's own output does not); read it as UTC.
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


#: A datetime that is always UTC and goes out as ISO-8601 with ``+00:00``.
UTCDateTime = t.Annotated[
    datetime,
    AfterValidator(_to_utc),
    PlainSerializer(lambda v: v.isoformat(), return_type=str, when_used="json"),
]


def utcnow() -> datetime:
    """The current time as an aware UTC datetime."""
    return datetime.now(UTC)


class WireModel(BaseModel):
    """Base of every wire model: unknown fields are ignored, as in the SDK."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)


# --- pages -------------------------------------------------------------------

T = t.TypeVar("T")


class Page(WireModel, t.Generic[T]):
    """One page of a cursor-paginated list."""

    data: list[T] = Field(default_factory=list)
    has_more: bool = False
    after: str | None = None


# --- widgets -----------------------------------------------------------------


def _strip_none(value: t.Any) -> t.Any:
    if isinstance(value, dict):
        return {k: _strip_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_strip_none(v) for v in value]
    return value


def _check_widget_root(value: dict[str, t.Any]) -> dict[str, t.Any]:
    if value.get("type") not in ("Card", "ListView", "Basic"):
        raise ValueError("a widget root must have type Card, ListView or Basic")
    return _strip_none(value)  # type: ignore[no-any-return]


#: A widget tree as camelCase JSON; null props are stripped on input.
WidgetRoot = t.Annotated[dict[str, t.Any], AfterValidator(_check_widget_root)]
WidgetComponent = t.Annotated[dict[str, t.Any], AfterValidator(_strip_none)]


# --- attachments ---------------------------------------------------------------


class AttachmentUploadDescriptor(WireModel):
    """Where and how the client sends the bytes of a two-phase upload."""

    url: str
    method: t.Literal["POST", "PUT"] = "POST"
    headers: dict[str, str] = Field(default_factory=dict)


class _AttachmentBase(WireModel):
    id: str
    name: str
    mime_type: str
    upload_descriptor: AttachmentUploadDescriptor | None = None
    thread_id: str | None = None
    #: Integration-only data; stored, never serialised to the client.
    metadata: dict[str, t.Any] | None = Field(default=None, exclude=True)


class FileAttachment(_AttachmentBase):
    """An attachment that is not shown as an image."""

    type: t.Literal["file"] = "file"


class ImageAttachment(_AttachmentBase):
    """An image attachment; ``preview_url`` is required."""

    type: t.Literal["image"] = "image"
    preview_url: str


Attachment = t.Annotated[FileAttachment | ImageAttachment, Field(discriminator="type")]


# --- thread ------------------------------------------------------------------


class ActiveStatus(WireModel):
    """The default thread status: the composer takes new messages."""

    type: t.Literal["active"] = "active"


class LockedStatus(WireModel):
    """A thread's status while its composer shows but is disabled, with the reason shown."""

    type: t.Literal["locked"] = "locked"
    reason: str | None = None


class ClosedStatus(WireModel):
    """A thread's status once closed: a banner with the reason replaces the composer."""

    type: t.Literal["closed"] = "closed"
    reason: str | None = None


ThreadStatus = t.Annotated[ActiveStatus | LockedStatus | ClosedStatus, Field(discriminator="type")]


class ThreadMetadata(WireModel):
    """A thread without its items; ``metadata`` is private to the server."""

    id: str
    title: str | None = None
    created_at: UTCDateTime = Field(default_factory=utcnow)
    status: ThreadStatus = Field(default_factory=ActiveStatus)
    allowed_image_domains: list[str] | None = None
    metadata: dict[str, t.Any] = Field(default_factory=dict)


# --- content, sources, tasks ---------------------------------------------------


class UserMessageTextContent(WireModel):
    """Text the user typed, as one ``input_text`` part of a user message."""

    type: t.Literal["input_text"] = "input_text"
    text: str


class UserMessageTagContent(WireModel):
    """A tag the user put in a message: its label ``text`` plus the app's ``data``."""

    type: t.Literal["input_tag"] = "input_tag"
    id: str
    text: str
    data: dict[str, t.Any]
    group: str | None = None
    interactive: bool = False


UserMessageContent = t.Annotated[
    UserMessageTextContent | UserMessageTagContent, Field(discriminator="type")
]


class ToolChoice(WireModel):
    """The tool the user picked in the composer, by ``id``."""

    id: str


class InferenceOptions(WireModel):
    """The user's composer choices for a message (tool, model); ``{}`` when neither is set."""

    tool_choice: ToolChoice | None = None
    model: str | None = None


class _SourceBase(WireModel):
    title: str
    description: str | None = None
    timestamp: str | None = None
    group: str | None = None


class URLSource(_SourceBase):
    """A web page cited by an annotation or found by a search task."""

    type: t.Literal["url"] = "url"
    url: str
    attribution: str | None = None


class FileSource(_SourceBase):
    """A file cited by an annotation or used by a file task, by ``filename``."""

    type: t.Literal["file"] = "file"
    filename: str


class EntitySource(_SourceBase):
    """An app-defined entity cited by an annotation, with its own icon, labels and ``data``."""

    type: t.Literal["entity"] = "entity"
    id: str
    icon: str | None = None
    label: str | None = None
    inline_label: str | None = None
    interactive: bool = False
    data: dict[str, t.Any] = Field(default_factory=dict)


Source = t.Annotated[URLSource | FileSource | EntitySource, Field(discriminator="type")]


class Annotation(WireModel):
    """A citation in an assistant message: its source and, optionally, its place in the text."""

    type: t.Literal["annotation"] = "annotation"
    source: Source
    index: int | None = None


class AssistantMessageContent(WireModel):
    """One ``output_text`` part of an assistant message, with its annotations."""

    type: t.Literal["output_text"] = "output_text"
    text: str = ""
    annotations: list[Annotation] = Field(default_factory=list)


class _TaskBase(WireModel):
    status_indicator: t.Literal["none", "loading", "complete"] = "none"


class CustomTask(_TaskBase):
    """A task with an app-chosen title, icon and text."""

    type: t.Literal["custom"] = "custom"
    title: str | None = None
    icon: str | None = None
    content: str | None = None


class SearchTask(_TaskBase):
    """A web search shown as a task: the queries run and the URL sources found."""

    type: t.Literal["web_search"] = "web_search"
    title: str | None = None
    title_query: str | None = None
    queries: list[str] = Field(default_factory=list)
    sources: list[URLSource] = Field(default_factory=list)


class ThoughtTask(_TaskBase):
    """A reasoning step shown as a task; ``content`` is the thought's text."""

    type: t.Literal["thought"] = "thought"
    title: str | None = None
    content: str


class FileTask(_TaskBase):
    """A task over files, listing the file sources it used."""

    type: t.Literal["file"] = "file"
    title: str | None = None
    sources: list[FileSource] = Field(default_factory=list)


class ImageTask(_TaskBase):
    """A task for image content, shown by its title and status indicator."""

    type: t.Literal["image"] = "image"
    title: str | None = None


Task = t.Annotated[
    CustomTask | SearchTask | ThoughtTask | FileTask | ImageTask,
    Field(discriminator="type"),
]


class CustomSummary(WireModel):
    """A workflow summary with an app-chosen title and icon."""

    title: str
    icon: str | None = None


class DurationSummary(WireModel):
    """A workflow summary giving how long it took, in seconds."""

    duration: int


class Workflow(WireModel):
    """Tasks shown together (custom or reasoning), with an optional summary."""

    type: t.Literal["custom", "reasoning"] = "custom"
    tasks: list[Task] = Field(default_factory=list)
    summary: CustomSummary | DurationSummary | None = None
    expanded: bool = False


class GeneratedImage(WireModel):
    """An image made by the model, by ``id`` and ``url``."""

    id: str
    url: str


class StructuredInputAnswer(WireModel):
    """The answer to one structured-input question: the values given, or skipped."""

    values: list[str] = Field(default_factory=list)
    skipped: bool = False


class StructuredInputOption(WireModel):
    """One choice offered by a multiple-choice question."""

    value: str


class StructuredInputMultipleChoice(WireModel):
    """A question answered by picking one option, or several when ``multiple``."""

    type: t.Literal["multiple_choice"] = "multiple_choice"
    id: str
    question: str
    options: list[StructuredInputOption] = Field(default_factory=list)
    multiple: bool = False
    answer: StructuredInputAnswer | None = None


class StructuredInputFreeform(WireModel):
    """A question the user answers in free text."""

    type: t.Literal["freeform"] = "freeform"
    id: str
    question: str
    description: str | None = None
    answer: StructuredInputAnswer | None = None


StructuredInput = t.Annotated[
    StructuredInputMultipleChoice | StructuredInputFreeform,
    Field(discriminator="type"),
]


# --- items ---------------------------------------------------------------------


class _ItemBase(WireModel):
    id: str
    thread_id: str
    created_at: UTCDateTime = Field(default_factory=utcnow)


class UserMessageItem(_ItemBase):
    """A message from the user, with its attachments in full and its composer options."""

    type: t.Literal["user_message"] = "user_message"
    content: list[UserMessageContent]
    attachments: list[Attachment] = Field(default_factory=list)
    quoted_text: str | None = None
    inference_options: InferenceOptions = Field(default_factory=InferenceOptions)


class AssistantMessageItem(_ItemBase):
    """A message from the assistant, as ``output_text`` parts."""

    type: t.Literal["assistant_message"] = "assistant_message"
    content: list[AssistantMessageContent] = Field(default_factory=list)


class ClientToolCallItem(_ItemBase):
    """A tool call for the browser to run; ``pending`` until its output comes back."""

    type: t.Literal["client_tool_call"] = "client_tool_call"
    status: t.Literal["pending", "completed"] = "pending"
    call_id: str
    name: str
    arguments: dict[str, t.Any] = Field(default_factory=dict)
    output: t.Any | None = None


class WidgetItem(_ItemBase):
    """A widget shown in the thread; ``copy_text`` is its plain-text form."""

    type: t.Literal["widget"] = "widget"
    widget: WidgetRoot
    copy_text: str | None = None


class GeneratedImageItem(_ItemBase):
    """An image the model is making; ``image`` stays empty until one is ready."""

    type: t.Literal["generated_image"] = "generated_image"
    image: GeneratedImage | None = None


class StructuredInputItem(_ItemBase):
    """Questions put to the user as a form, ``pending`` until answered or skipped."""

    type: t.Literal["structured_input"] = "structured_input"
    status: t.Literal["pending", "answered", "skipped"] = "pending"
    inputs: list[StructuredInput] = Field(default_factory=list)


class WorkflowItem(_ItemBase):
    """A workflow shown as one item of the thread."""

    type: t.Literal["workflow"] = "workflow"
    workflow: Workflow


class TaskItem(_ItemBase):
    """A single task shown as an item of its own, outside any workflow."""

    type: t.Literal["task"] = "task"
    task: Task


class HiddenContextItem(_ItemBase):
    """Context for the model; stored, never sent to the client."""

    type: t.Literal["hidden_context_item"] = "hidden_context_item"
    content: t.Any = None


class SDKHiddenContextItem(_ItemBase):
    """Server-made context (such as "the user cancelled"); never sent to the client."""

    type: t.Literal["sdk_hidden_context"] = "sdk_hidden_context"
    content: str


class EndOfTurnItem(_ItemBase):
    """A marker that the assistant's turn ended: a hint for the UI, with no content."""

    type: t.Literal["end_of_turn"] = "end_of_turn"


ThreadItem = t.Annotated[
    UserMessageItem
    | AssistantMessageItem
    | ClientToolCallItem
    | WidgetItem
    | GeneratedImageItem
    | StructuredInputItem
    | WorkflowItem
    | TaskItem
    | HiddenContextItem
    | SDKHiddenContextItem
    | EndOfTurnItem,
    Field(discriminator="type"),
]

#: Item types stored for the model but never shown to the client.
HIDDEN_ITEM_TYPES = frozenset({"hidden_context_item", "sdk_hidden_context"})


class Thread(ThreadMetadata):
    """A thread as the client sees it, with one page of items."""

    items: Page[ThreadItem] = Field(default_factory=Page)


# --- item updates --------------------------------------------------------------


class AssistantMessageContentPartAdded(WireModel):
    """Update: a new part starts at ``content_index`` of an assistant message."""

    type: t.Literal["assistant_message.content_part.added"] = "assistant_message.content_part.added"
    content_index: int
    content: AssistantMessageContent


class AssistantMessageContentPartTextDelta(WireModel):
    """Update: text appended to the part at ``content_index``."""

    type: t.Literal["assistant_message.content_part.text_delta"] = (
        "assistant_message.content_part.text_delta"
    )
    content_index: int
    delta: str


class AssistantMessageContentPartAnnotationAdded(WireModel):
    """Update: an annotation inserted at ``annotation_index`` in a part."""

    type: t.Literal["assistant_message.content_part.annotation_added"] = (
        "assistant_message.content_part.annotation_added"
    )
    content_index: int
    annotation_index: int
    annotation: Annotation


class AssistantMessageContentPartDone(WireModel):
    """Update: the part at ``content_index`` in its final form."""

    type: t.Literal["assistant_message.content_part.done"] = "assistant_message.content_part.done"
    content_index: int
    content: AssistantMessageContent


class WidgetStreamingTextValueDelta(WireModel):
    """Update: text appended to the value of a widget's Text or Markdown component."""

    type: t.Literal["widget.streaming_text.value_delta"] = "widget.streaming_text.value_delta"
    component_id: str
    delta: str
    done: bool


class WidgetComponentUpdated(WireModel):
    """Update: one widget component replaced, by ``component_id``."""

    type: t.Literal["widget.component.updated"] = "widget.component.updated"
    component_id: str
    component: WidgetComponent


class WidgetRootUpdated(WireModel):
    """Update: the whole widget replaced by a new root."""

    type: t.Literal["widget.root.updated"] = "widget.root.updated"
    widget: WidgetRoot


class WorkflowTaskAdded(WireModel):
    """Update: a task added to a workflow at ``task_index``."""

    type: t.Literal["workflow.task.added"] = "workflow.task.added"
    task_index: int
    task: Task


class WorkflowTaskUpdated(WireModel):
    """Update: the workflow task at ``task_index`` replaced."""

    type: t.Literal["workflow.task.updated"] = "workflow.task.updated"
    task_index: int
    task: Task


class GeneratedImageUpdated(WireModel):
    """Update: a newer version of a generated image, with optional ``progress``."""

    type: t.Literal["generated_image.updated"] = "generated_image.updated"
    image: GeneratedImage
    progress: float | None = None


ThreadItemUpdate = t.Annotated[
    AssistantMessageContentPartAdded
    | AssistantMessageContentPartTextDelta
    | AssistantMessageContentPartAnnotationAdded
    | AssistantMessageContentPartDone
    | WidgetStreamingTextValueDelta
    | WidgetComponentUpdated
    | WidgetRootUpdated
    | WorkflowTaskAdded
    | WorkflowTaskUpdated
    | GeneratedImageUpdated,
    Field(discriminator="type"),
]


# --- stream events ---------------------------------------------------------------


class ThreadCreatedEvent(WireModel):
    """Event: a new thread, sent first by ``threads.create``, with an empty items page."""

    type: t.Literal["thread.created"] = "thread.created"
    thread: Thread


class ThreadUpdatedEvent(WireModel):
    """Event: a thread's title, status or metadata changed; its items page is empty."""

    type: t.Literal["thread.updated"] = "thread.updated"
    thread: Thread


class ThreadItemAddedEvent(WireModel):
    """Event: an item starts streaming; it is stored only once done."""

    type: t.Literal["thread.item.added"] = "thread.item.added"
    item: ThreadItem


class ThreadItemUpdatedEvent(WireModel):
    """Event: an incremental update to the item ``item_id``, such as a text delta."""

    type: t.Literal["thread.item.updated"] = "thread.item.updated"
    item_id: str
    update: ThreadItemUpdate


class ThreadItemDoneEvent(WireModel):
    """Event: an item in its final form; the server stores it on this event."""

    type: t.Literal["thread.item.done"] = "thread.item.done"
    item: ThreadItem


class ThreadItemRemovedEvent(WireModel):
    """Event: the item ``item_id`` was deleted from the thread."""

    type: t.Literal["thread.item.removed"] = "thread.item.removed"
    item_id: str


class ThreadItemReplacedEvent(WireModel):
    """Event: an item replaced whole by a new version, saved under its id."""

    type: t.Literal["thread.item.replaced"] = "thread.item.replaced"
    item: ThreadItem


class StreamOptions(WireModel):
    """Settings for one stream; ``allow_cancel`` shows the client's Stop button."""

    allow_cancel: bool = True


class StreamOptionsEvent(WireModel):
    """Event: the stream's options, sent before the first event from a hook."""

    type: t.Literal["stream_options"] = "stream_options"
    stream_options: StreamOptions = Field(default_factory=StreamOptions)


class ProgressUpdateEvent(WireModel):
    """A transient status line; never stored."""

    type: t.Literal["progress_update"] = "progress_update"
    text: str
    icon: str | None = None


class ClientEffectEvent(WireModel):
    """A fire-and-forget effect for the host page; never stored."""

    type: t.Literal["client_effect"] = "client_effect"
    name: str
    data: dict[str, t.Any] = Field(default_factory=dict)


class ErrorEvent(WireModel):
    """Event: a failure in the stream, with its code, an optional message and retry hint."""

    type: t.Literal["error"] = "error"
    code: str = ErrorCode.STREAM_ERROR
    message: str | None = None
    allow_retry: bool = False


class NoticeEvent(WireModel):
    """Event: a markdown notice for the user at level info, warning or danger; never stored."""

    type: t.Literal["notice"] = "notice"
    level: t.Literal["info", "warning", "danger"] = "info"
    message: str
    title: str | None = None


ThreadStreamEvent = t.Annotated[
    ThreadCreatedEvent
    | ThreadUpdatedEvent
    | ThreadItemAddedEvent
    | ThreadItemUpdatedEvent
    | ThreadItemDoneEvent
    | ThreadItemRemovedEvent
    | ThreadItemReplacedEvent
    | StreamOptionsEvent
    | ProgressUpdateEvent
    | ClientEffectEvent
    | ErrorEvent
    | NoticeEvent,
    Field(discriminator="type"),
]


# --- JSON-only responses ---------------------------------------------------------


class SyncCustomActionResponse(WireModel):
    """The JSON answer to ``threads.sync_custom_action``: the updated item, if any."""

    updated_item: ThreadItem | None = None


class TranscriptionResult(WireModel):
    """The JSON answer to ``input.transcribe``: the dictated text."""

    text: str


class AudioInput(WireModel):
    """Audio handed to the transcription hook."""

    data: bytes
    mime_type: str

    @property
    def media_type(self) -> str:
        """The MIME type without parameters (``audio/webm;codecs=opus`` -> ``audio/webm``)."""
        return self.mime_type.split(";", 1)[0].strip()


class Action(WireModel):
    """A widget or custom action sent by the client."""

    type: str
    payload: t.Any = None


ThreadItemAdapter: TypeAdapter[t.Any] = TypeAdapter(ThreadItem)
ThreadStreamEventAdapter: TypeAdapter[t.Any] = TypeAdapter(ThreadStreamEvent)
AttachmentAdapter: TypeAdapter[t.Any] = TypeAdapter(Attachment)


def dump_json(model: BaseModel) -> bytes:
    """Serialise a wire model as compact JSON with null fields omitted."""
    return model.__pydantic_serializer__.to_json(model, exclude_none=True)


def client_thread(thread: ThreadMetadata, items: Page[t.Any] | None = None) -> Thread:
    """The client-facing copy of *thread*: private metadata blanked, one page of items."""
    return Thread(
        id=thread.id,
        title=thread.title,
        created_at=thread.created_at,
        status=thread.status,
        allowed_image_domains=thread.allowed_image_domains,
        metadata={},
        items=items if items is not None else Page(),
    )
