"""Who is logged in (the session cookie, or an ``Authorization: Bearer`` token),
and which of their agents a ChatKit request is for (``/chatkit?agent_id=<id>``).

The loaders close the database session before returning, so that no pooled
connection stays checked out while a ChatKit stream runs for minutes (whether
the request's app context, and with it the session, outlives the view depends
on the Flask version).
"""

from __future__ import annotations

import typing as t

from flask import Request

from flask_chatkit.auth import bearer_token

from .extensions import chatkit
from .extensions import db
from .extensions import login_manager
from .models import Agent
from .models import User
from .models import find_agent
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


@chatkit.agent_loader
def load_agent(agent_id: str, context: t.Any) -> Agent | None:
    """The request's user's agent *agent_id* (from the URL, so untrusted), or ``None``
    (then ``/chatkit`` answers 404 ``agent_not_found``)."""
    try:
        return find_agent(context.user_id, agent_id)
    finally:
        db.session.close()  # hooks read the loaded name and instructions on the detached agent


__all__ = ["load_agent", "load_user", "load_user_from_token"]
