"""The servers under test; each streams the same turn, configured by ``BENCH_*`` variables.

The example app's ``/slow`` reply: ``BENCH_K`` text deltas (default 40, as
``DEMO_SLOW_CHUNKS``), ``BENCH_DELAY`` seconds apart (default 0.1, as
``DEMO_SLOW_DELAY``); ``BENCH_DATABASE_URL`` names the official server's
database (``memory``, ``sqlite:///path`` or ``postgresql+psycopg://...``).
"""

from __future__ import annotations

import os


def workload() -> tuple[list[str], float]:
    """``(chunks, d)``: the example app's ``/slow`` reply, ``"1 "`` ... ``"K"``, d apart."""
    k = int(os.environ.get("BENCH_K", "40"))
    return [f"{n} " for n in range(1, k)] + [str(k)], float(os.environ.get("BENCH_DELAY", "0.1"))


def database_url() -> str:
    return os.environ.get("BENCH_DATABASE_URL", "sqlite:////tmp/chatkit-bench.sqlite3")


def user_of(authorization: str | None) -> str | None:
    """The benchmark user of ``Authorization: Bearer <token>``: the token itself, else ``None``."""
    scheme, _, token = (authorization or "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


#: PRAGMAs the official server applies to a SQLite database (``BENCH_SQLITE_WAL=0``: none),
#: the same journal settings as flask_chatkit's default (``CHATKIT_SQLITE_WAL``).
SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA busy_timeout=60000",
)


def sqlite_pragmas() -> tuple[str, ...]:
    return SQLITE_PRAGMAS if os.environ.get("BENCH_SQLITE_WAL", "1") != "0" else ()
