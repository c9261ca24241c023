"""The built-in responder against a real loopback server playing the OpenAI API.

The real ``openai`` client talks HTTP to tests/llm_server.py; nothing is
monkeypatched. Every request and event goes through the official models
(tests/wire.py) via the test client.
"""

from __future__ import annotations

import io
import json
import logging
import typing as t

import pytest

from flask_chatkit import RequestContext
from flask_chatkit.assistant import Assistant
from flask_chatkit.history import thread_input
from flask_chatkit.i18n import MESSAGES
from flask_chatkit.testing import user_input
from flask_chatkit.tools import ToolContext
from flask_chatkit.tools import client_effect
from flask_chatkit.tools import show_widget
from flask_chatkit.types import HiddenContextItem

from .assistant_helpers import API_KEY
from .assistant_helpers import answers
from .assistant_helpers import assistant_app
from .assistant_helpers import create
from .assistant_helpers import done_items
from .assistant_helpers import records
from .assistant_helpers import send
from .assistant_helpers import stored_items
from .assistant_helpers import thread_of
from .assistant_helpers import tool_outputs
from .assistant_helpers import user_texts
from .conftest import StoreInContext
from .conftest import logged_in
from .conftest import make_app
from .llm_server import call
from .llm_server import content_filter
from .llm_server import error
from .llm_server import hang
from .llm_server import malformed
from .llm_server import refusal
from .llm_server import stall
from .llm_server import text
from .llm_server import tool_calls
from .llm_server import truncated
from .samples import make_png
from .streams import Stream
from .streams import deltas

APIS = ["responses", "chat"]
PATHS = {"responses": "/v1/responses", "chat": "/v1/chat/completions"}


def weather_assistant(**kwargs: t.Any) -> Assistant:
    assistant = Assistant("You are a test assistant.", **kwargs)

    @assistant.tool(
        progress={"en": "Checking the weather in {city}…", "de": "Prüfe das Wetter in {city}…"}
    )
    def weather(city: str) -> str:
        """The current weather in a city."""
        if city == "Atlantis":
            raise ValueError("no such city")
        return f"Sunny in {city}"

    return assistant


# --- 1. streaming ---------------------------------------------------------------


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("kind", ["memory", "sqlalchemy"])
def test_answers_stream_as_deltas_and_are_saved(tmp_path, llm, api, kind):
    app = assistant_app(tmp_path, llm, Assistant("Be brief."), kind=kind, api=api)
    alice = logged_in(app, "alice")
    llm.script(text("Hel", "lo", " there"))
    ex = create(alice, "Say hello")
    assert deltas(ex.events) == ["Hel", "lo", " there"]
    assert answers(ex) == ["Hello there"]
    request = llm.stream_requests[0]
    assert request.path == PATHS[api]
    assert request.body["model"] == "test-model"
    assert request.body["stream"] is True
    assert request.headers["authorization"] == f"Bearer {API_KEY}"
    if api == "responses":
        assert request.body["instructions"] == "Be brief."
    else:
        assert request.body["messages"][0] == {"role": "system", "content": "Be brief."}
    items = alice.chatkit("items.list", thread_id=thread_of(ex), order="asc").body["data"]
    assert [i["type"] for i in items] == ["user_message", "assistant_message"]
    assert items[1]["content"][0]["text"] == "Hello there"


def test_annotations_reach_the_client_and_the_store(tmp_path, llm):
    app = assistant_app(tmp_path, llm, Assistant())
    alice = logged_in(app, "alice")
    cite = {
        "type": "url_citation",
        "url": "https://example.org/a",
        "title": "Source A",
        "start_index": 0,
        "end_index": 5,
    }
    llm.script(text("Hello", " world", annotations=[cite]))
    ex = create(alice, "Cite something")
    added = [
        e["update"]
        for e in ex.of_type("thread.item.updated")
        if e["update"]["type"] == "assistant_message.content_part.annotation_added"
    ]
    assert added[0]["annotation"]["source"]["url"] == "https://example.org/a"
    saved = alice.chatkit("items.list", thread_id=thread_of(ex), order="asc").body["data"][1]
    assert saved["content"][0]["annotations"][0]["source"]["title"] == "Source A"
    assert saved["content"][0]["annotations"][0]["index"] == 5


@pytest.mark.slow
@pytest.mark.parametrize("api", APIS)
def test_a_client_that_leaves_closes_the_upstream_and_keeps_the_partial_answer(tmp_path, llm, api):
    app = assistant_app(tmp_path, llm, Assistant(), api=api, kind="sqlalchemy")
    alice = logged_in(app, "alice")
    words = [f"w{i} " for i in range(200)]
    llm.script(text(*words, delay=0.02))
    stream = Stream(alice, {"type": "threads.create", "params": {"input": user_input("Go")}})
    stream.read_until(lambda events: len(deltas(events)) >= 3)
    stream.close()
    gone = llm.wait_disconnect(timeout=5)
    assert gone is not None and gone.sent_events < len(words)
    thread_id = next(e for e in stream.events if e["type"] == "thread.created")["thread"]["id"]
    store = StoreInContext(app)
    items = stored_items(store, thread_id)
    partial = [i for i in items if i.type == "assistant_message"]
    assert partial and partial[0].content[0].text.startswith("w0 w1 w2 ")
    assert len(partial[0].content[0].text) < len("".join(words))
    assert items[-1].type == "sdk_hidden_context"  # the cancelled marker


# --- 2. conversation memory -------------------------------------------------------


@pytest.mark.parametrize("api", APIS)
def test_facts_from_several_turns_back_reach_the_model_as_items(tmp_path, llm, api):
    app = assistant_app(tmp_path, llm, Assistant(), api=api, kind="sqlalchemy")
    alice = logged_in(app, "alice")
    thread_id = thread_of(create(alice, "My cat is called Miso."))
    send(alice, thread_id, "I live in Lyon.")
    send(alice, thread_id, "I like tea.")
    send(alice, thread_id, "What is my cat called?")
    body = llm.stream_requests[-1].body
    entries = body["input"] if api == "responses" else body["messages"]
    assert all(e.get("role") != "system" for e in entries)  # no instructions given
    roles = [e.get("role") for e in entries]
    assert roles == ["user", "assistant"] * 3 + ["user"]
    assert user_texts(body) == [
        "My cat is called Miso.",
        "I live in Lyon.",
        "I like tea.",
        "What is my cat called?",
    ]
    assert entries[1]["content"] == "echo: My cat is called Miso."


def test_history_is_bounded_by_items_and_tokens(tmp_path, llm):
    app = assistant_app(tmp_path, llm, Assistant(), CHATKIT_HISTORY_MAX_ITEMS=3)
    alice = logged_in(app, "alice")
    thread_id = thread_of(create(alice, "first"))
    send(alice, thread_id, "second")
    send(alice, thread_id, "third")
    assert user_texts(llm.stream_requests[-1].body) == ["second", "third"]
    assert len(llm.stream_requests[-1].body["input"]) == 3

    app = assistant_app(tmp_path / "b", llm, Assistant(), CHATKIT_HISTORY_MAX_TOKENS=60)
    alice = logged_in(app, "alice")
    thread_id = thread_of(create(alice, "old " * 100))
    send(alice, thread_id, "new question")
    assert user_texts(llm.stream_requests[-1].body) == ["new question"]


def test_history_includes_quotes_tags_attachments_hidden_context_and_tool_calls(tmp_path, llm):
    app = assistant_app(tmp_path, llm, weather_assistant(), kind="sqlalchemy")
    alice = logged_in(app, "alice")
    png = make_png()
    uploaded = alice.post(
        "/chatkit/upload",
        data={"file": (io.BytesIO(png), "cat.png", "image/png")},
        content_type="multipart/form-data",
    )
    assert uploaded.status_code == 200, uploaded.get_json()
    llm.script(tool_calls(call("weather", {"city": "Oslo"}, call_id="call_w1")), text("Cold."))
    ex = create(
        alice,
        "Weather in Oslo?",
        attachments=[uploaded.get_json()["id"]],
        quoted_text="an earlier line",
        content=[
            {"type": "input_text", "text": "Weather in Oslo? "},
            {
                "type": "input_tag",
                "id": "city-1",
                "text": "@Oslo",
                "data": {"country": "NO"},
                "interactive": False,
            },
        ],
    )
    thread_id = thread_of(ex)
    store = StoreInContext(app)
    store.add_thread_item(
        thread_id,
        HiddenContextItem(id="hc_1", thread_id=thread_id, content="The user prefers metric units."),
        RequestContext(user_id="alice"),
    )
    send(alice, thread_id, "And tomorrow?")
    entries = llm.stream_requests[-1].body["input"]
    first = entries[0]["content"]
    assert first[0] == {"type": "input_text", "text": "Weather in Oslo? @Oslo"}
    assert "an earlier line" in first[1]["text"]
    assert "@Oslo" in first[2]["text"] and "NO" in first[2]["text"]
    assert first[3]["type"] == "input_image" and first[3]["image_url"].startswith(
        "data:image/png;base64,"
    )
    calls = [e for e in entries if e.get("type") == "function_call"]
    assert calls == [
        {
            "type": "function_call",
            "call_id": "call_w1",
            "name": "weather",
            "arguments": json.dumps({"city": "Oslo"}),
        }
    ]
    assert tool_outputs(llm.stream_requests[-1].body) == {"call_w1": "Sunny in Oslo"}
    assert {"role": "developer", "content": "The user prefers metric units."} in entries


def test_history_conversion_for_chat_pairs_tool_calls_with_results():
    record = HiddenContextItem(
        id="h",
        thread_id="t",
        content={
            "type": "flask_chatkit.tool_call",
            "call_id": "c1",
            "name": "f",
            "arguments": "{}",
            "status": "done",
            "output": "42",
        },
    )
    pending = HiddenContextItem(
        id="p",
        thread_id="t",
        content={
            "type": "flask_chatkit.tool_call",
            "call_id": "c2",
            "name": "f",
            "arguments": "{}",
            "status": "pending",
            "output": "",
        },
    )
    out = thread_input([record, pending], "chat")
    assert out == [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "42"},
    ]


# --- 3. context injection -------------------------------------------------------------


def test_context_instructions_come_from_a_hook_and_no_secret_reaches_the_model(tmp_path, llm):
    assistant = Assistant("Base rules.")
    seen = []

    @assistant.context_instructions
    def about(context, thread):
        seen.append(context)
        page = context.metadata.get("page", {})
        return f"The user is {context.user_id}. They are on {page.get('title')!r}."

    app = assistant_app(tmp_path, llm, assistant)
    alice = logged_in(app, "alice")
    create(alice, "hi", metadata={"page": {"title": "Pricing", "url": "/pricing"}})
    instructions = llm.stream_requests[0].body["instructions"]
    assert instructions == "Base rules.\n\nThe user is alice. They are on 'Pricing'."
    assert seen[0].auth == "session"

    bearer = app.test_client()
    ex = create(bearer, "hello", headers={"Authorization": "Bearer token-alice"})
    assert ex.status == 200
    cookie = alice.get_cookie("session").value
    for request in llm.requests:
        dumped = json.dumps(request.body)
        for secret in ("token-alice", cookie, API_KEY, "test"):  # test = SECRET_KEY
            if secret == "test":
                assert '"test"' not in dumped
            else:
                assert secret not in dumped


# --- 4. function tools ---------------------------------------------------------------------


@pytest.mark.parametrize("api", APIS)
def test_the_tool_loop_runs_tools_reports_progress_and_records_them(tmp_path, llm, api):
    app = assistant_app(tmp_path, llm, weather_assistant(), api=api, kind="sqlalchemy")
    alice = logged_in(app, "alice")
    llm.script(
        tool_calls(call("weather", {"city": "Paris"}, call_id="call_p")), text("It is sunny.")
    )
    ex = create(alice, "Weather in Paris?")
    assert [e["text"] for e in ex.of_type("progress_update")] == ["Checking the weather in Paris…"]
    assert answers(ex) == ["It is sunny."]
    first, second = llm.stream_requests
    tools = first.body["tools"]
    if api == "responses":
        assert tools[0]["name"] == "weather"
        schema = tools[0]["parameters"]
    else:
        assert tools[0]["function"]["name"] == "weather"
        schema = tools[0]["function"]["parameters"]
    assert schema["properties"]["city"]["type"] == "string"
    assert schema["required"] == ["city"]
    assert tool_outputs(second.body) == {"call_p": "Sunny in Paris"}
    thread_id = thread_of(ex)
    assert records(StoreInContext(app), thread_id)[0]["output"] == "Sunny in Paris"
    # the record is hidden from the client, but reloads and later turns have it
    reloaded = alice.chatkit("threads.get_by_id", thread_id=thread_id).body
    assert [i["type"] for i in reloaded["items"]["data"]] == ["user_message", "assistant_message"]
    send(alice, thread_id, "Thanks")
    assert tool_outputs(llm.stream_requests[-1].body) == {"call_p": "Sunny in Paris"}


def test_tool_progress_text_is_localized_and_defaults_per_tool(tmp_path, llm):
    assistant = weather_assistant()

    @assistant.tool
    def clock() -> str:
        """The time."""
        return "noon"

    app = assistant_app(tmp_path, llm, assistant)
    alice = logged_in(app, "alice")
    llm.script(tool_calls(call("weather", {"city": "Bonn"}), call("clock", {})), text("ok"))
    ex = create(alice, "Wetter?", headers={"Accept-Language": "de-DE,de;q=0.9"})
    assert [e["text"] for e in ex.of_type("progress_update")] == [
        "Prüfe das Wetter in Bonn…",
        "Verwende clock…",
    ]


def test_the_tool_loop_stops_at_the_round_limit(tmp_path, llm):
    app = assistant_app(tmp_path, llm, weather_assistant(), CHATKIT_MAX_TOOL_ROUNDS=2)
    alice = logged_in(app, "alice")
    llm.script(*(tool_calls(call("weather", {"city": f"C{i}"})) for i in range(2)), text("Enough."))
    ex = create(alice, "Loop")
    assert answers(ex) == ["Enough."]
    assert len(llm.stream_requests) == 3
    assert "tool_choice" not in llm.stream_requests[0].body
    assert llm.stream_requests[2].body["tool_choice"] == "none"


def test_tool_failures_become_messages_for_the_model_not_dead_streams(tmp_path, llm, caplog):
    app = assistant_app(tmp_path, llm, weather_assistant())
    alice = logged_in(app, "alice")
    llm.script(
        tool_calls(
            call("weather", {"city": "Atlantis"}, call_id="c1"),
            call("weather", {"city": 5}, call_id="c2"),
            call("nope", {}, call_id="c3"),
        ),
        text("Sorry."),
    )
    with caplog.at_level(logging.WARNING, "flask_chatkit"):
        ex = create(alice, "Atlantis?")
    assert answers(ex) == ["Sorry."]
    assert not ex.of_type("error")
    outputs = tool_outputs(llm.stream_requests[1].body)
    assert outputs["c1"] == "Error: the tool weather failed: ValueError: no such city"
    assert outputs["c2"].startswith("Error: invalid arguments for weather: city:")
    assert outputs["c3"] == "Error: there is no tool named 'nope'."
    assert "Tool weather failed" in caplog.text


def test_tools_show_widgets_send_client_effects_and_get_their_context(tmp_path, llm):
    assistant = Assistant()
    contexts: list[ToolContext] = []

    @assistant.tool
    def show(label: str, ctx: ToolContext) -> t.Any:
        """Show a card."""
        contexts.append(ctx)
        return show_widget(
            {"type": "Card", "children": [{"type": "Text", "value": label}]}, copy_text=label
        )

    @assistant.tool(parameters={"type": "object", "properties": {"to": {"type": "string"}}})
    def navigate(**arguments: t.Any) -> t.Any:
        return client_effect("navigate", {"to": arguments.get("to")})

    app = assistant_app(tmp_path, llm, assistant)
    alice = logged_in(app, "alice")
    llm.script(
        tool_calls(
            call("show", {"label": "Hi card"}, call_id="s1"),
            call("navigate", {"to": "/home"}, call_id="n1"),
        ),
        text("Shown."),
    )
    ex = create(alice, "Show me")
    widgets = done_items(ex, "widget")
    assert widgets[0]["widget"]["children"][0]["value"] == "Hi card"
    assert ex.of_type("client_effect") == [
        {"type": "client_effect", "name": "navigate", "data": {"to": "/home"}}
    ]
    assert contexts[0].context.user_id == "alice" and contexts[0].call_id == "s1"
    assert tool_outputs(llm.stream_requests[1].body) == {"s1": "Hi card", "n1": "Done."}
    reloaded = alice.chatkit("items.list", thread_id=thread_of(ex), order="asc").body["data"]
    assert [i["type"] for i in reloaded] == ["user_message", "widget", "assistant_message"]


# --- 8. titles, model choice, tool choice ---------------------------------------------------


def test_new_threads_get_a_title_from_the_model_or_the_first_words(tmp_path, llm):
    app = assistant_app(tmp_path, llm, Assistant())
    alice = logged_in(app, "alice")
    llm.script_sync(text("Trip to Paris"))
    ex = create(alice, "Plan a trip to Paris for me")
    assert ex.of_type("thread.updated")[-1]["thread"]["title"] == "Trip to Paris"
    title_request = llm.sync_requests[0].body
    assert "title" in title_request["instructions"]
    assert title_request["input"] == "Plan a trip to Paris for me"
    send(alice, thread_of(ex), "More please")
    assert len(llm.sync_requests) == 1  # titled once

    llm.script_sync(error(500, "boom"))
    ex = create(alice, "An extremely long first message that keeps going well beyond any title")
    title = ex.of_type("thread.updated")[-1]["thread"]["title"]
    assert title == "An extremely long first message that keeps going well…"
    listed = alice.chatkit("threads.list").body["data"]
    assert {t_["title"] for t_ in listed} == {"Trip to Paris", title}


def test_titles_can_be_turned_off(tmp_path, llm):
    app = assistant_app(tmp_path, llm, Assistant(), CHATKIT_TITLES="false")
    alice = logged_in(app, "alice")
    ex = create(alice, "No title please")
    assert not ex.of_type("thread.updated")
    assert llm.sync_requests == []


def test_model_picker_is_honoured_only_for_allowlisted_models(tmp_path, llm):
    app = assistant_app(tmp_path, llm, Assistant(), CHATKIT_MODELS="fast=provider-fast-1")
    alice = logged_in(app, "alice")
    ex = create(alice, "Quick", inference_options={"model": "fast"})
    assert llm.stream_requests[-1].body["model"] == "provider-fast-1"
    assert not ex.of_type("notice")
    ex = create(alice, "Expensive", inference_options={"model": "gpt-huge"})
    assert llm.stream_requests[-1].body["model"] == "test-model"
    assert ex.of_type("notice")[0]["message"] == MESSAGES["en"]["model.not_allowed"].format(
        model="gpt-huge"
    )


def test_tool_choice_forces_a_tool_or_selects_an_agent(tmp_path, llm):
    assistant = weather_assistant()
    assistant.agent("poet", "Answer in verse.", tools=[])
    app = assistant_app(tmp_path, llm, assistant)
    alice = logged_in(app, "alice")
    llm.script(tool_calls(call("weather", {"city": "Rome"})), text("Warm."))
    create(alice, "Rome?", inference_options={"tool_choice": {"id": "weather"}})
    assert llm.stream_requests[0].body["tool_choice"] == {"type": "function", "name": "weather"}
    assert "tool_choice" not in llm.stream_requests[1].body

    create(alice, "A poem", inference_options={"tool_choice": {"id": "poet"}})
    body = llm.stream_requests[-1].body
    assert body["instructions"].endswith("Answer in verse.")
    assert "tools" not in body


# --- 9. errors ------------------------------------------------------------------------------


WAITS = pytest.mark.slow  # waits out CHATKIT_MODEL_TIMEOUT
ERRORS = [
    (error(429, "Slow down", code="rate_limit_exceeded"), "error.rate_limit", True),
    (error(500, "Internal"), "error.upstream", True),
    (error(503, "Overloaded"), "error.upstream", True),
    pytest.param(hang(3), "error.timeout", True, marks=WAITS),
    pytest.param(stall("Par", after=3), "error.timeout", True, marks=WAITS),
    (malformed(), "error.malformed", True),
    (truncated("Par", "tial"), "error.malformed", True),
    (content_filter("Bad"), "error.content_filter", False),
    (error(400, "Flagged", code="content_policy_violation"), "error.content_filter", False),
    (error(401, "Bad key"), "error.config", False),
]


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize(
    ("reply", "key", "retry"),
    ERRORS,
    ids=[f"{i}-{getattr(e, 'values', e)[1]}" for i, e in enumerate(ERRORS)],
)
def test_upstream_failures_become_clear_errors_and_retry_works(
    tmp_path, llm, api, reply, key, retry, caplog
):
    app = assistant_app(
        tmp_path, llm, Assistant(), api=api, CHATKIT_MODEL_TIMEOUT=1, CHATKIT_TITLES=False
    )
    alice = logged_in(app, "alice")
    llm.script(reply)
    ex = create(alice, "Hello?")
    errors = ex.of_type("error")
    assert errors == [
        {"type": "error", "code": "custom", "message": MESSAGES["en"][key], "allow_retry": retry}
    ]
    assert API_KEY not in caplog.text
    thread_id = thread_of(ex)
    items = alice.chatkit("items.list", thread_id=thread_id, order="asc").body["data"]
    assert items[0]["type"] == "user_message"  # never lost
    streamed = "".join(deltas(ex.events))
    if streamed:  # what the user already read is kept
        assert items[1]["content"][0]["text"] == streamed
    retried = alice.chatkit("threads.retry_after_item", thread_id=thread_id, item_id=items[0]["id"])
    assert answers(retried) == ["echo: Hello?"]


def test_a_model_refusal_is_shown_as_the_answer(tmp_path, llm):
    app = assistant_app(tmp_path, llm, Assistant())
    alice = logged_in(app, "alice")
    llm.script(refusal("I can't help with that."))
    ex = create(alice, "Something bad")
    assert answers(ex) == ["I can't help with that."]
    assert not ex.of_type("error")


def test_a_missing_api_key_is_a_configuration_error(tmp_path, llm, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    app = assistant_app(tmp_path, llm, Assistant(), OPENAI_API_KEY="", OPENAI_BASE_URL="")
    alice = logged_in(app, "alice")
    ex = create(alice, "Hello?")
    assert ex.of_type("error")[0]["message"] == MESSAGES["en"]["error.config"]
    assert llm.requests == []


# --- 10. localized texts -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "locale"), [("fr-CA,fr;q=0.8", "fr"), ("de", "de"), ("ja", "en"), (None, "en")]
)
def test_error_texts_follow_accept_language(tmp_path, llm, header, locale):
    app = assistant_app(tmp_path, llm, Assistant(), CHATKIT_TITLES=False)
    alice = logged_in(app, "alice")
    llm.script(error(429, "Slow down"))
    headers = {"Accept-Language": header} if header else None
    ex = create(alice, "Hello?", headers=headers)
    assert ex.of_type("error")[0]["message"] == MESSAGES[locale]["error.rate_limit"]


def test_apps_can_add_languages_and_reword_texts(tmp_path, llm):
    assistant = Assistant(
        messages={
            "es": {"error.rate_limit": "Demasiadas peticiones."},
            "en": {"error.upstream": "Our model is down."},
        }
    )
    app = assistant_app(tmp_path, llm, assistant, CHATKIT_TITLES=False)
    alice = logged_in(app, "alice")
    llm.script(error(429, "x"), error(500, "y"), error(500, "z"))
    ex = create(alice, "Hola", headers={"Accept-Language": "es"})
    assert ex.of_type("error")[0]["message"] == "Demasiadas peticiones."
    ex = create(alice, "Hola", headers={"Accept-Language": "es"})
    assert ex.of_type("error")[0]["message"] == "Our model is down."  # es falls back to en
    ex = create(alice, "Hallo", headers={"Accept-Language": "de"})
    assert ex.of_type("error")[0]["message"] == MESSAGES["de"]["error.upstream"]


def test_every_shipped_language_has_every_text():
    for locale, texts in MESSAGES.items():
        assert set(texts) == set(MESSAGES["en"]), locale
        for key, value in texts.items():
            # placeholders are the English ones
            value.format(tool="x", model="y", count=2, wait="1 minute", percent=80, n=2)


# --- configuration ---------------------------------------------------------------------------


def test_a_responder_and_a_respond_hook_cannot_both_be_given(tmp_path):
    from flask_chatkit import ChatKit
    from flask_chatkit import InMemoryStore

    chatkit = ChatKit(store=InMemoryStore(), responder=Assistant())
    chatkit.respond(lambda thread, message, context: ())
    with pytest.raises(RuntimeError, match="both a responder and a @chatkit.respond"):
        chatkit.init_app(make_app(None, tmp_path, login=False))


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("CHATKIT_MODEL_API", "soap", "CHATKIT_MODEL_API must be"),
        ("CHATKIT_MAX_TOOL_ROUNDS", "many", "CHATKIT_MAX_TOOL_ROUNDS must be a number"),
        ("CHATKIT_MODEL_TIMEOUT", "-1", "CHATKIT_MODEL_TIMEOUT must not be negative"),
    ],
)
def test_bad_model_settings_fail_at_startup(tmp_path, llm, key, value, message):
    with pytest.raises(RuntimeError, match=message):
        assistant_app(tmp_path, llm, Assistant(), **{key: value})


def test_unknown_assistant_settings_and_duplicate_tools_are_refused():
    with pytest.raises(TypeError, match="Unknown setting"):
        Assistant(modle="x")
    assistant = weather_assistant()
    with pytest.raises(ValueError, match="already registered"):
        assistant.add_tool(lambda city: city, name="weather")


# --- usage ------------------------------------------------------------------------


@pytest.mark.parametrize("api", APIS)
def test_the_tokens_each_model_call_reports_reach_the_request_context(tmp_path, llm, api):
    app = assistant_app(tmp_path, llm, Assistant(), api=api)
    seen: list[tuple[str, int, int, t.Any]] = []
    app.extensions["chatkit"].state(app).usage_listeners.append(
        lambda context, i, o, model: seen.append((context.user_id, i, o, model))
    )
    alice = logged_in(app, "alice")
    llm.script_sync(text("Greeting"))  # the title
    llm.script(text("Hel", "lo"))
    create(alice, "Say hello")
    assert len(seen) == 2, seen  # the answer and the title
    answer = next(s for s in seen if s[2] == 2)  # two chunks: two output tokens (llm_server)
    assert answer[0] == "alice" and answer[1] > 0 and answer[3] == "test-model"
    assert all(s[1] > 0 and s[2] > 0 for s in seen)
