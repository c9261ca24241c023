"""Bodies cut short, against the example app under a real gunicorn gevent worker.

A client announces more bytes in ``Content-Length`` than it sends, then closes its
side of the connection. Gunicorn hands the app what arrived and then an end of
stream, and a multipart body with its closing boundary parses fine, so only the
blueprint can tell: every body it reads (``/chatkit``, direct and two-phase
uploads, ``/chatkit/client_secret``) answers a JSON 400 ``incomplete_body`` and
stores nothing. The same requests sent whole still succeed. Last, the same 400
where werkzeug itself notices the early end (servers that leave the stream open).
"""

from __future__ import annotations

import json
import socket
import sqlite3
import typing as t
from http.client import HTTPConnection
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from flask_chatkit import RequestContext
from flask_chatkit import stream_text
from flask_chatkit.testing import chatkit_request
from flask_chatkit.testing import user_input

from . import wire
from .conftest import logged_in
from .conftest import make_app
from .openai_fake import FakeOpenAI
from .servers import cli
from .servers import exchange
from .servers import http_login
from .servers import server_env
from .test_attachments import PNG
from .test_attachments import files_in
from .test_attachments import path_of
from .test_attachments import stored
from .test_hostile_sizes import Server
from .test_hostile_sizes import read_response
from .test_hostile_sizes import start

BOUNDARY = "cutshort"
MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"
#: How many announced bytes never arrive.
MISSING = 100


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> t.Iterator[Server]:
    yield from start(tmp_path_factory, "incomplete")


@pytest.fixture(scope="module")
def fake_openai() -> t.Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture(scope="module")
def hosted(tmp_path_factory: pytest.TempPathFactory, fake_openai: FakeOpenAI) -> t.Iterator[Server]:
    """Hosted mode too: client secrets minted by the fake OpenAI."""
    yield from start(
        tmp_path_factory,
        "incomplete-hosted",
        CHATKIT_WORKFLOW_ID="wf_cut",
        OPENAI_API_KEY="sk-test-cut-short",
        OPENAI_BASE_URL=fake_openai.base_url,
        CHATKIT_OPENAI_MAX_RETRIES=0,
    )


def instance(server: Server) -> Path:
    return server.log.parent / "instance"


def bearer(server: Server) -> list[str]:
    return [f"Authorization: Bearer {server.token}"]


def cookie(server: Server) -> list[str]:
    """A session cookie from the real login form, with the page's own Origin."""
    # (the demo password may have gone to the CLI's output rather than the log: set one)
    cli(server_env(instance(server)), "set-password", "demo", "--password", "cut-short-pw")
    session = http_login(server.port, "demo", "cut-short-pw")
    return [f"Cookie: {session}", f"Origin: http://127.0.0.1:{server.port}"]


def send(
    server: Server, path: str, content_type: str, body: bytes, headers: list[str], missing: int = 0
) -> tuple[int, bytes]:
    """POST *body* on a connection of its own, announcing ``len(body) + missing`` bytes,
    then close our side (``SHUT_WR``) and read the answer."""
    head = "\r\n".join(
        [
            f"POST {path} HTTP/1.1",
            f"Host: 127.0.0.1:{server.port}",
            f"Content-Type: {content_type}",
            f"Content-Length: {len(body) + missing}",
            *headers,
        ]
    )
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(head.encode() + b"\r\n\r\n" + body)
        sock.shutdown(socket.SHUT_WR)
        return read_response(sock, 30)


def assert_incomplete(status: int, body: bytes) -> None:
    """The JSON 400 of a body cut short (never HTML, never a traceback)."""
    assert status == 400, body[:300]
    error = json.loads(body)
    wire.check_error(status, error)
    assert error["error"]["code"] == "incomplete_body", error
    assert "Content-Length" in error["error"]["message"]


def multipart(data: bytes, filename: str = "cat.png", mime: str = "image/png") -> bytes:
    """A whole multipart body: one ``file`` part, then the closing boundary."""
    return (
        (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="{filename}"\r\nContent-Type: {mime}\r\n\r\n'
        ).encode()
        + data
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )


def rows(server: Server, table: str) -> int:
    with sqlite3.connect(instance(server) / "example.db") as db:
        return int(db.execute(f"select count(*) from {table}").fetchone()[0])  # noqa: S608


def stored_files(server: Server) -> list[str]:
    """Everything in the attachments folder (stray ``.part`` files included)."""
    folder = instance(server) / "chatkit_attachments"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def post(server: Server, body: dict[str, t.Any]) -> tuple[int, t.Any]:
    """One validated, whole ``POST /chatkit`` with the bearer token."""
    response, parsed = exchange(
        HTTPConnection("127.0.0.1", server.port, timeout=30),
        body,
        {"Authorization": f"Bearer {server.token}"},
    )
    return response.status, parsed


def pending_upload_path(server: Server) -> str:
    """The signed upload URL (path and query) of a fresh two-phase attachment."""
    status, created = post(
        server,
        chatkit_request("attachments.create", name="cat.png", size=len(PNG), mime_type="image/png"),
    )
    assert status == 200, created
    url = urlsplit(created["upload_descriptor"]["url"])
    return f"{url.path}?{url.query}"


# --- POST /chatkit ---------------------------------------------------------------------


@pytest.mark.server
def test_a_protocol_request_cut_short_is_a_400_and_creates_no_thread(server: Server) -> None:
    request = chatkit_request("threads.create", input=user_input("cut short"))
    body = json.dumps(request).encode()
    threads, items = rows(server, "chatkit_threads"), rows(server, "chatkit_items")

    # The JSON is whole and valid, but the announced length never arrives.
    assert_incomplete(
        *send(server, "/chatkit", "application/json", body, bearer(server), missing=MISSING)
    )
    assert (rows(server, "chatkit_threads"), rows(server, "chatkit_items")) == (threads, items)

    status, events = post(server, request)  # the same request, whole
    assert status == 200 and events[0]["type"] == "thread.created"
    assert rows(server, "chatkit_threads") == threads + 1


@pytest.mark.server
def test_a_whole_json_body_then_a_half_close_is_served(server: Server) -> None:
    body = json.dumps(chatkit_request("threads.list")).encode()
    status, answer = send(server, "/chatkit", "application/json", body, bearer(server))
    assert status == 200, answer
    wire.THREAD_PAGE.validate_python(json.loads(answer))


# --- direct uploads --------------------------------------------------------------------


@pytest.mark.server
@pytest.mark.parametrize("auth", [bearer, cookie])
def test_a_direct_upload_cut_short_after_its_closing_boundary_stores_nothing(
    server: Server, auth: t.Callable[[Server], list[str]]
) -> None:
    headers = auth(server)
    before_rows, before_files = rows(server, "chatkit_attachments"), stored_files(server)
    body = multipart(PNG)
    assert_incomplete(*send(server, "/chatkit/upload", MULTIPART, body, headers, missing=MISSING))
    assert rows(server, "chatkit_attachments") == before_rows
    assert stored_files(server) == before_files

    status, answer = send(server, "/chatkit/upload", MULTIPART, body, headers)
    assert status == 200, answer
    attachment = json.loads(answer)
    wire.ATTACHMENT.validate_python(attachment)
    assert stored_files(server) == sorted([*before_files, attachment["id"]])


@pytest.mark.server
def test_a_direct_upload_cut_short_inside_its_file_stores_nothing(server: Server) -> None:
    before_rows, before_files = rows(server, "chatkit_attachments"), stored_files(server)
    body = multipart(PNG)[:-200]  # no closing boundary either
    assert_incomplete(
        *send(server, "/chatkit/upload", MULTIPART, body, bearer(server), missing=200)
    )
    assert rows(server, "chatkit_attachments") == before_rows
    assert stored_files(server) == before_files


@pytest.mark.server
def test_bytes_after_the_closing_boundary_that_all_arrive_are_fine(server: Server) -> None:
    body = multipart(PNG) + b"an epilogue the parser ignores\r\n"
    status, answer = send(server, "/chatkit/upload", MULTIPART, body, bearer(server))
    assert status == 200, answer
    assert json.loads(answer)["id"] in stored_files(server)


# --- two-phase uploads -----------------------------------------------------------------


@pytest.mark.server
@pytest.mark.parametrize("how", ["multipart", "raw"])
def test_a_two_phase_upload_cut_short_keeps_the_url_usable_for_a_retry(
    server: Server, how: str
) -> None:
    path = pending_upload_path(server)
    before_files = stored_files(server)
    content_type, body = (MULTIPART, multipart(PNG)) if how == "multipart" else ("image/png", PNG)
    # The signed URL is the only credential (no cookie, no bearer token).
    assert_incomplete(*send(server, path, content_type, body, [], missing=MISSING))
    assert stored_files(server) == before_files

    status, answer = send(server, path, content_type, body, [])  # the same URL, whole
    assert status == 200, answer
    attachment = json.loads(answer)
    wire.ATTACHMENT.validate_python(attachment)
    assert attachment["id"] in stored_files(server)
    replay = send(server, path, content_type, body, [])
    assert replay[0] == 409, replay  # and then it is used up


# --- POST /chatkit/client_secret -------------------------------------------------------


@pytest.mark.server
def test_a_client_secret_request_cut_short_mints_nothing(
    hosted: Server, fake_openai: FakeOpenAI
) -> None:
    body = b'{"current_client_secret": null}'
    minted = len(fake_openai.requests)
    assert_incomplete(
        *send(
            hosted,
            "/chatkit/client_secret",
            "application/json",
            body,
            bearer(hosted),
            missing=MISSING,
        )
    )
    assert len(fake_openai.requests) == minted

    status, answer = send(
        hosted, "/chatkit/client_secret", "application/json", body, bearer(hosted)
    )
    assert status == 200, answer
    assert json.loads(answer)["client_secret"].startswith("ek_fake_secret_")
    assert len(fake_openai.requests) == minted + 1


# --- servers that leave the stream open (werkzeug notices first) -----------------------


@pytest.mark.parametrize("how", ["protocol", "two-phase raw"])
def test_werkzeugs_own_early_end_is_the_same_json_400(tmp_path: Path, how: str) -> None:
    # Without wsgi.input_terminated (the test client, werkzeug's dev server), werkzeug
    # bounds the body by Content-Length itself and raises ClientDisconnected when it
    # ends early. (Not shown for multipart: werkzeug's parser then drops its spooled
    # file unclosed, which this suite's warnings-as-errors would report.)
    app = make_app("memory", tmp_path)

    @app.extensions["chatkit"].respond
    def respond(thread: t.Any, message: t.Any, context: t.Any) -> t.Any:
        yield from stream_text(thread, "ok")  # pragma: no cover - refused before it

    client = app.test_client()
    if how == "protocol":
        path, content_type = "/chatkit", "application/json"
        body = json.dumps(chatkit_request("threads.create", input=user_input("cut"))).encode()
    else:
        created = logged_in(app, "alice").chatkit(
            "attachments.create", name="cat.png", size=len(PNG), mime_type="image/png"
        )
        path, content_type, body = (
            path_of(created.body["upload_descriptor"]["url"]),
            "image/png",
            PNG,
        )
    response = client.post(
        path,
        data=body,
        content_type=content_type,
        buffered=True,
        headers={"Authorization": "Bearer token-alice"},
        environ_overrides={"CONTENT_LENGTH": str(len(body) + MISSING)},
    )
    assert response.mimetype == "application/json"
    assert_incomplete(response.status_code, response.data)
    assert files_in(app) == []
    context = RequestContext(user_id="alice")
    with app.app_context():
        store = app.extensions["chatkit"].server.store
        assert store.load_threads(20, None, "desc", context).data == []
    if how != "protocol":
        assert stored(app, created.body["id"], "alice").metadata["upload_pending"]
        assert client.post(path, data=body, content_type=content_type).status_code == 200
