"""One access line per request on ``flask_chatkit.access``, and the request id.

Exactly one line per JSON request and per stream (also one the client left, and
a refused 4xx); its fields; the ``X-Request-ID`` taken (when valid) or made,
sent back and on every ``flask_chatkit`` line of the request; and never the
message text, a file name, the OpenAI key or a bearer token in any line.
"""

from __future__ import annotations

import io
import json
import logging
import re
import typing as t
from pathlib import Path

import pytest

from flask_chatkit import stream_text
from flask_chatkit.access_log import JSONFormatter
from flask_chatkit.assistant import Assistant
from flask_chatkit.testing import chatkit_request
from flask_chatkit.testing import user_input

from .assistant_helpers import API_KEY
from .assistant_helpers import assistant_app
from .assistant_helpers import create
from .assistant_helpers import thread_of
from .conftest import logged_in
from .conftest import make_app
from .llm_server import error
from .llm_server import text
from .streams import Stream
from .streams import paced

FIELDS = {
    "request_id",
    "type",
    "status",
    "outcome",
    "user_id",
    "thread_id",
    "duration",
    "time_to_first_event",
    "input_tokens",
    "output_tokens",
    "model_errors",
}
SECRET_TEXT = "zebra-marmalade-4417"
FILE_NAME = "secret-plans-8812.txt"
GENERATED = re.compile(r"[0-9a-f]{32}")


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="flask_chatkit")
    return caplog


def access_lines(logs: pytest.LogCaptureFixture) -> list[dict[str, t.Any]]:
    return [r.chatkit_access for r in logs.records if r.name == "flask_chatkit.access"]


def all_output(logs: pytest.LogCaptureFixture) -> str:
    """Every captured record, as the plain and the JSON formatter write it."""
    plain = logging.Formatter("%(levelname)s %(name)s [%(request_id)s] %(message)s")
    formatter = JSONFormatter()
    lines = []
    for record in logs.records:
        if record.name.startswith("flask_chatkit"):
            lines.append(plain.format(record))
            lines.append(formatter.format(record))
    return "\n".join(lines)


def test_a_json_request_writes_one_line_with_its_fields(tmp_path: Path, logs: t.Any) -> None:
    app = make_app("memory", tmp_path)
    alice = logged_in(app, "alice")
    logs.clear()
    answer = alice.chatkit("threads.list")
    assert answer.status == 200
    [line] = access_lines(logs)
    assert set(line) == FIELDS
    assert line["type"] == "threads.list" and line["status"] == 200
    assert line["outcome"] == "completed" and line["user_id"] == "alice"
    assert line["duration"] >= 0 and line["time_to_first_event"] is None
    assert line["request_id"] == answer.headers["X-Request-ID"]
    assert GENERATED.fullmatch(line["request_id"])
    entry = json.loads(JSONFormatter().format(logs.records[-1]))
    assert FIELDS <= set(entry) and entry["logger"] == "flask_chatkit.access"


def test_a_stream_writes_one_line_when_it_ends(tmp_path: Path, llm: t.Any, logs: t.Any) -> None:
    app = assistant_app(tmp_path, llm, Assistant(), CHATKIT_TITLES=False)
    alice = logged_in(app, "alice")
    logs.clear()
    llm.script(text("Hel", "lo"))
    exchange = create(alice, SECRET_TEXT, headers={"X-Request-ID": "req-42.a"})
    [line] = access_lines(logs)
    assert line["type"] == "threads.create" and line["status"] == 200
    assert line["outcome"] == "completed"
    assert line["thread_id"] == thread_of(exchange)
    assert line["output_tokens"] == 2 and line["input_tokens"] > 0
    assert 0 <= line["time_to_first_event"] <= line["duration"]
    assert line["request_id"] == exchange.headers["X-Request-ID"] == "req-42.a"


def paced_app(tmp_path: Path, **config: t.Any) -> t.Any:
    """An app answering 40 words, one every 20 ms (gevent's sleep: a model streaming)."""
    app = make_app("memory", tmp_path, **config)

    @app.extensions["chatkit"].respond
    def respond(thread: t.Any, message: t.Any, context: t.Any) -> t.Iterator[t.Any]:
        context.report_usage(7, 40, model="paced")
        yield from stream_text(thread, paced([f"w{n} " for n in range(40)], 0.02))

    return app


def test_a_stream_the_client_leaves_writes_one_cancelled_line(tmp_path: Path, logs: t.Any) -> None:
    alice = logged_in(paced_app(tmp_path), "alice")
    logs.clear()
    stream = Stream(alice, chatkit_request("threads.create", input=user_input(SECRET_TEXT)))
    stream.read_until(lambda events: any(e["type"] == "thread.item.updated" for e in events))
    assert access_lines(logs) == []  # not before the stream ends
    stream.close()
    [line] = access_lines(logs)
    assert line["outcome"] == "cancelled" and line["status"] == 200
    assert line["thread_id"].startswith("thr_") and line["time_to_first_event"] is not None
    assert SECRET_TEXT not in all_output(logs)


def test_a_detached_stream_says_so(tmp_path: Path, logs: t.Any) -> None:
    alice = logged_in(paced_app(tmp_path, CHATKIT_DISCONNECT="finish"), "alice")
    logs.clear()
    stream = Stream(alice, chatkit_request("threads.create", input=user_input("Go")))
    stream.read_until(lambda events: any(e["type"] == "thread.item.updated" for e in events))
    stream.close()  # the turn runs on to its end before close returns
    [line] = access_lines(logs)
    assert line["outcome"] == "detached" and line["output_tokens"] == 40
    assert line["duration"] > 0.5  # the whole answer: 40 words, 20 ms apart


@pytest.mark.parametrize(
    ("body", "status", "login"),
    [(b"{not json", 400, True), (b'{"type":"threads.list","params":{}}', 401, False)],
)
def test_a_refused_request_writes_one_refused_line(
    tmp_path: Path, logs: t.Any, body: bytes, status: int, login: bool
) -> None:
    app = make_app("memory", tmp_path)
    client = logged_in(app, "alice") if login else app.test_client()
    logs.clear()
    answer = client.send(body, valid=False)
    assert answer.status == status
    [line] = access_lines(logs)
    assert line["status"] == status and line["outcome"] == "refused"
    assert line["user_id"] == ("alice" if login else None)
    assert line["request_id"] == answer.headers["X-Request-ID"]


def test_a_model_error_is_an_error_line_and_every_line_has_the_request_id(
    tmp_path: Path, llm: t.Any, logs: t.Any
) -> None:
    app = assistant_app(tmp_path, llm, Assistant(), CHATKIT_TITLES=False)
    alice = logged_in(app, "alice")
    logs.clear()
    llm.script(error(429, "Slow down."))
    exchange = create(alice, "Hi", headers={"X-Request-ID": "trace-7"})
    assert exchange.of_type("error")
    [line] = access_lines(logs)
    assert line["outcome"] == "error" and line["model_errors"] == ["rate_limit"]
    ours = [r for r in logs.records if r.name.startswith("flask_chatkit")]
    # the responder's warning is logged in the stream's producer greenlet
    assert any(r.name == "flask_chatkit" and r.levelname == "WARNING" for r in ours)
    assert {r.request_id for r in ours} == {"trace-7"}


@pytest.mark.parametrize(
    "sent",
    ["", "has space", "x" * 129, 'quote"d', "semi;colon", "ünïcode", "a/b"],
)
def test_an_invalid_request_id_is_replaced(tmp_path: Path, logs: t.Any, sent: str) -> None:
    app = make_app("memory", tmp_path)
    alice = logged_in(app, "alice")
    logs.clear()
    answer = alice.chatkit("threads.list", headers={"X-Request-ID": sent})
    given = answer.headers["X-Request-ID"]
    assert GENERATED.fullmatch(given) and given != sent
    assert [line["request_id"] for line in access_lines(logs)] == [given]


def test_each_request_gets_its_own_id(tmp_path: Path, logs: t.Any) -> None:
    alice = logged_in(make_app("memory", tmp_path), "alice")
    ids = {alice.chatkit("threads.list").headers["X-Request-ID"] for _ in range(3)}
    assert len(ids) == 3
    kept = alice.chatkit("threads.list", headers={"X-Request-ID": "A" * 128})
    assert kept.headers["X-Request-ID"] == "A" * 128


def test_no_line_holds_message_text_file_names_keys_or_tokens(
    tmp_path: Path, llm: t.Any, logs: t.Any
) -> None:
    app = assistant_app(tmp_path, llm, Assistant(), CHATKIT_TITLES=False)
    alice = logged_in(app, "alice")
    bearer = {"Authorization": "Bearer token-alice"}
    logs.clear()
    llm.script(text("Sure"), text("Again"))
    thread_id = thread_of(create(alice, SECRET_TEXT))
    upload = alice.post(
        "/chatkit/upload", data={"file": (io.BytesIO(b"plans"), FILE_NAME, "text/plain")}
    )
    assert upload.status_code == 200
    alice.chatkit("threads.update", thread_id=thread_id, title=SECRET_TEXT + " title")
    alice.chatkit("items.list", thread_id=thread_id, headers=bearer)
    client = app.test_client()
    client.chatkit("threads.list", headers=bearer)
    client.chatkit("threads.list", headers={"Authorization": "Bearer token-mallory-77"})
    lines = access_lines(logs)
    assert [line["type"] for line in lines] == [
        "threads.create",
        "upload",
        "threads.update",
        "items.list",
        "threads.list",
        "unknown",  # refused (401) before its body was read
    ]
    output = all_output(logs)
    for secret in (SECRET_TEXT, FILE_NAME, API_KEY, "token-alice", "token-mallory-77"):
        assert secret not in output, secret
