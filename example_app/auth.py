"""Who is logged in (the session cookie, or an ``Authorization: Bearer`` token),
and which of their agents a ChatKit request is for (``/chatkit?agent_id=<id>``).

The loaders close the database session before returning, so that no pooled
connection stays checked out while a ChatKit stream runs for minutes (whether
the request's app context, and with it the session, outlives the view depends
on the Flask version).
"""

from __future__ import annotations

import collections
import threading
import time
import typing as t

from flask import Request
from flask import current_app

from flask_chatkit.auth import bearer_token

from .extensions import chatkit
from .extensions import db
from .extensions import login_manager
from .models import Agent
from .models import User
from .models import find_agent
from .models import hash_token
from .models import user_for_token

#: Where create_app keeps the app's :class:`TokenCache`.
TOKEN_CACHE = "example_token_cache"


class TokenCache:
    """The owners of recently used bearer tokens, each remembered for *ttl*
    seconds, so that a stream does not begin with a database query.

    A revoked (deleted) token keeps working for at most *ttl* seconds in each
    worker; ``0`` looks every token up. Keys are the tokens' SHA-256 hashes;
    at most *size* owners are kept, the least recently used forgotten first.
    """

    def __init__(self, ttl: float, size: int = 10_000) -> None:
        self.ttl = ttl
        self.size = size
        self._owners: collections.OrderedDict[str, tuple[float, User]] = collections.OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> User | None:
        """The remembered owner of the token hashed to *key*, if still fresh."""
        with self._lock:
            entry = self._owners.get(key)
            if entry is None:
                return None
            if entry[0] <= time.monotonic():
                del self._owners[key]
                return None
            self._owners.move_to_end(key)
            return entry[1]

    def put(self, key: str, user: User) -> None:
        """Remember *user* as the owner of the token hashed to *key*."""
        if self.ttl <= 0:
            return
        with self._lock:
            self._owners[key] = (time.monotonic() + self.ttl, user)
            self._owners.move_to_end(key)
            while len(self._owners) > self.size:
                self._owners.popitem(last=False)


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
    """The owner of the request's bearer token, if it is a known one (remembered
    for ``TOKEN_CACHE_SECONDS``, see :class:`TokenCache`)."""
    token = bearer_token(request)
    if token is None:
        return None
    cache: TokenCache = current_app.extensions[TOKEN_CACHE]
    key = hash_token(token)
    user = cache.get(key)
    if user is None:
        try:
            user = user_for_token(token)
        finally:
            db.session.close()  # loaded attributes stay readable on the detached user
        if user is not None:
            cache.put(key, user)
    return user


@chatkit.agent_loader
def load_agent(agent_id: str, context: t.Any) -> Agent | None:
    """The request's user's agent *agent_id* (from the URL, so untrusted), or ``None``
    (then ``/chatkit`` answers 404 ``agent_not_found``)."""
    try:
        return find_agent(context.user_id, agent_id)
    finally:
        db.session.close()  # hooks read the loaded name and instructions on the detached agent


__all__ = ["TOKEN_CACHE", "TokenCache", "load_agent", "load_user", "load_user_from_token"]
