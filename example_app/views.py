"""The HTML pages: log in, log out, and a home page for the logged-in user."""

from __future__ import annotations

from flask import Blueprint
from flask import redirect
from flask import render_template
from flask import request
from flask import url_for
from flask_login import current_user
from flask_login import login_user
from flask_login import logout_user
from werkzeug.wrappers import Response as BaseResponse

from .models import find_user

bp = Blueprint("pages", __name__)


@bp.get("/")
def index() -> str | BaseResponse:
    """Who is logged in and how to use the API; anonymous visitors go to /login."""
    if not current_user.is_authenticated:
        return redirect(url_for("pages.login"))
    return render_template("index.html", chatkit_url=url_for("chatkit.protocol"))


@bp.get("/login")
def login() -> str:
    """The login form."""
    return render_template("login.html")


@bp.post("/login")
def login_submit() -> tuple[str, int] | BaseResponse:
    """Check the form; on success start a session and go home, else 401 with the form."""
    username = request.form.get("username", "").strip()
    password = request.form.get("password", "")
    user = find_user(username) if username else None
    if user is None or not user.check_password(password):
        error = "Unknown username or wrong password."
        return render_template("login.html", error=error, username=username), 401
    login_user(user)
    return redirect(url_for("pages.index"))


@bp.post("/logout")
def logout() -> BaseResponse:
    """End the session and go back to the login form."""
    logout_user()
    return redirect(url_for("pages.login"))


__all__ = ["bp"]
