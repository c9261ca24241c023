"""The servers under test; each streams the same turn, configured by ``BENCH_*`` variables.

``BENCH_K`` text deltas (default 100), ``BENCH_DELAY`` seconds apart (default
0.02), each ``BENCH_CHUNK`` (default ``"token "``); ``BENCH_DATABASE_URL``
names the database (SQLAlchemy URL: ``sqlite:///path`` or
``postgresql+psycopg://...``).
"""

from __future__ import annotations

import os


def settings() -> tuple[int, float, str]:
    """``(K, d, chunk)`` from the environment."""
    return (
        int(os.environ.get("BENCH_K", "100")),
        float(os.environ.get("BENCH_DELAY", "0.02")),
        os.environ.get("BENCH_CHUNK", "token "),
    )


def database_url() -> str:
    return os.environ.get("BENCH_DATABASE_URL", "sqlite:////tmp/chatkit-bench.sqlite3")


def user_of(authorization: str | None) -> str | None:
    """The benchmark user of ``Authorization: Bearer token-<i>``: ``"<i>"``, else ``None``."""
    scheme, _, token = (authorization or "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token.startswith("token-") or len(token) == 6:
        return None
    return token[6:]


#: PRAGMAs both servers apply to their SQLite connections (``BENCH_SQLITE_WAL=0``: none).
#: In the default rollback journal every commit waits for an fsync; under gevent that
#: blocks the whole worker (every stream), while the official server waits in a thread.
#: WAL with synchronous=NORMAL is what SQLite recommends for concurrent web use.
SQLITE_PRAGMAS = ("PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL", "PRAGMA busy_timeout=60000")


def sqlite_pragmas() -> tuple[str, ...]:
    return SQLITE_PRAGMAS if os.environ.get("BENCH_SQLITE_WAL", "1") != "0" else ()
