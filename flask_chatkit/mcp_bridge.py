"""A synchronous bridge to asyncio code, for the ``mcp`` client (no Flask here).

The official ``mcp`` package is asyncio/anyio based, while responders are plain
generators (under gunicorn's gevent worker, or plain threads in tests). Every
:class:`~flask_chatkit.mcp_servers.MCPServer` therefore runs its client session
on one long-lived asyncio event loop in a dedicated *native* OS thread
(:class:`LoopThread`), and callers block on results:

- under gevent monkey patching, through an ``async_`` watcher of the caller's hub,
  so only the calling greenlet waits and the others keep running;
- otherwise on a native ``threading.Event``.
"""

from __future__ import annotations

import asyncio
import os
import selectors
import sys
import threading
import typing as t
from concurrent.futures import ThreadPoolExecutor

from .mcp_results import MCPError

if t.TYPE_CHECKING:
    from collections.abc import Callable
    from collections.abc import Coroutine

__all__ = ["LoopThread", "patched"]


# --- gevent awareness ------------------------------------------------------


def patched(module: str) -> bool:
    """Whether gevent has monkey-patched the standard module *module*."""
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and bool(monkey.is_module_patched(module))


def _original(module: str, name: str) -> t.Any:
    if patched(module):
        import gevent.monkey

        return gevent.monkey.get_original(module, name)
    return getattr(sys.modules[module] if module in sys.modules else __import__(module), name)


def _start_native_thread(target: Callable[[], None], name: str) -> None:
    if patched("threading"):
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


class LoopThread:
    """One asyncio loop in one native thread, shared by every server of the process."""

    _instance: LoopThread | None = None
    _instance_pid = 0
    _lock = threading.Lock()  # never held across a wait or a yield, patched or not

    def __init__(self) -> None:
        if patched("selectors") or patched("select"):
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
    def get(cls) -> LoopThread:
        """The process's loop thread, started on first use (and again after a fork)."""
        with cls._lock:
            # a forked worker inherits the object but not the thread
            if cls._instance is None or cls._instance_pid != os.getpid():
                cls._instance = LoopThread()
                cls._instance_pid = os.getpid()
            return cls._instance

    def run(self, coro: Coroutine[t.Any, t.Any, t.Any], timeout: float) -> t.Any:
        """Run ``coro`` on the loop and wait for it, cooperatively under gevent."""
        outcome: list[t.Any] = []
        task_box: list[asyncio.Task[t.Any]] = []

        if patched("threading"):
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
