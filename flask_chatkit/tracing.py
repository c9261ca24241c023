"""OpenTelemetry traces of ChatKit requests and model calls (optional; no Flask here).

With ``opentelemetry-api`` installed (``pip install flask-chatkit[otel]``) every
ChatKit request is a span ``chatkit {request type}`` (attributes
``chatkit.request.type`` and ``chatkit.thread.id``) that lasts as long as its
answer: for a stream, until the stream ends, is cancelled or its client leaves.
Each model call of the built-in responder is a child span ``chat {model}``
(kind ``CLIENT``) following the OpenTelemetry GenAI semantic conventions:
``gen_ai.operation.name``, ``gen_ai.provider.name`` (and the older
``gen_ai.system``), ``gen_ai.request.model``, ``gen_ai.response.model``,
``gen_ai.usage.input_tokens`` / ``output_tokens``, ``gen_ai.conversation.id``
(the thread id), ``gen_ai.response.finish_reasons``, and ``error.type`` with an
error status when the call fails. Message content is recorded only when the app
opts in (``CHATKIT_TRACE_CONTENT``), as the conventions' ``gen_ai.system_instructions``,
``gen_ai.input.messages`` and ``gen_ai.output.messages`` attributes.

A stream runs in a generator after the view has returned, often in a greenlet of
its own, where the request's OpenTelemetry context is not current: each step of
the stream runs with the request span's context attached explicitly, so that
spans started inside it (the model calls here, or an app's own instrumentation)
are children of the request span.

Without the package every function here is a no-op that costs one ``None`` check;
with the API but no SDK (no tracer provider set), a request costs one
non-recording span and its stream is left as it is.
"""

from __future__ import annotations

import json
import typing as t

try:
    from opentelemetry import context as otel_context
    from opentelemetry import trace
except ImportError:  # the optional extra is not installed: tracing is off
    otel_context = None  # type: ignore[assignment]
    trace = None  # type: ignore[assignment]

if t.TYPE_CHECKING:
    from .llm import Finished
    from .llm import ModelEvent
    from .turn_engine import StreamResult

#: The instrumentation scope's name.
TRACER_NAME = "flask_chatkit"
#: ``gen_ai.provider.name`` of every model call (the OpenAI API, also when served
#: by an OpenAI-compatible server).
PROVIDER = "openai"

_tracer: t.Any = None


def enabled() -> bool:
    """Whether ``opentelemetry-api`` is installed (spans are made)."""
    return trace is not None


def _get_tracer() -> t.Any:
    global _tracer
    if _tracer is None:
        # a proxy until the app sets a tracer provider; it follows the provider then
        _tracer = trace.get_tracer(TRACER_NAME)
    return _tracer


# --- requests ----------------------------------------------------------------------


class RequestSpan:
    """The span of one ChatKit request; see :func:`start_request`."""

    def __init__(self, request_type: str, thread_id: str | None) -> None:
        attributes = {"chatkit.request.type": request_type}
        if thread_id:
            attributes["chatkit.thread.id"] = thread_id
        self.span = _get_tracer().start_span(
            f"chatkit {request_type}", kind=trace.SpanKind.INTERNAL, attributes=attributes
        )
        self.context = trace.set_span_in_context(self.span)

    def fail(self, exc: BaseException) -> None:
        """Mark the request failed by *exc* (a request error's code as ``error.type``)."""
        code = getattr(exc, "code", None)
        kind = str(code) if code else type(exc).__qualname__
        self.span.set_attribute("error.type", kind)
        self.span.set_status(trace.Status(trace.StatusCode.ERROR, kind))

    def end(self) -> None:
        self.span.end()

    def trace_stream(self, result: StreamResult) -> StreamResult:
        """Have *result* run each step with this span current, and end the span
        when the stream ends (also when it is closed: a cancel or a departed client)."""
        result.wrap(self._steps)
        return result

    def _steps(self, events: t.Generator[t.Any, None, None]) -> t.Generator[t.Any, None, None]:
        span = self.span
        finished = False
        try:
            while True:
                token = otel_context.attach(self.context)
                try:
                    event = next(events)
                except StopIteration:
                    finished = True
                    return
                finally:
                    otel_context.detach(token)
                kind = getattr(event, "type", None)
                if kind == "thread.created":
                    span.set_attribute("chatkit.thread.id", event.thread.id)
                elif kind == "error":
                    code = str(getattr(event, "code", None) or "custom")
                    span.set_attribute("error.type", code)
                    span.set_status(trace.Status(trace.StatusCode.ERROR, code))
                yield event
        finally:
            if not finished:  # closed early, killed, or failed: the core's cancel path runs
                span.set_attribute("chatkit.stream.cancelled", True)
                token = otel_context.attach(self.context)
                try:
                    events.close()
                finally:
                    otel_context.detach(token)
            span.end()


def start_request(request_type: str, thread_id: str | None) -> RequestSpan | None:
    """A started span for a ChatKit request, child of the current span (an HTTP
    server span, if the app instruments Flask); ``None`` without OpenTelemetry."""
    if trace is None:
        return None
    started = RequestSpan(request_type, thread_id)
    if not started.span.get_span_context().is_valid:
        return None  # the API without an SDK: nothing is recorded, nothing to carry
    return started


# --- model calls -------------------------------------------------------------------


class ModelCall:
    """The span of one model call; :meth:`observe` its events, then :meth:`end`."""

    def __init__(
        self,
        *,
        model: str,
        conversation_id: str | None,
        client: t.Any = None,
        content: bool = False,
    ) -> None:
        attributes: dict[str, t.Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": PROVIDER,
            "gen_ai.system": PROVIDER,  # the name before semantic conventions 1.37
            "gen_ai.request.model": model,
        }
        if conversation_id:
            attributes["gen_ai.conversation.id"] = conversation_id
        url = getattr(client, "base_url", None)
        host = getattr(url, "host", None)
        if isinstance(host, str) and host:
            attributes["server.address"] = host
            port = getattr(url, "port", None)
            if isinstance(port, int):
                attributes["server.port"] = port
        self.content = content
        self.text: list[str] = []
        self.calls: list[dict[str, t.Any]] = []
        self.span = _get_tracer().start_span(
            f"chat {model}", kind=trace.SpanKind.CLIENT, attributes=attributes
        )

    def record_input(self, instructions: str, messages: t.Sequence[t.Mapping[str, t.Any]]) -> None:
        """The instructions and input messages, when content is recorded."""
        if not self.content:
            return
        if instructions:
            self.span.set_attribute(
                "gen_ai.system_instructions",
                _dumps([{"type": "text", "content": instructions}]),
            )
        self.span.set_attribute("gen_ai.input.messages", _dumps(input_messages(messages)))

    def observe(self, event: ModelEvent) -> None:
        """Note one event of the model's answer."""
        from . import llm

        if isinstance(event, llm.Finished):
            self.finish(event, answer=None)
        elif isinstance(event, llm.ToolCallRequest):
            self.calls.append(
                {
                    "type": "tool_call",
                    "id": event.call_id,
                    "name": event.name,
                    "arguments": event.arguments,
                }
            )
        elif self.content and isinstance(event, (llm.TextDelta, llm.Refusal)):
            self.text.append(event.text)

    def finish(self, used: Finished, answer: str | None) -> None:
        """The call's end: finish reason, response model and token usage."""
        span = self.span
        reason = "tool_calls" if self.calls else used.reason
        span.set_attribute("gen_ai.response.finish_reasons", [reason])
        if used.model:
            span.set_attribute("gen_ai.response.model", used.model)
        if used.response_id:
            span.set_attribute("gen_ai.response.id", used.response_id)
        span.set_attribute("gen_ai.usage.input_tokens", used.input_tokens)
        span.set_attribute("gen_ai.usage.output_tokens", used.output_tokens)
        if self.content:
            if answer is not None:
                self.text.append(answer)
            parts: list[dict[str, t.Any]] = []
            if self.text:
                parts.append({"type": "text", "content": "".join(self.text)})
            parts.extend(self.calls)
            message = {"role": "assistant", "parts": parts, "finish_reason": reason}
            span.set_attribute("gen_ai.output.messages", _dumps([message]))

    def fail(self, kind: str) -> None:
        """The call failed; *kind* is the :class:`~flask_chatkit.llm.ModelError` kind."""
        self.span.set_attribute("error.type", kind)
        self.span.set_status(trace.Status(trace.StatusCode.ERROR, kind))

    def end(self) -> None:
        self.span.end()


def start_model_call(
    *, model: str, conversation_id: str | None, client: t.Any = None, content: bool = False
) -> ModelCall | None:
    """A started ``chat {model}`` span, child of the current span (the request's,
    inside a traced stream); ``None`` without OpenTelemetry. *content*: record
    the messages (``CHATKIT_TRACE_CONTENT``)."""
    if trace is None:
        return None
    call = ModelCall(model=model, conversation_id=conversation_id, client=client, content=content)
    if not call.span.get_span_context().is_valid:
        return None  # the API without an SDK
    return call


def traced_model_stream(
    events: t.Iterator[ModelEvent], call: ModelCall | None
) -> t.Iterator[ModelEvent]:
    """*events* (a :func:`~flask_chatkit.llm.stream_model` stream) with *call*
    noting each one, failing on a :class:`~flask_chatkit.llm.ModelError` and
    ending when the stream ends or is closed."""
    if call is None:
        yield from events
        return
    from . import llm

    try:
        for event in events:
            call.observe(event)
            yield event
    except llm.ModelError as exc:
        call.fail(exc.kind)
        raise
    finally:
        call.end()


# --- tool calls --------------------------------------------------------------------


class ToolCall:
    """The ``execute_tool {name}`` span of one tool the model called."""

    def __init__(
        self, *, name: str, call_id: str, conversation_id: str | None, content: bool
    ) -> None:
        attributes: dict[str, t.Any] = {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": name,
            "gen_ai.tool.call.id": call_id,
            "gen_ai.tool.type": "function",
        }
        if conversation_id:
            attributes["gen_ai.conversation.id"] = conversation_id
        self.content = content
        self.span = _get_tracer().start_span(
            f"execute_tool {name}", kind=trace.SpanKind.INTERNAL, attributes=attributes
        )

    def finish(self, arguments: t.Any, output: str, is_error: bool) -> None:
        """The tool's end: an error status when it failed; with content recorded,
        its arguments and result (opt-in attributes of the conventions)."""
        if self.content:
            self.span.set_attribute("gen_ai.tool.call.arguments", _dumps(arguments))
            self.span.set_attribute("gen_ai.tool.call.result", output)
        if is_error:
            self.span.set_attribute("error.type", "tool_error")
            self.span.set_status(trace.Status(trace.StatusCode.ERROR, "tool_error"))
        self.span.end()


def start_tool_call(
    *, name: str, call_id: str, conversation_id: str | None, content: bool = False
) -> ToolCall | None:
    """A started ``execute_tool {name}`` span, child of the current span; ``None``
    without OpenTelemetry (or with the API but no SDK)."""
    if trace is None:
        return None
    call = ToolCall(name=name, call_id=call_id, conversation_id=conversation_id, content=content)
    if not call.span.get_span_context().is_valid:
        return None
    return call


def _dumps(value: t.Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


def input_messages(items: t.Sequence[t.Mapping[str, t.Any]]) -> list[dict[str, t.Any]]:
    """Model input in either API's shape (Responses items or Chat messages) as the
    GenAI conventions' messages: ``{"role", "parts": [...]}``; text, tool calls and
    tool results (other parts, such as images, are left out)."""
    out: list[dict[str, t.Any]] = []
    for item in items:
        kind = item.get("type")
        if kind == "function_call":
            part = {
                "type": "tool_call",
                "id": item.get("call_id"),
                "name": item.get("name"),
                "arguments": item.get("arguments"),
            }
            out.append({"role": "assistant", "parts": [part]})
        elif kind == "function_call_output":
            part = {"type": "tool_call_response", "id": item.get("call_id")}
            out.append({"role": "tool", "parts": [{**part, "response": item.get("output")}]})
        elif item.get("role") == "tool":
            part = {"type": "tool_call_response", "id": item.get("tool_call_id")}
            out.append({"role": "tool", "parts": [{**part, "response": item.get("content")}]})
        elif "role" in item:
            parts = _text_parts(item.get("content"))
            for call in item.get("tool_calls") or ():
                function = call.get("function") or {}
                parts.append(
                    {
                        "type": "tool_call",
                        "id": call.get("id"),
                        "name": function.get("name"),
                        "arguments": function.get("arguments"),
                    }
                )
            out.append({"role": item["role"], "parts": parts})
    return out


def _text_parts(content: t.Any) -> list[dict[str, t.Any]]:
    if isinstance(content, str):
        return [{"type": "text", "content": content}]
    parts = []
    for part in content or ():
        if isinstance(part, t.Mapping) and isinstance(part.get("text"), str):
            parts.append({"type": "text", "content": part["text"]})
    return parts


__all__ = [
    "ModelCall",
    "RequestSpan",
    "enabled",
    "input_messages",
    "start_model_call",
    "start_request",
    "traced_model_stream",
]
