"""The HTML pages: log in and out, the user's agents, and a chat page per agent.

The chat pages embed the official ``openai-chatkit`` web component, loaded
from ``CHATKIT_SCRIPT_URL``; when it is not defined within
``CHATKIT_SCRIPT_TIMEOUT`` seconds (offline, blocked, air-gapped) they fall
back to flask_chatkit's reference client, with a note saying so.
``?client=reference`` skips the component. The page's script
(``static/chat-page.js``) reads its settings from a JSON block.

The login and logout forms carry a CSRF token kept in the session: without
it another site could log a visitor in to an account of its choosing, or out.
"""

from __future__ import annotations

import hmac
import secrets
import typing as t

from flask import Blueprint
from flask import abort
from flask import current_app
from flask import redirect
from flask import render_template
from flask import request
from flask import session
from flask import url_for
from flask_login import current_user
from flask_login import login_user
from flask_login import logout_user
from werkzeug.wrappers import Response as BaseResponse

from .models import Agent
from .models import agents_of
from .models import find_agent
from .models import find_user

bp = Blueprint("pages", __name__)

#: The session key of the CSRF token of the login and logout forms.
CSRF_KEY = "csrf_token"
CSRF_MESSAGE = (
    "This form has expired or was not sent from this site (its CSRF token is missing "
    "or wrong). Reload the page and try again."
)
#: Languages the ChatKit component speaks (its ``SupportedLocale``); the best
#: match for the browser's ``Accept-Language`` is passed to it.
CHATKIT_LOCALES = (
    "en",
    "bg",
    "bn",
    "bs",
    "ca",
    "cs",
    "da",
    "de",
    "el",
    "es",
    "et",
    "fi",
    "fr",
    "gu",
    "hi",
    "hr",
    "hu",
    "hy",
    "id",
    "is",
    "it",
    "ja",
    "ka",
    "kn",
    "ko",
    "lv",
    "mk",
    "mr",
    "ms",
    "my",
    "nb",
    "nl",
    "pl",
    "pt",
    "ro",
    "ru",
    "sk",
    "sl",
    "so",
    "sq",
    "sr",
    "sv",
    "sw",
    "ta",
    "te",
    "th",
    "tr",
    "uk",
    "vi",
    "zh",
    "zh-Hant",
)


# --- CSRF token of the login and logout forms ------------------------------------------


def csrf_token() -> str:
    """This session's token for the forms (created on first use)."""
    token = session.get(CSRF_KEY)
    if not isinstance(token, str) or not token:
        token = session[CSRF_KEY] = secrets.token_urlsafe(32)
    return token


def csrf_ok() -> bool:
    """Whether the posted form carries this session's token."""
    expected = session.get(CSRF_KEY)
    sent = request.form.get(CSRF_KEY, "")
    return (
        isinstance(expected, str)
        and bool(expected)
        and hmac.compare_digest(expected.encode(), sent.encode())
    )


@bp.app_context_processor
def template_helpers() -> dict[str, t.Any]:
    return {"csrf_token": csrf_token}


# --- pages ------------------------------------------------------------------------------


@bp.get("/")
def index() -> str | BaseResponse:
    """The user's agents and how to use the API; anonymous visitors go to /login."""
    if not current_user.is_authenticated:
        return redirect(url_for("pages.login"))
    return render_template(
        "index.html",
        agents=agents_of(current_user.id),
        chatkit_url=url_for("chatkit.protocol"),
    )


@bp.get("/login")
def login() -> str:
    """The login form."""
    return render_template("login.html")


@bp.post("/login")
def login_submit() -> tuple[str, int] | BaseResponse:
    """Check the form; on success start a session and go home, else the form again
    (400 without a valid CSRF token, 401 for wrong credentials)."""
    username = request.form.get("username", "").strip()
    if not csrf_ok():
        return render_template("login.html", error=CSRF_MESSAGE, username=username), 400
    password = request.form.get("password", "")
    user = find_user(username) if username else None
    if user is None or not user.check_password(password):
        error = "Unknown username or wrong password."
        return render_template("login.html", error=error, username=username), 401
    session.pop(CSRF_KEY, None)  # a new session, a new token
    login_user(user)
    return redirect(url_for("pages.index"))


@bp.post("/logout")
def logout() -> tuple[str, int] | BaseResponse:
    """End the session and go back to the login form (400 without the CSRF token)."""
    if not csrf_ok():
        return render_template("message.html", title="Not logged out", message=CSRF_MESSAGE), 400
    logout_user()
    session.pop(CSRF_KEY, None)
    return redirect(url_for("pages.login"))


@bp.get("/agents/<int:agent_id>/chat")
def chat(agent_id: int) -> str | BaseResponse:
    """A page with the site's header and a chat with the agent."""
    return chat_page(agent_id, full_screen=False)


@bp.get("/agents/<int:agent_id>/chat/full")
def chat_full(agent_id: int) -> str | BaseResponse:
    """The chat with the agent, filling the window."""
    return chat_page(agent_id, full_screen=True)


def chat_page(agent_id: int, *, full_screen: bool) -> str | BaseResponse:
    if not current_user.is_authenticated:
        return redirect(url_for("pages.login"))
    agent = find_agent(current_user.id, agent_id)
    if agent is None:
        abort(404)  # unknown, or another user's: the same answer
    return render_template(
        "chat.html",
        agent=agent,
        full_screen=full_screen,
        chat_config=chat_config(agent, reference_only=request.args.get("client") == "reference"),
    )


def chat_locale() -> str:
    """``CHATKIT_LOCALE``, else the component's best match for ``Accept-Language``."""
    configured = str(current_app.config.get("CHATKIT_LOCALE") or "").strip()
    if configured:
        return configured
    return request.accept_languages.best_match(CHATKIT_LOCALES, default="en") or "en"


def chat_config(agent: Agent, *, reference_only: bool) -> dict[str, t.Any]:
    """What ``chat-page.js`` needs: the ChatKit URLs for *agent* and the client settings."""
    config = current_app.config
    upload: dict[str, str] = {"type": config["CHATKIT_UPLOAD_STRATEGY"]}
    if upload["type"] == "direct":
        upload["uploadUrl"] = url_for("chatkit.upload", agent_id=agent.id)
    script_url = config.get("CHATKIT_SCRIPT_URL") or None
    return {
        "apiUrl": url_for("chatkit.protocol", agent_id=agent.id),
        "uploadStrategy": upload,
        "domainKey": config["CHATKIT_DOMAIN_KEY"],
        "scriptUrl": None if reference_only else script_url,
        "scriptTimeout": config["CHATKIT_SCRIPT_TIMEOUT"],
        "clientUrl": url_for("chatkit.static", filename="chatkit-client.js"),
        "locale": chat_locale(),
        "title": agent.name,
        "placeholder": f"Message {agent.name}…",
        "greeting": f"{agent.name}: {agent.summary}",
    }


__all__ = ["bp", "chat_config", "csrf_token"]
