"""Faults of a real deployment, against ``gunicorn -k gevent tests.fault_app:app`` on loopback.

- A disconnect storm: 200 clients drop their connections at random moments
  (before the first delta, mid-stream, right after the end; half of them with a
  TCP reset). Every thread stays consistent, the worker's greenlets and pooled
  connections return to their baseline, and the next request streams normally.
  On SQLite and on PostgreSQL.
- A worker SIGKILLed while 20 streams run: the master boots a new one, nothing
  is half-written, and the next turn on an affected thread is refused as busy
  while the dead worker's lease lasts, then answered.
- Slow clients (50 that never read, 10 that read a byte every 50 ms) neither
  hold up 20 normal streams nor grow the worker's memory: the producer waits on
  its bounded queue. When they go, the greenlets go too.

``tests/fault_app.py`` streams answers made of numbered deltas (``n=``,
``delay=``, ``size=`` in the user message), so any saved text can be checked
against the full answer, and reports the worker's state at ``GET /_stats``.
Hidden items (the cancelled marker) are read from the database with our own
``SQLAlchemyStore``; everything else goes through ``/chatkit``, validated by
``tests/wire.py``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import random
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import typing as t
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC
from datetime import datetime
from http.client import HTTPConnection
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask_sqlalchemy import SQLAlchemy

from flask_chatkit import RequestContext
from flask_chatkit.server import CANCELLED_TEXT
from flask_chatkit.sqlalchemy_store import SQLAlchemyStore
from flask_chatkit.testing import chatkit_request
from flask_chatkit.testing import user_input
from flask_chatkit.turn_engine import BUSY_TEXT
from flask_chatkit.types import ThreadItemAdapter

from . import wire
from .conftest import make_app
from .servers import ROOT
from .servers import WORKER_LINE
from .servers import exchange
from .servers import free_port
from .servers import server_env
from .servers import stop_process
from .servers import wait_until_ready
from .servers import workers_booted

pytestmark = pytest.mark.server

THREAD_ID = re.compile(rb'"type":"thread\.created","thread":\{"id":"(thr_\w+)"')
DELTA = b'.text_delta"'
#: In the answer's ``thread.item.done`` only (``thread.item.added`` has no content yet).
ANSWER_DONE = b'"type":"assistant_message","content":[{"type":"output_text"'
SETTING = re.compile(r"\b(n|delay|size)=([0-9.]+)")
MIB = 1024 * 1024


def delta(index: int, size: int) -> str:
    """The *index*-th delta of an answer (as ``tests/fault_app.py`` makes it)."""
    head = f"<{index}>"
    return head + "." * max(0, size - len(head))


def full_text(deltas: int, size: int = 8) -> str:
    return "".join(delta(i, size) for i in range(deltas))


def ask(deltas: int, delay: float, size: int = 8, tag: str = "") -> str:
    """A user message asking the fault app for such an answer."""
    return f"n={deltas} delay={delay} size={size} {tag}".strip()


def answer_to(text: str) -> str:
    settings = dict(SETTING.findall(text))
    return full_text(int(settings["n"]), int(settings["size"]))


# --- the server -------------------------------------------------------------------------


@dataclasses.dataclass
class Server:
    port: int
    log: Path

    def stats(self) -> dict[str, int]:
        conn = HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request("GET", "/_stats", headers={"Connection": "close"})
            response = conn.getresponse()
            body = response.read()
        finally:
            conn.close()
        assert response.status == 200, body
        return json.loads(body)  # type: ignore[no-any-return]

    def post(self, user: str, body: dict[str, t.Any]) -> t.Any:
        """One validated request as *user*; the JSON body or the events."""
        conn = HTTPConnection("127.0.0.1", self.port, timeout=60)
        response, parsed = exchange(conn, body, {"Authorization": f"Bearer token-{user}"})
        assert response.status == 200, parsed
        return parsed

    def settle(self, baseline: dict[str, int], limit: float = 30) -> dict[str, int]:
        """Poll ``/_stats`` until greenlets and pooled connections are back near *baseline*."""
        deadline = time.monotonic() + limit
        while True:
            now = self.stats()
            if now["greenlets"] <= baseline["greenlets"] + 2 and (
                now["checkedout"] <= baseline["checkedout"]
            ):
                return now
            assert time.monotonic() < deadline, f"not back to {baseline} after {limit} s: {now}"
            time.sleep(0.25)


@contextlib.contextmanager
def sampling(server: Server, every: float = 0.2) -> t.Iterator[list[dict[str, int]]]:
    """``/_stats`` every *every* seconds in a thread, while the block runs."""
    samples: list[dict[str, int]] = []
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            samples.append(server.stats())
            stop.wait(every)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield samples
    finally:
        stop.set()
        thread.join(timeout=60)


def peak(samples: list[dict[str, int]]) -> dict[str, int]:
    return {key: max(s[key] for s in samples) for key in ("greenlets", "checkedout", "rss_kib")}


@contextlib.contextmanager
def serve(tmp: Path, url: str, **settings: t.Any) -> t.Iterator[Server]:
    """``tests.fault_app:app`` under one gevent worker on a free loopback port."""
    env = server_env(tmp / "instance", FAULT_DATABASE_URL=url, **settings)
    port = free_port()
    log = tmp / "server.log"
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "-k",
        "gevent",
        "-w",
        "1",
        "--worker-connections",
        "1000",
        "--graceful-timeout",
        "5",
        "--no-control-socket",
        "-b",
        f"127.0.0.1:{port}",
        "tests.fault_app:app",
    ]
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=out)
        try:
            wait_until_ready(proc, port, log, workers_booted(1))
            yield Server(port, log)
        finally:
            stop_process(proc)


class Reader:
    """Our own store on the server's database, to read what the API never shows."""

    def __init__(self, url: str) -> None:
        self.app = make_app("sqlalchemy", database_url=url, register=False, login=False)
        self.db: SQLAlchemy = self.app.extensions["test_db"]
        self.store: SQLAlchemyStore = self.app.extensions["test_store"]

    def items(self, user: str, thread_id: str) -> list[t.Any]:
        """Every item of the thread, hidden ones included, oldest first."""
        with self.app.app_context():
            page = self.store.load_thread_items(
                thread_id, None, 10_000, "asc", RequestContext(user_id=user), include_hidden=True
            )
        assert not page.has_more
        return list(page.data)

    def raw_items(self) -> list[tuple[str, str]]:
        """``(id, data)`` of every stored item row."""
        with self.app.app_context(), self.store.engine.connect() as conn:
            it = self.store.items
            return [(r.id, r.data) for r in conn.execute(sa.select(it.c.id, it.c.data))]

    def kinds(self, thread_id: str) -> list[str]:
        """The types of the thread's items, oldest first (without loading them)."""
        with self.app.app_context(), self.store.engine.connect() as conn:
            it = self.store.items
            query = sa.select(it.c.type).where(it.c.thread_id == thread_id)
            return list(conn.execute(query.order_by(it.c.created_at, it.c.pk)).scalars())

    def lease_expiry(self, thread_id: str) -> datetime | None:
        """When the thread's turn lease ends (UTC), or None when nobody holds it."""
        with self.app.app_context(), self.store.engine.connect() as conn:
            th = self.store.threads
            row = conn.execute(
                sa.select(th.c.turn_token, th.c.turn_expires_at).where(th.c.id == thread_id)
            ).one()
        if row.turn_token is None:
            return None
        return row.turn_expires_at.replace(tzinfo=UTC)  # type: ignore[no-any-return]

    def close(self) -> None:
        with self.app.app_context():
            self.store.engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh database: a SQLite file, or one on the suite's throwaway PostgreSQL
    (skipped without PostgreSQL, unless ``CHATKIT_REQUIRE_POSTGRES=1``)."""
    if request.param == "postgresql":
        return request.getfixturevalue("postgres_db")  # type: ignore[no-any-return]
    return f"sqlite:///{tmp_path / 'faults.db'}"


@pytest.fixture
def reader(database_url: str) -> t.Iterator[Reader]:
    store = Reader(database_url)  # creates the tables before the server starts
    try:
        yield store
    finally:
        store.close()


@pytest.fixture
def sqlite_reader(tmp_path: Path) -> t.Iterator[Reader]:
    store = Reader(f"sqlite:///{tmp_path / 'faults.db'}")
    try:
        yield store
    finally:
        store.close()


# --- raw clients ------------------------------------------------------------------------


def request_bytes(user: str, body: dict[str, t.Any]) -> bytes:
    wire.check_request(body)
    data = json.dumps(body).encode()
    return (
        b"POST /chatkit HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer token-{user}\r\nContent-Length: {len(data)}\r\n".encode()
        + b"Connection: close\r\n\r\n"
        + data
    )


def start_stream(port: int, user: str, text: str, *, rcvbuf: int | None = None) -> socket.socket:
    """A raw connection that has sent ``threads.create`` with *text*."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:  # before connecting, so the advertised window is small too
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(60)
    sock.connect(("127.0.0.1", port))
    sock.sendall(request_bytes(user, chatkit_request("threads.create", input=user_input(text))))
    return sock


def drop(sock: socket.socket, reset: bool) -> None:
    """Go away: a FIN, or with *reset* a TCP RST (``SO_LINGER`` 0)."""
    if reset:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def read_until(sock: socket.socket, data: bytes, done: t.Callable[[bytes], bool]) -> bytes:
    """Read until *done* holds for everything read; EOF or a reset ends it early."""
    while not done(data):
        try:
            chunk = sock.recv(65536)
        except ConnectionError:
            break
        if not chunk:
            break
        data += chunk
    return data


# --- consistency ------------------------------------------------------------------------


@dataclasses.dataclass
class Audit:
    answer: str  # "complete", "partial" or "absent"
    text: str
    marker: bool  # the hidden "user cancelled" note
    users: int  # user messages


def list_threads(server: Server, user: str) -> list[str]:
    ids: list[str] = []
    after = None
    while True:
        params: dict[str, t.Any] = {"limit": 100, "order": "asc"}
        if after:
            params["after"] = after
        page = server.post(user, chatkit_request("threads.list", **params))
        ids += [th["id"] for th in page["data"]]
        if not page["has_more"]:
            return ids
        after = page["after"]


def audit(server: Server, reader: Reader, user: str, thread_id: str) -> Audit:
    """Check one thread through the API and the store; what its first turn left."""
    page = server.post(
        user, chatkit_request("items.list", thread_id=thread_id, order="asc", limit=100)
    )
    assert not page["has_more"]
    shown = page["data"]
    stored = reader.items(user, thread_id)
    ids = [item.id for item in stored]
    assert len(set(ids)) == len(ids), f"duplicate item ids in {thread_id}: {ids}"
    assert [i["id"] for i in shown] == [i.id for i in stored if i.type != "sdk_hidden_context"]
    kinds = [item.type for item in stored]
    assert kinds and kinds[0] == "user_message", f"{thread_id}: no user message first: {kinds}"
    full = answer_to(stored[0].content[0].text)
    first_turn = stored[: (kinds + ["user_message"]).index("user_message", 1)]
    answers = [i for i in first_turn if i.type == "assistant_message"]
    markers = [i for i in first_turn if i.type == "sdk_hidden_context"]
    assert len(answers) <= 1 and len(markers) <= 1, f"{thread_id}: {kinds}"
    assert all(m.content == CANCELLED_TEXT for m in markers)
    if not answers:
        state, text = "absent", ""
    else:
        (text,) = [part.text for part in answers[0].content]
        assert text.strip(), f"{thread_id}: a blank answer was saved"
        assert full.startswith(text), f"{thread_id}: not a prefix of the answer: {text[:80]!r}"
        state = "complete" if text == full else "partial"
    return Audit(state, text, bool(markers), kinds.count("user_message"))


# --- 5. a disconnect storm --------------------------------------------------------------

STORM = 200
STORM_USERS = [f"storm{i}" for i in range(10)]
STORM_DELTAS = 20
STORM_DELAY = 0.05  # 1 s per answer
#: When each client goes: (plan, number of clients); a reset for every other one.
PLANS = [("sent", 15), ("created", 25), ("mid", 140), ("end", 20)]


@dataclasses.dataclass
class Dropped:
    user: str
    plan: str
    text: str
    thread_id: str | None
    deltas_seen: int


def storm_client(port: int, user: str, plan: str, reset: bool, rng: random.Random) -> Dropped:
    # those going before the first delta ask for a slow first one
    slow_start = plan in ("sent", "created")
    text = ask(
        3 if slow_start else STORM_DELTAS, 0.4 if slow_start else STORM_DELAY, tag=f"storm {plan}"
    )
    wanted = rng.randint(1, STORM_DELTAS - 1)
    sock = start_stream(port, user, text)
    data = b""
    try:
        if plan == "created":
            data = read_until(sock, data, lambda d: THREAD_ID.search(d) is not None)
        elif plan == "mid":
            data = read_until(sock, data, lambda d: d.count(DELTA) >= wanted)
        elif plan == "end":  # the answer's thread.item.done has arrived in full
            data = read_until(sock, data, lambda d: ANSWER_DONE in d and d.endswith(b"\n\n\r\n"))
    finally:
        drop(sock, reset)
    found = THREAD_ID.search(data)
    thread_id = found.group(1).decode() if found else None
    return Dropped(user, plan, text, thread_id, data.count(DELTA))


def test_a_disconnect_storm_leaves_every_thread_consistent_and_nothing_behind(
    reader: Reader, database_url: str, tmp_path: Path
) -> None:
    with serve(tmp_path, database_url) as server:
        # warm up (pool, imports), then the baseline
        server.post("warm", chatkit_request("threads.create", input=user_input(ask(2, 0))))
        baseline = server.stats()

        rng = random.Random(STORM)
        jobs = [(plan, i % 2 == 0) for plan, count in PLANS for i in range(count)]
        rng.shuffle(jobs)
        jobs = [
            (STORM_USERS[i % len(STORM_USERS)], plan, reset, random.Random(rng.random()))
            for i, (plan, reset) in enumerate(jobs)
        ]
        started = time.monotonic()
        with sampling(server) as samples, ThreadPoolExecutor(max_workers=STORM) as pool:
            dropped = list(pool.map(lambda job: storm_client(server.port, *job), jobs))
        storm_seconds = time.monotonic() - started
        after = server.settle(baseline)
        settled_seconds = time.monotonic() - started

        audit_started = time.monotonic()
        seen = {d.thread_id: d for d in dropped if d.thread_id}
        assert len(seen) >= STORM - 15, "most clients must have seen their thread created"
        states: dict[str, int] = {}
        for user in STORM_USERS:
            for thread_id in list_threads(server, user):
                result = audit(server, reader, user, thread_id)
                assert result.users == 1
                states[result.answer] = states.get(result.answer, 0) + 1
                if result.answer != "complete":
                    assert result.marker, f"{thread_id}: {result.answer} answer without marker"
                client = seen.pop(thread_id, None)
                if client is None:  # gone before it saw anything: its thread may exist
                    continue
                assert client.user == user
                # what the client saw is saved, at least
                assert result.text.startswith(answer_to(client.text)[: 8 * client.deltas_seen])
                if client.plan == "end":
                    assert result.answer == "complete" and not result.marker
        assert not seen, f"threads created for a client but missing: {sorted(seen)[:5]}"
        assert states.get("partial", 0) >= 50, states  # (the storm did hit mid-stream)

        audit_seconds = time.monotonic() - audit_started
        # and the worker serves as before
        events = server.post(
            "storm0", chatkit_request("threads.create", input=user_input(ask(STORM_DELTAS, 0.01)))
        )
        assert events[-1]["item"]["content"][0]["text"] == full_text(STORM_DELTAS, 8)
        print(
            f"\nstorm on {database_url.split(':')[0]}: clients done in"
            f" {storm_seconds:.1f} s, settled in {settled_seconds:.1f} s, audited in"
            f" {audit_seconds:.1f} s, states {states},"
            f" baseline {baseline}, peak {peak(samples)}, after {after}"
        )
    log = server.log.read_text()
    assert "Traceback" not in log, log[-3000:]


def test_in_finish_mode_a_disconnect_storm_leaves_every_answer_whole_and_no_thread_locked(
    reader: Reader, database_url: str, tmp_path: Path
) -> None:
    """``CHATKIT_DISCONNECT=finish``: the same storm, and every turn runs to its end."""
    with serve(
        tmp_path, database_url, CHATKIT_DISCONNECT="finish", CHATKIT_MAX_DETACHED_TURNS=STORM
    ) as server:
        server.post("warm", chatkit_request("threads.create", input=user_input(ask(2, 0))))
        baseline = server.stats()
        rng = random.Random(STORM + 1)
        jobs = [(plan, i % 2 == 0) for plan, count in PLANS for i in range(count)]
        rng.shuffle(jobs)
        jobs = [
            (STORM_USERS[i % len(STORM_USERS)], plan, reset, random.Random(rng.random()))
            for i, (plan, reset) in enumerate(jobs)
        ]
        with ThreadPoolExecutor(max_workers=STORM) as pool:
            dropped = list(pool.map(lambda job: storm_client(server.port, *job), jobs))
        server.settle(baseline)  # the detached turns have ended

        seen = {d.thread_id: d for d in dropped if d.thread_id}
        assert len(seen) >= STORM - 15
        threads = 0
        for user in STORM_USERS:
            for thread_id in list_threads(server, user):
                threads += 1
                result = audit(server, reader, user, thread_id)
                assert result.users == 1
                assert result.answer == "complete" and not result.marker, (thread_id, result)
                assert reader.lease_expiry(thread_id) is None, f"{thread_id} is still locked"
                client = seen.pop(thread_id, None)
                assert client is None or client.user == user
        assert not seen, f"threads created for a client but missing: {sorted(seen)[:5]}"
        assert threads >= STORM - 15
    log = server.log.read_text()
    assert "Traceback" not in log, log[-3000:]
    assert "CHATKIT_MAX_DETACHED_TURNS" not in log  # none had to be cancelled


# --- 6. a worker killed mid-stream ------------------------------------------------------

KILLED_STREAMS = 20
TURN_TIMEOUT = 10  # the dead worker's leases end about this long after the kill


def test_a_worker_killed_mid_stream_is_replaced_and_leaves_no_thread_corrupt(
    sqlite_reader: Reader, tmp_path: Path
) -> None:
    # on SQLite, where a killed process can leave a transaction half-way in the file
    reader, user = sqlite_reader, "victim"
    url = f"sqlite:///{tmp_path / 'faults.db'}"
    with serve(tmp_path, url, CHATKIT_TURN_TIMEOUT=TURN_TIMEOUT) as server:
        old_pid = server.stats()["pid"]
        text = ask(400, 0.02, tag="to be killed")  # 8 s answers
        socks = [start_stream(server.port, user, text) for _ in range(KILLED_STREAMS)]
        try:
            # every stream has shown a few deltas: kill the worker in the middle of them
            seen = [read_until(s, b"", lambda d: d.count(DELTA) >= 3) for s in socks]
            assert all(d.count(DELTA) >= 3 for d in seen)
            os.kill(old_pid, signal.SIGKILL)
            killed = time.monotonic()
            seen = [read_until(s, d, lambda _: False) for s, d in zip(socks, seen)]
        finally:
            for sock in socks:
                drop(sock, reset=False)
        threads = [THREAD_ID.search(d).group(1).decode() for d in seen]  # type: ignore[union-attr]
        assert all(not d.endswith(b"\r\n0\r\n\r\n") for d in seen), "a stream ended normally"

        # the master boots a new worker, which answers
        deadline = time.monotonic() + 30
        while len(set(WORKER_LINE.findall(server.log.read_text()))) < 2:
            assert time.monotonic() < deadline, server.log.read_text()[-3000:]
            time.sleep(0.1)
        assert server.stats()["pid"] != old_pid
        booted = time.monotonic() - killed

        # nothing half-written: every row parses, ids are unique, each thread reads back
        rows = reader.raw_items()
        assert len({item_id for item_id, _ in rows}) == len(rows)
        for _, data in rows:
            ThreadItemAdapter.validate_json(data)
        assert sorted(list_threads(server, user)) == sorted(threads)
        for thread_id in threads:
            # (the dead worker could save neither the partial answer nor the marker)
            result = audit(server, reader, user, thread_id)
            assert result.users == 1 and result.answer != "complete"

        # the next turn on each: refused as busy while the dead worker's lease lasts
        busy: dict[str, int] = {}
        waiting = list(threads)
        deadline = time.monotonic() + TURN_TIMEOUT + 20
        while waiting:
            assert time.monotonic() < deadline, f"still refused: {waiting}"
            for thread_id in list(waiting):
                expiry = reader.lease_expiry(thread_id)
                now = datetime.now(UTC)
                events = server.post(
                    user,
                    chatkit_request(
                        "threads.add_user_message",
                        thread_id=thread_id,
                        input=user_input(ask(5, 0, tag="after the kill")),
                    ),
                )
                if [e["type"] for e in events] == ["error"]:
                    assert events[0]["message"] == BUSY_TEXT, events
                    assert expiry is not None and expiry > now, "refused after the lease ended"
                    busy[thread_id] = busy.get(thread_id, 0) + 1
                    continue
                assert expiry is None or (expiry - now).total_seconds() < 1, (
                    "answered while the dead worker's lease still held"
                )
                assert events[-1]["item"]["content"][0]["text"] == full_text(5, 8)
                waiting.remove(thread_id)
            time.sleep(0.5)
        assert busy, "no turn met the dead worker's lease (did the worker take that long to boot?)"
        for thread_id in threads:
            # the killed turn's message (and what a checkpoint kept, if one landed),
            # the notes that it was interrupted, then the next turn in full
            kinds = [i.type for i in reader.items(user, thread_id)]
            notes = ["sdk_hidden_context", "task", "user_message", "assistant_message"]
            assert kinds in (
                ["user_message", *notes],
                ["user_message", "assistant_message", *notes],
            ), kinds
            assert reader.lease_expiry(thread_id) is None
        print(
            f"\nkill on sqlite: new worker after {booted:.1f} s,"
            f" busy refusals per thread {sorted(busy.values())},"
            f" {len(busy)}/{len(threads)} threads refused at first"
        )
    assert "Worker (pid:" in server.log.read_text()


# --- 7. slow clients --------------------------------------------------------------------

NEVER_READ = 50
TRICKLE = 10
NORMAL = 20
NORMAL_ASK = ask(30, 0.02, size=64, tag="normal")  # about 0.6 s
LONG_ASK = ask(8000, 0, size=1024, tag="slow")  # 8 MB, as fast as the client takes it


def normal_turns(server: Server) -> float:
    """*NORMAL* complete turns at once; how long the slowest took (seconds)."""

    def turn(_: int) -> float:
        started = time.monotonic()
        events = server.post(
            "normal", chatkit_request("threads.create", input=user_input(NORMAL_ASK))
        )
        assert events[-1]["item"]["content"][0]["text"] == answer_to(NORMAL_ASK)
        return time.monotonic() - started

    with ThreadPoolExecutor(max_workers=NORMAL) as pool:
        return max(pool.map(turn, range(NORMAL)))


def send_buffer_max() -> int:
    """The most a TCP socket's send buffer grows to here (``tcp_wmem`` max), in bytes."""
    try:
        with open("/proc/sys/net/ipv4/tcp_wmem", encoding="ascii") as f:
            return int(f.read().split()[2])
    except OSError:
        return 4 * MIB  # Linux's default


def trickle(sock: socket.socket, stop: threading.Event) -> None:
    """Read one byte every 50 ms until *stop*."""
    while not stop.wait(0.05):
        assert sock.recv(1), "the server ended a slow stream"


def test_slow_clients_neither_hold_up_other_streams_nor_grow_memory(
    sqlite_reader: Reader, tmp_path: Path
) -> None:
    reader = sqlite_reader
    with serve(tmp_path, f"sqlite:///{tmp_path / 'faults.db'}") as server:
        server.post("warm", chatkit_request("threads.create", input=user_input(ask(2, 0))))
        baseline = server.stats()
        alone = normal_turns(server)

        stop = threading.Event()
        slow = [
            start_stream(server.port, "slow", LONG_ASK, rcvbuf=4096)
            for _ in range(NEVER_READ + TRICKLE)
        ]
        tricklers = [
            threading.Thread(target=trickle, args=(sock, stop), daemon=True)
            for sock in slow[NEVER_READ:]
        ]
        for thread in tricklers:
            thread.start()
        try:
            with sampling(server) as samples:
                # each slow stream holds its connection's greenlet and a producer
                deadline = time.monotonic() + 30
                while server.stats()["greenlets"] < baseline["greenlets"] + len(slow):
                    assert time.monotonic() < deadline, server.stats()
                    time.sleep(0.2)
                loaded = normal_turns(server)
                time.sleep(2)  # the slow clients hang around
                stuck = server.stats()
                # the producers wait on their bounded queues: no slow answer got done
                slow_threads = list_threads(server, "slow")
                assert len(slow_threads) == len(slow)
                for thread_id in slow_threads:
                    # at most a checkpoint of the answer so far (CHATKIT_CHECKPOINT_INTERVAL)
                    items = reader.items("slow", thread_id)
                    assert [i.type for i in items] in (
                        ["user_message"],
                        ["user_message", "assistant_message"],
                    )
                    for answer in items[1:]:
                        text = answer.content[0].text
                        assert len(text) < len(answer_to(LONG_ASK))
        finally:
            stop.set()
            for thread in tricklers:
                thread.join(timeout=10)
            for sock in slow:
                drop(sock, reset=True)
        # Each slow stream keeps the text it produced (saved if the client goes): as
        # much as the kernel took into the socket's send buffer, plus the bounded
        # queue. Unbounded, it would be the whole 8 MB answer, twice (text and frames).
        grown = (peak(samples)["rss_kib"] - baseline["rss_kib"]) / 1024
        per_stream = send_buffer_max() / MIB + 1
        assert grown < len(slow) * per_stream, f"the worker grew by {grown:.0f} MiB"
        assert loaded < 3 * alone + 10, f"normal turns took {loaded:.1f} s ({alone:.1f} s alone)"

        dropped = time.monotonic()
        after = server.settle(baseline)
        settled = time.monotonic() - dropped
        # every stream was cancelled: a partial answer (MBs: a few read in full) and the marker
        for thread_id in slow_threads:
            assert reader.kinds(thread_id) in (
                ["user_message", "assistant_message", "sdk_hidden_context"],
                ["user_message", "sdk_hidden_context"],
            )
        for thread_id in slow_threads[:3]:
            result = audit(server, reader, "slow", thread_id)
            assert result.answer == "partial" and result.marker
        partial = sum("assistant_message" in reader.kinds(th) for th in slow_threads)
        print(
            f"\nslow clients: normal turns {alone:.1f} s alone, {loaded:.1f} s beside"
            f" {len(slow)} slow clients; baseline {baseline}, peak {peak(samples)}, while"
            f" stuck {stuck}, after {after} ({settled:.1f} s after they went); RSS growth"
            f" {grown:.1f} MiB; {partial}/{len(slow)} partial answers saved"
        )
    log = server.log.read_text()
    assert "Traceback" not in log, log[-3000:]
