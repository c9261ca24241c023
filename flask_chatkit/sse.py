"""Server-Sent Events: framing, headers, heartbeats and disconnects.

A stream is the :class:`~flask_chatkit.turn_engine.StreamResult` of the core, encoded
as ``data: <compact JSON>\\n\\n`` frames. With a heartbeat interval, the core
runs in a producer greenlet (with its own app context, so it never shares a
database session with the request) that feeds a bounded queue; the response
generator sends ``: ping`` comments whenever the queue stays empty for an
interval. When the client goes away, the WSGI server closes the response
iterator; that kills the producer, and the core's cancel path persists the
partial answer.

With a :class:`Detach` (``CHATKIT_DISCONNECT = "finish"``) a client that goes
away only detaches: the core runs on to its end without anyone reading, so the
whole answer is saved as if the client had stayed (the request's greenlet or
thread waits for it, so a graceful worker restart waits for it too). At most
``CHATKIT_MAX_DETACHED_TURNS`` turns per process run detached; past that a
disconnect cancels, as without it.

A stopped answer is saved as the client got it: before each write the
connection is checked for a client that has closed its side (under gunicorn and
Werkzeug, which expose the socket), and the events produced but never handed
to the connection (still queued) are left out of what the core's cancel path
saves (:meth:`StreamResult.track_unsent`, asked at the cancel, when nothing
more is produced).
"""

from __future__ import annotations

import _socket
import contextvars
import logging
import select
import socket
import typing as t

from flask import Response
from flask import current_app
from flask import request
from flask import stream_with_context
from pydantic_core import to_json

from .types import AssistantMessageContentPartTextDelta
from .types import ThreadItemUpdatedEvent
from .types import dump_json

if t.TYPE_CHECKING:
    from flask import Flask

    from .turn_engine import StreamResult


class StreamWatch(t.Protocol):
    """Told how a stream goes, for the access log and metrics (see ``observe.Watch``)."""

    def started(self) -> None:
        """The stream's body began to run."""

    def event(self, event: t.Any) -> None:
        """*event* is handed to the client."""

    def ended(self, outcome: str) -> None:
        """The stream ended: ``completed``, ``cancelled`` (the client left), ``detached``
        (it left and the turn ran on) or ``error`` (the stream failed)."""


class _NoWatch:
    def started(self) -> None:
        pass

    def event(self, event: t.Any) -> None:
        pass

    def ended(self, outcome: str) -> None:
        pass


_NO_WATCH = _NoWatch()

logger = logging.getLogger("flask_chatkit")

#: Headers of every stream: no caching, no proxy buffering (nginx honours X-Accel-Buffering).
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
#: An SSE comment; clients ignore it, proxies and load balancers see traffic.
PING = b": ping\n\n"
#: Frames buffered between the producer and a slow client before the producer waits.
QUEUE_SIZE = 64
#: Seconds a disconnect waits for the cancel path to persist before giving up.
CANCEL_TIMEOUT = 30.0


def encode_event(event: t.Any) -> bytes:
    """One SSE frame: ``data: <compact JSON>`` and a blank line."""
    if type(event) is ThreadItemUpdatedEvent:
        frame = _text_delta_frame(event)
        if frame is not None:
            return frame
    return b"data: " + dump_json(event) + b"\n\n"


_DELTA_HEAD = b'data: {"type":"thread.item.updated","item_id":'
_DELTA_INDEX = b',"update":{"type":"assistant_message.content_part.text_delta","content_index":'
_DELTA_TEXT = b',"delta":'
_DELTA_TAIL = b"}}\n\n"


def _text_delta_frame(event: ThreadItemUpdatedEvent) -> bytes | None:
    """The frame of a text delta, the most frequent event by far, built from its
    three values: byte for byte what :func:`dump_json` writes, at a third of the
    cost. ``None`` unless every value has exactly the type the template assumes."""
    update = event.update
    if (
        type(update) is AssistantMessageContentPartTextDelta
        and event.type == "thread.item.updated"
        and update.type == "assistant_message.content_part.text_delta"
        and type(event.item_id) is str
        and type(update.content_index) is int
        and type(update.delta) is str
    ):
        return b"".join(
            (
                _DELTA_HEAD,
                to_json(event.item_id),
                _DELTA_INDEX,
                str(update.content_index).encode(),
                _DELTA_TEXT,
                to_json(update.delta),
                _DELTA_TAIL,
            )
        )
    return None


class Detach:
    """How many turns of this process may run on after their client left.

    :param limit: the most at once; past it a disconnect cancels (and says so
        in the log).
    :param silence: seconds a detached turn may go without an event before it
        is cancelled after all (``CHATKIT_TURN_TIMEOUT``): a hung responder must
        not hold its place for ever. Streams with heartbeats only: an inline
        stream's turn runs in the request's own greenlet, which only the
        responder can end.
    """

    def __init__(self, limit: int, silence: float = 120.0) -> None:
        self.limit = limit
        self.silence = silence
        #: Turns running detached now.
        self.running = 0
        #: Disconnects that cancelled because the limit was reached.
        self.refused = 0

    def acquire(self) -> bool:
        """Take a place for one more detached turn; ``False`` when none is left."""
        if self.running >= self.limit:
            self.refused += 1
            logger.warning(
                "A client left while %d turns already run detached "
                "(CHATKIT_MAX_DETACHED_TURNS): this turn is cancelled.",
                self.running,
            )
            return False
        self.running += 1
        return True

    def release(self) -> None:
        self.running -= 1

    def finish(self, result: StreamResult) -> bool:
        """Run *result* to its end without a reader, if a place is free; whether it did."""
        if not self.acquire():
            return False
        try:
            for _ in result:
                pass
        finally:
            self.release()
        return True


def sse_response(
    result: StreamResult,
    *,
    heartbeat_interval: float,
    detach: Detach | None = None,
    watch: StreamWatch | None = None,
) -> Response:
    """A streaming response for *result*, with heartbeats every *heartbeat_interval* s.

    An interval of 0 turns heartbeats off and runs the stream in the request's
    own greenlet or thread. With *detach*, a client that goes away does not
    cancel the turn (see the module docstring). *watch* is told when the stream
    starts, of each event handed to the client, and how it ended.
    """
    gone = client_gone_check(request.environ)
    watch = watch or _NO_WATCH
    if heartbeat_interval > 0:
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        body = _with_heartbeats(result, app, heartbeat_interval, gone, detach, watch)
    else:
        body = _inline(result, gone, detach, watch)
    return Response(stream_with_context(body), mimetype="text/event-stream", headers=SSE_HEADERS)


def client_gone_check(environ: t.Mapping[str, t.Any]) -> t.Callable[[], bool]:
    """A check, cheap enough to run before every write, of whether the client has
    closed its side of the connection (a Stop, a closed tab).

    Without it a stream learns of a departed client only when a write fails,
    which is one or two writes after the fact: text the client never showed
    would be saved as part of the answer. Uses the socket gunicorn or
    Werkzeug's server put in the environ; elsewhere the check says "no".
    A client that half-closes its sending side (``shutdown(SHUT_WR)``) while it
    still reads counts as gone: browsers and HTTP client libraries do not.
    """
    sock = environ.get("gunicorn.socket") or environ.get("werkzeug.socket")
    if sock is None:
        return lambda: False
    raw = getattr(sock, "_sock", None)
    if isinstance(raw, _socket.socket) and raw.gettimeout() == 0.0:
        # gevent's socket (gunicorn's gevent worker): a peek on the non-blocking
        # socket under it answers in one system call
        def peek() -> bool:
            try:
                return raw.recv(1, socket.MSG_PEEK) == b""
            except BlockingIOError:  # nothing to read: still there
                return False
            except (OSError, ValueError):  # reset, or a socket closed already
                return True

        return peek

    def gone() -> bool:
        try:
            # a zero timeout never blocks, also under gevent's patched select
            readable, _, _ = select.select([sock], [], [], 0)
            # readable with nothing to read: the client sent FIN (or a reset, raised)
            return bool(readable) and sock.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):  # reset, or a socket closed already
            return True

    return gone


def _inline(
    result: StreamResult,
    gone: t.Callable[[], bool],
    detach: Detach | None,
    watch: StreamWatch,
) -> t.Iterator[bytes]:
    unsent: list[t.Any] = []  # an event the client left before it was handed on
    result.track_unsent(lambda: unsent)
    outcome = "cancelled"
    watch.started()
    try:
        for event in result:
            if gone():
                if detach is not None and detach.finish(result):
                    outcome = "detached"
                else:
                    unsent.append(event)
                return
            watch.event(event)
            yield encode_event(event)
        outcome = "completed"
    except GeneratorExit:  # the server closed us: the client is gone
        if detach is not None and detach.finish(result):
            outcome = "detached"
        raise
    except Exception:
        outcome = "error"
        raise
    finally:
        try:
            # GeneratorExit from the server closing us lands here: cancel the core.
            result.close()
        finally:
            watch.ended(outcome)


def _with_heartbeats(
    result: StreamResult,
    app: Flask,
    interval: float,
    gone: t.Callable[[], bool],
    detach: Detach | None,
    watch: StreamWatch,
) -> t.Iterator[bytes]:
    import gevent
    from gevent.queue import Full
    from gevent.queue import Queue

    # (event, frame) pairs; the producer runs up to QUEUE_SIZE frames ahead
    queue: Queue = Queue(maxsize=QUEUE_SIZE)
    done = object()
    ping = object()  # put by the ticker: nothing was handed on for a while
    holding: t.Any = None  # the event the producer waits to queue
    detached = False  # the client left and the turn runs on: nothing is queued
    loop = gevent.get_hub().loop
    last_write = loop.now()  # the loop's cached clock: no system call
    last_event = last_write  # when the core last produced an event
    failed = False  # the core raised (logged by the producer)
    produced_all = False  # the core ran to its end, whoever read it
    outcome = "cancelled"

    def produce() -> None:
        nonlocal holding, last_event, failed, produced_all
        finished = False
        try:
            with app.app_context():
                try:
                    for event in result:
                        last_event = loop.now()
                        if detached:
                            continue
                        holding = event
                        queue.put((event, encode_event(event)))
                        holding = None
                    finished = True
                finally:
                    # Killed while waiting on the queue: close the core so it cancels.
                    result.close()
        except gevent.GreenletExit:  # a Stop, or the consumer's own kill
            finished = False
        except Exception:
            failed = True
            logger.exception("A ChatKit stream producer failed.")
        if finished:
            produced_all = True
            queue.put(done)
        else:
            try:
                queue.put_nowait(done)
            except Full:
                pass

    def tick() -> None:
        # In the hub, twice per interval: a ping once nothing went out for an
        # interval. One timer per stream instead of a timeout on every wait.
        if loop.now() - last_write >= interval and queue.empty():
            queue.put_nowait(ping)

    batch: list[tuple[t.Any, bytes]] = []  # taken from the queue, not yet handed on

    def unsent() -> list[t.Any]:
        # Asked by the core's cancel path (in the producer): queued, taken but not
        # handed on, or held by the producer. Read from a copy of the queue: taking
        # from it would wake a producer waiting to put.
        events = [event for event, _ in batch]
        queued = queue.copy()
        while not queued.empty():
            entry = queued.get_nowait()
            if entry is not done and entry is not ping:
                events.append(entry[0])
        if holding is not None:
            events.append(holding)
        return events

    result.track_unsent(unsent)
    watch.started()
    # in a copy of this context: the producer's log lines carry the request id
    producer = gevent.spawn(contextvars.copy_context().run, produce)
    ticker = loop.timer(interval / 2, interval / 2)
    ticker.start(tick)
    try:
        while True:
            entry = queue.get()
            if entry is ping:
                if producer.dead and queue.empty():
                    outcome = "error" if failed else "completed"
                    return
                if gone():
                    return
                last_write = loop.now()
                yield PING
                continue
            if entry is done:
                outcome = "error" if failed else "completed"
                return
            # Send what is ready in one write: fewer syscalls under load.
            batch = [entry]
            end = False
            while not queue.empty():
                entry = queue.get_nowait()
                if entry is done:
                    end = True
                    break
                if entry is not ping:
                    batch.append(entry)
            if gone():
                return
            data = b"".join(frame for _, frame in batch)
            for event, _ in batch:
                watch.event(event)
            batch = []  # handed to the connection from here on
            last_write = loop.now()
            yield data
            if end:
                outcome = "error" if failed else "completed"
                return
    finally:
        ticker.stop()
        ticker.close()
        try:
            if not producer.dead and detach is not None and detach.acquire():
                detached = True
                if outcome == "cancelled":
                    outcome = "detached"
                try:
                    while not queue.empty():  # a producer waiting to put goes on
                        queue.get_nowait()
                    while not producer.dead:
                        producer.join(timeout=detach.silence)
                        if not producer.dead and loop.now() - last_event >= detach.silence:
                            logger.warning(
                                "A detached turn produced nothing for %.0f s "
                                "(CHATKIT_TURN_TIMEOUT): it is cancelled.",
                                detach.silence,
                            )
                            break
                finally:
                    detach.release()
        finally:  # also when the server kills this greenlet while it waits
            try:
                if not producer.dead:
                    producer.kill(block=True, timeout=CANCEL_TIMEOUT)
            finally:
                if outcome == "cancelled" and produced_all:
                    outcome = "completed"  # the client left after the whole turn was produced
                watch.ended(outcome)


__all__ = ["PING", "SSE_HEADERS", "Detach", "StreamWatch", "encode_event", "sse_response"]
