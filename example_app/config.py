"""Configuration: defaults, then the environment, then the caller's overrides."""

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
    "SESSION_COOKIE_SAMESITE": "Lax",
}

#: Environment variables (besides ``CHATKIT_*``) that are read as numbers.
NUMERIC_ENV = ("DEMO_STREAM_DELAY", "DEMO_SLOW_DELAY", "DEMO_SLOW_CHUNKS")

SECRET_KEY_FILE = "secret_key"


def from_environ(environ: t.Mapping[str, str]) -> dict[str, t.Any]:
    """The settings found in *environ*.

    Every ``CHATKIT_*`` variable is taken as is (the extension coerces
    numbers), ``SECRET_KEY`` too, and ``DATABASE_URL`` becomes
    ``SQLALCHEMY_DATABASE_URI``.
    """
    config: dict[str, t.Any] = {
        key: value for key, value in environ.items() if key.startswith("CHATKIT_")
    }
    if environ.get("SECRET_KEY"):
        config["SECRET_KEY"] = environ["SECRET_KEY"]
    if environ.get("DATABASE_URL"):
        url = environ["DATABASE_URL"]
        # Heroku-style URLs use a scheme SQLAlchemy no longer accepts.
        if url.startswith("postgres://"):
            url = "postgresql://" + url[len("postgres://") :]
        config["SQLALCHEMY_DATABASE_URI"] = url
    for key in NUMERIC_ENV:
        if environ.get(key):
            config[key] = float(environ[key])
    return config


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
    app.config.update(from_environ(os.environ))
    if test_config:
        app.config.update(test_config)
    app.config.setdefault(
        "SQLALCHEMY_DATABASE_URI",
        "sqlite:///" + os.path.join(app.instance_path, "example.db"),
    )
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = persistent_secret_key(app.instance_path)


__all__ = ["DEFAULTS", "configure", "from_environ", "persistent_secret_key"]
