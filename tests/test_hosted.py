"""Hosted mode: ``POST /chatkit/client_secret`` mints ChatKit sessions through the
real ``openai`` client, pointed at a real HTTP server on loopback that plays
OpenAI (tests/openai_fake.py); and the self-hosted / hosted / both mode switch."""

from __future__ import annotations

import io
import logging
import socket
import time
import typing as t

import pytest
from flask import Flask
from flask import render_template_string

from flask_chatkit.testing import chatkit_request
from flask_chatkit.testing import user_input

from .conftest import logged_in
from .conftest import make_app
from .openai_fake import FakeOpenAI

KEY = "sk-test-do-not-leak-4f9a1c"
WORKFLOW = "wf_68f11ef926888190a3785994ea8530e8"
FOREIGN = "https://evil.example"


@pytest.fixture(autouse=True)
def _no_openai_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)


@pytest.fixture
def fake() -> t.Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


@pytest.fixture
def new_app(tmp_path: t.Any) -> t.Iterator[t.Callable[..., Flask]]:
    """Build apps on the memory store; their openai clients are closed afterwards."""
    apps: list[Flask] = []

    def build(store_kind: str = "memory", **config: t.Any) -> Flask:
        app = make_app(store_kind, tmp_path, **config)
        apps.append(app)
        return app

    yield build
    for app in apps:
        sessions = app.extensions["chatkit"].state(app).sessions
        if sessions is not None and sessions._client is not None:
            sessions._client.close()


@pytest.fixture
def hosted_app(new_app: t.Callable[..., Flask], fake: FakeOpenAI) -> t.Callable[..., Flask]:
    """An app in hosted mode whose openai client talks to *fake* (no retries)."""

    def build(**config: t.Any) -> Flask:
        settings = {
            "CHATKIT_WORKFLOW_ID": WORKFLOW,
            "OPENAI_API_KEY": KEY,
            "OPENAI_BASE_URL": fake.base_url,
            "CHATKIT_OPENAI_MAX_RETRIES": 0,
        }
        settings.update(config)
        return new_app(**settings)

    return build


def secret(client: t.Any, body: t.Any = None, headers: dict[str, str] | None = None) -> t.Any:
    if body is None:
        return client.post("/chatkit/client_secret", headers=headers or {})
    if isinstance(body, bytes):
        return client.post(
            "/chatkit/client_secret",
            data=body,
            headers=headers or {},
            content_type="application/json",
        )
    return client.post("/chatkit/client_secret", json=body, headers=headers or {})


def error_of(response: t.Any, status: int, code: str) -> dict[str, t.Any]:
    assert response.status_code == status, response.data
    assert response.content_type == "application/json"
    error = response.get_json()["error"]
    assert error["code"] == code
    return error  # type: ignore[no-any-return]


# --- minting ------------------------------------------------------------------------


def test_client_secret_sends_the_exact_session_request_and_returns_the_secret(
    hosted_app: t.Callable[..., Flask], fake: FakeOpenAI
) -> None:
    alice = logged_in(hosted_app(), "alice")
    response = secret(alice)
    assert response.status_code == 200, response.data
    assert response.headers["Cache-Control"] == "no-store"

    [sent] = fake.requests
    assert (sent.method, sent.path) == ("POST", "/v1/chatkit/sessions")
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.headers["openai-beta"] == "chatkit_beta=v1"
    assert sent.headers["content-type"] == "application/json"
    # No optional settings configured: none are sent, OpenAI's defaults apply.
    assert sent.body == {"user": "alice", "workflow": {"id": WORKFLOW}}

    body = response.get_json()
    assert set(body) == {"client_secret", "expires_after", "expires_at"}
    assert body["client_secret"] == "ek_fake_secret_1_alice"
    assert 598 <= body["expires_after"] <= 600
    assert abs(body["expires_at"] - (time.time() + 600)) < 5


def test_configured_expiry_rate_limit_and_file_upload_reach_openai(
    hosted_app: t.Callable[..., Flask], fake: FakeOpenAI
) -> None:
    app = hosted_app(
        CHATKIT_SESSION_EXPIRES_AFTER=900,
        CHATKIT_SESSION_RATE_LIMIT="30",  # strings from the environment work too
        CHATKIT_SESSION_FILE_UPLOAD="true",
        CHATKIT_SESSION_MAX_FILES=3,
        CHATKIT_SESSION_MAX_FILE_SIZE=20,
    )
    response = secret(logged_in(app, "alice"))
    assert response.status_code == 200, response.data
    assert fake.requests[0].body == {
        "user": "alice",
        "workflow": {"id": WORKFLOW},
        "expires_after": {"anchor": "created_at", "seconds": 900},
        "rate_limits": {"max_requests_per_1_minute": 30},
        "chatkit_configuration": {
            "file_upload": {"enabled": True, "max_files": 3, "max_file_size": 20}
        },
    }
    assert 898 <= response.get_json()["expires_after"] <= 900


def test_file_upload_can_be_switched_off_explicitly(
    hosted_app: t.Callable[..., Flask], fake: FakeOpenAI
) -> None:
    secret(logged_in(hosted_app(CHATKIT_SESSION_FILE_UPLOAD=False), "alice"))
    assert fake.requests[0].body["chatkit_configuration"] == {"file_upload": {"enabled": False}}


def test_the_session_user_is_the_logged_in_user_never_the_request_body(
    hosted_app: t.Callable[..., Flask], fake: FakeOpenAI
) -> None:
    app = hosted_app()
    forged = {
        "user": "bob",
        "user_id": "bob",
        "workflow": {"id": "wf_evil"},
        "current_client_secret": "ek_fake_secret_9_bob",
    }
    assert secret(logged_in(app, "alice"), forged).status_code == 200
    bearer = {"Authorization": "Bearer token-bob"}
    assert secret(app.test_client(), {"user": "alice"}, headers=bearer).status_code == 200
    assert [(r.body["user"], r.body["workflow"]) for r in fake.requests] == [
        ("alice", {"id": WORKFLOW}),
        ("bob", {"id": WORKFLOW}),
    ]


def test_refresh_with_current_client_secret_mints_a_new_secret_for_the_same_user(
    hosted_app: t.Callable[..., Flask], fake: FakeOpenAI
) -> None:
    alice = logged_in(hosted_app(), "alice")
    first = secret(alice).get_json()["client_secret"]
    refreshed = secret(alice, {"current_client_secret": first})
    assert refreshed.status_code == 200, refreshed.data
    second = refreshed.get_json()["client_secret"]
    assert second != first
    assert [r.body["user"] for r in fake.requests] == ["alice", "alice"]
    # The current secret is never forwarded upstream or used for identity.
    assert all(first not in str(r.body) for r in fake.requests)
    # An explicit null is the ChatKit client's first call.
    assert secret(alice, {"current_client_secret": None}).status_code == 200


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        (b"{not json", "invalid_json", None),
        (b"[1, 2]", "invalid_request", None),
        (b'{"current_client_secret": 5}', "invalid_request", "current_client_secret"),
    ],
)
def test_a_malformed_body_is_400_and_nothing_is_sent_upstream(
    hosted_app: t.Callable[..., Flask],
    fake: FakeOpenAI,
    body: bytes,
    code: str,
    field: str | None,
) -> None:
    error = error_of(secret(logged_in(hosted_app(), "alice"), body), 400, code)
    assert error.get("field") == field
    assert fake.requests == []


# --- who may ask --------------------------------------------------------------------


def test_anonymous_is_401_and_nothing_is_sent_upstream(
    hosted_app: t.Callable[..., Flask], fake: FakeOpenAI
) -> None:
    app = hosted_app()
    error_of(secret(app.test_client()), 401, "unauthorized")
    error_of(
        secret(app.test_client(), headers={"Authorization": "Bearer token-mallory"}),
        401,
        "unauthorized",
    )
    assert fake.requests == []


def test_a_session_cookie_from_a_foreign_origin_is_403_but_a_bearer_token_is_not(
    hosted_app: t.Callable[..., Flask], fake: FakeOpenAI
) -> None:
    app = hosted_app()
    error_of(secret(logged_in(app, "alice"), headers={"Origin": FOREIGN}), 403, "csrf_failed")
    assert fake.requests == []
    bearer = {"Authorization": "Bearer token-alice", "Origin": FOREIGN}
    assert secret(app.test_client(), headers=bearer).status_code == 200
    assert [r.body["user"] for r in fake.requests] == ["alice"]


# --- upstream failures --------------------------------------------------------------


def _closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


ECHO = f"Incorrect API key provided: {KEY}; ek_upstream_secret_leak"

FAILURES = {
    "500": ((500, {"error": {"message": ECHO, "type": "server_error"}}), "upstream_error"),
    "401": (
        (
            401,
            {
                "error": {
                    "message": ECHO,
                    "type": "invalid_request_error",
                    "code": "invalid_api_key",
                }
            },
        ),
        "upstream_error",
    ),
    "400": ((400, {"error": {"message": ECHO, "param": "workflow"}}), "upstream_error"),
    "no secret in 200": ((200, {"id": "cksess_x", "detail": ECHO}), "upstream_error"),
    "timeout": ("hang", "upstream_timeout"),
    "connection refused": ("refused", "upstream_unreachable"),
}


@pytest.mark.parametrize("failure", list(FAILURES))
def test_upstream_failures_are_a_clear_502_without_key_secret_or_upstream_body(
    hosted_app: t.Callable[..., Flask],
    fake: FakeOpenAI,
    caplog: pytest.LogCaptureFixture,
    failure: str,
) -> None:
    reply, code = FAILURES[failure]
    config: dict[str, t.Any] = {"CHATKIT_OPENAI_TIMEOUT": 0.3}
    if reply == "refused":
        config["OPENAI_BASE_URL"] = _closed_port_url()
    else:
        fake.reply = reply
    alice = logged_in(hosted_app(**config), "alice")
    caplog.set_level(logging.DEBUG)  # every logger, the openai client's and httpx's too
    started = time.monotonic()
    response = secret(alice)
    assert time.monotonic() - started < 3
    error = error_of(response, 502, code)
    assert "OpenAI" in error["message"]
    for leak in (KEY, "ek_upstream_secret_leak", "Incorrect API key"):
        assert leak not in response.get_data(as_text=True)
        assert leak not in caplog.text
    assert "ChatKit session" in caplog.text  # the failure itself is logged
    assert len(fake.requests) == (0 if reply == "refused" else 1)


def test_retries_follow_the_configured_count(
    hosted_app: t.Callable[..., Flask], fake: FakeOpenAI
) -> None:
    fake.reply = (503, {"error": {"message": "busy"}}, {"retry-after-ms": "1"})
    alice = logged_in(hosted_app(CHATKIT_OPENAI_MAX_RETRIES=2), "alice")
    error_of(secret(alice), 502, "upstream_error")
    assert len(fake.requests) == 3  # the first try and two retries
    fake.reply = None
    assert secret(alice).status_code == 200


def test_logs_never_contain_the_api_key_or_a_minted_secret(
    hosted_app: t.Callable[..., Flask], fake: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    alice = logged_in(hosted_app(), "alice")
    caplog.set_level(logging.DEBUG)
    first = secret(alice).get_json()["client_secret"]
    second = secret(alice, {"current_client_secret": first}).get_json()["client_secret"]
    assert "cksess_1" in caplog.text and "refresh" in caplog.text  # it did log
    for leak in (KEY, first, second):
        assert leak not in caplog.text


def test_the_api_key_never_shows_in_the_config_repr(hosted_app: t.Callable[..., Flask]) -> None:
    app = hosted_app()
    sessions = app.extensions["chatkit"].state(app).sessions
    assert KEY not in repr(sessions.config)
    assert WORKFLOW in repr(sessions.config)


def test_api_key_and_base_url_come_from_the_environment_when_not_configured(
    new_app: t.Callable[..., Flask], fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    monkeypatch.setenv("OPENAI_BASE_URL", fake.base_url)
    app = new_app(CHATKIT_WORKFLOW_ID=WORKFLOW, CHATKIT_OPENAI_MAX_RETRIES=0)
    assert secret(logged_in(app, "alice")).status_code == 200
    assert fake.requests[0].headers["authorization"] == "Bearer sk-from-env"


# --- modes --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "mode"),
    [
        ({}, "self_hosted"),
        ({"CHATKIT_WORKFLOW_ID": WORKFLOW}, "both"),
        ({"CHATKIT_WORKFLOW_ID": WORKFLOW, "CHATKIT_SELF_HOSTED": "false"}, "hosted"),
        ({"CHATKIT_WORKFLOW_ID": WORKFLOW, "CHATKIT_HOSTED": False}, "self_hosted"),
        ({"CHATKIT_SELF_HOSTED": False}, "disabled"),
    ],
)
def test_the_mode_follows_the_config_and_is_visible_to_templates(
    new_app: t.Callable[..., Flask], config: dict[str, t.Any], mode: str
) -> None:
    app = new_app(OPENAI_API_KEY=KEY, **config)
    chatkit = app.extensions["chatkit"]
    with app.app_context():
        assert chatkit.mode == mode
        assert chatkit.enabled is (mode != "disabled")
        assert chatkit.hosted is (mode in ("hosted", "both"))
        assert chatkit.self_hosted is (mode in ("self_hosted", "both"))
        rendered = render_template_string(
            "{{ chatkit.mode }} {{ chatkit.enabled }} {{ chatkit.hosted }} "
            "{{ chatkit.self_hosted }}",
            chatkit=chatkit,
        )
    assert rendered == (
        f"{mode} {chatkit.state(app).enabled} {chatkit.state(app).hosted} "
        f"{chatkit.state(app).self_hosted}"
    )


def test_hosted_only_app_answers_404_naming_the_config_on_self_hosted_routes(
    hosted_app: t.Callable[..., Flask], fake: FakeOpenAI
) -> None:
    app = hosted_app(CHATKIT_SELF_HOSTED=False)
    alice = logged_in(app, "alice")
    protocol = alice.post("/chatkit", json=chatkit_request("threads.list"))
    assert "CHATKIT_SELF_HOSTED" in error_of(protocol, 404, "self_hosted_mode_disabled")["message"]
    upload = alice.post(
        "/chatkit/upload",
        data={"file": (io.BytesIO(b"hi"), "a.txt", "text/plain")},
        content_type="multipart/form-data",
    )
    error_of(upload, 404, "self_hosted_mode_disabled")
    # Anonymous clients learn nothing about the config: still 401.
    error_of(
        app.test_client().post("/chatkit", json=chatkit_request("threads.list")),
        401,
        "unauthorized",
    )
    assert secret(alice).status_code == 200
    assert len(fake.requests) == 1


def test_self_hosted_only_app_answers_404_naming_the_config_on_client_secret(
    new_app: t.Callable[..., Flask], fake: FakeOpenAI
) -> None:
    app = new_app(OPENAI_API_KEY=KEY, OPENAI_BASE_URL=fake.base_url)  # no workflow id
    alice = logged_in(app, "alice")
    error = error_of(secret(alice), 404, "hosted_mode_disabled")
    assert "CHATKIT_WORKFLOW_ID" in error["message"]
    error_of(secret(app.test_client()), 401, "unauthorized")
    assert alice.chatkit("threads.list").status == 200
    assert fake.requests == []


def test_both_modes_serve_the_protocol_and_client_secrets_from_one_app(
    store_kind: str, new_app: t.Callable[..., Flask], fake: FakeOpenAI
) -> None:
    app = new_app(
        store_kind,
        CHATKIT_WORKFLOW_ID=WORKFLOW,
        OPENAI_API_KEY=KEY,
        OPENAI_BASE_URL=fake.base_url,
        CHATKIT_OPENAI_MAX_RETRIES=0,
    )
    chatkit = app.extensions["chatkit"]

    @chatkit.respond
    def respond(thread: t.Any, user_message: t.Any, context: t.Any) -> t.Iterator[t.Any]:
        from flask_chatkit.streaming import stream_text

        yield from stream_text(thread, ["hello"])

    alice = logged_in(app, "alice")
    created = alice.chatkit("threads.create", input=user_input("hi"))
    assert created.status == 200 and "thread.created" in created.types
    assert secret(alice).get_json()["client_secret"] == "ek_fake_secret_1_alice"
    assert len(alice.chatkit("threads.list").body["data"]) == 1


@pytest.mark.parametrize(
    ("config", "named"),
    [
        ({"CHATKIT_HOSTED": True}, "CHATKIT_WORKFLOW_ID"),
        ({"CHATKIT_WORKFLOW_ID": WORKFLOW, "OPENAI_API_KEY": None}, "OPENAI_API_KEY"),
        ({"CHATKIT_SESSION_EXPIRES_AFTER": -5}, "CHATKIT_SESSION_EXPIRES_AFTER"),
        ({"CHATKIT_SESSION_RATE_LIMIT": "lots"}, "CHATKIT_SESSION_RATE_LIMIT"),
        ({"CHATKIT_SESSION_MAX_FILES": 0}, "CHATKIT_SESSION_MAX_FILES"),
        ({"CHATKIT_SELF_HOSTED": "maybe"}, "CHATKIT_SELF_HOSTED"),
        ({"CHATKIT_SESSION_FILE_UPLOAD": "sometimes"}, "CHATKIT_SESSION_FILE_UPLOAD"),
        ({"CHATKIT_OPENAI_TIMEOUT": "-1"}, "CHATKIT_OPENAI_TIMEOUT"),
    ],
)
def test_bad_hosted_config_fails_at_startup_naming_the_key(
    tmp_path: t.Any, config: dict[str, t.Any], named: str
) -> None:
    settings = {"OPENAI_API_KEY": KEY, **config}
    with pytest.raises(RuntimeError, match=named) as raised:
        make_app("memory", tmp_path, **settings)
    assert KEY not in str(raised.value)
