"""SQLite that never stops the gevent hub, in WAL mode.

Python's ``sqlite3`` driver is not cooperative: under gevent every statement,
commit and fsync runs on the hub, so one turn's commit stalls every stream of
the worker. :func:`prepare_engine` makes a SQLite engine hand its driver calls
to two real threads of its own when the process is monkey-patched (writes to
one, reads to the other, see :class:`~flask_chatkit.greenlets.CallThread`):
``sqlite3`` releases the GIL while SQLite works or waits for a lock, so the hub
goes on serving other streams meanwhile, and the calling greenlet waits without
blocking anyone. Each hand-over costs the hub a little, so there are few: a
statement goes with its transaction's ``BEGIN`` (when it is the first) and
comes back with its rows, and the end of a transaction that ran only
``SELECT`` statements runs at once (it lets go of a snapshot, nothing to wait
for). The threads only ever run the driver's C calls: Python code on a second
thread would take the GIL from the hub for up to 5 ms at a time. Unpatched
processes (tests, ``flask run``) call the driver directly, as before.

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
import functools
import threading
import typing as t
import weakref

import sqlalchemy as sa

from .greenlets import CallThread

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
    threads = Threads(CallThread("chatkit-sqlite-reader"), CallThread("chatkit-sqlite-writer"))
    sa.event.listen(engine, "do_connect", functools.partial(_connect, threads))
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


def _connect(
    threads: Threads, dialect: t.Any, conn_rec: t.Any, cargs: t.Any, cparams: dict[str, t.Any]
) -> t.Any:
    # Calls move between the threads (one at a time per connection).
    cparams["check_same_thread"] = False
    cparams.setdefault("timeout", BUSY_TIMEOUT)
    raw = dialect.dbapi.connect(*cargs, **cparams)
    return CooperativeConnection(raw, threads) if _patched() else raw


def _explicit_transactions(dbapi_connection: t.Any, conn_rec: t.Any) -> None:
    dbapi_connection.isolation_level = None  # no implicit BEGIN: _begin says it


def _begin(conn: sa.Connection) -> None:
    # on the driver's connection, as its own implicit BEGIN was (and COMMIT is)
    write = bool(conn.get_execution_options().get(WRITE))
    dbapi_connection = conn.connection.dbapi_connection
    if isinstance(dbapi_connection, CooperativeConnection):
        dbapi_connection.begin(write=write)  # sent with the first statement
    else:
        dbapi_connection.execute("BEGIN IMMEDIATE" if write else "BEGIN")  # type: ignore[union-attr]


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


class Threads(t.NamedTuple):
    """The threads of one engine's driver calls: writes take turns on one, and
    reads never queue behind a write waiting for SQLite's lock."""

    reader: CallThread
    writer: CallThread


#: What a pool-checkout ping sends (SQLAlchemy's ``pool_pre_ping``): it does not
#: touch the file, so it runs at once rather than on a thread.
PING = "SELECT 1"


def _execute(
    conn: t.Any, cursor: t.Any, begin: str | None, method: str, args: tuple[t.Any, ...]
) -> list[t.Any] | None:
    # on a thread: the deferred BEGIN, the statement, and the rows it returns
    if begin is not None:
        conn.execute(begin)
    getattr(cursor, method)(*args)
    return cursor.fetchall() if cursor.description is not None else None


class CooperativeCursor:
    """A ``sqlite3`` cursor whose statements run on the engine's threads.

    A statement and its rows come back in one call (the fetches then read
    them here), preceded by its transaction's ``BEGIN`` if it is the first.
    """

    __slots__ = ("_conn", "_raw", "_rows", "_at")

    def __init__(self, conn: CooperativeConnection, raw: t.Any) -> None:
        self._conn = conn
        self._raw = raw
        self._rows: list[t.Any] = []
        self._at = 0

    def _run(self, method: str, args: tuple[t.Any, ...]) -> CooperativeCursor:
        conn = self._conn
        statement = args[0] if args and isinstance(args[0], str) else ""
        if conn._begin is None and statement == PING:
            rows = _execute(conn._raw, self._raw, None, method, args)
        else:
            begin = conn._starting(statement)
            rows = conn._thread().call(_execute, conn._raw, self._raw, begin, method, args)
        self._rows, self._at = rows or [], 0
        return self

    def execute(self, *args: t.Any) -> CooperativeCursor:
        return self._run("execute", args)

    def executemany(self, *args: t.Any) -> CooperativeCursor:
        return self._run("executemany", args)

    def fetchone(self) -> t.Any:
        if self._at >= len(self._rows):
            return None
        self._at += 1
        return self._rows[self._at - 1]

    def fetchmany(self, size: int | None = None) -> list[t.Any]:
        end = self._at + (self._raw.arraysize if size is None else size)
        rows = self._rows[self._at : end]
        self._at += len(rows)
        return rows

    def fetchall(self) -> list[t.Any]:
        rows = self._rows[self._at :]
        self._at = len(self._rows)
        return rows

    def __iter__(self) -> t.Iterator[t.Any]:
        return iter(self.fetchall())

    def __getattr__(self, name: str) -> t.Any:  # description, rowcount, lastrowid, close
        return getattr(self._raw, name)


class CooperativeConnection:
    """A ``sqlite3`` connection whose blocking calls run on the engine's
    threads; everything else (``create_function``, ``isolation_level``, ...)
    goes to the connection itself.

    ``BEGIN`` waits for the transaction's first statement (a transaction that
    runs none costs nothing), and the end of a transaction that ran only
    ``SELECT`` statements (it only lets go of a snapshot or a lock, no I/O to
    wait for) runs at once.
    """

    __slots__ = ("_raw", "_threads", "_begin", "_write", "_dirty")
    _raw: t.Any
    _threads: Threads
    _begin: str | None
    _write: bool
    _dirty: bool

    def __init__(self, raw: t.Any, threads: Threads) -> None:
        object.__setattr__(self, "_raw", raw)
        object.__setattr__(self, "_threads", threads)
        object.__setattr__(self, "_begin", None)
        object.__setattr__(self, "_write", False)
        object.__setattr__(self, "_dirty", False)

    def begin(self, *, write: bool) -> None:
        """Start a transaction (``BEGIN IMMEDIATE`` if *write*) with the next statement."""
        object.__setattr__(self, "_begin", "BEGIN IMMEDIATE" if write else "BEGIN")
        object.__setattr__(self, "_write", write)
        object.__setattr__(self, "_dirty", False)

    def _thread(self) -> CallThread:
        return self._threads.writer if self._write else self._threads.reader

    def _starting(self, statement: str) -> str | None:
        """The deferred ``BEGIN`` to send before *statement* (once), noting
        whether the transaction now writes."""
        begin = self._begin
        object.__setattr__(self, "_begin", None)
        if statement.lstrip()[:6].upper() != "SELECT":
            object.__setattr__(self, "_dirty", True)
        return begin

    def _end(self, method: str) -> None:
        raw = self._raw
        try:
            if self._begin is not None or not raw.in_transaction:
                pass  # nothing ran, or nothing to end
            elif not self._dirty:
                getattr(raw, method)()  # only reads: no I/O to wait for
            else:
                self._thread().call(getattr(raw, method))
        finally:
            object.__setattr__(self, "_begin", None)
            object.__setattr__(self, "_write", False)
            object.__setattr__(self, "_dirty", False)

    def cursor(self, *args: t.Any) -> CooperativeCursor:
        return CooperativeCursor(self, self._raw.cursor(*args))

    def execute(self, *args: t.Any) -> CooperativeCursor:
        return self.cursor().execute(*args)

    def commit(self) -> None:
        self._end("commit")

    def rollback(self) -> None:
        self._end("rollback")

    def close(self) -> None:
        self._threads.reader.call(self._raw.close)

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
