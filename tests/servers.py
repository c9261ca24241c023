"""The example app run the way an operator runs it: its CLI, and gunicorn on loopback.

Both get an environment without the developer's own settings, so what the
tests give is all the app sees; requests to a running server go through
:func:`exchange`, which validates them and their answers with ``tests/wire.py``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import time
import typing as t
from http.client import HTTPConnection
from http.client import HTTPResponse
from pathlib import Path

import pytest

from . import wire

ROOT = Path(__file__).resolve().parent.parent
#: The login form's CSRF token in the page's HTML.
LOGIN_TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')
START_TIMEOUT = 30.0
WORKER_LINE = re.compile(r"Booting worker with pid: (\d+)")


def is_developer_setting(key: str) -> bool:
    """Whether the example app would read *key* from the environment."""
    return key.startswith(("CHATKIT_", "DEMO_", "DATABASE_")) or key in (
        "SECRET_KEY",
        "OPENAI_API_KEY",
        "OPENAI_BASE_URL",
        "MCP_SERVER_COMMAND",
        "MCP_SERVER_URL",
        "TOKEN_CACHE_SECONDS",
    )


def isolate_example_app(monkeypatch: pytest.MonkeyPatch, instance: Path) -> None:
    """In this process: none of the developer's settings, *instance* as instance folder."""
    for key in list(os.environ):
        if is_developer_setting(key):
            monkeypatch.delenv(key)
    monkeypatch.setenv("EXAMPLE_INSTANCE_PATH", str(instance))


def server_env(instance: Path, **settings: t.Any) -> dict[str, str]:
    """For a child process: this environment without the developer's settings,
    *instance* as the instance folder, and *settings* (as strings)."""
    env = {k: v for k, v in os.environ.items() if not is_developer_setting(k)}
    env["EXAMPLE_INSTANCE_PATH"] = str(instance)
    env.update({key: str(value) for key, value in settings.items()})
    return env


def cli(env: dict[str, str], *args: str) -> str:
    """Run ``flask --app example_app ARGS`` like an operator would; its stdout."""
    done = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "example_app", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done.stdout


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def workers_booted(workers: int) -> t.Callable[[str], bool]:
    """A readiness check on the log: *workers* distinct workers have booted."""
    return lambda log: len(set(WORKER_LINE.findall(log))) >= workers


@contextlib.contextmanager
def run_gunicorn(
    env: dict[str, str],
    *,
    workers: int,
    log: Path,
    ready: t.Callable[[str], object] | None = None,
    extra_args: t.Sequence[str] = (),
) -> t.Iterator[int]:
    """Serve ``wsgi:app`` with *workers* gevent workers on a free loopback port.

    Yields the port once *ready* (given the server's log so far; by default:
    every worker has booted) holds and the port answers. The server's output
    goes to *log*; it is stopped (terminated, killed if need be) on the way out.
    """
    ready = ready or workers_booted(workers)
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "-k",
        "gevent",
        "-w",
        str(workers),
        "--worker-connections",
        "1000",
        *extra_args,
        "--no-control-socket",
        "-b",
        f"127.0.0.1:{port}",
        "wsgi:app",
    ]
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=out)
        try:
            wait_until_ready(proc, port, log, ready)
            yield port
        finally:
            stop_process(proc)


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 15) -> None:
    """Terminate *proc*; kill it if it has not exited within *timeout* seconds."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def wait_until_ready(
    proc: subprocess.Popen[bytes], port: int, log: Path, ready: t.Callable[[str], object]
) -> None:
    """Bounded wait until *ready* holds for the log and the port answers."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"gunicorn exited with {proc.returncode}:\n{log.read_text()}")
        if ready(log.read_text()):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    return
            except OSError:
                pass
        time.sleep(0.1)
    pytest.fail(f"gunicorn did not start within {START_TIMEOUT} s:\n{log.read_text()}")


def exchange(
    conn: HTTPConnection, body: dict[str, t.Any], headers: dict[str, str]
) -> tuple[HTTPResponse, t.Any]:
    """POST one validated request to ``/chatkit`` on *conn*, read to the end, close.

    Returns the response and its JSON body or events, validated by ``tests/wire.py``.
    """
    wire.check_request(body)
    try:
        conn.request(
            "POST",
            "/chatkit",
            body=json.dumps(body),
            headers={"Content-Type": "application/json", **headers},
        )
        response = conn.getresponse()
        raw = response.read()
    finally:
        conn.close()
    content_type = response.getheader("Content-Type", "")
    return response, wire.check_exchange(body, response.status, content_type, raw)


def form_token(client: t.Any, path: str = "/login") -> str:
    """The CSRF token of the form on *path*, for a Flask test client (sets its session)."""
    found = LOGIN_TOKEN.search(client.get(path).get_data(as_text=True))
    assert found, f"no csrf_token on {path}"
    return found.group(1)


def login_with_form(client: t.Any, username: str, password: str) -> t.Any:
    """Post the login form like a browser does (its CSRF token first); the response."""
    token = form_token(client)
    return client.post(
        "/login", data={"username": username, "password": password, "csrf_token": token}
    )


def http_login(port: int, username: str, password: str) -> str:
    """Log in through the real login form over HTTP; the ``Cookie`` header value."""
    from http.cookies import SimpleCookie
    from urllib.parse import urlencode

    conn = HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", "/login")
        page = conn.getresponse()
        html = page.read().decode()
        cookie = f"session={SimpleCookie(page.getheader('Set-Cookie'))['session'].value}"
    finally:
        conn.close()
    found = LOGIN_TOKEN.search(html)
    assert found, "no csrf_token on /login"
    conn = HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(
            "POST",
            "/login",
            body=urlencode(
                {"username": username, "password": password, "csrf_token": found.group(1)}
            ),
            headers={"Content-Type": "application/x-www-form-urlencoded", "Cookie": cookie},
        )
        response = conn.getresponse()
        response.read()
    finally:
        conn.close()
    assert response.status == 302, response.status
    return f"session={SimpleCookie(response.getheader('Set-Cookie'))['session'].value}"
