"""OpenTelemetry traces: a span per ChatKit request, GenAI spans per model call.

The spans go to the SDK's in-memory exporter through a tracer provider set once
for the test session (the global provider can be set only once per process).
The model is the loopback OpenAI server (``tests/llm_server.py``); streams run
in the producer greenlet (heartbeats on), where the request's context is not
current unless the library carries it there.
"""

from __future__ import annotations

import json
import subprocess
import sys
import typing as t

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from opentelemetry.trace import StatusCode

from flask_chatkit import stream_text
from flask_chatkit import tracing
from flask_chatkit.assistant import Assistant

from .assistant_helpers import answers
from .assistant_helpers import assistant_app
from .assistant_helpers import create
from .assistant_helpers import send
from .assistant_helpers import thread_of
from .conftest import logged_in
from .conftest import make_app
from .llm_server import call
from .llm_server import error
from .llm_server import text
from .llm_server import tool_calls
from .streams import Stream
from .streams import deltas

_exporter = InMemorySpanExporter()


class _WhileTesting(SimpleSpanProcessor):
    """Exports only during a test of this module: the provider stays set for the
    rest of the session, whose spans must not pile up in memory."""

    active = False

    def on_end(self, span: ReadableSpan) -> None:
        if self.active:
            super().on_end(span)


_processor = _WhileTesting(_exporter)


@pytest.fixture(scope="session")
def _provider() -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(_processor)
    trace.set_tracer_provider(provider)  # once per process
    return provider


@pytest.fixture
def spans(_provider: TracerProvider) -> t.Iterator[InMemorySpanExporter]:
    """The exporter, emptied for this test; ``get_finished_spans()`` lists ended spans."""
    _exporter.clear()
    _processor.active = True
    try:
        yield _exporter
    finally:
        _processor.active = False
        _exporter.clear()


def named(spans: InMemorySpanExporter, prefix: str) -> list[ReadableSpan]:
    return [s for s in spans.get_finished_spans() if s.name.startswith(prefix)]


def weather_assistant() -> Assistant:
    assistant = Assistant("You are a test assistant.")

    @assistant.tool()
    def weather(city: str) -> str:
        """The current weather in a city."""
        return f"Sunny in {city}"

    return assistant


@pytest.mark.parametrize("api", ["responses", "chat"])
def test_model_calls_are_genai_client_spans_under_the_request_span(
    tmp_path: t.Any, llm: t.Any, spans: InMemorySpanExporter, api: str
) -> None:
    app = assistant_app(tmp_path, llm, weather_assistant(), api=api)
    alice = logged_in(app, "alice")
    llm.script(tool_calls(call("weather", {"city": "Paris"})), text("It is ", "sunny."))
    ex = create(alice, "Weather in Paris? My secret is 4711.")
    assert answers(ex) == ["It is sunny."]
    thread_id = thread_of(ex)

    (request,) = named(spans, "chatkit ")
    assert request.name == "chatkit threads.create"
    assert request.attributes is not None
    assert request.attributes["chatkit.request.type"] == "threads.create"
    assert request.attributes["chatkit.thread.id"] == thread_id
    assert request.status.status_code is not StatusCode.ERROR

    models = named(spans, "chat ")
    assert len(models) == 3  # the tool round, the answer, the title
    for span in models:
        attrs = dict(span.attributes or {})
        assert span.name == "chat test-model" and span.kind is SpanKind.CLIENT
        assert span.parent is not None and span.parent.span_id == request.context.span_id
        assert span.context.trace_id == request.context.trace_id
        assert attrs["gen_ai.operation.name"] == "chat"
        assert attrs["gen_ai.provider.name"] == attrs["gen_ai.system"] == "openai"
        assert attrs["gen_ai.request.model"] == attrs["gen_ai.response.model"] == "test-model"
        assert attrs["gen_ai.conversation.id"] == thread_id
        prefix = "resp_" if api == "responses" else "chatcmpl-"
        assert t.cast(str, attrs["gen_ai.response.id"]).startswith(prefix)
        assert attrs["gen_ai.usage.input_tokens"] > 0
        assert attrs["gen_ai.usage.output_tokens"] > 0
        assert attrs["server.address"] == "127.0.0.1"
        # no content unless the app opts in
        assert not [k for k in attrs if "messages" in k or "instructions" in k]
        assert "4711" not in json.dumps(attrs)
        assert span.end_time is not None and request.end_time is not None
        assert request.start_time is not None and span.start_time is not None
        assert request.start_time <= span.start_time and span.end_time <= request.end_time
    reasons = sorted(tuple(s.attributes["gen_ai.response.finish_reasons"]) for s in models)  # type: ignore[index]
    assert reasons == [("stop",), ("stop",), ("tool_calls",)]

    (tool,) = named(spans, "execute_tool ")
    attrs = dict(tool.attributes or {})
    assert tool.name == "execute_tool weather" and tool.kind is SpanKind.INTERNAL
    assert tool.parent is not None and tool.parent.span_id == request.context.span_id
    assert attrs["gen_ai.operation.name"] == "execute_tool"
    assert attrs["gen_ai.tool.name"] == "weather" and attrs["gen_ai.tool.type"] == "function"
    assert attrs["gen_ai.tool.call.id"] and attrs["gen_ai.conversation.id"] == thread_id
    assert "gen_ai.tool.call.arguments" not in attrs and "gen_ai.tool.call.result" not in attrs
    assert tool.status.status_code is not StatusCode.ERROR


def test_with_trace_content_the_spans_hold_the_messages(
    tmp_path: t.Any, llm: t.Any, spans: InMemorySpanExporter
) -> None:
    app = assistant_app(
        tmp_path, llm, Assistant("Be brief."), CHATKIT_TRACE_CONTENT=True, CHATKIT_TITLES=False
    )
    alice = logged_in(app, "alice")
    llm.script(text("Hello", " there"))
    create(alice, "Say hello")
    (span,) = named(spans, "chat ")
    attrs = dict(span.attributes or {})
    assert json.loads(t.cast(str, attrs["gen_ai.system_instructions"])) == [
        {"type": "text", "content": "Be brief."}
    ]
    inputs = json.loads(t.cast(str, attrs["gen_ai.input.messages"]))
    assert inputs[-1] == {"role": "user", "parts": [{"type": "text", "content": "Say hello"}]}
    assert json.loads(t.cast(str, attrs["gen_ai.output.messages"])) == [
        {
            "role": "assistant",
            "parts": [{"type": "text", "content": "Hello there"}],
            "finish_reason": "stop",
        }
    ]


def test_a_failed_model_call_is_an_error_span_and_the_request_span_says_so(
    tmp_path: t.Any, llm: t.Any, spans: InMemorySpanExporter
) -> None:
    app = assistant_app(tmp_path, llm, Assistant(), CHATKIT_TITLES=False)
    alice = logged_in(app, "alice")
    llm.script(text("first"))
    thread_id = thread_of(create(alice, "one"))
    spans.clear()
    llm.script(error(500))
    ex = send(alice, thread_id, "two")
    assert ex.types[-1] == "error"
    (model,) = named(spans, "chat ")
    assert model.status.status_code is StatusCode.ERROR
    assert model.attributes is not None and model.attributes["error.type"] == "upstream"
    (request,) = named(spans, "chatkit ")
    assert request.name == "chatkit threads.add_user_message"
    assert request.attributes is not None
    assert request.attributes["chatkit.thread.id"] == thread_id
    assert request.status.status_code is StatusCode.ERROR
    assert model.parent is not None and model.parent.span_id == request.context.span_id


def test_the_request_span_ends_when_the_client_leaves_mid_stream(
    tmp_path: t.Any, llm: t.Any, spans: InMemorySpanExporter
) -> None:
    app = assistant_app(tmp_path, llm, Assistant(), CHATKIT_TITLES=False)
    alice = logged_in(app, "alice")
    words = [f"w{i} " for i in range(200)]
    llm.script(text(*words, delay=0.02))
    stream = Stream(alice, {"type": "threads.create", "params": {"input": _input("Go")}})
    stream.read_until(lambda events: len(deltas(events)) >= 3)
    assert named(spans, "chatkit ") == []  # still streaming: the span is open
    stream.close()
    assert llm.wait_disconnect(timeout=5) is not None
    (request,) = named(spans, "chatkit ")
    assert request.attributes is not None
    assert request.attributes["chatkit.stream.cancelled"] is True
    (model,) = named(spans, "chat ")
    assert model.parent is not None and model.parent.span_id == request.context.span_id
    assert model.end_time is not None and request.end_time is not None
    assert model.end_time <= request.end_time


def _input(text_: str) -> dict[str, t.Any]:
    from flask_chatkit.testing import user_input

    return user_input(text_)


def test_json_requests_get_a_span_of_their_own_and_errors_are_marked(
    tmp_path: t.Any, spans: InMemorySpanExporter
) -> None:
    app = make_app("memory", tmp_path)

    @app.extensions["chatkit"].respond
    def respond(thread: t.Any, message: t.Any, context: t.Any) -> t.Any:
        yield from stream_text(thread, "an answer")

    alice = logged_in(app, "alice")
    assert alice.chatkit("threads.list").status == 200
    assert alice.chatkit("threads.get_by_id", thread_id="thr_missing").status == 404
    listed, missing = named(spans, "chatkit ")
    assert listed.name == "chatkit threads.list"
    assert listed.status.status_code is not StatusCode.ERROR
    assert missing.name == "chatkit threads.get_by_id"
    assert missing.attributes is not None
    assert missing.attributes["chatkit.thread.id"] == "thr_missing"
    assert missing.attributes["error.type"] == "not_found"
    assert missing.status.status_code is StatusCode.ERROR
    # a custom responder's stream is traced too, with no model spans
    create(alice, "hi")
    assert [s.name for s in named(spans, "chat")] == [
        "chatkit threads.list",
        "chatkit threads.get_by_id",
        "chatkit threads.create",
    ]


def test_without_opentelemetry_the_library_imports_and_makes_no_spans(
    tmp_path: t.Any, spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    code = (
        "import sys; sys.modules['opentelemetry'] = None\n"
        "from flask_chatkit import tracing\n"
        "assert not tracing.enabled()\n"
        "assert tracing.start_request('threads.list', None) is None\n"
        "assert tracing.start_model_call(model='m', conversation_id=None) is None\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
    # in this process: as if the package were missing, a stream runs as before
    monkeypatch.setattr(tracing, "trace", None)
    app = make_app("memory", tmp_path)

    @app.extensions["chatkit"].respond
    def respond(thread: t.Any, message: t.Any, context: t.Any) -> t.Any:
        yield from stream_text(thread, "an answer")

    ex = create(logged_in(app, "alice"), "hi")
    assert ex.status == 200 and ex.types[-1] == "thread.item.done"
    assert spans.get_finished_spans() == ()


def test_with_the_api_but_no_sdk_streams_are_left_alone() -> None:
    code = (
        "from flask_chatkit import tracing\n"
        "assert tracing.enabled()\n"
        "assert tracing.start_request('threads.create', None) is None\n"
        "assert tracing.start_model_call(model='m', conversation_id='thr_1') is None\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_tool_spans_hold_arguments_and_result_only_with_trace_content_and_mark_failures(
    tmp_path: t.Any, llm: t.Any, spans: InMemorySpanExporter
) -> None:
    assistant = Assistant("You are a test assistant.")

    @assistant.tool()
    def weather(city: str) -> str:
        """The current weather in a city."""
        if city == "Atlantis":
            raise ValueError("no such city")
        return f"Sunny in {city}"

    app = assistant_app(tmp_path, llm, assistant, CHATKIT_TRACE_CONTENT=True, CHATKIT_TITLES=False)
    alice = logged_in(app, "alice")
    llm.script(
        tool_calls(call("weather", {"city": "Paris"}), call("weather", {"city": "Atlantis"})),
        text("Done."),
    )
    create(alice, "Weather?")
    by_city = {
        json.loads(t.cast(str, (s.attributes or {})["gen_ai.tool.call.arguments"]))["city"]: s
        for s in named(spans, "execute_tool ")
    }
    assert set(by_city) == {"Paris", "Atlantis"}
    paris, atlantis = by_city["Paris"], by_city["Atlantis"]
    assert (paris.attributes or {})["gen_ai.tool.call.result"] == "Sunny in Paris"
    assert paris.status.status_code is not StatusCode.ERROR
    assert atlantis.status.status_code is StatusCode.ERROR
    assert (atlantis.attributes or {})["error.type"] == "tool_error"
    assert "no such city" in t.cast(str, (atlantis.attributes or {})["gen_ai.tool.call.result"])
