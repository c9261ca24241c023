"""Bounded: abandoned connections cannot keep unbounded model calls running.

- ``CHATKIT_MAX_TURNS_PER_USER``: a user's turns across every worker and host
  on one database. Past it a new turn is refused with an error event before
  anything is saved (no thread, no message). In-process on the three stores,
  then under ``gunicorn -k gevent`` on SQLite and PostgreSQL with two servers on
  one database: six turns started at once against a limit of two let exactly
  two through.
- ``CHATKIT_MAX_DETACHED_TURNS``: with ``finish``, past it a disconnect cancels
  (and says so in the log).
"""

from __future__ import annotations

import threading
import time
import typing as t
from http.client import HTTPConnection
from pathlib import Path

import pytest
from flask import Flask

from flask_chatkit import stream_text
from flask_chatkit.server import CANCELLED_TEXT
from flask_chatkit.testing import chatkit_request
from flask_chatkit.testing import user_input

from .conftest import logged_in
from .conftest import make_app
from .servers import exchange
from .streams import Stream
from .streams import deltas
from .streams import paced
from .test_faults import DELTA
from .test_faults import THREAD_ID
from .test_faults import Reader
from .test_faults import answer_to
from .test_faults import ask
from .test_faults import database_url  # noqa: F401  (the fixture: SQLite, PostgreSQL)
from .test_faults import drop
from .test_faults import list_threads
from .test_faults import read_until
from .test_faults import reader  # noqa: F401  (the fixture)
from .test_faults import serve
from .test_faults import start_stream

CREATE = chatkit_request("threads.create", input=user_input("tell me a story"))


def refused(events: list[dict[str, t.Any]]) -> bool:
    """One error event saying the user runs too many answers, and nothing else."""
    return [e["type"] for e in events] == ["error"] and "answers running" in events[0]["message"]


# --- in-process ------------------------------------------------------------------------


@pytest.fixture
def app(store_kind: str, tmp_path: t.Any) -> Flask:
    app = make_app(
        store_kind, tmp_path, CHATKIT_HEARTBEAT_INTERVAL=0, CHATKIT_MAX_TURNS_PER_USER="1"
    )

    @app.extensions["chatkit"].respond
    def respond(thread: t.Any, message: t.Any, context: t.Any) -> t.Any:
        yield from stream_text(thread, paced([f"w{i} " for i in range(20)], 0.002))

    return app


def test_past_the_users_limit_a_turn_is_refused_before_anything_is_saved(app: Flask) -> None:
    alice = logged_in(app, "alice")
    first = Stream(alice, CREATE)
    first.read_until(lambda events: len(deltas(events)) >= 2)
    thread_id = first.events[0]["thread"]["id"]

    second = alice.chatkit("threads.create", input=user_input("another"))
    assert second.status == 200 and refused(second.events), second.events
    more = alice.chatkit(
        "threads.add_user_message", thread_id=thread_id, input=user_input("more")
    )  # the same thread: busy or over, refused
    assert [e["type"] for e in more.events] == ["error"]
    threads = alice.chatkit("threads.list", limit=10, order="desc").body
    assert [th["id"] for th in threads["data"]] == [thread_id]  # no thread was created

    first.finish()  # once the first answer ends, alice may start the next
    again = alice.chatkit("threads.create", input=user_input("again"))
    assert again.types[-1] == "thread.item.done", again.events


def test_the_limit_is_a_whole_number_and_0_or_unset_is_none(tmp_path: t.Any) -> None:
    for value in ("0", "", None):
        app = make_app("memory", tmp_path, CHATKIT_MAX_TURNS_PER_USER=value)
        assert app.extensions["chatkit"].state(app).server.max_turns_per_user is None
    with pytest.raises(RuntimeError, match="CHATKIT_MAX_TURNS_PER_USER"):
        make_app("memory", tmp_path, CHATKIT_MAX_TURNS_PER_USER="many")


# --- under gunicorn ------------------------------------------------------------------------


@pytest.mark.server
def test_a_users_limit_holds_across_two_servers_when_six_turns_start_at_once(
    reader: Reader, database_url: str, tmp_path: Path
) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    settings = {"CHATKIT_MAX_TURNS_PER_USER": 2}
    with (
        serve(tmp_path / "a", database_url, **settings) as a,
        serve(tmp_path / "b", database_url, **settings) as b,
    ):
        results: list[t.Any] = []
        gate = threading.Barrier(7)

        def turn(port: int, n: int, user: str) -> None:
            conn = HTTPConnection("127.0.0.1", port, timeout=60)
            body = chatkit_request("threads.create", input=user_input(ask(20, 0.05, tag=str(n))))
            gate.wait()
            _, events = exchange(conn, body, {"Authorization": f"Bearer token-{user}"})
            if user == "lim":
                results.append(events)
            else:  # another user's turn at the same time is not counted against lim
                assert events[-1]["type"] == "thread.item.done", events

        threads = [
            threading.Thread(target=turn, args=(server.port, n, "lim"))
            for n, server in enumerate([a, b] * 3)
        ]
        threads.append(threading.Thread(target=turn, args=(a.port, 7, "free")))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert len(list_threads(a, "free")) == 1
        answered = [events for events in results if events[-1]["type"] == "thread.item.done"]
        refusals = [events for events in results if refused(events)]
        assert len(results) == 6 and len(answered) == 2 and len(refusals) == 4, results
        assert len(list_threads(a, "lim")) == 2  # refused turns saved nothing
        # the places are free again afterwards, on either server
        events = b.post("lim", CREATE)
        assert events[-1]["type"] == "thread.item.done"
    for server in (a, b):
        assert "CHATKIT_MAX_TURNS_PER_USER" in server.log.read_text()


@pytest.mark.server
def test_past_the_detached_limit_a_disconnect_cancels_and_says_so(
    reader: Reader, database_url: str, tmp_path: Path
) -> None:
    text = ask(40, 0.05, tag="detached")  # 2 s
    with serve(
        tmp_path, database_url, CHATKIT_DISCONNECT="finish", CHATKIT_MAX_DETACHED_TURNS=2
    ) as server:
        socks = [start_stream(server.port, f"det{n}", text) for n in range(4)]
        ids = []
        for sock in socks:
            seen = read_until(sock, b"", lambda d: d.count(DELTA) >= 2)
            ids.append(THREAD_ID.search(seen).group(1).decode())  # type: ignore[union-attr]
        for sock in socks:
            drop(sock, reset=False)
        deadline = time.monotonic() + 20
        while any(reader.lease_expiry(thread_id) for thread_id in ids):
            assert time.monotonic() < deadline, "turns still running"
            time.sleep(0.2)
        whole = cancelled = 0
        for n, thread_id in enumerate(ids):
            items = reader.items(f"det{n}", thread_id)
            if items[-1].type == "assistant_message":
                assert items[-1].content[0].text == answer_to(text)
                whole += 1
            else:
                assert items[-1].content == CANCELLED_TEXT
                cancelled += 1
        assert (whole, cancelled) == (2, 2)
    assert "CHATKIT_MAX_DETACHED_TURNS" in server.log.read_text()
