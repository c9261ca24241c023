"""MCP servers for the built-in responder: :class:`MCPServer`, usable from synchronous code.

Each server keeps its client session open (a stdio server process is started once
per process, not per call) and reconnects when the session has died. The session
runs on the asyncio loop of :mod:`flask_chatkit.mcp_bridge`; the stdio transport
is :mod:`flask_chatkit.mcp_stdio`. Results, errors and widgets live in
:mod:`flask_chatkit.mcp_results`; the names apps use are re-exported here (the
``import x as x`` form), so ``from flask_chatkit.mcp_servers import MCPError``
keeps working.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import re
import signal
import subprocess
import typing as t
import weakref

from .mcp_bridge import LoopThread
from .mcp_results import WIDGET_MIME_TYPE as WIDGET_MIME_TYPE
from .mcp_results import WIDGET_URI_PREFIX as WIDGET_URI_PREFIX
from .mcp_results import MCPError as MCPError
from .mcp_results import MCPToolResult as MCPToolResult
from .mcp_results import tool_result
from .mcp_results import widgets_from_content as widgets_from_content
from .mcp_stdio import EXIT_GRACE
from .mcp_stdio import process_exit
from .mcp_stdio import stdio_transport

if t.TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from collections.abc import Callable
    from collections.abc import Coroutine
    from collections.abc import Mapping
    from collections.abc import Sequence

__all__ = ["MCPServer"]

logger = logging.getLogger("flask_chatkit")

_INSTALL_HINT = "MCP servers need the 'mcp' package: pip install 'flask-chatkit[mcp]'"

# Extra time the caller waits beyond the request timeout before giving up on the loop.
_WAIT_MARGIN = 5.0


class _Connection:
    """A live session and what ends it; lives on the loop thread."""

    def __init__(self) -> None:
        self.session: t.Any = None
        self.stop = asyncio.Event()
        self.dead = False
        self.runner: asyncio.Task[None] | None = None
        self.process: subprocess.Popen[bytes] | None = None


class MCPServer:
    """A connection to one MCP server, usable from synchronous code.

    Build it with :meth:`stdio` or :meth:`http`; the session opens on first use and
    stays open until :meth:`close` (also called at exit).
    """

    def __init__(
        self,
        *,
        name: str,
        timeout: float,
        transport: Callable[
            [_Connection], contextlib.AbstractAsyncContextManager[tuple[t.Any, t.Any]]
        ],
    ) -> None:
        self.name = name
        self.timeout = timeout
        self._transport = transport
        self._connection: _Connection | None = None
        self._tools: list[dict[str, t.Any]] | None = None
        self._closed = False
        self._pid = os.getpid()
        ref = weakref.ref(self)

        def close_at_exit() -> None:
            server = ref()
            if server is not None:
                server.close()

        atexit.register(close_at_exit)

    @classmethod
    def stdio(
        cls,
        command: str,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        name: str | None = None,
        timeout: float = 30.0,
    ) -> MCPServer:
        """A server run as a subprocess speaking MCP on stdin/stdout.

        :param command: the executable; ``args`` its arguments.
        :param env: extra environment variables, over a minimal safe environment.
        :param name: the name used in logs and tool prefixes (default: from the command).
        :param timeout: seconds allowed for connecting and for each call.
        """
        args = [str(arg) for arg in args]
        directory = None if cwd is None else os.fspath(cwd)

        def transport(
            connection: _Connection,
        ) -> contextlib.AbstractAsyncContextManager[tuple[t.Any, t.Any]]:
            def on_start(process: subprocess.Popen[bytes]) -> None:
                connection.process = process

            return stdio_transport(command, args, env, directory, on_start)

        if name is None:
            script = next((arg for arg in args if not arg.startswith("-")), command)
            name = _slug(os.path.splitext(os.path.basename(script))[0])
        return cls(name=name, timeout=timeout, transport=transport)

    @classmethod
    def http(
        cls,
        url: str,
        headers: Mapping[str, str] | None = None,
        name: str | None = None,
        timeout: float = 30.0,
    ) -> MCPServer:
        """A server reached over MCP's streamable HTTP transport.

        :param url: the endpoint, e.g. ``http://127.0.0.1:8000/mcp``.
        :param headers: sent with every request (e.g. ``Authorization``); never logged.
        :param name: the name used in logs and tool prefixes (default: the URL's host).
        :param timeout: seconds allowed for connecting and for each call.
        """
        header_dict = dict(headers or {})

        @contextlib.asynccontextmanager
        async def transport(connection: _Connection) -> AsyncIterator[tuple[t.Any, t.Any]]:
            import httpx2
            from mcp.client.streamable_http import streamable_http_client

            # long reads: the server may hold a response stream open for a slow tool
            client = httpx2.AsyncClient(
                headers=header_dict, timeout=httpx2.Timeout(timeout, read=max(timeout, 300.0))
            )
            async with client, streamable_http_client(url, http_client=client) as streams:
                yield streams

        if name is None:
            from urllib.parse import urlsplit

            name = _slug(urlsplit(url).hostname or "mcp")
        return cls(name=name, timeout=timeout, transport=transport)

    def __repr__(self) -> str:
        return f"<MCPServer {self.name!r}>"

    # public API

    def list_tools(self, refresh: bool = False) -> list[dict[str, t.Any]]:
        """The server's tools as ``{"name", "description", "parameters"}`` dicts (cached).

        :param refresh: ask the server again instead of using the cached list.
        """
        if self._tools is None or refresh:
            self._tools = self._run(self._list_tools(), self.timeout)
        return [dict(tool) for tool in self._tools]

    def call_tool(
        self, name: str, arguments: Mapping[str, t.Any], timeout: float | None = None
    ) -> MCPToolResult:
        """Call one tool and wait for its result.

        :param timeout: seconds to wait for this call (default: the server's timeout).
        :raises MCPError: the server is unreachable, died, timed out or broke the protocol.
        """
        seconds = self.timeout if timeout is None else timeout
        return t.cast(
            MCPToolResult, self._run(self._call_tool(name, dict(arguments), seconds), seconds)
        )

    def close(self) -> None:
        """End the session and stop a stdio server's process; idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._connection is None or self._pid != os.getpid():
            return  # nothing open here (a forked worker leaves the parent's session alone)
        with contextlib.suppress(MCPError):
            LoopThread.get().run(self._disconnect(), 3 * EXIT_GRACE + _WAIT_MARGIN)

    # sync -> loop

    def _run(self, coro: Coroutine[t.Any, t.Any, t.Any], timeout: float) -> t.Any:
        if self._closed:
            coro.close()
            raise MCPError(f"the MCP server {self.name!r} is closed")
        try:
            import mcp  # noqa: F401
        except ImportError:
            coro.close()
            raise RuntimeError(_INSTALL_HINT) from None
        if self._pid != os.getpid():
            # a forked worker: the session belongs to the parent's loop thread
            self._connection = None
            self._pid = os.getpid()
        # connecting may take a timeout of its own before the call's
        return LoopThread.get().run(coro, 2 * timeout + _WAIT_MARGIN)

    # on the loop

    async def _list_tools(self) -> list[dict[str, t.Any]]:
        session = await self._session()
        try:
            tools = []
            cursor = None
            while True:
                from mcp_types import PaginatedRequestParams

                params: PaginatedRequestParams | None = (
                    None if cursor is None else PaginatedRequestParams(cursor=cursor)
                )
                result = await asyncio.wait_for(session.list_tools(params=params), self.timeout)
                tools.extend(result.tools)
                cursor = result.next_cursor
                if cursor is None:
                    break
        except BaseException as exc:
            raise await self._failed(exc, "listing tools") from None
        return [
            {
                "name": tool.name,
                "description": tool.description or "",
                "parameters": dict(tool.input_schema or {"type": "object", "properties": {}}),
            }
            for tool in tools
        ]

    async def _call_tool(
        self, name: str, arguments: dict[str, t.Any], timeout: float
    ) -> MCPToolResult:
        session = await self._session()
        try:
            result = await asyncio.wait_for(session.call_tool(name, arguments), timeout)
        except BaseException as exc:
            raise await self._failed(exc, f"calling {name!r}", timeout) from None
        return tool_result(result)

    async def _failed(
        self, exc: BaseException, doing: str, timeout: float | None = None
    ) -> BaseException:
        """Map an exception from the session to an ``MCPError``; drop a broken session."""
        from mcp.shared.exceptions import MCPError as ProtocolError
        from mcp_types import CONNECTION_CLOSED

        if isinstance(exc, (asyncio.CancelledError, KeyboardInterrupt, SystemExit)):
            return exc
        if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
            # the session stays usable: the server just answers late
            return MCPError(
                f"MCP server {self.name!r} timed out {doing} after {timeout or self.timeout:g} s"
            )
        if isinstance(exc, ProtocolError) and exc.code != CONNECTION_CLOSED:
            # an error answer from a live server (unknown tool, bad arguments, ...)
            return MCPError(f"MCP server {self.name!r} failed {doing}: {exc}")
        logger.warning(
            "MCP server %r failed %s (%s); reconnecting on the next call",
            self.name,
            doing,
            type(exc).__name__,
        )
        await self._disconnect()
        return MCPError(f"MCP server {self.name!r} failed {doing}: the connection was lost")

    async def _session(self) -> t.Any:
        connection = self._connection
        if connection is not None and connection.dead:
            await self._disconnect()
            connection = None
        if connection is None:
            connection = _Connection()
            self._connection = connection
            ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            connection.runner = asyncio.get_running_loop().create_task(
                self._hold(connection, ready)
            )
            try:
                await asyncio.wait_for(asyncio.shield(ready), self.timeout)
            except BaseException as exc:
                await self._disconnect()
                if isinstance(exc, MCPError):
                    raise
                if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
                    raise MCPError(
                        f"MCP server {self.name!r} did not answer within {self.timeout:g} s"
                    ) from None
                if isinstance(exc, asyncio.CancelledError):
                    raise
                logger.debug("MCP server %r connection failed", self.name, exc_info=exc)
                raise MCPError(
                    f"cannot connect to MCP server {self.name!r}: {_describe(exc)}"
                ) from None
        return connection.session

    async def _hold(self, connection: _Connection, ready: asyncio.Future[None]) -> None:
        """Own the transport and session: anyio scopes must exit in the task that entered them."""
        from mcp import ClientSession

        try:
            async with (
                self._transport(connection) as (read, write),
                ClientSession(read, write) as session,
            ):
                await session.initialize()
                connection.session = session
                ready.set_result(None)
                await self._wait_until_over(connection)
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(
                    exc if isinstance(exc, Exception) else MCPError("the connection was cancelled")
                )
            elif not isinstance(exc, asyncio.CancelledError):
                logger.warning("MCP server %r session ended: %s", self.name, _describe(exc))
        finally:
            connection.dead = True

    async def _wait_until_over(self, connection: _Connection) -> None:
        stop = asyncio.ensure_future(connection.stop.wait())
        watchers: list[asyncio.Future[t.Any]] = [stop]
        if connection.process is not None:
            watchers.append(asyncio.ensure_future(process_exit(connection.process)))
        try:
            await asyncio.wait(watchers, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for watcher in watchers:
                watcher.cancel()

    async def _disconnect(self) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        connection.dead = True
        connection.stop.set()
        if connection.runner is not None:
            # the runner stops the process itself (bounded), so just wait for it
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(asyncio.shield(connection.runner), 3 * EXIT_GRACE + 1)
            if not connection.runner.done():
                connection.runner.cancel()
        process = connection.process
        if process is not None and process.poll() is None:
            with contextlib.suppress(OSError):
                os.killpg(process.pid, signal.SIGKILL)


def _describe(exc: BaseException) -> str:
    """A short reason without URLs' credentials or headers: the exception class and errno text."""
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_describe(inner) for inner in exc.exceptions)
    if isinstance(exc, MCPError):
        return str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return type(exc).__name__


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_") or "mcp"
