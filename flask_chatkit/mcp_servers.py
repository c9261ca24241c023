"""MCP servers for the built-in responder: a synchronous bridge to the ``mcp`` client.

The official ``mcp`` package is asyncio/anyio based, while responders are plain
generators (under gunicorn's gevent worker, or plain threads in tests). Every
``MCPServer`` therefore runs its client session on one long-lived asyncio event
loop in a dedicated *native* OS thread, and callers block on results:

- under gevent monkey patching, through an ``async_`` watcher of the caller's hub,
  so only the calling greenlet waits and the others keep running;
- otherwise on a native ``threading.Event``.

Each server keeps its session open (a stdio server process is started once per
process, not per call) and reconnects when the session has died. The stdio
transport is our own small one, spawned with the *original* ``subprocess.Popen``
and read through the loop's selector: the stock one relies on asyncio child
watchers and ``subprocess.Popen``, which gevent replaces with versions that
only work on the gevent hub's thread.

``widgets_from_content`` needs no ``mcp``: it rebuilds widgets from stored
tool-result content.
"""

from __future__ import annotations

import asyncio
import atexit
import base64
import binascii
import contextlib
import dataclasses
import json
import logging
import os
import re
import selectors
import signal
import subprocess
import sys
import threading
import typing as t
import weakref
from concurrent.futures import ThreadPoolExecutor

if t.TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from collections.abc import Callable
    from collections.abc import Coroutine
    from collections.abc import Mapping
    from collections.abc import Sequence

__all__ = [
    "MCPError",
    "MCPServer",
    "MCPToolResult",
    "WIDGET_MIME_TYPE",
    "WIDGET_URI_PREFIX",
    "widgets_from_content",
]

logger = logging.getLogger("flask_chatkit")

WIDGET_MIME_TYPE = "application/vnd.ui.widget+json"
"""MIME type of an embedded resource that carries a ChatKit widget."""

WIDGET_URI_PREFIX = "ui://"
"""URI scheme of embedded resources that may carry a widget."""

_INSTALL_HINT = "MCP servers need the 'mcp' package: pip install 'flask-chatkit[mcp]'"

# Grace period for a stdio server to exit after its stdin closes, then after SIGTERM.
_EXIT_GRACE = 2.0
# Extra time the caller waits beyond the request timeout before giving up on the loop.
_WAIT_MARGIN = 5.0


class MCPError(Exception):
    """An MCP server could not be reached, timed out or broke the protocol.

    The message is safe to show: it never contains headers or environment values.
    """


@dataclasses.dataclass
class MCPToolResult:
    """The result of one MCP tool call."""

    text: str
    """What the model reads: the text parts joined, plus short notes for resources."""
    content: list[dict[str, t.Any]]
    """Every content block as JSON (MCP wire form), kept so widgets can be rebuilt."""
    structured: dict[str, t.Any] | None
    """The result's ``structuredContent``, if any."""
    is_error: bool
    """Whether the tool reported an error."""


# --- widgets ---------------------------------------------------------------


def widgets_from_content(content: Sequence[Mapping[str, t.Any]]) -> list[tuple[dict[str, t.Any], str | None]]:
    """Return ``(widget, copy_text)`` for every widget resource in tool-result content.

    A widget is an embedded resource whose URI starts with ``ui://`` and whose MIME
    type is :data:`WIDGET_MIME_TYPE`; its text (or base64 blob) is the JSON object
    ``{"widget": {...}, "copy_text": "..."}``. Malformed payloads are logged and
    skipped, never raised.

    :param content: content blocks as stored in :attr:`MCPToolResult.content`.
    """
    widgets: list[tuple[dict[str, t.Any], str | None]] = []
    for block in content:
        if not isinstance(block, dict) or block.get("type") != "resource":
            continue
        resource = block.get("resource")
        if not isinstance(resource, dict):
            continue
        uri = resource.get("uri")
        # the wire form says mimeType; a plain model_dump() says mime_type
        mime = resource.get("mimeType", resource.get("mime_type"))
        if not isinstance(uri, str) or not uri.startswith(WIDGET_URI_PREFIX) or mime != WIDGET_MIME_TYPE:
            continue
        widget = _parse_widget_payload(resource, uri)
        if widget is not None:
            widgets.append(widget)
    return widgets


def _parse_widget_payload(resource: Mapping[str, t.Any], uri: str) -> tuple[dict[str, t.Any], str | None] | None:
    text = resource.get("text")
    if not isinstance(text, str):
        blob = resource.get("blob")
        if not isinstance(blob, str):
            logger.warning("MCP widget %s has neither text nor blob; skipped", uri)
            return None
        try:
            text = base64.b64decode(blob, validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            logger.warning("MCP widget %s has a blob that is not base64 UTF-8; skipped", uri)
            return None
    try:
        payload = json.loads(text)
    except ValueError:
        logger.warning("MCP widget %s is not valid JSON; skipped", uri)
        return None
    widget = payload.get("widget") if isinstance(payload, dict) else None
    if not isinstance(widget, dict) or not isinstance(widget.get("type"), str):
        logger.warning("MCP widget %s has no widget object with a string type; skipped", uri)
        return None
    copy_text = payload.get("copy_text")
    return widget, copy_text if isinstance(copy_text, str) else None


# --- gevent awareness ------------------------------------------------------


def _patched(module: str) -> bool:
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and bool(monkey.is_module_patched(module))


def _original(module: str, name: str) -> t.Any:
    if _patched(module):
        import gevent.monkey

        return gevent.monkey.get_original(module, name)
    return getattr(sys.modules[module] if module in sys.modules else __import__(module), name)


def _start_native_thread(target: Callable[[], None], name: str) -> None:
    if _patched("threading"):
        # a patched threading.Thread is a greenlet: the loop would starve the hub
        start_new_thread = _original("_thread", "start_new_thread")
        start_new_thread(target, ())
    else:
        threading.Thread(target=target, name=name, daemon=True).start()


class _NativeThreadExecutor(ThreadPoolExecutor):
    """The loop's default executor (DNS lookups): one native thread per job.

    asyncio's stock executor starts ``threading.Thread``\\ s, greenlets under
    monkey patching, which would never run on the loop's thread.
    """

    def submit(self, fn: t.Any, /, *args: t.Any, **kwargs: t.Any) -> t.Any:
        from concurrent.futures import Future

        future: Future[t.Any] = Future()

        def run() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as exc:  # handed to the waiting coroutine
                future.set_exception(exc)

        _start_native_thread(run, "flask-chatkit-mcp-executor")
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        pass


# --- the loop thread -------------------------------------------------------


class _Loop:
    """One asyncio loop in one native thread, shared by every server of the process."""

    _instance: _Loop | None = None
    _instance_pid = 0
    _lock = threading.Lock()  # never held across a wait or a yield, patched or not

    def __init__(self) -> None:
        if _patched("selectors") or _patched("select"):
            selector = _original("selectors", "DefaultSelector")()
        else:
            selector = selectors.DefaultSelector()
        self.loop = asyncio.SelectorEventLoop(selector)
        self.loop.set_default_executor(_NativeThreadExecutor(max_workers=1))
        _start_native_thread(self._run, "flask-chatkit-mcp")

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    @classmethod
    def get(cls) -> _Loop:
        with cls._lock:
            # a forked worker inherits the object but not the thread
            if cls._instance is None or cls._instance_pid != os.getpid():
                cls._instance = _Loop()
                cls._instance_pid = os.getpid()
            return cls._instance

    def run(self, coro: Coroutine[t.Any, t.Any, t.Any], timeout: float) -> t.Any:
        """Run ``coro`` on the loop and wait for it, cooperatively under gevent."""
        outcome: list[t.Any] = []
        task_box: list[asyncio.Task[t.Any]] = []

        if _patched("threading"):
            import gevent.event
            import gevent.hub

            hub = gevent.hub.get_hub()
            done_event = gevent.event.Event()
            watcher = hub.loop.async_()
            watcher.start(done_event.set)
            notify: Callable[[], None] = watcher.send

            def wait() -> bool:
                return bool(done_event.wait(timeout))

            def cleanup() -> None:
                watcher.stop()
                watcher.close()

        else:
            native_event = threading.Event()
            notify = native_event.set

            def wait() -> bool:
                return native_event.wait(timeout)

            def cleanup() -> None:
                pass

        def on_done(task: asyncio.Task[t.Any]) -> None:
            if task.cancelled():
                outcome.append((False, MCPError("the MCP request was cancelled")))
            elif task.exception() is not None:
                outcome.append((False, task.exception()))
            else:
                outcome.append((True, task.result()))
            notify()

        def start() -> None:
            task = self.loop.create_task(coro)
            task_box.append(task)
            task.add_done_callback(on_done)

        def cancel() -> None:
            if task_box:
                task_box[0].cancel()

        self.loop.call_soon_threadsafe(start)
        try:
            finished = wait()
        except BaseException:
            # the waiting greenlet was killed (client gone): stop the request too
            self.loop.call_soon_threadsafe(cancel)
            raise
        finally:
            cleanup()
        if not finished or not outcome:
            self.loop.call_soon_threadsafe(cancel)
            raise MCPError("the MCP request timed out")
        ok, value = outcome[0]
        if ok:
            return value
        raise value


# --- stdio transport -------------------------------------------------------

_popen_class: t.Any = None


def _stdlib_popen() -> t.Any:
    """The standard library's ``Popen``, even under gevent's ``patch_subprocess``.

    gevent swaps ``subprocess.Popen`` for one bound to the hub's thread and sets the
    module's ``_fork_exec`` to None, which breaks the original class too; a private
    copy of the module has both intact.
    """
    global _popen_class
    if not _patched("subprocess"):
        return subprocess.Popen
    if _popen_class is None:
        import importlib.util

        spec = importlib.util.find_spec("subprocess")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _popen_class = module.Popen
    return _popen_class


@contextlib.asynccontextmanager
async def _stdio_transport(
    command: str,
    args: Sequence[str],
    env: Mapping[str, str] | None,
    cwd: str | None,
    on_start: Callable[[subprocess.Popen[bytes]], None],
) -> AsyncIterator[tuple[t.Any, t.Any]]:
    """Spawn a stdio MCP server and bridge its pipes to anyio streams for ``ClientSession``."""
    import anyio
    import mcp_types
    from mcp.client.stdio import get_default_environment
    from mcp.shared.message import SessionMessage

    popen = _stdlib_popen()
    try:
        process: subprocess.Popen[bytes] = popen(
            [command, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={**get_default_environment(), **(env or {})},
            cwd=cwd,
            # its own process group, so close() can stop the whole tree
            start_new_session=True,
        )
    except OSError as exc:
        raise MCPError(f"cannot start the MCP server {command!r}: {exc.strerror or exc}") from None
    on_start(process)
    assert process.stdin is not None and process.stdout is not None
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=64 * 1024 * 1024, loop=loop)
    read_transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), process.stdout)
    write_transport, write_protocol = await loop.connect_write_pipe(
        lambda: asyncio.streams.FlowControlMixin(loop), process.stdin
    )
    writer = asyncio.StreamWriter(write_transport, write_protocol, None, loop)

    read_send, read_receive = anyio.create_memory_object_stream[t.Any](0)
    write_send, write_receive = anyio.create_memory_object_stream[t.Any](0)

    async def stdout_reader() -> None:
        async with read_send:
            while True:
                try:
                    line = await reader.readline()
                except (ValueError, OSError) as exc:  # an overlong line, or a broken pipe
                    logger.warning("MCP stdio server stopped being readable: %s", exc)
                    return
                if not line:
                    return  # EOF: the server is gone, the session sees the stream close
                if not line.strip():
                    continue
                message: t.Any
                try:
                    message = SessionMessage(mcp_types.jsonrpc_message_adapter.validate_json(line, by_name=False))
                except ValueError as exc:
                    message = exc
                try:
                    await read_send.send(message)
                except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                    return

    async def stdin_writer() -> None:
        try:
            async with write_receive:
                async for session_message in write_receive:
                    data = session_message.message.model_dump_json(by_alias=True, exclude_unset=True)
                    writer.write(data.encode() + b"\n")
                    await writer.drain()
        except (OSError, anyio.ClosedResourceError, anyio.BrokenResourceError):
            await read_send.aclose()

    async with anyio.create_task_group() as tg:
        tg.start_soon(stdout_reader)
        tg.start_soon(stdin_writer)
        try:
            yield read_receive, write_send
        finally:
            with anyio.CancelScope(shield=True):
                await _stop_process(process, write_transport)
                read_transport.close()
                await read_receive.aclose()
                await write_send.aclose()
            tg.cancel_scope.cancel()


async def _stop_process(process: subprocess.Popen[bytes], stdin: asyncio.WriteTransport) -> None:
    """Close stdin, wait, then SIGTERM and SIGKILL the process group (MCP shutdown order)."""
    stdin.close()
    for sig in (None, signal.SIGTERM, signal.SIGKILL):
        if sig is not None:
            with contextlib.suppress(OSError):
                os.killpg(process.pid, sig)
        for _ in range(int(_EXIT_GRACE / 0.01)):
            if process.poll() is not None:
                return
            await asyncio.sleep(0.01)
    logger.warning("MCP server process %d did not exit after SIGKILL", process.pid)


# --- the server ------------------------------------------------------------


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
        transport: Callable[[_Connection], contextlib.AbstractAsyncContextManager[tuple[t.Any, t.Any]]],
    ) -> None:
        self.name = name
        self.timeout = timeout
        self._transport = transport
        self._connection: _Connection | None = None
        self._tools: list[dict[str, t.Any]] | None = None
        self._closed = False
        self._pid = os.getpid()
        ref = weakref.ref(self)
        atexit.register(lambda: (server := ref()) is not None and server.close())

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

        def transport(connection: _Connection) -> contextlib.AbstractAsyncContextManager[tuple[t.Any, t.Any]]:
            def on_start(process: subprocess.Popen[bytes]) -> None:
                connection.process = process

            return _stdio_transport(command, args, env, directory, on_start)

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
            client = httpx2.AsyncClient(headers=header_dict, timeout=httpx2.Timeout(timeout, read=max(timeout, 300.0)))
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

    def call_tool(self, name: str, arguments: Mapping[str, t.Any], timeout: float | None = None) -> MCPToolResult:
        """Call one tool and wait for its result.

        :param timeout: seconds to wait for this call (default: the server's timeout).
        :raises MCPError: the server is unreachable, died, timed out or broke the protocol.
        """
        seconds = self.timeout if timeout is None else timeout
        return t.cast(MCPToolResult, self._run(self._call_tool(name, dict(arguments), seconds), seconds))

    def close(self) -> None:
        """End the session and stop a stdio server's process; idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._connection is None or self._pid != os.getpid():
            return  # nothing open here (a forked worker leaves the parent's session alone)
        with contextlib.suppress(MCPError):
            _Loop.get().run(self._disconnect(), 3 * _EXIT_GRACE + _WAIT_MARGIN)

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
        return _Loop.get().run(coro, 2 * timeout + _WAIT_MARGIN)

    # on the loop

    async def _list_tools(self) -> list[dict[str, t.Any]]:
        session = await self._session()
        try:
            tools = []
            cursor = None
            while True:
                from mcp_types import PaginatedRequestParams

                params = None if cursor is None else PaginatedRequestParams(cursor=cursor)
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

    async def _call_tool(self, name: str, arguments: dict[str, t.Any], timeout: float) -> MCPToolResult:
        session = await self._session()
        try:
            result = await asyncio.wait_for(session.call_tool(name, arguments), timeout)
        except BaseException as exc:
            raise await self._failed(exc, f"calling {name!r}", timeout) from None
        return _tool_result(result)

    async def _failed(self, exc: BaseException, doing: str, timeout: float | None = None) -> BaseException:
        """Map an exception from the session to an ``MCPError``; drop a broken session."""
        from mcp.shared.exceptions import MCPError as ProtocolError
        from mcp_types import CONNECTION_CLOSED

        if isinstance(exc, (asyncio.CancelledError, KeyboardInterrupt, SystemExit)):
            return exc
        if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
            # the session stays usable: the server just answers late
            return MCPError(f"MCP server {self.name!r} timed out {doing} after {timeout or self.timeout:g} s")
        if isinstance(exc, ProtocolError) and exc.code != CONNECTION_CLOSED:
            # an error answer from a live server (unknown tool, bad arguments, ...)
            return MCPError(f"MCP server {self.name!r} failed {doing}: {exc}")
        logger.warning("MCP server %r failed %s (%s); reconnecting on the next call", self.name, doing, type(exc).__name__)
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
            connection.runner = asyncio.get_running_loop().create_task(self._hold(connection, ready))
            try:
                await asyncio.wait_for(asyncio.shield(ready), self.timeout)
            except BaseException as exc:
                await self._disconnect()
                if isinstance(exc, MCPError):
                    raise
                if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
                    raise MCPError(f"MCP server {self.name!r} did not answer within {self.timeout:g} s") from None
                if isinstance(exc, asyncio.CancelledError):
                    raise
                logger.debug("MCP server %r connection failed", self.name, exc_info=exc)
                raise MCPError(f"cannot connect to MCP server {self.name!r}: {_describe(exc)}") from None
        return connection.session

    async def _hold(self, connection: _Connection, ready: asyncio.Future[None]) -> None:
        """Own the transport and session: anyio scopes must exit in the task that entered them."""
        from mcp import ClientSession

        try:
            async with self._transport(connection) as (read, write), ClientSession(read, write) as session:
                await session.initialize()
                connection.session = session
                ready.set_result(None)
                await self._wait_until_over(connection)
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(exc if isinstance(exc, Exception) else MCPError("the connection was cancelled"))
            elif not isinstance(exc, asyncio.CancelledError):
                logger.warning("MCP server %r session ended: %s", self.name, _describe(exc))
        finally:
            connection.dead = True

    async def _wait_until_over(self, connection: _Connection) -> None:
        stop = asyncio.ensure_future(connection.stop.wait())
        watchers = [stop]
        if connection.process is not None:
            watchers.append(asyncio.ensure_future(_process_exit(connection.process)))
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
                await asyncio.wait_for(asyncio.shield(connection.runner), 3 * _EXIT_GRACE + 1)
            if not connection.runner.done():
                connection.runner.cancel()
        process = connection.process
        if process is not None and process.poll() is None:
            with contextlib.suppress(OSError):
                os.killpg(process.pid, signal.SIGKILL)


async def _process_exit(process: subprocess.Popen[bytes]) -> None:
    # a poll, not a child watcher: those need threads or signals gevent takes over
    while process.poll() is None:
        await asyncio.sleep(0.05)


def _tool_result(result: t.Any) -> MCPToolResult:
    content = [block.model_dump(mode="json", by_alias=True, exclude_none=True) for block in result.content]
    parts: list[str] = []
    for block in content:
        kind = block.get("type")
        if kind == "text":
            parts.append(block.get("text", ""))
        elif kind == "resource":
            resource = block.get("resource") or {}
            uri = resource.get("uri", "")
            parts.append(f"[resource {uri}]")
            is_widget = uri.startswith(WIDGET_URI_PREFIX) and resource.get("mimeType") == WIDGET_MIME_TYPE
            if not is_widget and isinstance(resource.get("text"), str):
                parts.append(resource["text"])
        elif kind == "resource_link":
            parts.append(f"[resource {block.get('uri', '')}]")
        elif kind in ("image", "audio"):
            parts.append(f"[{kind} {block.get('mimeType', '')}]")
    structured = getattr(result, "structured_content", None)
    return MCPToolResult(
        text="\n".join(part for part in parts if part),
        content=content,
        structured=structured if isinstance(structured, dict) else None,
        is_error=bool(getattr(result, "is_error", False)),
    )


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
