"""Every request type and the PROTOCOL.md §15 checklist, through ``POST /chatkit``.

Each exchange goes through ``client.chatkit(...)``, so every body and event is
also judged by the official ``openai-chatkit`` models (``tests/wire.py``).
"""

from __future__ import annotations

import base64
import io
import json
import typing as t

import pytest
import sqlalchemy as sa
from flask import Flask

from flask_chatkit import ChatKit
from flask_chatkit import CustomStreamError
from flask_chatkit import ErrorCode
from flask_chatkit import InMemoryStore
from flask_chatkit import NotFoundError
from flask_chatkit import RequestContext
from flask_chatkit import StreamError
from flask_chatkit import progress
from flask_chatkit import stream_text
from flask_chatkit import widget_item
from flask_chatkit.sqlalchemy_store import SQLAlchemyStore
from flask_chatkit.streaming import user_text
from flask_chatkit.testing import chatkit_request
from flask_chatkit.testing import user_input
from flask_chatkit.types import ClosedStatus
from flask_chatkit.types import LockedStatus
from flask_chatkit.types import ThreadItemDoneEvent

from .conftest import logged_in
from .conftest import make_app
from .streams import Stream

CARD = {"type": "Card", "children": [{"type": "Text", "id": "t", "value": "before"}]}


def start(client: t.Any, text: str = "hi", **extra: t.Any) -> tuple[str, t.Any]:
    """Create a thread with one user message; return its id and the exchange."""
    ex = client.chatkit("threads.create", input=user_input(text, **extra))
    assert ex.status == 200, ex.body
    return ex.events[0]["thread"]["id"], ex


def said(thread_id: str, text: str, item_id: str) -> dict[str, t.Any]:
    content = [{"type": "output_text", "text": text, "annotations": []}]
    return {"type": "assistant_message", "id": item_id, "thread_id": thread_id, "content": content}


def done(item: dict[str, t.Any]) -> dict[str, t.Any]:
    return {"type": "thread.item.done", "item": item}


def stored(store: t.Any, ctx: t.Any, thread_id: str) -> list[t.Any]:
    """Everything the store holds for the thread (hidden items included), oldest first."""
    return store.load_thread_items(thread_id, None, 1000, "asc", ctx).data


def counts(app: Flask) -> tuple[int, int]:
    """(threads, items) across all users."""
    with app.app_context():
        store = app.extensions["chatkit"].server.store
        if isinstance(store, InMemoryStore):
            return len(store._threads), sum(len(v) for v in store._items.values())
        with store.engine.connect() as conn:
            return tuple(  # type: ignore[return-value]
                conn.execute(sa.select(sa.func.count()).select_from(tb)).scalar_one()
                for tb in (store.threads, store.items)
            )


# --- threads.create / add_user_message ---------------------------------------------


def test_create_persists_thread_and_user_message_before_emitting_them(store_kind, tmp_path):
    app = make_app(store_kind, tmp_path, CHATKIT_HEARTBEAT_INTERVAL=0)
    chatkit = app.extensions["chatkit"]
    asked = []
    chatkit.respond(lambda thread, message, ctx: asked.append(message) or [progress("ok")])
    body = chatkit_request("threads.create", input=user_input("hi"))
    stream = Stream(logged_in(app, "alice"), body)
    stream.read_until(lambda events: len(events) >= 2)
    created, message = stream.events
    ctx = RequestContext(user_id="alice")
    with app.app_context():  # the stream is paused right after the user message
        store = chatkit.server.store
        assert store.load_thread(created["thread"]["id"], ctx).id == created["thread"]["id"]
        assert [i.id for i in stored(store, ctx, created["thread"]["id"])] == [
            message["item"]["id"]
        ]
    assert asked == []
    rest = stream.finish()[2:]
    assert [e["type"] for e in rest] == ["stream_options", "progress_update"]
    assert [m.id for m in asked] == [message["item"]["id"]]


def test_create_emits_created_user_message_stream_options_then_hook_events(chatkit, alice):
    chatkit.respond(lambda thread, message, ctx: stream_text(thread, ["Hel", "lo"]))
    thread_id, ex = start(alice, "hello")
    assert ex.types == ["thread.created", "thread.item.done", "stream_options"] + [
        "thread.item.added",
        *["thread.item.updated"] * 4,
        "thread.item.done",
    ]
    thread = ex.events[0]["thread"]
    assert thread["items"] == {"data": [], "has_more": False}
    assert "title" not in thread and "allowed_image_domains" not in thread
    assert thread["status"] == {"type": "active"} and thread["metadata"] == {}
    user = ex.events[1]["item"]
    assert (user["type"], user["thread_id"], user["content"]) == (
        "user_message",
        thread_id,
        [{"type": "input_text", "text": "hello"}],
    )
    assert user["inference_options"] == {} and "quoted_text" not in user
    assert ex.events[2] == {"type": "stream_options", "stream_options": {"allow_cancel": True}}


def test_create_round_trips_tags_quoted_text_and_inference_options(chatkit, alice):
    got = []
    chatkit.respond(lambda thread, message, ctx: got.append(message) or ())
    content = [
        {"type": "input_text", "text": "ask "},
        {
            "type": "input_tag",
            "id": "u1",
            "text": "@Ada",
            "data": {"n": [1, {"x": None}]},
            "group": "people",
            "interactive": True,
        },
        {"type": "input_tag", "id": "u2", "text": "#doc", "data": {}, "interactive": False},
    ]
    options = {"tool_choice": {"id": "web_search"}, "model": "gpt-test"}
    ex = alice.chatkit(
        "threads.create",
        input={
            "content": content,
            "attachments": [],
            "quoted_text": "earlier words",
            "inference_options": options,
        },
    )
    item = ex.events[1]["item"]
    assert item["content"] == content
    assert item["quoted_text"] == "earlier words" and item["inference_options"] == options
    listed = alice.chatkit("items.list", thread_id=item["thread_id"]).body["data"]
    assert listed == [item]
    assert got[0].inference_options.tool_choice.id == "web_search"
    assert got[0].content[1].data == {"n": [1, {"x": None}]}


def test_thread_changes_emit_thread_updated_after_that_event_and_at_the_end(
    chatkit, alice, store, ctx_of
):
    @chatkit.respond
    def respond(thread, message, ctx):
        if user_text(message) != "go":
            return
        yield progress("1")
        thread.title = "Named"
        yield progress("2")
        thread.status = LockedStatus(reason="busy")
        yield progress("3")
        thread.allowed_image_domains = ["img.example.com"]
        yield progress("4")
        thread.metadata["secret"] = "s3cr3t"
        yield progress("5")
        yield progress("6")
        thread.title = "Final"

    thread_id, first = start(alice, "hello")
    assert "thread.updated" not in first.types
    ex = alice.chatkit("threads.add_user_message", thread_id=thread_id, input=user_input("go"))
    upd, prog = "thread.updated", "progress_update"
    assert ex.types == [
        "thread.item.done",
        "stream_options",
        prog,
        prog,
        upd,
        prog,
        upd,
        prog,
        upd,
        prog,
        upd,
        prog,
        upd,
    ]
    updates = [e["thread"] for e in ex.of_type(upd)]
    assert [u.get("title") for u in updates] == ["Named"] * 4 + ["Final"]
    assert updates[1]["status"] == {"type": "locked", "reason": "busy"}
    assert "allowed_image_domains" not in updates[1]
    assert updates[2]["allowed_image_domains"] == ["img.example.com"]
    assert all(
        u["metadata"] == {} and u["items"] == {"data": [], "has_more": False} for u in updates
    )
    assert "s3cr3t" not in json.dumps(ex.events)
    got = alice.chatkit("threads.get_by_id", thread_id=thread_id).body
    assert (got["title"], got["status"], got["allowed_image_domains"], got["metadata"]) == (
        "Final",
        {"type": "locked", "reason": "busy"},
        ["img.example.com"],
        {},
    )
    assert store.load_thread(thread_id, ctx_of("alice")).metadata == {"secret": "s3cr3t"}


def test_progress_client_effect_and_notice_pass_through_verbatim_and_are_not_stored(
    chatkit, alice, store, ctx_of
):
    transient = [
        {"type": "progress_update", "text": "Searching", "icon": "search"},
        {"type": "client_effect", "name": "confetti", "data": {"count": 3, "on": [True]}},
        {"type": "notice", "level": "warning", "message": "**Heads up**", "title": "Note"},
        {"type": "notice", "level": "info", "message": "plain"},
    ]
    chatkit.respond(lambda thread, message, ctx: [*transient, progress("model")])
    thread_id, ex = start(alice)
    assert ex.events[3:] == [*transient, {"type": "progress_update", "text": "model"}]
    assert [i.type for i in stored(store, ctx_of("alice"), thread_id)] == ["user_message"]


@pytest.mark.parametrize(
    "error, expected",
    [
        (
            CustomStreamError("Quota reached", allow_retry=True),
            {"type": "error", "code": "custom", "message": "Quota reached", "allow_retry": True},
        ),
        (
            StreamError(ErrorCode.STREAM_ERROR),
            {"type": "error", "code": "stream.error", "allow_retry": False},
        ),
        (
            KeyError("boom internals"),
            {"type": "error", "code": "stream.error", "allow_retry": True},
        ),
    ],
)
def test_hook_exception_becomes_one_error_event_and_keeps_earlier_items(
    chatkit, alice, store, ctx_of, error, expected
):
    @chatkit.respond
    def respond(thread, message, ctx):
        yield from stream_text(thread, "partial", item_id="msg_partial")
        thread.title = "Failed"
        raise error

    thread_id, ex = start(alice)
    assert ex.of_type("error") == [expected]
    assert ex.types[-2:] == ["error", "thread.updated"]
    assert ex.events[-1]["thread"]["title"] == "Failed"
    assert "Traceback" not in json.dumps(ex.events) and "boom" not in json.dumps(ex.events)
    items = stored(store, ctx_of("alice"), thread_id)
    assert [i.id for i in items][1:] == ["msg_partial"]
    assert items[1].content[0].text == "partial"
    assert alice.chatkit("threads.get_by_id", thread_id=thread_id).body["title"] == "Failed"


def test_item_events_drive_the_store_and_hidden_items_stay_on_the_server(
    chatkit, alice, store, ctx_of
):
    @chatkit.respond
    def respond(thread, message, ctx):
        tid = thread.id
        yield {"type": "thread.item.added", "item": said(tid, "", "pending")}
        yield done(said(tid, "v1", "kept"))
        yield {"type": "thread.item.replaced", "item": said(tid, "v2", "kept")}
        yield done(said(tid, "bye", "gone"))
        yield {"type": "thread.item.removed", "item_id": "gone"}
        yield done(
            {"type": "hidden_context_item", "id": "hid", "thread_id": tid, "content": {"k": 1}}
        )
        yield done(
            {
                "type": "sdk_hidden_context",
                "id": "shcx",
                "thread_id": tid,
                "content": "for the model",
            }
        )
        yield done({"type": "end_of_turn", "id": "eot", "thread_id": tid})

    thread_id, ex = start(alice)
    assert ex.types[3:] == [
        "thread.item.added",
        "thread.item.done",
        "thread.item.replaced",
        "thread.item.done",
        "thread.item.removed",
        "thread.item.done",
    ]
    items = {i.id: i for i in stored(store, ctx_of("alice"), thread_id)}
    assert set(items) - {ex.events[1]["item"]["id"]} == {"kept", "hid", "shcx", "eot"}
    assert items["kept"].content[0].text == "v2"
    assert items["hid"].content == {"k": 1} and items["shcx"].content == "for the model"
    visible = ["eot", "kept", ex.events[1]["item"]["id"]]
    listed = alice.chatkit("items.list", thread_id=thread_id).body
    assert [i["id"] for i in listed["data"]] == visible and not listed["has_more"]
    got = alice.chatkit("threads.get_by_id", thread_id=thread_id).body["items"]
    assert [i["id"] for i in got["data"]] == visible[::-1]


# --- client tool calls and structured input ---------------------------------------------


def test_client_tool_call_round_trip(chatkit, alice, store, ctx_of):
    seen = []

    @chatkit.respond
    def respond(thread, message, ctx):
        seen.append(message and message.id)
        if message is not None:
            yield done(
                {
                    "type": "client_tool_call",
                    "id": "tc_1",
                    "thread_id": thread.id,
                    "call_id": "call_1",
                    "name": "locate",
                    "arguments": {"precise": True},
                }
            )
        else:
            yield from stream_text(thread, "You are home")

    thread_id, first = start(alice, "where am I?")
    assert first.types == [
        "thread.created",
        "thread.item.done",
        "stream_options",
        "thread.item.done",
    ]
    assert first.events[-1]["item"]["status"] == "pending"
    assert "output" not in first.events[-1]["item"]
    ex = alice.chatkit(
        "threads.add_client_tool_output", thread_id=thread_id, result={"city": "Paris", "ok": None}
    )
    assert ex.types[0] == "stream_options" and "thread.created" not in ex.types
    assert "tc_1" not in json.dumps(ex.events)
    assert seen == [first.events[1]["item"]["id"], None]
    tool = store.load_item(thread_id, "tc_1", ctx_of("alice"))
    assert (tool.status, tool.output) == ("completed", {"city": "Paris", "ok": None})
    listed = alice.chatkit("items.list", thread_id=thread_id, order="asc").body["data"]
    assert listed[1]["status"] == "completed" and listed[1]["output"]["city"] == "Paris"
    again = alice.chatkit("threads.add_client_tool_output", thread_id=thread_id, result={})
    assert (again.status, again.error["code"]) == (409, "conflict")
    assert seen == [first.events[1]["item"]["id"], None]


QUESTIONS = [
    {
        "type": "multiple_choice",
        "id": "color",
        "question": "Color?",
        "options": [{"value": "red"}, {"value": "blue"}],
    },
    {
        "type": "multiple_choice",
        "id": "tops",
        "question": "Toppings?",
        "options": [{"value": "a"}, {"value": "b"}],
        "multiple": True,
    },
    {"type": "freeform", "id": "name", "question": "Name?"},
    {"type": "freeform", "id": "missing", "question": "Age?"},
    {"type": "freeform", "id": "declined", "question": "Job?"},
    {"type": "freeform", "id": "blank", "question": "Pet?"},
]


def ask_questions(chatkit: ChatKit, seen: list[t.Any]) -> None:
    @chatkit.respond
    def respond(thread, message, ctx):
        seen.append(message)
        if message is not None:
            yield done(
                {
                    "type": "structured_input",
                    "id": "si_1",
                    "thread_id": thread.id,
                    "status": "pending",
                    "inputs": QUESTIONS,
                }
            )
        else:
            yield progress("thanks")


def test_structured_input_normalises_answers_then_continues(chatkit, alice, store, ctx_of):
    seen: list[t.Any] = []
    ask_questions(chatkit, seen)
    thread_id, first = start(alice)
    assert first.events[-1]["item"]["status"] == "pending"
    answers = {
        "color": {"values": ["red", "blue"]},
        "tops": {"values": ["a", "b"]},
        "name": {"values": ["Ada"]},
        "declined": {"values": ["x"], "skipped": True},
        "blank": {"values": []},
        "ghost": {"values": ["ignored"]},
    }
    ex = alice.chatkit(
        "threads.add_structured_input",
        thread_id=thread_id,
        item_id="si_1",
        input={"status": "answered", "answers": answers},
    )
    assert ex.types == ["stream_options", "thread.item.replaced", "progress_update"]
    item = ex.events[1]["item"]
    skipped = {"values": [], "skipped": True}
    assert item["status"] == "answered"
    assert {q["id"]: q["answer"] for q in item["inputs"]} == {
        "color": {"values": ["red"], "skipped": False},
        "tops": {"values": ["a", "b"], "skipped": False},
        "name": {"values": ["Ada"], "skipped": False},
        "missing": skipped,
        "declined": skipped,
        "blank": skipped,
    }
    assert seen[-1] is None
    saved = store.load_item(thread_id, "si_1", ctx_of("alice"))
    assert saved.status == "answered" and saved.inputs[0].answer.values == ["red"]
    again = alice.chatkit(
        "threads.add_structured_input", thread_id=thread_id, item_id="si_1", input={"answers": {}}
    )
    assert (again.status, again.error["code"]) == (409, "conflict")


def test_skipped_structured_input_skips_every_question(chatkit, alice, store, ctx_of):
    ask_questions(chatkit, [])
    thread_id, first = start(alice)
    ex = alice.chatkit(
        "threads.add_structured_input",
        thread_id=thread_id,
        item_id="si_1",
        input={"status": "skipped", "answers": {"name": {"values": ["Ada"]}}},
    )
    item = ex.events[1]["item"]
    assert item["status"] == "skipped"
    assert all(q["answer"] == {"values": [], "skipped": True} for q in item["inputs"])
    user_id = first.events[1]["item"]["id"]
    bad = alice.chatkit(
        "threads.add_structured_input", thread_id=thread_id, item_id=user_id, input={"answers": {}}
    )
    assert (bad.status, bad.error["field"]) == (400, "params.item_id")


# --- retry ------------------------------------------------------------------------------


def test_retry_after_item_deletes_every_later_item_and_reruns_that_message(
    chatkit, alice, store, ctx_of
):
    got = []

    @chatkit.respond
    def respond(thread, message, ctx):
        got.append(message.id)
        yield done({"type": "hidden_context_item", "id": f"h{len(got)}", "thread_id": thread.id})
        yield from stream_text(thread, f"re: {user_text(message)}", item_id=f"a{len(got)}")

    thread_id, first = start(alice, "one")
    m1 = first.events[1]["item"]["id"]
    alice.chatkit("threads.add_user_message", thread_id=thread_id, input=user_input("two"))
    ctx = ctx_of("alice")
    assert len(stored(store, ctx, thread_id)) == 6
    bad = alice.chatkit("threads.retry_after_item", thread_id=thread_id, item_id="a1")
    assert (bad.status, bad.error["field"]) == (400, "params.item_id")
    unknown = alice.chatkit("threads.retry_after_item", thread_id=thread_id, item_id="nope")
    assert unknown.status == 404
    assert len(stored(store, ctx, thread_id)) == 6
    ex = alice.chatkit("threads.retry_after_item", thread_id=thread_id, item_id=m1)
    assert ex.types[0] == "stream_options" and "thread.item.removed" not in ex.types
    assert ex.events[-1]["item"]["content"][0]["text"] == "re: one"
    assert got[-1] == m1 and len(got) == 3
    assert [i.id for i in stored(store, ctx, thread_id)] == [m1, "h3", "a3"]


# --- actions --------------------------------------------------------------------------


def test_custom_action_gets_the_widget_sender_or_none(chatkit, alice):
    seen = []
    chatkit.respond(
        lambda thread, message, ctx: [
            ThreadItemDoneEvent(item=widget_item(thread, CARD, item_id="w1"))
        ]
    )

    @chatkit.action
    def action(thread, action, sender, ctx):
        seen.append((action.type, action.payload, sender and (sender.id, sender.type)))
        yield progress("working")

    thread_id, first = start(alice)
    assert first.events[-1]["item"]["widget"] == CARD
    act = {"type": "pick", "payload": {"n": 1}}
    ex = alice.chatkit("threads.custom_action", thread_id=thread_id, item_id="w1", action=act)
    assert ex.types == ["stream_options", "progress_update"]
    ex = alice.chatkit("threads.custom_action", thread_id=thread_id, item_id=None, action=act)
    assert ex.types == ["stream_options", "progress_update"]
    assert seen == [("pick", {"n": 1}, ("w1", "widget")), ("pick", {"n": 1}, None)]
    user_id = first.events[1]["item"]["id"]
    bad = alice.chatkit("threads.custom_action", thread_id=thread_id, item_id=user_id, action=act)
    assert (bad.status, bad.error["field"]) == (400, "params.item_id")
    assert len(seen) == 2


def test_sync_custom_action_returns_the_item_without_persisting_it(chatkit, alice, store, ctx_of):
    after = {"type": "Card", "children": [{"type": "Text", "id": "t", "value": "after"}]}
    chatkit.respond(
        lambda thread, message, ctx: [
            ThreadItemDoneEvent(item=widget_item(thread, CARD, item_id="w1"))
        ]
    )

    @chatkit.sync_action
    def sync(thread, action, sender, ctx):
        return None if action.type == "noop" else sender.model_copy(update={"widget": after})

    thread_id, _ = start(alice)
    ex = alice.chatkit(
        "threads.sync_custom_action", thread_id=thread_id, item_id="w1", action={"type": "bump"}
    )
    assert ex.headers["Content-Type"] == "application/json"
    assert ex.body["updated_item"]["id"] == "w1" and ex.body["updated_item"]["widget"] == after
    assert store.load_item(thread_id, "w1", ctx_of("alice")).widget == CARD
    noop = alice.chatkit(
        "threads.sync_custom_action", thread_id=thread_id, item_id="w1", action={"type": "noop"}
    )
    assert noop.body == {}


# --- reading threads and items -------------------------------------------------------


def test_get_by_id_returns_the_first_20_items_oldest_first(chatkit, alice):
    ids = [f"a{i:02}" for i in range(24)]
    chatkit.respond(lambda thread, message, ctx: [done(said(thread.id, "x", i)) for i in ids])
    thread_id, first = start(alice)
    got = alice.chatkit("threads.get_by_id", thread_id=thread_id).body
    expected = [first.events[1]["item"]["id"], *ids][:20]
    assert [i["id"] for i in got["items"]["data"]] == expected
    assert got["items"]["has_more"] is True and got["items"]["after"] == expected[-1]


def seeded(kind: str, chatkit: ChatKit, client: t.Any, n: int) -> tuple[t.Any, list[str]]:
    """*n* threads, or one thread with *n* items: a list function and the ids, oldest first."""
    if kind == "threads":
        chatkit.respond(lambda thread, message, ctx: ())
        ids = [start(client)[0] for _ in range(n)]
        return (lambda **p: client.chatkit("threads.list", **p)), ids
    extra = [f"i{i:02}" for i in range(n - 1)]
    chatkit.respond(lambda thread, message, ctx: [done(said(thread.id, "x", i)) for i in extra])
    thread_id, ex = start(client)
    ids = [ex.events[1]["item"]["id"], *extra]
    return (lambda **p: client.chatkit("items.list", thread_id=thread_id, **p)), ids


def page_ids(ex: t.Any) -> list[str]:
    assert ex.status == 200, ex.body
    return [r["id"] for r in ex.body["data"]]


@pytest.mark.parametrize("kind", ["threads", "items"])
def test_list_pages_25_records_as_20_newest_then_5(chatkit, alice, kind):
    listing, ids = seeded(kind, chatkit, alice, 25)
    first = listing(limit=20)
    assert page_ids(first) == ids[::-1][:20]
    assert first.body["has_more"] is True and first.body["after"] == ids[5]
    if kind == "threads":
        assert all(th["items"] == {"data": [], "has_more": False} for th in first.body["data"])
    rest = listing(limit=20, after=first.body["after"])
    assert page_ids(rest) == ids[::-1][20:]
    assert rest.body["has_more"] is False and "after" not in rest.body


@pytest.mark.parametrize("kind", ["threads", "items"])
def test_list_pagination_edges(chatkit, alice, bob, kind):
    listing, ids = seeded(kind, chatkit, alice, 21)
    if kind == "threads":  # someone else's threads do not count
        assert bob.chatkit("threads.list").body == {"data": [], "has_more": False}
    newest = ids[::-1]
    for default in ({}, {"limit": 0}, {"limit": None}):
        page = listing(**default)
        assert page_ids(page) == newest[:20], default
        assert page.body["has_more"] is True and page.body["after"] == newest[19]
    full = listing(limit=21)
    assert page_ids(full) == newest and full.body["has_more"] is False
    assert "after" not in full.body
    asc = listing(limit=5, order="asc")
    assert page_ids(asc) == ids[:5] and asc.body["after"] == ids[4]
    assert page_ids(listing(order="asc", after=ids[4], limit=2)) == ids[5:7]
    for order, last in (("desc", ids[0]), ("asc", ids[-1])):
        empty = listing(order=order, after=last)
        assert empty.body == {"data": [], "has_more": False}
    unknown = listing(after="no_such_id")
    assert (unknown.status, unknown.error["field"]) == (404, "params.after")


def test_update_sets_the_title_and_delete_removes_thread_and_items(
    app, chatkit, alice, store, ctx_of
):
    chatkit.respond(lambda thread, message, ctx: stream_text(thread, "hi"))
    thread_id, _ = start(alice)
    keep_id, _ = start(alice)
    before = counts(app)
    up = alice.chatkit("threads.update", thread_id=thread_id, title="Renamed")
    assert up.body["title"] == "Renamed" and up.body["id"] == thread_id
    assert up.body["items"] == {"data": [], "has_more": False}
    assert store.load_thread(thread_id, ctx_of("alice")).title == "Renamed"
    assert alice.chatkit("threads.get_by_id", thread_id=thread_id).body["title"] == "Renamed"
    assert alice.chatkit("threads.delete", thread_id=thread_id).body == {}
    assert alice.chatkit("threads.get_by_id", thread_id=thread_id).status == 404
    assert alice.chatkit("items.list", thread_id=thread_id).status == 404
    assert counts(app) == (before[0] - 1, before[1] - 2)
    assert len(stored(store, ctx_of("alice"), keep_id)) == 2


# --- feedback, transcription, attachments ----------------------------------------------


def test_feedback_reaches_the_hook_and_is_stored(chatkit, alice, store, ctx_of, store_kind):
    calls = []
    chatkit.respond(lambda thread, message, ctx: stream_text(thread, "hi", item_id="a1"))
    chatkit.feedback(
        lambda thread_id, ids, kind, ctx: calls.append((thread_id, ids, kind, ctx.user_id))
    )
    thread_id, _ = start(alice)
    ex = alice.chatkit("items.feedback", thread_id=thread_id, item_ids=["a1"], kind="negative")
    assert ex.body == {}
    assert calls == [(thread_id, ["a1"], "negative", "alice")]
    if store_kind == "memory":
        votes = [(k[1], k[2], v[0]) for k, v in store.feedback.items() if k[0] == "alice"]
    else:
        votes = [
            (v["thread_id"], v["item_id"], v["kind"]) for v in store.load_feedback(ctx_of("alice"))
        ]
    assert votes == [(thread_id, "a1", "negative")]
    unknown = alice.chatkit("items.feedback", thread_id=thread_id, item_ids=["zz"], kind="positive")
    assert unknown.status == 404 and len(calls) == 1


def test_transcribe_gets_decoded_bytes_and_the_raw_mime_type(chatkit, alice):
    seen = []
    unset = alice.chatkit("input.transcribe", audio_base64="AAAA", mime_type="audio/webm")
    assert (unset.status, unset.error["code"]) == (501, "not_implemented")  # JSON, not a 500
    assert "@chatkit.transcribe" in unset.error["message"]

    @chatkit.transcribe
    def transcribe(audio, ctx):
        seen.append((audio.data, audio.mime_type, audio.media_type))
        return "hello there"

    audio = b"\x1aE\xdf\xa3\x00\xffopus"
    ex = alice.chatkit(
        "input.transcribe",
        audio_base64=base64.b64encode(audio).decode(),
        mime_type="audio/webm;codecs=opus",
    )
    assert ex.body == {"text": "hello there"}
    assert seen == [(audio, "audio/webm;codecs=opus", "audio/webm")]
    bad = alice.chatkit("input.transcribe", audio_base64="not*base64!", mime_type="audio/ogg")
    assert (bad.status, bad.error["field"]) == (400, "params.audio_base64")
    assert len(seen) == 1


def test_attachments_create_and_delete(alice, store, ctx_of):
    image = alice.chatkit("attachments.create", name="cat.png", size=4, mime_type="image/png")
    body = image.body
    assert body["type"] == "image" and body["name"] == "cat.png"
    assert body["preview_url"].startswith("http")
    assert set(body["upload_descriptor"]) == {"url", "method", "headers"}
    assert body["upload_descriptor"]["method"] in ("POST", "PUT")
    assert "metadata" not in body and "thread_id" not in body
    doc = alice.chatkit("attachments.create", name="notes.txt", size=5, mime_type="text/plain")
    assert doc.body["type"] == "file" and "preview_url" not in doc.body
    assert "upload_descriptor" in doc.body and "metadata" not in doc.body
    assert store.load_attachment(body["id"], ctx_of("alice")).name == "cat.png"
    assert alice.chatkit("attachments.delete", attachment_id=body["id"]).body == {}
    with pytest.raises(NotFoundError):
        store.load_attachment(body["id"], ctx_of("alice"))
    assert alice.chatkit("attachments.delete", attachment_id=body["id"]).status == 404


def test_attachment_used_in_a_message_gets_the_thread_id(chatkit, alice, store, ctx_of):
    chatkit.respond(lambda thread, message, ctx: ())
    created = alice.chatkit(
        "attachments.create", name="notes.txt", size=5, mime_type="text/plain"
    ).body
    target = created["upload_descriptor"]
    uploaded = alice.open(
        target["url"],
        method=target["method"],
        headers=target["headers"],
        data={"file": (io.BytesIO(b"hello"), "notes.txt")},
    )
    assert uploaded.status_code == 200, uploaded.data
    thread_id, ex = start(alice, "see file", attachments=[created["id"]])
    (att,) = ex.events[1]["item"]["attachments"]
    assert (att["id"], att["thread_id"], att["name"]) == (created["id"], thread_id, "notes.txt")
    assert "metadata" not in att
    assert store.load_attachment(created["id"], ctx_of("alice")).thread_id == thread_id


# --- ids, status, compatibility, timestamps ------------------------------------------


class CountingIds:
    """Store mixin with predictable ids."""

    def generate_thread_id(self, context: t.Any) -> str:
        return f"thread-{next(self.serial)}"  # type: ignore[attr-defined]

    def generate_item_id(self, item_type: str, thread: t.Any, context: t.Any) -> str:
        return f"{thread.id}/{item_type}-{next(self.serial)}"  # type: ignore[attr-defined]


def test_custom_id_generators_of_a_store_subclass_are_used(store_kind, tmp_path):
    base = InMemoryStore if store_kind == "memory" else SQLAlchemyStore
    app = make_app(
        store_kind,
        tmp_path,
        store_class=type("IdStore", (CountingIds, base), {}),
        CHATKIT_HEARTBEAT_INTERVAL=0,
    )
    chatkit = app.extensions["chatkit"]
    app.extensions["test_store"].serial = iter(range(1, 100))
    chatkit.respond(lambda thread, message, ctx: stream_text(thread, "hi"))
    client = app.test_client()
    ex = client.chatkit(
        "threads.create", input=user_input("hi"), headers={"Authorization": "Bearer token-alice"}
    )
    assert ex.events[0]["thread"]["id"] == "thread-1"
    assert ex.events[1]["item"]["id"] == "thread-1/message-2"


@pytest.mark.parametrize(
    "status, wire_status",
    [
        (LockedStatus(reason="Read only"), {"type": "locked", "reason": "Read only"}),
        (ClosedStatus(), {"type": "closed"}),
    ],
)
def test_locked_or_closed_status_round_trips_and_refuses_new_turns(
    chatkit, alice, status, wire_status
):
    """The app's status goes out as it is, and the server (not only the client)
    refuses a new message or a retry on such a thread, with a clear error."""

    @chatkit.respond
    def respond(thread, message, ctx):
        if user_text(message) == "close":
            thread.status = status
        yield from stream_text(thread, "ok")

    thread_id, ex = start(alice, "close")
    assert ex.of_type("thread.updated")[-1]["thread"]["status"] == wire_status
    assert alice.chatkit("threads.get_by_id", thread_id=thread_id).body["status"] == wire_status
    assert alice.chatkit("threads.list").body["data"][0]["status"] == wire_status
    more = alice.chatkit(
        "threads.add_user_message", thread_id=thread_id, input=user_input("still there?")
    )
    assert more.status == 409 and more.error["code"] == "conflict"
    assert wire_status["type"] in more.error["message"]
    first = alice.chatkit("items.list", thread_id=thread_id, order="asc").body["data"][0]
    retry = alice.chatkit("threads.retry_after_item", thread_id=thread_id, item_id=first["id"])
    assert retry.status == 409
    listed = alice.chatkit("items.list", thread_id=thread_id, order="asc").body["data"]
    assert [i["type"] for i in listed] == ["user_message", "assistant_message"]  # nothing added


def test_unknown_request_fields_are_ignored(chatkit, alice):
    chatkit.respond(lambda thread, message, ctx: ())
    message = {
        "content": [{"type": "input_text", "text": "hi", "lang": "en"}],
        "attachments": [],
        "inference_options": {"model": "m", "temperature": 2},
        "priority": "high",
    }
    body = {
        "type": "threads.create",
        "client_version": "9.9",
        "metadata": {"anything": 1},
        "params": {"future": True, "input": message},
    }
    ex = alice.send(body)
    item = ex.events[1]["item"]
    assert item["content"] == [{"type": "input_text", "text": "hi"}]
    assert item["inference_options"] == {"model": "m"}
    listed = alice.send(
        {"type": "threads.list", "params": {"limit": 5, "cursor_v2": "x"}, "extra": 1}
    )
    assert [th["id"] for th in listed.body["data"]] == [ex.events[0]["thread"]["id"]]


def test_timestamps_go_out_in_utc_and_naive_input_is_read_as_utc(chatkit, alice, store, ctx_of):
    @chatkit.respond
    def respond(thread, message, ctx):
        for item_id, when in (
            ("naive", "2030-01-02T03:04:05"),
            ("offset", "2030-01-02T05:04:05+02:00"),
        ):
            yield done({**said(thread.id, "x", item_id), "created_at": when})

    thread_id, ex = start(alice)
    assert ex.events[0]["thread"]["created_at"].endswith("+00:00")
    assert [e["item"]["created_at"] for e in ex.events[-2:]] == ["2030-01-02T03:04:05+00:00"] * 2
    naive = store.load_item(thread_id, "naive", ctx_of("alice"))
    assert naive.created_at.utcoffset() is not None and naive.created_at.hour == 3
    listed = alice.chatkit("items.list", thread_id=thread_id).body["data"]
    assert listed[0]["created_at"] == "2030-01-02T03:04:05+00:00"
