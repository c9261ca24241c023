"""Who is logged in: the session cookie, or an ``Authorization: Bearer`` token.

Both loaders close the database session before returning, so that no pooled
connection stays checked out while a ChatKit stream runs for minutes (whether
the request's app context, and with it the session, outlives the view depends
on the Flask version).
"""

from __future__ import annotations

from flask import Request

from flask_chatkit.auth import bearer_token

from .extensions import db
from .extensions import login_manager
from .models import User
from .models import user_for_token


@login_manager.user_loader
def load_user(user_id: str) -> User | None:
    """The user of a session cookie."""
    try:
        user = db.session.get(User, int(user_id))
    except ValueError:
        return None
    finally:
        db.session.close()  # loaded attributes stay readable on the detached user
    return user


@login_manager.request_loader
def load_user_from_token(request: Request) -> User | None:
    """The owner of the request's bearer token, if it is a known one."""
    token = bearer_token(request)
    if token is None:
        return None
    try:
        return user_for_token(token)
    finally:
        db.session.close()


__all__ = ["load_user", "load_user_from_token"]
