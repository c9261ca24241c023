"""Group commit: the writes of concurrent turns share transactions.

Under gevent a worker runs thousands of turns at once, and each turn writes a
few times (its start, its end, the items in between). One transaction per
write costs a commit each (an fsync on SQLite without WAL, a round trip and a
pooled connection on PostgreSQL), so a burst of turns queues on the database
or on the connection pool. A :class:`GroupCommit` has one writer greenlet per
engine: the writes submitted while a batch runs form the next batch, which
runs in one transaction. A write is acknowledged (:meth:`GroupCommit.submit`
returns) only once its batch has committed. When a write of a batch fails, the
batch is rolled back and its writes run again each in a transaction of its own,
so a failure fails exactly the writes it belongs to, each with its own error.

Outside gevent (tests, threaded servers) a write runs at once in its own
transaction, as a batch of one.

No Flask here.
"""

from __future__ import annotations

import dataclasses
import logging
import typing as t

from .greenlets import wait_to_end

logger = logging.getLogger("flask_chatkit")

T = t.TypeVar("T")
#: A write: run on the batch's connection, inside its transaction.
Write = t.Callable[[t.Any], t.Any]
#: Runs writes in one transaction (a context manager giving the connection).
Transaction = t.Callable[[], t.ContextManager[t.Any]]

#: Writes in one transaction at most.
MAX_BATCH = 500


class _Logged:
    """Stands in for the waiter of a write nobody waits for: logs its failure."""

    def __init__(self, what: str) -> None:
        self.what = what

    def set(self, outcome: Outcome) -> None:
        if outcome.error is not None:
            logger.warning("Could not save %s.", self.what, exc_info=outcome.error)


@dataclasses.dataclass
class Outcome:
    """What one write of a batch returned, or raised."""

    value: t.Any = None
    error: BaseException | None = None


def run_batch(transaction: Transaction, writes: t.Sequence[Write]) -> list[Outcome]:
    """Run *writes* in one transaction; when one raises, roll back and run each
    in a transaction of its own (so that only the failing ones fail)."""
    try:
        with transaction() as conn:
            values = [write(conn) for write in writes]
    except Exception as exc:
        if len(writes) == 1:
            return [Outcome(error=exc)]
    else:
        return [Outcome(value=value) for value in values]
    outcomes = []
    for write in writes:
        try:
            with transaction() as conn:
                value = write(conn)
        except Exception as exc:  # the write, or its commit
            outcomes.append(Outcome(error=exc))
        else:
            outcomes.append(Outcome(value=value))
    return outcomes


def cooperative() -> bool:
    """Whether this process runs under gevent's monkey patching."""
    try:
        from gevent import monkey
    except ImportError:  # pragma: no cover - gevent is a dependency
        return False
    return bool(monkey.is_module_patched("threading"))


class GroupCommit:
    """The batching writer of one database (see the module docstring).

    :param transaction: opens one write transaction and gives its connection.
    """

    def __init__(self, transaction: Transaction) -> None:
        self.transaction = transaction
        self._queue: list[tuple[Write, t.Any]] = []
        self._writer: t.Any = None
        #: Batches committed (or tried) and writes they held, for tests and metrics.
        self.batches = 0
        self.writes = 0

    def submit(self, write: t.Callable[[t.Any], T]) -> T:
        """Run *write* in the next batch; its value once the batch has committed.

        :raises: what *write* raised, or the error of its transaction's commit.
        A caller killed while it waits still waits for the batch (its write may
        commit), then raises what interrupted it.
        """
        if not cooperative():
            (outcome,) = self._run([write])
            return self._result(outcome)  # type: ignore[no-any-return]
        import gevent
        from gevent.event import AsyncResult

        waiter: AsyncResult = AsyncResult()
        self._queue.append((write, waiter))
        if self._writer is None or self._writer.dead:
            self._writer = gevent.spawn(self._drain)
        return self._result(wait_to_end(waiter))  # type: ignore[no-any-return]

    def submit_later(self, write: Write, what: str = "a write") -> None:
        """Put *write* in the next batch without waiting for it: for writes that
        acknowledge nothing to anyone (a checkpoint of a running answer). Its
        failure is logged as the failure of *what*. Outside gevent it runs now.
        """
        if not cooperative():
            (outcome,) = self._run([write])
            if outcome.error is not None:
                logger.warning("Could not save %s.", what, exc_info=outcome.error)
            return
        import gevent

        self._queue.append((write, _Logged(what)))
        if self._writer is None or self._writer.dead:
            self._writer = gevent.spawn(self._drain)

    @staticmethod
    def _result(outcome: Outcome) -> t.Any:
        if outcome.error is not None:
            raise outcome.error
        return outcome.value

    def _run(self, writes: t.Sequence[Write]) -> list[Outcome]:
        self.batches += 1
        self.writes += len(writes)
        return run_batch(self.transaction, writes)

    def _drain(self) -> None:
        # what arrives while a batch runs forms the next one
        while self._queue:
            batch = self._queue[:MAX_BATCH]
            del self._queue[:MAX_BATCH]
            try:
                outcomes = self._run([write for write, _ in batch])
            except BaseException as exc:  # the writer itself was stopped
                outcomes = [Outcome(error=exc)] * len(batch)
                for (_, waiter), outcome in zip(batch, outcomes):
                    waiter.set(outcome)
                raise
            for (_, waiter), outcome in zip(batch, outcomes):
                waiter.set(outcome)


__all__ = ["MAX_BATCH", "GroupCommit", "Outcome", "cooperative", "run_batch"]
