"""Every ``CHATKIT_*`` setting in one table, and the one rule that reads them (no Flask here).

:data:`KEYS` lists each key with its kind, default, unit and meaning; the
README's configuration tables are generated from it (:func:`markdown_table`,
checked by ``tests/test_config.py``). :func:`read` coerces an app config once,
at ``init_app``, with the same rule for every key:

- numbers come as numbers or numeric strings (the environment), never negative
  or NaN; where a key can be off, ``0`` means off (no heartbeats, no quota, no
  limit), and where it cannot (a page size, a timeout) ``0`` is refused;
- booleans are ``True``/``False`` or ``1``/``0``, ``true``/``false``,
  ``yes``/``no``, ``on``/``off``, and nothing else;
- an empty string (an unset environment variable) means the default;
- units are seconds and bytes.

A value that breaks the rule stops the app at start-up with a message naming
the key, rather than meaning something else at run time.
"""

from __future__ import annotations

import dataclasses
import math
import typing as t

Kind = t.Literal["str", "bool", "int", "float", "list", "choice", "mapping"]

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}

#: Default MIME types accepted for uploads: common images, PDF and plain text formats.
DEFAULT_ALLOWED_MIME_TYPES = (
    "image/png,image/jpeg,image/gif,image/webp,application/pdf,"
    "text/plain,text/markdown,text/csv,application/json"
)


@dataclasses.dataclass(frozen=True)
class Key:
    """One setting: its name, kind, default, unit and meaning."""

    name: str
    kind: Kind
    default: t.Any
    meaning: str
    #: ``"s"`` (seconds), ``"bytes"``, or ``""``.
    unit: str = ""
    #: Whether ``0`` turns the feature off (else the smallest number is 1).
    zero_is_off: bool = False
    #: For ``choice``: the values allowed.
    choices: tuple[str, ...] = ()
    #: The README section whose table lists it.
    section: str = "core"
    #: The default as the README shows it, when ``repr`` is not what a reader wants.
    shown: str | None = None

    def coerce(self, value: t.Any) -> t.Any:
        """*value* as this key's kind, or :class:`RuntimeError` naming the key."""
        if value is None or (isinstance(value, str) and not value.strip()):
            return self.default
        coerce = getattr(self, "_as_" + self.kind)
        return coerce(value)

    def fail(self, expected: str, value: t.Any) -> t.NoReturn:
        raise RuntimeError(f"{self.name} must be {expected}, not {value!r}.")

    def _as_str(self, value: t.Any) -> str:
        if not isinstance(value, str):
            self.fail("a string", value)
        return value.strip()

    def _as_bool(self, value: t.Any) -> bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        self.fail("true or false (1/0, yes/no, on/off)", value)

    def _number(self, value: t.Any, kind: type) -> t.Any:
        if isinstance(value, bool):
            self.fail("a number", value)
        try:
            number = kind(value.strip() if isinstance(value, str) else value)
        except (TypeError, ValueError):
            self.fail("a number" + (" (a whole one)" if kind is int else ""), value)
        if isinstance(number, float) and not math.isfinite(number):
            self.fail("a finite number", value)
        if number < 0:
            raise RuntimeError(f"{self.name} must not be negative, not {value!r}.")
        if number == 0 and not self.zero_is_off:
            self.fail(f"more than 0 (it cannot be off; default {self.default})", value)
        return number

    def _as_int(self, value: t.Any) -> int:
        if isinstance(value, float):
            if not value.is_integer():
                self.fail("a whole number", value)
            value = int(value)
        return int(self._number(value, int))

    def _as_float(self, value: t.Any) -> float:
        return float(self._number(value, float))

    def _as_list(self, value: t.Any) -> list[str]:
        if isinstance(value, str):
            value = value.split(",")
        if not isinstance(value, (list, tuple, set, frozenset)):
            self.fail("a list or a comma-separated string", value)
        return [str(v).strip() for v in value if str(v).strip()]

    def _as_choice(self, value: t.Any) -> str:
        text = str(value).strip().lower()
        if text not in self.choices:
            self.fail(" or ".join(repr(c) for c in self.choices), value)
        return text

    def _as_mapping(self, value: t.Any) -> t.Any:
        if not isinstance(value, (str, t.Mapping)):
            self.fail("a mapping or a 'label=value,...' string", value)
        return value

    @property
    def shown_default(self) -> str:
        """The default as the README's table shows it."""
        if self.shown is not None:
            return self.shown
        if self.default is None:
            return "unset"
        if isinstance(self.default, bool) or self.kind in ("int", "float"):
            number = self.default
            if isinstance(number, float) and number.is_integer():
                number = int(number)
            return f"`{number}`"
        return f"`{self.default}`" if self.default != "" else '`""`'


def _s(name: str, default: t.Any, meaning: str, **kw: t.Any) -> Key:
    """A key in seconds."""
    return Key(name, "float", default, meaning, unit="s", **kw)


def _b(name: str, default: t.Any, meaning: str, **kw: t.Any) -> Key:
    """A key in bytes."""
    return Key(name, "int", default, meaning, unit="bytes", **kw)


#: Every setting flask_chatkit reads from ``app.config``.
KEYS: tuple[Key, ...] = (
    Key("CHATKIT_URL_PREFIX", "str", "/chatkit", "where the blueprint is mounted"),
    _s(
        "CHATKIT_HEARTBEAT_INTERVAL",
        15.0,
        "seconds of silence before a `: ping` comment (sent within 1.5 intervals); `0` turns "
        "heartbeats off",
        zero_is_off=True,
    ),
    Key(
        "CHATKIT_DISCONNECT",
        "choice",
        "cancel",
        "what a client that goes away mid-answer does to its turn: `cancel` it (the partial "
        "answer is saved with a cancel note, as the official SDK does), or `finish`: the "
        "client only detaches, the answer runs to its end and is saved whole",
        choices=("cancel", "finish"),
    ),
    Key(
        "CHATKIT_MAX_DETACHED_TURNS",
        "int",
        100,
        "with `finish`, turns that may run on without their client at once per worker "
        "process; past it a disconnect cancels (logged); `0`: every disconnect cancels",
        zero_is_off=True,
    ),
    Key(
        "CHATKIT_MAX_TURNS_PER_USER",
        "int",
        0,
        "the most turns one user may run at once across every worker and host on the "
        'database (`0`: no limit); past it a new turn gets one `error` event ("You already '
        "have N answers running…\", in the user's language) and nothing is saved: no thread, "
        "no message. Counted in the turn's first transaction (on PostgreSQL under a lock per "
        "user), so two workers cannot both take the last place",
        zero_is_off=True,
        shown="`0` (no limit)",
    ),
    Key(
        "CHATKIT_RATE_LIMITS",
        "str",
        "",
        "turns one user may start, in Flask-Limiter's notation (`20 per minute; 500 per "
        "day`): every request answered with a stream counts (`threads.create`, "
        "`add_user_message`, `retry_after_item`, `custom_action`, `add_client_tool_output`, "
        "`add_structured_input`), keyed on the user id, in fixed windows from the first "
        "count. Past a limit the turn gets one `error` event saying when the user can write "
        "again (in their language) and a `Retry-After` header; nothing is saved. Empty: no "
        "limit",
        shown='`""` (no limit)',
    ),
    Key(
        "CHATKIT_RATE_LIMIT_STORAGE",
        "str",
        "memory://",
        "where rate limits and token budgets are counted: a `limits` storage URI. "
        "`memory://` counts per worker process; `redis://host:6379/0` shares the counts "
        "between every worker and host",
        shown='`"memory://"`',
    ),
    Key(
        "CHATKIT_TOKEN_BUDGET",
        "str",
        "",
        "model tokens (input and output) one user may spend, in the same notation "
        "(`200000 per day`), deducted from what the responder reports "
        "(`RequestContext.report_usage`). Past 80 % the turn ends with a `notice` (once per "
        "window); past the budget turns are refused like `CHATKIT_RATE_LIMITS`. Empty: no "
        "budget",
        shown='`""` (no budget)',
    ),
    _s(
        "CHATKIT_CHECKPOINT_INTERVAL",
        1.0,
        "seconds between two saves of a running turn's unfinished answer, so that "
        "`threads.get_by_id` and `items.list` (another tab, a reload) show it growing; `0` "
        "saves it only at the end",
        zero_is_off=True,
    ),
    _s(
        "CHATKIT_TURN_TIMEOUT",
        120.0,
        "seconds a turn's responder may say nothing before the turn is stopped; without "
        "gevent, also how long a turn's lease lasts without renewal (renewed while events "
        "flow)",
    ),
    _s(
        "CHATKIT_TURN_LEASE",
        15.0,
        "under gevent, seconds a turn's lease on its thread lasts; each worker renews its "
        "turns' leases every third of it, so a worker that dies frees its threads this long "
        "after at most",
    ),
    Key("CHATKIT_PAGE_SIZE", "int", 20, "page size when a list request gives no `limit`"),
    Key("CHATKIT_MAX_PAGE_SIZE", "int", 100, "largest page served, whatever `limit` asks"),
    _b(
        "CHATKIT_MAX_REQUEST_SIZE",
        4 * 1024 * 1024,
        "largest `/chatkit` request body (413 above)",
        shown="`4194304` (4 MiB)",
    ),
    Key(
        "CHATKIT_ALLOWED_ORIGINS",
        "list",
        [],
        "extra origins allowed for cookie-authenticated requests (list, or comma-separated string)",
        shown='`""`',
    ),
    Key(
        "CHATKIT_ATTACHMENTS_FOLDER",
        "str",
        None,
        "where uploaded files are stored",
        shown="`<instance>/chatkit_attachments`",
    ),
    _b(
        "CHATKIT_UPLOAD_MAX_BYTES",
        25 * 1024 * 1024,
        "largest upload (413 above)",
        shown="`26214400` (25 MiB)",
    ),
    Key(
        "CHATKIT_ALLOWED_MIME_TYPES",
        "list",
        DEFAULT_ALLOWED_MIME_TYPES.split(","),
        "accepted upload types; `image/*` and `*` work too (415 otherwise)",
        shown="common images, PDF, plain text, Markdown, CSV, JSON",
    ),
    _s("CHATKIT_UPLOAD_URL_EXPIRY", 900.0, "seconds a signed two-phase upload URL stays valid"),
    _s("CHATKIT_PREVIEW_URL_EXPIRY", 3600.0, "seconds a signed preview URL stays valid"),
    Key(
        "CHATKIT_MAX_FILES_PER_MESSAGE",
        "int",
        10,
        "attachments one message may carry (400 above); `0`: no limit",
        zero_is_off=True,
    ),
    _b(
        "CHATKIT_USER_QUOTA_BYTES",
        0,
        "stored bytes per user (413 above); `0`: no quota",
        zero_is_off=True,
        shown="`0` (none)",
    ),
    _s(
        "CHATKIT_ATTACHMENT_CLEANUP_AGE",
        86400.0,
        "default age in seconds for `cleanup-attachments` (`CHATKIT_ATTACHMENT_CLEANUP_HOURS`, "
        "in hours, is still read when this is not set)",
        zero_is_off=True,
    ),
    Key(
        "CHATKIT_SQLITE_WAL",
        "bool",
        True,
        "SQLite files run in WAL mode with `synchronous=NORMAL` (readers never wait for the "
        "writer; commits skip the fsync, so a power cut can lose the last commits but never "
        "corrupts the file); `False` keeps the file's own settings",
    ),
    _s(
        "CHATKIT_HEALTH_TIMEOUT",
        1.5,
        "seconds `GET {prefix}/health` waits for the store before it answers 503 `fail`",
    ),
    Key(
        "CHATKIT_METRICS",
        "bool",
        False,
        "serve Prometheus metrics at `GET <prefix>/metrics` (several gunicorn workers: see "
        "*Metrics and access logs*)",
    ),
    Key(
        "CHATKIT_METRICS_TOKEN",
        "str",
        "",
        "a secret a scraper sends as `Authorization: Bearer <token>` to read the metrics; "
        "empty: only loopback clients may (behind a proxy on the same host every client "
        "looks local: set a token)",
    ),
    Key(
        "CHATKIT_ACCESS_LOG",
        "bool",
        True,
        "one `INFO` line per request or stream on the `flask_chatkit.access` logger (type, "
        "status, outcome, user and thread ids, duration, time to first event, model tokens; "
        "never message text)",
    ),
    # the built-in responder (flask_chatkit.assistant.Settings)
    Key(
        "CHATKIT_MODEL",
        "str",
        "gpt-4.1-mini",
        "default model",
        section="assistant",
        shown='`"gpt-4.1-mini"`',
    ),
    Key(
        "CHATKIT_MODEL_API",
        "choice",
        "responses",
        "`responses` (the Responses API) or `chat` (Chat Completions, for "
        "OpenAI-compatible servers)",
        choices=("responses", "chat"),
        section="assistant",
        shown='`"responses"`',
    ),
    Key(
        "CHATKIT_MODELS",
        "mapping",
        "",
        'the composer\'s model picker: `{"label": "model"}` or `"label=model,..."`; '
        "requests for other models fall back to the default",
        section="assistant",
    ),
    Key(
        "CHATKIT_HISTORY_MAX_ITEMS",
        "int",
        40,
        "newest thread items sent to the model",
        section="assistant",
    ),
    Key(
        "CHATKIT_HISTORY_MAX_TOKENS",
        "int",
        16000,
        "estimated input token budget; older items are dropped first",
        section="assistant",
    ),
    Key(
        "CHATKIT_MAX_TOOL_ROUNDS", "int", 8, "model calls with tools per turn", section="assistant"
    ),
    Key("CHATKIT_TITLES", "bool", True, "generate thread titles", section="assistant"),
    Key(
        "CHATKIT_TITLE_MODEL",
        "str",
        None,
        "model for titles",
        section="assistant",
        shown="unset (the model)",
    ),
    _s(
        "CHATKIT_MODEL_TIMEOUT",
        60.0,
        "seconds to wait for the model (connect, and between streamed chunks)",
        section="assistant",
    ),
    Key(
        "CHATKIT_MODEL_MAX_RETRIES",
        "int",
        2,
        "retries of the openai client before the stream starts; `0`: none",
        zero_is_off=True,
        section="assistant",
    ),
    Key(
        "CHATKIT_TRACE_CONTENT",
        "bool",
        False,
        "with OpenTelemetry (the `otel` extra), also record the messages, instructions and "
        "answers on model call spans (`gen_ai.input.messages`, `gen_ai.output.messages`); "
        "off, spans carry models, token counts and ids only",
        section="assistant",
    ),
    # hosted mode (flask_chatkit.hosted)
    Key(
        "CHATKIT_SELF_HOSTED",
        "bool",
        True,
        "serve the self-hosted protocol (`/chatkit`, uploads, previews); off, its routes "
        "answer 404 naming the key",
        section="hosted",
    ),
    Key(
        "CHATKIT_HOSTED",
        "bool",
        None,
        "mint hosted sessions at `/chatkit/client_secret`",
        section="hosted",
        shown="on with a workflow id",
    ),
    Key(
        "CHATKIT_WORKFLOW_ID",
        "str",
        None,
        "the Agent Builder workflow (`wf_...`) hosted sessions run",
        section="hosted",
    ),
    Key(
        "CHATKIT_SESSION_EXPIRES_AFTER",
        "int",
        None,
        "session lifetime in seconds",
        unit="s",
        section="hosted",
        shown="OpenAI's",
    ),
    Key(
        "CHATKIT_SESSION_RATE_LIMIT",
        "int",
        None,
        "requests per minute per session",
        section="hosted",
        shown="OpenAI's",
    ),
    Key(
        "CHATKIT_SESSION_FILE_UPLOAD",
        "bool",
        None,
        "file uploads in the hosted session",
        section="hosted",
        shown="OpenAI's (off)",
    ),
    Key(
        "CHATKIT_SESSION_MAX_FILES",
        "int",
        None,
        "files per hosted session",
        section="hosted",
        shown="OpenAI's",
    ),
    _b(
        "CHATKIT_SESSION_MAX_FILE_BYTES",
        None,
        "largest file in a hosted session, in bytes (sent to OpenAI in whole megabytes; "
        "`CHATKIT_SESSION_MAX_FILE_SIZE`, in megabytes, is still read when this is not set)",
        section="hosted",
        shown="OpenAI's",
    ),
    _s(
        "CHATKIT_OPENAI_TIMEOUT",
        10.0,
        "seconds to wait for OpenAI when minting a session",
        section="hosted",
    ),
    Key(
        "CHATKIT_OPENAI_MAX_RETRIES",
        "int",
        2,
        "retries when minting a session; `0`: none",
        zero_is_off=True,
        section="hosted",
    ),
)

BY_NAME: dict[str, Key] = {key.name: key for key in KEYS}

#: Older names still read, in their own unit: new name -> (old name, factor to the new unit).
RENAMED: dict[str, tuple[str, float]] = {
    "CHATKIT_ATTACHMENT_CLEANUP_AGE": ("CHATKIT_ATTACHMENT_CLEANUP_HOURS", 3600.0),
    "CHATKIT_SESSION_MAX_FILE_BYTES": ("CHATKIT_SESSION_MAX_FILE_SIZE", 1024.0 * 1024.0),
}


def defaults() -> dict[str, t.Any]:
    """Every key with its default, as ``app.config.setdefault`` takes them."""
    return {key.name: key.default for key in KEYS}


def read(cfg: t.Mapping[str, t.Any]) -> dict[str, t.Any]:
    """Every key of *cfg* coerced by the one rule (defaults for what is missing).

    :raises RuntimeError: naming the first key whose value breaks the rule.
    """
    values = {}
    for key in KEYS:
        value = cfg.get(key.name)
        old = RENAMED.get(key.name)
        # the older name counts unless the newer one was given a value of its own
        if (
            old is not None
            and (_unset(value) or value == key.default)
            and not _unset(cfg.get(old[0]))
        ):
            value = (
                Key(old[0], key.kind, None, "", zero_is_off=key.zero_is_off).coerce(cfg[old[0]])
                * old[1]
            )
        values[key.name] = key.coerce(value)
    return values


def _unset(value: t.Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def markdown_table(section: str) -> str:
    """The README's table of the keys of *section* (``core``, ``assistant``, ``hosted``)."""
    rows = ["| Key | Default | Meaning |", "|---|---|---|"]
    rows += [
        f"| `{key.name}` | {key.shown_default} | {key.meaning} |"
        for key in KEYS
        if key.section == section
    ]
    return "\n".join(rows)


__all__ = [
    "BY_NAME",
    "DEFAULT_ALLOWED_MIME_TYPES",
    "KEYS",
    "RENAMED",
    "Key",
    "defaults",
    "markdown_table",
    "read",
]
