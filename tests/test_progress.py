"""A running turn is visible from anywhere: its thread shows as locked ("Still
answering…", in the reader's language) and its answer, saved every
``CHATKIT_CHECKPOINT_INTERVAL`` seconds, grows in ``threads.get_by_id`` and
``items.list``; when the turn ends the thread is back to its own status and the
answer is stored once, whole. Every body is checked with the official models.
"""

from __future__ import annotations

import typing as t

import pytest
from flask import Flask

from flask_chatkit import stream_text
from flask_chatkit.testing import chatkit_request
from flask_chatkit.testing import user_input

from .conftest import logged_in
from .conftest import make_app
from .streams import Stream
from .streams import deltas
from .streams import paced

CHUNKS = [f"w{i} " for i in range(60)]


@pytest.fixture(params=[0, 5], ids=["inline", "greenlet"])
def app(store_kind: str, tmp_path: t.Any, request: pytest.FixtureRequest) -> Flask:
    app = make_app(
        store_kind,
        tmp_path,
        CHATKIT_HEARTBEAT_INTERVAL=request.param,
        CHATKIT_CHECKPOINT_INTERVAL=0.02,
    )

    @app.extensions["chatkit"].respond
    def respond(thread: t.Any, message: t.Any, context: t.Any) -> t.Any:
        yield from stream_text(thread, paced(CHUNKS, 0.005))

    return app


def answer_of(body: dict[str, t.Any]) -> list[str]:
    return [
        part["text"]
        for item in body["items"]["data"]
        if item["type"] == "assistant_message"
        for part in item["content"]
    ]


@pytest.mark.slow
def test_a_running_turn_shows_as_locked_with_its_answer_so_far(app: Flask) -> None:
    alice = logged_in(app, "alice")
    other_tab = logged_in(app, "alice")
    stream = Stream(alice, chatkit_request("threads.create", input=user_input("tell me")))
    stream.read_until(lambda events: len(deltas(events)) >= 30)
    thread_id = stream.events[0]["thread"]["id"]
    seen = "".join(deltas(stream.events))

    shown = other_tab.chatkit("threads.get_by_id", thread_id=thread_id)
    assert shown.status == 200
    assert shown.body["status"] == {"type": "locked", "reason": "Still answering…"}
    (so_far,) = answer_of(shown.body)
    assert so_far and seen.startswith(so_far)  # a checkpoint of what was produced
    assert len(so_far.split()) >= 15  # saved as it grew, not only at the start
    listed = other_tab.chatkit("threads.list").body["data"]
    assert listed[0]["id"] == thread_id and listed[0]["status"]["type"] == "locked"
    german = other_tab.chatkit(
        "threads.get_by_id", thread_id=thread_id, headers={"Accept-Language": "de-DE,de;q=0.9"}
    )
    assert german.body["status"] == {"type": "locked", "reason": "Antwortet noch…"}
    # a second turn meanwhile is refused in-stream, as before
    busy = other_tab.chatkit(
        "threads.add_user_message", thread_id=thread_id, input=user_input("and?")
    )
    assert busy.events[-1]["type"] == "error"

    events = stream.finish()
    assert events[-1]["type"] == "thread.item.done"
    done = other_tab.chatkit("threads.get_by_id", thread_id=thread_id).body
    assert done["status"] == {"type": "active"}
    assert answer_of(done) == ["".join(CHUNKS)]  # once, whole
    items = other_tab.chatkit("items.list", thread_id=thread_id, order="asc").body["data"]
    assert [i["type"] for i in items] == ["user_message", "assistant_message"]


def test_without_checkpoints_the_answer_appears_only_at_the_end(
    store_kind: str, tmp_path: t.Any
) -> None:
    app = make_app(
        store_kind, tmp_path, CHATKIT_HEARTBEAT_INTERVAL=0, CHATKIT_CHECKPOINT_INTERVAL=0
    )

    @app.extensions["chatkit"].respond
    def respond(thread: t.Any, message: t.Any, context: t.Any) -> t.Any:
        yield from stream_text(thread, CHUNKS)

    alice = logged_in(app, "alice")
    stream = Stream(alice, chatkit_request("threads.create", input=user_input("tell me")))
    stream.read_until(lambda events: len(deltas(events)) >= 30)
    thread_id = stream.events[0]["thread"]["id"]
    shown = logged_in(app, "alice").chatkit("threads.get_by_id", thread_id=thread_id).body
    assert shown["status"]["type"] == "locked" and answer_of(shown) == []
    stream.finish()
