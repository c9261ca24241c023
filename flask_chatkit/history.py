"""A thread's items as model input items, within a budget (no Flask here).

User messages keep their structure (text, quoted text, tags, attachments via
:func:`~flask_chatkit.model_input.user_message_input`); assistant messages
become assistant turns; the responder's tool records become real function
calls and their outputs; hidden context becomes developer (Responses) or
system (Chat Completions) messages. The newest items win: at most
*max_items* items are read, then the oldest are dropped until the estimated
tokens fit *max_tokens*.
"""

from __future__ import annotations

import json
import typing as t

from .model_input import user_message_input

#: ``content["type"]`` of the hidden items in which the responder records tool calls.
TOOL_RECORD = "flask_chatkit.tool_call"

Api = t.Literal["responses", "chat"]

#: Rough tokens charged for an image or a file part (their bytes are not text).
MEDIA_TOKENS = 1000


def is_tool_record(item: t.Any) -> bool:
    content = getattr(item, "content", None)
    return (
        getattr(item, "type", None) == "hidden_context_item"
        and isinstance(content, dict)
        and content.get("type") == TOOL_RECORD
    )


def item_input(item: t.Any, api: Api, files: t.Any = None) -> list[dict[str, t.Any]]:
    """The input items for one thread item (none for items the model need not see)."""
    kind = getattr(item, "type", None)
    if kind == "user_message":
        message = user_message_input(item, files, api=api)
        return [message] if message["content"] else []
    if kind == "assistant_message":
        text = "".join(part.text for part in item.content)
        return [{"role": "assistant", "content": text}] if text.strip() else []
    if is_tool_record(item):
        record = item.content
        if record.get("status") == "pending":
            return []  # the call is still waiting for the user: no output to pair it with
        return _call(
            api,
            record["call_id"],
            record["name"],
            record.get("arguments") or "{}",
            record.get("output") or "",
        )
    if kind == "client_tool_call":
        if item.status != "completed":
            return []
        output = (
            item.output
            if isinstance(item.output, str)
            else json.dumps(item.output, ensure_ascii=False, default=str)
        )
        return _call(api, item.call_id, item.name, json.dumps(item.arguments), output)
    if kind in ("hidden_context_item", "sdk_hidden_context"):
        content = item.content
        text = (
            content
            if isinstance(content, str)
            else json.dumps(content, ensure_ascii=False, default=str)
        )
        return [{"role": "developer" if api == "responses" else "system", "content": text}]
    if kind == "widget" and item.copy_text:
        return [{"role": "assistant", "content": f"(Shown to the user: {item.copy_text})"}]
    return []


def _call(api: Api, call_id: str, name: str, arguments: str, output: str) -> list[dict[str, t.Any]]:
    if api == "responses":
        return [
            {"type": "function_call", "call_id": call_id, "name": name, "arguments": arguments},
            {"type": "function_call_output", "call_id": call_id, "output": output},
        ]
    return [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": name, "arguments": arguments},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call_id, "content": output},
    ]


def estimate_tokens(entry: t.Any) -> int:
    """About four characters a token; images and files a flat :data:`MEDIA_TOKENS`."""
    if isinstance(entry, dict):
        kind = entry.get("type")
        if kind in ("input_image", "image_url", "input_file", "file"):
            return MEDIA_TOKENS
        return sum(estimate_tokens(v) for v in entry.values()) + 1
    if isinstance(entry, list):
        return sum(estimate_tokens(v) for v in entry)
    if isinstance(entry, str):
        return len(entry) // 4 + 1
    return 1


def thread_input(
    items: t.Sequence[t.Any],
    api: Api,
    *,
    files: t.Any = None,
    max_tokens: int = 0,
) -> list[dict[str, t.Any]]:
    """Input items for *items* (oldest first), dropping the oldest over *max_tokens*.

    The newest item is always kept. Items are dropped whole, so a function call
    never loses its output.
    """
    groups = [item_input(item, api, files) for item in items]
    groups = [g for g in groups if g]
    if max_tokens:
        costs = [estimate_tokens(g) for g in groups]
        total = sum(costs)
        start = 0
        while total > max_tokens and start < len(groups) - 1:
            total -= costs[start]
            start += 1
        groups = groups[start:]
    return [entry for group in groups for entry in group]


__all__ = ["TOOL_RECORD", "estimate_tokens", "is_tool_record", "item_input", "thread_input"]
