"""The protocol core: parse a request, check it, dispatch it, persist, yield events.

Nothing here imports Flask: :meth:`ChatKitServer.process` takes the raw body and
a context object and returns either a :class:`JSONResult` or a
:class:`~flask_chatkit.turn_engine.StreamResult` (an iterator of event models).
Every check that can fail runs inside :meth:`~ChatKitServer.process` itself,
*before* a stream is handed back, so that the web layer can still answer with a
JSON 4xx. The streams themselves (leases, persistence, checkpoints, Stop) are run
by the :class:`~flask_chatkit.turn_engine.TurnEngine` that ChatKitServer builds on.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import logging
import typing as t

from . import requests as rq
from . import tracing
from .agents import stamp_thread
from .errors import ConflictError
from .errors import NotFoundError
from .errors import NotImplementedHookError
from .errors import RequestError
from .events import Pending
from .limits import check_files_per_message
from .parsing import parse_request
from .store import Store
from .turn_engine import INTERRUPTED_TEXT as INTERRUPTED_TEXT  # re-exported: it was defined here
from .turn_engine import TEXTS
from .turn_engine import StreamResult as StreamResult  # re-exported: it was defined here
from .turn_engine import TurnEngine
from .turn_engine import kept_when_stopped
from .types import Action
from .types import AudioInput
from .types import LockedStatus
from .types import Page
from .types import SDKHiddenContextItem
from .types import StreamOptions
from .types import StructuredInputAnswer
from .types import StructuredInputItem
from .types import SyncCustomActionResponse
from .types import ThreadCreatedEvent
from .types import ThreadItemDoneEvent
from .types import ThreadItemReplacedEvent
from .types import ThreadMetadata
from .types import TranscriptionResult
from .types import UserMessageItem
from .types import client_thread
from .types import dump_json
from .types import utcnow

if t.TYPE_CHECKING:
    from .attachments import Attachments
    from .types import ThreadItem

logger = logging.getLogger("flask_chatkit")

TContext = t.TypeVar("TContext")
Events = t.Iterable[t.Any]

#: Text of the hidden item saved when the user stops a response (as in the SDK).
CANCELLED_TEXT = "The user cancelled the stream. Stop responding to the prior request."

HOOK_NAMES = ("respond", "action", "sync_action", "transcribe", "feedback", "cancel")


@dataclasses.dataclass
class RequestContext:
    """What hooks and stores know about the request.

    The blueprint builds it from the authenticated user; hooks and stores read
    it instead of Flask's ``request`` or ``current_user``.
    """

    #: The authenticated user's id, as a string. Every store call is scoped to it.
    user_id: str
    #: How the user was authenticated: ``"session"`` (cookie) or ``"bearer"``.
    auth: str = "session"
    #: The client's locale (from ``Accept-Language``), if any.
    locale: str | None = None
    #: The request's ``metadata`` object, as sent by the client (untrusted).
    metadata: dict[str, t.Any] = dataclasses.field(default_factory=dict)
    #: The authenticated user object, for hooks that need more than the id.
    user: t.Any = None
    #: The agent named by the ``agent_id`` query parameter, if any: threads are
    #: then scoped to it (see ``@chatkit.agent_loader``).
    agent_id: str | None = None
    #: What the agent loader returned for :attr:`agent_id`.
    agent: t.Any = None
    #: Free room for the app's own per-request data.
    extra: dict[str, t.Any] = dataclasses.field(default_factory=dict)
    #: The model tokens this request spent so far (see :meth:`report_usage`).
    usage: Usage = dataclasses.field(default_factory=lambda: Usage())
    #: Set by the core when the turn was refused before it ran (its thread was busy,
    #: or the user's ``CHATKIT_MAX_TURNS_PER_USER`` were running): nothing ran, so
    #: the turn is given back to the user's rate limits.
    turn_refused: bool = False
    #: Called with ``(context, input_tokens, output_tokens, model)`` on each
    #: :meth:`report_usage` (metrics, budgets); the extension fills it.
    usage_listeners: list[t.Callable[..., None]] = dataclasses.field(default_factory=list)
    #: The kinds of the model failures met while serving the request (``timeout``,
    #: ``rate_limit``...; see :meth:`report_model_error`), for metrics and logs.
    model_errors: list[str] = dataclasses.field(default_factory=list)
    #: The request's type (``threads.create``...), once :meth:`ChatKitServer.process`
    #: parsed it.
    request_type: str | None = None
    #: The thread the request names (``params.thread_id``), if any.
    thread_id: str | None = None

    def report_model_error(self, kind: str) -> None:
        """Note that a model call failed with *kind* (a :class:`~flask_chatkit.llm.ModelError`
        kind); the built-in responder calls it, a custom one may."""
        self.model_errors.append(kind)

    def report_usage(
        self, input_tokens: int = 0, output_tokens: int = 0, *, model: str | None = None
    ) -> None:
        """Count model tokens this request spent. The built-in responder calls it
        after each model call; a custom responder calls it the same way, so that
        token budgets, metrics and logs see its usage."""
        input_tokens, output_tokens = max(0, int(input_tokens)), max(0, int(output_tokens))
        self.usage.input_tokens += input_tokens
        self.usage.output_tokens += output_tokens
        for listener in self.usage_listeners:
            listener(self, input_tokens, output_tokens, model)


@dataclasses.dataclass
class Usage:
    """Model tokens spent by one request."""

    input_tokens: int = 0
    output_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        """Input and output together."""
        return self.input_tokens + self.output_tokens


def warn_renamed(old: str, new: str) -> None:
    import warnings

    warnings.warn(
        f"{old} is now {new} (one name per concept); the old name will be removed "
        "in a later release.",
        DeprecationWarning,
        stacklevel=3,
    )


@dataclasses.dataclass
class JSONResult:
    """A non-streaming answer: compact JSON bytes."""

    body: bytes


def _show_running(threads: list[t.Any], running: t.Collection[str], context: t.Any) -> None:
    """Show the *running* threads (a turn runs on them now, here or in another
    process) as locked, with a reason in the user's language; their own status
    comes back when the turn ends (it is never stored). A status the app set stays."""
    reason = TEXTS.text("thread.running", getattr(context, "locale", None))
    for thread in threads:
        if thread.id in running and thread.status.type == "active":
            thread.status = LockedStatus(reason=reason)


def _refuse_if_closed(thread: ThreadMetadata) -> None:
    """A thread the app closed or locked takes no new turn (the client hides its
    composer; this holds for any client)."""
    status = thread.status
    if status.type in ("closed", "locked"):
        reason = f" ({status.reason})" if getattr(status, "reason", None) else ""
        raise ConflictError(
            f"This conversation is {status.type}{reason}: it takes no new messages.",
            field="params.thread_id",
        )


class ChatKitServer(TurnEngine[TContext]):
    """The ChatKit protocol, independent of any web framework.

    Customise it in one of two ways: register hook functions (the
    :class:`~flask_chatkit.ChatKit` extension's decorators fill *hooks*), or
    subclass it and override :meth:`respond`, :meth:`action`,
    :meth:`sync_action`, :meth:`transcribe`, :meth:`add_feedback`,
    :meth:`get_stream_options` or :meth:`handle_stream_cancelled`. How streams
    run (the thread's lease, persistence, checkpoints, :meth:`cancel_turn`,
    :meth:`watch_turn`) comes from :class:`~flask_chatkit.turn_engine.TurnEngine`.

    :param store: where threads, items and attachments live.
    :param attachments: the :class:`~flask_chatkit.attachments.Attachments`
        service (needed for uploads); ``attachment_store=`` is its old name.
    :param hooks: hook functions by name (see :data:`HOOK_NAMES`).
    :param page_size: the page size when a request gives no ``limit``.
    :param max_page_size: the largest page served, whatever ``limit`` says.
    :param turn_timeout: seconds a turn's lease on its thread lasts without being
        renewed (renewed while events flow); it frees threads of crashed workers.
    :param checkpoint_interval: seconds between two saves of a running turn's
        unfinished answer (so that other tabs and later reads see it grow); 0
        saves it only at the end.
    :param max_turns_per_user: the most turns one user may run at once across
        every process on the store; past it a new turn is refused with an error
        event, nothing saved (``None``: no limit).
    :param lease_seconds: how long a turn's lease lasts when a timer renews it
        (:attr:`RunningTurns.timed`): a process that dies frees its threads
        this long after its last renewal at most. Without a timer a lease
        lasts *turn_timeout*, renewed as events flow.
    """

    def __init__(
        self,
        store: Store[TContext],
        attachments: Attachments | None = None,
        *,
        hooks: t.Mapping[str, t.Callable[..., t.Any]] | None = None,
        page_size: int = 20,
        max_page_size: int = 100,
        turn_timeout: float = 120.0,
        max_files_per_message: int = 0,
        checkpoint_interval: float = 1.0,
        lease_seconds: float = 15.0,
        max_turns_per_user: int | None = None,
        attachment_store: Attachments | None = None,
    ) -> None:
        super().__init__(
            store,
            turn_timeout=turn_timeout,
            checkpoint_interval=checkpoint_interval,
            lease_seconds=lease_seconds,
            max_turns_per_user=max_turns_per_user,
        )
        self.max_files_per_message = max_files_per_message
        if attachment_store is not None:
            warn_renamed("attachment_store=", "attachments=")
            attachments = attachments or attachment_store
        self.attachments = attachments
        self.hooks = hooks if hooks is not None else {}
        self.page_size = page_size
        self.max_page_size = max_page_size

    # --- hooks -------------------------------------------------------------

    def respond(
        self, thread: ThreadMetadata, input_user_message: UserMessageItem | None, context: TContext
    ) -> Events:
        """Answer a user message (or continue after tool output when it is ``None``)."""
        events: Events = self._call_hook("respond", thread, input_user_message, context)
        return events

    def action(
        self, thread: ThreadMetadata, action: Action, sender: ThreadItem | None, context: TContext
    ) -> Events:
        """Handle a streamed custom/widget action; *sender* is the widget item or ``None``."""
        events: Events = self._call_hook("action", thread, action, sender, context)
        return events

    def sync_action(
        self, thread: ThreadMetadata, action: Action, sender: ThreadItem | None, context: TContext
    ) -> t.Any:
        """Handle a non-streamed action; return an updated item, a
        :class:`SyncCustomActionResponse` or ``None``. Persisting is the hook's job."""
        return self._call_hook("sync_action", thread, action, sender, context)

    def transcribe(self, audio: AudioInput, context: TContext) -> t.Any:
        """Turn dictated audio into text; return a string or a :class:`TranscriptionResult`."""
        return self._call_hook("transcribe", audio, context)

    def add_feedback(
        self, thread_id: str, item_ids: list[str], kind: str, context: TContext
    ) -> None:
        """Record a vote: saved in the store, then passed to the ``feedback`` hook if any."""
        self.store.save_feedback(thread_id, item_ids, kind, context)
        hook = self.hooks.get("feedback")
        if hook is not None:
            hook(thread_id, item_ids, kind, context)

    def get_stream_options(self, thread: ThreadMetadata, context: TContext) -> StreamOptions:
        """Options sent first in every hook-driven stream (Stop button on by default)."""
        return StreamOptions(allow_cancel=True)

    def handle_stream_cancelled(
        self, thread: ThreadMetadata, pending_items: list[t.Any], context: TContext
    ) -> None:
        """Persist what the user saw before stopping, and a hidden note that they stopped.

        Pending assistant messages with non-blank text are saved with the text
        streamed so far; then an ``sdk_hidden_context`` item tells the model the
        user cancelled. A registered ``cancel`` hook runs afterwards.
        """
        for item in kept_when_stopped(pending_items):
            self.store.add_thread_item(thread.id, item, context)
        note = SDKHiddenContextItem(
            id=self.store.generate_item_id("sdk_hidden_context", thread, context),
            thread_id=thread.id,
            created_at=utcnow(),
            content=CANCELLED_TEXT,
        )
        self.store.add_thread_item(thread.id, note, context)
        hook = self.hooks.get("cancel")
        if hook is not None:
            hook(thread, pending_items, context)

    def implements(self, name: str) -> bool:
        """Whether the hook *name* is provided, by a registered function or an override."""
        method = {"feedback": "add_feedback", "cancel": "handle_stream_cancelled"}.get(name, name)
        overridden = getattr(type(self), method) is not getattr(ChatKitServer, method)
        return overridden or name in self.hooks

    def _call_hook(self, name: str, *args: t.Any) -> t.Any:
        hook = self.hooks.get(name)
        if hook is None:
            raise NotImplementedHookError(self._missing_hook_message(name))
        return hook(*args)

    @staticmethod
    def _missing_hook_message(name: str) -> str:
        return (
            f"This server does not handle this request: register a '{name}' hook "
            f"(@chatkit.{name}) or override ChatKitServer.{name} in a subclass."
        )

    def _require(self, name: str) -> None:
        if not self.implements(name):
            raise NotImplementedHookError(self._missing_hook_message(name))

    # --- entry point -----------------------------------------------------------

    def process(self, body: bytes | str, context: TContext) -> JSONResult | StreamResult:
        """Serve one request body.

        :raises RequestError: (and subclasses) when the request cannot be
            served; nothing has been written or streamed in that case.
        """
        req = parse_request(body)
        if hasattr(context, "metadata"):  # the client's own, untrusted
            context.metadata = req.metadata
        thread_id = getattr(getattr(req, "params", None), "thread_id", None)
        if hasattr(context, "request_type"):  # for the access log and metrics
            context.request_type = req.type
            setattr(context, "thread_id", thread_id)  # noqa: B010
        span = tracing.start_request(req.type, thread_id)
        if span is None:  # no OpenTelemetry
            return self.handle(req, context)
        try:
            result = self.handle(req, context)
        except BaseException as exc:
            span.fail(exc)
            span.end()
            raise
        if isinstance(result, StreamResult):
            return span.trace_stream(result)  # the span ends with the stream
        span.end()
        return result

    def handle(self, req: rq.ChatKitReq, context: TContext) -> JSONResult | StreamResult:
        """Serve an already parsed request (see :func:`parse_request`)."""
        match req:
            case rq.ThreadsCreateReq(params=params):
                return self._create(params, context)
            case rq.ThreadsAddUserMessageReq(params=params):
                return self._add_user_message(params, context)
            case rq.ThreadsAddClientToolOutputReq(params=params):
                return self._add_client_tool_output(params, context)
            case rq.ThreadsAddStructuredInputReq(params=params):
                return self._add_structured_input(params, context)
            case rq.ThreadsRetryAfterItemReq(params=params):
                return self._retry_after_item(params, context)
            case rq.ThreadsCustomActionReq(params=params):
                return self._custom_action(params, context)
            case rq.ThreadsSyncCustomActionReq(params=params):
                return self._sync_custom_action(params, context)
            case rq.ThreadsGetByIdReq(params=params):
                return self._get_by_id(params, context)
            case rq.ThreadsListReq(params=params):
                return self._list_threads(params, context)
            case rq.ThreadsUpdateReq(params=params):
                return self._update_thread(params, context)
            case rq.ThreadsDeleteReq(params=params):
                self._delete_thread(params, context)
                return JSONResult(b"{}")
            case rq.ItemsListReq(params=params):
                return self._list_items(params, context)
            case rq.ItemsFeedbackReq(params=params):
                self.add_feedback(params.thread_id, params.item_ids, params.kind, context)
                return JSONResult(b"{}")
            case rq.AttachmentsCreateReq(params=params):
                return self._create_attachment(params, context)
            case rq.AttachmentsDeleteReq(params=params):
                return self._delete_attachment(params, context)
            case rq.InputTranscribeReq(params=params):
                return self._transcribe(params, context)
            case _:  # pragma: no cover - the request union is closed
                t.assert_never(req)

    # --- streaming request types ---------------------------------------------------

    def _create(self, params: rq.ThreadCreateParams, context: TContext) -> StreamResult:
        self._require("respond")
        thread = ThreadMetadata(id=self.store.generate_thread_id(context), created_at=utcnow())
        stamp_thread(thread, context)  # private: responders can read it
        attachments = self._resolve_attachments(params.input.attachments, context)
        message = self._user_message(thread, params.input, attachments, context)
        pending = Pending()

        def turn() -> t.Generator[t.Any, None, None]:
            # saved with its lease before the id goes out: a second tab that opens
            # the new thread while its first answer streams is refused too
            yield ThreadCreatedEvent(thread=client_thread(thread))
            yield from self._user_turn(thread, message, context, pending)

        return StreamResult(
            self._exclusive(thread, context, turn(), pending, message=message, new=True),
            pending,
        )

    def _add_user_message(
        self, params: rq.ThreadAddUserMessageParams, context: TContext
    ) -> StreamResult:
        self._require("respond")
        thread, busy = self.load_for_turn(params.thread_id, context)
        _refuse_if_closed(thread)
        attachments = self._resolve_attachments(params.input.attachments, context)
        message = self._user_message(thread, params.input, attachments, context)
        pending = Pending()
        return StreamResult(
            self._exclusive(
                thread,
                context,
                self._user_turn(thread, message, context, pending),
                pending,
                message=message,
                busy=busy,
            ),
            pending,
        )

    def _user_turn(
        self, thread: ThreadMetadata, message: UserMessageItem, context: TContext, pending: Pending
    ) -> t.Generator[t.Any, None, None]:
        """Emit the (saved) user message, then stream the answer."""
        yield ThreadItemDoneEvent(item=message)
        yield from self._pipeline(
            thread, context, lambda: self.respond(thread, message, context), pending
        )

    def _add_client_tool_output(
        self, params: rq.ThreadAddClientToolOutputParams, context: TContext
    ) -> StreamResult:
        self._require("respond")
        thread, busy = self.load_for_turn(params.thread_id, context)
        recent = self.store.load_thread_items(
            thread.id, None, 20, "desc", context, include_hidden=False
        ).data
        pending = [i for i in recent if i.type == "client_tool_call" and i.status == "pending"]
        if not pending:
            raise ConflictError(
                "This thread has no pending client tool call to take output for.",
                field="params.thread_id",
            )
        call = pending[0]
        unfinished = Pending()

        def events() -> t.Generator[t.Any, None, None]:
            call.output = params.result
            call.status = "completed"
            self.store.save_item(thread.id, call, context)
            # Only one client tool call can be open per turn; drop stale ones.
            for stale in pending[1:]:
                self.store.delete_thread_item(thread.id, stale.id, context)
            yield from self._pipeline(
                thread, context, lambda: self.respond(thread, None, context), unfinished
            )

        return StreamResult(
            self._exclusive(thread, context, events(), unfinished, busy=busy), unfinished
        )

    def _add_structured_input(
        self, params: rq.ThreadAddStructuredInputParams, context: TContext
    ) -> StreamResult:
        self._require("respond")
        thread, busy = self.load_for_turn(params.thread_id, context)
        item = self.store.load_item(thread.id, params.item_id, context)
        if not isinstance(item, StructuredInputItem):
            raise RequestError(
                f"Item {item.id!r} is a {item.type}, not a structured_input.",
                field="params.item_id",
            )
        if item.status != "pending":
            raise ConflictError(
                f"Structured input {item.id!r} was already {item.status}.", field="params.item_id"
            )
        submission = params.input
        pending = Pending()

        def events() -> t.Generator[t.Any, None, None]:
            for question in item.inputs:
                answer = submission.answers.get(question.id)
                usable = (
                    submission.status != "skipped"
                    and answer is not None
                    and not answer.skipped
                    and answer.values
                )
                if not usable or answer is None:
                    question.answer = StructuredInputAnswer(values=[], skipped=True)
                elif question.type == "multiple_choice" and not question.multiple:
                    question.answer = StructuredInputAnswer(values=answer.values[:1])
                else:
                    question.answer = StructuredInputAnswer(values=list(answer.values))
            item.status = submission.status

            def produce() -> Events:
                yield ThreadItemReplacedEvent(item=item)
                yield from self.respond(thread, None, context) or ()

            yield from self._pipeline(thread, context, produce, pending)

        return StreamResult(self._exclusive(thread, context, events(), pending, busy=busy), pending)

    def _retry_after_item(
        self, params: rq.ThreadRetryAfterItemParams, context: TContext
    ) -> StreamResult:
        self._require("respond")
        thread, busy = self.load_for_turn(params.thread_id, context)
        _refuse_if_closed(thread)
        item = self.store.load_item(thread.id, params.item_id, context)
        if not isinstance(item, UserMessageItem):
            raise RequestError(
                f"Only a user message can be retried; {item.id!r} is a {item.type}.",
                field="params.item_id",
            )

        pending = Pending()

        def events() -> t.Generator[t.Any, None, None]:
            self.store.delete_items_after(thread.id, item.id, context)
            yield from self._pipeline(
                thread, context, lambda: self.respond(thread, item, context), pending
            )

        return StreamResult(self._exclusive(thread, context, events(), pending, busy=busy), pending)

    def _load_sender(self, thread: ThreadMetadata, params: t.Any, context: TContext) -> t.Any:
        if params.item_id is None:
            return None
        sender = self.store.load_item(thread.id, params.item_id, context)
        if sender.type != "widget":
            raise RequestError(
                f"Actions can only come from widget items; {sender.id!r} is a {sender.type}.",
                field="params.item_id",
            )
        return sender

    def _custom_action(
        self, params: rq.ThreadCustomActionParams, context: TContext
    ) -> StreamResult:
        self._require("action")
        thread, busy = self.load_for_turn(params.thread_id, context)
        sender = self._load_sender(thread, params, context)
        pending = Pending()
        return StreamResult(
            self._exclusive(
                thread,
                context,
                self._pipeline(
                    thread,
                    context,
                    lambda: self.action(thread, params.action, sender, context),
                    pending,
                ),
                pending,
                busy=busy,
            ),
            pending,
        )

    # --- JSON request types ------------------------------------------------------

    def _sync_custom_action(
        self, params: rq.ThreadCustomActionParams, context: TContext
    ) -> JSONResult:
        self._require("sync_action")
        thread = self.store.load_thread(params.thread_id, context)
        sender = self._load_sender(thread, params, context)
        result = self.sync_action(thread, params.action, sender, context)
        if not isinstance(result, SyncCustomActionResponse):
            result = SyncCustomActionResponse(updated_item=result)
        return JSONResult(dump_json(result))

    def _limit(self, limit: int | None) -> int:
        return min(limit or self.page_size, self.max_page_size)

    def _get_by_id(self, params: rq.ThreadGetByIdParams, context: TContext) -> JSONResult:
        thread, running = self.load_for_turn(params.thread_id, context)
        items = self.store.load_thread_items(
            thread.id, None, self.page_size, "asc", context, include_hidden=False
        )
        self._refresh(items.data, context)
        shown = client_thread(thread, items)
        _show_running([shown], {thread.id} if running else set(), context)
        return JSONResult(dump_json(shown))

    def _list_threads(self, params: rq.ListParams, context: TContext) -> JSONResult:
        page, running = self.store.load_threads_and_turns(
            self._limit(params.limit), params.after, params.order, context
        )
        out = Page(
            data=[client_thread(th) for th in page.data], has_more=page.has_more, after=page.after
        )
        _show_running(out.data, running, context)
        return JSONResult(dump_json(out))

    def _update_thread(self, params: rq.ThreadUpdateParams, context: TContext) -> JSONResult:
        thread = self.store.load_thread(params.thread_id, context)
        thread.title = params.title
        self.store.save_thread(thread, context)
        return JSONResult(dump_json(client_thread(thread)))

    def _list_items(self, params: rq.ItemsListParams, context: TContext) -> JSONResult:
        page = self.store.load_thread_items(
            params.thread_id,
            params.after,
            self._limit(params.limit),
            params.order,
            context,
            include_hidden=False,
        )
        self._refresh(page.data, context)
        return JSONResult(dump_json(page))

    @property
    def attachment_store(self) -> Attachments | None:
        """The old name of :attr:`attachments`."""
        warn_renamed("server.attachment_store", "server.attachments")
        return self.attachments

    def _attachments(self) -> Attachments:
        if self.attachments is None:
            raise NotImplementedHookError(
                "Attachments are not enabled: pass attachments= to ChatKitServer()."
            )
        return self.attachments

    def _refresh(self, items: t.Iterable[t.Any], context: TContext) -> None:
        """Let the attachments renew what expires (signed preview URLs) in the
        attachments of *items* (messages or attachments) on their way out."""
        if self.attachments is None:
            return
        for item in items:
            for attachment in getattr(item, "attachments", None) or [item]:
                if getattr(attachment, "type", None) in ("image", "file"):
                    self.attachments.refresh(attachment, context)

    def _delete_thread(self, params: rq.ThreadDeleteParams, context: TContext) -> None:
        """Delete the thread, then its attachments: records and bytes."""
        attachments = self.store.load_thread_attachments(params.thread_id, context)
        self.store.delete_thread(params.thread_id, context)
        for attachment in attachments:
            if self.attachments is not None:
                self.attachments.delete_attachment(attachment, context)
            try:
                self.store.delete_attachment(attachment.id, context)
            except NotFoundError:
                pass  # removed meanwhile (e.g. by attachments.delete)

    def _create_attachment(
        self, params: rq.AttachmentCreateParams, context: TContext
    ) -> JSONResult:
        attachment = self._attachments().create_attachment(params, context)
        self.store.save_attachment(attachment, context)
        return JSONResult(dump_json(attachment))

    def _delete_attachment(
        self, params: rq.AttachmentDeleteParams, context: TContext
    ) -> JSONResult:
        backend = self._attachments()
        attachment = self.store.load_attachment(params.attachment_id, context)
        backend.delete_attachment(attachment, context)  # bytes first, then the record
        self.store.delete_attachment(attachment.id, context)
        return JSONResult(b"{}")

    def _transcribe(self, params: rq.InputTranscribeParams, context: TContext) -> JSONResult:
        self._require("transcribe")
        try:
            data = base64.b64decode(params.audio_base64, validate=True)
        except (binascii.Error, ValueError):
            raise RequestError(
                "audio_base64 is not valid base64.", field="params.audio_base64"
            ) from None
        result = self.transcribe(AudioInput(data=data, mime_type=params.mime_type), context)
        if isinstance(result, str):
            result = TranscriptionResult(text=result)
        elif isinstance(result, dict):
            result = TranscriptionResult.model_validate(result)
        return JSONResult(dump_json(result))

    # --- shared steps ------------------------------------------------------------

    def _resolve_attachments(self, ids: list[str], context: TContext) -> list[t.Any]:
        unique = list(dict.fromkeys(ids))
        check_files_per_message(len(unique), self.max_files_per_message)
        try:
            attachments = self.store.load_attachments(unique, context) if unique else []
        except RequestError as exc:
            exc.field = "params.input.attachments"
            raise
        for attachment in attachments:
            if (attachment.metadata or {}).get("upload_pending"):
                raise ConflictError(
                    f"Attachment {attachment.id!r} has not been uploaded yet.",
                    field="params.input.attachments",
                )
        self._refresh(attachments, context)
        return attachments

    def _user_message(
        self, thread: ThreadMetadata, input: t.Any, attachments: list[t.Any], context: TContext
    ) -> UserMessageItem:
        """The turn's user message, its attachments stamped with the thread (saved
        with the turn's start, see :meth:`Store.begin_turn`)."""
        for attachment in attachments:
            attachment.thread_id = thread.id
        return UserMessageItem(
            id=self.store.generate_item_id("message", thread, context),
            thread_id=thread.id,
            created_at=utcnow(),
            content=input.content,
            attachments=attachments,
            quoted_text=input.quoted_text,
            inference_options=input.inference_options,
        )


__all__ = [
    "CANCELLED_TEXT",
    "ChatKitServer",
    "JSONResult",
    "RequestContext",
]
