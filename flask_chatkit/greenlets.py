"""Waits that a kill does not cut short, and a thread for blocking calls (no Flask here).

A greenlet waiting for work it handed over (a driver call on a thread, a write
in the next group commit) must not walk away when it is killed or times out:
the work goes on and may still commit, and the connection it uses must not be
rolled back, closed or handed to someone else meanwhile.
"""

from __future__ import annotations

import collections
import os
import typing as t


def wait_to_end(result: t.Any) -> t.Any:
    """The value of *result* (a gevent ``AsyncResult``: a group commit's answer)
    once it is ready, waiting on through a kill or timeout of the caller, which
    is then raised (:meth:`CallThread.call` waits the same way)."""
    interrupted: BaseException | None = None
    while not result.ready():
        try:
            result.wait()
        except BaseException as exc:  # GreenletExit, Timeout: the work goes on
            interrupted = interrupted or exc
    if interrupted is not None:
        raise interrupted
    return result.get()


class CallThread:
    """One real thread that runs blocking calls in order while the calling
    greenlets wait cooperatively (see :meth:`call`).

    Cheaper per call than gevent's thread pool (an ``AsyncResult`` and a loop
    watcher per call there): calls go through one native queue, results come
    back through one deque and one ``async`` watcher, and the results of calls
    that end together wake the hub once. Made in the hub's thread; the thread
    starts on the first call (again after a fork).
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._pid = 0
        self._hub: t.Any = None
        self._ident: t.Callable[[], int] = int
        self._hub_thread = 0
        self._calls: t.Any = None
        self._results: collections.deque[tuple[t.Any, tuple[t.Any, BaseException | None]]] = (
            collections.deque()
        )
        self._watcher: t.Any = None
        self._outstanding = 0

    def _start(self) -> None:
        from gevent import get_hub
        from gevent.monkey import get_original

        self._hub = get_hub()
        self._ident = get_original("_thread", "get_ident")
        self._hub_thread = self._ident()
        self._calls = get_original("queue", "SimpleQueue")()
        self._results.clear()
        self._watcher = self._hub.loop.async_()
        self._watcher.start(self._deliver)
        self._watcher.ref = False  # only calls in flight keep the loop alive
        self._outstanding = 0
        get_original("_thread", "start_new_thread")(self._serve, (self._calls,))
        self._pid = os.getpid()

    def _serve(self, calls: t.Any) -> None:
        # the thread: run each call, hand its result back, wake the hub
        while True:
            waiter, function, args = calls.get()
            try:
                result: tuple[t.Any, BaseException | None] = (function(*args), None)
            except BaseException as exc:  # an answer for the caller, not a crash
                result = (None, exc)
            self._results.append((waiter, result))
            self._watcher.send()

    def _deliver(self) -> None:
        # in the hub: each finished call's result to its waiting greenlet
        results = self._results
        while results:
            waiter, result = results.popleft()
            self._outstanding -= 1
            waiter.switch(result)
        if not self._outstanding:
            self._watcher.ref = False

    def call(self, function: t.Callable[..., t.Any], *args: t.Any) -> t.Any:
        """``function(*args)`` on the thread; its value, or its exception raised.

        A greenlet killed (or timed out) while it waits still waits for the call
        to end, then raises what interrupted it. Called from another thread than
        the hub's (this one included), or by the hub itself, the function runs at once.
        """
        from gevent import getcurrent
        from gevent.hub import Waiter

        if self._pid != os.getpid():
            self._start()
        if self._ident() != self._hub_thread or getcurrent() is self._hub:
            return function(*args)  # another thread (this one, say), or the hub itself
        waiter = Waiter(self._hub)
        self._outstanding += 1
        self._watcher.ref = True
        self._calls.put((waiter, function, args))
        interrupted: BaseException | None = None
        while True:
            try:
                value, error = waiter.get()
                break
            except BaseException as exc:  # GreenletExit, Timeout: the call goes on
                interrupted = interrupted or exc
        if interrupted is not None:
            raise interrupted
        if error is not None:
            raise error
        return value


__all__ = ["CallThread", "wait_to_end"]
