"""A worker SIGKILLed in the middle of a 500-stream burst, while commits are under way.

``tests/fault_app.py`` under ``gunicorn -k gevent`` on SQLite and on PostgreSQL;
every user message's insert is made 10 ms slower on purpose (a trigger, as in
tests/test_sqlite.py), so that the worker dies with commits in flight. What
must hold afterwards: every stored row parses and ids are unique, no thread is
left without its user message (a turn's start is one transaction), each user
message whose ``thread.item.done`` reached its client is stored, and each
answer whose ``thread.item.done`` reached its client is stored whole.
"""

from __future__ import annotations

import os
import selectors
import signal
import time
from pathlib import Path

import pytest

from flask_chatkit.types import ThreadItemAdapter

from .servers import WORKER_LINE
from .test_faults import ANSWER_DONE
from .test_faults import THREAD_ID
from .test_faults import Reader
from .test_faults import answer_to
from .test_faults import ask
from .test_faults import list_threads
from .test_faults import serve
from .test_faults import start_stream
from .test_sqlite import database  # noqa: F401  (the fixture: SQLite, PostgreSQL)
from .test_sqlite import slow_trigger

pytestmark = pytest.mark.server

BURST = 500
USERS = [f"burst{i}" for i in range(10)]
#: In the user message's ``thread.item.done`` only.
MESSAGE_DONE = b'"type":"thread.item.done","item":{"id":"msg_'
SLOW = 0.01  # seconds each user message's insert takes on purpose


def test_a_worker_killed_mid_commit_keeps_what_its_clients_were_told(
    database: tuple[str, str],
    tmp_path: Path,  # noqa: F811 (the fixture)
) -> None:
    kind, url = database
    reader = Reader(url)
    try:
        with reader.app.app_context(), reader.store.engine.begin() as conn:
            for statement in slow_trigger(kind, "burst", SLOW):
                conn.exec_driver_sql(statement)
        delay_function = {"FAULT_SQLITE_DELAY": 1} if kind == "sqlite" else {}
        with serve(tmp_path, url, CHATKIT_TURN_TIMEOUT=5, **delay_function) as server:
            pid = server.stats()["pid"]
            selector = selectors.DefaultSelector()
            received: dict[int, bytes] = {}
            owners: dict[int, str] = {}
            for i in range(BURST):
                sock = start_stream(server.port, USERS[i % len(USERS)], ask(5, 0.05, tag="burst"))
                sock.setblocking(False)
                selector.register(sock, selectors.EVENT_READ)
                received[sock.fileno()] = b""
                owners[sock.fileno()] = USERS[i % len(USERS)]

            def told() -> int:
                return sum(MESSAGE_DONE in data for data in received.values())

            def read_some(timeout: float) -> None:
                for key, _ in selector.select(timeout):
                    sock = key.fileobj
                    try:
                        chunk = sock.recv(65536)  # type: ignore[union-attr]
                    except (BlockingIOError, InterruptedError):
                        continue
                    except ConnectionError:
                        chunk = b""
                    if not chunk:
                        selector.unregister(sock)
                        sock.close()  # type: ignore[union-attr]
                        continue
                    received[sock.fileno()] += chunk  # type: ignore[union-attr]

            deadline = time.monotonic() + 60
            while told() < BURST // 4:  # a quarter of the turns have started: kill
                assert time.monotonic() < deadline, "the burst did not get going"
                read_some(0.05)
            os.kill(pid, signal.SIGKILL)
            at_kill = told()
            while selector.get_map() and time.monotonic() < deadline:
                read_some(0.2)
            assert not selector.get_map(), "connections still open after the kill"
            assert at_kill < BURST, "every turn had started: the kill came too late"

            booted_by = time.monotonic() + 30
            while len(set(WORKER_LINE.findall(server.log.read_text()))) < 2:
                assert time.monotonic() < booted_by, server.log.read_text()[-3000:]
                time.sleep(0.1)

            # nothing half-written
            rows = reader.raw_items()
            assert len({item_id for item_id, _ in rows}) == len(rows)
            for _, data in rows:
                ThreadItemAdapter.validate_json(data)
            for user in USERS:
                for thread_id in list_threads(server, user):
                    kinds = [item.type for item in reader.items(user, thread_id)]
                    assert kinds[:1] == ["user_message"], f"{thread_id}: {kinds}"

            # what the clients were told is kept
            told_saved = answered = 0
            for fileno, data in received.items():
                found = THREAD_ID.search(data)
                if MESSAGE_DONE not in data:
                    continue
                assert found is not None
                told_saved += 1
                items = reader.items(owners[fileno], found.group(1).decode())
                assert items and items[0].type == "user_message"
                if ANSWER_DONE in data:
                    answered += 1
                    answers = [i for i in items if i.type == "assistant_message"]
                    assert [a.content[0].text for a in answers] == [answer_to(ask(5, 0.05))]
            assert told_saved >= BURST // 4
            print(
                f"\nkill mid-commit on {kind}: {told_saved} of {BURST} clients told their"
                f" message was saved, {answered} got the whole answer"
            )
    finally:
        reader.close()
