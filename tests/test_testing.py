"""flask_chatkit.testing: the shipped test client, its judge, and the README's example."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import typing as t
from pathlib import Path

import pytest

import flask_chatkit.testing
from flask_chatkit import stream_text
from flask_chatkit.testing import ChatKitClient
from flask_chatkit.testing import WireCheck
from flask_chatkit.testing import check_output_rules
from flask_chatkit.testing import user_input

from .conftest import logged_in
from .conftest import make_app

ROOT = Path(__file__).resolve().parent.parent


def chatty_app(tmp_path: t.Any, **config: t.Any) -> t.Any:
    app = make_app("memory", tmp_path, **config)
    app.extensions["chatkit"].respond(lambda thread, message, ctx: stream_text(thread, "hi"))
    return app


@pytest.fixture
def without_openai_chatkit(monkeypatch: pytest.MonkeyPatch) -> None:
    """As if ``openai-chatkit`` were not installed (it is a test-only dependency)."""
    monkeypatch.setattr(flask_chatkit.testing, "_official", {})
    monkeypatch.setitem(sys.modules, "chatkit", None)  # importing it raises ImportError


def test_the_suites_clients_validate_with_the_official_models(tmp_path):
    client = logged_in(chatty_app(tmp_path), "alice")
    assert isinstance(client, ChatKitClient)
    assert isinstance(client.validator, WireCheck) and client.validator.official


def test_without_openai_chatkit_the_client_still_checks_framing_and_output_rules(
    tmp_path, without_openai_chatkit
):
    with pytest.raises(ImportError):
        WireCheck(official=True)
    client = logged_in(chatty_app(tmp_path), "alice")
    assert not client.validator.official  # type: ignore[attr-defined]
    ex = client.chatkit("threads.create", input=user_input("hello"))
    assert ex.status == 200
    assert ex.types[0] == "thread.created"
    assert ex.of_type("thread.item.done")[-1]["item"]["content"][0]["text"] == "hi"

    judge = WireCheck()
    stream = {"type": "threads.create", "params": {}}
    for raw in (b'data: {"type": "x"}\n\n', b"data: {}\n", b"event: x\ndata: {}\n\n"):
        with pytest.raises(AssertionError):  # not compact, unterminated, not data-only
            judge.check_exchange(stream, 200, "text/event-stream", raw)
    with pytest.raises(AssertionError, match="error envelope"):
        judge.check_exchange(stream, 400, "application/json", b'{"detail": "x"}')
    with pytest.raises(AssertionError, match="null"):
        check_output_rules({"item": {"id": "t", "title": None}})


def test_the_official_models_reject_what_framing_alone_lets_through(tmp_path):
    odd = {"type": "threads.create", "params": {}}
    event = b'data: {"type":"no.such.event"}\n\n'
    assert WireCheck(official=False).check_exchange(odd, 200, "text/event-stream", event)
    with pytest.raises(ValueError):  # pydantic's ValidationError
        WireCheck(official=True).check_exchange(odd, 200, "text/event-stream", event)
    with pytest.raises(ValueError):
        WireCheck(official=True).check_request(odd)


def test_a_validator_of_ones_own_judges_instead(tmp_path):
    seen: list[t.Any] = []

    class Recorder:
        def check_request(self, body: t.Any) -> None:
            seen.append(("request", body["type"]))

        def check_exchange(self, body: t.Any, status: int, content_type: str, raw: bytes) -> t.Any:
            seen.append(("exchange", status, content_type))
            return "judged"

    app = chatty_app(tmp_path)
    client = app.test_client(validator=Recorder())
    assert client.post("/_login/alice").status_code == 200
    assert client.chatkit("threads.list").body == "judged"  # type: ignore[attr-defined]
    assert seen == [("request", "threads.list"), ("exchange", 200, "application/json")]


def test_the_client_posts_to_the_apps_url_prefix(tmp_path):
    client = logged_in(chatty_app(tmp_path, CHATKIT_URL_PREFIX="/api/chat"), "alice")
    assert client.path == "/api/chat"
    assert client.chatkit("threads.create", input=user_input("hello")).status == 200
    assert len(client.chatkit("threads.list").body["data"]) == 1


# The reader's own app for the README's example: a factory, a form login, one answer.
MYAPP = """
from flask import Flask, request
from flask_login import LoginManager, UserMixin, login_user

from flask_chatkit import ChatKit, InMemoryStore, stream_text


class User(UserMixin):
    id = "alice"


def create_app(config):
    app = Flask(__name__)
    app.config.update(SECRET_KEY="test", **config)
    login = LoginManager(app)
    login.user_loader(lambda user_id: User() if user_id == "alice" else None)
    chatkit = ChatKit(app, store=InMemoryStore())

    @chatkit.respond
    def respond(thread, message, context):
        yield from stream_text(thread, "Hello from Flask!")

    @app.post("/login")
    def log_in():
        if request.form.to_dict() != {"username": "alice", "password": "alice-pw"}:
            return {"error": "wrong username or password"}, 401
        login_user(User())
        return {"user": "alice"}

    return app
"""


@pytest.mark.slow
def test_the_readmes_testing_example_passes_as_written(tmp_path):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(
        r"<!-- readme test: testing your app -->\n```python\n(.*?)^```", readme, re.S | re.M
    )
    assert len(blocks) == 1
    (tmp_path / "myapp.py").write_text(MYAPP)
    (tmp_path / "test_chat.py").write_text(blocks[0])
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-W",
            "error",
            "test_chat.py",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout
