"""Prometheus metrics (``CHATKIT_METRICS = True``), served at ``GET {prefix}/metrics``.

Imported only when the setting is on, so ``prometheus_client`` costs nothing
otherwise. The metrics (names and units as Prometheus recommends; no user or
thread ids as labels, so their number stays bounded):

``chatkit_requests_total{type,status}``
    Requests answered: the ChatKit request type (``threads.create``...) or the
    endpoint (``upload``, ``cancel``...), and the HTTP status. A stream counts
    when it ends.
``chatkit_streams_active``
    Streams being sent now.
``chatkit_time_to_first_event_seconds``, ``chatkit_stream_duration_seconds``
    Histograms: from a stream's request to its first event, and to its end.
``chatkit_disconnects_total{outcome}``
    Clients that left mid-stream: their turn was ``cancelled`` or runs on ``detached``.
``chatkit_model_tokens_total{direction}``
    Model tokens spent, ``input`` and ``output`` (``RequestContext.report_usage``).
``chatkit_model_errors_total{kind}``
    Model calls that failed, by kind (``timeout``, ``rate_limit``, ``upstream``...).
``chatkit_store_seconds{operation}``
    Histogram of the SQL store's transactions, ``read`` or ``write`` (connection,
    statements and commit; the in-memory store reports none).
``chatkit_rate_limited_total``
    Requests refused by a rate limit (:meth:`Metrics.rate_limited`).

Several worker processes (gunicorn ``-w N``) need ``prometheus_client``'s
multiprocess mode: set ``PROMETHEUS_MULTIPROC_DIR`` to an empty directory for the
whole server, and use :func:`on_starting` and :func:`child_exit` as gunicorn
hooks (``example_app/gunicorn_conf.py`` does): the first empties the directory
when the server starts, the second drops a dead worker's live gauges. A scrape,
whichever worker answers it, then adds up every worker's values.
"""

from __future__ import annotations

import os
import typing as t

import prometheus_client
from prometheus_client import CollectorRegistry
from prometheus_client import Counter
from prometheus_client import Gauge
from prometheus_client import Histogram
from prometheus_client import multiprocess

if t.TYPE_CHECKING:
    from .access_log import Record

#: The environment variable turning on multiprocess mode (``prometheus_client``'s own).
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: The content type of a scrape.
CONTENT_TYPE: str = prometheus_client.CONTENT_TYPE_LATEST
#: The model failure kinds counted by name (``flask_chatkit.llm.RETRYABLE``); others
#: count as ``other``, so an app's own kinds cannot grow the label without bound.
MODEL_ERROR_KINDS = frozenset(
    {
        "timeout",
        "rate_limit",
        "upstream",
        "connection",
        "malformed",
        "content_filter",
        "bad_request",
        "config",
    }
)


class Metrics:
    """This process's metrics, in their own registry (see :func:`get`)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        reg = self.registry
        self.requests = Counter(
            "chatkit_requests",
            "ChatKit requests answered, by request type (or endpoint) and HTTP status.",
            ["type", "status"],
            registry=reg,
        )
        self.streams_active = Gauge(
            "chatkit_streams_active",
            "ChatKit streams being sent now.",
            registry=reg,
            multiprocess_mode="livesum",
        )
        self.time_to_first_event = Histogram(
            "chatkit_time_to_first_event_seconds",
            "Seconds from a stream's request to its first event.",
            registry=reg,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.stream_duration = Histogram(
            "chatkit_stream_duration_seconds",
            "Seconds from a stream's request to its end.",
            registry=reg,
            buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
        )
        self.disconnects = Counter(
            "chatkit_disconnects",
            "Clients that left mid-stream, by what became of the turn (cancelled, detached).",
            ["outcome"],
            registry=reg,
        )
        self.model_tokens = Counter(
            "chatkit_model_tokens",
            "Model tokens spent, by direction (input, output).",
            ["direction"],
            registry=reg,
        )
        self.model_errors = Counter(
            "chatkit_model_errors",
            "Model calls that failed, by kind.",
            ["kind"],
            registry=reg,
        )
        self.store_seconds = Histogram(
            "chatkit_store_seconds",
            "Seconds of the SQL store's transactions, by operation (read, write).",
            ["operation"],
            registry=reg,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )
        self.rate_limited_requests = Counter(
            "chatkit_rate_limited",
            "ChatKit requests refused by a rate limit.",
            registry=reg,
        )
        # every labelled series at 0 from the start: rate() sees the first increment
        for direction in ("input", "output"):
            self.model_tokens.labels(direction)
        for outcome in ("cancelled", "detached"):
            self.disconnects.labels(outcome)

    # --- what the blueprint and the stores report ------------------------------------

    def count_tokens(
        self, context: t.Any, input_tokens: int, output_tokens: int, model: str | None
    ) -> None:
        """A usage listener (``State.usage_listeners``): count a model call's tokens."""
        if input_tokens:
            self.model_tokens.labels("input").inc(input_tokens)
        if output_tokens:
            self.model_tokens.labels("output").inc(output_tokens)

    def observe_store(self, operation: str, seconds: float) -> None:
        """One store transaction of *seconds* (``operation``: ``read`` or ``write``)."""
        self.store_seconds.labels(operation).observe(seconds)

    def stream_started(self) -> None:
        self.streams_active.inc()

    def stream_ended(self) -> None:
        self.streams_active.dec()

    def rate_limited(self) -> None:
        """Count one request refused by a rate limit."""
        self.rate_limited_requests.inc()

    def request_finished(self, record: Record) -> None:
        """Count a finished request (for a stream: when it ended)."""
        self.requests.labels(record.type, str(record.status)).inc()
        for kind in record.model_errors:
            self.model_errors.labels(kind if kind in MODEL_ERROR_KINDS else "other").inc()
        if not record.stream:
            return
        if record.duration is not None:
            self.stream_duration.observe(record.duration)
        if record.first_event is not None:
            self.time_to_first_event.observe(record.first_event)
        if record.outcome in ("cancelled", "detached"):
            self.disconnects.labels(record.outcome).inc()

    # --- the scrape -------------------------------------------------------------------

    def render(self) -> bytes:
        """The text exposition: this process's metrics, or in multiprocess mode
        every process's, added up."""
        path = os.environ.get(MULTIPROC_ENV)
        if path:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]
            return prometheus_client.generate_latest(registry)
        return prometheus_client.generate_latest(self.registry)


_metrics: Metrics | None = None


def get() -> Metrics:
    """The process's one :class:`Metrics` (made on first use: a metric can be
    registered once per process, however many apps turn metrics on)."""
    global _metrics
    if _metrics is None:
        _metrics = Metrics()
    return _metrics


# --- gunicorn hooks (multiprocess mode) -----------------------------------------------


def on_starting(server: t.Any) -> None:
    """gunicorn ``on_starting``: empty ``PROMETHEUS_MULTIPROC_DIR`` (made if missing)
    in the master, before any worker starts: files of an earlier run would be
    added to this one's counts."""
    path = os.environ.get(MULTIPROC_ENV)
    if not path:
        return
    os.makedirs(path, exist_ok=True)
    for name in os.listdir(path):
        if name.endswith(".db"):
            os.remove(os.path.join(path, name))


def child_exit(server: t.Any, worker: t.Any) -> None:
    """gunicorn ``child_exit``: a worker ended; its live gauges no longer count."""
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


__all__ = ["CONTENT_TYPE", "MULTIPROC_ENV", "Metrics", "child_exit", "get", "on_starting"]
