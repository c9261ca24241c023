"""The turn engine of the protocol core: leases, persistence, checkpoints, Stop and watch.

A *turn* is one hook-driven stream on a thread (a user message and its answer,
a widget action, tool output, ...). :class:`TurnEngine` runs it: it holds the
thread's lease so that two turns never interleave (:meth:`TurnEngine._exclusive`),
persists the hook's events as they pass (:meth:`TurnEngine._pipeline`), saves
checkpoints of the unfinished answer, and saves what a stopped or interrupted
turn had. It also serves the requests that reach a running turn from elsewhere
(:meth:`~TurnEngine.cancel_turn`, :meth:`~TurnEngine.watch_turn`).

:class:`~flask_chatkit.server.ChatKitServer` builds on it with parsing, dispatch,
the request handlers and the hooks; nothing here imports Flask.
"""

from __future__ import annotations

import logging
import secrets
import time
import typing as t
from datetime import datetime
from datetime import timedelta

from . import access_log
from .errors import ErrorCode
from .events import Pending
from .events import ThreadSnapshot
from .events import close_quietly
from .events import coerce_event
from .events import error_event
from .i18n import Catalog
from .turns import CHECK_INTERVAL
from .turns import RunningTurns
from .types import HIDDEN_ITEM_TYPES
from .types import AssistantMessageItem
from .types import CustomTask
from .types import ErrorEvent
from .types import SDKHiddenContextItem
from .types import StreamOptionsEvent
from .types import TaskItem
from .types import ThreadCreatedEvent
from .types import ThreadItemDoneEvent
from .types import ThreadMetadata
from .types import ThreadUpdatedEvent
from .types import client_thread
from .types import utcnow
from .watch import follow_running
from .watch import follow_stored

if t.TYPE_CHECKING:
    from .store import Lease
    from .store import Store
    from .types import StreamOptions
    from .types import UserMessageItem

logger = logging.getLogger("flask_chatkit")

TContext = t.TypeVar("TContext")
Events = t.Iterable[t.Any]

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

#: Events of a turn its watchers do not get: they belong to the start of a stream.
_NOT_WATCHED = (StreamOptionsEvent, ThreadCreatedEvent)


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

    def wrap(
        self,
        wrapper: t.Callable[[t.Generator[t.Any, None, None]], t.Generator[t.Any, None, None]],
    ) -> None:
        """Run the stream through *wrapper* (a generator function taking the events,
        e.g. one that traces each step); call it before iterating. The wrapper
        closes the events when it is closed."""
        self._events = wrapper(self._events)

    def then(self, more: t.Callable[[], t.Iterable[t.Any]]) -> None:
        """Send the events *more* returns after the stream's own, once these have all
        gone out (not when the stream is closed early). For events that are never
        stored, such as a ``notice``; call it before iterating."""

        def chained(events: t.Generator[t.Any, None, None]) -> t.Generator[t.Any, None, None]:
            yield from events  # a close reaches *events* (the cancel path) through here
            yield from more()

        self.wrap(chained)


def kept_when_stopped(items: t.Iterable[t.Any]) -> list[t.Any]:
    """What of a stopped turn's unfinished *items* is kept: the assistant
    messages with text (see
    :meth:`~flask_chatkit.server.ChatKitServer.handle_stream_cancelled`)."""
    return [
        item
        for item in items
        if isinstance(item, AssistantMessageItem)
        and any(part.text.strip() for part in item.content)
    ]


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
        yield ErrorEvent(code=ErrorCode.STREAM_ERROR, allow_retry=True)


class TurnEngine(t.Generic[TContext]):
    """Runs turns: the lease, the persistence of a hook's events, checkpoints,
    and what a stop or a shutdown saves. :class:`~flask_chatkit.server.ChatKitServer`
    subclasses it and documents the parameters.
    """

    def __init__(
        self,
        store: Store[TContext],
        *,
        turn_timeout: float = 120.0,
        checkpoint_interval: float = 1.0,
        lease_seconds: float = 15.0,
        max_turns_per_user: int | None = None,
    ) -> None:
        self.store = store
        self.max_turns_per_user = max_turns_per_user
        self.turn_timeout = turn_timeout
        self.lease_seconds = lease_seconds
        self.checkpoint_interval = checkpoint_interval
        #: The turns this process runs (what a Stop looks for first).
        self.running = RunningTurns()

    # --- override points, implemented by ChatKitServer ----------------------------

    def get_stream_options(self, thread: ThreadMetadata, context: TContext) -> StreamOptions:
        """Options sent first in every hook-driven stream; see
        :meth:`flask_chatkit.server.ChatKitServer.get_stream_options`."""
        raise NotImplementedError

    def handle_stream_cancelled(
        self, thread: ThreadMetadata, pending_items: list[t.Any], context: TContext
    ) -> None:
        """Persist what the user saw before stopping; see
        :meth:`flask_chatkit.server.ChatKitServer.handle_stream_cancelled`."""
        raise NotImplementedError

    # --- the lease ---------------------------------------------------------------

    @staticmethod
    def _not_saved() -> ErrorEvent:
        logger.exception("Could not save a user message.")
        return ErrorEvent(code=ErrorCode.CUSTOM, message=NOT_SAVED_TEXT, allow_retry=False)

    def _exclusive(
        self,
        thread: ThreadMetadata,
        context: TContext,
        events: t.Generator[t.Any, None, None],
        pending: Pending,
        *,
        message: UserMessageItem | None = None,
        new: bool = False,
        busy: bool = False,
    ) -> t.Generator[t.Any, None, None]:
        """Run *events* holding the thread's turn lease, so that two turns on one
        thread (two tabs, two workers) never interleave; a second one is refused.

        *busy*: :meth:`load_for_turn` found a turn on the thread when the request
        came. The lease is looked at again as the stream starts: still live, this
        turn is refused without trying it; run out since, and its process dead,
        that turn is closed with its note first (else the lease would be taken
        over without it); a stalled turn of this process loses it as before.

        The turn starts with one store step (:meth:`Store.begin_turn`: the *new*
        thread, the lease, the user *message*) and, when *events* run to their
        end, ends with one (:meth:`Store.end_turn`: the finished items the
        pipeline left in *pending*, the changed thread, the release); the events
        telling the client of what the end saves go out after it is saved.
        """
        token = secrets.token_hex(16)
        try:
            if busy:  # look again, now: never take over a lease that is live
                _, lease = self.store.load_thread_and_lease(thread.id, context)
                busy = lease is not None and lease.live()
                if not busy and self._close_abandoned(thread, lease, context):
                    if message is not None:
                        message.created_at = utcnow()  # after the note
            acquired = (
                False
                if busy
                else self.store.begin_turn(
                    thread,
                    token,
                    self._lease_end(),
                    message,
                    context,
                    new=new,
                    max_turns=self.max_turns_per_user,
                )
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
            access_log.mark("refused")  # a refusal, though the stream's status is 200
            if hasattr(context, "turn_refused"):
                context.turn_refused = True  # nothing ran: not a turn for the rate limits
            if acquired is None:  # the user's limit of running turns
                logger.warning(
                    "A turn of user %s was refused: %d turns of theirs run "
                    "(CHATKIT_MAX_TURNS_PER_USER).",
                    getattr(context, "user_id", "?"),
                    self.max_turns_per_user,
                )
                text = TEXTS.text("turn.too_many", getattr(context, "locale", None))
                text = text.format(count=self.max_turns_per_user)
            else:
                text = BUSY_TEXT
            yield ErrorEvent(code=ErrorCode.CUSTOM, message=text, allow_retry=False)
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
                    self.store.end_turn,
                    thread.id,
                    token,
                    items,
                    ended,
                    context,
                    saved=checkpointed,
                )
                released = True
                raise
            released = True
            ending: list[ThreadItemDoneEvent | ThreadUpdatedEvent] = [
                ThreadItemDoneEvent(item=item) for item in items
            ]
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

    def _lease_length(self) -> float:
        if self.running.timed:
            return min(self.lease_seconds, self.turn_timeout)
        return self.turn_timeout

    def _lease_end(self) -> datetime:
        return utcnow() + timedelta(seconds=self._lease_length())

    def _checkpoint(self, thread: ThreadMetadata, pending: Pending, context: TContext) -> None:
        """Save the running turn's unfinished items that changed since the last
        time, without waiting for the save (see :meth:`Store.save_checkpoint`)."""
        saved = pending.checkpointed
        changed = [
            (item, mark)
            for item in pending.snapshot()
            if saved.get(item.id) != (mark := _checkpoint_mark(item))
        ]
        if not changed:
            return
        try:
            self.store.save_checkpoint(
                thread.id, [item for item, _ in changed], set(saved), context
            )
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

    # --- Stop, re-attach, abandoned turns --------------------------------------------

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
        logger.warning(
            "The turn of thread %s did not stop within %.0f s: its lease is taken back.",
            thread_id,
            wait,
        )
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
        self._close_abandoned(thread, lease, context)
        return thread, False

    def _close_abandoned(
        self, thread: ThreadMetadata, lease: Lease | None, context: TContext
    ) -> bool:
        """Close the turn of a run-out *lease* whose process died (not one of this
        process: that one only stalled), with its note; whether it did."""
        if lease is None or lease.live() or self.running.get(thread.id) is not None:
            return False
        notes = self.interrupted_notes(thread, context)
        if not self.store.close_abandoned_turn(thread.id, lease.token, notes, context):
            return False
        logger.warning(
            "The turn on thread %s was left unfinished (its worker stopped): closed with a note.",
            thread.id,
        )
        return True

    def interrupted_notes(self, thread: ThreadMetadata, context: TContext) -> list[t.Any]:
        """What follows an answer the server could not finish: a hidden note for the
        model and a visible one for the user (in their language) saying to retry."""
        locale = getattr(context, "locale", None)
        now = utcnow()
        return [
            SDKHiddenContextItem(
                id=self.store.generate_item_id("sdk_hidden_context", thread, context),
                thread_id=thread.id,
                created_at=now,
                content=INTERRUPTED_TEXT,
            ),
            TaskItem(
                id=self.store.generate_item_id("task", thread, context),
                thread_id=thread.id,
                created_at=now,
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

    # --- the pipeline -------------------------------------------------------------

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
    "BUSY_TEXT",
    "INTERRUPTED_TEXT",
    "NOT_SAVED_TEXT",
    "TEXTS",
    "StreamResult",
    "TurnEngine",
    "kept_when_stopped",
]
