"""The responder waiting for people: forms, structured input, client tools, MCP widgets.

Against the loopback OpenAI server (tests/llm_server.py) and, for MCP, a real
MCP server process (tests/mcp_test_server.py over stdio).
"""

from __future__ import annotations

import json
import logging
import sys
import typing as t
from pathlib import Path

import pytest

from flask_chatkit.assistant import Assistant
from flask_chatkit.i18n import MESSAGES
from flask_chatkit.tools import ask_questions
from flask_chatkit.tools import ask_user
from flask_chatkit.tools import form_widget

from .assistant_helpers import answers
from .assistant_helpers import assistant_app
from .assistant_helpers import create
from .assistant_helpers import done_items
from .assistant_helpers import records
from .assistant_helpers import send
from .assistant_helpers import thread_of
from .assistant_helpers import tool_outputs
from .conftest import StoreInContext
from .conftest import logged_in
from .llm_server import LLMServer
from .llm_server import call
from .llm_server import text
from .llm_server import tool_calls


def booking_assistant() -> Assistant:
    assistant = Assistant("Book tables.")

    @assistant.tool
    def book_table(restaurant: str) -> t.Any:
        """Book a table; asks the user for the details."""
        return ask_user(
            form_widget(
                f"Book {restaurant}",
                [
                    {"name": "people", "label": "People", "placeholder": "2"},
                    {
                        "name": "time",
                        "label": "Time",
                        "options": [
                            {"value": "19:00", "label": "7 pm"},
                            {"value": "20:00", "label": "8 pm"},
                        ],
                    },
                ],
            ),
            copy_text=f"Booking form for {restaurant}",
        )

    @assistant.tool
    def survey() -> t.Any:
        """Ask the user two questions."""
        return ask_questions(
            {"type": "freeform", "id": "q1", "question": "Your name?"},
            {
                "type": "multiple_choice",
                "id": "q2",
                "question": "Colour?",
                "options": [{"value": "red"}, {"value": "blue"}],
            },
        )

    @assistant.tool(client=True)
    def get_location() -> None:
        """The user's location, from the browser."""

    return assistant


def start_form(llm: LLMServer, client: t.Any) -> tuple[str, dict[str, t.Any]]:
    llm.script(tool_calls(call("book_table", {"restaurant": "Chez Nous"}, call_id="call_b")))
    ex = create(client, "Book Chez Nous")
    (form,) = done_items(ex, "widget")
    assert answers(ex) == []  # the turn waits for the user
    return thread_of(ex), form


@pytest.mark.parametrize("kind", ["memory", "sqlalchemy"])
def test_a_form_waits_for_the_user_and_its_answer_resumes_the_model(tmp_path, llm, kind):
    app = assistant_app(tmp_path, llm, booking_assistant(), kind=kind)
    alice = logged_in(app, "alice")
    thread_id, form = start_form(llm, alice)
    widget = form["widget"]
    assert widget["confirm"]["action"]["type"] == "human.form_submit"
    assert widget["cancel"]["action"]["type"] == "human.cancel"
    assert len(llm.stream_requests) == 1
    assert records(StoreInContext(app), thread_id)[0]["status"] == "pending"

    llm.script(text("Booked for 2 at 8 pm."))
    ex = alice.chatkit(
        "threads.custom_action",
        thread_id=thread_id,
        item_id=form["id"],
        action={"type": "human.form_submit", "payload": {"people": "2", "time": "20:00"}},
    )
    assert answers(ex) == ["Booked for 2 at 8 pm."]
    assert json.loads(tool_outputs(llm.stream_requests[-1].body)["call_b"]) == {
        "answer": {"people": "2", "time": "20:00"}
    }
    replaced = ex.of_type("thread.item.replaced")[0]["item"]
    assert replaced["id"] == form["id"]
    assert replaced["widget"]["children"][0]["value"] == MESSAGES["en"]["form.sent"]
    assert records(StoreInContext(app), thread_id)[0]["status"] == "answered"

    again = alice.chatkit(
        "threads.custom_action",
        thread_id=thread_id,
        item_id=form["id"],
        action={"type": "human.form_submit", "payload": {"people": "9"}},
    )
    assert again.of_type("error")[0]["message"] == MESSAGES["en"]["form.already_answered"]
    assert len(llm.stream_requests) == 2  # nothing sent to the model


def test_new_messages_are_refused_with_a_localized_notice_while_a_form_is_pending(tmp_path, llm):
    app = assistant_app(tmp_path, llm, booking_assistant())
    alice = logged_in(app, "alice")
    thread_id, form = start_form(llm, alice)
    ex = send(alice, thread_id, "Actually, never mind", headers={"Accept-Language": "fr"})
    assert answers(ex) == [MESSAGES["fr"]["form.pending"]]
    assert len(llm.stream_requests) == 1
    items = alice.chatkit("items.list", thread_id=thread_id, order="asc").body["data"]
    assert [i["type"] for i in items] == [
        "user_message",
        "widget",
        "user_message",
        "assistant_message",
    ]  # the message is kept

    llm.script(text("Fine."))
    alice.chatkit(
        "threads.custom_action",
        thread_id=thread_id,
        item_id=form["id"],
        action={"type": "human.cancel"},
    )
    send(alice, thread_id, "Now something else")
    assert answers_of_last(llm) == "Now something else"


def answers_of_last(llm: LLMServer) -> str:
    last = llm.stream_requests[-1].body["input"][-1]
    return "".join(p["text"] for p in last["content"])  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("action", "expected"),
    [("human.best_judgement", "best judgement"), ("human.cancel", "declined")],
)
def test_best_judgement_and_cancel_tell_the_model_what_the_user_chose(
    tmp_path, llm, action, expected
):
    app = assistant_app(tmp_path, llm, booking_assistant())
    alice = logged_in(app, "alice")
    thread_id, form = start_form(llm, alice)
    llm.script(text("Understood."))
    ex = alice.chatkit(
        "threads.custom_action", thread_id=thread_id, item_id=form["id"], action={"type": action}
    )
    assert answers(ex) == ["Understood."]
    assert expected in tool_outputs(llm.stream_requests[-1].body)["call_b"]


def test_other_actions_go_to_the_apps_action_hook(tmp_path, llm):
    app = assistant_app(tmp_path, llm, booking_assistant())
    chatkit = app.extensions["chatkit"]
    seen = []

    @chatkit.action
    def on_action(thread, action, sender, context):
        seen.append(action.type)
        yield {"type": "progress_update", "text": "handled"}

    alice = logged_in(app, "alice")
    thread_id, form = start_form(llm, alice)
    ex = alice.chatkit(
        "threads.custom_action",
        thread_id=thread_id,
        item_id=form["id"],
        action={"type": "app.like"},
    )
    assert seen == ["app.like"]
    assert ex.of_type("progress_update")[0]["text"] == "handled"


def test_actions_without_an_app_hook_get_a_clear_error(tmp_path, llm):
    app = assistant_app(tmp_path, llm, booking_assistant())
    alice = logged_in(app, "alice")
    thread_id, form = start_form(llm, alice)
    ex = alice.chatkit(
        "threads.custom_action",
        thread_id=thread_id,
        item_id=form["id"],
        action={"type": "app.like"},
        headers={"Accept-Language": "de"},
    )
    assert ex.of_type("error")[0]["message"] == MESSAGES["de"]["action.unknown"]


def test_structured_input_questions_are_answered_through_add_structured_input(tmp_path, llm):
    app = assistant_app(tmp_path, llm, booking_assistant(), kind="sqlalchemy")
    alice = logged_in(app, "alice")
    llm.script(tool_calls(call("survey", {}, call_id="call_s")))
    ex = create(alice, "Survey me")
    (question,) = done_items(ex, "structured_input")
    assert question["status"] == "pending"
    llm.script(text("Thanks, Ada."))
    ex = alice.chatkit(
        "threads.add_structured_input",
        thread_id=thread_of(ex),
        item_id=question["id"],
        input={
            "status": "answered",
            "answers": {"q1": {"values": ["Ada"]}, "q2": {"values": ["blue"]}},
        },
    )
    assert answers(ex) == ["Thanks, Ada."]
    output = json.loads(tool_outputs(llm.stream_requests[-1].body)["call_s"])
    assert output == {"answers": {"Your name?": ["Ada"], "Colour?": ["blue"]}}


def test_client_tools_emit_a_call_and_resume_with_the_browsers_output(tmp_path, llm):
    app = assistant_app(tmp_path, llm, booking_assistant(), kind="sqlalchemy")
    alice = logged_in(app, "alice")
    llm.script(tool_calls(call("get_location", {}, call_id="call_loc")))
    ex = create(alice, "Where am I?")
    (pending,) = done_items(ex, "client_tool_call")
    assert pending["status"] == "pending" and pending["name"] == "get_location"
    assert pending["call_id"] == "call_loc"
    llm.script(text("You are in Lyon."))
    ex = alice.chatkit(
        "threads.add_client_tool_output", thread_id=thread_of(ex), result={"city": "Lyon"}
    )
    assert answers(ex) == ["You are in Lyon."]
    assert json.loads(tool_outputs(llm.stream_requests[-1].body)["call_loc"]) == {"city": "Lyon"}


# --- MCP servers -------------------------------------------------------------------------------

MCP_SCRIPT = str(Path(__file__).with_name("mcp_test_server.py"))


@pytest.fixture(scope="module")
def mcp_server() -> t.Iterator[t.Any]:
    pytest.importorskip("mcp", reason="the optional 'mcp' package is not installed")
    from flask_chatkit.mcp_servers import MCPServer

    server = MCPServer.stdio(sys.executable, [MCP_SCRIPT, "stdio"], name="demo")
    yield server
    server.close()


def test_mcp_tools_are_offered_and_their_ui_widgets_are_shown_and_kept(
    tmp_path, llm, mcp_server, caplog
):
    assistant = Assistant(mcp_servers=[mcp_server])
    app = assistant_app(tmp_path, llm, assistant, kind="sqlalchemy")
    alice = logged_in(app, "alice")
    llm.script(
        tool_calls(
            call("add", {"a": 2, "b": 3}, call_id="c_add"),
            call("show_card", {"title": "Hello card"}, call_id="c_card"),
            call("show_card_blob", {"title": "Blob card"}, call_id="c_blob"),
            call("bad_widget", {}, call_id="c_bad"),
        ),
        text("Done."),
    )
    with caplog.at_level(logging.WARNING, "flask_chatkit"):
        ex = create(alice, "Use the tools")
    offered = {tool["name"] for tool in llm.stream_requests[0].body["tools"]}
    assert {"add", "echo", "show_card", "bad_widget"} <= offered
    widgets = done_items(ex, "widget")
    assert [w["copy_text"] for w in widgets] == ["Hello card", "Blob card"]
    assert widgets[0]["widget"]["children"][0]["value"] == "Hello card"
    assert "widget" in caplog.text.lower()  # the malformed one was logged and skipped
    assert answers(ex) == ["Done."]
    outputs = tool_outputs(llm.stream_requests[1].body)
    assert outputs["c_add"] == "5"
    thread_id = thread_of(ex)
    stored = {r["call_id"]: r for r in records(StoreInContext(app), thread_id)}
    resource = [c for c in stored["c_card"]["content"] if c["type"] == "resource"][0]
    assert resource["resource"]["uri"].startswith("ui://")  # the full result is kept
    reloaded = alice.chatkit("items.list", thread_id=thread_id, order="asc").body["data"]
    assert [i["type"] for i in reloaded].count("widget") == 2


def test_mcp_tool_errors_reach_the_model_as_errors(tmp_path, llm, mcp_server):
    app = assistant_app(tmp_path, llm, Assistant(mcp_servers=[mcp_server]))
    alice = logged_in(app, "alice")
    llm.script(tool_calls(call("fail", {}, call_id="c_fail")), text("It failed."))
    ex = create(alice, "Fail please")
    assert answers(ex) == ["It failed."]
    assert tool_outputs(llm.stream_requests[1].body)["c_fail"].startswith("Error: ")


def test_an_unreachable_mcp_server_leaves_its_tools_out(tmp_path, llm, caplog):
    pytest.importorskip("mcp", reason="the optional 'mcp' package is not installed")
    from flask_chatkit.mcp_servers import MCPServer

    from .servers import free_port

    gone = MCPServer.http(f"http://127.0.0.1:{free_port()}/mcp", name="gone", timeout=2)
    assistant = Assistant(mcp_servers=[gone])

    @assistant.tool
    def ping() -> str:
        """Pong."""
        return "pong"

    app = assistant_app(tmp_path, llm, assistant)
    alice = logged_in(app, "alice")
    with caplog.at_level(logging.WARNING, "flask_chatkit"):
        ex = create(alice, "Hello")
    assert answers(ex) == ["echo: Hello"]
    assert [tool["name"] for tool in llm.stream_requests[0].body["tools"]] == ["ping"]
    assert "MCP server gone is unavailable" in caplog.text
    create(alice, "Again")  # a server that just failed is not waited for on every turn
    assert caplog.text.count("MCP server gone is unavailable") == 1
    assert [tool["name"] for tool in llm.stream_requests[-1].body["tools"]] == ["ping"]
    gone.close()


def test_mcp_tool_names_that_clash_are_prefixed_with_the_server_name(tmp_path, llm, mcp_server):
    assistant = Assistant(mcp_servers=[mcp_server])

    @assistant.tool
    def add(a: int, b: int) -> int:
        """Our own add."""
        return a * 100 + b

    app = assistant_app(tmp_path, llm, assistant)
    alice = logged_in(app, "alice")
    llm.script(
        tool_calls(
            call("add", {"a": 1, "b": 2}, call_id="ours"),
            call("demo__add", {"a": 1, "b": 2}, call_id="theirs"),
        ),
        text("ok"),
    )
    create(alice, "Add")
    names = [tool["name"] for tool in llm.stream_requests[0].body["tools"]]
    assert "add" in names and "demo__add" in names
    outputs = tool_outputs(llm.stream_requests[1].body)
    assert outputs == {"ours": "102", "theirs": "3"}
