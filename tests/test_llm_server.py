"""The loopback OpenAI-compatible server (tests/llm_server.py), judged by the real
``openai`` client: every reply parses into its typed models on both endpoints."""

from __future__ import annotations

import http.client
import json
import threading
import time
import typing as t

import openai
import pytest
from openai.types.chat import ChatCompletionChunk
from openai.types.responses import Response
from openai.types.responses import ResponseFunctionToolCall
from openai.types.responses import ResponseOutputMessage

from .llm_server import Disconnect
from .llm_server import LLMServer
from .llm_server import Reply
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

USER = [{"role": "user", "content": "hi"}]
TOOLS = [
    {
        "type": "function",
        "name": "lookup",
        "description": "Look up",
        "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
        "strict": False,
    }
]
CITE = {
    "type": "url_citation",
    "url": "https://example.com/a",
    "title": "A",
    "start_index": 0,
    "end_index": 5,
}


@pytest.fixture
def llm() -> t.Iterator[LLMServer]:
    with LLMServer() as server:
        yield server


@pytest.fixture
def client(llm: LLMServer) -> t.Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=llm.base_url, api_key="sk-test", max_retries=0, timeout=5) as c:
        yield c


def strict(model: t.Any) -> t.Any:
    """Re-validate what the client built without validation: missing or mistyped
    required fields fail here."""
    return type(model).model_validate(model.to_dict())


def responses_events(client: openai.OpenAI, **kw: t.Any) -> list[t.Any]:
    kw.setdefault("input", USER)
    return [strict(e) for e in client.responses.create(model="gpt-test", stream=True, **kw)]


def chat_chunks(client: openai.OpenAI, **kw: t.Any) -> list[ChatCompletionChunk]:
    kw.setdefault("messages", USER)
    return [strict(c) for c in client.chat.completions.create(model="gpt-test", stream=True, **kw)]


def joined(chunks: list[ChatCompletionChunk], attr: str = "content") -> str:
    return "".join(getattr(c.choices[0].delta, attr) or "" for c in chunks if c.choices)


def raw_post(llm: LLMServer, path: str, body: dict[str, t.Any]) -> tuple[t.Any, list[str]]:
    """A stdlib POST, so the bytes on the wire are checked without the client: the
    response (read) and its body split into SSE blocks."""
    host, port = llm.base_url.split("//")[1].split("/")[0].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        answer = conn.getresponse()
        return answer, answer.read().decode().split("\n\n")
    finally:
        conn.close()


@pytest.mark.parametrize("reply", [text("a", "b"), tool_calls(call("f", {"k": "v"}), text="t")])
def test_wire_framing_of_both_streams(llm: LLMServer, reply: Reply) -> None:
    llm.script(reply, reply)
    answer, blocks = raw_post(llm, "/v1/responses", {"model": "m", "input": "hi", "stream": True})
    assert answer.status == 200 and answer.getheader("Content-Type").startswith("text/event-stream")
    assert answer.getheader("Transfer-Encoding") == "chunked"
    assert blocks.pop() == ""
    for number, block in enumerate(blocks):
        event_line, data_line = block.split("\n")
        data = json.loads(data_line.removeprefix("data: "))
        assert event_line == f"event: {data['type']}" and data["sequence_number"] == number
    chat = {"model": "m", "messages": USER, "stream": True}
    _, blocks = raw_post(llm, "/v1/chat/completions", chat)
    assert blocks[-2:] == ["data: [DONE]", ""]
    assert all(b.startswith("data: {") and "\n" not in b for b in blocks[:-2])


# --------------------------------------------------------------------- Responses API


def test_responses_text_stream_emits_the_documented_event_sequence(
    llm: LLMServer, client: openai.OpenAI
) -> None:
    llm.script(text("Hello", " world", annotations=[CITE], model="gpt-other"))
    events = responses_events(client)
    assert [e.type for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.annotation.added",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert deltas == ["Hello", " world"]
    assert events[6].annotation.url == "https://example.com/a"
    final = events[-1].response
    assert isinstance(final, Response) and final.status == "completed"
    assert final.output_text == "Hello world" and final.model == "gpt-other"
    message = final.output[0]
    assert isinstance(message, ResponseOutputMessage)
    assert message.content[0].annotations[0].title == "A"  # type: ignore[union-attr]
    assert final.usage is not None and final.usage.total_tokens > 0
    assert {e.response.id for e in events if hasattr(e, "response")} == {final.id}


def test_responses_tool_calls_stream_function_call_items_after_the_text(
    llm: LLMServer, client: openai.OpenAI
) -> None:
    first, second = call("lookup", {"q": "weather in Paris"}), call("noop", {}, call_id="c-9")
    llm.script(tool_calls(first, second, text="Checking."))
    events = responses_events(client, tools=TOOLS)
    types = [e.type for e in events]
    assert types[:9] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
    ]
    assert types[-1] == "response.completed"
    deltas = [e for e in events if e.type == "response.function_call_arguments.delta"]
    done = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert len([d for d in deltas if d.output_index == 1]) >= 2
    assert json.loads("".join(d.delta for d in deltas if d.output_index == 1)) == first.arguments
    assert [d.arguments for d in done] == [first.arguments_json, "{}"]
    assert [d.output_index for d in done] == [1, 2]
    output = events[-1].response.output
    assert [o.type for o in output] == ["message", "function_call", "function_call"]
    calls = [o for o in output if isinstance(o, ResponseFunctionToolCall)]
    assert [(c.name, c.call_id, json.loads(c.arguments)) for c in calls] == [
        ("lookup", first.call_id, {"q": "weather in Paris"}),
        ("noop", "c-9", {}),
    ]
    assert first.call_id.startswith("call_") and first.call_id != call("x", {}).call_id


@pytest.mark.parametrize(
    "reply, output_text, kinds",
    [
        (text("a", "b"), "ab", ["message"]),
        (tool_calls(call("lookup", {"q": "x"})), "", ["function_call"]),
    ],
)
def test_responses_stream_helper_accumulates_the_final_response(
    llm: LLMServer, client: openai.OpenAI, reply: Reply, output_text: str, kinds: list[str]
) -> None:
    llm.script(reply)
    with client.responses.stream(model="gpt-test", input=USER, tools=TOOLS) as stream:
        final = stream.get_final_response()
    assert final.output_text == output_text
    assert [o.type for o in final.output] == kinds


def test_responses_refusal_streams_a_refusal_part_then_completes(
    llm: LLMServer, client: openai.OpenAI
) -> None:
    llm.script(refusal("I can't help with that."))
    events = responses_events(client)
    types = [e.type for e in events]
    assert "response.output_text.delta" not in types
    assert types.index("response.refusal.done") < types.index("response.completed")
    deltas = "".join(e.delta for e in events if e.type == "response.refusal.delta")
    assert deltas == "I can't help with that."
    final = events[-1].response
    assert final.status == "completed" and final.output_text == ""
    assert final.output[0].content[0].refusal == "I can't help with that."


def test_responses_content_filter_ends_with_response_incomplete(
    llm: LLMServer, client: openai.OpenAI
) -> None:
    llm.script(content_filter("Some", " text"))
    events = responses_events(client)
    assert events[-1].type == "response.incomplete"
    assert "response.completed" not in [e.type for e in events]
    final = events[-1].response
    assert final.status == "incomplete" and final.incomplete_details.reason == "content_filter"
    assert final.output_text == "Some text"


# ------------------------------------------------------------------ Chat Completions


def test_chat_text_stream_reassembles_and_ends_with_stop(
    llm: LLMServer, client: openai.OpenAI
) -> None:
    llm.script(text("Hello", ", ", "world"))
    chunks = chat_chunks(client, stream_options={"include_usage": True})
    assert {c.object for c in chunks} == {"chat.completion.chunk"}
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    assert joined(chunks) == "Hello, world"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop" and set(finishes[:-1]) == {None}
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage is not None and usage.total_tokens > 0


def test_chat_tool_calls_stream_splits_arguments_and_reassembles(
    llm: LLMServer, client: openai.OpenAI
) -> None:
    first, second = call("lookup", {"q": "Paris"}), call("noop", {})
    llm.script(tool_calls(first, second, text="Let me look."))
    chunks = chat_chunks(client)
    assert joined(chunks) == "Let me look."
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    parts: dict[int, list[t.Any]] = {}
    for c in chunks:
        for tc in c.choices[0].delta.tool_calls or []:
            parts.setdefault(tc.index, []).append(tc)
    assert [p[0].id for p in parts.values()] == [first.call_id, second.call_id]
    assert [p[0].function.name for p in parts.values()] == ["lookup", "noop"]
    assert all(p[0].type == "function" for p in parts.values())
    assert len(parts[0]) >= 3  # the header chunk, then 2+ argument pieces
    args = ["".join(tc.function.arguments for tc in p) for p in parts.values()]
    assert [json.loads(a) for a in args] == [{"q": "Paris"}, {}]


def test_chat_stream_helper_builds_the_final_completion(
    llm: LLMServer, client: openai.OpenAI
) -> None:
    one = call("lookup", {"q": "x"})
    llm.script(tool_calls(one))
    with client.chat.completions.stream(model="gpt-test", messages=USER) as stream:
        final = stream.get_final_completion()
    message = final.choices[0].message
    assert final.choices[0].finish_reason == "tool_calls" and message.content is None
    assert [
        (c.id, c.function.name, c.function.arguments)  # type: ignore[union-attr]
        for c in message.tool_calls or []
    ] == [(one.call_id, "lookup", '{"q": "x"}')]


@pytest.mark.parametrize(
    "reply, attr, finish, expected",
    [
        (refusal("No can do."), "refusal", "stop", "No can do."),
        (content_filter("Par", "tial"), "content", "content_filter", "Partial"),
    ],
)
def test_chat_refusal_and_content_filter_streams(
    llm: LLMServer, client: openai.OpenAI, reply: Reply, attr: str, finish: str, expected: str
) -> None:
    llm.script(reply)
    chunks = chat_chunks(client)
    assert joined(chunks, attr) == expected
    assert chunks[-1].choices[0].finish_reason == finish


# ------------------------------------------------------------------- non-streaming


@pytest.mark.parametrize(
    "reply, output_text, kinds, status",
    [
        (text("Short", " title", annotations=[CITE]), "Short title", ["message"], "completed"),
        (
            tool_calls(call("lookup", {"q": 1}), text="Hm."),
            "Hm.",
            ["message", "function_call"],
            "completed",
        ),
        (refusal("No."), "", ["message"], "completed"),
        (content_filter("cut"), "cut", ["message"], "incomplete"),
    ],
)
def test_non_streaming_responses_parse_on_both_endpoints(
    llm: LLMServer,
    client: openai.OpenAI,
    reply: Reply,
    output_text: str,
    kinds: list[str],
    status: str,
) -> None:
    llm.script_sync(reply, reply)
    response = strict(client.responses.create(model="gpt-test", input=USER, tools=TOOLS))
    assert response.object == "response" and response.status == status
    assert response.output_text == output_text and [o.type for o in response.output] == kinds
    completion = strict(client.chat.completions.create(model="gpt-test", messages=USER))
    message = completion.choices[0].message
    assert completion.object == "chat.completion"
    assert (message.content or "") == output_text
    assert completion.choices[0].finish_reason == {"incomplete": "content_filter"}.get(
        status, "tool_calls" if reply.calls else "stop"
    )
    if reply.calls:
        assert json.loads(message.tool_calls[0].function.arguments) == {"q": 1}  # type: ignore
    if reply.refusal:
        assert message.refusal == "No." and message.content is None
    if reply.annotations:
        assert message.annotations[0].url_citation.url == CITE["url"]  # type: ignore[index]
    assert len(llm.sync_requests) == 2 and llm.stream_requests == []


# ---------------------------------------------------------------- failure replies


def _both(client: openai.OpenAI, streaming: bool, path: str) -> t.Any:
    """One request, drained; what the client raised or returned."""
    if path == "responses":
        if streaming:
            return list(client.responses.create(model="gpt-test", input=USER, stream=True))
        return client.responses.create(model="gpt-test", input=USER)
    if streaming:
        return list(client.chat.completions.create(model="gpt-test", messages=USER, stream=True))
    return client.chat.completions.create(model="gpt-test", messages=USER)


ENDPOINTS = [("responses", True), ("responses", False), ("chat", True), ("chat", False)]


@pytest.mark.parametrize(
    "reply, exc, code",
    [
        (
            error(429, "Slow down", code="rate_limit_exceeded", headers={"retry-after": "7"}),
            openai.RateLimitError,
            "rate_limit_exceeded",
        ),
        (error(500), openai.InternalServerError, None),
        (error(503, "Overloaded"), openai.InternalServerError, None),
        (
            error(400, "Flagged", code="content_policy_violation"),
            openai.BadRequestError,
            "content_policy_violation",
        ),
    ],
)
@pytest.mark.parametrize("path, streaming", ENDPOINTS)
def test_error_replies_raise_the_matching_openai_exceptions(
    llm: LLMServer,
    client: openai.OpenAI,
    reply: Reply,
    exc: type[Exception],
    code: str | None,
    path: str,
    streaming: bool,
) -> None:
    (llm.script if streaming else llm.script_sync)(reply)
    with pytest.raises(exc) as raised:
        _both(client, streaming, path)
    err = t.cast(openai.APIStatusError, raised.value)
    assert err.status_code == reply.status and err.code == code
    assert err.body == {"message": reply.message, "type": reply.type, "param": None, "code": code}
    assert err.response.headers.get("retry-after") == dict(reply.headers).get("retry-after")


@pytest.mark.slow  # waits out the timeout
@pytest.mark.parametrize("path, streaming", ENDPOINTS)
def test_hang_makes_the_client_time_out(
    llm: LLMServer, client: openai.OpenAI, path: str, streaming: bool
) -> None:
    (llm.script if streaming else llm.script_sync)(hang(5))
    started = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        _both(client.with_options(timeout=0.3), streaming, path)
    assert time.monotonic() - started < 2
    if streaming:  # the server notices the client left (sent nothing yet)
        gone = llm.wait_disconnect(2)
        assert gone is not None and gone.sent_events == 0
    else:
        assert llm.wait_disconnect(0.1) is None


@pytest.mark.slow  # waits out the timeout
@pytest.mark.parametrize("path", ["responses", "chat"])
def test_stall_sends_deltas_then_the_read_times_out(
    llm: LLMServer, client: openai.OpenAI, path: str
) -> None:
    llm.script(stall("Hel", "lo", after=5))
    received: list[t.Any] = []
    slow = client.with_options(timeout=0.3)
    with pytest.raises(openai.APITimeoutError):
        if path == "responses":
            for event in slow.responses.create(model="gpt-test", input=USER, stream=True):
                received.append(event.type)
        else:
            for chunk in slow.chat.completions.create(model="gpt-test", messages=USER, stream=True):
                received.append(chunk.choices[0].delta.content)
    expected = (
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
        ]
        + ["response.output_text.delta"] * 2
        if path == "responses"
        else ["", "Hel", "lo"]
    )
    assert received == expected
    gone = llm.wait_disconnect(2)
    assert gone is not None and gone.sent_events == len(expected)


def test_truncated_stream_ends_without_a_completion_event(
    llm: LLMServer, client: openai.OpenAI
) -> None:
    llm.script(truncated("Hel", "lo"), truncated("Hel", "lo"), truncated("x"))
    events = responses_events(client)
    assert events[-1].type == "response.output_text.delta"
    assert not [e for e in events if e.type.startswith("response.output_text.done")]
    chunks = chat_chunks(client)
    assert joined(chunks) == "Hello"
    assert {c.choices[0].finish_reason for c in chunks} == {None}
    with pytest.raises(RuntimeError, match="response.completed"):
        with client.responses.stream(model="gpt-test", input=USER) as stream:
            stream.get_final_response()
    assert llm.disconnects == []


@pytest.mark.parametrize("path", ["responses", "chat"])
def test_truncated_non_streaming_body_is_a_connection_error(
    llm: LLMServer, client: openai.OpenAI, path: str
) -> None:
    llm.script_sync(truncated("A", " title"))
    with pytest.raises(openai.APIConnectionError):
        _both(client, False, path)


@pytest.mark.parametrize("path, streaming", ENDPOINTS)
def test_malformed_reply_is_not_json(
    llm: LLMServer, client: openai.OpenAI, path: str, streaming: bool
) -> None:
    (llm.script if streaming else llm.script_sync)(malformed())
    with pytest.raises(json.JSONDecodeError):
        _both(client, streaming, path)


# --------------------------------------------------------------------- disconnects


@pytest.mark.slow
@pytest.mark.parametrize("path, read, sent", [("responses", 5, 5), ("chat", 2, 2)])
def test_closing_a_slow_stream_records_a_disconnect_within_one_delay(
    llm: LLMServer, client: openai.OpenAI, path: str, read: int, sent: int
) -> None:
    llm.script(text(*"abcdefghij", delay=0.4))
    stream: t.Any = (
        client.responses.create(model="gpt-test", input=USER, stream=True)
        if path == "responses"
        else client.chat.completions.create(model="gpt-test", messages=USER, stream=True)
    )
    events = iter(stream)
    for _ in range(read):  # up to and including the first text delta
        next(events)
    closed_at = time.monotonic()
    stream.close()
    gone = llm.wait_disconnect(3)
    assert isinstance(gone, Disconnect)
    assert gone.path == ("/v1/responses" if path == "responses" else "/v1/chat/completions")
    assert gone.sent_events == sent
    assert gone.at - closed_at < 0.8
    assert llm.wait_disconnect(0.2) is None


def test_streams_read_to_the_end_record_no_disconnect(
    llm: LLMServer, client: openai.OpenAI
) -> None:
    llm.script(text("a", "b", delay=0.05), tool_calls(call("f", {"x": 1})))
    responses_events(client)
    chat_chunks(client)
    assert llm.wait_disconnect(0.1) is None and llm.disconnects == []


def test_text_delay_spaces_the_deltas(llm: LLMServer, client: openai.OpenAI) -> None:
    llm.script(text("a", "b", "c", delay=0.15))
    arrivals = [
        time.monotonic()
        for c in client.chat.completions.create(model="gpt-test", messages=USER, stream=True)
        if c.choices and c.choices[0].delta.content
    ]
    gaps = [later - earlier for earlier, later in zip(arrivals, arrivals[1:])]
    assert len(gaps) == 2 and min(gaps) >= 0.12


def test_stopping_the_server_ends_a_hang_promptly() -> None:
    outcome: list[BaseException] = []
    with LLMServer() as llm:
        llm.script(hang(30))

        def ask() -> None:
            with openai.OpenAI(
                base_url=llm.base_url, api_key="sk-test", max_retries=0, timeout=30
            ) as c:
                try:
                    c.responses.create(model="gpt-test", input=USER, stream=True)
                except openai.APIError as exc:
                    outcome.append(exc)

        asker = threading.Thread(target=ask)
        asker.start()
        assert llm.wait_requests(1)
        time.sleep(0.1)
    asker.join(3)
    assert not asker.is_alive()
    assert isinstance(outcome[0], openai.APIConnectionError)


# ----------------------------------------------------- defaults, scripts, records


def test_default_echoes_the_last_user_message(llm: LLMServer, client: openai.OpenAI) -> None:
    history = [
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": [{"type": "output_text", "text": "answer"}]},
        {
            "role": "user",
            "content": [
                {"type": "input_text", "text": "second "},
                {"type": "input_text", "text": "question"},
            ],
        },
        {"type": "function_call_output", "call_id": "c1", "output": "{}"},
    ]
    events = responses_events(client, input=history)
    assert events[-1].response.output_text == "echo: second question"
    assert [e.delta for e in events if e.type == "response.output_text.delta"] == [
        "echo: ",
        "second ",
        "question",
    ]
    assert responses_events(client, input="plain")[-1].response.output_text == "echo: plain"
    messages = [
        {"role": "system", "content": "be nice"},
        {"role": "user", "content": [{"type": "text", "text": "chat parts"}]},
    ]
    assert joined(chat_chunks(client, messages=messages)) == "echo: chat parts"


def test_sync_default_is_a_title_and_queues_are_separate(
    llm: LLMServer, client: openai.OpenAI
) -> None:
    llm.script(text("streamed"))
    assert client.responses.create(model="gpt-test", input=USER).output_text == "A short title"
    assert responses_events(client)[-1].response.output_text == "streamed"
    llm.sync_default = lambda body, path: text("Title for " + body["model"])
    completion = client.chat.completions.create(model="gpt-x", messages=USER)
    assert completion.choices[0].message.content == "Title for gpt-x"


def test_callable_replies_see_the_request(llm: LLMServer, client: openai.OpenAI) -> None:
    seen: list[tuple[str, str]] = []

    def answer(body: dict[str, t.Any], path: str) -> Reply:
        seen.append((path, body["model"]))
        return text(f"{len(body.get('tools') or [])} tools")

    llm.script(answer)
    llm.default = answer
    assert responses_events(client, tools=TOOLS)[-1].response.output_text == "1 tools"
    assert joined(chat_chunks(client)) == "0 tools"
    assert seen == [("/v1/responses", "gpt-test"), ("/v1/chat/completions", "gpt-test")]


def test_a_broken_script_answers_500_naming_the_problem(
    llm: LLMServer, client: openai.OpenAI, capsys: pytest.CaptureFixture[str]
) -> None:
    llm.script(lambda body, path: body["no such key"], "not a reply")
    for _ in range(2):
        with pytest.raises(openai.InternalServerError, match="LLMServer reply failed"):
            responses_events(client)
    assert "KeyError" in capsys.readouterr().err


def test_requests_are_recorded_in_arrival_order(llm: LLMServer, client: openai.OpenAI) -> None:
    responses_events(client, instructions="Be brief.")
    client.chat.completions.create(model="gpt-mini", messages=USER)
    assert llm.wait_requests(2, timeout=0.1) and not llm.wait_requests(3, timeout=0.1)
    first, second = llm.requests
    assert (first.method, first.path, second.path) == (
        "POST",
        "/v1/responses",
        "/v1/chat/completions",
    )
    assert first.headers["authorization"] == "Bearer sk-test"
    assert first.body["instructions"] == "Be brief." and first.body["stream"] is True
    assert llm.stream_requests == [first] and llm.sync_requests == [second]
    assert second.body == {"model": "gpt-mini", "messages": USER}


def test_unknown_paths_answer_openai_not_found(llm: LLMServer, client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        client.models.list()
    assert llm.requests[0].method == "GET" and llm.requests[0].path == "/v1/models"


def test_reset_clears_queues_records_and_defaults(llm: LLMServer, client: openai.OpenAI) -> None:
    llm.script(hang(5), text("queued"))
    llm.script_sync(text("queued"))
    llm.default = lambda body, path: text("custom")
    llm.sync_default = lambda body, path: text("custom")
    with pytest.raises(openai.APITimeoutError):
        responses_events(client.with_options(timeout=0.3))
    assert llm.wait_disconnect(2) is not None
    llm.reset()
    assert llm.requests == [] and llm.disconnects == []
    assert llm.wait_disconnect(0.1) is None
    assert responses_events(client)[-1].response.output_text == "echo: hi"
    assert client.responses.create(model="gpt-test", input=USER).output_text == "A short title"
