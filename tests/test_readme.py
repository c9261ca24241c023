"""The README's "Answer with OpenAI" app, run as written.

The code block is taken from README.md and imported as a module beside a small
``myapp.models`` (the reader's own db and user model) and a real MCP server
script named as in the README; ``python`` on PATH is this interpreter. The
model is the loopback server of tests/llm_server.py.
"""

from __future__ import annotations

import importlib
import os
import re
import shutil
import sys
import textwrap
import typing as t
from pathlib import Path

import pytest

from .assistant_helpers import answers
from .assistant_helpers import done_items
from .conftest import ChatKitClient
from .llm_server import LLMServer
from .llm_server import call
from .llm_server import text
from .llm_server import tool_calls

ROOT = Path(__file__).resolve().parent.parent

MODELS = '''
from flask_login import UserMixin
from flask_sqlalchemy import SQLAlchemy

db = SQLAlchemy()


class User(db.Model, UserMixin):
    id = db.Column(db.Integer, primary_key=True)
    name = db.Column(db.String(80))
'''


def readme_block(heading: str) -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split(f"## {heading}\n", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, f"no python block under {heading!r}"
    return match.group(1)


def test_the_readme_app_is_short_and_answers_with_a_tool_and_an_mcp_widget(
        tmp_path, monkeypatch):
    pytest.importorskip("mcp", reason="the optional 'mcp' package is not installed")
    code = readme_block("Answer with OpenAI")
    assert len(code.splitlines()) < 30
    (tmp_path / "myapp").mkdir()
    (tmp_path / "myapp" / "__init__.py").write_text("")
    (tmp_path / "myapp" / "models.py").write_text(textwrap.dedent(MODELS))
    (tmp_path / "readme_app.py").write_text(code)
    shutil.copy(ROOT / "tests" / "mcp_test_server.py", tmp_path / "travel_mcp_server.py")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "python"  # a script, not a symlink: a venv's python must keep its path
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))

    with LLMServer() as llm:
        monkeypatch.setenv("OPENAI_API_KEY", "sk-readme")
        monkeypatch.setenv("OPENAI_BASE_URL", llm.base_url)
        module = importlib.import_module("readme_app")
        try:
            run_readme_app(module, llm)
        finally:
            for server in module.assistant.mcp_servers:
                server.close()
            for name in ("readme_app", "myapp", "myapp.models"):
                sys.modules.pop(name, None)


def run_readme_app(module: t.Any, llm: LLMServer) -> None:
    from flask_login import login_user

    from myapp.models import User  # type: ignore[import-not-found]
    from myapp.models import db

    app = module.app
    app.config.update(TESTING=True, SECRET_KEY="readme", CHATKIT_MODEL_MAX_RETRIES=0)
    app.add_url_rule("/_login", "login", lambda: login_user(db.session.get(User, 1)) and "ok",
                     methods=["POST"])
    with app.app_context():
        db.create_all()
        db.session.add(User(id=1, name="Ada"))
        db.session.commit()
    app.test_client_class = ChatKitClient
    client = app.test_client()
    assert client.post("/_login").status_code == 200

    llm.script(tool_calls(call("weather", {"city": "Rome"}, call_id="w"),
                          call("show_card", {"title": "Rome"}, call_id="c")),
               text("Sunny in Rome!"))
    ex = client.chatkit("threads.create", metadata={"page_title": "Trips"},
                        input={"content": [{"type": "input_text", "text": "Rome?"}],
                               "attachments": [], "inference_options": {}})
    assert [e["text"] for e in ex.of_type("progress_update")][0] == "Checking the weather in Rome…"
    assert [w["copy_text"] for w in done_items(ex, "widget")] == ["Rome"]
    assert answers(ex) == ["Sunny in Rome!"]
    first = llm.stream_requests[0].body
    assert first["model"] == "gpt-4.1-mini"
    assert first["instructions"].endswith("The user is Ada, reading 'Trips'.")
