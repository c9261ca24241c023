"""A real HTTP server on loopback that plays an OpenAI-compatible model API.

It answers ``POST /v1/responses`` (the Responses API) and
``POST /v1/chat/completions`` (Chat Completions), streaming (Server-Sent Events)
or not, with wire-exact bodies that the official ``openai`` client parses into its
typed models. Point a real client at it; nothing is monkeypatched::

    from tests.llm_server import LLMServer, text, tool_calls, call, error

    with LLMServer() as llm:
        llm.script(text("Hello", " world"), tool_calls(call("lookup", {"q": "x"})))
        llm.script_sync(text("A title"))
        client = openai.OpenAI(base_url=llm.base_url, api_key="sk-test", max_retries=0)
        ...
        assert llm.stream_requests[0].body["model"] == "gpt-test"

Replies
    Each model request consumes one scripted reply: streaming requests (body
    ``"stream": true``) from the :meth:`LLMServer.script` queue, the others from the
    :meth:`LLMServer.script_sync` queue. When a queue is empty, ``llm.default`` (echo
    of the last user message) or ``llm.sync_default`` (``text("A short title")``)
    answers. A reply is built with one of the constructors below, or is a callable
    ``(body, path) -> reply`` evaluated when the request arrives. Every constructor is
    API-neutral: it renders for both endpoints, streaming or not.

    ``text``, ``tool_calls``/``call``, ``refusal``, ``content_filter`` complete
    normally; ``error`` answers an HTTP error with OpenAI's error JSON; ``hang``,
    ``stall``, ``malformed`` and ``truncated`` misbehave in the ways a real network
    or provider does.

Wire details
    Streams use HTTP/1.1 chunked transfer encoding with ``Connection: close``.
    Responses streams frame every event as ``event: <type>\\ndata: <json>\\n\\n`` with a
    ``sequence_number`` from 0; Chat Completions streams frame ``data: <json>\\n\\n``
    chunks and end with ``data: [DONE]\\n\\n``.

    Responses event order for ``text("a", "b")``::

        response.created, response.in_progress,
        response.output_item.added (message), response.content_part.added (output_text),
        response.output_text.delta x2, [response.output_text.annotation.added x k],
        response.output_text.done, response.content_part.done,
        response.output_item.done (message), response.completed

    and for ``tool_calls(call(...), call(...), text="t")`` the message above (output
    index 0) followed, per call, by::

        response.output_item.added (function_call, arguments ""),
        response.function_call_arguments.delta x2 or more,
        response.function_call_arguments.done, response.output_item.done (function_call)

    then ``response.completed`` carrying every item in ``output``.

Disconnects
    A streaming reply whose client goes away before the end (a failed write, or the
    socket seen closed while waiting between chunks) stops and is recorded in
    ``llm.disconnects`` as ``Disconnect(path, sent_events, at)`` where ``at`` is
    ``time.monotonic()``. ``hang`` and ``stall`` waits notice a closed client too
    (a streaming request that hangs and times out records ``sent_events=0``);
    non-streaming requests are never recorded there.
"""

from __future__ import annotations

import itertools
import json
import re
import select
import socket
import threading
import time
import traceback
import typing as t
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler

from .loopback import LoopbackAPI
from .loopback import QuietHandler
from .loopback import Recorded

__all__ = [
    "Call",
    "Disconnect",
    "LLMServer",
    "Recorded",
    "Reply",
    "call",
    "content_filter",
    "error",
    "hang",
    "malformed",
    "refusal",
    "stall",
    "text",
    "tool_calls",
    "truncated",
]

RESPONSES_PATH = "/v1/responses"
CHAT_PATH = "/v1/chat/completions"

_ids = itertools.count(1)  # process-wide, so ids never repeat between servers


def _new_id(prefix: str) -> str:
    return f"{prefix}_{next(_ids)}"


# --------------------------------------------------------------------------- replies


@dataclass(frozen=True)
class Call:
    """One function call the model asks for (built with :func:`call`)."""

    name: str
    arguments: dict[str, t.Any]
    call_id: str

    @property
    def arguments_json(self) -> str:
        return json.dumps(self.arguments)


@dataclass(frozen=True)
class Reply:
    """What the fake model answers to one request; build it with the constructors.

    ``kind`` is ``"turn"`` (an assistant turn: text or refusal, then function calls,
    then an ``ending``), ``"error"``, ``"hang"`` or ``"malformed"``.
    """

    kind: str
    chunks: tuple[str, ...] | None = None  # assistant text deltas; None: no message
    refusal: tuple[str, ...] | None = None  # refusal deltas (instead of text)
    calls: tuple[Call, ...] = ()
    delay: float = 0.0  # seconds between text deltas
    annotations: tuple[dict[str, t.Any], ...] = ()
    model: str | None = None
    # "completed", "content_filter", "truncated" or "stall"
    ending: str = "completed"
    seconds: float = 0.0  # hang / stall duration
    status: int = 200
    message: str = ""
    code: str | None = None
    type: str | None = None
    headers: tuple[tuple[str, str], ...] = ()

    @property
    def text(self) -> str:
        return "".join(self.chunks or ())

    @property
    def refusal_text(self) -> str:
        return "".join(self.refusal or ())


def text(
    *chunks: str,
    delay: float = 0.0,
    annotations: t.Iterable[dict[str, t.Any]] = (),
    model: str | None = None,
) -> Reply:
    """An assistant message whose text is *chunks* joined, one delta per chunk,
    *delay* seconds apart. *annotations* (``url_citation`` dicts) go into the
    Responses output (and its ``annotation.added`` events) and onto the non-streamed
    chat message. *model* overrides the ``model`` echoed from the request."""
    return Reply(
        "turn", chunks=tuple(chunks), delay=delay, annotations=tuple(annotations), model=model
    )


def call(name: str, arguments: dict[str, t.Any], call_id: str | None = None) -> Call:
    """A function call; *call_id* defaults to a unique ``call_<n>``."""
    return Call(name, dict(arguments), call_id or _new_id("call"))


def tool_calls(*calls: Call, text: str | None = None) -> Reply:
    """The model asks for these function calls, after the message *text* if given."""
    return Reply("turn", chunks=None if text is None else _words(text), calls=tuple(calls))


def error(
    status: int,
    message: str = "The fake model failed.",
    code: str | None = None,
    type: str | None = None,  # noqa: A002 - OpenAI's field name
    headers: dict[str, str] | None = None,
) -> Reply:
    """HTTP *status* with ``{"error": {"message", "type", "param": null, "code"}}``."""
    default_type = {
        400: "invalid_request_error",
        401: "invalid_request_error",
        429: "rate_limit_exceeded",
    }.get(status, "server_error")
    return Reply(
        "error",
        status=status,
        message=message,
        code=code,
        type=type or default_type,
        headers=tuple((headers or {}).items()),
    )


def hang(seconds: float) -> Reply:
    """Send nothing for *seconds* (or until the client leaves or the server stops),
    then close the connection without an answer."""
    return Reply("hang", seconds=seconds)


def stall(*chunks: str, after: float) -> Reply:
    """Stream these text deltas, send nothing for *after* seconds, then drop the
    connection without completing. Non-streaming: like ``hang(after)``."""
    return Reply("turn", chunks=tuple(chunks), ending="stall", seconds=after)


def malformed() -> Reply:
    """A 200 answer whose (SSE data or JSON) body is not JSON, then close."""
    return Reply("malformed")


def truncated(*chunks: str) -> Reply:
    """Text deltas, then the HTTP body ends cleanly with no completion event
    (Responses: no ``response.completed``; chat: no ``finish_reason``, no ``[DONE]``).
    Non-streaming: the JSON body is cut short (a transport error for the client)."""
    return Reply("turn", chunks=tuple(chunks), ending="truncated")


def content_filter(*chunks: str) -> Reply:
    """Text deltas, then the provider's content filter stops the answer (Responses:
    ``response.incomplete`` with reason ``content_filter``; chat: finish_reason
    ``content_filter``)."""
    return Reply("turn", chunks=tuple(chunks), ending="content_filter")


def refusal(reason: str) -> Reply:
    """The model refuses: a ``refusal`` content part (chat: ``delta.refusal``)."""
    return Reply("turn", refusal=_words(reason))


def _words(value: str) -> tuple[str, ...]:
    """*value* split after each run of spaces, so the pieces join back exactly."""
    return tuple(re.findall(r"\s*\S+\s*", value)) or (value,)


def _split(value: str) -> list[str]:
    """*value* (a JSON string, at least 2 chars) in two or three non-empty pieces."""
    if len(value) < 6:
        return [value[:1], value[1:]]
    third = len(value) // 3
    return [value[:third], value[third : 2 * third], value[2 * third :]]


def last_user_text(body: dict[str, t.Any], path: str) -> str:
    """The text of the last user message in a Responses ``input`` or chat ``messages``."""
    items = body.get("messages") if path == CHAT_PATH else body.get("input")
    if isinstance(items, str):
        return items
    for item in reversed(items or []):
        if not isinstance(item, dict) or item.get("role") != "user":
            continue
        content = item.get("content")
        if isinstance(content, str):
            return content
        return "".join(
            part.get("text", "")
            for part in content or []
            if part.get("type") in ("input_text", "text")
        )
    return ""


def echo(body: dict[str, t.Any], path: str) -> Reply:
    """The default streaming reply: ``"echo: " + <last user text>``, one word a delta."""
    return text(*_words("echo: " + last_user_text(body, path)))


def _title(body: dict[str, t.Any], path: str) -> Reply:
    return text("A short title")


# --------------------------------------------------------------------------- records


@dataclass
class Disconnect:
    path: str
    sent_events: int  # SSE events fully written before the client was seen gone
    at: float  # time.monotonic()


# --------------------------------------------------------------------------- rendering


class _Context:
    """Per-request ids and the request facts the renderers echo."""

    def __init__(self, body: dict[str, t.Any], reply: Reply) -> None:
        self.body = body
        self.model = reply.model or body.get("model") or "gpt-test"
        self.created = int(time.time())
        self.response_id = _new_id("resp")
        self.message_id = _new_id("msg")
        self.chat_id = f"chatcmpl-{next(_ids)}"
        self.call_item_ids = [_new_id("fc") for _ in reply.calls]
        self.input_tokens = max(1, len(json.dumps(body.get("input", body.get("messages")))) // 4)


def _usage(ctx: _Context, reply: Reply) -> dict[str, t.Any]:
    output = len(reply.chunks or ()) + len(reply.refusal or ()) + 5 * len(reply.calls)
    return {
        "input_tokens": ctx.input_tokens,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": ctx.input_tokens + output,
    }


def _response(
    ctx: _Context, status: str, output: list[dict[str, t.Any]], reply: Reply | None = None
) -> dict[str, t.Any]:
    """A Responses API ``Response`` object."""
    body = ctx.body
    done = status != "in_progress"
    return {
        "id": ctx.response_id,
        "object": "response",
        "created_at": ctx.created,
        "status": status,
        "background": False,
        "error": None,
        "incomplete_details": {"reason": "content_filter"} if status == "incomplete" else None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": ctx.model,
        "output": output,
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": {"effort": None, "summary": None},
        "store": body.get("store", True),
        "temperature": body.get("temperature", 1.0),
        "text": {"format": {"type": "text"}, "verbosity": "medium"},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": [
            {"strict": None, "description": None, **tool}
            if tool.get("type") == "function"
            else tool
            for tool in body.get("tools") or []
        ],
        "top_p": body.get("top_p", 1.0),
        "truncation": "disabled",
        "usage": _usage(ctx, reply) if done and reply else None,
        "user": body.get("user"),
        "metadata": body.get("metadata") or {},
        "completed_at": int(time.time()) if status == "completed" else None,
    }


def _message_item(ctx: _Context, reply: Reply, status: str, full: bool) -> dict[str, t.Any]:
    content: list[dict[str, t.Any]] = []
    if full:
        content = [_part(reply, full=True)]
    return {
        "id": ctx.message_id,
        "type": "message",
        "role": "assistant",
        "status": status,
        "content": content,
    }


def _part(reply: Reply, full: bool) -> dict[str, t.Any]:
    if reply.refusal is not None:
        return {"type": "refusal", "refusal": reply.refusal_text if full else ""}
    return {
        "type": "output_text",
        "text": reply.text if full else "",
        "annotations": list(reply.annotations) if full else [],
        "logprobs": [],
    }


def _call_item(ctx: _Context, reply: Reply, index: int, full: bool) -> dict[str, t.Any]:
    one = reply.calls[index]
    return {
        "id": ctx.call_item_ids[index],
        "type": "function_call",
        "call_id": one.call_id,
        "name": one.name,
        "arguments": one.arguments_json if full else "",
        "status": "completed" if full else "in_progress",
    }


def _final_output(ctx: _Context, reply: Reply) -> list[dict[str, t.Any]]:
    output = []
    if reply.chunks is not None or reply.refusal is not None:
        status = "incomplete" if reply.ending == "content_filter" else "completed"
        output.append(_message_item(ctx, reply, status, full=True))
    output += [_call_item(ctx, reply, i, full=True) for i in range(len(reply.calls))]
    return output


# A rendered stream is a sequence of steps: ("event", payload-bytes), ("pause", seconds)
# or ("end", "clean" | "abrupt").
Step = tuple[str, t.Any]


def _sse(kind: str, data: dict[str, t.Any]) -> bytes:
    return f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode()


def responses_stream(ctx: _Context, reply: Reply) -> t.Iterator[Step]:
    """The Responses API event stream for a ``turn`` reply."""
    numbers = itertools.count()

    def event(kind: str, **data: t.Any) -> Step:
        return "event", _sse(kind, {"type": kind, "sequence_number": next(numbers), **data})

    yield event("response.created", response=_response(ctx, "in_progress", []))
    yield event("response.in_progress", response=_response(ctx, "in_progress", []))
    index = 0
    if reply.chunks is not None or reply.refusal is not None:
        where = {"item_id": ctx.message_id, "output_index": 0}
        yield event(
            "response.output_item.added",
            output_index=0,
            item=_message_item(ctx, reply, "in_progress", full=False),
        )
        yield event(
            "response.content_part.added", **where, content_index=0, part=_part(reply, full=False)
        )
        if reply.refusal is not None:
            for piece in reply.refusal:
                yield event("response.refusal.delta", **where, content_index=0, delta=piece)
        for number, piece in enumerate(reply.chunks or ()):
            if number and reply.delay:
                yield "pause", reply.delay
            yield event(
                "response.output_text.delta", **where, content_index=0, delta=piece, logprobs=[]
            )
        if reply.ending == "stall":
            yield "pause", reply.seconds
            yield "end", "abrupt"
            return
        if reply.ending == "truncated":
            yield "end", "clean"
            return
        if reply.refusal is not None:
            yield event(
                "response.refusal.done", **where, content_index=0, refusal=reply.refusal_text
            )
        else:
            for number, annotation in enumerate(reply.annotations):
                yield event(
                    "response.output_text.annotation.added",
                    **where,
                    content_index=0,
                    annotation_index=number,
                    annotation=annotation,
                )
            yield event(
                "response.output_text.done", **where, content_index=0, text=reply.text, logprobs=[]
            )
        yield event(
            "response.content_part.done", **where, content_index=0, part=_part(reply, full=True)
        )
        status = "incomplete" if reply.ending == "content_filter" else "completed"
        yield event(
            "response.output_item.done",
            output_index=0,
            item=_message_item(ctx, reply, status, full=True),
        )
        index = 1
    elif reply.ending == "stall":
        yield "pause", reply.seconds
        yield "end", "abrupt"
        return
    elif reply.ending == "truncated":
        yield "end", "clean"
        return
    for number in range(len(reply.calls)):
        where = {"item_id": ctx.call_item_ids[number], "output_index": index + number}
        yield event(
            "response.output_item.added",
            output_index=index + number,
            item=_call_item(ctx, reply, number, full=False),
        )
        for piece in _split(reply.calls[number].arguments_json):
            yield event("response.function_call_arguments.delta", **where, delta=piece)
        yield event(
            "response.function_call_arguments.done",
            **where,
            arguments=reply.calls[number].arguments_json,
        )
        yield event(
            "response.output_item.done",
            output_index=index + number,
            item=_call_item(ctx, reply, number, full=True),
        )
    if reply.ending == "content_filter":
        yield event(
            "response.incomplete",
            response=_response(ctx, "incomplete", _final_output(ctx, reply), reply),
        )
    else:
        yield event(
            "response.completed",
            response=_response(ctx, "completed", _final_output(ctx, reply), reply),
        )
    yield "end", "clean"


def _chat_usage(ctx: _Context, reply: Reply) -> dict[str, t.Any]:
    usage = _usage(ctx, reply)
    return {
        "prompt_tokens": usage["input_tokens"],
        "completion_tokens": usage["output_tokens"],
        "total_tokens": usage["total_tokens"],
    }


def chat_stream(ctx: _Context, reply: Reply) -> t.Iterator[Step]:
    """The Chat Completions chunk stream for a ``turn`` reply."""

    def chunk(delta: dict[str, t.Any], finish: str | None = None) -> Step:
        data = {
            "id": ctx.chat_id,
            "object": "chat.completion.chunk",
            "created": ctx.created,
            "model": ctx.model,
            "system_fingerprint": None,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        return "event", f"data: {json.dumps(data)}\n\n".encode()

    if reply.refusal is not None:
        yield chunk({"role": "assistant", "content": None, "refusal": ""})
        for piece in reply.refusal:
            yield chunk({"refusal": piece})
    else:
        yield chunk({"role": "assistant", "content": "" if reply.chunks is not None else None})
        for number, piece in enumerate(reply.chunks or ()):
            if number and reply.delay:
                yield "pause", reply.delay
            yield chunk({"content": piece})
    if reply.ending == "stall":
        yield "pause", reply.seconds
        yield "end", "abrupt"
        return
    if reply.ending == "truncated":
        yield "end", "clean"
        return
    for number, one in enumerate(reply.calls):
        yield chunk(
            {
                "tool_calls": [
                    {
                        "index": number,
                        "id": one.call_id,
                        "type": "function",
                        "function": {"name": one.name, "arguments": ""},
                    }
                ]
            }
        )
        for piece in _split(one.arguments_json):
            yield chunk({"tool_calls": [{"index": number, "function": {"arguments": piece}}]})
    finish = (
        "tool_calls"
        if reply.calls
        else "content_filter"
        if reply.ending == "content_filter"
        else "stop"
    )
    yield chunk({}, finish)
    if (ctx.body.get("stream_options") or {}).get("include_usage"):
        data = {
            "id": ctx.chat_id,
            "object": "chat.completion.chunk",
            "created": ctx.created,
            "model": ctx.model,
            "choices": [],
            "usage": _chat_usage(ctx, reply),
        }
        yield "event", f"data: {json.dumps(data)}\n\n".encode()
    yield "event", b"data: [DONE]\n\n"
    yield "end", "clean"


def chat_completion(ctx: _Context, reply: Reply) -> dict[str, t.Any]:
    """The non-streamed ``ChatCompletion`` for a ``turn`` reply."""
    message: dict[str, t.Any] = {
        "role": "assistant",
        "content": None if reply.chunks is None else reply.text,
        "refusal": reply.refusal_text if reply.refusal is not None else None,
        "annotations": [
            {
                "type": "url_citation",
                "url_citation": {
                    key: a[key] for key in ("url", "title", "start_index", "end_index")
                },
            }
            for a in reply.annotations
            if a.get("type") == "url_citation"
        ],
    }
    if reply.calls:
        message["tool_calls"] = [
            {
                "id": one.call_id,
                "type": "function",
                "function": {"name": one.name, "arguments": one.arguments_json},
            }
            for one in reply.calls
        ]
    finish = (
        "tool_calls"
        if reply.calls
        else "content_filter"
        if reply.ending == "content_filter"
        else "stop"
    )
    return {
        "id": ctx.chat_id,
        "object": "chat.completion",
        "created": ctx.created,
        "model": ctx.model,
        "system_fingerprint": None,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
        "usage": _chat_usage(ctx, reply),
    }


# --------------------------------------------------------------------------- server


class _Gone(Exception):
    """The client closed its connection."""


class LLMServer(LoopbackAPI):
    """Start with ``with LLMServer() as llm``; point the client at ``llm.base_url``."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._queue: list[t.Any] = []
        self._sync_queue: list[t.Any] = []
        self.requests: list[Recorded] = []
        self.disconnects: list[Disconnect] = []
        self._seen_disconnects = 0
        self.default: t.Callable[[dict[str, t.Any], str], t.Any] = echo
        self.sync_default: t.Callable[[dict[str, t.Any], str], t.Any] = _title
        server = self

        class Handler(QuietHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                server._handle(self)

            def do_GET(self) -> None:  # noqa: N802
                server._handle(self)

        super().__init__(Handler, poll_interval=0.01)

    # -- public API

    def script(self, *replies: t.Any) -> None:
        """Queue replies for streaming requests, first in first out."""
        with self._lock:
            self._queue.extend(replies)

    def script_sync(self, *replies: t.Any) -> None:
        """Queue replies for non-streaming requests, first in first out."""
        with self._lock:
            self._sync_queue.extend(replies)

    @property
    def stream_requests(self) -> list[Recorded]:
        return [r for r in self.requests if isinstance(r.body, dict) and r.body.get("stream")]

    @property
    def sync_requests(self) -> list[Recorded]:
        return [r for r in self.requests if not (isinstance(r.body, dict) and r.body.get("stream"))]

    def wait_requests(self, n: int, timeout: float = 5.0) -> bool:
        """Whether at least *n* requests arrived within *timeout* seconds."""
        with self._lock:
            return self._lock.wait_for(lambda: len(self.requests) >= n, timeout)

    def wait_disconnect(self, timeout: float = 5.0) -> Disconnect | None:
        """The next disconnect not yet returned by this method, or None after *timeout*."""
        with self._lock:
            if not self._lock.wait_for(
                lambda: len(self.disconnects) > self._seen_disconnects, timeout
            ):
                return None
            self._seen_disconnects += 1
            return self.disconnects[self._seen_disconnects - 1]

    def reset(self) -> None:
        """Clear queues, records and defaults."""
        with self._lock:
            self._queue.clear()
            self._sync_queue.clear()
            self.requests.clear()
            self.disconnects.clear()
            self._seen_disconnects = 0
            self.default = echo
            self.sync_default = _title

    # -- request handling

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        raw = handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        path = handler.path.split("?", 1)[0]
        with self._lock:
            self.requests.append(
                Recorded(
                    handler.command, path, {k.lower(): v for k, v in handler.headers.items()}, body
                )
            )
            self._lock.notify_all()
        if handler.command != "POST" or path not in (RESPONSES_PATH, CHAT_PATH):
            self._send_json(
                handler,
                404,
                _error_body(f"Unknown path {path}", "not_found", "invalid_request_error"),
            )
            return
        if not isinstance(body, dict):
            self._send_json(
                handler,
                400,
                _error_body("We could not parse the JSON body.", None, "invalid_request_error"),
            )
            return
        streaming = bool(body.get("stream"))
        with self._lock:
            queue = self._queue if streaming else self._sync_queue
            reply = queue.pop(0) if queue else (self.default if streaming else self.sync_default)
        try:
            while callable(reply):
                reply = reply(body, path)
            if not isinstance(reply, Reply):
                raise TypeError(f"not a reply: {reply!r}")
        except Exception as exc:  # a broken test script: say so loudly, on both sides
            traceback.print_exc()
            self._send_json(
                handler,
                500,
                _error_body(
                    f"LLMServer reply failed: {exc!r}", "llm_server_script", "server_error"
                ),
            )
            return
        try:
            self._answer(handler, path, body, reply, streaming)
        except (_Gone, ConnectionError):
            pass  # recorded where it mattered (a stream's events); nothing more to send
        handler.close_connection = True

    def _answer(
        self,
        handler: BaseHTTPRequestHandler,
        path: str,
        body: dict[str, t.Any],
        reply: Reply,
        streaming: bool,
    ) -> None:
        if reply.kind == "error":
            self._send_json(
                handler,
                reply.status,
                _error_body(reply.message, reply.code, reply.type),
                dict(reply.headers),
            )
            return
        if reply.kind == "hang" or (reply.ending == "stall" and not streaming):
            self._wait(handler, path, reply.seconds, sent=0 if streaming else None)
            return
        if not streaming:
            self._answer_sync(handler, path, body, reply)
            return
        try:
            self._start_stream(handler)
        except ConnectionError:
            self._gone(path, 0)
        if reply.kind == "malformed":
            bad = b"event: response.created\n" if path == RESPONSES_PATH else b""
            self._write_chunk(handler, bad + b"data: {not json\n\n")
            return  # no terminating chunk: the connection just closes
        ctx = _Context(body, reply)
        steps = responses_stream(ctx, reply) if path == RESPONSES_PATH else chat_stream(ctx, reply)
        sent = 0
        for action, value in steps:
            if self.stopping.is_set():
                return
            if action == "pause":
                self._wait(handler, path, value, sent)
            elif action == "event":
                if _closed(handler.connection):
                    self._gone(path, sent)
                try:
                    self._write_chunk(handler, value)
                except ConnectionError:  # BrokenPipe, ConnectionReset, ConnectionAborted
                    self._gone(path, sent)
                sent += 1
            elif value == "clean":
                handler.wfile.write(b"0\r\n\r\n")
                return
            else:
                return

    def _answer_sync(
        self, handler: BaseHTTPRequestHandler, path: str, body: dict[str, t.Any], reply: Reply
    ) -> None:
        if reply.kind == "malformed":
            self._send_raw(handler, 200, b"{not json", "application/json")
            return
        ctx = _Context(body, reply)
        if path == RESPONSES_PATH:
            status = "incomplete" if reply.ending == "content_filter" else "completed"
            answer = _response(ctx, status, _final_output(ctx, reply), reply)
        else:
            answer = chat_completion(ctx, reply)
        data = json.dumps(answer).encode()
        if reply.ending == "truncated":
            # Promise the whole body, send half of it, close: a transport error.
            self._send_raw(
                handler, 200, data[: len(data) // 2], "application/json", length=len(data)
            )
            return
        self._send_raw(handler, 200, data, "application/json")

    def _wait(
        self, handler: BaseHTTPRequestHandler, path: str, seconds: float, sent: int | None
    ) -> None:
        """Sleep *seconds*; raise _Gone if the client leaves (and record it as a
        Disconnect after *sent* events, unless *sent* is None: not a streaming request)."""
        deadline = time.monotonic() + seconds
        sock = handler.connection
        while not self.stopping.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            readable, _, _ = select.select([sock], [], [], min(left, 0.05))
            if readable:
                if _closed(sock):
                    self._gone(path, sent)
                time.sleep(min(left, 0.05))  # unexpected bytes: don't spin on them

    def _gone(self, path: str, sent: int | None) -> t.NoReturn:
        if sent is None:
            raise _Gone
        with self._lock:
            self.disconnects.append(Disconnect(path, sent, time.monotonic()))
            self._lock.notify_all()
        raise _Gone

    # -- wire helpers

    @staticmethod
    def _start_stream(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream; charset=utf-8")
        handler.send_header("Cache-Control", "no-cache")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.send_header("Connection", "close")
        handler.send_header("x-request-id", "req_llm_fake")
        handler.end_headers()

    @staticmethod
    def _write_chunk(handler: BaseHTTPRequestHandler, data: bytes) -> None:
        handler.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        handler.wfile.flush()

    @classmethod
    def _send_json(
        cls,
        handler: BaseHTTPRequestHandler,
        status: int,
        body: t.Any,
        headers: dict[str, str] | None = None,
    ) -> None:
        cls._send_raw(handler, status, json.dumps(body).encode(), "application/json", headers)

    @staticmethod
    def _send_raw(
        handler: BaseHTTPRequestHandler,
        status: int,
        data: bytes,
        content_type: str,
        headers: dict[str, str] | None = None,
        length: int | None = None,
    ) -> None:
        handler.send_response(status)
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(data) if length is None else length))
        handler.send_header("Connection", "close")
        handler.send_header("x-request-id", "req_llm_fake")
        handler.end_headers()
        handler.wfile.write(data)
        handler.wfile.flush()


def _error_body(message: str, code: str | None, type_: str | None) -> dict[str, t.Any]:
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


def _closed(sock: socket.socket) -> bool:
    """Whether the peer closed *sock* (readable with nothing to read), without blocking."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        return bool(readable) and sock.recv(1, socket.MSG_PEEK) == b""
    except (ConnectionResetError, ConnectionAbortedError, OSError):
        return True
