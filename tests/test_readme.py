"""The README's apps, run as written.

"Use it in your app": its code block saved as ``app.py`` in an empty folder,
its shell commands run there as written (the venv's ``flask`` and ``gunicorn``
first on PATH; only the port changes), then a login with the cookie, the bearer
token it printed and the README's own ``curl`` line each stream an answer.

"Answer with OpenAI": the code block imported as a module beside a small
``myapp.models`` (the reader's own db and user model) and a real MCP server
script named as in the README; ``python`` on PATH is this interpreter. The
model is the loopback server of tests/llm_server.py.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
import typing as t
from http.client import HTTPConnection
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import urlencode

import pytest

from flask_chatkit.testing import ChatKitClient
from flask_chatkit.testing import chatkit_request
from flask_chatkit.testing import user_input

from . import wire
from .assistant_helpers import answers
from .assistant_helpers import done_items
from .llm_server import LLMServer
from .llm_server import call
from .llm_server import text
from .llm_server import tool_calls
from .servers import exchange
from .servers import free_port
from .servers import is_developer_setting
from .servers import stop_process
from .servers import wait_until_ready
from .servers import workers_booted

# the README's apps, commands and servers run as written
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent

MODELS = """
from flask_login import UserMixin
from flask_sqlalchemy import SQLAlchemy

db = SQLAlchemy()


class User(db.Model, UserMixin):
    id = db.Column(db.Integer, primary_key=True)
    name = db.Column(db.String(80))
"""


def readme_section(heading: str) -> str:
    """The README's text under ``## heading``, up to the next ``## `` heading."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split(f"## {heading}\n", 1)[1]
    return re.split(r"^## ", section, maxsplit=1, flags=re.M)[0]


def readme_blocks(heading: str, language: str) -> list[str]:
    """The ```language code blocks under ``## heading``, in order."""
    return re.findall(rf"^```{language}\n(.*?)^```", readme_section(heading), re.S | re.M)


def readme_block(heading: str) -> str:
    blocks = readme_blocks(heading, "python")
    assert blocks, f"no python block under {heading!r}"
    return blocks[0]


def shell_lines(block: str) -> list[str]:
    """The commands of a bash block: continuation lines joined, blank lines dropped."""
    return [line for line in block.replace("\\\n", " ").splitlines() if line.strip()]


def readme_http_login(port: int, username: str, password: str) -> str:
    """``POST /login`` with the form fields; the ``Cookie`` header value it sets."""
    conn = HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(
            "POST",
            "/login",
            body=urlencode({"username": username, "password": password}),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        response = conn.getresponse()
        response.read()
    finally:
        conn.close()
    assert response.status == 200, response.status
    return f"session={SimpleCookie(response.getheader('Set-Cookie'))['session'].value}"


def assert_hello_turn(events: list[dict[str, t.Any]]) -> None:
    """The README responder's turn: progress, the streamed answer, the new title."""
    types = [e["type"] for e in events]
    assert types[:2] == ["thread.created", "thread.item.done"], types
    assert [e["text"] for e in events if e["type"] == "progress_update"] == ["Thinking..."]
    deltas = [
        e["update"]["delta"]
        for e in events
        if e["type"] == "thread.item.updated"
        and e["update"]["type"] == "assistant_message.content_part.text_delta"
    ]
    assert deltas == ["Hello ", "from ", "Flask!"]
    done = [e["item"] for e in events if e["type"] == "thread.item.done"]
    assert done[-1]["type"] == "assistant_message"
    assert done[-1]["content"][0]["text"] == "Hello from Flask!"
    assert [e["thread"]["title"] for e in events if e["type"] == "thread.updated"] == ["New chat"]


def run_commands(lines: list[str], folder: Path, env: dict[str, str]) -> dict[str, str]:
    """Run each line with bash in *folder*, like a reader pasting them; their outputs."""
    outputs = {}
    for line in lines:
        done = subprocess.run(
            ["bash", "-c", line], cwd=folder, env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, (line, done.stdout, done.stderr)
        outputs[line] = done.stdout
    return outputs


@contextlib.contextmanager
def serve(command: str, folder: Path, env: dict[str, str], log: Path) -> t.Iterator[int]:
    """Run the README's gunicorn *command* in *folder* on a free port instead of 8000."""
    port = free_port()
    command = "exec " + command.replace("127.0.0.1:8000", f"127.0.0.1:{port}")
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            ["bash", "-c", command], cwd=folder, env=env, stdout=out, stderr=out
        )
        try:
            wait_until_ready(proc, port, log, workers_booted(1))
            yield port
        finally:
            stop_process(proc)


def run_curl(command: str, folder: Path, env: dict[str, str]) -> list[dict[str, t.Any]]:
    """Run a README curl line; its events, validated like its request."""
    args = shlex.split(command)
    wire.check_request(json.loads(args[args.index("-d") + 1]))
    done = subprocess.run(
        ["bash", "-c", command], cwd=folder, env=env, capture_output=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    events = wire.parse_frames(done.stdout)
    for event in events:
        wire.check_event(event)
    return events


@pytest.mark.server
def test_the_use_it_in_your_app_code_and_commands_run_as_written(tmp_path: Path) -> None:
    code = readme_block("Use it in your app")
    assert len(code.splitlines()) <= 80  # users, loaders, /login and three commands included
    bash_blocks = readme_blocks("Use it in your app", "bash")
    assert bash_blocks, "no ```bash block with the commands that create and run the app"
    *setup, serve_line = shell_lines(bash_blocks[0])
    assert serve_line.startswith("gunicorn -k gevent ") and "127.0.0.1:8000" in serve_line
    curls = [line for block in bash_blocks[1:] for line in shell_lines(block)]
    assert all(line.startswith("curl ") and "http://127.0.0.1:8000/" in line for line in curls)
    user = re.search(r"create-user (\S+) --password (\S+)", bash_blocks[0])
    assert user, "no create-user line"
    username, password = user.groups()
    folder = tmp_path / "myproject"
    folder.mkdir()
    (folder / "app.py").write_text(code, encoding="utf-8")
    env = {
        k: v
        for k, v in os.environ.items()
        if not is_developer_setting(k) and not k.startswith("FLASK_")
    }
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env["HOME"] = str(tmp_path)  # gunicorn's control socket goes under $HOME

    outputs = run_commands(setup, folder, env)
    token = next(out for line, out in outputs.items() if " create-token " in line).split()[-1]
    log = tmp_path / "server.log"
    with serve(serve_line, folder, env, log) as port:
        origin = f"http://127.0.0.1:{port}"

        def post(body: dict[str, t.Any], headers: dict[str, str]) -> tuple[int, t.Any]:
            conn = HTTPConnection("127.0.0.1", port, timeout=30)
            response, parsed = exchange(conn, body, headers)
            return response.status, parsed

        status, error = post(chatkit_request("threads.list"), {})
        assert status == 401 and error["error"]["code"] == "unauthorized"

        turn = chatkit_request("threads.create", input=user_input("Hi"))
        cookie = readme_http_login(port, username, password)
        status, events = post(turn, {"Cookie": cookie, "Origin": origin})
        assert status == 200, events
        assert_hello_turn(events)
        assert post(turn, {"Cookie": cookie})[0] == 403  # no Origin: refused as CSRF

        status, events = post(turn, {"Authorization": f"Bearer {token}"})
        assert status == 200, events
        assert_hello_turn(events)
        assert post(turn, {"Authorization": f"Bearer {token}x"})[0] == 401

        if shutil.which("curl"):
            for line in curls:
                line = line.replace("http://127.0.0.1:8000", origin)
                assert_hello_turn(run_curl(line, folder, {**env, "TOKEN": token}))
    assert "Traceback" not in log.read_text(), log.read_text()


def test_the_readme_app_is_short_and_answers_with_a_tool_and_an_mcp_widget(tmp_path, monkeypatch):
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
    app.add_url_rule(
        "/_login", "login", lambda: login_user(db.session.get(User, 1)) and "ok", methods=["POST"]
    )
    with app.app_context():
        db.create_all()
        db.session.add(User(id=1, name="Ada"))
        db.session.commit()
    app.test_client_class = ChatKitClient
    client = app.test_client()
    assert client.post("/_login").status_code == 200

    llm.script(
        tool_calls(
            call("weather", {"city": "Rome"}, call_id="w"),
            call("show_card", {"title": "Rome"}, call_id="c"),
        ),
        text("Sunny in Rome!"),
    )
    ex = client.chatkit(
        "threads.create",
        metadata={"page_title": "Trips"},
        input={
            "content": [{"type": "input_text", "text": "Rome?"}],
            "attachments": [],
            "inference_options": {},
        },
    )
    assert [e["text"] for e in ex.of_type("progress_update")][0] == "Checking the weather in Rome…"
    assert [w["copy_text"] for w in done_items(ex, "widget")] == ["Rome"]
    assert answers(ex) == ["Sunny in Rome!"]
    first = llm.stream_requests[0].body
    assert first["model"] == "gpt-4.1-mini"
    assert first["instructions"].endswith("The user is Ada, reading 'Trips'.")


# --- every command and table of the README holds -------------------------------------


def readme_marked_block(marker: str) -> list[str]:
    """The commands of the bash block right after ``<!-- readme test: marker -->``."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    found = re.search(
        rf"<!-- readme test: {re.escape(marker)} -->\n```bash\n(.*?)^```", readme, re.S | re.M
    )
    assert found, f"no bash block marked {marker!r}"
    return shell_lines(found.group(1))


def test_every_pip_install_line_installs_from_a_clone_with_extras_that_exist() -> None:
    import configparser

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    readme += (ROOT / "benchmarks" / "README.md").read_text(encoding="utf-8")
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    extras = set(config["options.extras_require"])
    installs = re.findall(r"pip install ([^`\n&]+)", readme)
    assert len(installs) >= 5, installs
    for line in installs:
        args = shlex.split(line.strip())
        # not on the package index: an editable install of the clone (or its path)
        assert args[0] == "-e" and (args[1].startswith(".") or "/" in args[1]), line
        assert "flask-chatkit" not in args[1], line
        named = re.findall(r"\[([\w,]+)\]", args[1])
        for extra in ",".join(named).split(",") if named else ():
            assert extra in extras, (line, extra)


def test_every_markdown_table_row_has_as_many_cells_as_its_header() -> None:
    for name in ("README.md", "benchmarks/README.md"):
        rows: list[str] = []
        for line in [*(ROOT / name).read_text(encoding="utf-8").splitlines(), ""]:
            if line.startswith("|"):
                rows.append(line)
                continue
            if rows:
                for row in rows:  # a cell after the last pipe is dropped by renderers
                    assert row.rstrip().endswith("|"), (name, row)
                # cells: split on | outside backticks (code spans may hold pipes)
                widths = [len(re.findall(r"(?:`[^`]*`|[^|`])*\|", row.strip())) for row in rows]
                assert set(widths) == {widths[0]}, (
                    name,
                    rows[0],
                    rows[widths.index(next(w for w in widths if w != widths[0]))],
                )
                rows = []


@pytest.mark.server
def test_the_example_app_commands_and_curl_lines_run_as_written(tmp_path: Path) -> None:
    from .servers import run_gunicorn
    from .servers import server_env

    commands = readme_marked_block("example app commands")
    assert all(line.startswith("flask --app example_app ") for line in commands), commands
    curls = readme_marked_block("example app curl")
    assert [line.split()[0] for line in curls] == ["curl", "curl"]
    env = server_env(tmp_path / "instance", DEMO_STREAM_DELAY=0)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    outputs = run_commands(commands, ROOT, env)
    token = next(out for line, out in outputs.items() if " create-token " in line).split()[-1]

    log = tmp_path / "server.log"
    with run_gunicorn(env, workers=1, log=log) as port:
        origin = f"http://127.0.0.1:{port}"
        # the passwords the commands set work on the login form
        from .servers import http_login

        for line in commands:
            found = re.search(r"(?:create-user|set-password) (\S+) --password (\S+)", line)
            if found:
                assert http_login(port, *found.groups()).startswith("session=")

        create = curls[0].replace("http://127.0.0.1:8000", origin)
        events = run_curl(create, ROOT, {**env, "TOKEN": token})
        assert events[0]["type"] == "thread.created"
        assert events[1]["item"]["content"][0]["text"] == "Hello!"
        assert events[-1]["type"] == "thread.item.done"
        assert events[-1]["item"]["type"] == "assistant_message"

        listing = curls[1].replace("http://127.0.0.1:8000", origin)
        args = shlex.split(listing)
        wire.check_request(json.loads(args[args.index("-d") + 1]))
        done = subprocess.run(
            ["bash", "-c", listing], env={**env, "TOKEN": token}, capture_output=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        page = json.loads(done.stdout)
        assert "data" in page, page
        wire.JSON_MODELS["threads.list"].validate_python(page)
        wire.check_output_rules(page)
        assert [thread["id"] for thread in page["data"]] == [events[0]["thread"]["id"]]
    assert "Traceback" not in log.read_text(), log.read_text()
