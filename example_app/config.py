"""Configuration: defaults, then the environment, then the caller's overrides.

Database settings, read from the environment (or given in ``test_config``):

``DATABASE_URL``
    The SQLAlchemy URL (default: SQLite ``example.db`` in the instance folder).
    ``postgres://`` and ``postgresql://`` URLs without a driver are run with
    psycopg 3 (``postgresql+psycopg://``), which yields to gevent while it
    waits; psycopg2 would block the whole worker on every query.
``DATABASE_POOL_SIZE`` (default 5), ``DATABASE_MAX_OVERFLOW`` (default 10)
    Connections each worker process keeps open, and how many more it may open
    at busy moments. A stream holds a connection only while it reads or writes,
    never while it waits for the model, so a few connections serve hundreds of
    streams; size the database's ``max_connections`` for
    workers x (pool size + overflow).
``DATABASE_POOL_TIMEOUT`` (default 10)
    Whole seconds a request waits for a free connection before it answers 503.
``DATABASE_CONNECT_TIMEOUT`` (default 5)
    Seconds to wait for the database server to accept a new connection
    (PostgreSQL), so that an unreachable host fails fast with a 503.

Bearer tokens:

``TOKEN_CACHE_SECONDS`` (default 5)
    Seconds each worker remembers a bearer token's owner, so that a stream does
    not start with a query; a deleted token keeps working at most that long.
    ``0`` looks every token up.

The model responder (:mod:`example_app.assistant`), also from the environment:

``OPENAI_API_KEY``
    Turns it on (without it the offline demo answers); never logged.
``OPENAI_BASE_URL``
    An OpenAI-compatible server instead of OpenAI's (use ``CHATKIT_MODEL_API=chat``
    for servers that only speak Chat Completions).
``MCP_SERVER_COMMAND``, ``MCP_SERVER_URL``
    An MCP server whose tools the model may use: a command line started as a
    subprocess (stdio), or a streamable HTTP endpoint.
``CHATKIT_MODEL`` and the other ``CHATKIT_MODEL*`` keys
    Copied like every ``CHATKIT_*`` variable (see ``flask_chatkit.assistant_settings.Settings``).

Rate limits and token budgets, ``CHATKIT_*`` variables copied the same way:

``CHATKIT_RATE_LIMITS`` (e.g. ``20 per minute; 500 per day``), ``CHATKIT_TOKEN_BUDGET``
(e.g. ``200000 per day``)
    Turns and model tokens per user (empty: none).
``CHATKIT_RATE_LIMIT_STORAGE`` (default ``memory://``)
    Where they are counted; ``redis://host:6379/0`` shares the counts between
    every worker and host (``memory://`` counts per worker process).

The chat pages (``/agents/<id>/chat``), also ``CHATKIT_*`` variables:

``CHATKIT_SCRIPT_URL``
    Where the official ``openai-chatkit`` web component is loaded from
    (default: OpenAI's CDN). Empty: always use flask_chatkit's reference client.
``CHATKIT_SCRIPT_TIMEOUT`` (default 4)
    Seconds to wait for the component before falling back to the reference client.
``CHATKIT_DOMAIN_KEY`` (default ``local-dev``)
    The domain key the component is given (OpenAI checks it; localhost needs none).
``CHATKIT_UPLOAD_STRATEGY`` (default ``direct``)
    ``direct`` (the file is posted to ``/chatkit/upload``) or ``two_phase``
    (``attachments.create`` first, then the bytes to the URL it returns).
``CHATKIT_LOCALE``
    The chat's language; by default the best match for the browser's
    ``Accept-Language``.

The pool settings apply to server databases, not to SQLite. Every connection
is checked before use (``pool_pre_ping``), so after a database restart the
app reconnects on its own.
"""

from __future__ import annotations

import os
import secrets
import time
import typing as t

from flask import Flask

#: Settings used unless the environment or ``test_config`` says otherwise.
DEFAULTS: dict[str, t.Any] = {
    # Pause between the words of a demo reply, and between the deltas of /slow.
    "DEMO_STREAM_DELAY": 0.05,
    "DEMO_SLOW_DELAY": 0.1,
    "DEMO_SLOW_CHUNKS": 40,
    # Create the "demo" user (password printed to the log) when there are no users.
    "DEMO_USER": True,
    "SESSION_COOKIE_HTTPONLY": True,
    # The chat pages (see the module docstring).
    "CHATKIT_SCRIPT_URL": "https://cdn.platform.openai.com/deployments/chatkit/chatkit.js",
    "CHATKIT_SCRIPT_TIMEOUT": 4.0,
    "CHATKIT_DOMAIN_KEY": "local-dev",
    "CHATKIT_UPLOAD_STRATEGY": "direct",
    "CHATKIT_LOCALE": "",
    "SESSION_COOKIE_SAMESITE": "Lax",
    # Seconds a bearer token's owner is remembered (see the module docstring).
    "TOKEN_CACHE_SECONDS": 5.0,
    # A reload or a lost connection does not cancel an answer: it runs on and is
    # saved whole; the Stop button cancels it (POST /chatkit/cancel).
    "CHATKIT_DISCONNECT": "finish",
    # Prometheus metrics at /chatkit/metrics, for loopback clients (see the README).
    "CHATKIT_METRICS": True,
}

#: Connection pool settings for server databases (see the module docstring).
DATABASE_DEFAULTS: dict[str, t.Any] = {
    "DATABASE_POOL_SIZE": 5,
    "DATABASE_MAX_OVERFLOW": 10,
    "DATABASE_POOL_TIMEOUT": 10,
    "DATABASE_CONNECT_TIMEOUT": 5,
}

#: Environment variables taken as they are (besides ``CHATKIT_*`` and ``SECRET_KEY``).
TEXT_ENV = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "MCP_SERVER_COMMAND", "MCP_SERVER_URL")
#: Environment variables (besides ``CHATKIT_*``) that are read as numbers.
NUMERIC_ENV = ("DEMO_STREAM_DELAY", "DEMO_SLOW_DELAY", "DEMO_SLOW_CHUNKS", "TOKEN_CACHE_SECONDS")
#: ... and as whole numbers (Flask-SQLAlchemy passes the pool timeout on as an int).
INTEGER_ENV = (
    "DATABASE_POOL_SIZE",
    "DATABASE_MAX_OVERFLOW",
    "DATABASE_POOL_TIMEOUT",
    "DATABASE_CONNECT_TIMEOUT",
)

SECRET_KEY_FILE = "secret_key"
#: The upload strategies of the ChatKit client.
UPLOAD_STRATEGIES = ("direct", "two_phase")


def from_environ(environ: t.Mapping[str, str]) -> dict[str, t.Any]:
    """The settings found in *environ*.

    Every ``CHATKIT_*`` variable is taken as is (the extension coerces
    numbers), ``SECRET_KEY`` and the :data:`TEXT_ENV` ones too, ``DATABASE_URL`` becomes
    ``SQLALCHEMY_DATABASE_URI``, and the ``DATABASE_*`` pool settings and
    ``DEMO_*`` pacing are read as numbers.
    """
    config: dict[str, t.Any] = {
        key: value for key, value in environ.items() if key.startswith("CHATKIT_")
    }
    for key in ("SECRET_KEY", *TEXT_ENV):
        if environ.get(key):
            config[key] = environ[key]
    if environ.get("DATABASE_URL"):
        config["SQLALCHEMY_DATABASE_URI"] = environ["DATABASE_URL"]
    for key in NUMERIC_ENV:
        if environ.get(key):
            config[key] = float(environ[key])
    for key in INTEGER_ENV:
        if environ.get(key):
            config[key] = int(environ[key])
    return config


def database_url(url: t.Any) -> t.Any:
    """*url* with a gevent-friendly driver: a PostgreSQL URL that names no driver
    (``postgres://``, as Heroku-style hosts give it, or ``postgresql://``, which
    SQLAlchemy would run with psycopg2) gets psycopg 3."""
    for scheme in ("postgres://", "postgresql://"):
        if isinstance(url, str) and url.startswith(scheme):
            return "postgresql+psycopg://" + url[len(scheme) :]
    return url


def engine_options(config: t.Mapping[str, t.Any]) -> dict[str, t.Any]:
    """``SQLALCHEMY_ENGINE_OPTIONS`` for ``config``: pre-ping always, the pool
    settings for server databases; options the app sets itself win."""
    url = str(config["SQLALCHEMY_DATABASE_URI"])
    options: dict[str, t.Any] = {"pool_pre_ping": True}
    if not url.startswith("sqlite"):
        options.update(
            pool_size=int(config["DATABASE_POOL_SIZE"]),
            max_overflow=int(config["DATABASE_MAX_OVERFLOW"]),
            pool_timeout=int(config["DATABASE_POOL_TIMEOUT"]),
        )
    if url.startswith("postgresql"):
        options["connect_args"] = {"connect_timeout": int(config["DATABASE_CONNECT_TIMEOUT"])}
    options.update(config.get("SQLALCHEMY_ENGINE_OPTIONS") or {})
    return options


def persistent_secret_key(folder: str) -> str:
    """The secret key kept in *folder*, generated on first use.

    The file is created with ``O_EXCL`` (mode 0600), so when several gunicorn
    workers start at once exactly one writes it and all read the same key.
    """
    path = os.path.join(folder, SECRET_KEY_FILE)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_key(path)
    key = secrets.token_hex(32)
    with os.fdopen(fd, "w") as f:
        f.write(key)
    return key


def _read_key(path: str, timeout: float = 5.0) -> str:
    # The winner of the O_EXCL race may not have written the key yet.
    deadline = time.monotonic() + timeout
    while True:
        with open(path) as f:
            key = f.read().strip()
        if key:
            return key
        if time.monotonic() > deadline:
            raise RuntimeError(f"The secret key file {path} is empty; delete it and restart.")
        time.sleep(0.05)


def configure(app: Flask, test_config: t.Mapping[str, t.Any] | None = None) -> None:
    """Fill ``app.config``: defaults, environment, *test_config*, then derived values."""
    app.config.from_mapping(DEFAULTS)
    app.config.from_mapping(DATABASE_DEFAULTS)
    app.config.update(from_environ(os.environ))
    if test_config:
        app.config.update(test_config)
    app.config.setdefault(
        "SQLALCHEMY_DATABASE_URI",
        "sqlite:///" + os.path.join(app.instance_path, "example.db"),
    )
    app.config["SQLALCHEMY_DATABASE_URI"] = database_url(app.config["SQLALCHEMY_DATABASE_URI"])
    app.config["SQLALCHEMY_ENGINE_OPTIONS"] = engine_options(app.config)
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = persistent_secret_key(app.instance_path)
    check_chat_settings(app.config)


def check_chat_settings(config: t.MutableMapping[str, t.Any]) -> None:
    """Coerce the chat pages' settings (the environment gives strings).

    :raises RuntimeError: naming the key, for an unknown upload strategy or a
        timeout that is not a positive number.
    """
    strategy = str(config["CHATKIT_UPLOAD_STRATEGY"]).strip().lower()
    if strategy not in UPLOAD_STRATEGIES:
        raise RuntimeError(
            f"CHATKIT_UPLOAD_STRATEGY must be 'direct' or 'two_phase', not {strategy!r}."
        )
    config["CHATKIT_UPLOAD_STRATEGY"] = strategy
    try:
        timeout = float(config["CHATKIT_SCRIPT_TIMEOUT"])
    except (TypeError, ValueError):
        timeout = -1.0
    if not 0 < timeout <= 120:
        raise RuntimeError(
            "CHATKIT_SCRIPT_TIMEOUT must be a number of seconds (above 0, at most 120), "
            f"not {config['CHATKIT_SCRIPT_TIMEOUT']!r}."
        )
    config["CHATKIT_SCRIPT_TIMEOUT"] = timeout


__all__ = [
    "DATABASE_DEFAULTS",
    "DEFAULTS",
    "UPLOAD_STRATEGIES",
    "check_chat_settings",
    "configure",
    "database_url",
    "engine_options",
    "from_environ",
    "persistent_secret_key",
]
