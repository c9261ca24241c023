"""The turns running in this process, so that a Stop reaches them (no Flask here).

A turn is registered while it holds its thread's lease (:meth:`RunningTurns.enter`).
:meth:`RunningTurns.stop` ends a turn of this process at once: under gevent the
greenlet running it gets ``GreenletExit`` wherever it waits (for the model, say),
and the core's cancel path saves the partial answer with the cancel note, as for
a client that went away; elsewhere the turn stops at its next event.

A Stop asked of another process reaches the turn through the store: the lease
is marked (:meth:`~flask_chatkit.store.Store.request_cancel`), and every
process looks at the leases of its running turns once per :data:`CHECK_INTERVAL`
(:meth:`RunningTurns.stop_lost`, run by the web layer's watcher); a turn whose
lease is no longer its own (marked, or taken over after it ran out) is stopped.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import time
import typing as t

logger = logging.getLogger("flask_chatkit")

#: What a lease token becomes when a Stop was asked for its turn.
CANCEL_PREFIX = "cancel:"
#: Seconds between two looks at the leases of this process's turns.
CHECK_INTERVAL = 1.0
#: Events a watcher of a running turn may fall behind before it is dropped.
FEED_SIZE = 1024
#: What a feed gets when its turn has ended (or it fell too far behind).
END = object()


class Feed:
    """The events of a running turn of this process, for one watcher
    (``GET {prefix}/threads/<id>/events``): published by the turn as it hands
    them to its own client, read by the watcher's stream (:meth:`get`)."""

    def __init__(self, size: int = FEED_SIZE) -> None:
        self._queue: queue.Queue[t.Any] = queue.Queue(maxsize=size + 1)
        self._size = size
        #: Whether the watcher fell more than the feed's size behind (and was dropped).
        self.overflowed = False
        self.closed = False

    def put(self, event: t.Any) -> None:
        if self.closed:
            return
        if self._queue.qsize() >= self._size:  # a watcher that does not read
            self.overflowed = True
            self.close()
            return
        self._queue.put_nowait(event)

    def close(self) -> None:
        """No more events: the watcher's stream ends once it read the rest."""
        if not self.closed:
            self.closed = True
            self._queue.put_nowait(END)

    def get(self, timeout: float | None = None) -> t.Any:
        """The next event, or :data:`END`; raises :class:`queue.Empty` after *timeout*."""
        return self._queue.get(timeout=timeout)


def cancel_token(token: str) -> str:
    """The lease token of a turn whose Stop was asked (see :data:`CANCEL_PREFIX`)."""
    return CANCEL_PREFIX + token


@dataclasses.dataclass(eq=False)
class Running:
    """One running turn: its thread, its lease token, and who runs it."""

    thread_id: str
    token: str
    #: The gevent greenlet running the turn (``None`` outside gevent).
    greenlet: t.Any = None
    #: Set by a Stop; a turn outside gevent ends at its next event.
    stopped: bool = False
    #: The turn's thread (its own status: the running overlay is only shown on reads).
    thread: t.Any = None
    #: The turn's record of its unfinished items (:class:`~flask_chatkit.events.Pending`).
    pending: t.Any = None
    #: The watchers of the turn: each gets the events its client gets.
    feeds: list[Feed] = dataclasses.field(default_factory=list)
    #: When the turn last produced an event (``time.monotonic()``).
    last_event: float = dataclasses.field(default_factory=time.monotonic)

    def watch(self) -> tuple[list[t.Any], Feed]:
        """Copies of the turn's unfinished items as they stand, and a feed of the
        events from now on (nothing can happen between the two under gevent,
        where the turn runs only when the watcher waits)."""
        items = self.pending.snapshot() if self.pending is not None else []
        feed = Feed()
        self.feeds.append(feed)
        return items, feed

    def unwatch(self, feed: Feed) -> None:
        if feed in self.feeds:
            self.feeds.remove(feed)

    def publish(self, event: t.Any) -> None:
        """Hand *event* to every watcher."""
        for feed in self.feeds:
            feed.put(event)

    def end(self) -> None:
        """The turn ended: every watcher's stream ends after the events it has."""
        for feed in self.feeds:
            feed.close()
        self.feeds = []


def _current_greenlet() -> t.Any:
    try:
        from gevent import Greenlet
        from gevent import getcurrent
        from gevent import monkey
    except ImportError:  # pragma: no cover - gevent is a dependency
        return None
    current = getcurrent()
    if not monkey.is_module_patched("threading") or not isinstance(current, Greenlet):
        return None
    return current


class RunningTurns:
    """The turns this process runs, by thread id."""

    def __init__(self) -> None:
        self._turns: dict[str, Running] = {}
        #: Called when a turn starts: the web layer starts its lease watcher.
        self.on_enter: t.Callable[[], None] | None = None
        #: Whether a timer renews the leases of this process's turns (the web
        #: layer's watcher, under gevent): leases are then short, and renewed
        #: whether or not the responder speaks. Otherwise each turn renews its
        #: own lease as its events flow.
        self.timed = False

    def __len__(self) -> int:
        return len(self._turns)

    def enter(
        self, thread_id: str, token: str, thread: t.Any = None, pending: t.Any = None
    ) -> Running:
        """Register the turn that now holds *thread_id*'s lease under *token*."""
        running = Running(thread_id, token, _current_greenlet(), thread=thread, pending=pending)
        self._turns[thread_id] = running
        if self.on_enter is not None:
            self.on_enter()
        return running

    def leave(self, running: Running) -> None:
        if self._turns.get(running.thread_id) is running:
            del self._turns[running.thread_id]

    def get(self, thread_id: str) -> Running | None:
        """The thread's turn, if this process runs it."""
        return self._turns.get(thread_id)

    def tokens(self) -> dict[str, str]:
        """Each running turn's thread id and lease token."""
        return {thread_id: running.token for thread_id, running in self._turns.items()}

    def stop(self, thread_id: str, *, wait: float = 0.0) -> bool:
        """Stop the thread's turn if this process runs it; whether it did.

        With *wait*, wait up to that many seconds for the turn to have saved
        what it had and given back its lease.
        """
        running = self._turns.get(thread_id)
        if running is None:
            return False
        running.stopped = True
        victim = running.greenlet
        if victim is not None and not victim.dead:
            from gevent import getcurrent

            if victim is not getcurrent():
                victim.kill(block=wait > 0, timeout=wait or None)
        return True

    def stop_silent(self, limit: float, now: float | None = None) -> list[str]:
        """Stop the turns that produced nothing for *limit* seconds (a hung
        responder must not hold its thread for ever); their thread ids."""
        now = time.monotonic() if now is None else now
        silent = [tid for tid, running in self._turns.items() if now - running.last_event > limit]
        for thread_id in silent:
            logger.warning(
                "Stopping the turn of thread %s: it produced nothing for %.0f s "
                "(CHATKIT_TURN_TIMEOUT).",
                thread_id,
                limit,
            )
            self.stop(thread_id)
        return silent

    def interrupt_all(self, wait: float) -> int:
        """Stop every turn of this process because the process is going away: each
        saves what it has with a note that it was interrupted (not a cancel).
        Waits up to *wait* seconds for them; how many there were."""
        turns = list(self._turns.values())
        for running in turns:
            if running.pending is not None:
                running.pending.interrupted = True
            self.stop(running.thread_id)
        deadline = time.monotonic() + wait
        for running in turns:
            victim = running.greenlet
            if victim is not None and not victim.dead:
                victim.join(timeout=max(0.0, deadline - time.monotonic()))
        return len(turns)

    def stop_lost(self, looked: t.Mapping[str, str], held: t.Mapping[str, str | None]) -> list[str]:
        """Stop the turns whose lease the store no longer shows as theirs; their
        thread ids. *looked* is what :meth:`tokens` said when the store was asked,
        *held* what the store answered (thread id -> token): a turn that started
        or ended meanwhile is not judged by an answer that predates it."""
        lost = []
        for thread_id, token in looked.items():
            running = self._turns.get(thread_id)
            if running is not None and running.token == token and held.get(thread_id) != token:
                lost.append(thread_id)
        for thread_id in lost:
            logger.info("Stopping the turn of thread %s: its lease was cancelled.", thread_id)
            self.stop(thread_id)
        return lost


__all__ = [
    "CANCEL_PREFIX",
    "CHECK_INTERVAL",
    "END",
    "FEED_SIZE",
    "Feed",
    "Running",
    "RunningTurns",
    "cancel_token",
]
