"""Helpers for testing apps that use flask_chatkit.

:class:`ChatKitClient` is a Flask test client that speaks the protocol and judges
every exchange: ``app.test_client_class = ChatKitClient``, then
``client.chatkit("threads.list", limit=5)`` returns an :class:`Exchange` whose
JSON body or SSE events have been checked. With the official ``openai-chatkit``
package installed, requests, responses and events are also validated against its
pydantic models; without it only the framing and flask_chatkit's output rules are.
"""

from __future__ import annotations

import json
import re
import typing as t
import warnings

from flask.testing import FlaskClient


def chatkit_request(
    type: str, metadata: dict[str, t.Any] | None = None, **params: t.Any
) -> dict[str, t.Any]:
    """A request body: ``chatkit_request("threads.list", limit=5)``."""
    body: dict[str, t.Any] = {"type": type, "params": params}
    if metadata is not None:
        body["metadata"] = metadata
    return body


def user_input(
    text: str, *, attachments: list[str] | None = None, **extra: t.Any
) -> dict[str, t.Any]:
    """A ``UserMessageInput`` with one text part."""
    return {
        "content": [{"type": "input_text", "text": text}],
        "attachments": attachments or [],
        "inference_options": {},
        **extra,
    }


def parse_sse(data: bytes | str) -> list[dict[str, t.Any]]:
    """The JSON events of an SSE body (comments such as ``: ping`` are skipped).

    :raises ValueError: if a frame is not a single ``data:`` line.
    """
    if isinstance(data, bytes):
        data = data.decode()
    events = []
    for frame in data.split("\n\n"):
        if not frame.strip():
            continue
        lines = [line for line in frame.split("\n") if not line.startswith(":")]
        if not lines:
            continue
        if len(lines) != 1 or not lines[0].startswith("data: "):
            raise ValueError(f"Not a ChatKit SSE frame: {frame!r}")
        events.append(json.loads(lines[0][len("data: ") :]))
    return events


# --- the judge of an exchange ----------------------------------------------------------

#: Request types answered with an SSE stream.
STREAMING = frozenset(
    {
        "threads.create",
        "threads.add_user_message",
        "threads.add_client_tool_output",
        "threads.add_structured_input",
        "threads.retry_after_item",
        "threads.custom_action",
    }
)
#: Request types answered with an empty JSON object.
EMPTY_RESPONSE = frozenset({"threads.delete", "items.feedback", "attachments.delete"})
#: Request types answered with a JSON model, and the official model's name.
JSON_RESPONSE = {
    "threads.get_by_id": "Thread",
    "threads.update": "Thread",
    "threads.list": "Page[Thread]",
    "items.list": "Page[ThreadItem]",
    "attachments.create": "Attachment",
    "threads.sync_custom_action": "SyncCustomActionResponse",
    "input.transcribe": "TranscriptionResult",
}
_HIDDEN = {"hidden_context_item", "sdk_hidden_context"}
# Keys whose values are app data, where a JSON null is legitimate.
_FREE_FORM = {"arguments", "output", "data", "payload", "result", "content_data"}
_OFFSET = re.compile(r"(\+00:00|Z)$")
_official: dict[str, t.Any] = {}


def _fail(message: str) -> t.NoReturn:
    raise AssertionError(message)


def official_models() -> dict[str, t.Any]:
    """pydantic type adapters of the official ``openai-chatkit`` models, built once:
    ``"request"``, ``"event"``, ``"Thread"``, ``"Page[Thread]"``, ``"Page[ThreadItem]"``,
    ``"ThreadItem"``, ``"Attachment"``, ``"SyncCustomActionResponse"``,
    ``"TranscriptionResult"``.

    :raises ImportError: without the ``openai-chatkit`` package.
    """
    if not _official:
        from pydantic import TypeAdapter

        with warnings.catch_warnings():  # it deprecates its own widget classes at import
            warnings.simplefilter("ignore", DeprecationWarning)
            from chatkit import types as ck
        _official.update(
            {
                "request": TypeAdapter(ck.ChatKitReq),
                "event": TypeAdapter(ck.ThreadStreamEvent),
                "Thread": TypeAdapter(ck.Thread),
                "Page[Thread]": TypeAdapter(ck.Page[ck.Thread]),
                "Page[ThreadItem]": TypeAdapter(ck.Page[ck.ThreadItem]),
                "ThreadItem": TypeAdapter(ck.ThreadItem),
                "Attachment": TypeAdapter(ck.Attachment),
                "SyncCustomActionResponse": TypeAdapter(ck.SyncCustomActionResponse),
                "TranscriptionResult": TypeAdapter(ck.TranscriptionResult),
            }
        )
    return _official


def _walk(value: t.Any, path: str = "") -> t.Iterator[tuple[str, t.Any, t.Any]]:
    if isinstance(value, dict):
        for key, child in value.items():
            yield path, key, child
            if key not in _FREE_FORM:
                yield from _walk(child, f"{path}.{key}")
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from _walk(child, f"{path}[{index}]")


def check_output_rules(body: t.Any) -> None:
    """flask_chatkit's output rules (PROTOCOL.md §15) that the official models do not
    enforce: no nulls, UTC offsets on ``created_at``, no hidden items and no private
    metadata of threads or attachments.

    :raises AssertionError: naming the first broken rule.
    """
    for path, key, value in _walk(body):
        if value is None:
            _fail(f"null at {path}.{key} (nulls must be omitted)")
        if key == "created_at" and not _OFFSET.search(value):
            _fail(f"{path}.created_at {value!r} has no UTC offset")
        if key == "type" and value in _HIDDEN:
            _fail(f"hidden item reached the client at {path}")
        if key == "thread" and isinstance(value, dict) and value["metadata"] != {}:
            _fail(f"private thread metadata leaked at {path}")
        if key in ("attachments",) and isinstance(value, list):
            for att in value:
                if "metadata" in att:
                    _fail(f"attachment metadata leaked at {path}")
    thread = isinstance(body, dict) and "status" in body and "items" in body
    if thread and body["metadata"] != {}:
        _fail("private thread metadata leaked")


def parse_frames(raw: bytes) -> list[dict[str, t.Any]]:
    """Split an SSE body strictly: ``data: <compact JSON>\\n\\n`` frames or ``: ping``.

    :raises AssertionError: on any other framing.
    """
    text = raw.decode()
    if not (text.endswith("\n\n") or not text):
        _fail("stream must end after a complete frame")
    events = []
    for frame in text.split("\n\n")[:-1]:
        if frame == ": ping":
            continue
        if not (frame.startswith("data: ") and "\n" not in frame):
            _fail(f"bad frame {frame!r}")
        payload = frame[len("data: ") :]
        event = json.loads(payload)
        compact = json.dumps(event, separators=(",", ":"), ensure_ascii=False)
        if len(payload) != len(compact):
            _fail(f"JSON is not compact: {payload[:80]!r}")
        events.append(event)
    return events


def check_error(status: int, body: t.Any) -> None:
    """The JSON error envelope: ``{"error": {"code": str, "message": str}}``.

    :raises AssertionError: if *body* is not one, or shows a traceback.
    """
    if not 400 <= status < 600:
        _fail(f"{status} is not an error status")
    if not (isinstance(body, dict) and set(body) == {"error"}):
        _fail(f"not an error envelope: {body!r}")
    error = body["error"]
    if not (isinstance(error.get("code"), str) and error["code"]):
        _fail(f"error without a code: {body!r}")
    if not (isinstance(error.get("message"), str) and error["message"]):
        _fail(f"error without a message: {body!r}")
    if "Traceback" in error["message"]:
        _fail("a traceback reached the client")


class WireCheck:
    """Judges ``/chatkit`` exchanges: framing, JSON error envelopes and the output
    rules always; the official ``openai-chatkit`` models when *official*.

    :param official: validate with the official models; by default when the
        ``openai-chatkit`` package is installed. ``True`` requires it.
    :raises ImportError: with ``official=True`` and no ``openai-chatkit``.
    """

    def __init__(self, official: bool | None = None) -> None:
        models: dict[str, t.Any] | None = None
        if official is not False:
            try:
                models = official_models()
            except ImportError:
                if official:
                    raise
        self.models = models

    @property
    def official(self) -> bool:
        """Whether the official models judge too."""
        return self.models is not None

    def check_request(self, body: t.Any) -> None:
        """A request body that must itself be valid for the official client models."""
        if self.models is not None:
            self.models["request"].validate_python(body)

    def check_event(self, event: dict[str, t.Any]) -> None:
        """One SSE event: a ``ThreadStreamEvent`` that keeps the output rules."""
        if self.models is not None:
            self.models["event"].validate_python(event)
        check_output_rules(event)

    def check_exchange(
        self, request_body: t.Any, status: int, content_type: str, raw: bytes
    ) -> t.Any:
        """Validate one exchange; return the events (SSE) or the JSON body.

        :raises AssertionError: or pydantic's ``ValidationError``, on a bad answer.
        """
        if status >= 400:
            if not content_type.startswith("application/json"):
                _fail(f"{(status, content_type, raw[:200])}")
            body = json.loads(raw)
            check_error(status, body)
            return body
        req_type = request_body.get("type") if isinstance(request_body, dict) else None
        if req_type in STREAMING:
            if not content_type.startswith("text/event-stream"):
                _fail(content_type)
            events = parse_frames(raw)
            for event in events:
                self.check_event(event)
            return events
        if content_type != "application/json":
            _fail(content_type)
        body = json.loads(raw)
        if req_type in EMPTY_RESPONSE:
            if raw != b"{}":
                _fail(f"{raw!r}")
        elif req_type in JSON_RESPONSE:
            if self.models is not None:
                self.models[JSON_RESPONSE[req_type]].validate_python(body)
            check_output_rules(body)
        return body


class Validator(t.Protocol):
    """What :class:`ChatKitClient` needs of a judge (:class:`WireCheck` is one)."""

    def check_request(self, body: t.Any) -> None: ...

    def check_exchange(
        self, request_body: t.Any, status: int, content_type: str, raw: bytes
    ) -> t.Any: ...


# --- the test client -------------------------------------------------------------------


class Exchange:
    """One judged exchange: its status, headers and body (the events of a stream)."""

    def __init__(self, status: int, body: t.Any, headers: t.Any) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def events(self) -> list[dict[str, t.Any]]:
        """The SSE events of a streamed answer."""
        if not isinstance(self.body, list):
            _fail(f"not a stream: {self.body!r}")
        return self.body

    @property
    def types(self) -> list[str]:
        """The events' types, in order."""
        return [e["type"] for e in self.events]

    def of_type(self, type_: str) -> list[dict[str, t.Any]]:
        """The events of one type."""
        return [e for e in self.events if e["type"] == type_]

    @property
    def error(self) -> dict[str, t.Any]:
        """The ``error`` of a JSON error answer (``code``, ``message``, maybe ``field``)."""
        return self.body["error"]  # type: ignore[no-any-return]


class ChatKitClient(FlaskClient):
    """A test client that speaks the ChatKit protocol and judges every exchange.

    Use it with ``app.test_client_class = ChatKitClient``. It sends the app's own
    ``Origin`` (``http://localhost``), as a browser on the app's pages does, so
    session-cookie requests pass the CSRF check.

    :param validator: the judge of each exchange; by default a :class:`WireCheck`
        (the official models when ``openai-chatkit`` is installed).
    :param path: the protocol endpoint; by default the app's ``CHATKIT_URL_PREFIX``.
    """

    origin = "http://localhost"

    def __init__(
        self,
        *args: t.Any,
        validator: Validator | None = None,
        path: str | None = None,
        **kwargs: t.Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.environ_base["HTTP_ORIGIN"] = self.origin
        self.validator: Validator = validator if validator is not None else WireCheck()
        self.path = path or self.application.config.get("CHATKIT_URL_PREFIX", "/chatkit")

    def chatkit(
        self,
        type_: str,
        *,
        metadata: dict[str, t.Any] | None = None,
        headers: dict[str, str] | None = None,
        valid: bool = True,
        **params: t.Any,
    ) -> Exchange:
        """POST one request: ``client.chatkit("threads.list", limit=5)``.

        :param valid: the request itself must pass the validator (``False`` to send
            a deliberately bad one).
        """
        body = chatkit_request(type_, metadata=metadata, **params)
        return self.send(body, headers=headers, valid=valid)

    def send(
        self, body: t.Any, *, headers: dict[str, str] | None = None, valid: bool = True
    ) -> Exchange:
        """POST a raw body (a dict, or bytes/str sent as they are) and judge the answer."""
        if valid:
            self.validator.check_request(body)
        data = body if isinstance(body, (bytes, str)) else json.dumps(body)
        response = self.post(
            self.path, data=data, content_type="application/json", headers=headers or {}
        )
        parsed = self.validator.check_exchange(
            body, response.status_code, response.headers.get("Content-Type", ""), response.data
        )
        return Exchange(response.status_code, parsed, response.headers)


__all__ = [
    "ChatKitClient",
    "Exchange",
    "Validator",
    "WireCheck",
    "chatkit_request",
    "check_error",
    "check_output_rules",
    "official_models",
    "parse_frames",
    "parse_sse",
    "user_input",
]
