"""The explicit Stop on the web layer's side: ``POST {prefix}/cancel`` and the
watcher that lets a Stop asked of another process reach this one's turns.

The core does the work (:meth:`~flask_chatkit.server.ChatKitServer.cancel_turn`,
:mod:`flask_chatkit.turns`); the watcher only needs an app context for the
store, which is why it lives here.
"""

from __future__ import annotations

import json
import logging
import typing as t

from flask import Flask
from flask import Response

from .errors import NotFoundError
from .errors import RequestError
from .group_commit import cooperative
from .turns import CHECK_INTERVAL

if t.TYPE_CHECKING:
    from .server import ChatKitServer

logger = logging.getLogger("flask_chatkit")


def thread_id_of(body: bytes) -> str:
    """The ``thread_id`` of a cancel request's JSON body (400 when it has none)."""
    try:
        data = json.loads(body)
    except ValueError:
        raise RequestError("The request body is not valid JSON.", code="invalid_json") from None
    thread_id = data.get("thread_id") if isinstance(data, dict) else None
    if not isinstance(thread_id, str) or not thread_id or len(thread_id) > 255 or "\x00" in thread_id:
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
    gevent, one greenlet per app and process, which runs while turns do and
    once per second stops those whose lease a Stop elsewhere marked."""
    watching: list[t.Any] = [None]

    def start() -> None:
        if not cooperative():
            return  # outside gevent a Stop reaches only this process's turns
        import gevent

        current = watching[0]
        if current is None or current.dead:
            watching[0] = gevent.spawn(_watch, app, server)

    return start


def _watch(app: Flask, server: ChatKitServer[t.Any]) -> None:
    import gevent

    while True:
        gevent.sleep(CHECK_INTERVAL)
        ours = server.running.tokens()
        if not ours:
            return
        try:
            with app.app_context():
                held = server.store.turn_tokens(list(ours))
        except Exception:  # the database is away: look again at the next tick
            logger.warning("Could not look at the leases of running turns.", exc_info=True)
            continue
        server.running.stop_lost(ours, held)


__all__ = ["cancel_response", "lease_watcher", "thread_id_of"]
