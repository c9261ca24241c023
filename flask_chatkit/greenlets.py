"""A wait that a kill does not cut short (no Flask here).

A greenlet waiting for work it handed over (a driver call on a thread, a write
in the next group commit) must not walk away when it is killed or times out:
the work goes on and may still commit, and the connection it uses must not be
rolled back, closed or handed to someone else meanwhile.
"""

from __future__ import annotations

import typing as t


def wait_to_end(result: t.Any) -> t.Any:
    """The value of *result* (a gevent ``AsyncResult``, or the ``AsyncResult``-like
    value of a thread pool's ``spawn``) once it is ready, waiting on through a
    kill or timeout of the caller, which is then raised."""
    interrupted: BaseException | None = None
    while not result.ready():
        try:
            result.wait()
        except BaseException as exc:  # GreenletExit, Timeout: the work goes on
            interrupted = interrupted or exc
    if interrupted is not None:
        raise interrupted
    return result.get()


__all__ = ["wait_to_end"]
