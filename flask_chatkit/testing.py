"""Helpers for testing apps that use flask_chatkit."""

from __future__ import annotations

import json
import typing as t


def chatkit_request(type: str, metadata: dict[str, t.Any] | None = None, **params: t.Any) -> dict[str, t.Any]:
    """A request body: ``chatkit_request("threads.list", limit=5)``."""
    body: dict[str, t.Any] = {"type": type, "params": params}
    if metadata is not None:
        body["metadata"] = metadata
    return body


def user_input(text: str, *, attachments: list[str] | None = None, **extra: t.Any) -> dict[str, t.Any]:
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
        events.append(json.loads(lines[0][len("data: "):]))
    return events


__all__ = ["chatkit_request", "parse_sse", "user_input"]
