"""The example app under a real ``gunicorn -k gevent`` worker, on loopback.

One server (one worker) is started per module from ``wsgi.py``; the tests log
in through the form, stream with the session cookie and with a bearer token
from the CLI, read 100 ``/slow`` streams at once, and drop a connection
mid-stream. Every request and event is validated by ``tests/wire.py``.
"""

from __future__ import annotations

import dataclasses
import json
import re
import socket
import sqlite3
import time
import typing as t
from concurrent.futures import ThreadPoolExecutor
from http.client import HTTPConnection
from pathlib import Path

import pytest

from flask_chatkit.testing import chatkit_request
from flask_chatkit.testing import user_input

from .servers import cli
from .servers import exchange
from .servers import http_login
from .servers import run_gunicorn
from .servers import server_env

pytestmark = pytest.mark.server

DEMO_LINE = re.compile(r"Demo login: username=(\S+) password=(\S+)")
STREAMS = 100
SLOW_DELTAS = 40


@dataclasses.dataclass
class Server:
    port: int
    env: dict[str, str]
    instance: Path
    password: str

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def connect(self, timeout: float = 60.0) -> HTTPConnection:
        return HTTPConnection("127.0.0.1", self.port, timeout=timeout)


@dataclasses.dataclass
class Reply:
    status: int
    headers: t.Any
    body: t.Any

    @property
    def types(self) -> list[str]:
        return [e["type"] for e in self.body]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> t.Iterator[Server]:
    tmp = tmp_path_factory.mktemp("gunicorn")
    instance = tmp / "instance"
    # the library's default: a disconnect cancels (the disconnect tests check what it
    # saves); finish mode has its own tests (test_faults, test_cancel, test_browser)
    env = server_env(instance, CHATKIT_DISCONNECT="cancel")
    log = tmp / "server.log"
    # ready once the worker has logged the demo password (and the port answers)
    with run_gunicorn(env, workers=1, log=log, ready=DEMO_LINE.search) as port:
        demo = DEMO_LINE.search(log.read_text())
        assert demo is not None
        yield Server(port, env, instance, demo.group(2))


@pytest.fixture(scope="module")
def token(server: Server) -> str:
    """A bearer token for ``demo`` from the real CLI, run like an operator would."""
    return cli(server.env, "create-token", "demo").strip().splitlines()[-1]


def post(server: Server, body: dict[str, t.Any], headers: dict[str, str]) -> Reply:
    """One validated ``POST /chatkit`` on its own connection, read to the end."""
    response, parsed = exchange(server.connect(), body, headers)
    return Reply(response.status, response.headers, parsed)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def slow_turn(server: Server, token: str) -> tuple[float, float, Reply]:
    sent = time.monotonic()
    reply = post(
        server, chatkit_request("threads.create", input=user_input("/slow")), bearer(token)
    )
    return sent, time.monotonic(), reply


def assert_complete_slow_reply(reply: Reply) -> None:
    assert reply.status == 200
    deltas = [
        e
        for e in reply.body
        if e["type"] == "thread.item.updated"
        and e["update"]["type"] == "assistant_message.content_part.text_delta"
    ]
    assert len(deltas) == SLOW_DELTAS
    last = reply.body[-1]
    assert last["type"] == "thread.item.done" and last["item"]["type"] == "assistant_message"
    expected = " ".join(str(n) for n in range(1, SLOW_DELTAS + 1))
    assert last["item"]["content"][0]["text"] == expected


def test_login_form_then_stream_with_the_session_cookie(server: Server) -> None:
    cookie = http_login(server.port, "demo", server.password)

    body = chatkit_request("threads.create", input=user_input("hello over gunicorn"))
    reply = post(server, body, {"Cookie": cookie, "Origin": server.origin})
    assert reply.status == 200
    assert reply.types[:3] == ["thread.created", "thread.item.done", "stream_options"]
    assert reply.body[-1]["item"]["content"][0]["text"].startswith(
        "You said: “hello over gunicorn”"
    )
    foreign = post(server, body, {"Cookie": cookie, "Origin": "http://evil.example"})
    assert foreign.status == 403 and foreign.body["error"]["code"] == "csrf_failed"


def test_stream_headers_and_a_turn_with_a_cli_bearer_token(server: Server, token: str) -> None:
    reply = post(
        server, chatkit_request("threads.create", input=user_input("token turn")), bearer(token)
    )
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("text/event-stream")
    assert reply.headers["X-Accel-Buffering"] == "no"
    assert reply.headers["Cache-Control"] == "no-cache"
    assert "thread.updated" in reply.types
    listed = post(server, chatkit_request("threads.list", limit=5), bearer(token))
    assert "token turn" in [th.get("title") for th in listed.body["data"]]
    assert post(server, chatkit_request("threads.list"), bearer(token + "x")).status == 401


def test_one_worker_serves_a_hundred_slow_streams_at_once(server: Server, token: str) -> None:
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=STREAMS) as pool:
        results = list(pool.map(lambda _: slow_turn(server, token), range(STREAMS)))
    elapsed = time.monotonic() - started
    for _, _, reply in results:
        assert_complete_slow_reply(reply)
    # Every request was sent before the first stream (4 s long) had finished...
    assert max(sent for sent, _, _ in results) < min(done for _, done, _ in results)
    # ...and all of them took about as long as one: far below 100 x 4 s in a row.
    assert elapsed < 40, f"{STREAMS} streams took {elapsed:.1f} s"


def read_until(sock: socket.socket, pattern: bytes, count: int, limit: float = 20.0) -> bytes:
    data = b""
    deadline = time.monotonic() + limit
    while data.count(pattern) < count:
        assert time.monotonic() < deadline, data[-500:]
        chunk = sock.recv(65536)
        assert chunk, data[-500:]
        data += chunk
    return data


def slow_turn_left_after(server: Server, token: str, *, deltas: int) -> tuple[bytes, str]:
    """Start ``/slow`` on a raw connection and close it after *deltas* text deltas;
    the bytes read and the new thread's id."""
    body = json.dumps(chatkit_request("threads.create", input=user_input("/slow"))).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=20) as sock:
        sock.sendall(
            b"POST /chatkit HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {token}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        seen = read_until(sock, b'.text_delta"', deltas)
    found = re.search(rb'"thread":\{[^{]*?"id":"(thr_\w+)"', seen)
    assert found is not None, seen[:500]
    return seen, found.group(1).decode()


def saved_answers(server: Server, token: str, thread_id: str) -> list[str]:
    """The texts of the thread's assistant messages, once the server has saved any
    (a stopped stream is saved when the server notices; bounded wait)."""
    deadline = time.monotonic() + 15
    texts: list[str] = []
    while time.monotonic() < deadline and not texts:
        time.sleep(0.2)
        page = post(
            server, chatkit_request("items.list", thread_id=thread_id, order="asc"), bearer(token)
        )
        texts = [
            i["content"][0]["text"] for i in page.body["data"] if i["type"] == "assistant_message"
        ]
    return texts


def test_client_disconnect_mid_stream_keeps_the_partial_answer(server: Server, token: str) -> None:
    _, thread_id = slow_turn_left_after(server, token, deltas=5)
    # gone after a few deltas; the server notices before its next write
    texts = saved_answers(server, token, thread_id)
    assert len(texts) == 1, "the partial answer was not saved"
    numbers = texts[0].split()
    assert 5 <= len(numbers) < SLOW_DELTAS
    assert numbers == [str(n) for n in range(1, len(numbers) + 1)]

    # The hidden "user cancelled" note is never sent to clients: read it from the database.
    with sqlite3.connect(server.instance / "example.db") as db:
        rows = db.execute(
            "select data from chatkit_items where thread_id = ? and type = 'sdk_hidden_context'",
            (thread_id,),
        ).fetchall()
    assert len(rows) == 1
    assert "cancelled" in json.loads(rows[0][0])["content"]


def test_a_closed_connection_saves_exactly_the_deltas_the_client_received(
    server: Server, token: str
) -> None:
    # Writes into a connection the client has closed still succeed until its reset
    # comes back; the server checks for the client's FIN before each write instead.
    for delta_count in (3, 7):
        seen, thread_id = slow_turn_left_after(server, token, deltas=delta_count)
        received = seen.count(b'.text_delta"')  # a read may hold one more than asked
        texts = saved_answers(server, token, thread_id)
        assert len(texts) == 1, "the partial answer was not saved"
        assert texts[0].split() == [str(n) for n in range(1, received + 1)]
