"""(c) The ceiling: a bare WSGI app (no Flask) streaming pre-built SSE bytes under gevent.

::

    gunicorn -k gevent -w 1 --worker-connections 10000 --backlog 4096 \\
        -b 127.0.0.1:8000 benchmarks.servers.bare_gevent:app

For every POST it reads the body and streams the bytes of a real example-app
``/slow`` turn (the same events with the same sizes: thread created, user
message, stream options, assistant message added, content part added, K
deltas, part done, item done), sleeping d between the deltas. The bytes are
recorded once, at import, from the example app itself (Flask test client, a
throwaway SQLite file, no heartbeat) in a child process, so that this worker
does not carry Flask and SQLAlchemy in its memory. No auth, no store, no JSON:
what gunicorn + gevent cost on their own.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import typing as t

import gevent

K = int(os.environ.get("BENCH_K", "40"))
DELAY = float(os.environ.get("BENCH_DELAY", "0.1"))
HEADERS = [
    ("Content-Type", "text/event-stream"),
    ("Cache-Control", "no-cache"),
    ("X-Accel-Buffering", "no"),
]
DELTA_MARK = b'content_part.text_delta"'


def record_frames() -> list[bytes]:
    """The SSE frames of one example-app ``/slow`` turn (run in a child process).

    The example app as shipped, on a throwaway SQLite file, with a bearer token
    from its own ``issue_token`` and ``DEMO_SLOW_DELAY`` 0 (the pacing is ours).
    """
    import tempfile

    os.environ["EXAMPLE_INSTANCE_PATH"] = tempfile.mkdtemp(prefix="chatkit-bare-")
    from benchmarks.loadgen import make_body
    from example_app import create_app
    from example_app.models import create_user
    from example_app.models import issue_token

    app = create_app({"DEMO_SLOW_DELAY": 0, "DEMO_SLOW_CHUNKS": K, "CHATKIT_HEARTBEAT_INTERVAL": 0})
    with app.app_context():
        token = issue_token(create_user("bench", "bench"))
    response = app.test_client().post(
        "/chatkit",
        data=make_body("/slow"),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    assert response.status_code == 200, response.data
    body = response.get_data()
    return [frame + b"\n\n" for frame in body.split(b"\n\n") if frame]


def load_frames() -> tuple[bytes, list[bytes], bytes]:
    """``(head, deltas, tail)``: the frames before, of and after the text deltas."""
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.servers.bare_gevent", "--record"],
        capture_output=True,
        check=True,
        timeout=120,
        env=os.environ.copy(),
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
