"""Server-Sent Events: framing, headers, heartbeats and disconnects.

A stream is the :class:`~flask_chatkit.server.StreamResult` of the core, encoded
as ``data: <compact JSON>\\n\\n`` frames. With a heartbeat interval, the core
runs in a producer greenlet (with its own app context, so it never shares a
database session with the request) that feeds a bounded queue; the response
generator sends ``: ping`` comments whenever the queue stays empty for an
interval. When the client goes away, the WSGI server closes the response
iterator; that kills the producer, and the core's cancel path persists the
partial answer.
"""

from __future__ import annotations

import logging
import typing as t

from flask import Response
from flask import current_app
from flask import stream_with_context
from pydantic_core import to_json

from .types import AssistantMessageContentPartTextDelta
from .types import ThreadItemUpdatedEvent
from .types import dump_json

if t.TYPE_CHECKING:
    from flask import Flask

    from .server import StreamResult

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
        return b"".join((
            _DELTA_HEAD, to_json(event.item_id), _DELTA_INDEX,
            str(update.content_index).encode(), _DELTA_TEXT, to_json(update.delta), _DELTA_TAIL,
        ))
    return None


def sse_response(result: StreamResult, *, heartbeat_interval: float) -> Response:
    """A streaming response for *result*, with heartbeats every *heartbeat_interval* s.

    An interval of 0 turns heartbeats off and runs the stream in the request's
    own greenlet or thread.
    """
    if heartbeat_interval > 0:
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        body = _with_heartbeats(result, app, heartbeat_interval)
    else:
        body = _inline(result)
    return Response(
        stream_with_context(body), mimetype="text/event-stream", headers=SSE_HEADERS
    )


def _inline(result: StreamResult) -> t.Iterator[bytes]:
    try:
        for event in result:
            yield encode_event(event)
    finally:
        # GeneratorExit from the server closing us lands here: cancel the core.
        result.close()


def _with_heartbeats(result: StreamResult, app: Flask, interval: float) -> t.Iterator[bytes]:
    import gevent
    from gevent.queue import Empty
    from gevent.queue import Full
    from gevent.queue import Queue

    queue: Queue = Queue(maxsize=QUEUE_SIZE)
    done = object()

    def produce() -> None:
        finished = False
        try:
            with app.app_context():
                try:
                    for event in result:
                        queue.put(encode_event(event))
                    finished = True
                finally:
                    # Killed while waiting on the queue: close the core so it cancels.
                    result.close()
        except gevent.GreenletExit:
            return
        except Exception:
            logger.exception("A ChatKit stream producer failed.")
        if finished:
            queue.put(done)
        else:
            try:
                queue.put_nowait(done)
            except Full:
                pass

    producer = gevent.spawn(produce)
    try:
        while True:
            try:
                chunk = queue.get(timeout=interval)
            except Empty:
                if producer.dead and queue.empty():
                    return
                yield PING
                continue
            if chunk is done:
                return
            # Send what is ready in one write: fewer syscalls under load.
            batch = [chunk]
            end = False
            while not queue.empty():
                chunk = queue.get_nowait()
                if chunk is done:
                    end = True
                    break
                batch.append(chunk)
            yield b"".join(batch)
            if end:
                return
    finally:
        if not producer.dead:
            producer.kill(block=True, timeout=CANCEL_TIMEOUT)


__all__ = ["PING", "SSE_HEADERS", "encode_event", "sse_response"]
