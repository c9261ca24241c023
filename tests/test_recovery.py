"""Crashes and deploys: a turn whose worker dies or shuts down leaves no thread locked.

Under ``gunicorn -k gevent`` (``tests/fault_app.py``) on SQLite and PostgreSQL:

- a worker SIGKILLed mid-answer: its leases are short (``CHATKIT_TURN_LEASE``,
  15 s, renewed by a timer while the turn lives), so the thread is free again
  within 15 s, far sooner than ``CHATKIT_TURN_TIMEOUT`` (120 s here); the
  answer kept by the last checkpoint is followed by a visible note that it was
  interrupted (and a hidden one for the model), and Retry answers in full;
- a worker told to stop (SIGTERM, as gunicorn's graceful restart does): an
  answer that can finish within the graceful timeout finishes; one that cannot
  is saved as interrupted shortly before it runs out, and frees its thread.
"""

from __future__ import annotations

import os
import signal
import time
import typing as t
from pathlib import Path

import pytest

from flask_chatkit.testing import chatkit_request
from flask_chatkit.turn_engine import INTERRUPTED_TEXT

from .test_faults import DELTA
from .test_faults import THREAD_ID
from .test_faults import Reader
from .test_faults import Server
from .test_faults import answer_to
from .test_faults import ask
from .test_faults import database_url  # noqa: F401  (the fixture: SQLite, PostgreSQL)
from .test_faults import drop
from .test_faults import read_until
from .test_faults import reader  # noqa: F401  (the fixture)
from .test_faults import serve
from .test_faults import start_stream

# real gunicorn workers killed and stopped
pytestmark = pytest.mark.slow

#: The default lease under gevent; the test allows a second for the look.
LEASE = 15


def get_thread(server: Server, user: str, thread_id: str) -> t.Any:
    return server.post(user, chatkit_request("threads.get_by_id", thread_id=thread_id))


def wait_for_worker(server: Server, old_pid: int, limit: float = 30) -> None:
    deadline = time.monotonic() + limit
    while True:
        try:
            if server.stats()["pid"] != old_pid:
                return
        except (OSError, AssertionError):
            pass
        assert time.monotonic() < deadline, "no new worker"
        time.sleep(0.2)


def interrupted(reader: Reader, user: str, thread_id: str, text: str) -> str:
    """The thread holds the user message, a partial answer, the hidden note and the
    visible one, and no lease; the partial answer's text."""
    items = reader.items(user, thread_id)
    assert [i.type for i in items] == [
        "user_message",
        "assistant_message",
        "sdk_hidden_context",
        "task",
    ], [i.type for i in items]
    saved = items[1].content[0].text
    full = answer_to(text)
    assert saved and full.startswith(saved) and saved != full
    assert items[2].content == INTERRUPTED_TEXT
    assert items[3].task.title == "Answer interrupted" and "Retry" in items[3].task.content
    assert reader.lease_expiry(thread_id) is None
    return saved


def test_a_killed_workers_thread_is_free_within_a_lease_with_a_note_and_retry_works(
    reader: Reader, database_url: str, tmp_path: Path
) -> None:
    text = ask(60, 0.1, tag="killed")  # 6 s
    with serve(tmp_path, database_url, CHATKIT_DISCONNECT="finish") as server:
        sock = start_stream(server.port, "kim", text)
        seen = read_until(sock, b"", lambda d: d.count(DELTA) >= 12)
        thread_id = THREAD_ID.search(seen).group(1).decode()  # type: ignore[union-attr]
        time.sleep(1.2)  # a checkpoint holds part of the answer
        pid = server.stats()["pid"]
        os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        sock.close()
        wait_for_worker(server, pid)
        while True:  # the thread shows as running until its lease runs out
            thread = get_thread(server, "kim", thread_id)
            if thread["status"]["type"] == "active":
                break
            assert thread["status"]["type"] == "locked"
            assert time.monotonic() - killed < LEASE + 1, "still locked after a lease"
            time.sleep(0.25)
        freed = time.monotonic() - killed
        assert freed < LEASE + 1, freed
        saved = interrupted(reader, "kim", thread_id, text)
        assert answer_to(text).startswith(saved)
        shown = [i["type"] for i in thread["items"]["data"]]  # the note is visible
        assert shown == ["user_message", "assistant_message", "task"], shown
        note = thread["items"]["data"][2]["task"]
        assert note["type"] == "custom" and note["title"] == "Answer interrupted"
        # Retry answers in full, in place of the cut answer and its notes
        message_id = thread["items"]["data"][0]["id"]
        events = server.post(
            "kim",
            chatkit_request("threads.retry_after_item", thread_id=thread_id, item_id=message_id),
        )
        assert events[-1]["type"] == "thread.item.done"
        items = reader.items("kim", thread_id)
        assert [i.type for i in items] == ["user_message", "assistant_message"]
        assert items[1].content[0].text == answer_to(text)
    assert "Traceback" not in server.log.read_text()


def test_a_graceful_shutdown_lets_short_answers_finish_and_saves_long_ones_as_interrupted(
    reader: Reader, database_url: str, tmp_path: Path
) -> None:
    # serve() gives the worker a 5 s graceful timeout: answers still running
    # 3 s after the SIGTERM are interrupted
    short, long = ask(20, 0.1, tag="short"), ask(400, 0.05, tag="long")  # 2 s and 20 s
    with serve(tmp_path, database_url, CHATKIT_DISCONNECT="finish") as server:
        pid = server.stats()["pid"]
        long_sock = start_stream(server.port, "sam", long)
        long_seen = read_until(long_sock, b"", lambda d: d.count(DELTA) >= 5)
        long_id = THREAD_ID.search(long_seen).group(1).decode()  # type: ignore[union-attr]
        drop(long_sock, reset=False)  # its page is gone: it runs on, detached
        short_sock = start_stream(server.port, "sam", short)
        short_seen = read_until(short_sock, b"", lambda d: d.count(DELTA) >= 2)
        short_id = THREAD_ID.search(short_seen).group(1).decode()  # type: ignore[union-attr]
        os.kill(pid, signal.SIGTERM)
        stopped = time.monotonic()
        short_seen = read_until(short_sock, short_seen, lambda d: d.endswith(b"0\r\n\r\n"))
        short_sock.close()
        wait_for_worker(server, pid)
        took = time.monotonic() - stopped
        assert took < 8, took  # within the graceful timeout, not after the long answer
        # the short answer finished, whole, for its client and in the store
        assert short_seen.count(DELTA) == 20
        items = reader.items("sam", short_id)
        assert [i.type for i in items] == ["user_message", "assistant_message"]
        assert items[1].content[0].text == answer_to(short)
        # the long one was saved as interrupted and frees its thread
        interrupted(reader, "sam", long_id, long)
        thread = get_thread(server, "sam", long_id)
        assert thread["status"]["type"] == "active"
    log = server.log.read_text()
    assert "saved as interrupted" in log and "Traceback" not in log, log[-3000:]
