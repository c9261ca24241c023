"""Production entry point: ``gunicorn -k gevent --worker-connections 10000 --keep-alive 30 wsgi:app``.

gevent must patch the standard library before anything else is imported, so
that sockets, sleeps and locks used by Flask, SQLAlchemy and the responder
yield to other streams instead of blocking the worker.

Each open stream holds a socket, so the worker may open as many files as the
system lets it (the soft limit is often 1024, far below the hard one).

Once the app is built, what start-up made (modules, the routing map, the ORM's
and pydantic's schemas: most of the objects the process will ever hold) is
moved out of the garbage collector's sight with ``gc.freeze()``, and the
youngest generation is collected every 10,000 allocations instead of 700: a
burst of thousands of requests otherwise spends a fifth of its time walking
those objects again and again (measured in ``benchmarks/``).
"""

from gevent import monkey

monkey.patch_all()

import gc  # noqa: E402
import resource  # noqa: E402

from example_app import create_app  # noqa: E402

_soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
if _soft != _hard:
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (_hard, _hard))
    except (ValueError, OSError):  # an unlimited hard limit the kernel caps lower
        pass

app = create_app()

gc.freeze()
gc.set_threshold(10_000, 50, 100)
