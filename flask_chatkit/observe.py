"""What operators see of each request (Flask glue): its access line and metrics,
the health check and the metrics endpoint.

The blueprint calls :meth:`Observer.begin` before and :meth:`Observer.end` after
every request; a stream is followed by a :class:`Watch` until it ends, so its
line and metrics come when it is over. The records and the log format live in
:mod:`flask_chatkit.access_log`, the Prometheus metrics in
:mod:`flask_chatkit.metrics` (imported only when ``CHATKIT_METRICS`` is on).
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import time
import typing as t

from flask import Response
from flask import g
from flask import request

from . import access_log
from . import auth
from .errors import ErrorCode
from .errors import RequestError
from .errors import StoreUnavailableError
from .types import utcnow

if t.TYPE_CHECKING:
    from .extension import State

logger = logging.getLogger("flask_chatkit")

#: Endpoints that get neither an access line nor a count (files and scrapes).
UNRECORDED = frozenset({"static", "client_script", "metrics"})


class Observer:
    """The access line and the metrics of each request of one app."""

    def __init__(self, state: State) -> None:
        self.state = state

    @staticmethod
    def record() -> access_log.Record | None:
        """The current request's record (``None`` outside the blueprint's requests)."""
        record: access_log.Record | None = g.get("_chatkit_record")
        return record

    def begin(self) -> None:
        """Before each request: its record and id (``X-Request-ID``), for every
        log line while it runs."""
        endpoint = (request.endpoint or "").rsplit(".", 1)[-1]
        record = access_log.Record(
            access_log.request_id(request.headers.get(access_log.HEADER)),
            "unknown" if endpoint == "protocol" else endpoint or "not_found",
        )
        g._chatkit_record = record
        access_log.current.set(record)

    def end(self, response: Response) -> Response:
        """After each request: send its id back; write its line and count it, unless
        it streams (then when the stream ends)."""
        record = self.record()
        if record is None:
            return response
        response.headers[access_log.HEADER] = record.request_id
        if record.stream:
            # a body that never starts (the client left first) ends here
            response.call_on_close(lambda: self.finish(record, 200, "cancelled"))
        else:
            self.finish(record, response.status_code)
        return response

    def authenticated(self, context: t.Any) -> None:
        """The request's user is known (for its line)."""
        record = self.record()
        if record is not None:
            record.context = context

    def parsed(self, context: t.Any) -> None:
        """The request's type (and thread) are known: the server set them on *context*."""
        record = self.record()
        if record is not None:
            record.type = getattr(context, "request_type", None) or record.type

    def refused(self) -> None:
        """The turn was refused by a rate limit or token budget."""
        access_log.mark("refused")
        if self.state.metrics is not None:
            self.state.metrics.rate_limited()

    def watch(self, thread_id: str | None = None) -> Watch | None:
        """A :class:`Watch` for the current request's stream."""
        record = self.record()
        if record is None:
            return None
        if thread_id is not None:
            record.thread_id = thread_id
        record.stream = True
        return Watch(self, record)

    def finish(
        self, record: access_log.Record, status: int, outcome: access_log.Outcome | None = None
    ) -> None:
        """Write the line of *record* and count it (once)."""
        if not record.finish(status, outcome) or record.type in UNRECORDED:
            return
        if self.state.metrics is not None:
            self.state.metrics.request_finished(record)
        if self.state.access_log:
            access_log.write(record)


class Watch:
    """How a stream goes (:class:`~flask_chatkit.sse.StreamWatch`): its thread, first
    event, errors and end, for its access line and the metrics."""

    def __init__(self, observer: Observer, record: access_log.Record) -> None:
        self.observer = observer
        self.record = record
        self.failed = False  # an ``error`` event went out
        self.running = False

    def started(self) -> None:
        access_log.current.set(self.record)  # the body may run after other requests
        self.running = True
        metrics = self.observer.state.metrics
        if metrics is not None:
            metrics.stream_started()

    def event(self, event: t.Any) -> None:
        kind = event.type
        if kind == "thread.created":
            self.record.thread_id = event.thread.id
            return  # the request's echo, like the user's own message: not the answer
        if kind == "error":
            self.failed = True
        elif kind in ("thread.item.added", "thread.item.done") and (
            getattr(event.item, "type", None) == "user_message"
        ):
            return
        if self.record.first_event is None:
            self.record.event()

    def ended(self, outcome: str) -> None:
        if self.running:
            self.running = False
            metrics = self.observer.state.metrics
            if metrics is not None:
                metrics.stream_ended()
        if outcome == "completed" and self.failed and self.record.outcome is None:
            outcome = "error"
        self.observer.finish(self.record, 200, t.cast(access_log.Outcome, outcome))


def health_response(state: State) -> Response:
    """Whether the store answers, as ``application/health+json`` (the IETF draft
    "Health Check Response Format for HTTP APIs"): 200 ``pass``, or 503 ``fail``
    within ``CHATKIT_HEALTH_TIMEOUT``. No authentication, and nothing in it but
    statuses and the store's response time (no error text: it may name hosts)."""
    started = time.monotonic()
    try:
        state.server.store.ping(state.config["CHATKIT_HEALTH_TIMEOUT"])
        status = "pass"
    except Exception as exc:
        cause = exc.__cause__ if isinstance(exc, StoreUnavailableError) else exc
        logger.warning("Health check: the store failed (%s).", type(cause).__name__)
        status = "fail"
    check = {
        "componentType": "datastore",
        "observedValue": round((time.monotonic() - started) * 1000, 1),
        "observedUnit": "ms",
        "status": status,
        "time": utcnow().isoformat(),
    }
    body = {"status": status, "checks": {"store:responseTime": [check]}}
    return Response(
        json.dumps(body),
        status=200 if status == "pass" else 503,
        mimetype="application/health+json",
        headers={"Cache-Control": "no-store"},
    )


def metrics_response(state: State) -> Response:
    """Prometheus' text format. With ``CHATKIT_METRICS_TOKEN``, for whoever sends it
    as a bearer token; without, for loopback clients only. Anyone else gets a
    JSON 403."""
    metrics = state.metrics
    assert metrics is not None  # the route exists only with metrics on
    token = state.config["CHATKIT_METRICS_TOKEN"]
    if token:
        sent = auth.bearer_token(request) or ""
        allowed = hmac.compare_digest(sent.encode(), token.encode())  # constant time
    else:
        allowed = is_loopback(request.remote_addr)
    if not allowed:
        raise RequestError(
            "Metrics are served to loopback clients or with the metrics token.",
            code=ErrorCode.FORBIDDEN,
            status=403,
        )
    from .metrics import CONTENT_TYPE

    response = Response(metrics.render(), content_type=CONTENT_TYPE)
    response.headers["Cache-Control"] = "no-store"
    return response


def is_loopback(address: str | None) -> bool:
    """Whether *address* (``REMOTE_ADDR``) is this host's: 127.0.0.0/8, ``::1``, or
    an IPv4 loopback address mapped into IPv6."""
    if address is None:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return bool(ip.is_loopback or (mapped is not None and mapped.is_loopback))


__all__ = [
    "UNRECORDED",
    "Observer",
    "Watch",
    "health_response",
    "is_loopback",
    "metrics_response",
]
