"""Bad requests get a clear JSON error before anything is streamed or written.

Checks that never reach the store run on one store (``any_store``); lookups of
threads, items and attachments, and values a store may not hold, run on all three.
"""

from __future__ import annotations

import io
import json
import typing as t

import pytest
import sqlalchemy as sa

from flask_chatkit import InMemoryStore
from flask_chatkit import stream_text
from flask_chatkit import widget_item
from flask_chatkit.testing import chatkit_request
from flask_chatkit.testing import user_input
from flask_chatkit.types import ThreadItemDoneEvent

from . import wire
from .conftest import any_store
from .conftest import logged_in
from .conftest import make_app


def counts(app: t.Any) -> tuple[int, int, int]:
    """(threads, items, attachments) across all users.

    Opens its own short app context: a context left pushed during requests
    would share ``g`` (and Flask-Login's cached user) between alice and bob.
    """
    with app.app_context():
        store = app.extensions["chatkit"].server.store
        if isinstance(store, InMemoryStore):
            items = sum(len(v) for v in store._items.values())
            return len(store._threads), items, len(store._attachments)
        with store.engine.connect() as conn:
            return tuple(  # type: ignore[return-value]
                conn.execute(sa.select(sa.func.count()).select_from(tb)).scalar_one()
                for tb in (store.threads, store.items, store.attachments)
            )


def json_error(response: t.Any, status: int) -> dict[str, t.Any]:
    """Check a raw response is a clean JSON error with *status*; return its ``error``."""
    text = response.get_data(as_text=True)
    assert response.status_code == status, text
    assert response.mimetype == "application/json"
    assert "Traceback" not in text and "<html" not in text.lower() and "<!doctype" not in text
    body = json.loads(text)
    wire.check_error(status, body)
    return body["error"]  # type: ignore[no-any-return]


def post(client: t.Any, data: t.Any, **kwargs: t.Any) -> t.Any:
    return client.post("/chatkit", data=data, content_type="application/json", **kwargs)


@any_store
@pytest.mark.parametrize("raw", [b"{", b"{'type': 'threads.list'}", b"", b"\xff\xfe{}", b"{}}"])
def test_invalid_json_is_a_400_invalid_json(alice, raw):
    assert json_error(post(alice, raw), 400)["code"] == "invalid_json"


@any_store
@pytest.mark.parametrize("raw", ["[]", "1", "null", '"threads.list"', '[{"type": 1}]'])
def test_a_body_that_is_not_an_object_is_a_400(alice, raw):
    error = json_error(post(alice, raw), 400)
    assert error["code"] == "invalid_request" and "object" in error["message"]


@any_store
@pytest.mark.parametrize("params", [None, "missing", [], "x"])
def test_missing_or_non_object_params_is_a_400_naming_params(alice, params):
    body: dict[str, t.Any] = {"type": "threads.list"}
    if params != "missing":
        body["params"] = params
    error = alice.send(body, valid=False).error
    assert error["field"] == "params" and error["code"] == "invalid_request"


@any_store
@pytest.mark.parametrize(
    "body, code",
    [
        ({"type": "threads.explode", "params": {}}, "unknown_request_type"),
        ({"params": {}}, "invalid_request"),
        ({"type": 7, "params": {}}, None),
    ],
)
def test_unknown_or_missing_type_is_a_400_naming_type(alice, body, code):
    ex = alice.send(body, valid=False)
    assert ex.status == 400 and ex.error["field"] == "type"
    if code:
        assert ex.error["code"] == code
    if body.get("type") == "threads.explode":
        assert "threads.explode" in ex.error["message"]


TEXT = [{"type": "input_text", "text": "hi"}]


@any_store
@pytest.mark.parametrize(
    "req_type, params, field",
    [
        (
            "threads.create",
            {"input": {"attachments": [], "inference_options": {}}},
            "params.input.content",
        ),
        (
            "threads.create",
            {"input": {"content": TEXT, "inference_options": {}}},
            "params.input.attachments",
        ),
        (
            "threads.create",
            {"input": {"content": TEXT, "attachments": []}},
            "params.input.inference_options",
        ),
        (
            "threads.create",
            {
                "input": {
                    "content": [{"type": "input_text"}],
                    "attachments": [],
                    "inference_options": {},
                }
            },
            "params.input.content.0.text",
        ),
        (
            "threads.create",
            {
                "input": {
                    "content": [{"type": "input_tag", "id": "t", "text": "x"}],
                    "attachments": [],
                    "inference_options": {},
                }
            },
            "params.input.content.0.data",
        ),
        (
            "threads.create",
            {
                "input": {
                    "content": [{"type": "input_video"}],
                    "attachments": [],
                    "inference_options": {},
                }
            },
            "params.input.content.0",
        ),
        (
            "threads.create",
            {"input": user_input("x", attachments=[""])},
            "params.input.attachments.0",
        ),
        (
            "threads.create",
            {"input": user_input("x", inference_options={"tool_choice": {}})},
            "params.input.inference_options.tool_choice.id",
        ),
        ("threads.add_user_message", {"input": user_input("x")}, "params.thread_id"),
        ("threads.list", {"limit": -1}, "params.limit"),
        ("threads.list", {"limit": "ten"}, "params.limit"),
        ("threads.list", {"order": "sideways"}, "params.order"),
        ("items.list", {}, "params.thread_id"),
        ("items.feedback", {"thread_id": "t", "item_ids": ["i"], "kind": "meh"}, "params.kind"),
        (
            "items.feedback",
            {"thread_id": "t", "item_ids": [], "kind": "positive"},
            "params.item_ids",
        ),
        ("threads.update", {"thread_id": "t"}, "params.title"),
        ("threads.custom_action", {"thread_id": "t", "action": {}}, "params.action.type"),
        (
            "threads.add_structured_input",
            {"thread_id": "t", "item_id": "i", "input": {"status": "maybe"}},
            "params.input.status",
        ),
        (
            "attachments.create",
            {"name": "a.png", "size": -1, "mime_type": "image/png"},
            "params.size",
        ),
        ("input.transcribe", {"audio_base64": "AAAA"}, "params.mime_type"),
    ],
)
def test_missing_or_invalid_fields_are_a_400_naming_the_field(
    chatkit, alice, app, req_type, params, field
):
    calls = []
    chatkit.respond(lambda thread, message, ctx: calls.append(1) or ())
    before = counts(app)
    ex = alice.send({"type": req_type, "params": params}, valid=False)
    assert (ex.status, ex.error["code"], ex.error["field"]) == (400, "invalid_request", field)
    assert field in ex.error["message"]
    assert counts(app) == before and calls == []


def foreign_thread(chatkit: t.Any, bob: t.Any) -> str:
    chatkit.respond(
        lambda thread, message, ctx: [
            ThreadItemDoneEvent(
                item=widget_item(thread, {"type": "Card", "children": []}, item_id="bob_widget")
            )
        ]
    )
    ex = bob.chatkit("threads.create", input=user_input("mine"))
    return ex.events[0]["thread"]["id"]  # type: ignore[no-any-return]


STREAMING = [
    ("threads.add_user_message", {"input": user_input("x")}),
    ("threads.add_client_tool_output", {"result": {"ok": True}}),
    ("threads.add_structured_input", {"item_id": "bob_widget", "input": {"answers": {}}}),
    ("threads.retry_after_item", {"item_id": "bob_widget"}),
    ("threads.custom_action", {"item_id": "bob_widget", "action": {"type": "a"}}),
]
JSON_TYPES = [
    ("threads.sync_custom_action", {"item_id": None, "action": {"type": "a"}}),
    ("threads.get_by_id", {}),
    ("threads.update", {"title": "stolen"}),
    ("threads.delete", {}),
    ("items.list", {}),
    ("items.feedback", {"item_ids": ["bob_widget"], "kind": "negative"}),
]


@pytest.mark.parametrize("whose", ["unknown", "foreign"])
@pytest.mark.parametrize("req_type, params", STREAMING + JSON_TYPES)
def test_unknown_or_foreign_thread_is_a_404_before_any_stream(
    chatkit, alice, bob, app, whose, req_type, params
):
    thread_id = foreign_thread(chatkit, bob) if whose == "foreign" else "thr_nope"
    calls = []
    for hook in ("respond", "action", "sync_action"):
        getattr(chatkit, hook)(lambda *args: calls.append(args) or ())
    chatkit.feedback(lambda *args: calls.append(args))
    before = counts(app)
    ex = alice.chatkit(req_type, thread_id=thread_id, **params)
    assert ex.headers["Content-Type"] == "application/json"  # no stream was started
    assert (ex.status, ex.error["code"], ex.error["field"]) == (
        404,
        "not_found",
        "params.thread_id",
    )
    assert counts(app) == before and calls == []
    if whose == "foreign":
        kept = bob.chatkit("threads.get_by_id", thread_id=thread_id).body
        assert "title" not in kept and len(kept["items"]["data"]) == 2


@pytest.mark.parametrize(
    "req_type, params",
    [
        ("threads.add_structured_input", {"item_id": "nope", "input": {"answers": {}}}),
        ("threads.retry_after_item", {"item_id": "nope"}),
        ("threads.custom_action", {"item_id": "nope", "action": {"type": "a"}}),
        ("threads.sync_custom_action", {"item_id": "nope", "action": {"type": "a"}}),
    ],
)
def test_unknown_item_is_a_404_naming_the_item(chatkit, alice, app, req_type, params):
    chatkit.respond(lambda thread, message, ctx: stream_text(thread, "hi"))
    thread_id = alice.chatkit("threads.create", input=user_input("x")).events[0]["thread"]["id"]
    calls = []
    for hook in ("respond", "action", "sync_action"):
        getattr(chatkit, hook)(lambda *args: calls.append(args) or ())
    before = counts(app)
    ex = alice.chatkit(req_type, thread_id=thread_id, **params)
    assert (ex.status, ex.error["field"]) == (404, "params.item_id")
    assert counts(app) == before and calls == []


def test_unknown_attachment_is_a_404_and_no_thread_is_created(chatkit, alice, app):
    chatkit.respond(lambda thread, message, ctx: ())
    before = counts(app)
    ex = alice.chatkit("threads.create", input=user_input("x", attachments=["atc_nope"]))
    assert (ex.status, ex.error["field"]) == (404, "params.input.attachments")
    assert counts(app) == before


@any_store
def test_a_body_over_the_size_limit_is_a_413(store_kind, tmp_path):
    app = make_app(store_kind, tmp_path, CHATKIT_MAX_REQUEST_SIZE=1000)
    app.extensions["chatkit"].respond(lambda thread, message, ctx: ())
    client = logged_in(app, "alice")
    big = chatkit_request("threads.create", input=user_input("x" * 2000))
    assert client.chatkit("threads.create", input=user_input("x" * 2000)).status == 413
    chunked = {"Transfer-Encoding": "chunked"}
    terminated = {"wsgi.input_terminated": True}  # what a server handling chunked input sets

    def send_chunked(body: dict[str, t.Any]) -> t.Any:
        return client.post(
            "/chatkit",
            input_stream=io.BytesIO(json.dumps(body).encode()),
            content_type="application/json",
            headers=chunked,
            environ_overrides=terminated,
        )

    error = json_error(send_chunked(big), 413)
    assert error["code"] == "request_too_large" and "1000" in error["message"]
    assert send_chunked(chatkit_request("threads.list")).status_code == 200
    assert counts(app)[0] == 0


@any_store
@pytest.mark.parametrize("method", ["GET", "PUT", "PATCH", "DELETE"])
def test_wrong_method_is_a_405_json_error(alice, method):
    response = alice.open("/chatkit", method=method, json=chatkit_request("threads.list"))
    assert json_error(response, 405)["code"] == "method_not_allowed"


@any_store
@pytest.mark.parametrize("method, path", [("POST", "/chatkit/nope"), ("GET", "/chatkit/a/b")])
def test_unknown_path_under_chatkit_is_a_404_json_error(alice, method, path):
    assert json_error(alice.open(path, method=method), 404)["code"] == "not_found"


@any_store
@pytest.mark.parametrize("req_type", ["threads.create", "threads.add_user_message"])
def test_missing_respond_hook_is_a_501_naming_both_options(alice, app, req_type):
    params = {"thread_id": "thr_x"} if req_type != "threads.create" else {}
    ex = alice.chatkit(req_type, input=user_input("x"), **params)
    assert (ex.status, ex.error["code"]) == (501, "not_implemented")
    assert "@chatkit.respond" in ex.error["message"]
    assert "ChatKitServer.respond" in ex.error["message"]
    assert counts(app) == (0, 0, 0)


@any_store
@pytest.mark.parametrize(
    "req_type, hook",
    [("threads.custom_action", "action"), ("threads.sync_custom_action", "sync_action")],
)
def test_actions_without_their_hook_are_a_501(chatkit, alice, app, req_type, hook):
    chatkit.respond(lambda thread, message, ctx: ())
    thread_id = alice.chatkit("threads.create", input=user_input("x")).events[0]["thread"]["id"]
    before = counts(app)
    ex = alice.chatkit(req_type, thread_id=thread_id, action={"type": "x"})
    assert (ex.status, ex.error["code"]) == (501, "not_implemented")
    assert f"@chatkit.{hook}" in ex.error["message"]
    assert counts(app) == before


@any_store
def test_a_failing_json_hook_is_a_500_json_error_without_details(chatkit, alice):
    @chatkit.transcribe
    def transcribe(audio, ctx):
        raise RuntimeError("secret internals")

    response = post(
        alice,
        json.dumps(
            chatkit_request("input.transcribe", audio_base64="AAAA", mime_type="audio/webm")
        ),
    )
    error = json_error(response, 500)
    assert error["code"] == "internal_error" and "secret" not in response.get_data(as_text=True)


@pytest.mark.parametrize(
    "type_, params, field",
    [
        ("threads.get_by_id", {"thread_id": "thr_\u0000"}, "params.thread_id"),
        ("items.list", {"thread_id": "thr_1", "after": "\u0000"}, "params.after"),
        ("threads.update", {"thread_id": "thr_1", "title": "a\u0000b"}, "params.title"),
        ("attachments.delete", {"attachment_id": "atc_\u0000"}, "params.attachment_id"),
    ],
)
def test_nul_characters_are_a_400_naming_the_field_on_every_store(alice, type_, params, field):
    # PostgreSQL text cannot hold NUL: without this check these were 500s there.
    ex = alice.chatkit(type_, valid=False, **params)
    assert ex.status == 400
    assert ex.error["field"] == field


@any_store
def test_an_agent_id_with_control_characters_is_404_before_any_loader(chatkit, alice):
    seen = []
    chatkit.agent_loader(lambda agent_id, ctx: seen.append(agent_id) or object())
    response = alice.post("/chatkit?agent_id=a%00b", json={"type": "threads.list", "params": {}})
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "agent_not_found"
    assert seen == []


@any_store
def test_a_body_of_too_many_json_objects_is_refused_before_it_is_parsed(alice):
    from flask_chatkit.limits import MAX_JSON_CONTAINERS

    many = json.dumps(
        {
            "type": "threads.add_client_tool_output",
            "params": {"thread_id": "thr_x", "result": [{}] * (MAX_JSON_CONTAINERS + 1)},
        }
    )
    ex = alice.send(many, valid=False)
    assert ex.status == 400
    assert ex.error["code"] == "request_too_complex"
    # braces inside ordinary text count too, but a real message stays far below the limit
    code = "{ [ } ] " * 1000
    ok = alice.chatkit("threads.list", metadata={"note": code})
    assert ok.status == 200


@pytest.mark.parametrize(
    "path", ["/chatkit/", "/chatkit//", "/chatkit//0", "/chatkit///x", "/chatkit/a//b"]
)
def test_doubled_and_trailing_slashes_under_the_prefix_get_a_json_404(
    tmp_path: t.Any, path: str
) -> None:
    # found by tests/test_fuzz.py: Werkzeug redirected "//0" (308) and left "//"
    # to the app's HTML 404
    client = make_app("memory", tmp_path).test_client()
    for method in ("GET", "POST"):
        response = client.open(path, method=method)
        assert response.status_code == 404 and response.headers.get("Location") is None
        wire.check_error(404, response.get_json())
