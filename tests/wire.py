"""The independent judge of our wire format: the official ``openai-chatkit`` models.

Every request the suite sends to ``/chatkit`` and every JSON body and SSE event
that comes back goes through :func:`check_exchange` (the ``ChatKitClient`` in
``conftest.py`` calls it on each exchange), so no shape can drift unnoticed.
"""

from __future__ import annotations

import json
import re
import typing as t

from chatkit import types as ck
from pydantic import TypeAdapter

REQUEST = TypeAdapter(ck.ChatKitReq)
EVENT = TypeAdapter(ck.ThreadStreamEvent)
THREAD = TypeAdapter(ck.Thread)
THREAD_PAGE = TypeAdapter(ck.Page[ck.Thread])
ITEM_PAGE = TypeAdapter(ck.Page[ck.ThreadItem])
ITEM = TypeAdapter(ck.ThreadItem)
ATTACHMENT = TypeAdapter(ck.Attachment)
SYNC = TypeAdapter(ck.SyncCustomActionResponse)
TRANSCRIPTION = TypeAdapter(ck.TranscriptionResult)

STREAMING = {
    "threads.create",
    "threads.add_user_message",
    "threads.add_client_tool_output",
    "threads.add_structured_input",
    "threads.retry_after_item",
    "threads.custom_action",
}
EMPTY_RESPONSE = {"threads.delete", "items.feedback", "attachments.delete"}
JSON_MODELS = {
    "threads.get_by_id": THREAD,
    "threads.update": THREAD,
    "threads.list": THREAD_PAGE,
    "items.list": ITEM_PAGE,
    "attachments.create": ATTACHMENT,
    "threads.sync_custom_action": SYNC,
    "input.transcribe": TRANSCRIPTION,
}
HIDDEN = {"hidden_context_item", "sdk_hidden_context"}
# Keys whose values are app data, where a JSON null is legitimate.
FREE_FORM = {"arguments", "output", "data", "payload", "result", "content_data"}
OFFSET = re.compile(r"(\+00:00|Z)$")


def _walk(value: t.Any, path: str = "") -> t.Iterator[tuple[str, t.Any, t.Any]]:
    if isinstance(value, dict):
        for key, child in value.items():
            yield path, key, child
            if key not in FREE_FORM:
                yield from _walk(child, f"{path}.{key}")
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from _walk(child, f"{path}[{index}]")


def check_output_rules(body: t.Any) -> None:
    """Rules the official models do not enforce but PROTOCOL.md §15 does."""
    for path, key, value in _walk(body):
        assert value is not None, f"null at {path}.{key} (nulls must be omitted)"
        if key == "created_at":
            assert OFFSET.search(value), f"{path}.created_at {value!r} has no UTC offset"
        if key == "type" and value in HIDDEN:
            raise AssertionError(f"hidden item reached the client at {path}")
        if key == "thread" and isinstance(value, dict):
            assert value["metadata"] == {}, f"private thread metadata leaked at {path}"
        if key in ("attachments",) and isinstance(value, list):
            for att in value:
                assert "metadata" not in att, f"attachment metadata leaked at {path}"
    if isinstance(body, dict) and "status" in body and "items" in body:
        assert body["metadata"] == {}, "private thread metadata leaked"


def parse_frames(raw: bytes) -> list[dict[str, t.Any]]:
    """Split an SSE body strictly: ``data: <compact JSON>\\n\\n`` frames or ``: ping``."""
    text = raw.decode()
    assert text.endswith("\n\n") or not text, "stream must end after a complete frame"
    events = []
    for frame in text.split("\n\n")[:-1]:
        if frame == ": ping":
            continue
        assert frame.startswith("data: ") and "\n" not in frame, f"bad frame {frame!r}"
        payload = frame[len("data: ") :]
        event = json.loads(payload)
        compact = json.dumps(event, separators=(",", ":"), ensure_ascii=False)
        assert len(payload) == len(compact), f"JSON is not compact: {payload[:80]!r}"
        events.append(event)
    return events


def check_event(event: dict[str, t.Any]) -> None:
    """One SSE event against ``ThreadStreamEvent`` plus the output rules."""
    EVENT.validate_python(event)
    check_output_rules(event)


def check_request(body: t.Any) -> None:
    """A request body we send must itself be valid for the official client models."""
    REQUEST.validate_python(body)


def check_error(status: int, body: t.Any) -> None:
    """The JSON error envelope: ``{"error": {"code": str, "message": str}}``."""
    assert 400 <= status < 600
    assert set(body) == {"error"}, body
    assert isinstance(body["error"]["code"], str) and body["error"]["code"]
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert "Traceback" not in body["error"]["message"]


def check_exchange(request_body: t.Any, status: int, content_type: str, raw: bytes) -> t.Any:
    """Validate one ``/chatkit`` exchange; return the events (SSE) or the JSON body."""
    if status >= 400:
        assert content_type.startswith("application/json"), (status, content_type, raw[:200])
        body = json.loads(raw)
        check_error(status, body)
        return body
    req_type = request_body.get("type") if isinstance(request_body, dict) else None
    if req_type in STREAMING:
        assert content_type.startswith("text/event-stream"), content_type
        events = parse_frames(raw)
        for event in events:
            check_event(event)
        return events
    assert content_type == "application/json", content_type
    body = json.loads(raw)
    if req_type in EMPTY_RESPONSE:
        assert raw == b"{}", raw
    elif req_type in JSON_MODELS:
        JSON_MODELS[req_type].validate_python(body)
        check_output_rules(body)
    return body
