"""Users and API tokens, plus the few queries the app needs on them."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime
from datetime import timezone

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
    return datetime.now(timezone.utc).replace(tzinfo=None)


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


def hash_token(token: str) -> str:
    """The hex SHA-256 of *token*, as kept in the database."""
    return hashlib.sha256(token.encode()).hexdigest()


def find_user(username: str) -> User | None:
    """The user called *username*, or ``None``."""
    return db.session.execute(sa.select(User).filter_by(username=username)).scalar_one_or_none()


def create_user(username: str, password: str) -> User:
    """Add and commit a user.

    :raises sqlalchemy.exc.IntegrityError: if the username is taken.
    """
    user = User(username=username)
    user.set_password(password)
    db.session.add(user)
    try:
        db.session.commit()
    except sa.exc.IntegrityError:
        db.session.rollback()
        raise
    return user


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
    "DEMO_USERNAME",
    "ApiToken",
    "User",
    "create_user",
    "ensure_demo_user",
    "find_user",
    "hash_token",
    "issue_token",
    "user_for_token",
]
