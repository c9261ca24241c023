"""The isolation matrix through the HTTP endpoint: Bob can name Alice's ids, never use them.

Alice owns a thread (user message, assistant message, widget, pending structured
input, pending client tool call), an uploaded image and a pending two-phase
attachment. Bob sends every request type at them, with a session cookie and
with a bearer token, and gets a JSON 404 each time, while Alice's data stays as
it was. Alice then sends the very same request and succeeds, which shows that
Bob's 404 came from the ownership check and not from a malformed request.
"""

from __future__ import annotations

import dataclasses
import io
import json
import struct
import typing as t
import zlib
from urllib.parse import urlsplit

import pytest

from flask_chatkit import RequestContext
from flask_chatkit import stream_text
from flask_chatkit.testing import ChatKitClient
from flask_chatkit.testing import user_input

from .conftest import any_store
from .samples import pending_items


def tiny_png() -> bytes:
    """A valid 1x1 PNG."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 6, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00\xff"))
        + chunk(b"IEND", b"")
    )


PNG = tiny_png()


@dataclasses.dataclass
class World:
    """Alice's ids, and what every hook saw (to prove Bob never reached one)."""

    thread: str
    user_message: str
    assistant: str
    widget: str
    structured: str
    tool_call: str
    image: str
    image_path: str
    pending: str
    pending_upload_path: str
    bob_thread: str
    calls: list[tuple[str, str]]


def upload(client: ChatKitClient, path: str = "/chatkit/upload", **kw: t.Any) -> t.Any:
    data = {"file": (io.BytesIO(PNG), "dot.png", "image/png")}
    return client.post(path, data=data, content_type="multipart/form-data", **kw)


@pytest.fixture
def world(chatkit: t.Any, alice: ChatKitClient, bob: ChatKitClient) -> World:
    calls: list[tuple[str, str]] = []

    @chatkit.respond
    def respond(thread, message, context):
        calls.append(("respond", context.user_id))
        yield from stream_text(thread, ["Hi ", "there"])
        if message is None or message.content[0].text != "setup":
            return
        yield from pending_items(thread)

    @chatkit.action
    def action(thread, action, sender, context):
        calls.append(("action", context.user_id))
        yield from stream_text(thread, "acted")

    @chatkit.sync_action
    def sync_action(thread, action, sender, context):
        calls.append(("sync_action", context.user_id))

    @chatkit.feedback
    def feedback(thread_id, item_ids, kind, context):
        calls.append(("feedback", context.user_id))

    response = upload(alice)
    assert response.status_code == 200, response.data
    image = response.get_json()
    pending = alice.chatkit(
        "attachments.create", name="later.png", size=len(PNG), mime_type="image/png"
    ).body
    created = alice.chatkit("threads.create", input=user_input("setup", attachments=[image["id"]]))
    assert created.status == 200
    items = {e["item"]["type"]: e["item"]["id"] for e in created.of_type("thread.item.done")}
    bob_created = bob.chatkit("threads.create", input=user_input("mine"))
    calls.clear()
    return World(
        thread=created.events[0]["thread"]["id"],
        user_message=items["user_message"],
        assistant=items["assistant_message"],
        widget=items["widget"],
        structured=items["structured_input"],
        tool_call=items["client_tool_call"],
        image=image["id"],
        image_path=urlsplit(image["preview_url"]).path,
        pending=pending["id"],
        pending_upload_path=urlsplit(pending["upload_descriptor"]["url"]).path,
        bob_thread=bob_created.events[0]["thread"]["id"],
        calls=calls,
    )


def bearer_bob(app: t.Any) -> ChatKitClient:
    client: ChatKitClient = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = "Bearer token-bob"
    return client


def get(client: t.Any, path: str) -> tuple[int, bytes]:
    with client.get(path) as response:  # closes the file a preview sends
        return response.status_code, response.data


def load_attachment(app: t.Any, attachment_id: str) -> t.Any:
    """Alice's attachment straight from the store.

    A short app context of its own: a context held across requests would make
    them share ``g``, and with it Flask-Login's cached user.
    """
    with app.app_context():
        return app.extensions["chatkit"].server.store.load_attachment(
            attachment_id, RequestContext(user_id="alice")
        )


def alice_snapshot(app: t.Any, client: ChatKitClient, w: World) -> t.Any:
    """Everything Alice can observe, to compare before and after Bob's attempts."""
    return (
        client.chatkit("threads.get_by_id", thread_id=w.thread).body,
        client.chatkit("items.list", thread_id=w.thread, order="asc", limit=50).body,
        client.chatkit("threads.list").body,
        [load_attachment(app, i).model_dump() for i in (w.image, w.pending)],
        get(client, w.image_path),
    )


# Each case: (request type, params built from Alice's ids and the requester's own thread).
# Alice replays the same request with her own thread as "own thread" to prove it is valid.
CASES: dict[str, tuple[str, t.Callable[[World, str], dict[str, t.Any]]]] = {
    "add_user_message": (
        "threads.add_user_message",
        lambda w, own: {"thread_id": w.thread, "input": user_input("x")},
    ),
    "add_client_tool_output": (
        "threads.add_client_tool_output",
        lambda w, own: {"thread_id": w.thread, "result": {"ok": True}},
    ),
    "add_structured_input": (
        "threads.add_structured_input",
        lambda w, own: {
            "thread_id": w.thread,
            "item_id": w.structured,
            "input": {"status": "answered", "answers": {"q1": {"values": ["a"]}}},
        },
    ),
    "retry_after_item": (
        "threads.retry_after_item",
        lambda w, own: {"thread_id": w.thread, "item_id": w.user_message},
    ),
    "custom_action": (
        "threads.custom_action",
        lambda w, own: {"thread_id": w.thread, "item_id": w.widget, "action": {"type": "go"}},
    ),
    "sync_custom_action": (
        "threads.sync_custom_action",
        lambda w, own: {"thread_id": w.thread, "item_id": w.widget, "action": {"type": "go"}},
    ),
    "get_by_id": ("threads.get_by_id", lambda w, own: {"thread_id": w.thread}),
    "update": ("threads.update", lambda w, own: {"thread_id": w.thread, "title": "Pwned"}),
    "delete": ("threads.delete", lambda w, own: {"thread_id": w.thread}),
    "items.list": ("items.list", lambda w, own: {"thread_id": w.thread}),
    "items.feedback": (
        "items.feedback",
        lambda w, own: {"thread_id": w.thread, "item_ids": [w.assistant], "kind": "negative"},
    ),
    "attachments.delete": ("attachments.delete", lambda w, own: {"attachment_id": w.image}),
    "create_with_attachment": (
        "threads.create",
        lambda w, own: {"input": user_input("x", attachments=[w.image])},
    ),
    # Alice's attachment or item named from the requester's own thread
    "add_message_with_attachment": (
        "threads.add_user_message",
        lambda w, own: {"thread_id": own, "input": user_input("x", attachments=[w.image])},
    ),
    "own_thread_structured_input": (
        "threads.add_structured_input",
        lambda w, own: {"thread_id": own, "item_id": w.structured, "input": {"status": "skipped"}},
    ),
    "own_thread_retry": (
        "threads.retry_after_item",
        lambda w, own: {"thread_id": own, "item_id": w.user_message},
    ),
    "own_thread_custom_action": (
        "threads.custom_action",
        lambda w, own: {"thread_id": own, "item_id": w.widget, "action": {"type": "go"}},
    ),
    "own_thread_sync_action": (
        "threads.sync_custom_action",
        lambda w, own: {"thread_id": own, "item_id": w.widget, "action": {"type": "go"}},
    ),
    "own_thread_feedback": (
        "items.feedback",
        lambda w, own: {"thread_id": own, "item_ids": [w.assistant], "kind": "positive"},
    ),
    "own_thread_items_after": (
        "items.list",
        lambda w, own: {"thread_id": own, "after": w.user_message},
    ),
    "threads_list_after": ("threads.list", lambda w, own: {"after": w.thread}),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_bob_gets_404_for_every_request_naming_alices_ids(case, app, world, alice, bob):
    type_, build = CASES[case]
    before = alice_snapshot(app, alice, world)

    for client in (bob, bearer_bob(app)):
        ex = client.chatkit(type_, **build(world, world.bob_thread))
        assert ex.status == 404, (case, ex.body)
        assert ex.headers["Content-Type"] == "application/json"
        assert ex.error["code"] == "not_found"

    assert world.calls == []  # no hook ever ran for Bob
    assert alice_snapshot(app, alice, world) == before
    bob_threads = bob.chatkit("threads.list").body["data"]
    assert [th["id"] for th in bob_threads] == [world.bob_thread]

    # the same request from Alice herself is served
    mine = alice.chatkit(type_, **build(world, world.thread))
    assert mine.status == 200, (case, mine.body)


def test_bob_lists_no_threads_and_alice_lists_hers(world, app, alice, bob):
    assert alice.chatkit("threads.delete", thread_id=world.bob_thread).status == 404
    assert bob.chatkit("threads.delete", thread_id=world.bob_thread).status == 200
    for client in (bob, bearer_bob(app)):
        page = client.chatkit("threads.list", order="asc").body
        assert page == {"data": [], "has_more": False}
    assert [th["id"] for th in alice.chatkit("threads.list").body["data"]] == [world.thread]


def test_alices_preview_and_upload_urls_are_404_for_bob(world, app, alice, bob):
    before = alice_snapshot(app, alice, world)
    for client in (bob, bearer_bob(app)):
        status, body = get(client, world.image_path)
        assert status == 404
        assert json.loads(body)["error"]["code"] == "not_found"
        multipart = upload(client, world.pending_upload_path)
        assert (multipart.status_code, multipart.get_json()["error"]["code"]) == (404, "not_found")
        raw = client.put(world.pending_upload_path, data=b"evil", content_type="image/png")
        assert (raw.status_code, raw.get_json()["error"]["code"]) == (404, "not_found")
    assert alice_snapshot(app, alice, world) == before
    assert load_attachment(app, world.pending).metadata["upload_pending"]

    # Alice's own URLs work
    assert get(alice, world.image_path) == (200, PNG)
    assert upload(alice, world.pending_upload_path).status_code == 200


@pytest.mark.parametrize(
    "type_, params",
    [
        ("threads.get_by_id", {"thread_id": "ID"}),
        ("items.list", {"thread_id": "ID"}),
        ("threads.update", {"thread_id": "ID", "title": "t"}),
        ("attachments.delete", {"attachment_id": "ID"}),
    ],
)
def test_bobs_404_for_alices_id_reads_exactly_like_a_missing_id(type_, params, world, bob):
    own = world.image if type_.startswith("attachments") else world.thread
    fake = own[:4] + "0" * (len(own) - 4)

    def error(id_: str) -> t.Any:
        ex = bob.chatkit(type_, **{k: (id_ if v == "ID" else v) for k, v in params.items()})
        return ex.status, str(ex.body).replace(id_, "ID")

    assert error(own) == error(fake)
    status, body = get(bob, world.image_path)
    fake_status, fake_body = get(bob, world.image_path.replace(world.image, fake))
    assert (status, body.replace(world.image.encode(), b"ID")) == (
        fake_status,
        fake_body.replace(fake.encode(), b"ID"),
    )


# --- anonymous clients -------------------------------------------------------------------

ENDPOINTS: dict[str, tuple[str, str, t.Callable[[World], dict[str, t.Any]]]] = {
    "threads.list": (
        "POST",
        "/chatkit",
        lambda w: {"json": {"type": "threads.list", "params": {}}},
    ),
    "threads.get_by_id": (
        "POST",
        "/chatkit",
        lambda w: {"json": {"type": "threads.get_by_id", "params": {"thread_id": w.thread}}},
    ),
    "upload": (
        "POST",
        "/chatkit/upload",
        lambda w: {
            "data": {"file": (io.BytesIO(PNG), "a.png", "image/png")},
            "content_type": "multipart/form-data",
        },
    ),
    "two-phase POST": (
        "POST",
        "/chatkit/upload/{pending}",
        lambda w: {
            "data": {"file": (io.BytesIO(PNG), "a.png", "image/png")},
            "content_type": "multipart/form-data",
        },
    ),
    "two-phase PUT": (
        "PUT",
        "/chatkit/upload/{pending}",
        lambda w: {"data": PNG, "content_type": "image/png"},
    ),
    "client_secret": ("POST", "/chatkit/client_secret", lambda w: {"json": {}}),
    "preview": ("GET", "/chatkit/attachments/{image}/preview", lambda w: {}),
}


CREDENTIALS = [
    {},
    {"Authorization": "Bearer token-mallory"},
    {"Authorization": "Basic YWxpY2U6eA=="},
    {"X-User-ID": "alice", "X-Forwarded-User": "alice", "X-Remote-User": "alice"},
]


@any_store
@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
def test_anonymous_clients_get_a_json_401_on_every_endpoint(endpoint, world, app, alice):
    before = alice_snapshot(app, alice, world)
    method, path, build = ENDPOINTS[endpoint]
    path = path.format(pending=world.pending, image=world.image)
    for credentials in CREDENTIALS:
        with app.test_client().open(
            path,
            method=method,
            headers={"Origin": "http://localhost", **credentials},
            environ_overrides={"REMOTE_USER": "alice"},
            **build(world),
        ) as response:
            assert response.status_code == 401, (credentials, response.data)
            assert response.headers["Content-Type"] == "application/json"
            assert response.get_json()["error"]["code"] == "unauthorized"
            assert "Location" not in response.headers  # no login redirect
            assert PNG not in response.data
    assert alice_snapshot(app, alice, world) == before


# --- spoofing ------------------------------------------------------------------------------

SPOOF_HEADERS = {
    "X-User-ID": "alice",
    "X-Forwarded-User": "alice",
    "X-Remote-User": "alice",
    "X-Auth-Request-User": "alice",
}
SPOOF_METADATA = {"user_id": "alice", "user": "alice", "userId": "alice", "auth": "bearer"}


def test_identity_cannot_be_spoofed_by_body_fields_or_headers(chatkit, world, alice, bob):
    seen: list[t.Any] = []

    @chatkit.respond
    def respond(thread, message, context):
        seen.append((context.user_id, context.auth, context.metadata))
        yield from stream_text(thread, "hi")

    spoof = {"headers": SPOOF_HEADERS, "metadata": SPOOF_METADATA}
    env = {"REMOTE_USER": "alice"}
    bob.environ_base.update(env)

    ex = bob.chatkit("threads.get_by_id", thread_id=world.thread, user_id="alice", **spoof)
    assert ex.status == 404
    ex = bob.chatkit("items.list", thread_id=world.thread, user_id="alice", **spoof)
    assert ex.status == 404
    listed = bob.chatkit("threads.list", user_id="alice", **spoof).body["data"]
    assert [th["id"] for th in listed] == [world.bob_thread]

    created = bob.chatkit("threads.create", input=user_input("who am I?"), user_id="alice", **spoof)
    assert created.status == 200
    new_thread = created.events[0]["thread"]["id"]
    # the hook saw Bob, with a session (not bearer) login; metadata is only data
    assert seen == [("bob", "session", SPOOF_METADATA)]
    assert new_thread in [th["id"] for th in bob.chatkit("threads.list").body["data"]]
    assert alice.chatkit("threads.get_by_id", thread_id=new_thread).status == 404
    assert [th["id"] for th in alice.chatkit("threads.list").body["data"]] == [world.thread]


def test_a_bearer_token_for_bob_does_not_switch_a_session_logged_in_as_alice(world, alice):
    # Flask-Login's session user wins; the token is never mixed in
    token = {"Authorization": "Bearer token-bob"}
    ex = alice.chatkit("threads.list", headers=token)
    assert [th["id"] for th in ex.body["data"]] == [world.thread]
    other = alice.chatkit("threads.get_by_id", thread_id=world.bob_thread, headers=token)
    assert other.status == 404
