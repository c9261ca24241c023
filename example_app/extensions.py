"""The example app's extension objects, created once at import time.

``create_app`` binds them to each app with ``init_app``; the ChatKit tables
are defined on ``db.Model`` here, so ``db.create_all()`` creates them.
"""

from __future__ import annotations

from flask_login import LoginManager
from flask_sqlalchemy import SQLAlchemy

from flask_chatkit import ChatKit
from flask_chatkit.sqlalchemy_store import SQLAlchemyStore

db = SQLAlchemy()
store = SQLAlchemyStore(db)
chatkit = ChatKit(store=store)
login_manager = LoginManager()

__all__ = ["chatkit", "db", "login_manager", "store"]
