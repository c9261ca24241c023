"""Streaming: SSE framing and headers, heartbeats, disconnects, errors, back-pressure.

Every stream test runs in both stream modes: ``inline`` (heartbeats off, the
core runs in the request's own greenlet) and ``greenlet`` (a producer greenlet
feeds a bounded queue), and on both stores.
"""

from __future__ import annotations

import gc
import json
import time
import typing as t

import gevent
import greenlet
import pytest
from flask import Flask

from flask_chatkit import RequestContext
from flask_chatkit import stream_text
from flask_chatkit.server import CANCELLED_TEXT
from flask_chatkit.sse import QUEUE_SIZE
from flask_chatkit.streaming import MessageStream
from flask_chatkit.streaming import new_item_id
from flask_chatkit.streaming import progress
from flask_chatkit.testing import chatkit_request
from flask_chatkit.testing import parse_sse
from flask_chatkit.testing import user_input

from . import wire
from .conftest import logged_in
from .conftest import make_app
from .streams import Stream
from .streams import deltas
from .streams import paced

MODES = {"inline": 0, "greenlet": 5}
CREATE = chatkit_request("threads.create", input=user_input("tell me a story"))


@pytest.fixture(params=sorted(MODES))
def mode(request: pytest.FixtureRequest) -> str:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def sse_app(store_kind: str, tmp_path: t.Any, mode: str) -> Flask:
    return make_app(store_kind, tmp_path, CHATKIT_HEARTBEAT_INTERVAL=MODES[mode])


@pytest.fixture
def ck(sse_app: Flask) -> t.Any:
    return sse_app.extensions["chatkit"]


@pytest.fixture
def client(sse_app: Flask) -> t.Any:
    return logged_in(sse_app, "alice")


def live_greenlets() -> int:
    gevent.get_hub()  # the hub is created lazily; count it from the start
    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, greenlet.greenlet) and not o.dead)


def stored_items(app: Flask, thread_id: str, user_id: str = "alice") -> list[t.Any]:
    """Everything the store holds for the thread, hidden items included."""
    with app.app_context():
        store = app.extensions["chatkit"].server.store
        ctx = RequestContext(user_id=user_id)
        return list(store.load_thread_items(thread_id, None, 100, "asc", ctx).data)


def checked_out_connections(app: Flask) -> int:
    db = app.extensions.get("test_db")
    if db is None:
        return 0
    with app.app_context():
        return db.engine.pool.checkedout()  # type: ignore[no-any-return]


def text_of(item: t.Any) -> str:
    return "".join(part.text for part in item.content)


# --- headers and framing -------------------------------------------------------------


def test_stream_response_headers(client: t.Any, ck: t.Any) -> None:
    @ck.respond
    def respond(thread: t.Any, message: t.Any, context: t.Any) -> t.Any:
        yield from stream_text(thread, "hi")

    response = client.post("/chatkit", json=CREATE, buffered=True)
    assert response.status_code == 200
    # Werkzeug appends the (harmless, SSE is always UTF-8) charset to text/* types.
    assert response.headers["Content-Type"] in (
        "text/event-stream",
        "text/event-stream; charset=utf-8",
    )
    assert response.mimetype == "text/event-stream"
    assert response.headers["Cache-Control"] == "no-cache"
    assert response.headers["X-Accel-Buffering"] == "no"
    assert "Content-Length" not in response.headers


def test_frames_are_single_data_lines_of_compact_json_without_sentinel(
    client: t.Any, ck: t.Any
) -> None:
    chunks = ["line1\nline2\r\n", ' "quoted" é ✓ ', "data: fake\n\nevent: x", "</script>"]

    @ck.respond
    def respond(thread: t.Any, message: t.Any, context: t.Any) -> t.Any:
        yield from stream_text(thread, chunks)

    raw = client.post("/chatkit", json=CREATE, buffered=True).data
    text = raw.decode("utf-8")
    assert text.endswith("\n\n")
    frames = text.split("\n\n")[:-1]
    assert frames and all(f.startswith("data: ") and "\n" not in f for f in frames)
    for line in text.split("\n"):
        assert not line.startswith(("event:", "id:", "retry:")), line
    events = [json.loads(f[len("data: ") :]) for f in frames]
    for frame, event in zip(frames, events):
        assert frame[len("data: ") :] == json.dumps(
            event, separators=(",", ":"), ensure_ascii=False
        )
        wire.check_event(event)
    assert "é ✓" in text  # UTF-8, not \u escapes
    assert events[-1]["type"] == "thread.item.done"  # the last real event ends the stream
    assert "".join(deltas(events)) == "".join(chunks)


def test_a_chunk_that_is_not_text_ends_the_answer_with_one_error_event(
    store_kind: str, tmp_path: t.Any
) -> None:
    """Deltas are built without validating them again, but only from text."""
    app = make_app(store_kind, tmp_path, CHATKIT_HEARTBEAT_INTERVAL=0)

    @app.extensions["chatkit"].respond
    def respond(thread: t.Any, message: t.Any, context: t.Any) -> t.Any:
        yield from stream_text(thread, ["fine ", 42])  # type: ignore[list-item]

    raw = logged_in(app, "alice").post("/chatkit", json=CREATE, buffered=True).data
    events = parse_sse(raw)
    for event in events:
        wire.check_event(event)
    assert deltas(events) == ["fine "]
    assert events[-1]["type"] == "error" and b"Traceback" not in raw


# --- heartbeats ---------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("interval", [0, 0.05])
def test_heartbeats_only_while_the_responder_is_silent(
    store_kind: str, tmp_path: t.Any, interval: float
) -> None:
    app = make_app(store_kind, tmp_path, CHATKIT_HEARTBEAT_INTERVAL=interval)

    @app.extensions["chatkit"].respond
    def respond(thread: t.Any, message: t.Any, context: t.Any) -> t.Any:
        yield progress("one")
        gevent.sleep(0.3)
        yield progress("two")

    raw = logged_in(app, "alice").post("/chatkit", json=CREATE, buffered=True).data
    frames = raw.decode().split("\n\n")
    assert frames[-1] == ""
    one = frames.index('data: {"type":"progress_update","text":"one"}')
    two = frames.index('data: {"type":"progress_update","text":"two"}')
    between = frames[one + 1 : two]
    if interval:
        assert len(between) >= 2 and set(between) == {": ping"}
    else:
        assert between == []
        assert b": ping" not in raw
    assert [e["type"] for e in parse_sse(raw)] == [e["type"] for e in wire.parse_frames(raw)]


# --- disconnect -----------------------------------------------------------------------


@pytest.mark.slow
def test_disconnect_saves_the_partial_answer_and_a_cancel_marker(
    sse_app: Flask, ck: t.Any, client: t.Any, mode: str
) -> None:
    chunks = [f"w{i} " for i in range(40)]
    finished: list[str] = []
    cancelled: list[tuple[str, list[tuple[str, str]]]] = []

    @ck.respond
    def respond(thread: t.Any, message: t.Any, context: t.Any) -> t.Any:
        try:  # 5 ms between chunks: waiting for the model
            yield from stream_text(thread, paced(chunks, 0.005))
        finally:
            finished.append("closed")  # where an upstream stream would be closed

    @ck.cancel
    def on_cancel(thread: t.Any, pending: list[t.Any], context: t.Any) -> None:
        cancelled.append((thread.id, [(p.type, text_of(p)) for p in pending]))

    before = live_greenlets()
    stream = Stream(client, CREATE)
    stream.read_until(lambda events: len(deltas(events)) >= 3)
    events = stream.events
    thread_id = events[0]["thread"]["id"]
    seen = "".join(deltas(events))
    added = [e["item"]["id"] for e in events if e["type"] == "thread.item.added"]
    # Mid-stream: the producer greenlet (if any) is alive, no DB connection is held.
    assert live_greenlets() == before + (1 if mode == "greenlet" else 0)
    assert checked_out_connections(sse_app) == 0
    assert finished == []

    stream.close()

    assert finished == ["closed"]
    items = stored_items(sse_app, thread_id)
    assert [i.type for i in items] == ["user_message", "assistant_message", "sdk_hidden_context"]
    user, answer, marker = items
    assert user.content[0].text == "tell me a story"
    assert answer.id == added[0]
    saved = text_of(answer)
    # Exactly what the client got: in greenlet mode, what the producer had queued
    # behind the connection is taken back before the cancel saves.
    assert saved == seen
    assert "".join(chunks).startswith(saved) and saved != "".join(chunks)
    assert marker.content == CANCELLED_TEXT
    assert "The user cancelled the stream" in marker.content
    assert cancelled == [(thread_id, [("assistant_message", saved)])]
    assert live_greenlets() == before
    assert checked_out_connections(sse_app) == 0
    # The client sees no hidden item.
    listed = client.chatkit("items.list", thread_id=thread_id, order="asc")
    assert [i["type"] for i in listed.body["data"]] == ["user_message", "assistant_message"]


@pytest.mark.slow
@pytest.mark.parametrize("limit", [100, 0])
def test_with_finish_a_disconnect_only_detaches_and_the_whole_answer_is_saved(
    store_kind: str, tmp_path: t.Any, mode: str, limit: int, caplog: pytest.LogCaptureFixture
) -> None:
    """``CHATKIT_DISCONNECT = "finish"``: the answer runs to its end without its
    client; with no detached place left (``CHATKIT_MAX_DETACHED_TURNS = 0``) a
    disconnect cancels as before, and says so in the log."""
    app = make_app(
        store_kind,
        tmp_path,
        CHATKIT_HEARTBEAT_INTERVAL=MODES[mode],
        CHATKIT_DISCONNECT="finish",
        CHATKIT_MAX_DETACHED_TURNS=limit,
    )
    ck = app.extensions["chatkit"]
    client = logged_in(app, "alice")
    chunks = [f"w{i} " for i in range(40)]
    finished: list[str] = []
    cancelled: list[str] = []

    @ck.respond
    def respond(thread: t.Any, message: t.Any, context: t.Any) -> t.Any:
        try:
            yield from stream_text(thread, paced(chunks, 0.005))
        finally:
            finished.append("closed")

    @ck.cancel
    def on_cancel(thread: t.Any, pending: list[t.Any], context: t.Any) -> None:
        cancelled.append(thread.id)

    before = live_greenlets()
    stream = Stream(client, CREATE)
    stream.read_until(lambda events: len(deltas(events)) >= 3)
    thread_id = stream.events[0]["thread"]["id"]
    stream.close()  # returns once the turn has ended, one way or the other

    assert finished == ["closed"]
    items = stored_items(app, thread_id)
    if limit:
        assert [i.type for i in items] == ["user_message", "assistant_message"]
        assert text_of(items[1]) == "".join(chunks)
        assert cancelled == []
    else:
        assert [i.type for i in items] == [
            "user_message",
            "assistant_message",
            "sdk_hidden_context",
        ]
        assert text_of(items[1]) != "".join(chunks)
        assert cancelled == [thread_id]
        assert "CHATKIT_MAX_DETACHED_TURNS" in caplog.text
    assert ck.state(app).detach.running == 0
    assert live_greenlets() == before
    assert checked_out_connections(app) == 0
    # the thread is free for the next turn
    ex = client.chatkit("threads.add_user_message", thread_id=thread_id, input=user_input("again"))
    assert ex.status == 200 and ex.types[-1] == "thread.item.done", ex.body


@pytest.mark.slow  # waits out the timeout
def test_a_detached_turn_that_goes_silent_for_the_turn_timeout_is_cancelled(
    store_kind: str, tmp_path: t.Any, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(
        store_kind,
        tmp_path,
        CHATKIT_HEARTBEAT_INTERVAL=5,
        CHATKIT_DISCONNECT="finish",
        CHATKIT_TURN_TIMEOUT=0.3,
    )
    ck = app.extensions["chatkit"]

    def hung() -> t.Iterator[str]:
        yield "first "
        gevent.sleep(30)  # a model that never answers again
        yield "never"

    @ck.respond
    def respond(thread: t.Any, message: t.Any, context: t.Any) -> t.Any:
        yield from stream_text(thread, hung())

    stream = Stream(logged_in(app, "alice"), CREATE)
    stream.read_until(lambda events: len(deltas(events)) >= 1)
    thread_id = stream.events[0]["thread"]["id"]
    started = time.monotonic()
    stream.close()
    assert time.monotonic() - started < 5  # not the 30 s of the hung responder
    items = stored_items(app, thread_id)
    assert [i.type for i in items] == ["user_message", "assistant_message", "sdk_hidden_context"]
    assert text_of(items[1]) == "first "
    assert "CHATKIT_TURN_TIMEOUT" in caplog.text
    assert ck.state(app).detach.running == 0


@pytest.mark.slow
def test_disconnect_with_blank_pending_text_saves_only_the_marker(
    sse_app: Flask, ck: t.Any, client: t.Any
) -> None:
    cancelled: list[list[str]] = []

    def blank_then_wait() -> t.Iterator[str]:
        yield " "
        yield "\n\t"
        gevent.sleep(30)  # a model that never answers; the client gives up
        yield "never"

    @ck.respond
    def respond(thread: t.Any, message: t.Any, context: t.Any) -> t.Any:
        yield from stream_text(thread, blank_then_wait())

    @ck.cancel
    def on_cancel(thread: t.Any, pending: list[t.Any], context: t.Any) -> None:
        cancelled.append([p.type for p in pending])

    before = live_greenlets()
    stream = Stream(client, CREATE)
    stream.read_until(lambda events: len(deltas(events)) >= 2)
    thread_id = stream.events[0]["thread"]["id"]
    stream.close()

    items = stored_items(sse_app, thread_id)
    assert [i.type for i in items] == ["user_message", "sdk_hidden_context"]
    assert items[1].content == CANCELLED_TEXT
    assert cancelled == [["assistant_message"]]
    assert live_greenlets() == before
    assert checked_out_connections(sse_app) == 0


def test_disconnect_before_the_responder_starts_still_saves_the_marker(
    sse_app: Flask, ck: t.Any, client: t.Any
) -> None:
    started: list[bool] = []

    @ck.respond
    def respond(thread: t.Any, message: t.Any, context: t.Any) -> t.Any:
        started.append(True)
        gevent.sleep(30)
        yield progress("late")

    stream = Stream(client, CREATE)
    stream.read_until(lambda events: "stream_options" in [e["type"] for e in events])
    thread_id = stream.events[0]["thread"]["id"]
    stream.close()
    types = [i.type for i in stored_items(sse_app, thread_id)]
    assert types == ["user_message", "sdk_hidden_context"]


# --- errors ---------------------------------------------------------------------------


@pytest.mark.slow
def test_responder_exception_mid_stream_gives_one_error_event_and_keeps_done_items(
    sse_app: Flask, ck: t.Any, client: t.Any
) -> None:
    def failing() -> t.Iterator[str]:
        yield "half"
        raise RuntimeError("upstream failed")

    @ck.respond
    def respond(thread: t.Any, message: t.Any, context: t.Any) -> t.Any:
        yield from stream_text(thread, "first")
        gevent.sleep(0.01)
        yield from stream_text(thread, failing())  # dies with a message half done

    before = live_greenlets()
    ex = client.chatkit("threads.create", input=user_input("hi"))
    assert ex.status == 200
    errors = ex.of_type("error")
    assert errors == [{"type": "error", "code": "stream.error", "allow_retry": True}]
    assert ex.types[-1] == "error"  # the stream ends right after it
    assert "upstream failed" not in json.dumps(ex.events)  # no internals leak
    thread_id = ex.events[0]["thread"]["id"]
    items = stored_items(sse_app, thread_id)
    assert [i.type for i in items] == ["user_message", "assistant_message"]
    assert text_of(items[1]) == "first"
    assert live_greenlets() == before
    assert checked_out_connections(sse_app) == 0


def test_a_stop_saves_what_was_handed_to_the_client_not_what_was_queued_behind_it(
    sse_app: Flask, ck: t.Any, client: t.Any, mode: str
) -> None:
    chunks = [f"c{i} " for i in range(3 * QUEUE_SIZE)]

    def fast_then_wait() -> t.Iterator[str]:
        yield from chunks  # produced far faster than the client reads
        gevent.sleep(30)  # then the model goes quiet
        yield "never"

    @ck.respond
    def respond(thread: t.Any, message: t.Any, context: t.Any) -> t.Any:
        yield from stream_text(thread, fast_then_wait())

    stream = Stream(client, CREATE)
    stream.read_until(lambda events: len(deltas(events)) >= 3)
    gevent.sleep(0.05)  # a producer fills its queue and waits with one more in hand
    seen = "".join(deltas(stream.events))
    thread_id = stream.events[0]["thread"]["id"]
    stream.close()

    types = [i.type for i in stored_items(sse_app, thread_id)]
    assert types == ["user_message", "assistant_message", "sdk_hidden_context"]
    saved = text_of(stored_items(sse_app, thread_id)[1])
    assert saved == seen
    assert "".join(chunks).startswith(saved) and len(saved) < len("".join(chunks)) // 2


def test_a_stop_before_the_answer_was_shown_saves_no_answer(
    sse_app: Flask, ck: t.Any, client: t.Any, mode: str
) -> None:
    if mode == "inline":
        pytest.skip("inline, nothing is produced ahead of the client")

    @ck.respond
    def respond(thread: t.Any, message: t.Any, context: t.Any) -> t.Any:
        yield progress("thinking")
        gevent.sleep(0.01)  # the client takes the progress line alone
        message = MessageStream(thread.id, new_item_id())
        yield from message.start()
        for text in ("queued ", "but ", "never ", "sent"):
            yield message.delta(text)
        gevent.sleep(30)  # the model goes quiet before the message is done

    stream = Stream(client, CREATE)
    stream.read_until(lambda events: any(e["type"] == "progress_update" for e in events))
    gevent.sleep(0.05)  # the answer's item and deltas wait in the queue
    thread_id = stream.events[0]["thread"]["id"]
    assert deltas(stream.events) == []
    stream.close()
    # the assistant message the client never got is not saved (only the marker)
    types = [i.type for i in stored_items(sse_app, thread_id)]
    assert types == ["user_message", "sdk_hidden_context"]


# --- back-pressure ----------------------------------------------------------------------


@pytest.mark.slow
def test_a_slow_consumer_keeps_the_producer_bounded(
    sse_app: Flask, ck: t.Any, client: t.Any, mode: str
) -> None:
    produced = [0]

    @ck.respond
    def respond(thread: t.Any, message: t.Any, context: t.Any) -> t.Any:
        for i in range(1000):
            produced[0] += 1
            yield progress(f"step {i}")

    before = live_greenlets()

    def steps(events: list[dict[str, t.Any]]) -> int:
        return len([e for e in events if e["type"] == "progress_update"])

    stream = Stream(client, CREATE)
    stream.read_until(lambda events: steps(events) >= 3)
    thread_id = stream.events[0]["thread"]["id"]
    gevent.sleep(0.05)  # give a producer every chance to run ahead
    consumed = steps(stream.events)
    assert 3 <= consumed < 1000
    if mode == "inline":
        assert produced[0] == consumed
    else:
        assert produced[0] <= consumed + QUEUE_SIZE + 2
    stream.close()
    stopped_at = produced[0]
    gevent.sleep(0.05)
    assert produced[0] == stopped_at < 1000
    assert live_greenlets() == before
    # Cancelled while (possibly) blocked on the full queue: still recorded as a stop.
    types = [i.type for i in stored_items(sse_app, thread_id)]
    assert types == ["user_message", "sdk_hidden_context"]


# --- parse_sse ----------------------------------------------------------------------------


def test_parse_sse_skips_pings_and_comments_and_parses_frames() -> None:
    raw = (
        b": ping\n\n"
        b'data: {"type":"progress_update","text":"a"}\n\n'
        b": ping\n\n"
        b': a comment\ndata: {"type":"notice","level":"info","message":"\xc3\xa9"}\n\n'
    )
    expected = [
        {"type": "progress_update", "text": "a"},
        {"type": "notice", "level": "info", "message": "é"},
    ]
    assert parse_sse(raw) == expected
    assert parse_sse(raw.decode()) == expected
    assert parse_sse(b"") == []
    assert parse_sse(b": ping\n\n: ping\n\n") == []


@pytest.mark.parametrize(
    "raw",
    [
        'event: message\ndata: {"type":"x"}\n\n',
        'id: 1\ndata: {"type":"x"}\n\n',
        'data: {"type":\ndata: "x"}\n\n',
        "retry: 10\n\n",
    ],
)
def test_parse_sse_rejects_frames_chatkit_never_sends(raw: str) -> None:
    with pytest.raises(ValueError):
        parse_sse(raw)
