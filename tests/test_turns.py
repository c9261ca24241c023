"""Turn leases: two turns on one thread never interleave.

A streaming request on an existing thread holds the thread's turn lease while it
runs; a second one meanwhile gets a 200 SSE with a single ``error`` event and
changes nothing. Leases are released however a turn ends, expire after
``CHATKIT_TURN_TIMEOUT`` unless renewed by a flowing stream, and are taken over
once expired. In-process here (Flask test client, real gevent); the multi-worker
version runs under gunicorn elsewhere.
"""

from __future__ import annotations

import time
import typing as t
from datetime import timedelta

import gevent
import gevent.event
import pytest
from flask import Flask

from flask_chatkit import RequestContext
from flask_chatkit import stream_text
from flask_chatkit.streaming import user_text
from flask_chatkit.testing import chatkit_request
from flask_chatkit.testing import user_input
from flask_chatkit.turn_engine import BUSY_TEXT
from flask_chatkit.types import ThreadMetadata
from flask_chatkit.types import utcnow

from .conftest import StoreInContext
from .conftest import logged_in
from .conftest import make_app
from .streams import Stream
from .streams import deltas

MODES = {"inline": 0, "greenlet": 5}
CARD = {"type": "Card", "children": [{"type": "Text", "id": "t", "value": "pick"}]}
QUESTIONS = [{"type": "freeform", "id": "name", "question": "Name?"}]


@pytest.fixture(params=sorted(MODES))
def mode(request: pytest.FixtureRequest) -> str:
    return request.param  # type: ignore[no-any-return]


class Turns:
    """An app whose responder is gated: a message "slow" streams "first ", waits for
    :attr:`gate`, then streams "second"; "setup" leaves a pending client tool call,
    a pending structured input and a widget; anything else gets a quick "ok"."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.store = StoreInContext(app)
        self.ctx = RequestContext(user_id="alice")
        self.gate = gevent.event.Event()
        self.responded: list[str | None] = []
        self.actions: list[str] = []
        self.alice = logged_in(app, "alice")
        self.tab2 = logged_in(app, "alice")  # a second tab of the same user
        self.streams: list[Stream] = []
        chatkit = app.extensions["chatkit"]

        @chatkit.respond
        def respond(thread: t.Any, message: t.Any, context: t.Any) -> t.Any:
            text = message and user_text(message)
            self.responded.append(text)
            if text == "slow":
                yield from stream_text(thread, self._gated())
            elif text == "setup":
                for item in self._setup_items(thread.id):
                    yield {"type": "thread.item.done", "item": item}
            else:
                yield from stream_text(thread, "ok")

        @chatkit.action
        def action(thread: t.Any, action: t.Any, sender: t.Any, context: t.Any) -> t.Any:
            self.actions.append(action.type)
            yield from stream_text(thread, "done")

    def _gated(self) -> t.Iterator[str]:
        yield "first "
        assert self.gate.wait(10), "the test never opened the gate"
        yield "second"

    @staticmethod
    def _setup_items(thread_id: str) -> list[dict[str, t.Any]]:
        base = {"thread_id": thread_id}
        return [
            {
                **base,
                "type": "client_tool_call",
                "id": "tc_1",
                "call_id": "c1",
                "name": "locate",
                "arguments": {},
                "status": "pending",
            },
            {
                **base,
                "type": "structured_input",
                "id": "si_1",
                "status": "pending",
                "inputs": QUESTIONS,
            },
            {**base, "type": "widget", "id": "w1", "widget": CARD},
        ]

    def create(self, text: str = "hi") -> str:
        ex = self.alice.chatkit("threads.create", input=user_input(text))
        assert ex.status == 200 and "error" not in ex.types, ex.body
        return ex.events[0]["thread"]["id"]  # type: ignore[no-any-return]

    def stream(self, type_: str, **params: t.Any) -> Stream:
        """Start a streaming request of alice's, to be read by the test."""
        stream = Stream(self.alice, chatkit_request(type_, **params))
        self.streams.append(stream)
        return stream

    def slow_turn(self, thread_id: str) -> Stream:
        """Start turn 1 and read it until its first text delta."""
        stream = self.stream(
            "threads.add_user_message", thread_id=thread_id, input=user_input("slow")
        )
        stream.read_until(deltas)
        return stream

    def items(self, thread_id: str) -> list[t.Any]:
        return list(self.store.load_thread_items(thread_id, None, 1000, "asc", self.ctx).data)

    def snapshot(self, thread_id: str) -> list[str]:
        return [i.model_dump_json() for i in self.items(thread_id)]

    def lease_free(self, thread_id: str) -> bool:
        """Whether a new turn could take the thread now (probes and gives back)."""
        until = utcnow() + timedelta(seconds=60)
        if not self.store.acquire_turn(thread_id, "probe", until, self.ctx):
            return False
        self.store.release_turn(thread_id, "probe", self.ctx)
        return True


_open: list[Turns] = []


def turns(store_kind: str, tmp_path: t.Any, mode: str = "greenlet", **config: t.Any) -> Turns:
    k = Turns(make_app(store_kind, tmp_path, CHATKIT_HEARTBEAT_INTERVAL=MODES[mode], **config))
    _open.append(k)
    return k


@pytest.fixture(autouse=True)
def _close_streams() -> t.Iterator[None]:
    """Close what a failed test left streaming, in this greenlet (not in the GC)."""
    yield
    while _open:
        k = _open.pop()
        k.gate.set()
        for stream in k.streams:
            stream.close()


def say(client: t.Any, thread_id: str, text: str) -> t.Any:
    """A new message on the thread from *client*; the whole exchange."""
    return client.chatkit("threads.add_user_message", thread_id=thread_id, input=user_input(text))


def assert_busy(ex: t.Any) -> None:
    """A 200 SSE whose only event is the "still answering" error."""
    assert ex.status == 200, ex.body
    assert ex.headers["Content-Type"].startswith("text/event-stream")
    assert ex.types == ["error"], ex.events
    error = ex.events[0]
    assert error["code"] == "custom" and error["allow_retry"] is False
    assert error["message"] == BUSY_TEXT and "still answering" in error["message"]


def assert_completed(events: list[dict[str, t.Any]], text: str) -> None:
    assert "error" not in [e["type"] for e in events], events
    done = [e["item"] for e in events if e["type"] == "thread.item.done"]
    assert done[-1]["type"] == "assistant_message"
    assert done[-1]["content"][0]["text"] == text


# --- (a) a second turn is refused while one runs ---------------------------------------


def test_a_second_message_while_a_turn_streams_is_refused_and_not_saved(
    store_kind: str, tmp_path: t.Any, mode: str
) -> None:
    k = turns(store_kind, tmp_path, mode)
    thread_id = k.create()
    turn1 = k.slow_turn(thread_id)
    before = k.snapshot(thread_id)

    second = say(k.tab2, thread_id, "me too")
    assert_busy(second)
    assert k.snapshot(thread_id) == before
    assert not any(user_text(i) == "me too" for i in k.items(thread_id) if i.type == "user_message")
    assert k.responded.count("me too") == 0

    k.gate.set()
    assert_completed(turn1.finish(), "first second")
    texts = [
        (i.type, user_text(i) if i.type == "user_message" else i.content[0].text)
        for i in k.items(thread_id)
    ]
    assert texts == [
        ("user_message", "hi"),
        ("assistant_message", "ok"),
        ("user_message", "slow"),
        ("assistant_message", "first second"),
    ]
    # the lease went with turn 1: a new turn works
    third = say(k.tab2, thread_id, "me too")
    assert third.status == 200
    assert_completed(third.events, "ok")


def test_a_message_while_a_new_threads_first_answer_streams_is_refused(
    store_kind: str, tmp_path: t.Any, mode: str
) -> None:
    k = turns(store_kind, tmp_path, mode)
    turn1 = k.stream("threads.create", input=user_input("slow"))
    turn1.read_until(deltas)
    thread_id = turn1.events[0]["thread"]["id"]  # another tab sees it in threads.list
    assert not k.lease_free(thread_id)
    assert_busy(say(k.tab2, thread_id, "me too"))
    assert [i.type for i in k.items(thread_id)] == ["user_message"]
    k.gate.set()
    assert_completed(turn1.finish(), "first second")
    assert k.lease_free(thread_id)


@pytest.mark.slow
def test_two_turns_started_at_once_one_answers_and_the_other_is_refused(
    store_kind: str, tmp_path: t.Any, mode: str
) -> None:
    k = turns(store_kind, tmp_path, mode)

    @k.app.extensions["chatkit"].respond
    def slowly(thread: t.Any, message: t.Any, context: t.Any) -> t.Any:
        def chunks() -> t.Iterator[str]:
            for word in ("a ", "b ", "c ", "d"):
                gevent.sleep(0.05)
                yield word

        yield from stream_text(thread, chunks())

    thread_id = k.create()
    jobs = [
        gevent.spawn(say, client, thread_id, text)
        for client, text in [(k.alice, "from tab 1"), (k.tab2, "from tab 2")]
    ]
    gevent.joinall(jobs, timeout=10, raise_error=True)
    results = [job.value for job in jobs]
    busy = [ex for ex in results if ex.types == ["error"]]
    answered = [ex for ex in results if ex.types != ["error"]]
    assert len(busy) == 1 and len(answered) == 1, [ex.types for ex in results]
    assert_busy(busy[0])
    assert_completed(answered[0].events, "a b c d")
    winner = answered[0].events[0]["item"]["id"]
    items = k.items(thread_id)
    assert [i.type for i in items] == ["user_message", "assistant_message"] * 2
    assert items[2].id == winner  # the loser's message was never saved
    assert k.lease_free(thread_id)


KINDS = {
    "add_client_tool_output": lambda ids: {"result": {"city": "Paris"}},
    "add_structured_input": lambda ids: {
        "item_id": "si_1",
        "input": {"status": "answered", "answers": {"name": {"values": ["Ada"]}}},
    },
    "retry_after_item": lambda ids: {"item_id": ids["setup"]},
    "custom_action": lambda ids: {"item_id": "w1", "action": {"type": "pick", "payload": {}}},
}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_streaming_request_is_refused_while_a_turn_streams(
    store_kind: str, tmp_path: t.Any, kind: str
) -> None:
    k = turns(store_kind, tmp_path)
    thread_id = k.create("setup")
    ids = {"setup": k.items(thread_id)[0].id}
    turn1 = k.slow_turn(thread_id)
    before, responded = k.snapshot(thread_id), list(k.responded)

    refused = k.tab2.chatkit(f"threads.{kind}", thread_id=thread_id, **KINDS[kind](ids))
    assert_busy(refused)
    assert k.snapshot(thread_id) == before  # nothing answered, deleted or replaced
    assert (k.responded, k.actions) == (responded, [])

    k.gate.set()
    assert_completed(turn1.finish(), "first second")
    accepted = k.tab2.chatkit(f"threads.{kind}", thread_id=thread_id, **KINDS[kind](ids))
    assert accepted.status == 200 and accepted.types[0] == "stream_options", accepted.body
    assert "error" not in accepted.types
    items = {i.id: i for i in k.items(thread_id)}
    if kind == "add_client_tool_output":
        assert items["tc_1"].status == "completed"
    elif kind == "add_structured_input":
        assert items["si_1"].status == "answered"
    elif kind == "retry_after_item":
        # the later turn is gone; the setup message was answered again
        assert k.responded[-1] == "setup"
        assert "slow" not in [user_text(i) for i in items.values() if i.type == "user_message"]
    else:
        assert k.actions == ["pick"]
    assert k.lease_free(thread_id)


# --- (b) the lease is always released ---------------------------------------------------


def test_the_lease_is_released_after_a_normal_end_and_after_a_responder_error(
    store_kind: str, tmp_path: t.Any
) -> None:
    k = turns(store_kind, tmp_path)
    thread_id = k.create()
    assert k.lease_free(thread_id)
    ok = say(k.alice, thread_id, "again")
    assert_completed(ok.events, "ok")
    assert k.lease_free(thread_id)

    @k.app.extensions["chatkit"].respond
    def failing(thread: t.Any, message: t.Any, context: t.Any) -> t.Any:
        yield from stream_text(thread, ["partial"])
        raise RuntimeError("the model broke")

    broken = say(k.alice, thread_id, "break")
    assert broken.status == 200 and broken.types[-1] == "error", broken.events
    assert k.lease_free(thread_id)


def test_the_lease_is_released_when_the_client_disconnects(
    store_kind: str, tmp_path: t.Any, mode: str
) -> None:
    k = turns(store_kind, tmp_path, mode)
    thread_id = k.create()
    turn1 = k.slow_turn(thread_id)
    assert not k.lease_free(thread_id)
    turn1.close()  # the browser tab goes away mid-answer
    assert k.lease_free(thread_id)
    # the partial answer was persisted by the cancel path, then a new turn runs
    assert [i.type for i in k.items(thread_id)][-2:] == ["assistant_message", "sdk_hidden_context"]
    again = say(k.tab2, thread_id, "still there?")
    assert_completed(again.events, "ok")


def test_a_refused_request_neither_takes_nor_frees_the_lease(
    store_kind: str, tmp_path: t.Any
) -> None:
    k = turns(store_kind, tmp_path)
    thread_id = k.create()
    turn1 = k.slow_turn(thread_id)
    for _ in range(2):
        assert_busy(say(k.tab2, thread_id, "me too"))
        assert not k.lease_free(thread_id)  # turn 1 still holds it
    k.gate.set()
    assert_completed(turn1.finish(), "first second")
    assert k.lease_free(thread_id)

    # requests refused with a JSON error before any stream take no lease either
    assistant = k.items(thread_id)[-1].id
    bad = k.alice.chatkit("threads.retry_after_item", thread_id=thread_id, item_id=assistant)
    assert bad.status == 400
    conflict = k.alice.chatkit("threads.add_client_tool_output", thread_id=thread_id, result={})
    assert conflict.status == 409
    missing = k.alice.chatkit(
        "threads.custom_action",
        thread_id=thread_id,
        item_id="nope",
        action={"type": "x", "payload": {}},
    )
    assert missing.status == 404
    assert k.lease_free(thread_id)


# --- (c) expiry and (d) renewal -----------------------------------------------------------


def test_an_expired_lease_is_taken_over_and_a_live_one_is_not(
    store_kind: str, tmp_path: t.Any
) -> None:
    k = turns(store_kind, tmp_path)
    thread_id = k.create()
    # a worker that died mid-turn left a live lease: refused
    assert k.store.acquire_turn(thread_id, "dead-worker", utcnow() + timedelta(hours=1), k.ctx)
    assert_busy(say(k.alice, thread_id, "blocked"))
    # once it has expired, the next turn takes it over
    k.store.renew_turn(thread_id, "dead-worker", utcnow() - timedelta(seconds=1), k.ctx)
    ok = say(k.alice, thread_id, "take over")
    assert_completed(ok.events, "ok")
    assert k.lease_free(thread_id)


@pytest.mark.slow  # waits out the timeout
def test_a_turn_stalled_past_the_timeout_loses_its_lease(
    store_kind: str, tmp_path: t.Any, mode: str
) -> None:
    k = turns(store_kind, tmp_path, mode, CHATKIT_TURN_TIMEOUT=0.4)
    thread_id = k.create()
    turn1 = k.slow_turn(thread_id)  # then stalls on the gate, emitting nothing
    assert_busy(say(k.tab2, thread_id, "early"))
    gevent.sleep(0.6)
    late = say(k.tab2, thread_id, "late")
    assert_completed(late.events, "ok")
    assert k.lease_free(thread_id)
    k.gate.set()
    assert_completed(turn1.finish(), "first second")  # the stalled turn still ends cleanly
    assert k.lease_free(thread_id)


@pytest.mark.slow
def test_a_flowing_stream_renews_its_lease_past_the_timeout(
    store_kind: str, tmp_path: t.Any, mode: str
) -> None:
    k = turns(store_kind, tmp_path, mode, CHATKIT_TURN_TIMEOUT=0.3)
    thread_id = k.create()

    @k.app.extensions["chatkit"].respond
    def steady(thread: t.Any, message: t.Any, context: t.Any) -> t.Any:
        def chunks() -> t.Iterator[str]:
            for i in range(20):  # one event every 0.05 s for a second
                gevent.sleep(0.05)
                yield f"{i} "

        yield from stream_text(thread, chunks())

    start = time.monotonic()
    turn1 = k.stream("threads.add_user_message", thread_id=thread_id, input=user_input("steady"))
    while time.monotonic() - start < 0.7:  # well past the 0.3 s timeout
        turn1.read_chunk()
    assert len(deltas(turn1.events)) < 20
    assert_busy(say(k.tab2, thread_id, "meanwhile"))
    events = turn1.finish()
    assert_completed(events, "".join(f"{i} " for i in range(20)))
    assert k.lease_free(thread_id)


# --- (e) the store's lease methods ------------------------------------------------------------


def test_store_turn_leases_acquire_renew_release_and_expire(store: t.Any, ctx_of: t.Any) -> None:
    alice, bob = ctx_of("alice"), ctx_of("bob")
    store.save_thread(ThreadMetadata(id="thr_lease", created_at=utcnow()), alice)
    later = utcnow() + timedelta(minutes=5)
    past = utcnow() - timedelta(seconds=1)

    assert store.acquire_turn("thr_lease", "A", later, alice)
    assert not store.acquire_turn("thr_lease", "B", later, alice)  # held
    assert not store.acquire_turn("thr_lease", "A", later, alice)  # even by the same token
    # a token that does not hold the lease can neither release nor renew it
    store.release_turn("thr_lease", "B", alice)
    store.renew_turn("thr_lease", "B", past, alice)
    assert not store.acquire_turn("thr_lease", "C", later, alice)
    # the holder releases: free again
    store.release_turn("thr_lease", "A", alice)
    assert store.acquire_turn("thr_lease", "C", later, alice)
    # renewing into the past (as a lapse of time would) lets the next one take over
    store.renew_turn("thr_lease", "C", past, alice)
    assert store.acquire_turn("thr_lease", "D", later, alice)
    # the expired holder's late release does not free the new holder's lease
    store.release_turn("thr_lease", "C", alice)
    assert not store.acquire_turn("thr_lease", "E", later, alice)
    store.release_turn("thr_lease", "D", alice)

    # another user cannot take a lease on alice's thread, nor on a missing one
    assert not store.acquire_turn("thr_lease", "bob", later, bob)
    assert not store.acquire_turn("thr_missing", "F", later, alice)
    assert store.acquire_turn("thr_lease", "G", later, alice)
    store.release_turn("thr_lease", "G", alice)
    # an acquire that starts out expired is no obstacle
    assert store.acquire_turn("thr_lease", "H", past, alice)
    assert store.acquire_turn("thr_lease", "I", later, alice)
