"""The explicit Stop: ``POST {prefix}/cancel`` stops a thread's running turn wherever it runs.

In-process on the three stores (the turn stops at its next event), then under
``gunicorn -k gevent`` (``tests/fault_app.py``) on SQLite and PostgreSQL: a
Stop asked of the worker that runs the turn ends it at once even while its
responder is silent (the greenlet is interrupted), and one asked of another
server on the same database reaches it through its lease within a second or
two. Each time the partial answer and the cancel note are saved, the stream
ends, and the thread takes the next turn.
"""

from __future__ import annotations

import json
import re
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

from .conftest import any_store
from .conftest import logged_in
from .conftest import make_app
from .streams import Stream
from .streams import deltas
from .streams import paced
from .test_faults import DELTA
from .test_faults import THREAD_ID
from .test_faults import Reader
from .test_faults import answer_to
from .test_faults import ask
from .test_faults import database_url  # noqa: F401  (the fixture: SQLite, PostgreSQL)
from .test_faults import read_until
from .test_faults import reader  # noqa: F401  (the fixture)
from .test_faults import serve
from .test_faults import start_stream
from .test_sse import stored_items
from .test_sse import text_of

CREATE = chatkit_request("threads.create", input=user_input("tell me a story"))


def cancel(client: t.Any, thread_id: t.Any, **headers: str) -> t.Any:
    return client.post("/chatkit/cancel", json={"thread_id": thread_id}, headers=headers)


# --- in-process ------------------------------------------------------------------------


@pytest.fixture
def app(store_kind: str, tmp_path: t.Any) -> Flask:
    app = make_app(store_kind, tmp_path, CHATKIT_HEARTBEAT_INTERVAL=0)
    chunks = [f"w{i} " for i in range(40)]

    @app.extensions["chatkit"].respond
    def respond(thread: t.Any, message: t.Any, context: t.Any) -> t.Any:
        yield from stream_text(thread, paced(chunks, 0.002))

    return app


def test_a_stop_saves_the_partial_answer_ends_the_stream_and_frees_the_thread(app: Flask) -> None:
    alice = logged_in(app, "alice")
    stream = Stream(alice, CREATE)
    stream.read_until(lambda events: len(deltas(events)) >= 3)
    thread_id = stream.events[0]["thread"]["id"]

    stopped = cancel(alice, thread_id)
    assert stopped.status_code == 200 and stopped.get_json() == {"stopped": True}
    events = stream.finish()  # the stream ends without the answer's done event
    assert not any(
        e["type"] == "thread.item.done" and e["item"]["type"] == "assistant_message" for e in events
    )
    items = stored_items(app, thread_id)
    assert [i.type for i in items] == ["user_message", "assistant_message", "sdk_hidden_context"]
    assert "".join(deltas(events)).startswith(text_of(items[1]))
    assert text_of(items[1]) != "".join(f"w{i} " for i in range(40))
    assert items[2].content == CANCELLED_TEXT
    # nothing runs now: a second Stop says so; the thread takes the next turn
    assert cancel(alice, thread_id).get_json() == {"stopped": False}
    again = alice.chatkit(
        "threads.add_user_message", thread_id=thread_id, input=user_input("again")
    )
    assert again.status == 200 and again.types[-1] == "thread.item.done", again.body


def test_a_stop_answers_404_for_unknown_and_foreign_threads_alike(app: Flask) -> None:
    alice, bob = logged_in(app, "alice"), logged_in(app, "bob")
    created = alice.chatkit("threads.create", input=user_input("hi"))
    thread_id = created.events[0]["thread"]["id"]
    foreign = cancel(bob, thread_id)
    unknown = cancel(bob, "thr_nope")
    assert foreign.status_code == unknown.status_code == 404
    mine, other = foreign.get_json()["error"], unknown.get_json()["error"]
    assert mine["code"] == other["code"] and mine.get("field") == other.get("field") == "thread_id"
    assert mine["message"].replace(thread_id, "?") == other["message"].replace("thr_nope", "?")


@any_store
@pytest.mark.parametrize("body", [b"{", b"[]", b'{"thread_id": 7}', b'{"thread_id": ""}'])
def test_a_stop_without_a_thread_id_is_a_400_naming_it(app: Flask, body: bytes) -> None:
    response = logged_in(app, "alice").post(
        "/chatkit/cancel", data=body, content_type="application/json"
    )
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] in ("invalid_json", "invalid_request") and error["message"]


def test_a_stop_takes_the_same_auth_and_csrf_checks_as_chatkit(app: Flask) -> None:
    anonymous = app.test_client().post("/chatkit/cancel", json={"thread_id": "thr_x"})
    assert anonymous.status_code == 401
    cookie = logged_in(app, "alice")
    del cookie.environ_base["HTTP_ORIGIN"]  # a cookie-authenticated write from nowhere
    refused = cookie.post("/chatkit/cancel", json={"thread_id": "thr_x"})
    assert refused.status_code == 403 and refused.get_json()["error"]["code"] == "csrf_failed"


# --- under gunicorn ------------------------------------------------------------------------


def post_cancel(port: int, user: str, thread_id: str) -> tuple[int, t.Any]:
    conn = HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(
            "POST",
            "/chatkit/cancel",
            body=json.dumps({"thread_id": thread_id}),
            headers={"Authorization": f"Bearer token-{user}", "Content-Type": "application/json"},
        )
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def stopped_turn(reader: Reader, user: str, thread_id: str, seen: bytes, text: str) -> None:
    """The thread holds the user message, a partial answer at least as long as what
    the client saw, and the cancel note; and no lease."""
    items = reader.items(user, thread_id)
    assert [i.type for i in items] == ["user_message", "assistant_message", "sdk_hidden_context"]
    saved = items[1].content[0].text
    full = answer_to(text)
    assert full.startswith(saved) and saved != full
    assert seen.count(DELTA) <= len(re.findall(r"<\d+>", saved))
    assert reader.lease_expiry(thread_id) is None


@pytest.mark.server
@pytest.mark.parametrize("where", ["same", "other"])
def test_a_stop_under_gunicorn_reaches_the_turn_wherever_it_runs(
    reader: Reader, database_url: str, tmp_path: Path, where: str
) -> None:
    # "same": the responder is silent (5 s between deltas): only an interrupt ends it
    # in time. "other": a second server on the same database takes the Stop.
    text = ask(50, 5.0 if where == "same" else 0.05, tag=f"stop {where}")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with serve(tmp_path / "a", database_url) as a, serve(tmp_path / "b", database_url) as b:
        sock = start_stream(a.port, "ann", text)
        seen = read_until(sock, b"", lambda d: d.count(DELTA) >= (1 if where == "same" else 5))
        thread_id = THREAD_ID.search(seen).group(1).decode()  # type: ignore[union-attr]
        started = time.monotonic()
        status, body = post_cancel((a if where == "same" else b).port, "ann", thread_id)
        took = time.monotonic() - started
        seen = read_until(sock, seen, lambda d: d.endswith(b"0\r\n\r\n"))  # the stream's end
        ended = time.monotonic() - started
        sock.close()
        assert status == 200 and body == {"stopped": True}
        assert took < 4 and ended < 4, (took, ended)
        stopped_turn(reader, "ann", thread_id, seen, text)
        # the thread takes the next turn, on either server
        events = b.post(
            "ann",
            chatkit_request(
                "threads.add_user_message", thread_id=thread_id, input=user_input(ask(2, 0))
            ),
        )
        assert events[-1]["type"] == "thread.item.done"
    for server in (a, b):
        log = server.log.read_text()
        assert "Traceback" not in log, log[-3000:]


def test_the_lease_watcher_judges_only_the_turns_it_asked_about() -> None:
    """A turn that starts while the store is being asked is not taken for lost."""
    from flask_chatkit.turns import RunningTurns
    from flask_chatkit.turns import cancel_token

    turns = RunningTurns()
    kept = turns.enter("thr_kept", "t1")
    marked = turns.enter("thr_marked", "t2")
    looked = turns.tokens()
    late = turns.enter("thr_late", "t3")  # registered during the read
    held = {"thr_kept": "t1", "thr_marked": cancel_token("t2")}
    assert turns.stop_lost(looked, held) == ["thr_marked"]
    assert marked.stopped and not kept.stopped and not late.stopped


def test_the_watcher_stops_a_turn_whose_responder_said_nothing_for_the_turn_timeout() -> None:
    from flask_chatkit.turns import RunningTurns

    turns = RunningTurns()
    talking = turns.enter("thr_talking", "t1")
    silent = turns.enter("thr_silent", "t2")
    silent.last_event -= 121
    talking.last_event -= 60
    assert turns.stop_silent(120) == ["thr_silent"]
    assert silent.stopped and not talking.stopped
