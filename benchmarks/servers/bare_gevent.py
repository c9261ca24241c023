"""(c) The ceiling: a bare WSGI app (no Flask) streaming pre-built SSE bytes under gevent.

::

    gunicorn -k gevent -w 1 --worker-connections 10000 --backlog 4096 \\
        -b 127.0.0.1:8000 benchmarks.servers.bare_gevent:app

For every POST it reads the body and streams the bytes of a real flask_chatkit
turn (the same events with the same sizes: stream options, thread created, user
message, assistant message added, content part added, K deltas, part done, item
done), sleeping d between the deltas. The bytes are recorded once, at import,
from flask_chatkit itself (Flask test client, in-memory store, no heartbeat) in
a child process, so that this worker does not carry Flask and pydantic in its
memory. No auth, no store, no JSON: what gunicorn + gevent cost on their own.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import typing as t

import gevent

K = int(os.environ.get("BENCH_K", "100"))
DELAY = float(os.environ.get("BENCH_DELAY", "0.02"))
HEADERS = [
    ("Content-Type", "text/event-stream"),
    ("Cache-Control", "no-cache"),
    ("X-Accel-Buffering", "no"),
]
DELTA_MARK = b'content_part.text_delta"'


def record_frames() -> list[bytes]:
    """The SSE frames of one flask_chatkit ``threads.create`` turn (run in a child process)."""
    from flask import Flask
    from flask_login import LoginManager
    from flask_login import UserMixin

    from flask_chatkit import ChatKit
    from flask_chatkit import InMemoryStore
    from flask_chatkit.responses import stream_text

    from . import settings

    k, _, chunk = settings()

    class User(UserMixin):
        id = "0"

    app = Flask(__name__)
    app.config.update(SECRET_KEY="bench", CHATKIT_HEARTBEAT_INTERVAL=0)
    login = LoginManager(app)
    login.user_loader(lambda user_id: User())
    login.request_loader(lambda request: User())
    chatkit = ChatKit(store=InMemoryStore())

    @chatkit.respond
    def respond(thread: t.Any, user_message: t.Any, context: t.Any) -> t.Iterator[t.Any]:
        yield from stream_text(thread, [chunk] * k)

    chatkit.init_app(app)
    from benchmarks.loadgen import BODY

    response = app.test_client().post(
        "/chatkit",
        data=BODY,
        headers={"Authorization": "Bearer token-0", "Content-Type": "application/json"},
    )
    assert response.status_code == 200, response.data
    body = response.get_data()
    return [frame + b"\n\n" for frame in body.split(b"\n\n") if frame]


def load_frames() -> tuple[bytes, list[bytes], bytes]:
    """``(head, deltas, tail)``: the frames before, of and after the text deltas."""
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.servers.bare_gevent", "--record"],
        capture_output=True, check=True, timeout=120, env=os.environ.copy(),
    )
    frames = [base64.b64decode(f) for f in json.loads(done.stdout)]
    first = next(i for i, f in enumerate(frames) if DELTA_MARK in f)
    last = max(i for i, f in enumerate(frames) if DELTA_MARK in f)
    return b"".join(frames[:first]), frames[first : last + 1], b"".join(frames[last + 1 :])


def app(environ: dict[str, t.Any], start_response: t.Callable[..., t.Any]) -> t.Iterable[bytes]:
    if environ.get("REQUEST_METHOD") != "POST":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]
    environ["wsgi.input"].read()
    start_response("200 OK", HEADERS)
    return stream()


def stream() -> t.Iterator[bytes]:
    yield HEAD
    for i, frame in enumerate(DELTAS):
        if i:
            gevent.sleep(DELAY)
        yield frame
    yield TAIL


if __name__ == "__main__" and sys.argv[1:] == ["--record"]:
    print(json.dumps([base64.b64encode(f).decode() for f in record_frames()]))
else:
    HEAD, DELTAS, TAIL = load_frames()
