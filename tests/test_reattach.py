"""Re-attach: ``GET {prefix}/threads/<id>/events`` streams a thread's running turn.

The stream starts with the turn's items as they stand (``thread.item.added``),
goes on with the live events and ends as the turn's own stream does, with the
thread's own status back. Under ``gunicorn -k gevent`` (``tests/fault_app.py``)
on SQLite and PostgreSQL, two servers on one database stand for two workers or
hosts: a watcher on the server running the turn gets its events in-process, one
on the other server reads its checkpoints; both watch the answer grow to its
end after the client that started it left. Every event of every watched stream
is validated with the official models (``tests/wire.py``).
"""

from __future__ import annotations

import json
import threading
import time
import typing as t
from http.client import HTTPConnection
from pathlib import Path

import pytest
from flask import Flask

from flask_chatkit import stream_text
from flask_chatkit.server import RequestContext
from flask_chatkit.store import InMemoryStore
from flask_chatkit.testing import user_input
from flask_chatkit.types import AssistantMessageContent
from flask_chatkit.types import AssistantMessageItem
from flask_chatkit.types import ThreadMetadata
from flask_chatkit.types import UserMessageItem
from flask_chatkit.types import dump_json
from flask_chatkit.watch import changes
from flask_chatkit.watch import follow_stored

from . import wire
from .conftest import logged_in
from .conftest import make_app
from .test_faults import DELTA
from .test_faults import THREAD_ID
from .test_faults import Reader
from .test_faults import answer_to
from .test_faults import ask
from .test_faults import database_url  # noqa: F401  (the fixture: SQLite, PostgreSQL)
from .test_faults import drop
from .test_faults import read_until
from .test_faults import reader  # noqa: F401  (the fixture)
from .test_faults import serve
from .test_faults import start_stream


def validated(events: t.Iterable[t.Any]) -> list[dict[str, t.Any]]:
    """The core's event models as the wire carries them, each checked by the official models."""
    out = []
    for event in events:
        data = json.loads(dump_json(event))
        wire.check_event(data)
        out.append(data)
    return out


def watched_text(events: list[dict[str, t.Any]]) -> tuple[str, str]:
    """The assistant message's text as the watcher built it (added, then deltas)
    and as the last ``thread.item.done`` gave it."""
    built = done = ""
    for event in events:
        kind = event["type"]
        if kind == "thread.item.added" and event["item"]["type"] == "assistant_message":
            built = "".join(part["text"] for part in event["item"]["content"])
        elif kind == "thread.item.updated" and event["update"]["type"].endswith("text_delta"):
            built += event["update"]["delta"]
        elif kind == "thread.item.done" and event["item"]["type"] == "assistant_message":
            done = "".join(part["text"] for part in event["item"]["content"])
    return built, done


# --- the stored path, step by step --------------------------------------------------------


def message(thread_id: str, item_id: str, *texts: str) -> AssistantMessageItem:
    return AssistantMessageItem(
        id=item_id,
        thread_id=thread_id,
        content=[AssistantMessageContent(text=text) for text in texts],
    )


def test_changes_are_the_events_that_make_them() -> None:
    before = {"m": message("t", "m", "Hel")}
    grown = validated(changes(before, [message("t", "m", "Hello", "Wor")]))
    assert [(e["type"], e["update"]["type"]) for e in grown] == [
        ("thread.item.updated", "assistant_message.content_part.text_delta"),
        ("thread.item.updated", "assistant_message.content_part.added"),
    ]
    assert grown[0]["update"]["delta"] == "lo" and grown[1]["update"]["content"]["text"] == "Wor"
    # text that did not only grow replaces the item; a vanished item is removed
    rewritten = validated(changes(before, [message("t", "m", "Bye")]))
    assert [e["type"] for e in rewritten] == ["thread.item.replaced"]
    assert [e["type"] for e in validated(changes(before, []))] == ["thread.item.removed"]
    assert changes(before, [message("t", "m", "Hel")]) == []


def test_a_turn_run_elsewhere_is_followed_through_its_checkpoints_to_its_end() -> None:
    store = InMemoryStore()
    alice = RequestContext(user_id="alice")
    thread = ThreadMetadata(id="thr_1")
    store.save_thread(thread, alice)
    store.add_thread_item(
        "thr_1",
        UserMessageItem(
            id="msg_u", thread_id="thr_1", content=[{"type": "input_text", "text": "hi"}]
        ),
        alice,
    )
    assert store.acquire_turn("thr_1", "tok", _later(60), alice)
    store.add_thread_item("thr_1", message("thr_1", "msg_a", "Once"), alice)
    steps = iter(
        [
            lambda: store.save_item("thr_1", message("thr_1", "msg_a", "Once upon"), alice),
            lambda: store.save_item("thr_1", message("thr_1", "msg_a", "Once upon a time."), alice),
            lambda: store.release_turn("thr_1", "tok", alice),  # the turn's end
        ]
    )
    looks = []

    def sleep(seconds: float) -> None:  # each look at the checkpoints: the turn moved on
        looks.append(seconds)
        next(steps)()

    events = validated(follow_stored(store, thread, alice, 0.5, sleep=sleep))
    assert looks == [0.5, 0.5, 0.5]
    assert events[0]["type"] == "thread.item.added"
    assert events[-2]["type"] == "thread.item.done" and events[-1]["type"] == "thread.updated"
    assert events[-1]["thread"]["status"] == {"type": "active"}
    assert watched_text(events) == ("Once upon a time.", "Once upon a time.")
    assert not any(e.get("item", {}).get("type") == "user_message" for e in events)


def _later(seconds: float) -> t.Any:
    from datetime import timedelta

    from flask_chatkit.types import utcnow

    return utcnow() + timedelta(seconds=seconds)


# --- in-process: who may watch -----------------------------------------------------------


@pytest.fixture
def app(store_kind: str, tmp_path: t.Any) -> Flask:
    app = make_app(store_kind, tmp_path, CHATKIT_HEARTBEAT_INTERVAL=0)

    @app.extensions["chatkit"].respond
    def respond(thread: t.Any, message: t.Any, context: t.Any) -> t.Any:
        yield from stream_text(thread, ["an ", "answer"])

    return app


def test_watching_needs_a_user_and_the_users_own_thread_and_a_running_turn(app: Flask) -> None:
    alice, bob = logged_in(app, "alice"), logged_in(app, "bob")
    created = alice.chatkit("threads.create", input=user_input("hi"))
    thread_id = created.events[0]["thread"]["id"]
    url = f"/chatkit/threads/{thread_id}/events"
    anonymous = app.test_client().get(url)
    assert anonymous.status_code == 401
    wire.check_error(401, anonymous.get_json())
    foreign, unknown = bob.get(url), bob.get("/chatkit/threads/thr_nope/events")
    assert foreign.status_code == unknown.status_code == 404
    assert foreign.get_json()["error"]["code"] == unknown.get_json()["error"]["code"]
    assert bob.get("/chatkit/threads/" + "x" * 300 + "/events").status_code == 404
    idle = alice.get(url)  # the answer is over: nothing to watch
    assert idle.status_code == 204 and idle.data == b""


# --- under gunicorn: the same server and another one --------------------------------------


def watch(port: int, user: str, thread_id: str, out: dict[str, t.Any], key: str) -> None:
    conn = HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request(
            "GET",
            f"/chatkit/threads/{thread_id}/events",
            headers={"Authorization": f"Bearer token-{user}"},
        )
        response = conn.getresponse()
        out[key] = (response.status, response.getheader("Content-Type"), response.read())
    finally:
        conn.close()


@pytest.mark.server
def test_a_left_answer_is_watched_to_its_end_from_the_same_and_another_server(
    reader: Reader, database_url: str, tmp_path: Path
) -> None:
    text = ask(60, 0.05, tag="watched")  # about 3 s
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    settings = {"CHATKIT_DISCONNECT": "finish"}
    with (
        serve(tmp_path / "a", database_url, **settings) as a,
        serve(tmp_path / "b", database_url, **settings) as b,
    ):
        sock = start_stream(a.port, "ann", text)
        seen = read_until(sock, b"", lambda d: d.count(DELTA) >= 5)
        thread_id = THREAD_ID.search(seen).group(1).decode()  # type: ignore[union-attr]
        time.sleep(1.2)  # a checkpoint has landed for the other server to see
        out: dict[str, t.Any] = {}
        watchers = [
            threading.Thread(target=watch, args=(server.port, "ann", thread_id, out, name))
            for name, server in (("same", a), ("other", b))
        ]
        for watcher in watchers:
            watcher.start()
        time.sleep(0.3)
        drop(sock, reset=False)  # the page that started it goes away: the turn runs on
        for watcher in watchers:
            watcher.join(timeout=60)
        full = answer_to(text)
        for name in ("same", "other"):
            status, content_type, raw = out[name]
            assert status == 200 and content_type.startswith("text/event-stream"), out[name]
            events = wire.parse_frames(raw)
            for event in events:
                wire.check_event(event)
            first = events[0]
            assert first["type"] == "thread.item.added", (name, first)
            assert first["item"]["type"] == "assistant_message"
            so_far = first["item"]["content"][0]["text"]
            assert so_far and full.startswith(so_far) and so_far != full, name
            assert any(e["type"] == "thread.item.updated" for e in events), name  # it grew
            assert watched_text(events) == (full, full), name
            assert events[-1]["type"] == "thread.updated", name
            assert events[-1]["thread"]["status"] == {"type": "active"}, name
        items = reader.items("ann", thread_id)
        assert [i.type for i in items] == ["user_message", "assistant_message"]
        assert items[1].content[0].text == full
        assert reader.lease_expiry(thread_id) is None
        # nothing runs now: 204 on both servers, and not for another user
        for server in (a, b):
            watch(server.port, "ann", thread_id, out, "after")
            assert out["after"][0] == 204
            watch(server.port, "bob", thread_id, out, "foreign")
            assert out["foreign"][0] == 404
    for server in (a, b):
        log = server.log.read_text()
        assert "Traceback" not in log, log[-3000:]
