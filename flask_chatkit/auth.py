"""Who is asking: the request context from the app's own login, and CSRF checks.

The user comes from Flask-Login's ``current_user``: a session cookie (or
remember cookie), or an ``Authorization: Bearer`` token resolved by the app's
``@login_manager.request_loader``. Never from a header or body field the client
controls. Cookie-authenticated writes must come from an allowed origin.
"""

from __future__ import annotations

import typing as t
from urllib.parse import urlsplit

from flask import current_app
from flask import g
from flask import request

from .errors import ErrorCode
from .errors import RequestError
from .server import RequestContext


def bearer_token(req: t.Any = None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or ``None``.

    A helper for the app's ``request_loader``; flask_chatkit itself never
    trusts the token without the app resolving it to a user.
    """
    header = (req or request).headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _mark_bearer(sender: t.Any, user: t.Any = None, **extra: t.Any) -> None:
    # Flask-Login sends this only when its request_loader produced the user,
    # i.e. no session cookie was involved.
    g._chatkit_auth = "bearer"


def connect_login_signals() -> None:
    """Learn from Flask-Login which users came from a request loader (bearer token)."""
    from flask_login.signals import user_loaded_from_request

    user_loaded_from_request.connect(_mark_bearer)


def default_context_loader() -> RequestContext | None:
    """The context of Flask-Login's ``current_user``, or ``None`` when anonymous."""
    from flask_login import current_user

    if not hasattr(current_app, "login_manager"):
        raise RuntimeError(
            "flask_chatkit needs Flask-Login to know the user: call "
            "LoginManager().init_app(app), or register your own "
            "@chatkit.context_loader."
        )
    user = current_user._get_current_object()
    if user is None or not user.is_authenticated:
        return None
    return RequestContext(
        user_id=str(user.get_id()),
        auth=g.get("_chatkit_auth", "session"),
        locale=request.accept_languages.best,
        user=user,
    )


def unauthorized() -> RequestError:
    """The 401 for anonymous requests."""
    return RequestError(
        "Log in first: this endpoint needs a session cookie or a bearer token.",
        code=ErrorCode.UNAUTHORIZED,
        status=401,
    )


def request_origin() -> str | None:
    """The browser origin of the request: ``Origin``, else the origin of ``Referer``."""
    origin = request.headers.get("Origin")
    if origin and origin != "null":
        return origin.rstrip("/")
    referer = request.headers.get("Referer")
    if referer:
        parts = urlsplit(referer)
        if parts.scheme and parts.netloc:
            return f"{parts.scheme}://{parts.netloc}"
    return None


def check_csrf(context: t.Any, allowed_origins: t.Collection[str]) -> None:
    """Refuse a cookie-authenticated write from a foreign (or unknown) origin with 403.

    Bearer-authenticated requests are not subject to it: a browser never adds
    an ``Authorization`` header on another site's behalf.
    """
    if getattr(context, "auth", "session") == "bearer":
        return
    own = request.host_url.rstrip("/")
    origin = request_origin()
    if origin is None:
        raise RequestError(
            "Cookie-authenticated requests must send an Origin or Referer header.",
            code=ErrorCode.CSRF_FAILED,
            status=403,
        )
    if origin != own and origin not in allowed_origins:
        raise RequestError(
            f"Origin {origin!r} is not allowed. Requests with a session cookie must "
            f"come from {own!r} or an origin in CHATKIT_ALLOWED_ORIGINS (behind a "
            "proxy, use werkzeug's ProxyFix so the app knows its public origin).",
            code=ErrorCode.CSRF_FAILED,
            status=403,
        )


__all__ = ["bearer_token", "check_csrf", "default_context_loader", "request_origin"]
