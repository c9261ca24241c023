"""Agents: ``?agent_id=`` on the ChatKit URL scopes threads to one of the user's agents.

The app's ``@chatkit.agent_loader`` returns the agent for ids the user owns and
``None`` otherwise. Agent ids here contain letters outside hex (``g``, ``n``,
``t``), so they can never appear by chance inside a random id on the wire.
"""

from __future__ import annotations

import io
import json
import os
import typing as t

import pytest
from flask import Flask

from flask_chatkit import stream_text
from flask_chatkit.errors import NotFoundError
from flask_chatkit.testing import Exchange
from flask_chatkit.testing import chatkit_request
from flask_chatkit.testing import user_input

from . import wire

#: agent id -> (owner, display name)
AGENTS = {
    "agent-one": ("alice", "Ada"),
    "agent-two": ("alice", "Grace"),
    "agent-bob": ("bob", "Bobby"),
}


def call(
    client: t.Any, type_: str, agent: str | None = None, *, valid: bool = True, **params: t.Any
) -> Exchange:
    """POST one request to ``/chatkit?agent_id=<agent>``, judged like ``client.chatkit``."""
    body = chatkit_request(type_, **params)
    if valid:
        wire.check_request(body)
    response = client.post(
        "/chatkit",
        query_string={} if agent is None else {"agent_id": agent},
        data=json.dumps(body),
        content_type="application/json",
    )
    parsed = wire.check_exchange(
        body, response.status_code, response.headers.get("Content-Type", ""), response.data
    )
    return Exchange(response.status_code, parsed, response.headers)


def create(client: t.Any, agent: str | None = None, text: str = "hi") -> str:
    ex = call(client, "threads.create", agent, input=user_input(text))
    assert ex.status == 200, ex.body
    assert "error" not in ex.types, ex.events
    return ex.events[0]["thread"]["id"]  # type: ignore[no-any-return]


def listed(client: t.Any, agent: str | None = None, **params: t.Any) -> list[str]:
    ex = call(client, "threads.list", agent, **params)
    assert ex.status == 200, ex.body
    return [th["id"] for th in ex.body["data"]]


def assert_agent_not_found(ex: Exchange) -> dict[str, t.Any]:
    assert ex.status == 404, ex.body
    assert ex.error["code"] == "agent_not_found"
    assert ex.error["field"] == "agent_id"
    return ex.error


@pytest.fixture
def seen(chatkit: t.Any) -> list[dict[str, t.Any]]:
    """What the responder saw, one entry per call; with an agent loader registered."""
    calls: list[dict[str, t.Any]] = []

    @chatkit.agent_loader
    def load_agent(agent_id: str, context: t.Any) -> dict[str, str] | None:
        owner, name = AGENTS.get(agent_id, (None, None))
        if owner != context.user_id:
            return None
        return {"id": agent_id, "name": name}  # type: ignore[dict-item]

    @chatkit.respond
    def respond(thread: t.Any, message: t.Any, context: t.Any) -> t.Any:
        calls.append(
            {
                "agent_id": context.agent_id,
                "agent": context.agent,
                "thread_agent": thread.metadata.get("agent_id"),
                "user": context.user_id,
            }
        )
        yield from stream_text(thread, "hello")

    return calls


# --- the agent reaches the responder, not the client ------------------------------------


def test_create_records_the_agent_for_the_responder_but_never_sends_it(
    seen: list[t.Any], alice: t.Any, store: t.Any, ctx_of: t.Any
) -> None:
    ex = call(alice, "threads.create", "agent-two", input=user_input("hi"))
    assert ex.status == 200 and "error" not in ex.types, ex.body
    thread_id = ex.events[0]["thread"]["id"]
    assert seen == [
        {
            "agent_id": "agent-two",
            "agent": {"id": "agent-two", "name": "Grace"},
            "thread_agent": "agent-two",
            "user": "alice",
        }
    ]
    assert "agent-two" not in json.dumps(ex.events)
    assert ex.events[0]["thread"]["metadata"] == {}
    # server side, the thread knows its agent
    assert store.load_thread(thread_id, ctx_of("alice")).metadata["agent_id"] == "agent-two"

    again = call(
        alice,
        "threads.add_user_message",
        "agent-two",
        thread_id=thread_id,
        input=user_input("more"),
    )
    assert again.status == 200 and "error" not in again.types, again.body
    assert seen[-1]["agent_id"] == "agent-two" and seen[-1]["thread_agent"] == "agent-two"
    for type_, params in [
        ("threads.get_by_id", {}),
        ("items.list", {}),
        ("threads.update", {"title": "Named"}),
    ]:
        got = call(alice, type_, "agent-two", thread_id=thread_id, **params)
        assert got.status == 200, got.body
        assert "agent-two" not in json.dumps(got.body), type_
    page = call(alice, "threads.list", "agent-two")
    assert [th["metadata"] for th in page.body["data"]] == [{}]
    assert "agent-two" not in json.dumps(page.body)


def test_threads_list_returns_only_the_requested_agents_threads(
    seen: list[t.Any], alice: t.Any, bob: t.Any
) -> None:
    one = [create(alice, "agent-one") for _ in range(3)]
    two = create(alice, "agent-two")
    plain = create(alice)
    bobs = create(bob, "agent-bob")

    assert listed(alice, "agent-one", order="asc") == one
    assert listed(alice, "agent-two") == [two]
    assert sorted(listed(alice)) == sorted([*one, two, plain])
    assert listed(bob, "agent-bob") == [bobs]
    assert listed(bob) == [bobs]
    # pages stay within the agent
    first = call(alice, "threads.list", "agent-one", limit=2, order="asc").body
    assert [th["id"] for th in first["data"]] == one[:2] and first["has_more"] is True
    rest = listed(alice, "agent-one", limit=2, order="asc", after=first["after"])
    assert rest == one[2:]
    # a cursor from another agent's list is unknown here
    foreign_cursor = call(alice, "threads.list", "agent-one", after=two)
    assert (foreign_cursor.status, foreign_cursor.error["field"]) == (404, "params.after")


@pytest.mark.parametrize("owner_agent", ["agent-one", None])
def test_a_thread_of_another_agent_is_404_and_left_untouched(
    seen: list[t.Any], alice: t.Any, store: t.Any, ctx_of: t.Any, owner_agent: str | None
) -> None:
    thread_id = create(alice, owner_agent)
    items = store.load_thread_items(thread_id, None, 100, "asc", ctx_of("alice")).data
    calls = len(seen)
    attempts: list[tuple[str, dict[str, t.Any]]] = [
        ("threads.get_by_id", {}),
        ("items.list", {}),
        ("threads.add_user_message", {"input": user_input("sneaky")}),
        ("threads.retry_after_item", {"item_id": items[0].id}),
        ("threads.update", {"title": "Hijacked"}),
        ("items.feedback", {"item_ids": [items[-1].id], "kind": "negative"}),
        ("threads.delete", {}),
    ]
    for type_, params in attempts:
        ex = call(alice, type_, "agent-two", thread_id=thread_id, **params)
        assert ex.status == 404, (type_, ex.body)
        assert ex.error["code"] == "not_found", type_
    assert len(seen) == calls
    assert thread_id not in listed(alice, "agent-two")
    # still there, unchanged, for its own scope
    ok = call(alice, "threads.get_by_id", owner_agent, thread_id=thread_id)
    assert ok.status == 200 and ok.body.get("title") is None
    after = store.load_thread_items(thread_id, None, 100, "asc", ctx_of("alice")).data
    assert [i.id for i in after] == [i.id for i in items]
    if owner_agent is not None:
        assert store.export_feedback() == []


@pytest.mark.parametrize(
    "agent", ["agent-nobody", "agent-bob", ""], ids=["unknown", "foreign", "empty"]
)
def test_an_unknown_or_foreign_agent_is_404_and_nothing_is_written(
    seen: list[t.Any], alice: t.Any, store: t.Any, ctx_of: t.Any, agent: str
) -> None:
    mine = create(alice)
    before = store.load_thread_items(mine, None, 100, "asc", ctx_of("alice")).data
    calls = len(seen)
    create_ex = call(alice, "threads.create", agent, input=user_input("hello?"))
    assert_agent_not_found(create_ex)
    assert "agent_loader" not in create_ex.error["message"]  # a loader exists
    for type_, params in [
        ("threads.list", {}),
        ("threads.get_by_id", {"thread_id": mine}),
        ("items.list", {"thread_id": mine}),
        ("threads.add_user_message", {"thread_id": mine, "input": user_input("x")}),
        ("threads.delete", {"thread_id": mine}),
    ]:
        assert_agent_not_found(call(alice, type_, agent, **params))
    assert len(seen) == calls
    assert listed(alice) == [mine]
    after = store.load_thread_items(mine, None, 100, "asc", ctx_of("alice")).data
    assert [i.id for i in after] == [i.id for i in before]


def test_the_agent_check_comes_before_the_body_is_read(seen: list[t.Any], alice: t.Any) -> None:
    response = alice.post(
        "/chatkit?agent_id=agent-bob", data=b"{not json", content_type="application/json"
    )
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "agent_not_found"


def test_agent_id_without_an_agent_loader_is_404_saying_so(
    chatkit: t.Any, alice: t.Any, store: t.Any
) -> None:
    @chatkit.respond
    def respond(thread: t.Any, message: t.Any, context: t.Any) -> t.Any:
        yield from stream_text(thread, "hello")

    error = assert_agent_not_found(
        call(alice, "threads.create", "agent-one", input=user_input("hi"))
    )
    assert "agent_loader" in error["message"]
    assert_agent_not_found(call(alice, "threads.list", "agent-one"))
    assert listed(alice) == []
    # and without agent_id the same server works
    thread_id = create(alice)
    assert listed(alice) == [thread_id]


def test_without_agent_id_everything_works_as_before(
    seen: list[t.Any], alice: t.Any, bob: t.Any, store: t.Any, ctx_of: t.Any
) -> None:
    thread_id = create(alice)
    assert seen[-1] == {"agent_id": None, "agent": None, "thread_agent": None, "user": "alice"}
    assert "agent_id" not in store.load_thread(thread_id, ctx_of("alice")).metadata
    more = alice.chatkit("threads.add_user_message", thread_id=thread_id, input=user_input("again"))
    assert more.status == 200 and "error" not in more.types
    assert alice.chatkit("threads.get_by_id", thread_id=thread_id).status == 200
    items = alice.chatkit("items.list", thread_id=thread_id).body["data"]
    assert len(items) == 4
    assert [th["id"] for th in alice.chatkit("threads.list").body["data"]] == [thread_id]
    assert bob.chatkit("threads.get_by_id", thread_id=thread_id).status == 404
    assert alice.chatkit("threads.delete", thread_id=thread_id).status == 200
    assert alice.chatkit("threads.list").body["data"] == []


# --- uploads --------------------------------------------------------------------------


def upload(client: t.Any, agent: str | None, data: bytes = b"hello file") -> t.Any:
    return client.post(
        "/chatkit/upload",
        query_string={} if agent is None else {"agent_id": agent},
        data={"file": (io.BytesIO(data), "note.txt", "text/plain")},
        content_type="multipart/form-data",
    )


def files_in(app: Flask) -> list[str]:
    folder = app.config["CHATKIT_ATTACHMENTS_FOLDER"]
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


def test_upload_with_an_agent_checks_it_and_the_file_can_be_sent_in_that_agent(
    app: Flask, seen: list[t.Any], alice: t.Any, store: t.Any, ctx_of: t.Any
) -> None:
    for agent in ("agent-bob", "agent-nobody"):
        refused = upload(alice, agent)
        assert refused.status_code == 404, refused.data
        assert refused.get_json()["error"]["code"] == "agent_not_found"
    assert files_in(app) == []

    response = upload(alice, "agent-one")
    assert response.status_code == 200, response.data
    attachment = response.get_json()
    wire.ATTACHMENT.validate_python(attachment)
    assert files_in(app) == [attachment["id"]]
    ex = call(
        alice,
        "threads.create",
        "agent-one",
        input=user_input("see file", attachments=[attachment["id"]]),
    )
    assert ex.status == 200 and "error" not in ex.types, ex.body
    assert ex.events[1]["item"]["attachments"][0]["id"] == attachment["id"]
    assert seen[-1]["agent_id"] == "agent-one"
    thread_id = ex.events[0]["thread"]["id"]
    assert store.load_attachment(attachment["id"], ctx_of("alice")).thread_id == thread_id
    with pytest.raises(NotFoundError):
        store.load_attachment(attachment["id"], ctx_of("bob"))
