"""Production entry point: ``gunicorn -k gevent --worker-connections 1000 wsgi:app``.

gevent must patch the standard library before anything else is imported, so
that sockets, sleeps and locks used by Flask, SQLAlchemy and the responder
yield to other streams instead of blocking the worker.
"""

from gevent import monkey

monkey.patch_all()

from example_app import create_app  # noqa: E402

app = create_app()
