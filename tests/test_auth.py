"""Who may call the ChatKit endpoints: login (session or bearer) and CSRF checks."""

from __future__ import annotations

import io
import json
import os
import typing as t

import pytest
from flask import Flask
from flask import request

from flask_chatkit import stream_text
from flask_chatkit.auth import bearer_token
from flask_chatkit.testing import chatkit_request
from flask_chatkit.testing import user_input

from .conftest import ORIGIN
from .conftest import any_store
from .conftest import logged_in
from .conftest import make_app

FOREIGN = "https://evil.example"


def _protocol(client: t.Any, headers: dict[str, str] | None = None, body: t.Any = None) -> t.Any:
    data = body if body is not None else chatkit_request("threads.list")
    return client.post(
        "/chatkit",
        data=data if isinstance(data, (bytes, str)) else json.dumps(data),
        content_type="application/json",
        headers=headers or {},
        buffered=True,  # run streams to the end, as a real client would
    )


def _upload(client: t.Any, headers: dict[str, str] | None = None) -> t.Any:
    return client.post(
        "/chatkit/upload",
        data={"file": (io.BytesIO(b"hello"), "note.txt", "text/plain")},
        content_type="multipart/form-data",
        headers=headers or {},
        buffered=True,
    )


def _client_secret(client: t.Any, headers: dict[str, str] | None = None) -> t.Any:
    return client.post("/chatkit/client_secret", json={}, headers=headers or {}, buffered=True)


ENDPOINTS = {"protocol": _protocol, "upload": _upload, "client_secret": _client_secret}


def _no_origin(client: t.Any) -> t.Any:
    """Drop the conftest client's default same-origin ``Origin`` header."""
    client.environ_base.pop("HTTP_ORIGIN", None)
    return client


def _assert_error(response: t.Any, status: int, code: str) -> None:
    assert response.status_code == status, response.data
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert body["error"]["message"]


def _attachment_files(app: Flask) -> list[str]:
    folder = app.config["CHATKIT_ATTACHMENTS_FOLDER"]
    return os.listdir(folder) if os.path.isdir(folder) else []


def _thread_ids(client: t.Any) -> list[str]:
    ex = client.chatkit("threads.list")
    assert ex.status == 200
    return [th["id"] for th in ex.body["data"]]


@pytest.fixture
def answers(chatkit: t.Any) -> list[str]:
    """Register a respond hook; the list records the users it answered."""
    seen: list[str] = []

    @chatkit.respond
    def respond(thread: t.Any, message: t.Any, context: t.Any) -> t.Any:
        seen.append(context.user_id)
        yield from stream_text(thread, "ok")

    return seen


# --- anonymous -----------------------------------------------------------------


@any_store
@pytest.mark.parametrize("endpoint", sorted(ENDPOINTS))
def test_anonymous_requests_get_json_401(app: Flask, endpoint: str) -> None:
    response = ENDPOINTS[endpoint](app.test_client())
    _assert_error(response, 401, "unauthorized")
    assert "Location" not in response.headers  # no login redirect
    assert _attachment_files(app) == []


def test_anonymous_two_phase_upload_and_preview_are_401(app: Flask, alice: t.Any) -> None:
    created = alice.chatkit("attachments.create", name="a.png", size=3, mime_type="image/png")
    att_id = created.body["id"]
    anon = app.test_client()
    _assert_error(anon.put(f"/chatkit/upload/{att_id}", data=b"abc"), 401, "unauthorized")
    _assert_error(anon.get(f"/chatkit/attachments/{att_id}/preview"), 401, "unauthorized")
    assert _attachment_files(app) == []


@any_store
def test_anonymous_invalid_json_is_401_not_400(app: Flask) -> None:
    response = _protocol(app.test_client(), body=b"{not json")
    _assert_error(response, 401, "unauthorized")


@any_store
def test_anonymous_oversized_body_is_401_before_size_check(
    store_kind: str, tmp_path: t.Any
) -> None:
    app = make_app(store_kind, tmp_path, CHATKIT_MAX_REQUEST_SIZE=50)
    response = _protocol(app.test_client(), body=b"x" * 500)
    _assert_error(response, 401, "unauthorized")


# --- session cookie ---------------------------------------------------------------


def test_session_cookie_with_same_origin_can_write(alice: t.Any, answers: list[str]) -> None:
    ex = alice.chatkit("threads.create", input=user_input("hi"))
    assert ex.status == 200
    assert answers == ["alice"]
    assert _thread_ids(alice) == [ex.events[0]["thread"]["id"]]


@any_store
@pytest.mark.parametrize("endpoint", sorted(ENDPOINTS))
def test_session_cookie_with_foreign_origin_is_403_and_writes_nothing(
    app: Flask, alice: t.Any, answers: list[str], endpoint: str
) -> None:
    if endpoint == "protocol":
        body = chatkit_request("threads.create", input=user_input("hi"))
        response = _protocol(alice, {"Origin": FOREIGN}, body=body)
    else:
        response = ENDPOINTS[endpoint](alice, {"Origin": FOREIGN})
    _assert_error(response, 403, "csrf_failed")
    assert answers == []
    assert _thread_ids(alice) == []
    assert _attachment_files(app) == []


def test_two_phase_upload_url_is_csrf_checked(app: Flask, alice: t.Any) -> None:
    created = alice.chatkit("attachments.create", name="a.txt", size=3, mime_type="text/plain")
    url = f"/chatkit/upload/{created.body['id']}"
    response = alice.put(url, data=b"abc", content_type="text/plain", headers={"Origin": FOREIGN})
    _assert_error(response, 403, "csrf_failed")
    assert _attachment_files(app) == []
    # Still pending, so the genuine upload goes through afterwards.
    assert alice.put(url, data=b"abc", content_type="text/plain").status_code == 200


def test_image_preview_needs_login_but_no_origin(app: Flask) -> None:
    # <img> requests carry the cookie but no Origin; a GET changes nothing.
    client = _no_origin(logged_in(app, "alice"))
    body = client.post(
        "/chatkit/upload",
        data={"file": (io.BytesIO(b"\x89PNG"), "a.png", "image/png")},
        content_type="multipart/form-data",
        headers={"Origin": ORIGIN},
    ).get_json()
    preview = client.get(f"/chatkit/attachments/{body['id']}/preview", buffered=True)
    assert preview.status_code == 200
    assert preview.data == b"\x89PNG"


@any_store
def test_csrf_check_runs_before_the_body_is_parsed(alice: t.Any) -> None:
    response = _protocol(alice, {"Origin": FOREIGN}, body=b"{not json")
    _assert_error(response, 403, "csrf_failed")


@any_store
@pytest.mark.parametrize(
    ("headers", "allowed"),
    [
        ({"Origin": ORIGIN}, True),
        ({"Origin": ORIGIN + "/"}, True),
        ({"Referer": ORIGIN + "/app/chat?x=1"}, True),
        ({"Referer": FOREIGN + "/page"}, False),
        ({}, False),
        ({"Origin": "null"}, False),
        ({"Origin": "null", "Referer": FOREIGN + "/"}, False),
        ({"Origin": "http://localhost:8080"}, False),
        ({"Origin": "https://localhost"}, False),
        ({"Origin": "http://localhost.evil.example"}, False),
        ({"Origin": FOREIGN, "Referer": ORIGIN + "/"}, False),
    ],
    ids=[
        "same-origin",
        "same-origin-trailing-slash",
        "same-origin-referer",
        "foreign-referer",
        "no-origin-no-referer",
        "origin-null",
        "origin-null-foreign-referer",
        "other-port",
        "other-scheme",
        "suffix-host",
        "foreign-origin-wins-over-referer",
    ],
)
def test_session_cookie_origin_rules(app: Flask, headers: dict[str, str], allowed: bool) -> None:
    client = _no_origin(logged_in(app, "alice"))
    response = _protocol(client, headers)
    if allowed:
        assert response.status_code == 200, response.data
    else:
        _assert_error(response, 403, "csrf_failed")


@any_store
@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("https://a.example", True),
        ("https://b.example", True),
        ("https://b.example/", True),
        (ORIGIN, True),
        ("https://c.example", False),
        ("http://a.example", False),
    ],
)
def test_configured_allowed_origins_pass_csrf(
    store_kind: str, tmp_path: t.Any, origin: str, allowed: bool
) -> None:
    app = make_app(
        store_kind, tmp_path, CHATKIT_ALLOWED_ORIGINS="https://a.example, https://b.example"
    )
    client = logged_in(app, "alice")
    for endpoint in ("protocol", "upload"):
        response = ENDPOINTS[endpoint](client, {"Origin": origin})
        if allowed:
            assert response.status_code == 200, (endpoint, response.data)
        else:
            _assert_error(response, 403, "csrf_failed")


# --- bearer token -------------------------------------------------------------------


def test_bearer_token_works_without_cookie(app: Flask, alice: t.Any, answers: list[str]) -> None:
    client = _no_origin(app.test_client())
    body = chatkit_request("threads.create", input=user_input("hi"))
    response = _protocol(client, {"Authorization": "Bearer token-alice"}, body=body)
    assert response.status_code == 200, response.data
    assert response.mimetype == "text/event-stream"
    assert answers == ["alice"]
    assert "Set-Cookie" not in response.headers
    # The thread belongs to alice: her cookie session sees it.
    assert len(_thread_ids(alice)) == 1


@any_store
@pytest.mark.parametrize(
    "header",
    ["Bearer token-mallory", "Bearer ", "Bearer", "Basic dG9rZW4tYWxpY2U6", "token-alice"],
)
def test_invalid_bearer_token_is_401(app: Flask, header: str) -> None:
    for endpoint in ENDPOINTS.values():
        _assert_error(endpoint(app.test_client(), {"Authorization": header}), 401, "unauthorized")


@pytest.mark.parametrize("endpoint", sorted(ENDPOINTS))
def test_bearer_token_is_not_subject_to_csrf(app: Flask, endpoint: str) -> None:
    headers = {"Authorization": "Bearer token-alice", "Origin": FOREIGN}
    response = ENDPOINTS[endpoint](app.test_client(), headers)
    # client_secret answers 404 (hosted mode off) once auth and CSRF pass.
    expected = 404 if endpoint == "client_secret" else 200
    assert response.status_code == expected, response.data
    if expected == 404:
        _assert_error(response, 404, "hosted_mode_disabled")


def test_bearer_token_with_foreign_origin_can_write(
    app: Flask, alice: t.Any, answers: list[str]
) -> None:
    client = app.test_client()
    body = chatkit_request("threads.create", input=user_input("hi"))
    headers = {"Authorization": "Bearer token-alice", "Origin": FOREIGN}
    assert _protocol(client, headers, body=body).status_code == 200
    assert answers == ["alice"]
    assert len(_thread_ids(alice)) == 1


def test_session_wins_over_bearer_so_csrf_still_applies(alice: t.Any, answers: list[str]) -> None:
    body = chatkit_request("threads.create", input=user_input("hi"))
    headers = {"Authorization": "Bearer token-alice", "Origin": FOREIGN}
    _assert_error(_protocol(alice, headers, body=body), 403, "csrf_failed")
    _assert_error(_upload(alice, headers), 403, "csrf_failed")
    assert answers == []
    assert _thread_ids(alice) == []


def test_session_user_wins_over_another_users_bearer_token(
    alice: t.Any, bob: t.Any, answers: list[str]
) -> None:
    body = chatkit_request("threads.create", input=user_input("hi"))
    response = _protocol(alice, {"Authorization": "Bearer token-bob"}, body=body)
    assert response.status_code == 200
    assert answers == ["alice"]
    assert len(_thread_ids(alice)) == 1
    assert _thread_ids(bob) == []


def test_bearer_request_does_not_mark_a_later_cookie_request(app: Flask, alice: t.Any) -> None:
    # The bearer marker lives in ``g`` and must not leak into the next request.
    bearer = {"Authorization": "Bearer token-alice", "Origin": FOREIGN}
    assert _protocol(app.test_client(), bearer).status_code == 200
    _assert_error(_protocol(alice, {"Origin": FOREIGN}), 403, "csrf_failed")


def test_client_secret_passes_auth_and_csrf_for_a_same_origin_session(alice: t.Any) -> None:
    _assert_error(_client_secret(alice), 404, "hosted_mode_disabled")


# --- bearer_token() ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Bearer abc", "abc"),
        ("bearer abc", "abc"),
        ("BEARER abc", "abc"),
        ("BeArEr  abc  ", "abc"),
        ("Bearer ", None),
        ("Bearer    ", None),
        ("Bearer", None),
        ("", None),
        ("Basic abc", None),
        ("Token abc", None),
        ("Bearerabc", None),
        ("abc", None),
    ],
)
def test_bearer_token_parsing(header: str, expected: str | None) -> None:
    app = make_app(login=False)
    with app.test_request_context(headers={"Authorization": header} if header else {}):
        assert bearer_token() == expected
        assert bearer_token(request) == expected


def test_bearer_token_without_authorization_header_is_none() -> None:
    app = make_app(login=False)
    with app.test_request_context():
        assert bearer_token() is None
