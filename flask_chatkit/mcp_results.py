"""What MCP tool calls give back: results, errors, and the widgets in their content.

Nothing here needs the ``mcp`` package: :func:`widgets_from_content` rebuilds
widgets from stored tool-result content, and :func:`tool_result` reads an
``mcp`` result by its attributes only.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import logging
import typing as t

if t.TYPE_CHECKING:
    from collections.abc import Mapping
    from collections.abc import Sequence

__all__ = [
    "MCPError",
    "MCPToolResult",
    "WIDGET_MIME_TYPE",
    "WIDGET_URI_PREFIX",
    "tool_result",
    "widgets_from_content",
]

logger = logging.getLogger("flask_chatkit")

WIDGET_MIME_TYPE = "application/vnd.ui.widget+json"
"""MIME type of an embedded resource that carries a ChatKit widget."""

WIDGET_URI_PREFIX = "ui://"
"""URI scheme of embedded resources that may carry a widget."""


class MCPError(Exception):
    """An MCP server could not be reached, timed out or broke the protocol.

    The message is safe to show: it never contains headers or environment values.
    """


@dataclasses.dataclass
class MCPToolResult:
    """The result of one MCP tool call."""

    text: str
    """What the model reads: the text parts joined, plus short notes for resources."""
    content: list[dict[str, t.Any]]
    """Every content block as JSON (MCP wire form), kept so widgets can be rebuilt."""
    structured: dict[str, t.Any] | None
    """The result's ``structuredContent``, if any."""
    is_error: bool
    """Whether the tool reported an error."""


def tool_result(result: t.Any) -> MCPToolResult:
    """An :class:`MCPToolResult` from the ``mcp`` client's ``CallToolResult``."""
    content = [
        block.model_dump(mode="json", by_alias=True, exclude_none=True) for block in result.content
    ]
    parts: list[str] = []
    for block in content:
        kind = block.get("type")
        if kind == "text":
            parts.append(block.get("text", ""))
        elif kind == "resource":
            resource = block.get("resource") or {}
            uri = resource.get("uri", "")
            parts.append(f"[resource {uri}]")
            is_widget = (
                uri.startswith(WIDGET_URI_PREFIX) and resource.get("mimeType") == WIDGET_MIME_TYPE
            )
            if not is_widget and isinstance(resource.get("text"), str):
                parts.append(resource["text"])
        elif kind == "resource_link":
            parts.append(f"[resource {block.get('uri', '')}]")
        elif kind in ("image", "audio"):
            parts.append(f"[{kind} {block.get('mimeType', '')}]")
    structured = getattr(result, "structured_content", None)
    return MCPToolResult(
        text="\n".join(part for part in parts if part),
        content=content,
        structured=structured if isinstance(structured, dict) else None,
        is_error=bool(getattr(result, "is_error", False)),
    )


def widgets_from_content(
    content: Sequence[Mapping[str, t.Any]],
) -> list[tuple[dict[str, t.Any], str | None]]:
    """Return ``(widget, copy_text)`` for every widget resource in tool-result content.

    A widget is an embedded resource whose URI starts with ``ui://`` and whose MIME
    type is :data:`WIDGET_MIME_TYPE`; its text (or base64 blob) is the JSON object
    ``{"widget": {...}, "copy_text": "..."}``. Malformed payloads are logged and
    skipped, never raised.

    :param content: content blocks as stored in :attr:`MCPToolResult.content`.
    """
    widgets: list[tuple[dict[str, t.Any], str | None]] = []
    for block in content:
        if not isinstance(block, dict) or block.get("type") != "resource":
            continue
        resource = block.get("resource")
        if not isinstance(resource, dict):
            continue
        uri = resource.get("uri")
        # the wire form says mimeType; a plain model_dump() says mime_type
        mime = resource.get("mimeType", resource.get("mime_type"))
        if (
            not isinstance(uri, str)
            or not uri.startswith(WIDGET_URI_PREFIX)
            or mime != WIDGET_MIME_TYPE
        ):
            continue
        widget = _parse_widget_payload(resource, uri)
        if widget is not None:
            widgets.append(widget)
    return widgets


def _parse_widget_payload(
    resource: Mapping[str, t.Any], uri: str
) -> tuple[dict[str, t.Any], str | None] | None:
    text = resource.get("text")
    if not isinstance(text, str):
        blob = resource.get("blob")
        if not isinstance(blob, str):
            logger.warning("MCP widget %s has neither text nor blob; skipped", uri)
            return None
        try:
            text = base64.b64decode(blob, validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            logger.warning("MCP widget %s has a blob that is not base64 UTF-8; skipped", uri)
            return None
    try:
        payload = json.loads(text)
    except ValueError:
        logger.warning("MCP widget %s is not valid JSON; skipped", uri)
        return None
    widget = payload.get("widget") if isinstance(payload, dict) else None
    if not isinstance(widget, dict) or not isinstance(widget.get("type"), str):
        logger.warning("MCP widget %s has no widget object with a string type; skipped", uri)
        return None
    copy_text = payload.get("copy_text")
    return widget, copy_text if isinstance(copy_text, str) else None
