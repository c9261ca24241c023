"""Shared pieces of the responder tests: an app wired to the loopback model server."""

from __future__ import annotations

import typing as t

from flask_chatkit import RequestContext
from flask_chatkit.testing import user_input

from .conftest import make_app

API_KEY = "sk-test-secret-key-123"


def assistant_app(
    tmp_path: t.Any,
    llm: t.Any,
    assistant: t.Any,
    *,
    kind: str = "memory",
    api: str = "responses",
    **config: t.Any,
) -> t.Any:
    """An app whose ChatKit answers through *assistant* against the server *llm*."""
    settings = dict(
        OPENAI_API_KEY=API_KEY,
        OPENAI_BASE_URL=llm.base_url,
        CHATKIT_MODEL="test-model",
        CHATKIT_MODEL_API=api,
        CHATKIT_MODEL_MAX_RETRIES=0,
        CHATKIT_MODEL_TIMEOUT=5,
    )
    settings.update(config)
    return make_app(kind, tmp_path, chatkit_options={"responder": assistant}, **settings)


def create(
    client: t.Any,
    text: str,
    *,
    headers: dict[str, str] | None = None,
    metadata: dict[str, t.Any] | None = None,
    **extra: t.Any,
) -> t.Any:
    return client.chatkit(
        "threads.create", input=user_input(text, **extra), headers=headers, metadata=metadata
    )


def send(
    client: t.Any,
    thread_id: str,
    text: str,
    *,
    headers: dict[str, str] | None = None,
    **extra: t.Any,
) -> t.Any:
    return client.chatkit(
        "threads.add_user_message",
        thread_id=thread_id,
        input=user_input(text, **extra),
        headers=headers,
    )


def thread_of(exchange: t.Any) -> str:
    return exchange.of_type("thread.created")[0]["thread"]["id"]  # type: ignore[no-any-return]


def answers(exchange: t.Any) -> list[str]:
    """The texts of the assistant messages finished in *exchange*."""
    return [
        "".join(part["text"] for part in e["item"]["content"])
        for e in exchange.of_type("thread.item.done")
        if e["item"]["type"] == "assistant_message"
    ]


def done_items(exchange: t.Any, kind: str) -> list[dict[str, t.Any]]:
    return [e["item"] for e in exchange.of_type("thread.item.done") if e["item"]["type"] == kind]


def stored_items(store: t.Any, thread_id: str, user: str = "alice") -> list[t.Any]:
    """Every stored item of the thread, hidden ones included, oldest first."""
    return store.load_thread_items(  # type: ignore[no-any-return]
        thread_id, None, 1000, "asc", RequestContext(user_id=user), include_hidden=True
    ).data


def records(store: t.Any, thread_id: str) -> list[dict[str, t.Any]]:
    """The responder's tool records of a thread."""
    return [
        i.content
        for i in stored_items(store, thread_id)
        if i.type == "hidden_context_item"
        and isinstance(i.content, dict)
        and i.content.get("type") == "flask_chatkit.tool_call"
    ]


def user_texts(body: dict[str, t.Any]) -> list[str]:
    """The user texts in a Responses or Chat Completions request body."""
    out = []
    for entry in body.get("input") or body.get("messages") or []:
        if entry.get("role") != "user":
            continue
        content = entry["content"]
        if isinstance(content, str):
            out.append(content)
        else:
            out.extend(p["text"] for p in content if p.get("type") in ("input_text", "text"))
    return out


def tool_outputs(body: dict[str, t.Any]) -> dict[str, str]:
    """call_id → output of the function results in a request body (either API)."""
    out = {}
    for entry in body.get("input") or body.get("messages") or []:
        if entry.get("type") == "function_call_output":
            out[entry["call_id"]] = entry["output"]
        elif entry.get("role") == "tool":
            out[entry["tool_call_id"]] = entry["content"]
    return out
