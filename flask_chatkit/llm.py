"""Talk to a model through the official ``openai`` client, one shape for two APIs.

:func:`stream_model` calls the Responses API (``api="responses"``, OpenAI's
default) or Chat Completions (``api="chat"``, what vLLM, Ollama and LM Studio
serve) with streaming on, and turns either stream into the same few events:
:class:`TextDelta`, :class:`AnnotationFound`, :class:`ToolCallRequest`,
:class:`Refusal` and :class:`Finished`. Every failure, whether an HTTP error,
a timeout, or a stream that breaks off or cannot be parsed, becomes one
:class:`ModelError` with a :attr:`~ModelError.kind` the responder turns into a
localized message.

Closing the generator closes the upstream HTTP response at once, so a user who
leaves stops the tokens being generated (and paid for).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import typing as t

if t.TYPE_CHECKING:  # the openai package loads when a model is first called
    import openai

logger = logging.getLogger("flask_chatkit")

Api = t.Literal["responses", "chat"]


@dataclasses.dataclass
class TextDelta:
    """A chunk of the answer's text, in the order the model wrote it."""

    text: str


@dataclasses.dataclass
class AnnotationFound:
    """A citation: ``url``, ``title``, and where it ends in the text (``index``)."""

    url: str
    title: str
    index: int | None = None


@dataclasses.dataclass
class ToolCallRequest:
    """The model asks to call the tool ``name`` with JSON ``arguments``."""

    call_id: str
    name: str
    arguments: str  # JSON text, as the model wrote it


@dataclasses.dataclass
class Refusal:
    """The model declined to answer; ``text`` is its refusal message."""

    text: str


@dataclasses.dataclass
class Finished:
    """The answer ended: ``stop``, or ``length`` when cut off at the token limit,
    with the tokens the call used as the API reported them (0 when it did not)."""

    reason: str = "stop"  # "stop" or "length"
    input_tokens: int = 0
    output_tokens: int = 0
    #: The model that answered, as the API named it (may be more precise than asked).
    model: str | None = None
    #: The API's id of the response (``resp_…``, ``chatcmpl-…``), if it gave one.
    response_id: str | None = None


def _tokens(usage: t.Any, *names: str) -> int:
    """The first of *names* set on *usage* (an API usage object), as an int."""
    for name in names:
        value = getattr(usage, name, None)
        if isinstance(value, int):
            return value
    return 0


def _finished(reason: str, usage: t.Any, model: t.Any, response_id: t.Any = None) -> Finished:
    return Finished(
        reason,
        input_tokens=_tokens(usage, "input_tokens", "prompt_tokens"),
        output_tokens=_tokens(usage, "output_tokens", "completion_tokens"),
        model=model if isinstance(model, str) else None,
        response_id=response_id if isinstance(response_id, str) else None,
    )


ModelEvent = TextDelta | AnnotationFound | ToolCallRequest | Refusal | Finished

#: Failure kinds, and whether trying again may help.
RETRYABLE = {
    "timeout": True,
    "rate_limit": True,
    "upstream": True,
    "connection": True,
    "malformed": True,
    "content_filter": False,
    "bad_request": False,
    "config": False,
}


class ModelError(Exception):
    """The model could not answer. *kind* is a key of :data:`RETRYABLE`; *detail*
    is for the logs (never shown to users)."""

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind
        self.detail = detail

    @property
    def allow_retry(self) -> bool:
        return RETRYABLE.get(self.kind, False)


def classify(exc: BaseException) -> ModelError:
    """The :class:`ModelError` for an exception raised by the client or the stream."""
    if isinstance(exc, ModelError):
        return exc
    import openai

    try:  # the HTTP library under the openai client (httpx2 in openai >= 3)
        import httpx2 as httpx
    except ImportError:  # pragma: no cover - older openai releases
        import httpx  # type: ignore[no-redef]
    if isinstance(exc, (openai.APITimeoutError, httpx.TimeoutException)):
        return ModelError("timeout", str(exc))
    if isinstance(exc, openai.RateLimitError):
        return ModelError("rate_limit", str(exc))
    if isinstance(
        exc, (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError)
    ):
        return ModelError("config", f"HTTP {exc.status_code}")
    if isinstance(exc, openai.BadRequestError):
        code = str(getattr(exc, "code", "") or "")
        if "content" in code and ("filter" in code or "policy" in code):
            return ModelError("content_filter", code)
        return ModelError("bad_request", str(exc))
    if isinstance(exc, openai.APIStatusError):
        return ModelError("upstream", f"HTTP {exc.status_code}")
    if isinstance(exc, (openai.APIConnectionError, httpx.TransportError)):
        return ModelError("connection", str(exc))
    if isinstance(exc, openai.APIError):  # an error event inside the stream
        return ModelError("upstream", str(exc))
    if isinstance(exc, (ValueError, KeyError, TypeError, AttributeError, IndexError)):
        return ModelError("malformed", f"{type(exc).__name__}: {exc}")
    return ModelError("upstream", f"{type(exc).__name__}: {exc}")


def function_tools(tools: t.Sequence[t.Mapping[str, t.Any]], api: Api) -> list[dict[str, t.Any]]:
    """Tool specs (``name``, ``description``, ``parameters``) in *api*'s shape."""
    out = []
    for spec in tools:
        if api == "responses":
            out.append(
                {
                    "type": "function",
                    "name": spec["name"],
                    "description": spec.get("description") or "",
                    "parameters": spec["parameters"],
                    "strict": False,
                }
            )
        else:
            out.append(
                {
                    "type": "function",
                    "function": {
                        "name": spec["name"],
                        "description": spec.get("description") or "",
                        "parameters": spec["parameters"],
                    },
                }
            )
    return out


def tool_choice_for(choice: str | None, api: Api) -> t.Any:
    """``None`` (the model decides), ``"none"``, or a tool name to force."""
    if choice is None or choice in ("auto", "none", "required"):
        return choice
    if api == "responses":
        return {"type": "function", "name": choice}
    return {"type": "function", "function": {"name": choice}}


def stream_model(
    client: openai.OpenAI,
    *,
    api: Api,
    model: str,
    instructions: str,
    input: list[dict[str, t.Any]],
    tools: t.Sequence[t.Mapping[str, t.Any]] = (),
    tool_choice: str | None = None,
) -> t.Iterator[ModelEvent]:
    """Stream one model call as :data:`ModelEvent` values.

    :raises ModelError: for every failure, before or during the stream.
    """
    kwargs: dict[str, t.Any] = {}
    if tools:
        kwargs["tools"] = function_tools(tools, api)
        if tool_choice is not None:
            kwargs["tool_choice"] = tool_choice_for(tool_choice, api)
    # the items are built as plain dicts, in either API's shape: the client checks
    # nothing more than the server does, so they go through untyped
    stream: t.Any
    try:
        if api == "responses":
            if instructions:
                kwargs["instructions"] = instructions
            stream = client.responses.create(
                model=model, input=t.cast(t.Any, input), stream=True, store=False, **kwargs
            )
        else:
            messages = [{"role": "system", "content": instructions}] if instructions else []
            stream = client.chat.completions.create(
                model=model,
                messages=t.cast(t.Any, messages + input),
                stream=True,
                stream_options={"include_usage": True},  # a last chunk with the usage
                **kwargs,
            )
    except Exception as exc:
        raise classify(exc) from exc
    try:
        events = _responses_events(stream) if api == "responses" else _chat_events(stream)
        yield from events
    except GeneratorExit:
        raise
    except Exception as exc:
        raise classify(exc) from exc
    finally:
        stream.close()  # the user left, or we are done: stop the upstream at once


def _responses_events(stream: t.Iterable[t.Any]) -> t.Iterator[ModelEvent]:
    refusal: list[str] = []
    for event in stream:
        kind = getattr(event, "type", None)
        if kind == "response.output_text.delta":
            if event.delta:
                yield TextDelta(event.delta)
        elif kind == "response.output_text.annotation.added":
            found = _annotation(event.annotation)
            if found is not None:
                yield found
        elif kind == "response.refusal.delta":
            refusal.append(event.delta)
        elif kind == "response.refusal.done":
            yield Refusal(event.refusal or "".join(refusal))
            refusal = []
        elif kind == "response.output_item.done":
            item = event.item
            if getattr(item, "type", None) == "function_call":
                yield ToolCallRequest(item.call_id, item.name, item.arguments or "{}")
        elif kind == "response.completed":
            response = event.response
            yield _finished("stop", response.usage, response.model, response.id)
            return
        elif kind == "response.incomplete":
            details = getattr(event.response, "incomplete_details", None)
            reason = getattr(details, "reason", None) or "incomplete"
            if reason == "content_filter":
                raise ModelError("content_filter", reason)
            response = event.response
            yield _finished("length", response.usage, response.model, response.id)
            return
        elif kind == "response.failed":
            error = getattr(event.response, "error", None)
            raise ModelError("upstream", str(getattr(error, "message", "") or "failed"))
        elif kind == "error":
            raise ModelError("upstream", str(getattr(event, "message", "") or "error"))
    raise ModelError("malformed", "the stream ended before the response was complete")


def _annotation(raw: t.Any) -> AnnotationFound | None:
    data = raw if isinstance(raw, dict) else getattr(raw, "__dict__", {})
    if data.get("type") != "url_citation" or not data.get("url"):
        return None
    return AnnotationFound(
        url=str(data["url"]),
        title=str(data.get("title") or data["url"]),
        index=data.get("end_index"),
    )


def _chat_events(stream: t.Iterable[t.Any]) -> t.Iterator[ModelEvent]:
    calls: dict[int, dict[str, str]] = {}
    refusal: list[str] = []
    finish: str | None = None
    usage: t.Any = None
    model: t.Any = None
    response_id: t.Any = None
    for chunk in stream:
        usage = getattr(chunk, "usage", None) or usage
        model = getattr(chunk, "model", None) or model
        response_id = getattr(chunk, "id", None) or response_id
        if finish is not None:
            continue  # only the usage chunk (include_usage) comes after the finish
        for choice in chunk.choices or ():
            delta = choice.delta
            if delta is not None:
                if delta.content:
                    yield TextDelta(delta.content)
                if getattr(delta, "refusal", None):
                    refusal.append(delta.refusal)
                for call in delta.tool_calls or ():
                    slot = calls.setdefault(call.index, {"id": "", "name": "", "arguments": ""})
                    if call.id:
                        slot["id"] = call.id
                    if call.function is not None:
                        slot["name"] += call.function.name or ""
                        slot["arguments"] += call.function.arguments or ""
            reason = choice.finish_reason
            if reason is None:
                continue
            if reason == "content_filter":
                raise ModelError("content_filter", reason)
            if refusal:
                yield Refusal("".join(refusal))
            for index in sorted(calls):
                slot = calls[index]
                if not slot["name"]:
                    raise ModelError("malformed", "a tool call without a name")
                yield ToolCallRequest(
                    slot["id"] or f"call_{index}", slot["name"], slot["arguments"] or "{}"
                )
            finish = "length" if reason == "length" else "stop"
            break
    if finish is None:
        raise ModelError("malformed", "the stream ended without a finish reason")
    yield _finished(finish, usage, model, response_id)


def complete_text(
    client: openai.OpenAI,
    *,
    api: Api,
    model: str,
    instructions: str,
    text: str,
    on_usage: t.Callable[[Finished], None] | None = None,
) -> str:
    """One short, non-streamed answer (used for titles); *on_usage* gets the
    tokens it used.

    :raises ModelError: on any failure.
    """
    usage: t.Any
    response_id: t.Any
    try:
        if api == "responses":
            response = client.responses.create(
                model=model, instructions=instructions, input=text, store=False
            )
            answer, usage, used_model = response.output_text or "", response.usage, response.model
            response_id = response.id
        else:
            completion = client.chat.completions.create(
                model=model,
                messages=[
                    {"role": "system", "content": instructions},
                    {"role": "user", "content": text},
                ],
            )
            answer = completion.choices[0].message.content or ""
            usage, used_model, response_id = completion.usage, completion.model, completion.id
    except Exception as exc:
        raise classify(exc) from exc
    if on_usage is not None:
        on_usage(_finished("stop", usage, used_model, response_id))
    return answer


def parse_arguments(arguments: str) -> dict[str, t.Any]:
    """A tool call's arguments as a dict (``{}`` for blank).

    :raises ValueError: if they are not a JSON object.
    """
    if not arguments or not arguments.strip():
        return {}
    value = json.loads(arguments)
    if not isinstance(value, dict):
        raise ValueError("the arguments are not a JSON object")
    return value


__all__ = [
    "AnnotationFound",
    "Finished",
    "ModelError",
    "Refusal",
    "TextDelta",
    "ToolCallRequest",
    "classify",
    "complete_text",
    "stream_model",
]
