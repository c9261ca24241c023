"""Users, their agents and API tokens, plus the few queries the app needs on them."""

from __future__ import annotations

import hashlib
import secrets
import typing as t
from datetime import UTC
from datetime import datetime

import sqlalchemy as sa
from flask_login import UserMixin
from sqlalchemy.orm import Mapped
from sqlalchemy.orm import mapped_column
from werkzeug.security import check_password_hash
from werkzeug.security import generate_password_hash

from .extensions import db

#: The username of the account created on first start.
DEMO_USERNAME = "demo"


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class User(UserMixin, db.Model):  # type: ignore[name-defined,misc]
    """A person who can log in with a username and password."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(sa.String(80), unique=True)
    password_hash: Mapped[str] = mapped_column(sa.String(255))
    created_at: Mapped[datetime] = mapped_column(default=_now)

    def set_password(self, password: str) -> None:
        """Store a salted hash of *password* (never the password itself)."""
        self.password_hash = generate_password_hash(password)

    def check_password(self, password: str) -> bool:
        """Whether *password* matches the stored hash."""
        return check_password_hash(self.password_hash, password)


class ApiToken(db.Model):  # type: ignore[name-defined,misc]
    """A bearer token for API clients; only its SHA-256 hash is stored."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=_now)


class Agent(db.Model):  # type: ignore[name-defined,misc]
    """One of a user's assistants: a name and the instructions it answers with.

    Its id goes into the ChatKit URL (``/chatkit?agent_id=<id>``), which keeps
    each agent's threads apart (see :func:`load_agent`).
    """

    __tablename__ = "example_agents"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(sa.String(80))
    instructions: Mapped[str] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(default=_now)

    @property
    def summary(self) -> str:
        """The first line of the instructions, for lists."""
        lines = self.instructions.strip().splitlines()
        return lines[0] if lines else ""


#: The agents every new user starts with: (name, instructions).
DEFAULT_AGENTS: tuple[tuple[str, str], ...] = (
    (
        "Helper",
        "Concise and friendly: answers in a few clear sentences.\n"
        "Prefer plain language and offer one next step when it helps.",
    ),
    (
        "Pirate",
        "Answers like a pirate, matey: salty words, still helpful.\n"
        'Start every answer with "Arr!" and keep it short.',
    ),
)


def hash_token(token: str) -> str:
    """The hex SHA-256 of *token*, as kept in the database."""
    return hashlib.sha256(token.encode()).hexdigest()


def find_user(username: str) -> User | None:
    """The user called *username*, or ``None``."""
    return db.session.execute(sa.select(User).filter_by(username=username)).scalar_one_or_none()


def create_user(username: str, password: str) -> User:
    """Add and commit a user, with the :data:`DEFAULT_AGENTS`.

    :raises sqlalchemy.exc.IntegrityError: if the username is taken.
    """
    user = User(username=username)
    user.set_password(password)
    db.session.add(user)
    try:
        db.session.flush()  # the user's id, for the agents
        db.session.add_all(
            Agent(user_id=user.id, name=name, instructions=instructions)
            for name, instructions in DEFAULT_AGENTS
        )
        db.session.commit()
    except sa.exc.IntegrityError:
        db.session.rollback()
        raise
    return user


def set_password(username: str, password: str) -> bool:
    """Give *username* a new password; ``False`` if there is no such user."""
    user = find_user(username)
    if user is None:
        return False
    user.set_password(password)
    db.session.commit()
    return True


def issue_token(user: User) -> str:
    """Create a new bearer token for *user*; the plain token is returned only here."""
    token = secrets.token_urlsafe(32)
    db.session.add(ApiToken(user_id=user.id, token_hash=hash_token(token)))
    db.session.commit()
    return token


def user_for_token(token: str) -> User | None:
    """The owner of bearer *token*, or ``None`` for an unknown token."""
    query = sa.select(User).join(ApiToken).where(ApiToken.token_hash == hash_token(token))
    return db.session.execute(query).scalar_one_or_none()


def agents_of(user_id: int) -> list[Agent]:
    """The user's agents, oldest first."""
    query = sa.select(Agent).filter_by(user_id=user_id).order_by(Agent.created_at, Agent.id)
    return list(db.session.execute(query).scalars())


def find_agent(user_id: t.Any, agent_id: t.Any) -> Agent | None:
    """The agent *agent_id* if it belongs to *user_id*, else ``None``.

    Both ids may come from outside (a URL, a session): anything that is not a
    plain decimal number is ``None``, never an error.
    """
    wanted = []
    for value in (user_id, agent_id):
        text = str(value)
        if not (text.isascii() and text.isdigit()) or len(text) > 18:
            return None
        wanted.append(int(text))
    query = sa.select(Agent).filter_by(id=wanted[1], user_id=wanted[0])
    return db.session.execute(query).scalar_one_or_none()


def ensure_demo_user() -> str | None:
    """Create the ``demo`` user with a random password if there are no users yet.

    :return: the new password, or ``None`` if users exist (or another worker
        created the demo user at the same moment).
    """
    if db.session.execute(sa.select(User.id).limit(1)).first() is not None:
        return None
    password = secrets.token_urlsafe(12)
    try:
        create_user(DEMO_USERNAME, password)
    except sa.exc.IntegrityError:
        return None  # another worker won the race; it prints the password
    return password


__all__ = [
    "DEFAULT_AGENTS",
    "DEMO_USERNAME",
    "Agent",
    "ApiToken",
    "User",
    "agents_of",
    "create_user",
    "ensure_demo_user",
    "find_agent",
    "find_user",
    "hash_token",
    "issue_token",
    "set_password",
    "user_for_token",
]
