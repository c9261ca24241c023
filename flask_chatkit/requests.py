"""Pydantic models of the 16 ChatKit request types (PROTOCOL.md §2).

A request is ``{"type": ..., "params": {...}, "metadata": {...}?}``; ``params`` is
required even when all its fields are optional, and unknown fields are ignored
so that newer clients keep working.
"""

from __future__ import annotations

import typing as t

from pydantic import AfterValidator
from pydantic import Field
from pydantic import TypeAdapter

from .limits import MAX_FEEDBACK_ITEMS
from .limits import MAX_TEXT_LENGTH
from .types import Action
from .types import InferenceOptions
from .types import StructuredInputAnswer
from .types import UserMessageContent
from .types import WireModel


def _no_nul(value: str) -> str:
    # PostgreSQL text cannot hold NUL: refuse it up front (400) on every store
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


Id = t.Annotated[str, Field(min_length=1, max_length=255), AfterValidator(_no_nul)]


def _text_within_limit(content: list[t.Any]) -> list[t.Any]:
    if sum(len(part.text) for part in content) > MAX_TEXT_LENGTH:
        raise ValueError(f"the message text must be at most {MAX_TEXT_LENGTH} characters")
    return content


class UserMessageInput(WireModel):
    """A message as the composer sends it: parts, attachment ids, quoted text, options."""

    content: t.Annotated[list[UserMessageContent], AfterValidator(_text_within_limit)]
    attachments: list[Id]
    quoted_text: str | None = Field(default=None, max_length=MAX_TEXT_LENGTH)
    inference_options: InferenceOptions


class ThreadCreateParams(WireModel):
    """``threads.create`` params: the first user message."""

    input: UserMessageInput


class ThreadAddUserMessageParams(WireModel):
    """``threads.add_user_message`` params: the thread and the new message."""

    thread_id: Id
    input: UserMessageInput


class ThreadAddClientToolOutputParams(WireModel):
    """``threads.add_client_tool_output`` params: the thread and the tool's result."""

    thread_id: Id
    result: t.Any


class StructuredInputSubmission(WireModel):
    """The user's answers to a form, keyed by question id, or a skip."""

    status: t.Literal["answered", "skipped"] = "answered"
    answers: dict[str, StructuredInputAnswer] = Field(default_factory=dict)


class ThreadAddStructuredInputParams(WireModel):
    """``threads.add_structured_input`` params: thread, form item, answers."""

    thread_id: Id
    item_id: Id
    input: StructuredInputSubmission


class ThreadRetryAfterItemParams(WireModel):
    """``threads.retry_after_item`` params: the thread and the user message to redo."""

    thread_id: Id
    item_id: Id


class ThreadCustomActionParams(WireModel):
    """Params of both custom-action requests: thread, sending item (if any), action."""

    thread_id: Id
    item_id: Id | None = None
    action: Action


class ThreadGetByIdParams(WireModel):
    """``threads.get_by_id`` params: the thread to load."""

    thread_id: Id


class ListParams(WireModel):
    """Paging params of ``threads.list``: page size, order (newest first) and cursor."""

    limit: int | None = Field(default=None, ge=0)
    order: t.Literal["asc", "desc"] = "desc"
    after: Id | None = None


class ItemsListParams(ListParams):
    """``items.list`` params: the thread, plus the paging of :class:`ListParams`."""

    thread_id: Id


class ThreadUpdateParams(WireModel):
    """``threads.update`` params: the thread and its new title."""

    thread_id: Id
    title: t.Annotated[str, Field(max_length=1000), AfterValidator(_no_nul)]


class ThreadDeleteParams(WireModel):
    """``threads.delete`` params: the thread to delete."""

    thread_id: Id


class ItemFeedbackParams(WireModel):
    """``items.feedback`` params: the thread, the items voted on and the vote."""

    thread_id: Id
    item_ids: list[Id] = Field(min_length=1, max_length=MAX_FEEDBACK_ITEMS)
    kind: t.Literal["positive", "negative"]


class AttachmentCreateParams(WireModel):
    """``attachments.create`` params: the file's name, size in bytes and MIME type."""

    name: str = Field(min_length=1, max_length=1000)
    size: int = Field(ge=0)
    mime_type: str = Field(min_length=1, max_length=255)


class AttachmentDeleteParams(WireModel):
    """``attachments.delete`` params: the attachment to delete."""

    attachment_id: Id


class InputTranscribeParams(WireModel):
    """``input.transcribe`` params: base64 audio and its MIME type."""

    audio_base64: str
    mime_type: str = Field(min_length=1, max_length=255)


class _Req(WireModel):
    """What every request has besides its ``type`` and ``params``."""

    #: Answered with Server-Sent Events (else JSON).
    streaming: t.ClassVar[bool] = False
    metadata: dict[str, t.Any] = Field(default_factory=dict)


class ThreadsCreateReq(_Req):
    """``threads.create``: Start a thread with the user's first message; streamed."""

    streaming: t.ClassVar[bool] = True
    type: t.Literal["threads.create"]
    params: ThreadCreateParams


class ThreadsAddUserMessageReq(_Req):
    """``threads.add_user_message``: Add a user message to a thread and answer it; streamed."""

    streaming: t.ClassVar[bool] = True
    type: t.Literal["threads.add_user_message"]
    params: ThreadAddUserMessageParams


class ThreadsAddClientToolOutputReq(_Req):
    """``threads.add_client_tool_output``: Hand back a client tool's output and go on answering; streamed."""

    streaming: t.ClassVar[bool] = True
    type: t.Literal["threads.add_client_tool_output"]
    params: ThreadAddClientToolOutputParams


class ThreadsAddStructuredInputReq(_Req):
    """``threads.add_structured_input``: Answer (or skip) a structured input form and go on; streamed."""

    streaming: t.ClassVar[bool] = True
    type: t.Literal["threads.add_structured_input"]
    params: ThreadAddStructuredInputParams


class ThreadsRetryAfterItemReq(_Req):
    """``threads.retry_after_item``: Drop what followed a user message and answer it again; streamed."""

    streaming: t.ClassVar[bool] = True
    type: t.Literal["threads.retry_after_item"]
    params: ThreadRetryAfterItemParams


class ThreadsCustomActionReq(_Req):
    """``threads.custom_action``: Run a widget action; streamed."""

    streaming: t.ClassVar[bool] = True
    type: t.Literal["threads.custom_action"]
    params: ThreadCustomActionParams


class ThreadsSyncCustomActionReq(_Req):
    """``threads.sync_custom_action``: Run a widget action that answers at once (``streaming: false``); JSON."""

    type: t.Literal["threads.sync_custom_action"]
    params: ThreadCustomActionParams


class ThreadsGetByIdReq(_Req):
    """``threads.get_by_id``: A thread with its first page of items; JSON."""

    type: t.Literal["threads.get_by_id"]
    params: ThreadGetByIdParams


class ThreadsListReq(_Req):
    """``threads.list``: A page of the user's threads; JSON."""

    type: t.Literal["threads.list"]
    params: ListParams


class ThreadsUpdateReq(_Req):
    """``threads.update``: Rename a thread; JSON."""

    type: t.Literal["threads.update"]
    params: ThreadUpdateParams


class ThreadsDeleteReq(_Req):
    """``threads.delete``: Delete a thread with its items; JSON."""

    type: t.Literal["threads.delete"]
    params: ThreadDeleteParams


class ItemsListReq(_Req):
    """``items.list``: A page of a thread's items; JSON."""

    type: t.Literal["items.list"]
    params: ItemsListParams


class ItemsFeedbackReq(_Req):
    """``items.feedback``: A vote on items; JSON."""

    type: t.Literal["items.feedback"]
    params: ItemFeedbackParams


class AttachmentsCreateReq(_Req):
    """``attachments.create``: Start a two-phase upload; JSON."""

    type: t.Literal["attachments.create"]
    params: AttachmentCreateParams


class AttachmentsDeleteReq(_Req):
    """``attachments.delete``: Delete an attachment; JSON."""

    type: t.Literal["attachments.delete"]
    params: AttachmentDeleteParams


class InputTranscribeReq(_Req):
    """``input.transcribe``: Dictation: audio to text; JSON."""

    type: t.Literal["input.transcribe"]
    params: InputTranscribeParams


REQUEST_CLASSES: tuple[type[_Req], ...] = (
    ThreadsCreateReq,
    ThreadsAddUserMessageReq,
    ThreadsAddClientToolOutputReq,
    ThreadsAddStructuredInputReq,
    ThreadsRetryAfterItemReq,
    ThreadsCustomActionReq,
    ThreadsSyncCustomActionReq,
    ThreadsGetByIdReq,
    ThreadsListReq,
    ThreadsUpdateReq,
    ThreadsDeleteReq,
    ItemsListReq,
    ItemsFeedbackReq,
    AttachmentsCreateReq,
    AttachmentsDeleteReq,
    InputTranscribeReq,
)

#: Request types answered with Server-Sent Events.
STREAMING_TYPES = frozenset(
    c.model_fields["type"].annotation.__args__[0]  # type: ignore[union-attr]
    for c in REQUEST_CLASSES
    if c.streaming
)

#: Any request, told apart by its ``type``.
ChatKitReq = t.Annotated[
    ThreadsCreateReq
    | ThreadsAddUserMessageReq
    | ThreadsAddClientToolOutputReq
    | ThreadsAddStructuredInputReq
    | ThreadsRetryAfterItemReq
    | ThreadsCustomActionReq
    | ThreadsSyncCustomActionReq
    | ThreadsGetByIdReq
    | ThreadsListReq
    | ThreadsUpdateReq
    | ThreadsDeleteReq
    | ItemsListReq
    | ItemsFeedbackReq
    | AttachmentsCreateReq
    | AttachmentsDeleteReq
    | InputTranscribeReq,
    Field(discriminator="type"),
]
ChatKitReqAdapter: TypeAdapter[ChatKitReq] = TypeAdapter(ChatKitReq)
