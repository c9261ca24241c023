"""The Flask extension: configuration, hooks and the blueprint."""

from __future__ import annotations

import collections
import dataclasses
import os
import typing as t
import weakref

import flask
from flask import Flask
from flask import current_app

from . import agents
from . import auth
from . import config
from . import hosted
from .assistant_settings import Settings
from .attachments import AttachmentRules
from .attachments import Attachments
from .cancel import lease_watcher
from .cli import build_cli
from .group_commit import cooperative
from .server import HOOK_NAMES
from .server import ChatKitServer
from .server import warn_renamed
from .sse import Detach
from .views import create_blueprint

if t.TYPE_CHECKING:
    from flask_limiter import Limiter

    from .assistant import Assistant
    from .metrics import Metrics
    from .quotas import Quotas
    from .responder import Responder
    from .store import Store

F = t.TypeVar("F", bound=t.Callable[..., t.Any])

#: Every config key with its default (``None``: computed in ``init_app``); the
#: table of kinds, units and meanings is :data:`flask_chatkit.config.KEYS`.
DEFAULTS: dict[str, t.Any] = config.defaults()


def _quotas(app: Flask, values: t.Mapping[str, t.Any]) -> tuple[Quotas | None, Limiter | None]:
    """The rate limits and token budgets of *app*, counted through a Flask-Limiter
    ``Limiter`` on ``CHATKIT_RATE_LIMIT_STORAGE``; ``(None, None)`` when neither
    ``CHATKIT_RATE_LIMITS`` nor ``CHATKIT_TOKEN_BUDGET`` is set, or when
    ``RATELIMIT_ENABLED`` (Flask-Limiter's own switch) is false."""
    if not values["CHATKIT_RATE_LIMITS"] and not values["CHATKIT_TOKEN_BUDGET"]:
        return None, None  # Flask-Limiter and limits are imported only when used
    from flask_limiter import Limiter
    from flask_limiter.util import get_remote_address
    from limits.errors import ConfigurationError

    from .quotas import Quotas
    from .quotas import parse_limits

    rates = parse_limits("CHATKIT_RATE_LIMITS", values["CHATKIT_RATE_LIMITS"])
    budget = parse_limits("CHATKIT_TOKEN_BUDGET", values["CHATKIT_TOKEN_BUDGET"])
    if not rates and not budget:
        return None, None
    uri = values["CHATKIT_RATE_LIMIT_STORAGE"] or "memory://"
    try:
        limiter = Limiter(
            # only for limits an app adds through this Limiter: ChatKit's own are
            # keyed on the user id, which Quotas is given
            get_remote_address,
            app=app,
            storage_uri=uri,
            # storage failures come as limits' StorageError (Quotas lets turns through)
            storage_options={"wrap_exceptions": True},
            strategy="fixed-window",  # counts with a cost (tokens) in one increment
            headers_enabled=False,
            # RATELIMIT_DEFAULT / RATELIMIT_APPLICATION in the config are meant for
            # the app's own Limiter: this one must not apply them a second time
            default_limits_exempt_when=lambda: True,
            application_limits_exempt_when=lambda: True,
        )
    except ConfigurationError as exc:
        raise RuntimeError(
            f"CHATKIT_RATE_LIMIT_STORAGE must be a storage URI of the limits package "
            f"(memory://, redis://host:6379/0, ...): {exc}"
        ) from None
    if not limiter.enabled:
        return None, None
    prefix = str(app.config.get("RATELIMIT_KEY_PREFIX") or "")
    return Quotas(limiter.limiter, rates, budget, key_prefix=prefix), limiter


def _detach(values: t.Mapping[str, t.Any]) -> Detach | None:
    """``CHATKIT_DISCONNECT = "finish"``: the limit of turns running on detached."""
    if values["CHATKIT_DISCONNECT"] != "finish":
        return None
    return Detach(values["CHATKIT_MAX_DETACHED_TURNS"], values["CHATKIT_TURN_TIMEOUT"])


@dataclasses.dataclass
class State:
    """Per-app settings, read once from the config in :meth:`ChatKit.init_app`."""

    server: ChatKitServer[t.Any]
    #: Every ``CHATKIT_*`` key as :func:`flask_chatkit.config.read` coerced it.
    config: dict[str, t.Any]
    heartbeat_interval: float
    max_request_size: int
    allowed_origins: frozenset[str]
    upload_max_bytes: int
    allowed_mime_types: list[str]
    #: Whether the self-hosted protocol (``/chatkit``, uploads, previews) is served.
    self_hosted: bool = True
    #: Mints client secrets in hosted mode; ``None`` when hosted mode is off.
    sessions: hosted.SessionMinter | None = None
    #: Runs turns on after their client left (``CHATKIT_DISCONNECT = "finish"``);
    #: ``None``: a disconnect cancels.
    detach: Detach | None = None

    @property
    def hosted(self) -> bool:
        """Whether ``POST /chatkit/client_secret`` mints hosted sessions."""
        return self.sessions is not None

    @property
    def enabled(self) -> bool:
        """Whether any mode is on (e.g. whether a template should render the widget)."""
        return self.self_hosted or self.hosted

    @property
    def mode(self) -> str:
        """``"self_hosted"``, ``"hosted"``, ``"both"`` or ``"disabled"``."""
        if self.self_hosted and self.hosted:
            return "both"
        return "self_hosted" if self.self_hosted else "hosted" if self.hosted else "disabled"

    #: The bound built-in responder, when ``ChatKit(responder=...)`` was given.
    responder: Responder | None = None
    preview_url_expiry: float = 60 * 60
    #: Per-user rate limits and token budgets (``CHATKIT_RATE_LIMITS``,
    #: ``CHATKIT_TOKEN_BUDGET``); ``None`` when neither is set.
    quotas: Quotas | None = None
    #: The Flask-Limiter ``Limiter`` that counts them (its ``storage``, ``reset()``).
    limiter: Limiter | None = None
    #: Told of every model call's tokens (``RequestContext.report_usage``):
    #: budgets and metrics add themselves here at ``init_app``.
    usage_listeners: list[t.Callable[..., None]] = dataclasses.field(default_factory=list)
    #: The process's Prometheus metrics (``CHATKIT_METRICS``); ``None`` when off.
    metrics: Metrics | None = None
    #: Whether each request writes its line to ``flask_chatkit.access`` (``CHATKIT_ACCESS_LOG``).
    access_log: bool = True


def _metrics(values: t.Mapping[str, t.Any], store: t.Any) -> Metrics | None:
    """The metrics when ``CHATKIT_METRICS`` is on (``prometheus_client`` loads only then),
    the SQL store's transactions timed."""
    if not values["CHATKIT_METRICS"]:
        return None
    from . import metrics

    found = metrics.get()
    if hasattr(store, "transaction_timer"):
        store.transaction_timer = found.observe_store
    return found


class ChatKit:
    """Serve the ChatKit protocol from a Flask app.

    ::

        chatkit = ChatKit(store=SQLAlchemyStore(db))

        @chatkit.respond
        def respond(thread, user_message, context):
            yield from stream_text(thread, "Hello!")

        chatkit.init_app(app)

    :param app: the app, or ``None`` to call :meth:`init_app` later.
    :param store: where threads and items live (e.g. ``SQLAlchemyStore(db)``).
    :param attachments: the :class:`~flask_chatkit.attachments.Attachments`
        service: uploads and previews over a :class:`~flask_chatkit.storage.Storage`
        (a local folder by default; ``Attachments(storage=S3Storage(...))`` for
        S3). ``attachment_store=`` is its old name.
    :param responder: an :class:`~flask_chatkit.assistant.Assistant` that answers
        with an OpenAI model; it provides the ``respond`` and ``action`` hooks
        (an ``@chatkit.action`` hook still gets every non-form action).
    :param server_class: a :class:`ChatKitServer` subclass for deep changes.
    :param blueprint_name: the blueprint's name (endpoint prefix).
    """

    def __init__(
        self,
        app: Flask | None = None,
        *,
        store: Store[t.Any] | None = None,
        attachments: Attachments | None = None,
        responder: Assistant | None = None,
        server_class: type[ChatKitServer[t.Any]] = ChatKitServer,
        blueprint_name: str = "chatkit",
        attachment_store: Attachments | None = None,
    ) -> None:
        self.store = store
        if attachment_store is not None:
            warn_renamed("ChatKit(attachment_store=)", "ChatKit(attachments=)")
            attachments = attachments or attachment_store
        self.attachments = attachments
        self.responder = responder
        self.server_class = server_class
        self.blueprint_name = blueprint_name
        self.hooks: dict[str, t.Callable[..., t.Any]] = {}
        self._context_loader: t.Callable[[], t.Any] | None = None
        self._agent_loader: t.Callable[[str, t.Any], t.Any] | None = None
        self._states: weakref.WeakKeyDictionary[Flask, State] = weakref.WeakKeyDictionary()
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Read the ``CHATKIT_*`` config, build the server and mount the blueprint.

        :raises RuntimeError: if ChatKit is already registered on *app*, or if
            no store was given.
        """
        if "chatkit" in app.extensions:
            raise RuntimeError(
                "A ChatKit extension is already registered on this app. Create "
                "one ChatKit() per app, or reuse the existing one from "
                "app.extensions['chatkit']."
            )
        if self.store is None:
            raise RuntimeError(
                "ChatKit needs a store: ChatKit(store=SQLAlchemyStore(db)) for a "
                "database, or ChatKit(store=InMemoryStore()) for tests and demos."
            )
        for key, value in DEFAULTS.items():
            app.config.setdefault(key, value)
        if app.config["CHATKIT_ATTACHMENTS_FOLDER"] is None:
            app.config["CHATKIT_ATTACHMENTS_FOLDER"] = os.path.join(
                app.instance_path, "chatkit_attachments"
            )
        values = config.read(app.config)  # read once; a bad value stops the app here
        values["CHATKIT_ALLOWED_MIME_TYPES"] = [
            m.lower() for m in values["CHATKIT_ALLOWED_MIME_TYPES"]
        ]
        self_hosted, hosted_config = hosted.read_modes(values, app.config)
        sessions = hosted.SessionMinter(hosted_config) if hosted_config else None
        files = self.attachments or Attachments()
        if isinstance(files, Attachments):
            files.bind(
                self._attachment_rules(app, values), folder=values["CHATKIT_ATTACHMENTS_FOLDER"]
            )
        hooks: t.MutableMapping[str, t.Any] = self.hooks
        responder = None
        if self.responder is not None:
            if "respond" in self.hooks:
                raise RuntimeError(
                    "ChatKit got both a responder and a @chatkit.respond hook; keep one."
                )
            responder = self.responder.bind(
                Settings.from_config(collections.ChainMap(values, app.config)),
                self.store,
                files,
                action_fallback=lambda: self.hooks.get("action"),
            )
            hooks = collections.ChainMap(responder.hooks, self.hooks)
        quotas, limiter = _quotas(app, values)
        server = self.server_class(
            self.store,
            files,
            hooks=hooks,
            page_size=values["CHATKIT_PAGE_SIZE"],
            max_page_size=values["CHATKIT_MAX_PAGE_SIZE"],
            turn_timeout=values["CHATKIT_TURN_TIMEOUT"],
            max_files_per_message=values["CHATKIT_MAX_FILES_PER_MESSAGE"],
            checkpoint_interval=values["CHATKIT_CHECKPOINT_INTERVAL"],
            lease_seconds=values["CHATKIT_TURN_LEASE"],
            max_turns_per_user=values["CHATKIT_MAX_TURNS_PER_USER"] or None,
        )
        found_metrics = _metrics(values, self.store)
        self._states[app] = State(
            server=server,
            config=values,
            heartbeat_interval=values["CHATKIT_HEARTBEAT_INTERVAL"],
            max_request_size=values["CHATKIT_MAX_REQUEST_SIZE"],
            allowed_origins=frozenset(o.rstrip("/") for o in values["CHATKIT_ALLOWED_ORIGINS"]),
            upload_max_bytes=values["CHATKIT_UPLOAD_MAX_BYTES"],
            allowed_mime_types=values["CHATKIT_ALLOWED_MIME_TYPES"],
            self_hosted=self_hosted,
            sessions=sessions,
            detach=_detach(values),
            responder=responder,
            preview_url_expiry=values["CHATKIT_PREVIEW_URL_EXPIRY"],
            quotas=quotas,
            limiter=limiter,
            metrics=found_metrics,
            access_log=values["CHATKIT_ACCESS_LOG"],
        )
        if found_metrics is not None:
            self._states[app].usage_listeners.append(found_metrics.count_tokens)
        server.running.on_enter = lease_watcher(app, server)
        server.running.timed = cooperative()  # the watcher renews leases under gevent
        app.extensions["chatkit"] = self
        auth.connect_login_signals()
        app.cli.add_command(build_cli(self._states[app]))
        app.register_blueprint(
            create_blueprint(self, self._states[app], self.blueprint_name),
            url_prefix=values["CHATKIT_URL_PREFIX"],
        )

    def _attachment_rules(self, app: Flask, values: t.Mapping[str, t.Any]) -> AttachmentRules:
        """What uploads are held to on *app*, and how its URLs are signed and built."""
        assert self.store is not None
        name = self.blueprint_name

        def url_for(endpoint: str, **params: t.Any) -> str:
            return flask.url_for(f"{name}.{endpoint}", _external=True, **params)

        return AttachmentRules(
            records=self.store,
            secret_key=lambda: app.secret_key,  # may be set after init_app
            url_for=url_for,
            max_bytes=values["CHATKIT_UPLOAD_MAX_BYTES"],
            allowed_mime_types=values["CHATKIT_ALLOWED_MIME_TYPES"],
            quota_bytes=values["CHATKIT_USER_QUOTA_BYTES"],
            upload_url_expiry=values["CHATKIT_UPLOAD_URL_EXPIRY"],
            preview_url_expiry=values["CHATKIT_PREVIEW_URL_EXPIRY"],
        )

    def state(self, app: Flask | None = None) -> State:
        """The settings and server of *app* (the current app by default)."""
        app = app or current_app._get_current_object()  # type: ignore[attr-defined]
        try:
            return self._states[app]
        except KeyError:
            raise RuntimeError(
                "ChatKit is not registered on this app: call chatkit.init_app(app)."
            ) from None

    @property
    def mode(self) -> str:
        """The current app's mode: ``"self_hosted"``, ``"hosted"``, ``"both"``, ``"disabled"``."""
        return self.state().mode

    @property
    def enabled(self) -> bool:
        """Whether the current app serves ChatKit at all (for templates)."""
        return self.state().enabled

    @property
    def hosted(self) -> bool:
        """Whether the current app mints hosted client secrets."""
        return self.state().hosted

    @property
    def self_hosted(self) -> bool:
        """Whether the current app serves the self-hosted ``/chatkit`` protocol."""
        return self.state().self_hosted

    @property
    def server(self) -> ChatKitServer[t.Any]:
        """The current app's :class:`ChatKitServer`."""
        return self.state().server

    def load_context(self) -> t.Any:
        """The request context of the current user, or ``None`` if anonymous."""
        loader = self._context_loader or auth.default_context_loader
        return loader()

    def apply_agent(self, context: t.Any, agent_id: str) -> None:
        """Scope *context* to the agent *agent_id*, or refuse with 404.

        :raises RequestError: 404 ``agent_not_found`` when no agent loader is
            registered or it returns ``None`` (unknown, or not this user's).
        """
        agents.scope_to_agent(context, agent_id, self._agent_loader)

    # --- hook decorators ---------------------------------------------------------

    def _register(self, name: str, func: F) -> F:
        if name not in HOOK_NAMES:  # pragma: no cover - guarded by the methods below
            raise ValueError(name)
        self.hooks[name] = func
        return func

    def respond(self, func: F) -> F:
        """Register ``func(thread, user_message, context)``: yield the answer's events.

        ``user_message`` is ``None`` when the turn continues after client tool
        output or structured input.
        """
        return self._register("respond", func)

    def action(self, func: F) -> F:
        """Register ``func(thread, action, sender, context)`` for streamed custom actions."""
        return self._register("action", func)

    def sync_action(self, func: F) -> F:
        """Register ``func(thread, action, sender, context)`` for non-streamed actions.

        Return the updated item (persist it yourself) or ``None``.
        """
        return self._register("sync_action", func)

    def transcribe(self, func: F) -> F:
        """Register ``func(audio, context)`` returning the dictated text."""
        return self._register("transcribe", func)

    def feedback(self, func: F) -> F:
        """Register ``func(thread_id, item_ids, kind, context)``, called after the vote is stored."""
        return self._register("feedback", func)

    def cancel(self, func: F) -> F:
        """Register ``func(thread, pending_items, context)``, called after a stopped stream is saved."""
        return self._register("cancel", func)

    def agent_loader(self, func: F) -> F:
        """Register ``func(agent_id, context)`` returning the user's agent or ``None``.

        When the ChatKit URL carries ``?agent_id=...``, threads are listed,
        created and loaded within that agent only, and hooks find the agent in
        ``context.agent``. An unknown or foreign agent gets a 404.
        """
        self._agent_loader = func
        return func

    def context_loader(self, func: F) -> F:
        """Replace how the request context is built: return an object with a
        ``user_id`` and an ``auth`` of ``"session"`` or ``"bearer"``, or
        ``None`` for anonymous requests (401)."""
        self._context_loader = func
        return func


__all__ = ["DEFAULTS", "ChatKit", "State"]
