"""The example app's extension objects, created once at import time.

``create_app`` binds them to each app with ``init_app``; the ChatKit tables
are defined on ``db.Model`` here, so ``db.create_all()`` creates them, and
``migrate`` sees flask_chatkit's revisions beside the app's own
(``flask --app example_app db upgrade heads``).
"""

from __future__ import annotations

from flask_login import LoginManager
from flask_migrate import Migrate  # type: ignore[import-untyped]
from flask_sqlalchemy import SQLAlchemy

from flask_chatkit import ChatKit
from flask_chatkit.migrate import register_migrations
from flask_chatkit.sqlalchemy_store import SQLAlchemyStore

db = SQLAlchemy()
store = SQLAlchemyStore(db)
chatkit = ChatKit(store=store)
login_manager = LoginManager()
migrate = Migrate()
register_migrations(migrate)

__all__ = ["chatkit", "db", "login_manager", "migrate", "store"]
