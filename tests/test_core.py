"""The protocol core driven with no Flask app at all: no app, no request, no context.

A :class:`~flask_chatkit.server.ChatKitServer` on an in-memory store, with a
Attachments whose rules (limits, signing key, URL builder) are bound
by hand, as ``init_app`` binds them: create an attachment and upload its bytes,
start a thread with it, stream the answer, and page the items. Every JSON body
and event is checked with the official models (``tests/wire.py``).
"""

from __future__ import annotations

import io
import json
import typing as t

import flask
import pytest

from flask_chatkit import stream_text
from flask_chatkit.attachments import AttachmentRules
from flask_chatkit.attachments import Attachments
from flask_chatkit.attachments import Upload
from flask_chatkit.server import ChatKitServer
from flask_chatkit.server import JSONResult
from flask_chatkit.server import RequestContext
from flask_chatkit.server import StreamResult
from flask_chatkit.store import InMemoryStore
from flask_chatkit.testing import chatkit_request
from flask_chatkit.testing import user_input
from flask_chatkit.types import dump_json

from . import wire
from .samples import make_png


def send(server: ChatKitServer[t.Any], context: t.Any, body: dict[str, t.Any]) -> t.Any:
    """One request through the core: the JSON body, or the stream's events, validated."""
    wire.check_request(body)
    result = server.process(json.dumps(body), context)
    if isinstance(result, JSONResult):
        return wire.check_exchange(body, 200, "application/json", result.body)
    assert isinstance(result, StreamResult)
    events = [json.loads(dump_json(event)) for event in result]
    for event in events:
        wire.check_event(event)
    return events


def test_the_core_serves_a_whole_conversation_with_an_attachment_without_flask(
    tmp_path: t.Any,
) -> None:
    store = InMemoryStore()
    files = Attachments(tmp_path / "files")
    files.bind(
        AttachmentRules(
            records=store,
            secret_key=lambda: "core-test-secret",
            url_for=lambda endpoint, **p: (
                f"https://chat.example/{endpoint}/{p['attachment_id']}?token={p['token']}"
            ),
            allowed_mime_types=["image/png"],
        )
    )

    def respond(thread: t.Any, message: t.Any, context: t.Any) -> t.Any:
        names = ", ".join(a.name for a in message.attachments)
        yield from stream_text(thread, ["I see ", names])

    server: ChatKitServer[t.Any] = ChatKitServer(store, files, hooks={"respond": respond})
    alice = RequestContext(user_id="alice")

    created = send(
        server,
        alice,
        chatkit_request(
            "attachments.create", name="dot.png", size=len(make_png()), mime_type="image/png"
        ),
    )
    assert created["upload_descriptor"]["url"].startswith(
        f"https://chat.example/upload_to/{created['id']}?token="
    )
    token = created["upload_descriptor"]["url"].split("token=")[1]
    context, payload, _ = files.signed_context(created["id"], token, preview=False)
    uploaded = files.receive(
        Upload(io.BytesIO(make_png())), context, attachment_id=created["id"], payload=payload
    )
    assert uploaded.preview_url.startswith(f"https://chat.example/preview/{created['id']}")

    events = send(
        server,
        alice,
        chatkit_request(
            "threads.create", input=user_input("what is this?", attachments=[created["id"]])
        ),
    )
    assert events[0]["type"] == "thread.created" and events[-1]["type"] == "thread.item.done"
    thread_id = events[0]["thread"]["id"]
    assert events[-1]["item"]["content"][0]["text"] == "I see dot.png"

    for limit in (1, 20):  # one item per page, then all
        page = send(
            server,
            alice,
            chatkit_request("items.list", thread_id=thread_id, order="asc", limit=limit),
        )
        assert page["has_more"] is (limit == 1)
    items = page["data"]
    assert [i["type"] for i in items] == ["user_message", "assistant_message"]
    assert items[0]["attachments"][0]["id"] == created["id"]
    assert flask.has_app_context() is False  # nothing above needed an app


def test_the_old_attachment_names_still_work_and_warn(tmp_path):
    import flask_chatkit
    from flask_chatkit import attachments as attachments_module
    from flask_chatkit import store as store_module
    from flask_chatkit.attachments import Attachments

    for module, name in [
        (flask_chatkit, "AttachmentStore"),
        (store_module, "AttachmentStore"),
        (attachments_module, "LocalAttachmentStore"),
        (attachments_module, "AttachmentStore"),
    ]:
        with pytest.warns(DeprecationWarning, match="Attachments"):
            assert getattr(module, name) is Attachments
    files = Attachments(tmp_path)
    with pytest.warns(DeprecationWarning, match="attachments="):
        server = ChatKitServer(InMemoryStore(), attachment_store=files)
    assert server.attachments is files
    with pytest.warns(DeprecationWarning, match="server.attachments"):
        assert server.attachment_store is files
    with pytest.raises(AttributeError):
        flask_chatkit.NoSuchName  # noqa: B018


def test_a_dead_turns_lease_that_runs_out_before_the_next_stream_starts_gets_its_note() -> None:
    # The next turn's request sees the dead process's lease still live; by the time
    # its stream starts the lease has run out. The stream must close the dead turn
    # with its note, not take the lease over silently (a race seen under load).
    import time
    from datetime import timedelta

    from flask_chatkit.types import utcnow

    store = InMemoryStore()

    def respond(thread: t.Any, message: t.Any, context: t.Any) -> t.Any:
        yield from stream_text(thread, "answered")

    server: ChatKitServer[t.Any] = ChatKitServer(store, hooks={"respond": respond})
    alice = RequestContext(user_id="alice")
    events = send(server, alice, chatkit_request("threads.create", input=user_input("first")))
    thread_id = events[0]["thread"]["id"]
    # a turn whose process died: its lease held, for a moment longer
    assert store.acquire_turn(thread_id, "dead-worker", utcnow() + timedelta(seconds=0.3), alice)

    body = chatkit_request(
        "threads.add_user_message", thread_id=thread_id, input=user_input("next")
    )
    result = server.process(json.dumps(body), alice)  # checked while the lease is live
    time.sleep(0.5)  # ... and streamed once it ran out
    events = [json.loads(dump_json(event)) for event in result]
    assert events[-1]["type"] == "thread.item.done", events
    kinds = [
        i["type"]
        for i in send(
            server, alice, chatkit_request("items.list", thread_id=thread_id, order="asc")
        )["data"]
    ]
    # (the hidden note for the model is not listed)
    assert kinds == [
        "user_message",
        "assistant_message",
        "task",
        "user_message",
        "assistant_message",
    ]
