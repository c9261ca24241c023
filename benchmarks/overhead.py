"""Point 4 of issue 7: CPU time per emitted text delta, against writing pre-encoded bytes.

Run it from the repository root with the dev venv::

    /work/venv/bin/python -m benchmarks.overhead                 # tables
    /work/venv/bin/python -m benchmarks.overhead --profile       # + cProfile top entries
    /work/venv/bin/python -m benchmarks.overhead --deltas 50000 --repeat 5 --store sqlite

What is measured: one ``threads.create`` request whose responder streams
``--deltas`` text deltas with no delay, driven through the Flask app's WSGI
interface as a WSGI server would (``app(environ, start_response)``, each chunk
of the response iterator written with one ``write()`` system call, to
``/dev/null``, then the iterator closed). That covers the
whole per-event path: the responder's event models, the core's pipeline
(coercion, persistence bookkeeping, thread-change check, lease renewal
check), SSE framing (compact JSON), Flask's streaming wrapper and, with
heartbeats on, the producer greenlet and its queue. ``time.process_time()``
is taken around the request and divided by the number of deltas (the fixed
cost of one request, well under a millisecond, is negligible beside 20,000
deltas); each row keeps the best of ``--repeat`` runs.

Responders:

* ``stream_text``: ``flask_chatkit.streaming.stream_text`` (what apps use);
* ``dict events``: a responder yielding plain dicts (coerced by the core).

The baseline is a bare WSGI app that yields the same SSE frames, pre-built, one
per ``yield`` (captured from a run of the real app): it is what writing
pre-encoded bytes costs in the same harness. The ratio is core / baseline per
delta; the absolute difference is the server's own cost per delta.

Not part of the test run; numbers are noisy on a busy machine (use ``--repeat``).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import sys
import tempfile
import time
import typing as t

from flask import Flask
from flask_login import LoginManager
from flask_login import UserMixin
from werkzeug.test import EnvironBuilder

from flask_chatkit import ChatKit
from flask_chatkit import InMemoryStore
from flask_chatkit import stream_text
from flask_chatkit.auth import bearer_token
from flask_chatkit.streaming import new_item_id
from flask_chatkit.testing import chatkit_request
from flask_chatkit.testing import user_input

TOKEN = "tok "  # one delta: about one model token


class User(UserMixin):
    def __init__(self, user_id: str) -> None:
        self.id = user_id


def make_app(heartbeat: float, store_kind: str, tmp: str) -> tuple[Flask, dict[str, t.Any]]:
    """An app with a bearer-token user ``bench`` and a responder set by *setting*."""
    app = Flask(__name__)
    app.config.update(SECRET_KEY="bench", CHATKIT_HEARTBEAT_INTERVAL=heartbeat)
    login = LoginManager(app)

    @login.request_loader
    def load_from_token(request: t.Any) -> User | None:
        return User("bench") if bearer_token(request) == "token-bench" else None

    if store_kind == "sqlite":
        from flask_sqlalchemy import SQLAlchemy

        from flask_chatkit.sqlalchemy_store import SQLAlchemyStore

        app.config["SQLALCHEMY_DATABASE_URI"] = f"sqlite:///{os.path.join(tmp, 'bench.db')}"
        db = SQLAlchemy(app)
        store: t.Any = SQLAlchemyStore(db)
        with app.app_context():
            db.create_all()
    else:
        store = InMemoryStore()
    chatkit = ChatKit(app, store=store)
    setting: dict[str, t.Any] = {"n": 10, "kind": "stream_text"}

    @chatkit.respond
    def respond(thread: t.Any, message: t.Any, context: t.Any) -> t.Any:
        n = setting["n"]
        if setting["kind"] == "stream_text":
            yield from stream_text(thread, (TOKEN for _ in range(n)))
            return
        item_id = new_item_id()
        item = {
            "type": "assistant_message",
            "id": item_id,
            "thread_id": thread.id,
            "created_at": "2025-01-01T00:00:00Z",
            "content": [],
        }
        yield {"type": "thread.item.added", "item": item}
        yield {
            "type": "thread.item.updated",
            "item_id": item_id,
            "update": {
                "type": "assistant_message.content_part.added",
                "content_index": 0,
                "content": {"type": "output_text", "text": ""},
            },
        }
        for _ in range(n):
            yield {
                "type": "thread.item.updated",
                "item_id": item_id,
                "update": {
                    "type": "assistant_message.content_part.text_delta",
                    "content_index": 0,
                    "delta": TOKEN,
                },
            }
        text = TOKEN * n
        yield {
            "type": "thread.item.done",
            "item": {**item, "content": [{"type": "output_text", "text": text}]},
        }

    return app, setting


BODY = json.dumps(chatkit_request("threads.create", input=user_input("hello"))).encode()
HEADERS = {"Authorization": "Bearer token-bench", "Origin": "http://localhost"}


def environ() -> dict[str, t.Any]:
    return EnvironBuilder(
        path="/chatkit",
        method="POST",
        data=BODY,
        headers=HEADERS,
        content_type="application/json",
    ).get_environ()


#: Every chunk is written here, one ``write()`` system call each, as a server writes
#: to its socket (a socket's own cost depends on the peer, /dev/null's hardly at all).
SINK = os.open(os.devnull, os.O_WRONLY)


def drive(app: t.Callable[..., t.Any], env: dict[str, t.Any]) -> list[bytes]:
    """What a WSGI server does: call the app, write each chunk, close the iterator."""
    started: list[str] = []

    def start_response(status: str, headers: t.Any, exc_info: t.Any = None) -> t.Any:
        started.append(status)
        return lambda data: None

    chunks = []
    result = app(env, start_response)
    try:
        for chunk in result:
            if chunk:
                os.write(SINK, chunk)
                chunks.append(chunk)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    assert started and started[0].startswith("200"), started
    return chunks


def bare_app(frames: list[bytes]) -> t.Callable[..., t.Any]:
    """The ceiling: a bare WSGI app streaming pre-built SSE frames."""

    def app(environ: dict[str, t.Any], start_response: t.Any) -> t.Iterator[bytes]:
        start_response(
            "200 OK", [("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache")]
        )
        yield from frames

    return app


def frames_of(chunks: list[bytes]) -> list[bytes]:
    body = b"".join(chunks)
    return [frame + b"\n\n" for frame in body.split(b"\n\n") if frame]


def measure(app: t.Callable[..., t.Any], deltas: int, repeat: int) -> tuple[float, list[bytes]]:
    """The best CPU µs per delta of *repeat* requests, and the last run's chunks.

    The minimum, not the median: other processes only ever add time.
    """
    drive(app, environ())  # warm up (imports, first-request setup)
    samples = []
    chunks: list[bytes] = []
    for _ in range(repeat):
        env = environ()
        began = time.process_time()
        chunks = drive(app, env)
        samples.append((time.process_time() - began) / deltas * 1e6)
    return min(samples), chunks


def profile(app: t.Callable[..., t.Any], top: int) -> str:
    env = environ()
    prof = cProfile.Profile()
    prof.enable()
    drive(app, env)
    prof.disable()
    out = io.StringIO()
    for key in ("tottime", "cumulative"):
        out.write(f"\n#### sorted by {key}\n\n```\n")
        stats = pstats.Stats(prof, stream=out)
        stats.sort_stats(key).print_stats(top)
        out.write("```\n")
    return out.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deltas", type=int, default=20_000, help="text deltas per stream")
    parser.add_argument("--repeat", type=int, default=3, help="runs per row (the best is kept)")
    parser.add_argument("--store", choices=["memory", "sqlite"], default="memory")
    parser.add_argument("--profile", action="store_true", help="print cProfile top entries")
    parser.add_argument("--top", type=int, default=25, help="profile entries shown")
    args = parser.parse_args(argv)

    rows = []
    profiles = []
    baseline: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for heartbeat in (0.0, 5.0):
            app, setting = make_app(heartbeat, args.store, tmp)
            for kind in ("stream_text", "dict events"):
                setting.update(n=args.deltas, kind=kind)
                core, chunks = measure(app, args.deltas, args.repeat)
                frames = frames_of(chunks)
                deltas = sum(b"text_delta" in f for f in frames)
                assert deltas == args.deltas, (deltas, args.deltas)
                if kind not in baseline:  # the same frames whatever the heartbeat
                    baseline[kind], _ = measure(bare_app(frames), args.deltas, args.repeat)
                rows.append(
                    (
                        f"{'on (5 s)' if heartbeat else 'off'}",
                        kind,
                        core,
                        baseline[kind],
                        core / baseline[kind],
                        core - baseline[kind],
                    )
                )
                if args.profile and kind == "stream_text":
                    profiles.append((heartbeat, profile(app, args.top)))

    print(
        f"### Per-delta CPU time ({args.deltas:,} deltas per stream, store: {args.store}, "
        f"best of {args.repeat}, Python {sys.version.split()[0]})\n"
    )
    print(
        "| heartbeat | responder | flask_chatkit µs/delta | pre-encoded bytes µs/delta "
        "| ratio | server's own µs/delta |"
    )
    print("|---|---|---:|---:|---:|---:|")
    for heartbeat, kind, core, base, ratio, own in rows:
        print(f"| {heartbeat} | {kind} | {core:.1f} | {base:.2f} | {ratio:.0f}x | {own:.1f} |")
    for heartbeat, text in profiles:
        print(f"\n### Profile: stream_text, heartbeat {'on' if heartbeat else 'off'}")
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
