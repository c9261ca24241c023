"""The MCP client bridge against a real MCP server (tests/mcp_test_server.py).

The server runs as a stdio subprocess and as a streamable-HTTP server on
127.0.0.1; the gevent test runs a monkey-patched script in a subprocess.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import typing as t
from pathlib import Path

import pytest

pytest.importorskip("mcp", reason="the optional 'mcp' package is not installed")

from flask_chatkit.mcp_servers import WIDGET_MIME_TYPE  # noqa: E402
from flask_chatkit.mcp_servers import MCPError  # noqa: E402
from flask_chatkit.mcp_servers import MCPServer  # noqa: E402
from flask_chatkit.mcp_servers import widgets_from_content  # noqa: E402

from .servers import free_port  # noqa: E402

# MCP servers run as subprocesses and on loopback
pytestmark = pytest.mark.slow

SERVER_SCRIPT = str(Path(__file__).with_name("mcp_test_server.py"))
ROOT = str(Path(__file__).resolve().parent.parent)


def start_http_server(port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [sys.executable, SERVER_SCRIPT, "http", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        assert process.poll() is None, "the MCP test server exited early"
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return process
        time.sleep(0.05)
    process.kill()
    process.wait()
    raise AssertionError("the MCP test server did not listen in time")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def stdio_server(**kwargs: t.Any) -> MCPServer:
    return MCPServer.stdio(sys.executable, [SERVER_SCRIPT, "stdio"], timeout=10, **kwargs)


def server_pid(server: MCPServer) -> int:
    return int(server.call_tool("pid", {}).structured["result"])  # type: ignore[index]


@pytest.fixture(scope="module")
def http_port() -> t.Iterator[int]:
    port = free_port()
    process = start_http_server(port)
    yield port
    stop(process)


@pytest.fixture(scope="module", params=["stdio", "http"])
def server(request: pytest.FixtureRequest) -> t.Iterator[MCPServer]:
    if request.param == "stdio":
        mcp_server = stdio_server()
    else:
        port = request.getfixturevalue("http_port")
        mcp_server = MCPServer.http(f"http://127.0.0.1:{port}/mcp", timeout=10)
    yield mcp_server
    mcp_server.close()


# --- both transports ---------------------------------------------------------


def test_list_tools_gives_names_descriptions_and_json_schemas(server: MCPServer) -> None:
    tools = {tool["name"]: tool for tool in server.list_tools()}
    assert {
        "add",
        "echo",
        "pid",
        "show_card",
        "show_card_blob",
        "bad_widget",
        "fail",
        "slow",
    } <= set(tools)
    add = tools["add"]
    assert add["description"] == "Add two integers."
    assert add["parameters"]["type"] == "object"
    assert add["parameters"]["properties"]["a"]["type"] == "integer"
    assert sorted(add["parameters"]["required"]) == ["a", "b"]
    # cached: the same answer without asking again, and a refresh still works
    assert server.list_tools() == list(tools.values())
    assert [tool["name"] for tool in server.list_tools(refresh=True)] == list(tools)


def test_call_tool_returns_text_and_structured_content(server: MCPServer) -> None:
    result = server.call_tool("add", {"a": 2, "b": 40})
    assert (result.text, result.structured, result.is_error) == ("42", {"result": 42}, False)
    assert result.content == [{"type": "text", "text": "42"}]
    assert server.call_tool("echo", {"text": "héllo"}).text == "héllo"


@pytest.mark.parametrize("tool", ["show_card", "show_card_blob"])
def test_widget_resources_are_extracted_from_the_result_content(
    server: MCPServer, tool: str
) -> None:
    result = server.call_tool(tool, {"title": "Weather"})
    assert result.text == "Showing card Weather\n[resource ui://widgets/card]"
    assert result.content[1]["resource"]["mimeType"] == WIDGET_MIME_TYPE
    json.dumps(result.content)  # stored as JSON to rebuild widgets later
    card = {"type": "Card", "children": [{"type": "Text", "value": "Weather"}]}
    assert widgets_from_content(result.content) == [(card, "Weather")]


def test_malformed_widget_is_skipped_with_a_warning(
    server: MCPServer, caplog: pytest.LogCaptureFixture
) -> None:
    result = server.call_tool("bad_widget", {})
    assert result.text.startswith("broken widget")
    with caplog.at_level(logging.WARNING, logger="flask_chatkit"):
        assert widgets_from_content(result.content) == []
    assert "ui://widgets/broken is not valid JSON" in caplog.text


def test_tool_error_is_a_result_with_is_error_and_the_message(server: MCPServer) -> None:
    result = server.call_tool("fail", {})
    assert result.is_error
    assert "the tool failed on purpose" in result.text
    # the session is still fine afterwards
    assert server.call_tool("add", {"a": 1, "b": 1}).text == "2"


def test_slow_call_times_out_with_mcperror_and_the_session_survives(server: MCPServer) -> None:
    started = time.monotonic()
    with pytest.raises(MCPError, match="timed out calling 'slow'"):
        server.call_tool("slow", {"seconds": 5}, timeout=0.3)
    assert time.monotonic() - started < 3
    assert server.call_tool("echo", {"text": "still here"}).text == "still here"


def test_plain_threads_call_one_server_concurrently(server: MCPServer) -> None:
    results: dict[int, str] = {}

    def work(n: int) -> None:
        results[n] = server.call_tool("add", {"a": n, "b": 1000}).text

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert results == {n: str(n + 1000) for n in range(6)}


# --- stdio lifecycle -------------------------------------------------------------


def test_stdio_server_is_started_once_and_reused_across_calls() -> None:
    server = stdio_server(name="once")
    try:
        assert server.name == "once"
        pids = {server_pid(server) for _ in range(4)}
        server.call_tool("add", {"a": 1, "b": 2})
        assert len(pids) == 1 and server_pid(server) in pids
        assert pids != {os.getpid()}
    finally:
        server.close()


def test_stdio_server_killed_mid_call_raises_then_the_next_call_reconnects() -> None:
    server = stdio_server()
    try:
        pid = server_pid(server)
        killer = threading.Timer(0.3, os.kill, (pid, signal.SIGKILL))
        killer.start()
        with pytest.raises(MCPError, match="connection was lost"):
            server.call_tool("slow", {"seconds": 5})
        killer.join()
        new_pid = server_pid(server)
        assert new_pid != pid
        assert server.call_tool("add", {"a": 3, "b": 4}).text == "7"
    finally:
        server.close()


def test_stdio_server_that_died_while_idle_is_restarted_on_the_next_call() -> None:
    server = stdio_server()
    try:
        pid = server_pid(server)
        os.kill(pid, signal.SIGKILL)
        time.sleep(0.3)
        assert server_pid(server) != pid
    finally:
        server.close()


def test_close_stops_the_stdio_process_and_is_idempotent() -> None:
    server = stdio_server()
    pid = server_pid(server)
    server.close()
    server.close()
    # reaped, not a zombie: the pid no longer exists for us at all
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with pytest.raises(MCPError, match="closed"):
        server.call_tool("add", {"a": 1, "b": 1})


def test_stdio_command_that_cannot_start_raises_mcperror() -> None:
    server = MCPServer.stdio("/nonexistent/mcp-server", timeout=5)
    with pytest.raises(MCPError, match="cannot start the MCP server"):
        server.list_tools()
    server.close()


def test_default_names_come_from_the_command_and_url() -> None:
    assert MCPServer.stdio(sys.executable, [SERVER_SCRIPT, "stdio"]).name == "mcp_test_server"
    assert MCPServer.http("http://tools.example.com:9000/mcp").name == "tools_example_com"


# --- http lifecycle ---------------------------------------------------------------


def test_http_server_down_raises_mcperror_without_secrets_then_reconnects_when_back() -> None:
    port = free_port()
    server = MCPServer.http(
        f"http://127.0.0.1:{port}/mcp", headers={"Authorization": "Bearer sekrit-token"}, timeout=5
    )
    try:
        with pytest.raises(MCPError) as caught:
            server.call_tool("add", {"a": 1, "b": 1})
        assert "sekrit" not in str(caught.value)
        process = start_http_server(port)
        try:
            assert server.call_tool("add", {"a": 1, "b": 1}).text == "2"
        finally:
            stop(process)
        with pytest.raises(MCPError):
            server.call_tool("add", {"a": 1, "b": 1})
        process = start_http_server(port)
        try:
            assert server.call_tool("add", {"a": 2, "b": 2}).text == "4"
        finally:
            stop(process)
    finally:
        server.close()


# --- without mcp, and under gevent -----------------------------------------------------


def test_module_imports_without_mcp_and_says_how_to_install_it() -> None:
    code = textwrap.dedent(
        """
        import sys
        sys.modules["mcp"] = None  # as if not installed
        from flask_chatkit.mcp_servers import MCPServer, widgets_from_content
        assert widgets_from_content([]) == []
        try:
            MCPServer.stdio("true").list_tools()
        except RuntimeError as exc:
            print(exc)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=20,
        check=True,
    )
    assert "pip install 'flask-chatkit[mcp]'" in out.stdout


GEVENT_SCRIPT = """
from gevent import monkey
monkey.patch_all()

import json, sys, time
import gevent
from flask_chatkit.mcp_servers import MCPServer, widgets_from_content

script, port = sys.argv[1], sys.argv[2]
stdio = MCPServer.stdio(sys.executable, [script, "stdio"], timeout=10)
# "localhost" needs a DNS lookup: the loop's executor must not be a greenlet pool
http = MCPServer.http(f"http://localhost:{port}/mcp", timeout=10)
out = {"tools": [len(stdio.list_tools()), len(http.list_tools())]}
ticks = []

def ticker():
    while True:
        ticks.append(time.monotonic())
        gevent.sleep(0.01)

tick = gevent.spawn(ticker)
started = time.monotonic()
slow = [gevent.spawn(s.call_tool, "slow", {"seconds": 1.0}) for s in (stdio, http)]
adds = [gevent.spawn(s.call_tool, "add", {"a": n, "b": 1}) for n in range(5) for s in (stdio, http)]
card = gevent.spawn(stdio.call_tool, "show_card", {"title": "G"})
gevent.joinall(adds + [card], timeout=20, raise_error=True)
out["adds_done_after"] = time.monotonic() - started
gevent.joinall(slow, timeout=20, raise_error=True)
out["elapsed"] = time.monotonic() - started
out["ticks_during"] = len([x for x in ticks if x >= started])
tick.kill()
out["slow"] = [g.value.text for g in slow]
out["adds"] = sorted(int(g.value.text) for g in adds)
out["widgets"] = widgets_from_content(card.value.content)
stdio.close()
http.close()
print(json.dumps(out))
"""


def test_greenlets_call_stdio_and_http_servers_without_blocking_each_other(
    http_port: int, tmp_path: Path
) -> None:
    script = tmp_path / "gevent_mcp.py"
    script.write_text(GEVENT_SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script), SERVER_SCRIPT, str(http_port)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": ROOT},
        capture_output=True,
        text=True,
        timeout=25,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["tools"] == [8, 8]
    assert out["slow"] == ["slept", "slept"]
    assert out["adds"] == sorted([n + 1 for n in range(5)] * 2)
    # fast calls finish while both slow calls are still waiting, and the slow ones overlap
    assert out["adds_done_after"] < 0.9
    assert out["elapsed"] < 1.9
    # the hub kept running other greenlets the whole time (100 ticks/s nominal)
    assert out["ticks_during"] > 40
    assert out["widgets"] == [[{"type": "Card", "children": [{"type": "Text", "value": "G"}]}, "G"]]


# --- widgets_from_content ----------------------------------------------------------


def resource(
    uri: str = "ui://widgets/x", mime: str = WIDGET_MIME_TYPE, **payload: str
) -> dict[str, t.Any]:
    return {"type": "resource", "resource": {"uri": uri, "mimeType": mime, **payload}}


CARD = {"type": "Card", "children": []}
CARD_JSON = json.dumps({"widget": CARD, "copy_text": "copy me"})


@pytest.mark.parametrize(
    ("block", "expected", "warning"),
    [
        (resource(text=CARD_JSON), [(CARD, "copy me")], None),
        (resource(blob=base64.b64encode(CARD_JSON.encode()).decode()), [(CARD, "copy me")], None),
        (resource(text=json.dumps({"widget": CARD})), [(CARD, None)], None),
        # a plain model_dump() spells the MIME field mime_type
        (
            {
                "type": "resource",
                "resource": {"uri": "ui://w", "mime_type": WIDGET_MIME_TYPE, "text": CARD_JSON},
            },
            [(CARD, "copy me")],
            None,
        ),
        (resource(blob="%%% not base64"), [], "not base64"),
        (resource(text="{nope"), [], "not valid JSON"),
        (resource(text="[1, 2]"), [], "no widget object"),
        (resource(text=json.dumps({"copy_text": "x"})), [], "no widget object"),
        (resource(text=json.dumps({"widget": {"children": []}})), [], "no widget object"),
        (resource(uri="https://example.com/w", text=CARD_JSON), [], None),
        (resource(mime="application/json", text=CARD_JSON), [], None),
        ({"type": "text", "text": CARD_JSON}, [], None),
    ],
    ids=[
        "text",
        "blob",
        "no-copy-text",
        "snake-case",
        "bad-base64",
        "bad-json",
        "not-object",
        "missing-widget",
        "widget-without-type",
        "other-uri-scheme",
        "other-mime",
        "text-block",
    ],
)
def test_widgets_from_content(
    block: dict[str, t.Any],
    expected: list[t.Any],
    warning: str | None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="flask_chatkit"):
        assert widgets_from_content([{"type": "text", "text": "hi"}, block]) == expected
    if warning is None:
        assert not caplog.records
    else:
        assert warning in caplog.text
