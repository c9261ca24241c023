"""The protocol core: parse a request, check it, dispatch it, persist, yield events.

Nothing here imports Flask: :meth:`ChatKitServer.process` takes the raw body and
a context object and returns either a :class:`JSONResult` or a
:class:`StreamResult` (an iterator of event models). Every check that can fail
runs inside :meth:`~ChatKitServer.process` itself, *before* a stream is handed
back, so that the web layer can still answer with a JSON 4xx.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import logging
import secrets
import time
import typing as t
from datetime import datetime
from datetime import timedelta

from .errors import ConflictError
from .errors import NotFoundError
from .errors import NotImplementedHookError
from .errors import RequestError
from .events import Pending
from .events import ThreadSnapshot
from .events import close_quietly
from .events import coerce_event
from .events import error_event
from .i18n import Catalog
from .parsing import parse_request
from .store import AttachmentStore
from .store import Store
from .turns import CHECK_INTERVAL
from .turns import RunningTurns
from .types import Action
from .types import AssistantMessageItem
from .types import AudioInput
from .types import CustomTask
from .types import ErrorEvent
from .types import LockedStatus
from .types import HIDDEN_ITEM_TYPES
from .types import Page
from .types import SDKHiddenContextItem
from .types import StreamOptions
from .types import StreamOptionsEvent
from .types import StructuredInputAnswer
from .types import StructuredInputItem
from .types import SyncCustomActionResponse
from .types import TaskItem
from .types import ThreadCreatedEvent
from .types import ThreadItemDoneEvent
from .types import ThreadItemReplacedEvent
from .types import ThreadMetadata
from .types import ThreadUpdatedEvent
from .types import TranscriptionResult
from .types import UserMessageItem
from .types import client_thread
from .types import dump_json
from .types import utcnow
from .watch import follow_running
from .watch import follow_stored

if t.TYPE_CHECKING:
    from .types import ThreadItem

logger = logging.getLogger("flask_chatkit")

TContext = t.TypeVar("TContext")
Events = t.Iterable[t.Any]

#: Text of the hidden item saved when the user stops a response (as in the SDK).
CANCELLED_TEXT = "The user cancelled the stream. Stop responding to the prior request."
#: Shown when a second turn starts on a thread that is still answering.
BUSY_TEXT = (
    "This conversation is still answering an earlier message. "
    "Wait for it to finish, then send yours again."
)
#: Text of the hidden item saved after an answer the server could not finish
#: (its process stopped: a crash, a deploy), for the model.
INTERRUPTED_TEXT = (
    "The previous answer was interrupted before it was finished (the server stopped); "
    "the user saw it cut off."
)
#: Shown when the user's message could not be stored (it was not sent to the model).
NOT_SAVED_TEXT = "Your message could not be saved, so it was not sent. Please try again."

#: The server's own user-facing texts (a running turn's thread status).
TEXTS = Catalog()

HOOK_NAMES = ("respond", "action", "sync_action", "transcribe", "feedback", "cancel")

#: Events of a turn its watchers do not get: they belong to the start of a stream.
_NOT_WATCHED = (StreamOptionsEvent, ThreadCreatedEvent)


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


@dataclasses.dataclass
class JSONResult:
    """A non-streaming answer: compact JSON bytes."""

    body: bytes


class StreamResult:
    """A streaming answer: iterate it for event models; close it to cancel.

    *pending* is the stream's record of the items it has not finished, which
    a cancel saves; :meth:`track_unsent` keeps out what the client never got.
    """

    def __init__(
        self, events: t.Generator[t.Any, None, None], pending: Pending | None = None
    ) -> None:
        self._events = _guard(events)
        self._pending = pending

    def __iter__(self) -> t.Iterator[t.Any]:
        return self._events

    def track_unsent(self, unsent: t.Callable[[], t.Sequence[t.Any]]) -> None:
        """Have a cancel ask *unsent* for the events produced but never handed to the
        client (oldest first), say because they were still queued when it went
        away, and save what it did receive (see :meth:`Pending.retract`)."""
        if self._pending is not None:
            self._pending.unsent = unsent

    def close(self) -> None:
        """Stop the stream; pending output is persisted by the cancel path."""
        self._events.close()


def _show_running(threads: list[t.Any], running: t.Collection[str], context: t.Any) -> None:
    """Show the *running* threads (a turn runs on them now, here or in another
    process) as locked, with a reason in the user's language; their own status
    comes back when the turn ends (it is never stored). A status the app set stays."""
    reason = TEXTS.text("thread.running", getattr(context, "locale", None))
    for thread in threads:
        if thread.id in running and thread.status.type == "active":
            thread.status = LockedStatus(reason=reason)


def kept_when_stopped(items: t.Iterable[t.Any]) -> list[t.Any]:
    """What of a stopped turn's unfinished *items* is kept: the assistant
    messages with text (see :meth:`ChatKitServer.handle_stream_cancelled`)."""
    return [
        item for item in items
        if isinstance(item, AssistantMessageItem) and any(part.text.strip() for part in item.content)
    ]


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


def _checkpoint_mark(item: t.Any) -> t.Any:
    """What tells two checkpoints of *item* apart: its text's length per part
    (text only grows while it streams), or the item itself for other kinds."""
    if isinstance(item, AssistantMessageItem):
        return tuple(len(part.text) for part in item.content)
    return item.model_dump_json()


def _guard(events: t.Generator[t.Any, None, None]) -> t.Generator[t.Any, None, None]:
    """End a stream with one error event if a step outside the hook pipeline fails
    (saving the user message, say), instead of cutting the connection."""
    try:
        yield from events
    except Exception:
        logger.exception("A ChatKit stream failed outside its responder.")
        yield ErrorEvent(code="stream.error", allow_retry=True)


class ChatKitServer(t.Generic[TContext]):
    """The ChatKit protocol, independent of any web framework.

    Customise it in one of two ways: register hook functions (the
    :class:`~flask_chatkit.ChatKit` extension's decorators fill *hooks*), or
    subclass it and override :meth:`respond`, :meth:`action`,
    :meth:`sync_action`, :meth:`transcribe`, :meth:`add_feedback`,
    :meth:`get_stream_options` or :meth:`handle_stream_cancelled`.

    :param store: where threads, items and attachments live.
    :param attachment_store: where attachment bytes live (needed for uploads).
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
        attachment_store: AttachmentStore[TContext] | None = None,
        *,
        hooks: t.Mapping[str, t.Callable[..., t.Any]] | None = None,
        page_size: int = 20,
        max_page_size: int = 100,
        turn_timeout: float = 120.0,
        max_files_per_message: int = 0,
        checkpoint_interval: float = 1.0,
        lease_seconds: float = 15.0,
        max_turns_per_user: int | None = None,
    ) -> None:
        self.store = store
        self.max_turns_per_user = max_turns_per_user
        self.turn_timeout = turn_timeout
        self.lease_seconds = lease_seconds
        self.checkpoint_interval = checkpoint_interval
        self.max_files_per_message = max_files_per_message
        self.attachment_store = attachment_store
        self.hooks = hooks if hooks is not None else {}
        self.page_size = page_size
        self.max_page_size = max_page_size
        #: The turns this process runs (what a Stop looks for first).
        self.running = RunningTurns()

    # --- hooks -------------------------------------------------------------

    def respond(
        self, thread: ThreadMetadata, input_user_message: UserMessageItem | None, context: TContext
    ) -> Events:
        """Answer a user message (or continue after tool output when it is ``None``)."""
        return self._call_hook("respond", thread, input_user_message, context)

    def action(
        self, thread: ThreadMetadata, action: Action, sender: ThreadItem | None, context: TContext
    ) -> Events:
        """Handle a streamed custom/widget action; *sender* is the widget item or ``None``."""
        return self._call_hook("action", thread, action, sender, context)

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
        return self.handle(req, context)

    def handle(self, req: t.Any, context: TContext) -> JSONResult | StreamResult:
        """Serve an already parsed request (see :func:`parse_request`)."""
        params = req.params
        match req.type:
            case "threads.create":
                return self._create(params, context)
            case "threads.add_user_message":
                return self._add_user_message(params, context)
            case "threads.add_client_tool_output":
                return self._add_client_tool_output(params, context)
            case "threads.add_structured_input":
                return self._add_structured_input(params, context)
            case "threads.retry_after_item":
                return self._retry_after_item(params, context)
            case "threads.custom_action":
                return self._custom_action(params, context)
            case "threads.sync_custom_action":
                return self._sync_custom_action(params, context)
            case "threads.get_by_id":
                return self._get_by_id(params, context)
            case "threads.list":
                return self._list_threads(params, context)
            case "threads.update":
                return self._update_thread(params, context)
            case "threads.delete":
                self._delete_thread(params, context)
                return JSONResult(b"{}")
            case "items.list":
                return self._list_items(params, context)
            case "items.feedback":
                self.add_feedback(params.thread_id, params.item_ids, params.kind, context)
                return JSONResult(b"{}")
            case "attachments.create":
                return self._create_attachment(params, context)
            case "attachments.delete":
                return self._delete_attachment(params, context)
            case "input.transcribe":
                return self._transcribe(params, context)
            case _:  # pragma: no cover - the request union is closed
                t.assert_never(req.type)

    # --- streaming request types ---------------------------------------------------

    def _create(self, params: t.Any, context: TContext) -> StreamResult:
        self._require("respond")
        thread = ThreadMetadata(id=self.store.generate_thread_id(context), created_at=utcnow())
        agent_id = getattr(context, "agent_id", None)
        if agent_id is not None:
            thread.metadata["agent_id"] = agent_id  # private: responders can read it
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

    def _add_user_message(self, params: t.Any, context: TContext) -> StreamResult:
        self._require("respond")
        thread, _ = self.load_for_turn(params.thread_id, context)
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

    @staticmethod
    def _not_saved() -> ErrorEvent:
        logger.exception("Could not save a user message.")
        return ErrorEvent(code="custom", message=NOT_SAVED_TEXT, allow_retry=False)

    def _exclusive(
        self,
        thread: ThreadMetadata,
        context: TContext,
        events: t.Generator[t.Any, None, None],
        pending: Pending,
        *,
        message: UserMessageItem | None = None,
        new: bool = False,
    ) -> t.Generator[t.Any, None, None]:
        """Run *events* holding the thread's turn lease, so that two turns on one
        thread (two tabs, two workers) never interleave; a second one is refused.

        The turn starts with one store step (:meth:`Store.begin_turn`: the *new*
        thread, the lease, the user *message*) and, when *events* run to their
        end, ends with one (:meth:`Store.end_turn`: the finished items the
        pipeline left in *pending*, the changed thread, the release); the events
        telling the client of what the end saves go out after it is saved.
        """
        token = secrets.token_hex(16)
        try:
            acquired = self.store.begin_turn(
                thread, token, self._lease_end(), message, context, new=new,
                max_turns=self.max_turns_per_user,
            )
        except Exception as exc:  # the database went away: nothing of the turn is saved
            events.close()
            yield self._not_saved() if message is not None else error_event(exc)
            return
        except BaseException:
            if message is not None:
                # Stopped during the save (the client went away at once): the user
                # did send it, so finish saving it, with the note that the turn stopped.
                self._save_stopped_start(thread, token, message, context, new=new)
            raise
        if not acquired:
            events.close()
            if acquired is None:  # the user's limit of running turns
                logger.warning("A turn of user %s was refused: %d turns of theirs run "
                               "(CHATKIT_MAX_TURNS_PER_USER).",
                               getattr(context, "user_id", "?"), self.max_turns_per_user)
                text = TEXTS.text("turn.too_many", getattr(context, "locale", None))
                text = text.format(count=self.max_turns_per_user)
            else:
                text = BUSY_TEXT
            yield ErrorEvent(code="custom", message=text, allow_retry=False)
            return
        every = self._lease_length() / 3
        # a timer renews the lease (and bounds a silent responder) when there is one
        renew_at = float("inf") if self.running.timed else time.monotonic() + every
        released = False
        running = self.running.enter(thread.id, token, thread, pending)
        interval = self.checkpoint_interval
        checkpoint_at = time.monotonic() + interval if interval else float("inf")
        try:
            for event in events:
                if running.feeds and type(event) not in _NOT_WATCHED:
                    running.publish(event)
                yield event
                if running.stopped:  # a Stop, outside gevent: the finally cancels
                    return
                now = running.last_event = time.monotonic()
                if now > checkpoint_at:
                    self._checkpoint(thread, pending, context)
                    checkpoint_at = now + interval
                if now > renew_at:
                    self.store.renew_turn(thread.id, token, self._lease_end(), context)
                    renew_at = time.monotonic() + every
            items, changed = pending.finished()
            ended = thread if changed else None
            checkpointed = pending.checkpointed
            try:
                self.store.end_turn(thread.id, token, items, ended, context, saved=checkpointed)
            except Exception as exc:
                yield error_event(exc)
                return
            except BaseException:  # stopped during the save: the answer was whole, keep it
                self._quietly(
                    self.store.end_turn, thread.id, token, items, ended, context,
                    saved=checkpointed,
                )
                released = True
                raise
            released = True
            ending = [ThreadItemDoneEvent(item=item) for item in items]
            if changed:
                ending.append(ThreadUpdatedEvent(thread=client_thread(thread)))
            for event in ending:
                running.publish(event)
                yield event
        finally:
            self.running.leave(running)
            events.close()  # on a disconnect: persist what was streamed, then release
            if not released:
                if running.feeds:  # watchers see the answer end where it was stopped
                    for item in kept_when_stopped(pending.snapshot()):
                        running.publish(ThreadItemDoneEvent(item=item))
                self._quietly(self.store.release_turn, thread.id, token, context)
            running.end()

    def _checkpoint(self, thread: ThreadMetadata, pending: Pending, context: TContext) -> None:
        """Save the running turn's unfinished items that changed since the last
        time, without waiting for the save (see :meth:`Store.save_checkpoint`)."""
        saved = pending.checkpointed
        changed = [
            (item, mark) for item in pending.snapshot()
            if saved.get(item.id) != (mark := _checkpoint_mark(item))
        ]
        if not changed:
            return
        try:
            self.store.save_checkpoint(thread.id, [item for item, _ in changed], set(saved), context)
        except Exception:  # a lost checkpoint only delays what others see
            logger.warning("Could not checkpoint an answer in %s.", thread.id, exc_info=True)
            return
        saved.update((item.id, mark) for item, mark in changed)

    def _save_stopped_start(
        self,
        thread: ThreadMetadata,
        token: str,
        message: UserMessageItem,
        context: TContext,
        *,
        new: bool,
    ) -> None:
        """A turn stopped while its start was saved (which may or may not have been
        committed): save the thread and message step by step (each tolerates what
        exists), note the stop, and give back the lease if it was taken."""
        try:
            if new:
                self.store.save_thread(thread, context)
            for attachment in message.attachments:
                self.store.save_attachment(attachment, context)
            self.store.add_thread_item(thread.id, message, context)
            self.handle_stream_cancelled(thread, [], context)
            self.store.release_turn(thread.id, token, context)
        except Exception:
            logger.exception("Could not save the message of a stopped turn in %s.", thread.id)

    @staticmethod
    def _quietly(
        step: t.Callable[..., t.Any], thread_id: str, *args: t.Any, **kwargs: t.Any
    ) -> None:
        """A store step of a turn that is ending anyway: a failure is only logged."""
        try:
            step(thread_id, *args, **kwargs)
        except Exception:
            logger.exception("Could not end the turn on thread %s (%s).", thread_id, step.__name__)

    def cancel_turn(self, thread_id: str, context: TContext, *, wait: float = 5.0) -> bool:
        """Stop the thread's running turn, wherever it runs (the explicit Stop).

        Its partial answer and the cancel note are saved as for a client that
        went away, and the thread is free for the next turn when this returns
        (after up to *wait* seconds; a process that does not answer in time,
        having died say, loses the lease). A turn of this process is stopped at
        once; one of another process through its lease, which that process
        looks at every second (:mod:`flask_chatkit.turns`).

        :return: whether a turn was running.
        :raises NotFoundError: the thread is unknown, or another user's.
        """
        self.load_for_turn(thread_id, context)  # 404 for unknown and foreign alike
        if self.running.stop(thread_id, wait=wait):
            return True
        marked = self.store.request_cancel(thread_id, context)
        if marked is None:
            return False
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if self.store.turn_tokens([thread_id]).get(thread_id) != marked:
                return True  # given back (or a new turn already started)
            time.sleep(0.05)
        logger.warning("The turn of thread %s did not stop within %.0f s: its lease is "
                       "taken back.", thread_id, wait)
        self.store.release_turn(thread_id, marked, context)
        return True

    def watch_turn(self, thread_id: str, context: TContext) -> StreamResult | None:
        """The thread's running turn as a stream for one more client (re-attach),
        wherever it runs; ``None`` when no turn runs (see :mod:`flask_chatkit.watch`).

        :raises NotFoundError: the thread is unknown, or another user's.
        """
        thread, live = self.load_for_turn(thread_id, context)
        running = self.running.get(thread.id)
        if running is not None:
            return StreamResult(follow_running(running))
        if not live:
            return None
        interval = self.checkpoint_interval or CHECK_INTERVAL
        return StreamResult(follow_stored(self.store, thread, context, interval))

    def _lease_length(self) -> float:
        if self.running.timed:
            return min(self.lease_seconds, self.turn_timeout)
        return self.turn_timeout

    def _lease_end(self) -> datetime:
        return utcnow() + timedelta(seconds=self._lease_length())

    def load_for_turn(self, thread_id: str, context: TContext) -> tuple[ThreadMetadata, bool]:
        """The thread, and whether a turn runs on it now; a turn whose process died
        (its lease ran out unreleased) is closed first, with a note after what its
        checkpoints kept (:meth:`interrupted_notes`).

        :raises NotFoundError: the thread is unknown, or another user's.
        """
        thread, lease = self.store.load_thread_and_lease(thread_id, context)
        if lease is None:
            return thread, False
        if lease.live() or self.running.get(thread.id) is not None:
            return thread, True
        notes = self.interrupted_notes(thread, context)
        if self.store.close_abandoned_turn(thread.id, lease.token, notes, context):
            logger.warning("The turn on thread %s was left unfinished (its worker stopped): "
                           "closed with a note.", thread.id)
        return thread, False

    def interrupted_notes(self, thread: ThreadMetadata, context: TContext) -> list[t.Any]:
        """What follows an answer the server could not finish: a hidden note for the
        model and a visible one for the user (in their language) saying to retry."""
        locale = getattr(context, "locale", None)
        now = utcnow()
        return [
            SDKHiddenContextItem(
                id=self.store.generate_item_id("sdk_hidden_context", thread, context),
                thread_id=thread.id, created_at=now, content=INTERRUPTED_TEXT,
            ),
            TaskItem(
                id=self.store.generate_item_id("task", thread, context),
                thread_id=thread.id, created_at=now,
                task=CustomTask(
                    title=TEXTS.text("turn.interrupted", locale),
                    content=TEXTS.text("turn.interrupted.detail", locale),
                    icon="info",
                ),
            ),
        ]

    def _save_interrupted(
        self, thread: ThreadMetadata, pending_items: list[t.Any], context: TContext
    ) -> None:
        """Persist what a turn its process stopped (a shutdown) had, and the notes."""
        for item in [*kept_when_stopped(pending_items), *self.interrupted_notes(thread, context)]:
            self.store.add_thread_item(thread.id, item, context)

    def _add_client_tool_output(self, params: t.Any, context: TContext) -> StreamResult:
        self._require("respond")
        thread, _ = self.load_for_turn(params.thread_id, context)
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

        return StreamResult(self._exclusive(thread, context, events(), unfinished), unfinished)

    def _add_structured_input(self, params: t.Any, context: TContext) -> StreamResult:
        self._require("respond")
        thread, _ = self.load_for_turn(params.thread_id, context)
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
                if not usable:
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

        return StreamResult(self._exclusive(thread, context, events(), pending), pending)

    def _retry_after_item(self, params: t.Any, context: TContext) -> StreamResult:
        self._require("respond")
        thread, _ = self.load_for_turn(params.thread_id, context)
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

        return StreamResult(self._exclusive(thread, context, events(), pending), pending)

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

    def _custom_action(self, params: t.Any, context: TContext) -> StreamResult:
        self._require("action")
        thread, _ = self.load_for_turn(params.thread_id, context)
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
            ),
            pending,
        )

    # --- JSON request types ------------------------------------------------------

    def _sync_custom_action(self, params: t.Any, context: TContext) -> JSONResult:
        self._require("sync_action")
        thread = self.store.load_thread(params.thread_id, context)
        sender = self._load_sender(thread, params, context)
        result = self.sync_action(thread, params.action, sender, context)
        if not isinstance(result, SyncCustomActionResponse):
            result = SyncCustomActionResponse(updated_item=result)
        return JSONResult(dump_json(result))

    def _limit(self, limit: int | None) -> int:
        return min(limit or self.page_size, self.max_page_size)

    def _get_by_id(self, params: t.Any, context: TContext) -> JSONResult:
        thread, running = self.load_for_turn(params.thread_id, context)
        items = self.store.load_thread_items(
            thread.id, None, self.page_size, "asc", context, include_hidden=False
        )
        self._refresh(items.data, context)
        shown = client_thread(thread, items)
        _show_running([shown], {thread.id} if running else set(), context)
        return JSONResult(dump_json(shown))

    def _list_threads(self, params: t.Any, context: TContext) -> JSONResult:
        page, running = self.store.load_threads_and_turns(
            self._limit(params.limit), params.after, params.order, context
        )
        out = Page(data=[client_thread(th) for th in page.data], has_more=page.has_more,
                   after=page.after)
        _show_running(out.data, running, context)
        return JSONResult(dump_json(out))

    def _update_thread(self, params: t.Any, context: TContext) -> JSONResult:
        thread = self.store.load_thread(params.thread_id, context)
        thread.title = params.title
        self.store.save_thread(thread, context)
        return JSONResult(dump_json(client_thread(thread)))

    def _list_items(self, params: t.Any, context: TContext) -> JSONResult:
        page = self.store.load_thread_items(
            params.thread_id, params.after, self._limit(params.limit), params.order, context,
            include_hidden=False,
        )
        self._refresh(page.data, context)
        return JSONResult(dump_json(page))

    def _attachments(self) -> AttachmentStore[TContext]:
        if self.attachment_store is None:
            raise NotImplementedHookError(
                "Attachments are not enabled: pass attachment_store= to ChatKit()."
            )
        return self.attachment_store

    def _refresh(self, items: t.Iterable[t.Any], context: TContext) -> None:
        """Let the attachment store renew what expires (signed preview URLs) in the
        attachments of *items* (messages or attachments) on their way out."""
        if self.attachment_store is None:
            return
        for item in items:
            for attachment in getattr(item, "attachments", None) or [item]:
                if getattr(attachment, "type", None) in ("image", "file"):
                    self.attachment_store.refresh(attachment, context)

    def _delete_thread(self, params: t.Any, context: TContext) -> None:
        """Delete the thread, then its attachments: records and bytes."""
        attachments = self.store.load_thread_attachments(params.thread_id, context)
        self.store.delete_thread(params.thread_id, context)
        for attachment in attachments:
            if self.attachment_store is not None:
                self.attachment_store.delete_attachment(attachment, context)
            try:
                self.store.delete_attachment(attachment.id, context)
            except NotFoundError:
                pass  # removed meanwhile (e.g. by attachments.delete)

    def _create_attachment(self, params: t.Any, context: TContext) -> JSONResult:
        attachment = self._attachments().create_attachment(params, context)
        self.store.save_attachment(attachment, context)
        return JSONResult(dump_json(attachment))

    def _delete_attachment(self, params: t.Any, context: TContext) -> JSONResult:
        backend = self._attachments()
        attachment = self.store.load_attachment(params.attachment_id, context)
        backend.delete_attachment(attachment, context)  # bytes first, then the record
        self.store.delete_attachment(attachment.id, context)
        return JSONResult(b"{}")

    def _transcribe(self, params: t.Any, context: TContext) -> JSONResult:
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
        if self.max_files_per_message and len(unique) > self.max_files_per_message:
            raise RequestError(
                f"A message may attach at most {self.max_files_per_message} files "
                f"(CHATKIT_MAX_FILES_PER_MESSAGE); this one has {len(unique)}.",
                code="too_many_files",
                field="params.input.attachments",
            )
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

    def _pipeline(
        self,
        thread: ThreadMetadata,
        context: TContext,
        produce: t.Callable[[], Events | None],
        pending: Pending,
    ) -> t.Generator[t.Any, None, None]:
        """Run a hook's events through persistence, hiding and thread-change checks,
        keeping the unfinished items in *pending* (what a cancel saves).

        A finished assistant message is held (:meth:`Pending.hold`) until the
        next event: when none follows, it is saved, and its ``thread.item.done``
        sent, with the turn's end in one step (see :meth:`_exclusive`), as is a
        thread the hook changed last.
        """
        snapshot = ThreadSnapshot(thread)
        source: t.Iterator[t.Any] | None = None
        try:
            try:
                yield StreamOptionsEvent(stream_options=self.get_stream_options(thread, context))
                source = iter(produce() or ())
                for raw in source:
                    event = coerce_event(raw)
                    if pending.held is not None:  # more follows: save the held message now
                        yield self._save_held(thread, pending, context)
                    if event.type == "thread.item.done" and event.item.type == "assistant_message":
                        pending.hold(event.item)
                    elif not self._persist(thread, event, pending, context):  # not hidden
                        yield event
                    if snapshot.changed(thread):
                        self.store.save_thread(thread, context)
                        yield ThreadUpdatedEvent(thread=client_thread(thread))
            except Exception as exc:  # a hook or store failed: one error event, clean end
                if pending.held is not None:
                    try:
                        yield self._save_held(thread, pending, context)
                    except Exception:
                        logger.exception("Could not save a finished answer in %s.", thread.id)
                yield error_event(exc)
            pending.thread_changed = snapshot.changed(thread)
        except BaseException:
            # GeneratorExit (client gone) or GreenletExit (stream killed): save what we have.
            close_quietly(source)
            try:
                if snapshot.changed(thread):
                    self.store.save_thread(thread, context)
                if pending.interrupted:  # the process is going away, not the user
                    self._save_interrupted(thread, pending.items(), context)
                else:
                    self.handle_stream_cancelled(thread, pending.items(), context)
            except Exception:
                logger.exception("Could not persist a cancelled stream of thread %s.", thread.id)
            raise
        finally:
            close_quietly(source)

    def _save_held(self, thread: ThreadMetadata, pending: Pending, context: TContext) -> t.Any:
        """Save the held finished message; its ``thread.item.done`` event."""
        item = pending.held
        self._save_finished(thread, item, pending, context)
        pending.discard(item.id)
        return ThreadItemDoneEvent(item=item)

    def _save_finished(
        self, thread: ThreadMetadata, item: t.Any, pending: Pending, context: TContext
    ) -> None:
        """Save a finished item: over its checkpoint if it has one, else a new row."""
        if item.id in pending.checkpointed:
            self.store.save_item(thread.id, item, context)
        else:
            self.store.add_thread_item(thread.id, item, context)

    def _persist(
        self, thread: ThreadMetadata, event: t.Any, pending: Pending, context: TContext
    ) -> bool:
        """Apply one event to the store; return whether it must be hidden from the client."""
        kind = event.type
        if kind == "thread.item.updated":
            pending.update(event.item_id, event.update)
        elif kind == "thread.item.added":
            pending.add(event.item)
        elif kind == "thread.item.done":
            # pending until stored: a stop that lands during the save still saves it
            self._save_finished(thread, event.item, pending, context)
            pending.discard(event.item.id)
            return event.item.type in HIDDEN_ITEM_TYPES
        elif kind == "thread.item.replaced":
            self.store.save_item(thread.id, event.item, context)
            pending.discard(event.item.id)
            return event.item.type in HIDDEN_ITEM_TYPES
        elif kind == "thread.item.removed":
            pending.discard(event.item_id)
            self.store.delete_thread_item(thread.id, event.item_id, context)
        return False


__all__ = [
    "CANCELLED_TEXT",
    "INTERRUPTED_TEXT",
    "ChatKitServer",
    "JSONResult",
    "RequestContext",
    "StreamResult",
    "parse_request",
]
