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

from .types import Action
from .types import InferenceOptions
from .types import StructuredInputAnswer
from .types import UserMessageContent
from .types import WireModel

#: Largest number of ids one ``items.feedback`` request may name.
MAX_FEEDBACK_ITEMS = 1000


def _no_nul(value: str) -> str:
    # PostgreSQL text cannot hold NUL: refuse it up front (400) on every store
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


Id = t.Annotated[str, Field(min_length=1, max_length=255), AfterValidator(_no_nul)]

#: Most characters of text one user message may hold (all its parts together), and
#: most in its ``quoted_text``: a 400 even when ``CHATKIT_MAX_REQUEST_SIZE`` is raised.
MAX_TEXT_LENGTH = 1_000_000


def _text_within_limit(content: list[t.Any]) -> list[t.Any]:
    if sum(len(part.text) for part in content) > MAX_TEXT_LENGTH:
        raise ValueError(f"the message text must be at most {MAX_TEXT_LENGTH} characters")
    return content


class UserMessageInput(WireModel):
    content: t.Annotated[list[UserMessageContent], AfterValidator(_text_within_limit)]
    attachments: list[Id]
    quoted_text: str | None = Field(default=None, max_length=MAX_TEXT_LENGTH)
    inference_options: InferenceOptions


class ThreadCreateParams(WireModel):
    input: UserMessageInput


class ThreadAddUserMessageParams(WireModel):
    thread_id: Id
    input: UserMessageInput


class ThreadAddClientToolOutputParams(WireModel):
    thread_id: Id
    result: t.Any


class StructuredInputSubmission(WireModel):
    status: t.Literal["answered", "skipped"] = "answered"
    answers: dict[str, StructuredInputAnswer] = Field(default_factory=dict)


class ThreadAddStructuredInputParams(WireModel):
    thread_id: Id
    item_id: Id
    input: StructuredInputSubmission


class ThreadRetryAfterItemParams(WireModel):
    thread_id: Id
    item_id: Id


class ThreadCustomActionParams(WireModel):
    thread_id: Id
    item_id: Id | None = None
    action: Action


class ThreadGetByIdParams(WireModel):
    thread_id: Id


class ListParams(WireModel):
    limit: int | None = Field(default=None, ge=0)
    order: t.Literal["asc", "desc"] = "desc"
    after: Id | None = None


class ItemsListParams(ListParams):
    thread_id: Id


class ThreadUpdateParams(WireModel):
    thread_id: Id
    title: t.Annotated[str, Field(max_length=1000), AfterValidator(_no_nul)]


class ThreadDeleteParams(WireModel):
    thread_id: Id


class ItemFeedbackParams(WireModel):
    thread_id: Id
    item_ids: list[Id] = Field(min_length=1, max_length=MAX_FEEDBACK_ITEMS)
    kind: t.Literal["positive", "negative"]


class AttachmentCreateParams(WireModel):
    name: str = Field(min_length=1, max_length=1000)
    size: int = Field(ge=0)
    mime_type: str = Field(min_length=1, max_length=255)


class AttachmentDeleteParams(WireModel):
    attachment_id: Id


class InputTranscribeParams(WireModel):
    audio_base64: str
    mime_type: str = Field(min_length=1, max_length=255)


class _Req(WireModel):
    metadata: dict[str, t.Any] = Field(default_factory=dict)


def _req(name: str, type_: str, params: type, streaming: bool) -> type[_Req]:
    cls = type(
        name,
        (_Req,),
        {
            "__annotations__": {"type": t.Literal[type_], "params": params},
            "__module__": __name__,
            "__doc__": f"The ``{type_}`` request.",
        },
    )
    cls.streaming = streaming  # type: ignore[attr-defined]
    return cls


ThreadsCreateReq = _req("ThreadsCreateReq", "threads.create", ThreadCreateParams, True)
ThreadsAddUserMessageReq = _req(
    "ThreadsAddUserMessageReq", "threads.add_user_message", ThreadAddUserMessageParams, True
)
ThreadsAddClientToolOutputReq = _req(
    "ThreadsAddClientToolOutputReq",
    "threads.add_client_tool_output",
    ThreadAddClientToolOutputParams,
    True,
)
ThreadsAddStructuredInputReq = _req(
    "ThreadsAddStructuredInputReq",
    "threads.add_structured_input",
    ThreadAddStructuredInputParams,
    True,
)
ThreadsRetryAfterItemReq = _req(
    "ThreadsRetryAfterItemReq", "threads.retry_after_item", ThreadRetryAfterItemParams, True
)
ThreadsCustomActionReq = _req(
    "ThreadsCustomActionReq", "threads.custom_action", ThreadCustomActionParams, True
)
ThreadsSyncCustomActionReq = _req(
    "ThreadsSyncCustomActionReq", "threads.sync_custom_action", ThreadCustomActionParams, False
)
ThreadsGetByIdReq = _req("ThreadsGetByIdReq", "threads.get_by_id", ThreadGetByIdParams, False)
ThreadsListReq = _req("ThreadsListReq", "threads.list", ListParams, False)
ThreadsUpdateReq = _req("ThreadsUpdateReq", "threads.update", ThreadUpdateParams, False)
ThreadsDeleteReq = _req("ThreadsDeleteReq", "threads.delete", ThreadDeleteParams, False)
ItemsListReq = _req("ItemsListReq", "items.list", ItemsListParams, False)
ItemsFeedbackReq = _req("ItemsFeedbackReq", "items.feedback", ItemFeedbackParams, False)
AttachmentsCreateReq = _req(
    "AttachmentsCreateReq", "attachments.create", AttachmentCreateParams, False
)
AttachmentsDeleteReq = _req(
    "AttachmentsDeleteReq", "attachments.delete", AttachmentDeleteParams, False
)
InputTranscribeReq = _req("InputTranscribeReq", "input.transcribe", InputTranscribeParams, False)

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
    if c.streaming  # type: ignore[attr-defined]
)

ChatKitReq = t.Annotated[
    t.Union[tuple(REQUEST_CLASSES)],  # type: ignore[valid-type]
    Field(discriminator="type"),
]
ChatKitReqAdapter: TypeAdapter[t.Any] = TypeAdapter(ChatKitReq)
