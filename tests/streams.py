"""An SSE response read chunk by chunk, the way a browser reads it.

The Flask test client normally buffers a whole response; :class:`Stream` asks
for it unbuffered, so a test can stop mid-stream, look at the store, and then
read on or go away (``close()`` is what a WSGI server does when the client
disconnects). The request and every event are validated by ``tests/wire.py``.
"""

from __future__ import annotations

import json
import typing as t

from . import wire


def paced(chunks: t.Iterable[str], delay: float) -> t.Iterator[str]:
    """*chunks* one by one, *delay* seconds apart (gevent's sleep): a model streaming."""
    import gevent

    for chunk in chunks:
        gevent.sleep(delay)
        yield chunk


class Stream:
    """An unbuffered SSE response, read chunk by chunk like a browser would."""

    def __init__(self, client: t.Any, body: dict[str, t.Any]) -> None:
        wire.check_request(body)
        self.response = client.post(
            "/chatkit", data=json.dumps(body), content_type="application/json", buffered=False
        )
        assert self.response.status_code == 200
        self.chunks = iter(self.response.response)
        self.raw = b""

    @property
    def events(self) -> list[dict[str, t.Any]]:
        """Every event read so far, each validated."""
        events = wire.parse_frames(self.raw)
        for event in events:
            wire.check_event(event)
        return events

    def read_chunk(self) -> bytes:
        """Read one more chunk; the stream must not have ended."""
        chunk = next(self.chunks, None)
        assert chunk is not None, f"the stream ended early: {self.events}"
        self.raw += chunk
        return chunk

    def read_until(self, done: t.Callable[[list[dict[str, t.Any]]], object]) -> None:
        """Read until *done* (given the events so far) is true."""
        while not done(self.events):
            self.read_chunk()

    def finish(self) -> list[dict[str, t.Any]]:
        """Read to the end, close, and return every event."""
        for chunk in self.chunks:
            self.raw += chunk
        self.close()
        return self.events

    def close(self) -> None:
        """The client goes away: the WSGI server closes the response iterator."""
        self.response.close()


def deltas(events: list[dict[str, t.Any]]) -> list[str]:
    """The assistant text deltas among *events*, in order."""
    return [
        e["update"]["delta"]
        for e in events
        if e["type"] == "thread.item.updated"
        and e["update"]["type"] == "assistant_message.content_part.text_delta"
    ]
