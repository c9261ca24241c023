"""SQLite that never stops the gevent hub, in WAL mode.

Python's ``sqlite3`` driver is not cooperative: under gevent every statement,
commit and fsync runs on the hub, so one turn's commit stalls every stream of
the worker. :func:`prepare_engine` makes a SQLite engine hand each driver call
(``execute``, the fetches, ``commit``, ``rollback``) to gevent's thread pool
when the process is monkey-patched: ``sqlite3`` releases the GIL while SQLite
works or waits for a lock, so the hub goes on serving other streams meanwhile,
and the calling greenlet waits without blocking anyone. Unpatched processes
(tests, ``flask run``) call the driver directly, as before.

Transactions begin with an explicit ``BEGIN`` (the driver's own transaction
handling is off, as SQLAlchemy's SQLite documentation recommends), and
``BEGIN IMMEDIATE`` for a connection with the :data:`WRITE` execution option:
a transaction that reads and then writes takes the write lock first, so two
writers wait for each other (``timeout``, 30 s by default) instead of one failing
with "database is locked" when it turns from reading to writing. Within a
process, writers take turns before they take a pooled connection or a thread
(:func:`write_lock`): SQLite admits one writer at a time anyway, and writers
waiting in SQLite's busy handler would hold every thread and connection while
the one writer that has the lock waits for a thread to finish.

It also gives every new connection ``PRAGMA journal_mode=WAL`` (readers never
wait for the writer) and ``PRAGMA synchronous=NORMAL`` (a commit writes to the
WAL without an fsync; a power loss may lose the last commits, never corrupt the
file). :class:`~flask_chatkit.sqlalchemy_store.SQLAlchemyStore` prepares its
engine on first use; ``CHATKIT_SQLITE_WAL = False`` keeps the file's own
journal mode and synchronous setting.
"""

from __future__ import annotations

import contextlib
import threading
import typing as t
import weakref

import sqlalchemy as sa

from .greenlets import wait_to_end

#: The execution option that makes a connection's transactions ``BEGIN IMMEDIATE``.
WRITE = "chatkit_sqlite_write"
#: Seconds a writer waits for another's lock before "database is locked".
BUSY_TIMEOUT = 30.0

#: The writers' turn lock of each prepared engine (an engine is prepared once).
_WRITERS: weakref.WeakKeyDictionary[sa.Engine, t.Any] = weakref.WeakKeyDictionary()


def is_file_database(engine: sa.Engine) -> bool:
    """Whether *engine* is SQLite on a file (not ``:memory:``)."""
    url = engine.url
    return engine.dialect.name == "sqlite" and url.database not in (None, "", ":memory:")


def prepare_engine(engine: sa.Engine, *, wal: bool = True) -> None:
    """Make a file SQLite *engine* cooperative under gevent (and WAL, with *wal*).

    Connections opened before this are closed (``engine.dispose()``), so that
    every connection from now on has both. Engines of other databases, and
    in-memory SQLite, are left alone. Idempotent.
    """
    if engine in _WRITERS or not is_file_database(engine):
        return
    # made now, after gevent's patching (a cooperative lock under gevent)
    _WRITERS[engine] = threading.RLock()
    sa.event.listen(engine, "do_connect", _connect)
    sa.event.listen(engine, "connect", _explicit_transactions)
    sa.event.listen(engine, "begin", _begin)
    if wal:
        sa.event.listen(engine, "connect", _wal_pragmas)
    engine.dispose()


def write_lock(engine: sa.Engine) -> t.ContextManager[t.Any]:
    """Held around a write transaction on *engine*: the process's writers take
    turns (a no-op for engines :func:`prepare_engine` left alone)."""
    lock = _WRITERS.get(engine)
    return lock if lock is not None else contextlib.nullcontext()


def _connect(dialect: t.Any, conn_rec: t.Any, cargs: t.Any, cparams: dict[str, t.Any]) -> t.Any:
    # Calls move between the pool's threads (one at a time per connection).
    cparams["check_same_thread"] = False
    cparams.setdefault("timeout", BUSY_TIMEOUT)
    raw = dialect.dbapi.connect(*cargs, **cparams)
    return CooperativeConnection(raw) if _patched() else raw


def _explicit_transactions(dbapi_connection: t.Any, conn_rec: t.Any) -> None:
    dbapi_connection.isolation_level = None  # no implicit BEGIN: _begin says it


def _begin(conn: sa.Connection) -> None:
    # on the driver's connection, as its own implicit BEGIN was (and COMMIT is)
    statement = "BEGIN IMMEDIATE" if conn.get_execution_options().get(WRITE) else "BEGIN"
    conn.connection.dbapi_connection.execute(statement)  # type: ignore[union-attr]


def _wal_pragmas(dbapi_connection: t.Any, conn_rec: t.Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()


def _patched() -> bool:
    try:
        from gevent import monkey
    except ImportError:  # pragma: no cover - gevent is a dependency
        return False
    return bool(monkey.is_module_patched("threading"))


def offload(function: t.Callable[..., t.Any], *args: t.Any) -> t.Any:
    """``function(*args)`` on gevent's thread pool, the calling greenlet waiting
    cooperatively; its result or its exception.

    A greenlet killed (or timed out) while it waits still waits for the call to
    end, then raises what interrupted it: the connection must not be rolled
    back, closed or handed to another greenlet while a thread still uses it.
    """
    from gevent import get_hub

    value, error = wait_to_end(get_hub().threadpool.spawn(_capture, function, args))
    if error is not None:
        raise error
    return value


def _capture(function: t.Callable[..., t.Any], args: tuple[t.Any, ...]) -> tuple[t.Any, t.Any]:
    # A driver error is an answer, not a crash: returned, so that the pool does not
    # print it as an unhandled exception of its thread (an id that exists, say).
    try:
        return function(*args), None
    except Exception as exc:
        return None, exc


class CooperativeCursor:
    """A ``sqlite3`` cursor whose blocking calls run on gevent's thread pool."""

    __slots__ = ("_raw",)

    def __init__(self, raw: t.Any) -> None:
        self._raw = raw

    def execute(self, *args: t.Any) -> CooperativeCursor:
        offload(self._raw.execute, *args)
        return self

    def executemany(self, *args: t.Any) -> CooperativeCursor:
        offload(self._raw.executemany, *args)
        return self

    def fetchone(self) -> t.Any:
        return offload(self._raw.fetchone)

    def fetchmany(self, *args: t.Any) -> t.Any:
        return offload(self._raw.fetchmany, *args)

    def fetchall(self) -> t.Any:
        return offload(self._raw.fetchall)

    def __iter__(self) -> t.Iterator[t.Any]:
        return iter(self.fetchall())

    def __getattr__(self, name: str) -> t.Any:  # description, rowcount, lastrowid, close
        return getattr(self._raw, name)


class CooperativeConnection:
    """A ``sqlite3`` connection whose blocking calls run on gevent's thread pool;
    everything else (``create_function``, ``isolation_level``, ...) goes to the
    connection itself."""

    __slots__ = ("_raw",)

    def __init__(self, raw: t.Any) -> None:
        object.__setattr__(self, "_raw", raw)

    def cursor(self, *args: t.Any) -> CooperativeCursor:
        return CooperativeCursor(self._raw.cursor(*args))

    def execute(self, *args: t.Any) -> CooperativeCursor:
        return self.cursor().execute(*args)

    def commit(self) -> None:
        offload(self._raw.commit)

    def rollback(self) -> None:
        offload(self._raw.rollback)

    def close(self) -> None:
        offload(self._raw.close)

    def __getattr__(self, name: str) -> t.Any:
        return getattr(self._raw, name)

    def __setattr__(self, name: str, value: t.Any) -> None:
        setattr(self._raw, name, value)


__all__ = [
    "BUSY_TIMEOUT",
    "WRITE",
    "CooperativeConnection",
    "CooperativeCursor",
    "is_file_database",
    "prepare_engine",
    "write_lock",
]
