"""A small real MCP server for tests/test_mcp_servers.py.

Run it as ``python tests/mcp_test_server.py stdio`` (newline-delimited JSON-RPC
on stdin/stdout) or ``python tests/mcp_test_server.py http --port N``
(streamable HTTP at ``http://127.0.0.1:N/mcp``). It is built with the official
``mcp`` package and exposes:

``add(a, b)``           the sum of two integers
``echo(text)``          the text back
``pid()``               the server's process id (to tell restarts apart)
``show_card(title)``    a text part plus a ``ui://widgets/card`` widget resource (text payload)
``show_card_blob(title)`` the same widget as a base64 blob
``bad_widget()``        a text part plus a ``ui://`` widget resource whose payload is not JSON
``fail()``              raises, so the result is a tool error (``isError``)
``slow(seconds)``       sleeps, then answers ``"slept"``
"""

from __future__ import annotations

import argparse
import base64
import json
import os

import anyio
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import BlobResourceContents
from mcp_types import EmbeddedResource
from mcp_types import TextContent
from mcp_types import TextResourceContents

WIDGET_MIME_TYPE = "application/vnd.ui.widget+json"

mcp = MCPServer("flask-chatkit-test", log_level="WARNING")


def _card_payload(title: str) -> str:
    widget = {"type": "Card", "children": [{"type": "Text", "value": title}]}
    return json.dumps({"widget": widget, "copy_text": title})


@mcp.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@mcp.tool()
def echo(text: str) -> str:
    """Return the text unchanged."""
    return text


@mcp.tool()
def pid() -> int:
    """Return this server's process id."""
    return os.getpid()


@mcp.tool()
def show_card(title: str) -> list[TextContent | EmbeddedResource]:
    """Show a card widget with the title (JSON text payload)."""
    resource = TextResourceContents(
        uri="ui://widgets/card", mime_type=WIDGET_MIME_TYPE, text=_card_payload(title)
    )
    return [
        TextContent(type="text", text=f"Showing card {title}"),
        EmbeddedResource(type="resource", resource=resource),
    ]


@mcp.tool()
def show_card_blob(title: str) -> list[TextContent | EmbeddedResource]:
    """Show a card widget with the title (base64 blob payload)."""
    blob = base64.b64encode(_card_payload(title).encode()).decode()
    resource = BlobResourceContents(uri="ui://widgets/card", mime_type=WIDGET_MIME_TYPE, blob=blob)
    return [
        TextContent(type="text", text=f"Showing card {title}"),
        EmbeddedResource(type="resource", resource=resource),
    ]


@mcp.tool()
def bad_widget() -> list[TextContent | EmbeddedResource]:
    """Return a widget resource whose payload is not JSON."""
    resource = TextResourceContents(
        uri="ui://widgets/broken", mime_type=WIDGET_MIME_TYPE, text="{not json"
    )
    return [
        TextContent(type="text", text="broken widget"),
        EmbeddedResource(type="resource", resource=resource),
    ]


@mcp.tool()
def fail() -> str:
    """Always fail."""
    raise ToolError("the tool failed on purpose")


@mcp.tool()
async def slow(seconds: float) -> str:
    """Sleep for the given number of seconds."""
    await anyio.sleep(seconds)
    return "slept"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("transport", nargs="?", default="stdio", choices=["stdio", "http"])
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    if args.transport == "stdio":
        mcp.run("stdio")
    else:
        mcp.run("streamable-http", host="127.0.0.1", port=args.port)


if __name__ == "__main__":
    main()
