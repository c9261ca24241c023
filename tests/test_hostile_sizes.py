"""Hostile sizes against the example app under a real gunicorn gevent worker, raw sockets.

A "1 GB" body (declared, or chunked without a length), a million-item
``item_ids`` and a 100 MB message text, to ``/chatkit`` and to ``/chatkit/upload``:
each is refused early (413 once the limit is known to be passed, 400 for a
list or text over its cap when an operator raised CHATKIT_MAX_REQUEST_SIZE),
the connection is closed without the worker reading the whole body, the
worker's memory stays bounded (VmRSS and its peak VmHWM from
``/proc/<worker>/status``), and it keeps answering other requests throughout.

Only behaviour and bounded costs are asserted; the measured numbers are
printed (``pytest -s``) for the record.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import re
import select
import socket
import time
import typing as t
from pathlib import Path

import pytest

from flask_chatkit.limits import MAX_FEEDBACK_ITEMS
from flask_chatkit.limits import MAX_TEXT_LENGTH
from flask_chatkit.testing import chatkit_request
from flask_chatkit.testing import user_input

from .servers import WORKER_LINE
from .servers import cli
from .servers import run_gunicorn
from .servers import server_env

pytestmark = pytest.mark.server

MiB = 1024 * 1024
GIB = 1024 * MiB
#: What the hostile clients send at most, "as fast as the socket allows".
SEND_AT_MOST = 64 * MiB
#: The growth of the worker's memory (current and peak) allowed for any refused request.
MEMORY_BOUND = 50 * MiB
CHUNK = 256 * 1024
RAISED_LIMIT = 128 * MiB  # an operator's CHATKIT_MAX_REQUEST_SIZE, above 100 MB


@dataclasses.dataclass
class Server:
    port: int
    token: str
    log: Path

    @property
    def worker(self) -> int:
        """The pid of the (only) worker: the child of the gunicorn master."""
        return int(WORKER_LINE.findall(self.log.read_text())[-1])

    def memory(self) -> tuple[int, int]:
        """The worker's (VmRSS, VmHWM) in bytes."""
        status = Path(f"/proc/{self.worker}/status").read_text()
        found = dict(re.findall(r"^(VmRSS|VmHWM):\s+(\d+) kB", status, re.M))
        return int(found["VmRSS"]) * 1024, int(found["VmHWM"]) * 1024

    def head(self, path: str, content_type: str, length: int | None) -> bytes:
        framing = (
            f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
        )
        return (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
            f"Authorization: Bearer {self.token}\r\nContent-Type: {content_type}\r\n"
            f"{framing}\r\n\r\n"
        ).encode()


def start(
    tmp_path_factory: pytest.TempPathFactory, name: str, **settings: t.Any
) -> t.Iterator[Server]:
    tmp = tmp_path_factory.mktemp(name)
    env = server_env(tmp / "instance", DEMO_STREAM_DELAY=0, **settings)
    log = tmp / "server.log"
    with run_gunicorn(env, workers=1, log=log) as port:
        server = Server(port, cli(env, "create-token", "demo").strip().splitlines()[-1], log)
        assert_answers(server)  # warm: imports done, pools open
        yield server
        assert "Traceback" not in log.read_text(), log.read_text()[-3000:]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> t.Iterator[Server]:
    """Default limits: CHATKIT_MAX_REQUEST_SIZE 4 MiB, CHATKIT_UPLOAD_MAX_BYTES 25 MiB."""
    yield from start(tmp_path_factory, "sizes-default")


@pytest.fixture(scope="module")
def raised(tmp_path_factory: pytest.TempPathFactory) -> t.Iterator[Server]:
    """An operator who raised CHATKIT_MAX_REQUEST_SIZE to 128 MiB."""
    yield from start(tmp_path_factory, "sizes-raised", CHATKIT_MAX_REQUEST_SIZE=RAISED_LIMIT)


# --- raw HTTP --------------------------------------------------------------------------


def request(server: Server, raw: bytes) -> tuple[int, bytes]:
    """One whole request on its own connection; (status, body)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=120) as sock:
        sock.sendall(raw)
        return read_response(sock, 120)


def read_response(sock: socket.socket, timeout: float) -> tuple[int, bytes]:
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    assert length, head  # every answer here is a whole JSON body
    while len(body) < int(length.group(1)):
        chunk = sock.recv(65536)
        assert chunk, "connection closed mid-response"
        body += chunk
    return int(head.split()[1]), body


def json_request(server: Server, body: t.Any) -> bytes:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return server.head("/chatkit", "application/json", len(data)) + data


def assert_answers(server: Server) -> None:
    status, body = request(server, json_request(server, chatkit_request("threads.list")))
    assert status == 200, body


def assert_error(status: int, body: bytes, expected: int, code: str) -> dict[str, t.Any]:
    assert status == expected, body[:300]
    error = json.loads(body)["error"]
    assert error["code"] == code, error
    assert len(body) < 1000  # no echo of the input
    return error  # type: ignore[no-any-return]


@dataclasses.dataclass
class Refusal:
    status: int
    body: bytes
    sent_before_answer: int  # body bytes sent when the answer could be read
    sent_in_total: int  # body bytes the socket took before the server closed it
    closed: bool


def flood(server: Server, head: bytes, *, chunked: bool) -> Refusal:
    """Send *head*, then body bytes as fast as the socket takes them, up to SEND_AT_MOST.

    Watches for the answer after every send (and once right after the headers);
    after the answer, keeps sending until the server closes the connection or the
    socket stops taking data for 10 s. Checks that another client is served meanwhile.
    """
    payload = b"x" * CHUNK
    if chunked:
        payload = b"%x\r\n" % CHUNK + payload + b"\r\n"
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    try:
        sock.sendall(head)
        sent, answer = 0, None
        if select.select([sock], [], [], 2.0)[0]:
            answer = read_response(sock, 30)
            answered_at = 0
        sock.setblocking(False)
        closed = False
        checked_others = False
        while sent < SEND_AT_MOST:
            if answer is None and select.select([sock], [], [], 0)[0]:
                sock.setblocking(True)
                answer, answered_at = read_response(sock, 30), sent
                sock.setblocking(False)
            if not select.select([], [sock], [], 10.0)[1]:
                break  # the server stopped reading
            try:
                sent += sock.send(payload)
            except OSError as exc:
                assert exc.errno in (errno.EPIPE, errno.ECONNRESET), exc
                closed = True
                break
            if not checked_others and sent >= 8 * MiB:
                assert_answers(server)  # the worker serves others meanwhile
                checked_others = True
        if answer is None:  # not answered while sending
            sock.setblocking(True)
            answer, answered_at = read_response(sock, 30), sent
        if not closed:
            closed = closes_soon(sock)
    finally:
        sock.close()
    return Refusal(answer[0], answer[1], answered_at, sent, closed)


def closes_soon(sock: socket.socket, timeout: float = 30.0) -> bool:
    """Whether the server closes *sock* within *timeout* (reading anything it still sends)."""
    sock.setblocking(True)
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass
    except TimeoutError:
        return False
    return True


def measured(
    server: Server, action: t.Callable[[], t.Any], label: str, bound: int = MEMORY_BOUND
) -> t.Any:
    """Run *action*; check the worker's memory (now and peak) grew less than *bound*."""
    rss_before, peak_before = server.memory()
    result = action()
    time.sleep(0.2)
    rss_after, peak_after = server.memory()
    print(
        f"\n{label}: {result!r:.300}\n  worker RSS {rss_before / MiB:.1f} -> "
        f"{rss_after / MiB:.1f} MiB, peak {peak_before / MiB:.1f} -> {peak_after / MiB:.1f} MiB"
    )
    assert rss_after - rss_before < bound, (rss_before, rss_after)
    assert peak_after - peak_before < bound, (peak_before, peak_after)
    return result


# --- 1 GB bodies -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "path,content_type,code",
    [
        ("/chatkit", "application/json", "request_too_large"),
        ("/chatkit/upload", "multipart/form-data; boundary=b", "file_too_large"),
    ],
)
def test_a_declared_1_gb_body_is_a_413_right_after_the_headers(
    server: Server, path: str, content_type: str, code: str
) -> None:
    head = server.head(path, content_type, GIB)
    refusal = measured(server, lambda: flood(server, head, chunked=False), f"1 GB to {path}")
    assert_error(refusal.status, refusal.body, 413, code)
    assert refusal.sent_before_answer == 0  # answered before a single body byte
    # Gunicorn discards the unread body until its keep-alive timeout, then closes:
    # the connection ends without the server reading (or keeping) 1 GB.
    assert refusal.closed
    assert_answers(server)


@pytest.mark.parametrize(
    "path,content_type,code,limit",
    [
        ("/chatkit", "application/json", "request_too_large", 4 * MiB),
        ("/chatkit/upload", "multipart/form-data; boundary=b", "file_too_large", 25 * MiB),
    ],
)
def test_an_endless_chunked_body_is_refused_once_over_the_limit_not_buffered_whole(
    server: Server, path: str, content_type: str, code: str, limit: int
) -> None:
    head = server.head(path, content_type, None)
    if path == "/chatkit/upload":  # a file part that never ends
        head += (
            b"%x\r\n" % 100
            + (
                b'--b\r\nContent-Disposition: form-data; name="file"; '
                b'filename="a.txt"\r\nContent-Type: text/plain\r\n\r\n'
            ).ljust(100, b" ")
            + b"\r\n"
        )
    refusal = measured(server, lambda: flood(server, head, chunked=True), f"chunked to {path}")
    assert_error(refusal.status, refusal.body, 413, code)
    # read up to the limit (plus what the sockets buffer), not to the end
    assert limit <= refusal.sent_before_answer < limit + 16 * MiB, refusal.sent_before_answer
    assert refusal.closed
    assert_answers(server)


# --- a million ids, 100 MB of text -----------------------------------------------------


def million_ids(server: Server) -> bytes:
    ids = [f"msg_{n:016x}" for n in range(1_000_000)]
    body = chatkit_request("items.feedback", thread_id="thr_x", item_ids=ids, kind="positive")
    return json.dumps(body).encode()


def huge_text() -> bytes:
    return json.dumps(
        chatkit_request("threads.create", input=user_input("x" * 100_000_000))
    ).encode()


def test_a_million_item_ids_is_a_413_by_default_and_a_400_naming_the_list_when_read(
    server: Server, raised: Server
) -> None:
    data = million_ids(server)
    assert len(data) > 20_000_000
    status, body = measured(
        server, lambda: request(server, json_request(server, data)), "1M item_ids, default limit"
    )
    assert_error(status, body, 413, "request_too_large")

    # Read whole under the raised limit: parsing a million strings costs memory for
    # the moment (the operator's choice), refused by the list cap before any store call.
    status, body = measured(
        raised,
        lambda: request(raised, json_request(raised, data)),
        "1M item_ids, raised limit",
        bound=15 * len(data),
    )
    error = assert_error(status, body, 400, "invalid_request")
    assert error["field"] == "params.item_ids" and str(MAX_FEEDBACK_ITEMS) in error["message"]
    assert_answers(raised)


def test_a_100_mb_text_is_a_413_by_default_and_a_400_naming_the_content_when_read(
    server: Server, raised: Server
) -> None:
    data = huge_text()
    status, body = measured(
        server, lambda: request(server, json_request(server, data)), "100 MB text, default limit"
    )
    assert_error(status, body, 413, "request_too_large")

    # Read whole under the raised limit (the operator's choice costs ~2x the body in
    # memory while parsing), then refused by the text cap: nothing stored or streamed.
    rss_before, _ = raised.memory()
    status, body = request(raised, json_request(raised, data))
    error = assert_error(status, body, 400, "invalid_request")
    assert error["field"] == "params.input.content"
    assert str(MAX_TEXT_LENGTH) in error["message"]
    rss_after, peak = raised.memory()
    print(
        f"\n100 MB text, raised limit: {status} {body[:200]!r}\n  worker RSS "
        f"{rss_before / MiB:.1f} -> {rss_after / MiB:.1f} MiB, peak {peak / MiB:.1f} MiB"
    )
    assert rss_after - rss_before < MEMORY_BOUND  # given back once refused
    listed = request(raised, json_request(raised, chatkit_request("threads.list")))
    assert listed[0] == 200 and json.loads(listed[1])["data"] == []


# --- small bodies that parse big -------------------------------------------------------


def test_a_body_under_the_limit_made_of_tiny_objects_keeps_memory_bounded(server: Server) -> None:
    count = (4 * MiB - 200) // 3
    data = (
        b'{"type":"threads.add_client_tool_output","params":{"thread_id":"thr_none",'
        b'"result":[' + b",".join([b"{}"] * count) + b"]}}"
    )
    assert len(data) <= 4 * MiB
    status, body = measured(
        server,
        lambda: request(server, json_request(server, data)),
        "4 MiB of tiny objects, default limit",
    )
    # refused by counting braces before parsing: 1.4M objects never become Python objects
    assert_error(status, body, 400, "request_too_complex")
