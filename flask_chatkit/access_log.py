"""One structured log line per request, and the request id on every line.

At the end of each request (for a stream: when the stream ends), the blueprint
writes one line through the ``flask_chatkit.access`` logger at ``INFO``: the
request type, status, outcome, user id, thread id, duration, time to the first
event and model tokens. Never message text, file names, tokens or keys.

Every request gets an id: the client's ``X-Request-ID`` when it is short and made
of safe characters (:func:`request_id`), else a fresh one. It is sent back in the
response's ``X-Request-ID`` header and put on every record of the
``flask_chatkit`` loggers logged while the request runs (``record.request_id``,
by :class:`RequestIdFilter`), so ``%(request_id)s`` works in a format string and
:class:`JSONFormatter` writes it.

Nothing here imports Flask: the blueprint (:mod:`flask_chatkit.views`) makes
the :class:`Record` and finishes it; the core may mark a refusal (:func:`mark`).
Handlers and levels are the app's call, e.g.::

    handler = logging.StreamHandler()
    handler.setFormatter(JSONFormatter())
    logging.getLogger("flask_chatkit").addHandler(handler)
    logging.getLogger("flask_chatkit").setLevel(logging.INFO)
"""

from __future__ import annotations

import contextvars
import dataclasses
import datetime
import json
import logging
import re
import secrets
import time
import typing as t

#: The access lines' logger (a child of ``flask_chatkit``).
logger = logging.getLogger("flask_chatkit.access")

#: The header a request id is taken from and sent back in.
HEADER = "X-Request-ID"
#: The longest request id taken from a client.
MAX_ID_LENGTH = 128
#: What a client's request id may hold: no spaces, quotes or control characters,
#: nothing that could forge a log line or a header.
_SAFE_ID = re.compile(r"[A-Za-z0-9._:@+=-]+")

#: How a request or stream ended.
Outcome = t.Literal["completed", "cancelled", "detached", "refused", "error"]
OUTCOMES: tuple[str, ...] = t.get_args(Outcome)


def request_id(sent: str | None) -> str:
    """*sent* (the client's ``X-Request-ID``) if it is at most :data:`MAX_ID_LENGTH`
    safe characters, else a new random id."""
    if sent and len(sent) <= MAX_ID_LENGTH and _SAFE_ID.fullmatch(sent):
        return sent
    return secrets.token_hex(16)


@dataclasses.dataclass
class Record:
    """What one request's access line says; filled while the request runs."""

    request_id: str
    #: The ChatKit request type (``threads.create``), else the endpoint (``upload``).
    type: str
    #: ``time.perf_counter()`` when the request began.
    started: float = dataclasses.field(default_factory=time.perf_counter)
    status: int | None = None
    outcome: Outcome | None = None
    #: The request's context (user id, thread id, model usage), once authenticated.
    context: t.Any = None
    thread_id: str | None = None
    #: Seconds from the start to the first event of a stream.
    first_event: float | None = None
    #: Whether the response is a stream (its line comes when it ends).
    stream: bool = False
    #: Seconds the request took; set by :meth:`finish`.
    duration: float | None = None
    finished: bool = False

    def event(self) -> None:
        """A stream handed an event to the client (the first one is timed)."""
        if self.first_event is None:
            self.first_event = time.perf_counter() - self.started

    def finish(self, status: int, outcome: Outcome | None = None) -> bool:
        """End the request with *status*; the outcome is *outcome*, else one marked
        before (:func:`mark`), else what *status* says. ``False`` if it had ended."""
        if self.finished:
            return False
        self.finished = True
        self.duration = time.perf_counter() - self.started
        self.status = status
        if self.outcome is None or (outcome is not None and outcome != "completed"):
            self.outcome = outcome or outcome_of(status)
        if current.get() is self:
            current.set(None)
        return True

    @property
    def user_id(self) -> str | None:
        user = getattr(self.context, "user_id", None)
        return None if user is None else str(user)

    @property
    def tokens(self) -> tuple[int, int]:
        """Model tokens spent: ``(input, output)``."""
        usage = getattr(self.context, "usage", None)
        return (
            int(getattr(usage, "input_tokens", 0) or 0),
            int(getattr(usage, "output_tokens", 0) or 0),
        )

    @property
    def model_errors(self) -> list[str]:
        """The kinds of the model's failures during the request (``timeout``...)."""
        return list(getattr(self.context, "model_errors", None) or ())

    def fields(self) -> dict[str, t.Any]:
        """The line's fields: ids, numbers and fixed words only."""
        thread_id = self.thread_id or getattr(self.context, "thread_id", None)
        tokens_in, tokens_out = self.tokens
        return {
            "request_id": self.request_id,
            "type": self.type,
            "status": self.status,
            "outcome": self.outcome,
            "user_id": self.user_id,
            "thread_id": thread_id,
            "duration": _seconds(self.duration),
            "time_to_first_event": _seconds(self.first_event),
            "input_tokens": tokens_in,
            "output_tokens": tokens_out,
            "model_errors": self.model_errors,
        }


def outcome_of(status: int) -> Outcome:
    """The outcome a status says: 4xx ``refused``, 5xx ``error``, else ``completed``."""
    if status >= 500:
        return "error"
    return "refused" if status >= 400 else "completed"


def _seconds(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


#: The running request's record, in its thread or greenlet (and the stream's
#: producer greenlet, which runs in a copy of the request's context).
current: contextvars.ContextVar[Record | None] = contextvars.ContextVar(
    "flask_chatkit_request", default=None
)


def current_request_id() -> str | None:
    """The id of the request running here, if any."""
    record = current.get()
    return None if record is None else record.request_id


def mark(outcome: Outcome) -> None:
    """Say how the running request ends (e.g. ``"refused"`` by a limit inside a
    stream, whose status stays 200); nothing outside a request."""
    record = current.get()
    if record is not None:
        record.outcome = outcome


def write(record: Record) -> None:
    """Log *record*'s access line (``INFO`` on ``flask_chatkit.access``)."""
    if not logger.isEnabledFor(logging.INFO):
        return
    fields = record.fields()
    ttfe = fields["time_to_first_event"]
    logger.info(
        "%s %s %s user=%s thread=%s duration=%.3fs%s tokens=%d/%d",
        fields["type"],
        fields["status"],
        fields["outcome"],
        fields["user_id"] or "-",
        fields["thread_id"] or "-",
        fields["duration"] or 0.0,
        "" if ttfe is None else f" first_event={ttfe:.3f}s",
        fields["input_tokens"],
        fields["output_tokens"],
        extra={"chatkit_access": fields, "request_id": record.request_id},
    )


class RequestIdFilter(logging.Filter):
    """Puts ``request_id`` (the running request's, else ``"-"``) on every record.

    Installed on the ``flask_chatkit`` and ``flask_chatkit.access`` loggers; add it
    to a handler to stamp other loggers' records too.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = current_request_id() or "-"
        return True


#: The filter on flask_chatkit's own loggers.
REQUEST_ID_FILTER = RequestIdFilter()
for _name in ("flask_chatkit", "flask_chatkit.access"):
    logging.getLogger(_name).addFilter(REQUEST_ID_FILTER)


class JSONFormatter(logging.Formatter):
    """One JSON object per line: ``time``, ``level``, ``logger``, ``message``,
    ``request_id``, an access line's fields, and ``exception`` (the traceback) if any."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, t.Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None) or current_request_id(),
        }
        access = getattr(record, "chatkit_access", None)
        if isinstance(access, dict):
            entry.update(access)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, separators=(",", ":"), default=str)


__all__ = [
    "HEADER",
    "OUTCOMES",
    "REQUEST_ID_FILTER",
    "JSONFormatter",
    "Outcome",
    "Record",
    "RequestIdFilter",
    "current",
    "current_request_id",
    "mark",
    "outcome_of",
    "request_id",
    "write",
]
