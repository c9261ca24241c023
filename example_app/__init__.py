"""A small app serving ChatKit with flask_chatkit: logins, tokens, a demo responder.

Run it with ``flask --app example_app run`` or, for real streaming,
``gunicorn -k gevent --worker-connections 1000 wsgi:app``. On first start it
creates a ``demo`` user and prints the password.
"""

from __future__ import annotations

import os
import typing as t

import sqlalchemy as sa
from flask import Flask

from . import auth  # noqa: F401  (registers the Flask-Login loaders)
from . import cli
from . import demo  # noqa: F401  (registers the ChatKit hooks)
from .config import configure
from .extensions import chatkit
from .extensions import db
from .extensions import login_manager
from .models import DEMO_USERNAME
from .models import ensure_demo_user
from .views import bp


def create_app(test_config: t.Mapping[str, t.Any] | None = None) -> Flask:
    """Build the app.

    Configuration comes from defaults, then the environment (every
    ``CHATKIT_*`` variable, ``SECRET_KEY``, ``DATABASE_URL``), then
    *test_config*. The instance folder is ``EXAMPLE_INSTANCE_PATH`` if set.
    Tables are created on first start, and the demo user if there are no users.
    """
    instance_path = os.environ.get("EXAMPLE_INSTANCE_PATH")
    app = Flask(
        __name__,
        instance_path=os.path.abspath(instance_path) if instance_path else None,
    )
    os.makedirs(app.instance_path, exist_ok=True)
    configure(app, test_config)

    db.init_app(app)
    login_manager.init_app(app)
    chatkit.init_app(app)
    app.register_blueprint(bp)
    cli.register(app)

    if os.environ.get("OPENAI_API_KEY"):
        app.logger.warning(
            "OPENAI_API_KEY is set, but the OpenAI responder is not available yet; "
            "using the offline demo responder."
        )
    with app.app_context():
        create_tables()
        if app.config["DEMO_USER"]:
            password = ensure_demo_user()
            if password is not None:
                app.logger.warning(
                    "Demo login: username=%s password=%s", DEMO_USERNAME, password
                )
        db.session.remove()
    return app


def create_tables() -> None:
    """``db.create_all()``, tolerating another worker creating the tables at the same time."""
    for attempt in range(3):
        try:
            db.create_all()
            return
        except sa.exc.OperationalError:
            # Lost a race ("table ... already exists"): the next pass sees that table.
            if attempt == 2:
                raise


__all__ = ["create_app"]
