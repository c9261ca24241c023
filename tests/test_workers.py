"""The example app under real ``gunicorn -k gevent`` workers against PostgreSQL.

- Two workers, two turns on one thread fired at the same moment on separate
  connections, round after round: never interleaved; one answers, the other is
  refused in-stream (or they run one after the other), and the thread stays
  consistent.
- One worker with a pool of two connections serves thirty slow streams at once:
  a stream holds a connection only while it reads or writes, never while it
  waits for the model.

The database is migrated with the real CLI (``flask db upgrade heads``), the
user and token come from the CLI too, and ``DATABASE_URL`` is given the way a
host would (``postgresql://``, no driver). Every request and event is validated
by ``tests/wire.py``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
import typing as t
import uuid
from concurrent.futures import ThreadPoolExecutor
from http.client import HTTPConnection
from pathlib import Path

import pytest

from flask_chatkit.testing import chatkit_request
from flask_chatkit.testing import user_input
from flask_chatkit.turn_engine import BUSY_TEXT

from .pg import PostgresServer
from .servers import cli
from .servers import exchange
from .servers import run_gunicorn
from .servers import server_env

pytestmark = pytest.mark.server

ROUNDS = 10
STREAMS = 30
SLOW_DELTAS = 30
SLOW_DELAY = 0.1  # 30 deltas: each /slow stream takes about 3 s


@dataclasses.dataclass
class Server:
    port: int
    env: dict[str, str]
    token: str

    def connect(self, timeout: float = 60.0) -> HTTPConnection:
        return HTTPConnection("127.0.0.1", self.port, timeout=timeout)


@pytest.fixture
def database(postgres: PostgresServer) -> t.Iterator[tuple[str, str]]:
    """``(name, DATABASE_URL)`` of a fresh database, the URL without a driver name."""
    name = f"w_{uuid.uuid4().hex[:12]}"
    url = postgres.create_database(name)
    try:
        yield name, url.replace("postgresql+psycopg://", "postgresql://", 1)
    finally:
        postgres.drop_database(name)


@contextlib.contextmanager
def gunicorn(tmp: Path, url: str, workers: int, **settings: t.Any) -> t.Iterator[Server]:
    """Migrate, add a user and token with the CLI, then serve with *workers* gevent workers."""
    env = server_env(tmp / "instance", DATABASE_URL=url, **settings)
    cli(env, "db", "upgrade", "heads")
    cli(env, "create-user", "tester", "--password", "secret")
    token = cli(env, "create-token", "tester").strip().splitlines()[-1]
    log = tmp / "server.log"
    with run_gunicorn(
        env, workers=workers, log=log, extra_args=["--graceful-timeout", "5"]
    ) as port:
        time.sleep(0.5)  # the workers' create_app (pool warm-up) is done by now
        yield Server(port, env, token)
    text = log.read_text()
    assert "Traceback" not in text, text[-3000:]


def send(conn: HTTPConnection, server: Server, body: dict[str, t.Any]) -> t.Any:
    """POST one validated request on *conn*, read to the end; the JSON body or events."""
    response, parsed = exchange(conn, body, {"Authorization": f"Bearer {server.token}"})
    assert response.status == 200, parsed
    return parsed


def post(server: Server, body: dict[str, t.Any]) -> t.Any:
    return send(server.connect(), server, body)


def assistant_texts(events: list[dict[str, t.Any]]) -> list[str]:
    return [
        e["item"]["content"][0]["text"]
        for e in events
        if e["type"] == "thread.item.done" and e["item"]["type"] == "assistant_message"
    ]


def echo_of(text: str) -> str:
    return f"You said: “{text}”."


# --- two workers, one thread -------------------------------------------------------------


def test_two_workers_never_interleave_two_turns_on_one_thread(
    postgres: PostgresServer, database: tuple[str, str], tmp_path: Path
) -> None:
    name, url = database
    # echo answers of ~20 words, 0.03 s apart: the two turns of a round overlap
    with gunicorn(tmp_path, url, workers=2, DEMO_STREAM_DELAY=0.03) as server:
        first = post(server, chatkit_request("threads.create", input=user_input("round 0")))
        thread_id = first[0]["thread"]["id"]
        answered = ["round 0"]
        refused = 0
        for round_ in range(1, ROUNDS + 1):
            texts = [f"round {round_} tab a", f"round {round_} tab b"]
            conns = [server.connect() for _ in texts]
            for conn in conns:
                conn.connect()  # both connections open before either request goes out
            barrier = threading.Barrier(len(texts))

            def turn(i: int) -> t.Any:
                body = chatkit_request(
                    "threads.add_user_message", thread_id=thread_id, input=user_input(texts[i])
                )
                barrier.wait(timeout=10)
                return send(conns[i], server, body)

            with ThreadPoolExecutor(max_workers=len(texts)) as pool:
                replies = list(pool.map(turn, range(len(texts))))
            winners = []
            for text, events in zip(texts, replies):
                if events[-1]["type"] == "error":
                    # refused before anything was saved: the busy error, and nothing else
                    assert [e["type"] for e in events] == ["error"], events
                    assert events[0]["message"] == BUSY_TEXT
                    refused += 1
                else:
                    assert events[0]["type"] == "thread.item.done"
                    assert events[0]["item"]["content"][0]["text"] == text
                    (answer,) = assistant_texts(events)
                    assert answer.startswith(echo_of(text))
                    winners.append(text)
            assert winners, f"round {round_}: both turns were refused"
            answered += sorted(winners)  # (both win only if they ran one after the other)

        items = post(
            server, chatkit_request("items.list", thread_id=thread_id, order="asc", limit=100)
        )["data"]
        assert len({i["id"] for i in items}) == len(items)
        kinds = [i["type"] for i in items]
        assert kinds == ["user_message", "assistant_message"] * (len(items) // 2)
        pairs = list(zip(items[::2], items[1::2]))
        asked = [user["content"][0]["text"] for user, _ in pairs]
        assert sorted(asked) == sorted(answered)
        for user, answer in pairs:  # every message is followed by its own answer
            assert answer["content"][0]["text"].startswith(echo_of(user["content"][0]["text"]))

        with postgres.admin(name) as conn:
            # nothing hidden either (no cancelled turns), and the lease is free again
            types = conn.execute(
                "SELECT type, count(*) FROM chatkit_items WHERE thread_id = %s GROUP BY type",
                (thread_id,),
            ).fetchall()
            assert dict(types) == {"user_message": len(pairs), "assistant_message": len(pairs)}
            lease = conn.execute(
                "SELECT turn_token FROM chatkit_threads WHERE id = %s", (thread_id,)
            ).fetchone()
            assert lease == (None,)

        # (a test of overlapping turns: most rounds must really have overlapped)
        assert refused >= ROUNDS // 2, "the turns of a round hardly ever overlapped"
        last = post(
            server,
            chatkit_request(
                "threads.add_user_message", thread_id=thread_id, input=user_input("one more")
            ),
        )
        assert assistant_texts(last)[0].startswith(echo_of("one more"))


# --- a small pool, many streams ------------------------------------------------------------


def test_thirty_slow_streams_share_a_pool_of_two_connections(
    postgres: PostgresServer, database: tuple[str, str], tmp_path: Path
) -> None:
    name, url = database
    settings = {
        "DATABASE_POOL_SIZE": 2,
        "DATABASE_MAX_OVERFLOW": 0,
        "DATABASE_POOL_TIMEOUT": 5,
        "DEMO_SLOW_DELAY": SLOW_DELAY,
        "DEMO_SLOW_CHUNKS": SLOW_DELTAS,
    }
    with gunicorn(tmp_path, url, workers=1, **settings) as server:
        seen: list[int] = []
        stop = threading.Event()

        def watch() -> None:
            # how many connections the app holds on its database, every 20 ms
            with postgres.admin() as conn:
                while not stop.is_set():
                    row = conn.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (name,)
                    ).fetchone()
                    seen.append(row[0] if row else 0)
                    time.sleep(0.02)

        def slow(i: int) -> tuple[float, float, t.Any]:
            sent = time.monotonic()
            events = post(server, chatkit_request("threads.create", input=user_input(f"/slow {i}")))
            return sent, time.monotonic(), events

        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            started = time.monotonic()
            with ThreadPoolExecutor(max_workers=STREAMS) as pool:
                results = list(pool.map(slow, range(STREAMS)))
            elapsed = time.monotonic() - started
        finally:
            stop.set()
            watcher.join(timeout=10)

        expected = " ".join(str(n) for n in range(1, SLOW_DELTAS + 1))
        for _, _, events in results:
            assert "error" not in [e["type"] for e in events], events[-1]
            assert assistant_texts(events) == [expected]
        # all thirty were streaming at once (each takes ~3 s)...
        assert max(sent for sent, _, _ in results) < min(done for _, done, _ in results)
        assert elapsed < 3 * SLOW_DELTAS * SLOW_DELAY, f"{STREAMS} streams took {elapsed:.1f} s"
        # ...on never more than the pool's two connections
        assert len(seen) > 20 and max(seen) <= 2, seen
        listed = post(server, chatkit_request("threads.list", limit=100))["data"]
        assert len(listed) == STREAMS
