"""The explicit Stop on the web layer's side: ``POST {prefix}/cancel``, and the
watcher that keeps this process's running turns in order under gevent.

The watcher, one greenlet per app and process while turns run, once per
:data:`~flask_chatkit.turns.CHECK_INTERVAL`:

- stops the turns whose lease a Stop elsewhere marked (or that lost it);
- renews the leases of all of them in one write every third of
  ``CHATKIT_TURN_LEASE``, so that a worker that dies frees its threads within
  a lease, however long its responders think;
- stops a turn whose responder said nothing for ``CHATKIT_TURN_TIMEOUT``.

On SIGTERM (gunicorn's graceful shutdown) the running turns get the worker's
graceful timeout to finish; shortly before it ends, those still running are
stopped and saved as interrupted (:meth:`RunningTurns.interrupt_all`), so that
none is left holding its thread.

The core does the work (:meth:`~flask_chatkit.server.ChatKitServer.cancel_turn`,
:mod:`flask_chatkit.turns`); the watcher only needs an app context for the
store, which is why it lives here.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
import typing as t
import weakref

from flask import Flask
from flask import Response

from .errors import ErrorCode
from .errors import NotFoundError
from .errors import RequestError
from .group_commit import cooperative
from .turns import CHECK_INTERVAL
from .turns import RunningTurns

if t.TYPE_CHECKING:
    from .server import ChatKitServer

logger = logging.getLogger("flask_chatkit")


def thread_id_of(body: bytes) -> str:
    """The ``thread_id`` of a cancel request's JSON body (400 when it has none)."""
    try:
        data = json.loads(body)
    except ValueError:
        raise RequestError(
            "The request body is not valid JSON.", code=ErrorCode.INVALID_JSON
        ) from None
    thread_id = data.get("thread_id") if isinstance(data, dict) else None
    if (
        not isinstance(thread_id, str)
        or not thread_id
        or len(thread_id) > 255
        or "\x00" in thread_id
    ):
        raise RequestError(
            'Send {"thread_id": "<the thread whose answer to stop>"}.', field="thread_id"
        )
    return thread_id


def cancel_response(server: ChatKitServer[t.Any], body: bytes, context: t.Any) -> Response:
    """Stop the running turn of the thread the body names; ``{"stopped": bool}``."""
    try:
        stopped = server.cancel_turn(thread_id_of(body), context)
    except NotFoundError as exc:  # the field of this request, not of /chatkit's
        raise NotFoundError(exc.message, field="thread_id") from None
    return Response(json.dumps({"stopped": stopped}), mimetype="application/json")


def lease_watcher(app: Flask, server: ChatKitServer[t.Any]) -> t.Callable[[], None]:
    """What starts *server*'s lease watcher (``server.running.on_enter``): under
    gevent, one greenlet per app and process, which runs while turns do."""
    watching: list[t.Any] = [None]

    def start() -> None:
        if not cooperative():
            return  # outside gevent a Stop reaches only this process's turns
        import gevent

        server.running.timed = True
        _on_shutdown(server.running)
        current = watching[0]
        if current is None or current.dead:
            watching[0] = gevent.spawn(_watch, app, server)

    return start


def _watch(app: Flask, server: ChatKitServer[t.Any]) -> None:
    import gevent

    running = server.running
    every = server._lease_length() / 3
    renew_at = time.monotonic() + every
    while True:
        gevent.sleep(CHECK_INTERVAL)
        ours = running.tokens()
        if not ours:
            return
        now = time.monotonic()
        running.stop_silent(server.turn_timeout, now)
        try:
            with app.app_context():
                if now >= renew_at:
                    server.store.renew_turns(ours, server._lease_end())
                    renew_at = now + every
                held = server.store.turn_tokens(list(ours))
        except Exception:  # the database is away: look again at the next tick
            logger.warning("Could not look at the leases of running turns.", exc_info=True)
            continue
        running.stop_lost(ours, held)


# --- graceful shutdown -----------------------------------------------------------------

#: The running turns of every app of this process (for the SIGTERM handler).
_ALL_TURNS: weakref.WeakSet[RunningTurns] = weakref.WeakSet()
#: The process whose SIGTERM handler is chained (a forked worker chains its own).
_chained_in: list[int] = []
#: Seconds of graceful timeout assumed when the server does not say (gunicorn's default).
GRACEFUL_TIMEOUT = 30.0
#: Seconds before the graceful timeout ends when running turns are interrupted.
INTERRUPT_MARGIN = 2.0


def _on_shutdown(turns: RunningTurns) -> None:
    """Have SIGTERM interrupt *turns* before the graceful timeout runs out
    (chained before the handler the server installed, which still runs)."""
    _ALL_TURNS.add(turns)
    if _chained_in == [os.getpid()]:
        return
    try:
        previous = signal.getsignal(signal.SIGTERM)

        def handler(signum: int, frame: t.Any) -> None:
            _schedule_interrupt(_graceful_timeout(previous))
            if callable(previous):
                previous(signum, frame)

        signal.signal(signal.SIGTERM, handler)
        signal.siginterrupt(signal.SIGTERM, False)  # as gunicorn has it: no EINTR
    except ValueError:  # not the main thread: leave signals to the server
        return
    _chained_in[:] = [os.getpid()]


def _graceful_timeout(previous: t.Any) -> float:
    """gunicorn's ``--graceful-timeout``, read from the worker whose handler
    *previous* is (``Worker.handle_exit``); else :data:`GRACEFUL_TIMEOUT`."""
    cfg = getattr(getattr(previous, "__self__", None), "cfg", None)
    value = getattr(cfg, "graceful_timeout", None)
    return float(value) if isinstance(value, (int, float)) else GRACEFUL_TIMEOUT


def _schedule_interrupt(grace: float) -> None:
    import gevent

    delay = max(grace - INTERRUPT_MARGIN, grace / 2)
    gevent.get_hub().loop.run_callback(gevent.spawn_later, delay, _interrupt_all, delay)


def _interrupt_all(after: float) -> None:
    for turns in list(_ALL_TURNS):
        count = len(turns)
        if count:
            logger.warning(
                "Shutting down: %d running turns did not finish within %.0f s; "
                "they are saved as interrupted.",
                count,
                after,
            )
            turns.interrupt_all(wait=INTERRUPT_MARGIN / 2)


__all__ = ["cancel_response", "lease_watcher", "thread_id_of"]
