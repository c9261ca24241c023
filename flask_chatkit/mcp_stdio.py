"""The stdio transport of MCP servers: a subprocess speaking MCP on stdin/stdout.

The stock transport of the ``mcp`` package relies on asyncio child watchers and
``subprocess.Popen``, which gevent replaces with versions that only work on the
gevent hub's thread. This one is spawned with the *original* ``subprocess.Popen``
and read through the selector of the loop of :class:`~flask_chatkit.mcp_bridge.LoopThread`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import typing as t

from .mcp_bridge import patched
from .mcp_results import MCPError

if t.TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from collections.abc import Callable
    from collections.abc import Mapping
    from collections.abc import Sequence

__all__ = ["EXIT_GRACE", "process_exit", "stdio_transport"]

logger = logging.getLogger("flask_chatkit")

#: Grace period for a stdio server to exit after its stdin closes, then after SIGTERM.
EXIT_GRACE = 2.0


_popen_class: t.Any = None


def _stdlib_popen() -> t.Any:
    """The standard library's ``Popen``, even under gevent's ``patch_subprocess``.

    gevent swaps ``subprocess.Popen`` for one bound to the hub's thread and sets the
    module's ``_fork_exec`` to None, which breaks the original class too; a private
    copy of the module has both intact.
    """
    global _popen_class
    if not patched("subprocess"):
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
async def stdio_transport(
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
    read_transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), process.stdout
    )
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
                    message = SessionMessage(
                        mcp_types.jsonrpc_message_adapter.validate_json(line, by_name=False)
                    )
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
                    data = session_message.message.model_dump_json(
                        by_alias=True, exclude_unset=True
                    )
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
        for _ in range(int(EXIT_GRACE / 0.01)):
            if process.poll() is not None:
                return
            await asyncio.sleep(0.01)
    logger.warning("MCP server process %d did not exit after SIGKILL", process.pid)


async def process_exit(process: subprocess.Popen[bytes]) -> None:
    """Return once *process* has exited."""
    # a poll, not a child watcher: those need threads or signals gevent takes over
    while process.poll() is None:
        await asyncio.sleep(0.05)
