"""The extension: init_app, registration errors, config, two apps, hooks, import hygiene."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import typing as t
from urllib.parse import urlsplit

import gevent
import pytest
from flask import Flask
from flask import request

import flask_chatkit
from flask_chatkit import ChatKit
from flask_chatkit import ChatKitServer
from flask_chatkit import InMemoryStore
from flask_chatkit import RequestContext
from flask_chatkit import stream_text
from flask_chatkit.extension import DEFAULTS
from flask_chatkit.streaming import user_text
from flask_chatkit.testing import ChatKitClient
from flask_chatkit.testing import chatkit_request
from flask_chatkit.testing import user_input
from flask_chatkit.types import ThreadMetadata

from . import wire
from .conftest import make_app

ALICE = RequestContext(user_id="alice")


def new_app(tmp_path: t.Any, name: str = "app", *, login: bool = True, **config: t.Any) -> Flask:
    """A bare app (no ChatKit yet); with *login*, Flask-Login with session and bearer users."""
    return make_app(None, tmp_path, login=login, instance=name, **config)


def bearer(app: Flask, user_id: str = "alice") -> ChatKitClient:
    client: ChatKitClient = app.test_client()  # type: ignore[assignment]
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer token-{user_id}"
    return client


def session(app: Flask, user_id: str = "alice", origin: str = "http://localhost") -> ChatKitClient:
    client: ChatKitClient = app.test_client()  # type: ignore[assignment]
    client.environ_base["HTTP_ORIGIN"] = origin
    assert client.post(f"/_login/{user_id}").status_code == 200
    return client


def seed_threads(store: InMemoryStore, count: int, user: RequestContext = ALICE) -> None:
    for i in range(count):
        store.save_thread(ThreadMetadata(id=f"thr_{i:03}"), user)


def listed(client: ChatKitClient, **params: t.Any) -> int:
    ex = client.chatkit("threads.list", **params)
    assert ex.status == 200, ex.body
    return len(ex.body["data"])


# --- registration --------------------------------------------------------------------------


def test_registering_twice_on_one_app_raises_a_helpful_error(tmp_path):
    app = new_app(tmp_path)
    chatkit = ChatKit(app, store=InMemoryStore())
    for again in (lambda: chatkit.init_app(app), lambda: ChatKit(app, store=InMemoryStore())):
        with pytest.raises(RuntimeError, match="already registered") as info:
            again()
        assert "app.extensions['chatkit']" in str(info.value)
    assert app.extensions["chatkit"] is chatkit


def test_registering_without_a_store_raises(tmp_path):
    app = new_app(tmp_path)
    with pytest.raises(RuntimeError, match=r"store=SQLAlchemyStore\(db\)"):
        ChatKit(app)
    assert "chatkit" not in app.extensions
    assert "chatkit" not in app.blueprints


def test_extension_is_stored_in_app_extensions_not_on_itself(tmp_path):
    app = new_app(tmp_path)
    chatkit = ChatKit(store=InMemoryStore())
    assert "chatkit" not in app.extensions
    chatkit.init_app(app)
    assert app.extensions["chatkit"] is chatkit
    assert not hasattr(chatkit, "app")
    with app.app_context():
        assert chatkit.server is chatkit.state(app).server


def test_hook_decorators_return_the_function_unchanged(tmp_path):
    chatkit = ChatKit(store=InMemoryStore())

    def hook(*args: t.Any) -> None:
        return None

    for decorator in (
        chatkit.respond,
        chatkit.action,
        chatkit.sync_action,
        chatkit.transcribe,
        chatkit.feedback,
        chatkit.cancel,
        chatkit.context_loader,
    ):
        assert decorator(hook) is hook


# --- config ----------------------------------------------------------------------------------


def test_every_config_key_is_documented_in_the_readme():
    with open(os.path.join(os.path.dirname(__file__), "..", "README.md"), encoding="utf-8") as f:
        readme = f.read()
    rows = [line for line in readme.splitlines() if line.startswith("| `")]
    missing = [key for key in DEFAULTS if not any(f"`{key}`" in row for row in rows)]
    assert missing == []


def test_config_defaults_are_set_with_setdefault_and_app_values_win(tmp_path):
    app = new_app(tmp_path, CHATKIT_PAGE_SIZE=7, CHATKIT_ALLOWED_ORIGINS="https://a.example")
    store = InMemoryStore()
    ChatKit(app, store=store)
    assert set(DEFAULTS) == {
        "CHATKIT_URL_PREFIX",
        "CHATKIT_HEARTBEAT_INTERVAL",
        "CHATKIT_PAGE_SIZE",
        "CHATKIT_MAX_PAGE_SIZE",
        "CHATKIT_MAX_REQUEST_SIZE",
        "CHATKIT_ALLOWED_ORIGINS",
        "CHATKIT_ATTACHMENTS_FOLDER",
        "CHATKIT_UPLOAD_MAX_BYTES",
        "CHATKIT_ALLOWED_MIME_TYPES",
        "CHATKIT_TURN_TIMEOUT",
        "CHATKIT_TURN_LEASE",
        "CHATKIT_DISCONNECT",
        "CHATKIT_MAX_TURNS_PER_USER",
        # per-user rate limits and token budgets (tests/test_rate_limits.py)
        "CHATKIT_RATE_LIMITS",
        "CHATKIT_RATE_LIMIT_STORAGE",
        "CHATKIT_TOKEN_BUDGET",
        "CHATKIT_MAX_DETACHED_TURNS",
        "CHATKIT_CHECKPOINT_INTERVAL",
        # upload security and lifecycle (tests/test_upload_security.py)
        "CHATKIT_UPLOAD_URL_EXPIRY",
        "CHATKIT_PREVIEW_URL_EXPIRY",
        "CHATKIT_MAX_FILES_PER_MESSAGE",
        "CHATKIT_USER_QUOTA_BYTES",
        "CHATKIT_ATTACHMENT_CLEANUP_AGE",
        # hosted mode (tests/test_hosted.py)
        "CHATKIT_SELF_HOSTED",
        "CHATKIT_HOSTED",
        "CHATKIT_WORKFLOW_ID",
        "CHATKIT_SESSION_EXPIRES_AFTER",
        "CHATKIT_SESSION_RATE_LIMIT",
        "CHATKIT_SESSION_FILE_UPLOAD",
        "CHATKIT_SESSION_MAX_FILES",
        "CHATKIT_SESSION_MAX_FILE_BYTES",
        "CHATKIT_OPENAI_TIMEOUT",
        "CHATKIT_OPENAI_MAX_RETRIES",
        # the built-in responder (tests/test_assistant.py)
        "CHATKIT_MODEL",
        "CHATKIT_MODEL_API",
        "CHATKIT_MODELS",
        "CHATKIT_HISTORY_MAX_ITEMS",
        "CHATKIT_HISTORY_MAX_TOKENS",
        "CHATKIT_MAX_TOOL_ROUNDS",
        "CHATKIT_TITLES",
        "CHATKIT_TITLE_MODEL",
        "CHATKIT_MODEL_TIMEOUT",
        "CHATKIT_MODEL_MAX_RETRIES",
        # SQLAlchemyStore on SQLite (tests/test_sqlite.py)
        "CHATKIT_SQLITE_WAL",
        # GET {prefix}/health (tests/test_health.py)
        "CHATKIT_HEALTH_TIMEOUT",
        # OpenTelemetry (tests/test_tracing.py)
        "CHATKIT_TRACE_CONTENT",
        # Prometheus metrics and access logs (tests/test_metrics.py, tests/test_access_log.py)
        "CHATKIT_METRICS",
        "CHATKIT_METRICS_TOKEN",
        "CHATKIT_ACCESS_LOG",
    }
    assert app.config["CHATKIT_PAGE_SIZE"] == 7
    assert app.config["CHATKIT_ALLOWED_ORIGINS"] == "https://a.example"
    assert app.config["CHATKIT_URL_PREFIX"] == "/chatkit"
    assert app.config["CHATKIT_MAX_PAGE_SIZE"] == DEFAULTS["CHATKIT_MAX_PAGE_SIZE"]
    assert app.config["CHATKIT_HEARTBEAT_INTERVAL"] == DEFAULTS["CHATKIT_HEARTBEAT_INTERVAL"]
    assert app.config["CHATKIT_ATTACHMENTS_FOLDER"] == os.path.join(
        app.instance_path, "chatkit_attachments"
    )
    seed_threads(store, 25)
    assert listed(bearer(app)) == 7

    other = new_app(tmp_path, "other")
    store = InMemoryStore()
    ChatKit(other, store=store)
    assert other.config["CHATKIT_PAGE_SIZE"] == 20
    seed_threads(store, 25)
    assert listed(bearer(other)) == 20
    upload = bearer(other).post(
        "/chatkit/upload",
        data={"file": (io.BytesIO(b"hello"), "a.txt", "text/plain")},
        content_type="multipart/form-data",
    )
    assert upload.status_code == 200
    assert os.listdir(other.config["CHATKIT_ATTACHMENTS_FOLDER"]) == [upload.get_json()["id"]]


def test_string_config_values_from_the_environment_are_coerced(tmp_path):
    env = {  # as they arrive from os.environ
        "CHATKIT_HEARTBEAT_INTERVAL": "0.05",
        "CHATKIT_PAGE_SIZE": "3",
        "CHATKIT_MAX_PAGE_SIZE": "4",
        "CHATKIT_MAX_REQUEST_SIZE": "300",
        "CHATKIT_UPLOAD_MAX_BYTES": "10",
        "CHATKIT_ALLOWED_ORIGINS": " https://a.example, https://b.example/ ,",
        "CHATKIT_ALLOWED_MIME_TYPES": "image/png, TEXT/plain",
    }
    app = new_app(tmp_path, **env)
    store = InMemoryStore()
    chatkit = ChatKit(app, store=store)

    @chatkit.respond
    def respond(thread, message, context):
        gevent.sleep(0.3)  # silent long enough for a few heartbeats
        yield from stream_text(thread, "done")

    state = chatkit.state(app)
    assert state.heartbeat_interval == 0.05
    assert state.allowed_origins == {"https://a.example", "https://b.example"}
    assert state.allowed_mime_types == ["image/png", "text/plain"]
    seed_threads(store, 10)
    client = bearer(app)
    assert listed(client) == 3
    assert listed(client, limit=50) == 4
    big = client.chatkit("threads.update", thread_id="thr_001", title="x" * 300)
    assert (big.status, big.error["code"]) == (413, "request_too_large")

    def send_file(data: bytes, mime: str) -> int:
        files = {"file": (io.BytesIO(data), "f", mime)}
        return client.post(
            "/chatkit/upload", data=files, content_type="multipart/form-data"
        ).status_code

    assert send_file(b"0123456789", "text/plain") == 200
    assert send_file(b"0123456789x", "text/plain") == 413
    assert send_file(b"a,b", "text/csv") == 415

    for origin, status in [("https://b.example", 200), ("https://c.example", 403)]:
        assert session(app, origin=origin).chatkit("threads.list").status == status

    raw = client.post("/chatkit", json=chatkit_request("threads.create", input=user_input("hi")))
    assert raw.status_code == 200
    assert raw.data.count(b": ping\n\n") >= 2
    assert wire.parse_frames(raw.data)[-1]["type"] == "thread.item.done"


@pytest.mark.parametrize(
    "key, value",
    [
        ("CHATKIT_PAGE_SIZE", "-1"),
        ("CHATKIT_MAX_PAGE_SIZE", "many"),
        ("CHATKIT_HEARTBEAT_INTERVAL", "-0.5"),
        ("CHATKIT_HEARTBEAT_INTERVAL", "soon"),
        ("CHATKIT_HEARTBEAT_INTERVAL", "nan"),
        ("CHATKIT_MAX_REQUEST_SIZE", [1024]),
        ("CHATKIT_UPLOAD_MAX_BYTES", -1),
        ("CHATKIT_DISCONNECT", "detach"),
        ("CHATKIT_MAX_DETACHED_TURNS", "-1"),
    ],
)
def test_a_negative_or_non_numeric_value_raises_naming_the_key(tmp_path, key, value):
    app = new_app(tmp_path, **{key: value})
    with pytest.raises(RuntimeError, match=key):
        ChatKit(app, store=InMemoryStore())
    assert "chatkit" not in app.extensions  # nothing half-registered
    assert "chatkit" not in app.blueprints


def test_url_prefix_moves_every_route(tmp_path):
    app = new_app(tmp_path, CHATKIT_URL_PREFIX="/api/chat")
    ChatKit(app, store=InMemoryStore())
    client = bearer(app)
    body = chatkit_request("threads.list")
    moved = client.post("/api/chat", json=body)
    assert moved.status_code == 200
    wire.check_exchange(body, moved.status_code, moved.content_type, moved.data)
    assert client.post("/chatkit", json=body).status_code == 404

    upload = client.post(
        "/api/chat/upload",
        data={"file": (io.BytesIO(b"\x89PNG"), "a.png", "image/png")},
        content_type="multipart/form-data",
    )
    assert upload.status_code == 200
    preview_path = urlsplit(upload.get_json()["preview_url"]).path
    assert preview_path.startswith("/api/chat/attachments/")
    with client.get(preview_path) as preview:
        assert (preview.status_code, preview.data) == (200, b"\x89PNG")
    assert client.post("/api/chat/client_secret").status_code == 404  # hosted mode off
    assert client.post("/chatkit/upload").status_code == 404


def test_one_extension_on_two_apps_keeps_separate_state(tmp_path):
    store = InMemoryStore()
    chatkit = ChatKit(store=store)
    small = new_app(tmp_path, "small", CHATKIT_PAGE_SIZE=2, CHATKIT_HEARTBEAT_INTERVAL=0)
    large = new_app(tmp_path, "large", CHATKIT_PAGE_SIZE=5, CHATKIT_MAX_REQUEST_SIZE=200)
    chatkit.init_app(small)
    chatkit.init_app(large)

    @chatkit.respond  # registered after init_app: both apps use it
    def respond(thread, message, context):
        yield from stream_text(thread, "shared hook")

    assert chatkit.state(small) is not chatkit.state(large)
    assert chatkit.state(small).server is not chatkit.state(large).server
    seed_threads(store, 8)
    assert listed(bearer(small)) == 2
    assert listed(bearer(large)) == 5
    long_title = {"thread_id": "thr_001", "title": "x" * 300}
    assert bearer(small).chatkit("threads.update", **long_title).status == 200
    assert bearer(large).chatkit("threads.update", **long_title).status == 413
    for app in (small, large):
        ex = bearer(app).chatkit("threads.create", input=user_input("hi"))
        assert ex.of_type("thread.item.done")[-1]["item"]["content"][0]["text"] == "shared hook"


# --- hooks -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "hook, type_, params",
    [
        ("respond", "threads.create", {"input": user_input("hi")}),
        (
            "respond",
            "threads.add_user_message",
            {"thread_id": "thr_000", "input": user_input("hi")},
        ),
        ("action", "threads.custom_action", {"thread_id": "thr_000", "action": {"type": "go"}}),
        (
            "sync_action",
            "threads.sync_custom_action",
            {"thread_id": "thr_000", "action": {"type": "go"}},
        ),
        ("transcribe", "input.transcribe", {"audio_base64": "AAAA", "mime_type": "audio/webm"}),
    ],
)
def test_a_missing_hook_is_a_501_naming_the_decorator_and_the_override(
    tmp_path, hook, type_, params
):
    app = new_app(tmp_path)
    store = InMemoryStore()
    ChatKit(app, store=store)
    seed_threads(store, 1)
    ex = bearer(app).chatkit(type_, **params)
    assert ex.status == 501
    assert ex.headers["Content-Type"] == "application/json"
    assert ex.error["code"] == "not_implemented"
    assert f"@chatkit.{hook}" in ex.error["message"]
    assert f"ChatKitServer.{hook}" in ex.error["message"]
    # nothing was written
    assert [th.id for th in store.load_threads(10, None, "asc", ALICE).data] == ["thr_000"]
    assert store.load_thread_items("thr_000", None, 10, "asc", ALICE).data == []


def test_a_server_subclass_given_as_server_class_is_used(tmp_path):
    seen: list[str] = []

    class EchoServer(ChatKitServer[t.Any]):
        def respond(self, thread, input_user_message, context):
            seen.append(context.user_id)
            yield from stream_text(thread, ["echo: ", user_text(input_user_message)])

    app = new_app(tmp_path)
    chatkit = ChatKit(app, store=InMemoryStore(), server_class=EchoServer)
    assert isinstance(chatkit.state(app).server, EchoServer)
    ex = bearer(app).chatkit("threads.create", input=user_input("ping"))
    assert ex.status == 200
    assert ex.of_type("thread.item.done")[-1]["item"]["content"][0]["text"] == "echo: ping"
    assert seen == ["alice"]


def test_context_loader_replaces_flask_login(tmp_path):
    keys = {"key-carol": "carol", "key-dave": "dave"}
    app = new_app(tmp_path, login=False)  # no Flask-Login at all
    chatkit = ChatKit(app, store=InMemoryStore())
    seen: list[str] = []

    @chatkit.context_loader
    def load_context():
        user_id = keys.get(request.headers.get("X-Api-Key", ""))
        return RequestContext(user_id=user_id, auth="bearer") if user_id else None

    @chatkit.respond
    def respond(thread, message, context):
        seen.append(context.user_id)
        yield from stream_text(thread, "hi")

    client = app.test_client()
    carol, dave = {"X-Api-Key": "key-carol"}, {"X-Api-Key": "key-dave"}
    created = client.chatkit("threads.create", input=user_input("hi"), headers=carol)
    assert created.status == 200
    assert seen == ["carol"]
    assert len(client.chatkit("threads.list", headers=carol).body["data"]) == 1
    assert client.chatkit("threads.list", headers=dave).body["data"] == []

    for headers in ({}, {"X-Api-Key": "wrong"}, {"Authorization": "Bearer token-carol"}):
        denied = client.chatkit("threads.list", headers=headers)
        assert (denied.status, denied.error["code"]) == (401, "unauthorized")
        upload = client.post("/chatkit/upload", headers=headers)
        assert (upload.status_code, upload.get_json()["error"]["code"]) == (401, "unauthorized")


# --- import hygiene --------------------------------------------------------------------------

CORE_MODULES = [
    "types",
    "requests",
    "errors",
    "store",
    "server",
    "turn_engine",
    "parsing",
    "events",
    "model_input",
    "streaming",
    "responses",
    # the write path under gevent
    "group_commit",
    "greenlets",
    "sqlite",
    "sqlalchemy_schema",
    "sqlalchemy_turns",
    # the built-in responder
    "llm",
    "history",
    "tools",
    "i18n",
    "assistant",
    "assistant_settings",
    "responder",
    "mcp_servers",
    "mcp_results",
    "mcp_bridge",
    "mcp_stdio",
]
WEB_PACKAGES = ["flask", "werkzeug", "flask_login", "flask_sqlalchemy"]
PROBE = """
import importlib, json, sys, types
package = types.ModuleType("flask_chatkit")  # skip __init__, which loads the extension
package.__path__ = [sys.argv[1]]
sys.modules["flask_chatkit"] = package
web = set(sys.argv[2].split(","))
loaded = {}
for name in sys.argv[3].split(","):
    importlib.import_module("flask_chatkit." + name)
    loaded[name] = sorted(m for m in sys.modules if m.split(".")[0] in web)
print(json.dumps(loaded))
"""


@pytest.mark.slow  # fresh interpreters
def test_core_modules_import_nothing_from_the_web_stack():
    folder = os.path.dirname(flask_chatkit.__file__)
    # "auth" comes last as a control: it does import Flask, so the probe can see it
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            PROBE,
            folder,
            ",".join(WEB_PACKAGES),
            ",".join([*CORE_MODULES, "auth"]),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    loaded = json.loads(result.stdout)
    for name in CORE_MODULES:
        assert loaded[name] == [], f"flask_chatkit.{name} pulled in {loaded[name]}"
    assert "flask" in loaded["auth"]


def test_the_old_attachment_store_argument_still_works_and_warns(tmp_path):
    from flask_chatkit import ChatKit
    from flask_chatkit import InMemoryStore
    from flask_chatkit.attachments import Attachments

    files = Attachments(tmp_path / "files")
    with pytest.warns(DeprecationWarning, match=r"ChatKit\(attachments=\)"):
        chatkit = ChatKit(store=InMemoryStore(), attachment_store=files)
    assert chatkit.attachments is files
