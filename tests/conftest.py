"""Fixtures: an app per test (parametrized over stores), users, and a client that
validates every ``/chatkit`` exchange with the official models (``tests/wire.py``)."""

from __future__ import annotations

import json
import typing as t

import pytest
from flask import Flask
from flask.testing import FlaskClient
from flask_login import LoginManager
from flask_login import UserMixin
from flask_login import login_user
from flask_sqlalchemy import SQLAlchemy

from flask_chatkit import ChatKit
from flask_chatkit import InMemoryStore
from flask_chatkit.auth import bearer_token
from flask_chatkit.sqlalchemy_store import SQLAlchemyStore
from flask_chatkit.testing import chatkit_request

from . import wire

ORIGIN = "http://localhost"
USERS = ("alice", "bob")


class User(UserMixin):
    def __init__(self, user_id: str) -> None:
        self.id = user_id


class Exchange:
    """One validated ``/chatkit`` exchange."""

    def __init__(self, status: int, body: t.Any, headers: t.Any) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def events(self) -> list[dict[str, t.Any]]:
        assert isinstance(self.body, list), self.body
        return self.body

    @property
    def types(self) -> list[str]:
        return [e["type"] for e in self.events]

    def of_type(self, type_: str) -> list[dict[str, t.Any]]:
        return [e for e in self.events if e["type"] == type_]

    @property
    def error(self) -> dict[str, t.Any]:
        return self.body["error"]  # type: ignore[no-any-return]


class ChatKitClient(FlaskClient):
    """A test client that sends a same-origin ``Origin`` and judges every exchange."""

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        super().__init__(*args, **kwargs)
        self.environ_base["HTTP_ORIGIN"] = ORIGIN

    def chatkit(
        self,
        type_: str,
        *,
        metadata: dict[str, t.Any] | None = None,
        headers: dict[str, str] | None = None,
        valid: bool = True,
        **params: t.Any,
    ) -> Exchange:
        """POST one request; *valid* = the request itself must pass the official models."""
        body = chatkit_request(type_, metadata=metadata, **params)
        return self.send(body, headers=headers, valid=valid)

    def send(
        self, body: t.Any, *, headers: dict[str, str] | None = None, valid: bool = True
    ) -> Exchange:
        if valid:
            wire.check_request(body)
        data = body if isinstance(body, (bytes, str)) else json.dumps(body)
        response = self.post(
            "/chatkit", data=data, content_type="application/json", headers=headers or {}
        )
        parsed = wire.check_exchange(
            body, response.status_code, response.headers.get("Content-Type", ""), response.data
        )
        return Exchange(response.status_code, parsed, response.headers)


def make_app(store_kind: str, tmp_path: t.Any, **config: t.Any) -> Flask:
    """An app with Flask-Login (session login at ``/_login/<id>``, bearer ``token-<id>``)
    and ChatKit on the chosen store; the extension is ``app.extensions["chatkit"]``."""
    app = Flask(__name__, instance_path=str(tmp_path / "instance"))
    app.config.update(
        TESTING=True,
        SECRET_KEY="test",
        SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'chat.db'}",
        CHATKIT_HEARTBEAT_INTERVAL=5,
    )
    app.config.update(config)
    login = LoginManager(app)

    @login.user_loader
    def load_user(user_id: str) -> User | None:
        return User(user_id) if user_id in USERS else None

    @login.request_loader
    def load_from_token(request: t.Any) -> User | None:
        token = bearer_token(request)
        if token and token.startswith("token-") and token[6:] in USERS:
            return User(token[6:])
        return None

    @app.post("/_login/<user_id>")
    def _login(user_id: str) -> str:
        login_user(User(user_id))
        return "ok"

    if store_kind == "sqlalchemy":
        db = SQLAlchemy()
        store: t.Any = SQLAlchemyStore(db)
        db.init_app(app)
        with app.app_context():
            db.create_all()
        app.extensions["test_db"] = db
    else:
        store = InMemoryStore()
    ChatKit(app, store=store)
    app.test_client_class = ChatKitClient
    return app


@pytest.fixture(params=["memory", "sqlalchemy"])
def store_kind(request: pytest.FixtureRequest) -> str:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def app(store_kind: str, tmp_path: t.Any) -> Flask:
    return make_app(store_kind, tmp_path)


@pytest.fixture
def chatkit(app: Flask) -> ChatKit:
    """The app's extension: register hooks on it inside a test."""
    return app.extensions["chatkit"]  # type: ignore[no-any-return]


def logged_in(app: Flask, user_id: str) -> ChatKitClient:
    client = app.test_client()
    assert client.post(f"/_login/{user_id}").status_code == 200
    return client  # type: ignore[return-value]


@pytest.fixture
def alice(app: Flask) -> ChatKitClient:
    return logged_in(app, "alice")


@pytest.fixture
def bob(app: Flask) -> ChatKitClient:
    return logged_in(app, "bob")


@pytest.fixture
def ctx_of(app: Flask) -> t.Callable[[str], t.Any]:
    """A store context for a user id, to read what the server persisted."""
    from flask_chatkit import RequestContext

    return lambda user_id: RequestContext(user_id=user_id)


class StoreInContext:
    """The app's store, each call in its own short app context.

    Holding one app context open for a whole test would make every test-client
    request reuse it, sharing ``g`` (and Flask-Login's cached user) between
    clients.
    """

    def __init__(self, app: Flask) -> None:
        self._app = app
        self._store = app.extensions["chatkit"].state(app).server.store

    def __getattr__(self, name: str) -> t.Any:
        attr = getattr(self._store, name)
        if not callable(attr):
            return attr

        def call(*args: t.Any, **kwargs: t.Any) -> t.Any:
            with self._app.app_context():
                return attr(*args, **kwargs)

        return call


@pytest.fixture
def store(app: Flask) -> StoreInContext:
    """The app's store, for direct reads in asserts (safe beside test clients)."""
    return StoreInContext(app)
