"""The blueprint: the protocol endpoint, uploads, previews, and JSON errors.

Every check (auth, CSRF, size, JSON, params, ownership) runs before a response
starts, so streaming requests fail with a JSON 4xx instead of a broken stream
(the ChatKit client retries 5xx and non-SSE 200s, which would repeat messages).
"""

from __future__ import annotations

import json
import logging
import typing as t

from flask import Blueprint
from flask import Response
from flask import request
from flask import send_file
from werkzeug.exceptions import ClientDisconnected
from werkzeug.exceptions import HTTPException
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.routing import PathConverter
from werkzeug.wsgi import LimitedStream

from . import agents
from . import auth
from . import hosted
from . import observe
from . import reference_client
from .attachments import PREVIEW_IMAGE_TYPES
from .attachments import Attachments
from .attachments import Upload
from .attachments import base_mime_type
from .cancel import cancel_response
from .errors import ErrorCode
from .errors import NotFoundError
from .errors import RequestError
from .errors import StoreUnavailableError
from .errors import incomplete_body
from .limits import MULTIPART_OVERHEAD
from .limits import check_request_size
from .limits import file_too_large
from .limits import request_too_large
from .server import JSONResult
from .sse import SSE_HEADERS
from .sse import encode_event
from .sse import sse_response
from .storage import CHUNK_SIZE
from .turn_engine import StreamResult
from .types import ErrorEvent
from .types import dump_json

if t.TYPE_CHECKING:
    from .extension import ChatKit
    from .extension import State
    from .quotas import Refusal

logger = logging.getLogger("flask_chatkit")

#: Endpoints with no access line and no count: static files, and the scrapes.


def json_error(status: int, code: str, message: str, field: str | None = None) -> Response:
    """``{"error": {"code": ..., "message": ...}}`` with *status*."""
    error = RequestError(message, code=code, status=status, field=field)
    return Response(dump_error(error), status=status, mimetype="application/json")


def dump_error(error: RequestError) -> bytes:
    """The compact JSON body of *error*."""
    return json.dumps(error.to_dict(), separators=(",", ":")).encode()


def _read_body(limit: int) -> bytes:
    check_request_size(request.content_length, limit)
    # Bodies sent without a length (chunked) are bounded while reading. Werkzeug
    # silently truncates such a body at the limit, so allow one byte more to notice.
    request.max_content_length = limit + 1
    data = request.get_data(cache=False)
    check_request_size(len(data), limit)
    _check_complete()
    return data


def _check_complete() -> None:
    """Refuse a body that ended before its ``Content-Length`` (the client closed early).

    Servers such as gunicorn hand over what arrived and then an end of stream, so
    a cut JSON text may still parse and a multipart body is content with its
    closing boundary. Call once the body is read, before anything is stored.
    """
    declared = request.content_length
    stream = request.stream
    if declared is None or not isinstance(stream, LimitedStream):
        return  # chunked: the server saw the last chunk (else nothing counted the bytes)
    # Read what is left (bounded: the length was checked against the limit): bytes
    # after a multipart body's closing boundary belong to the body too.
    while not stream.is_exhausted and stream.read(CHUNK_SIZE):
        pass
    if stream.tell() < declared:
        raise incomplete_body(stream.tell(), declared)


class Views:
    """The blueprint's views, bound to their extension and their app's state at
    ``init_app`` (nothing is looked up at request time). Each parses the HTTP
    request, calls one method of the server or the attachments, and
    encodes what it returns."""

    def __init__(self, ext: ChatKit, state: State) -> None:
        self.ext = ext
        self.state = state
        self.observer = observe.Observer(state)

    def context(self, *, csrf: bool = True) -> t.Any:
        """The authenticated context (401 if anonymous), CSRF-checked for writes (403)."""
        context = self.ext.load_context()
        if context is None:
            raise auth.unauthorized()
        self.observer.authenticated(context)
        if csrf:
            auth.check_csrf(context, self.state.allowed_origins)
        listeners = getattr(context, "usage_listeners", None)
        if listeners is not None:  # an app's own context class may have none
            listeners.extend(self.state.usage_listeners)
        agent_id = request.args.get(agents.QUERY_PARAM)
        if agent_id is not None:
            self.ext.apply_agent(context, agent_id)
        return context

    def protocol(self) -> Response:
        """``POST /chatkit``: one ChatKit request, answered with JSON or SSE."""
        state = self.state
        context = self.context()
        try:
            result = state.server.process(_read_body(state.max_request_size), context)
        finally:  # known once parsed, also when the request is then refused
            self.observer.parsed(context)
        if isinstance(result, JSONResult):
            return Response(result.body, mimetype="application/json")
        refused = self._admit(result, context)
        if refused is not None:
            return refused
        return sse_response(
            result,
            heartbeat_interval=state.heartbeat_interval,
            detach=state.detach,
            watch=self.observer.watch(),
        )

    def _admit(self, result: StreamResult, context: t.Any) -> Response | None:
        """Check a turn against the user's rate limits and token budget: the refusal,
        or ``None`` (then the turn's tokens are metered). Every stream is a model
        turn, checked (auth, params, ownership) but not started: nothing of it is
        saved before the first event is asked for."""
        quotas = self.state.quotas
        if quotas is None:
            return None
        locale = getattr(context, "locale", None)
        refusal = quotas.admit(str(context.user_id))
        if refusal is not None:
            result.close()  # never started: closing it saves nothing
            self.observer.refused()
            return rate_limited(refusal, locale)
        listeners = getattr(context, "usage_listeners", None)
        if quotas.budget and listeners is not None:
            meter = quotas.meter(str(context.user_id), locale)
            listeners.append(meter)
            result.then(meter.notices)
        if quotas.rates:

            def give_back_if_refused(
                events: t.Generator[t.Any, None, None],
            ) -> t.Generator[t.Any, None, None]:
                try:
                    yield from events
                finally:  # the core refused the turn before it ran: it does not count
                    if getattr(context, "turn_refused", False):
                        quotas.give_back(str(context.user_id))

            result.wrap(give_back_if_refused)
        return None

    def cancel(self) -> Response:
        """``POST {prefix}/cancel``: stop the thread's running turn, wherever it runs
        (``{"thread_id": ...}``; the same auth and CSRF checks as ``/chatkit``)."""
        context = self.context()
        body = _read_body(self.state.max_request_size)
        return cancel_response(self.state.server, body, context)

    def events(self, thread_id: str) -> Response:
        """``GET {prefix}/threads/<thread_id>/events``: the thread's running turn as
        SSE, for a client that did not start it (204 when nothing runs). Wherever
        the turn runs; a client that leaves stops only its own watching."""
        context = self.context(csrf=False)  # a read
        if "\x00" in thread_id or len(thread_id) > 255:  # no thread has such an id
            raise NotFoundError("No thread with this id.")
        result = self.state.server.watch_turn(thread_id, context)
        if result is None:
            return Response(status=204)
        return sse_response(
            result,
            heartbeat_interval=self.state.heartbeat_interval,
            watch=self.observer.watch(thread_id),
        )

    def health(self) -> Response:
        """``GET {prefix}/health``: whether the store answers (see
        :func:`~flask_chatkit.observe.health_response`)."""
        return observe.health_response(self.state)

    def metrics(self) -> Response:
        """``GET {prefix}/metrics`` (``CHATKIT_METRICS``): Prometheus' text format
        (see :func:`~flask_chatkit.observe.metrics_response`)."""
        return observe.metrics_response(self.state)

    def _files(self) -> Attachments:
        files = self.state.server.attachments
        if not isinstance(files, Attachments):
            raise RequestError(
                "Attachments are not enabled.", code=ErrorCode.NOT_IMPLEMENTED, status=501
            )
        return files

    def upload(self, attachment_id: str | None = None) -> Response:
        """``POST /chatkit/upload`` (direct) or ``/chatkit/upload/<id>?token=...`` (two-phase).

        Direct uploads need the logged-in user (and CSRF checks for cookies).
        Two-phase uploads are authorised by the signed, single-use URL from
        ``attachments.create`` alone, so they work without cookies (without
        ``token``, the owner's own session or bearer token is checked like a
        direct upload). Takes a multipart ``file`` field, or for two-phase
        uploads also a raw body (``PUT``-style). Answers with the Attachment JSON.
        """
        payload: list[str] | None = None
        if attachment_id is not None and "token" in request.args:
            files = self._files()
            context, payload, _ = files.signed_context(
                attachment_id, request.args.get("token"), preview=False
            )
        else:  # direct, or the owner's own session to a pending attachment
            context = self.context()
            files = self._files()
        limit = self.state.upload_max_bytes
        if request.content_length is not None and (
            request.content_length > limit + MULTIPART_OVERHEAD
        ):
            raise file_too_large(limit)
        request.max_content_length = limit + MULTIPART_OVERHEAD
        if request.mimetype == "multipart/form-data":
            part = request.files.get("file")
            _check_complete()  # parsed: refuse a cut-short body before writing anything
            if part is None:
                raise RequestError("Send the file in a multipart field named 'file'.", field="file")
            stream = t.cast(t.BinaryIO, part.stream)
            upload = Upload(stream, part.mimetype, part.filename, _check_complete)
        elif attachment_id is not None:
            stream = t.cast(t.BinaryIO, request.stream)
            upload = Upload(stream, request.mimetype, None, _check_complete)
        else:
            raise RequestError(
                "Send the file as multipart/form-data in a field named 'file'.",
                code=ErrorCode.UNSUPPORTED_MEDIA_TYPE,
                status=415,
            )
        attachment = files.receive(upload, context, attachment_id=attachment_id, payload=payload)
        return Response(dump_json(attachment), mimetype="application/json")

    def preview(self, attachment_id: str) -> Response:
        """The bytes of an image attachment, for whoever holds its signed URL until
        it expires.

        No cookie is needed (the ChatKit iframe cannot send one); the signature
        binds the attachment and its owner, so ids cannot be guessed or swapped.
        Without ``token``, only the owner's session or bearer token gets the bytes.
        """
        expiry = self.state.preview_url_expiry
        files = self._files()
        if "token" in request.args:
            context, _, age = files.signed_context(
                attachment_id, request.args.get("token"), preview=True
            )
        else:  # the owner's session or bearer token (an <img> sends no Origin)
            context, age = self.context(csrf=False), max(expiry - 300, 0)
        handle, attachment = files.preview(attachment_id, context)
        mime = base_mime_type(attachment.mime_type)
        inline = mime in PREVIEW_IMAGE_TYPES
        response = send_file(
            handle,
            mimetype=mime if inline else "application/octet-stream",
            download_name=attachment.name,
            as_attachment=not inline,
            conditional=False,
            etag=False,
        )
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Content-Security-Policy"] = "default-src 'none'; sandbox"
        # never cached past the signature's expiry
        response.headers["Cache-Control"] = f"private, max-age={max(int(expiry - age), 0)}"
        return response

    def client_secret(self) -> Response:
        """``POST /chatkit/client_secret``: a fresh ChatKit client secret (hosted mode).

        Mints a session for the logged-in user's stable id; a body with
        ``current_client_secret`` (the ChatKit client's refresh) mints a new one
        for the same user. Answers ``{"client_secret", "expires_after", "expires_at"}``.
        """
        state = self.state
        context = self.context()
        if state.sessions is None:
            raise hosted.mode_disabled("hosted")
        refresh = hosted.parse_refresh(_read_body(state.max_request_size))
        minted = state.sessions.mint(str(context.user_id), refresh=refresh)
        response = Response(json.dumps(minted), mimetype="application/json")
        response.headers["Cache-Control"] = "no-store"
        return response

    def check_mode(self) -> None:
        """Self-hosted routes answer 404 when ``CHATKIT_SELF_HOSTED`` is off (401 if
        anonymous)."""
        endpoint = (request.endpoint or "").rsplit(".", 1)[-1]
        if (
            endpoint in ("client_secret", "not_found", "health", "metrics")
            or self.state.self_hosted
        ):
            return
        if self.ext.load_context() is None:
            raise auth.unauthorized()
        raise hosted.mode_disabled("self_hosted")

    def handle_http_exception(self, error: HTTPException) -> Response:
        if isinstance(error, ClientDisconnected):
            # Werkzeug noticed the early end first (servers that do not end the stream).
            stream = request.stream
            received = stream.tell() if isinstance(stream, LimitedStream) else 0
            return _handle_request_error(incomplete_body(received, request.content_length))
        if isinstance(error, RequestEntityTooLarge):
            if (request.endpoint or "").rsplit(".", 1)[-1] in ("upload", "upload_to"):
                # A body without Content-Length overran the upload limit while parsing.
                return _handle_request_error(file_too_large(self.state.upload_max_bytes))
            limit = request.max_content_length or 0
            return _handle_request_error(request_too_large(limit))
        code = (error.name or "error").lower().replace(" ", "_")
        return json_error(error.code or 500, code, error.description or error.name)


def rate_limited(refusal: Refusal, locale: str | None = None) -> Response:
    """The answer to a turn over ``CHATKIT_RATE_LIMITS`` or ``CHATKIT_TOKEN_BUDGET``
    (every such refusal goes through here): a stream of one ``error`` event saying,
    in the user's language, when they can write again, and ``Retry-After``.

    Status 200, as for any other stream: the ChatKit client treats a 4xx to a
    streaming request as a failed fetch and never reads its body, so a 429 would
    show a generic error instead of this message (and its 5xx and non-stream
    retries would send the message again); ``turn.too_many`` and a busy thread
    are refused the same way. ``Retry-After`` is for other clients and proxies.
    """
    event = ErrorEvent(code=ErrorCode.CUSTOM, message=refusal.message(locale), allow_retry=True)
    headers = {**SSE_HEADERS, "Retry-After": str(refusal.retry_after)}
    return Response(encode_event(event), mimetype="text/event-stream", headers=headers)


def method_not_allowed(**_: t.Any) -> Response:
    return json_error(405, ErrorCode.METHOD_NOT_ALLOWED, f"Use POST for {request.path}.")


def not_found(**_: t.Any) -> Response:
    path = request.path if len(request.path) <= 200 else request.path[:200] + "..."
    return json_error(404, ErrorCode.NOT_FOUND, f"No ChatKit endpoint at {path}.")


def _handle_request_error(error: RequestError) -> Response:
    return Response(dump_error(error), status=error.status, mimetype="application/json")


def _handle_database_error(error: Exception) -> Response:
    # Raised outside the store (e.g. by the app's user loader): still a 503.
    logger.warning("Database unavailable: %s", type(error).__name__)
    return _handle_request_error(StoreUnavailableError())


def _handle_exception(error: Exception) -> Response:
    logger.exception("Unhandled error in a ChatKit endpoint.")
    return json_error(500, ErrorCode.INTERNAL_ERROR, "The server failed to handle this request.")


class AnyPath(PathConverter):
    """A URL part that may be empty and may hold any slashes, doubled ones too."""

    regex = ".*"
    part_isolating = False


def _add_converter(setup: t.Any) -> None:
    setup.app.url_map.converters.setdefault("chatkit_any", AnyPath)


def create_blueprint(ext: ChatKit, state: State, name: str = "chatkit") -> Blueprint:
    """The blueprint with every ChatKit route, its views bound to *ext* and the
    app's *state*; mounted by :meth:`ChatKit.init_app`."""
    views = Views(ext, state)
    # static/ holds chatkit-fetch.js and the reference client's parts (static/client/),
    # served at <prefix>/static/; the client itself is those parts joined into one script
    bp = Blueprint(name, __name__, static_folder="static")
    bp.add_url_rule(
        f"{bp.static_url_path}/{reference_client.SCRIPT_NAME}",
        "client_script",
        reference_client.client_script,
        methods=["GET"],
    )
    other = ["GET", "PUT", "PATCH", "DELETE"]
    bp.add_url_rule("", "protocol", views.protocol, methods=["POST"])
    bp.add_url_rule("", "protocol_other", method_not_allowed, methods=other)
    bp.add_url_rule("/upload", "upload", views.upload, methods=["POST"])
    bp.add_url_rule("/upload/<attachment_id>", "upload_to", views.upload, methods=["POST", "PUT"])
    bp.add_url_rule(
        "/attachments/<attachment_id>/preview", "preview", views.preview, methods=["GET"]
    )
    bp.add_url_rule("/client_secret", "client_secret", views.client_secret, methods=["POST"])
    bp.add_url_rule("/cancel", "cancel", views.cancel, methods=["POST"])
    bp.add_url_rule("/health", "health", views.health, methods=["GET"])
    bp.add_url_rule("/threads/<thread_id>/events", "events", views.events, methods=["GET"])
    if state.metrics is not None:
        bp.add_url_rule("/metrics", "metrics", views.metrics, methods=["GET"])
    # Any other path under the prefix, also one with doubled or trailing slashes
    # (Werkzeug would redirect those or leave them to the app's HTML 404): JSON 404.
    bp.record_once(_add_converter)
    bp.add_url_rule(
        "/<chatkit_any:rest>",
        "not_found",
        not_found,
        methods=["GET", "POST", *other[1:]],
        merge_slashes=False,
    )
    bp.before_request(views.observer.begin)  # first: every line of the request has its id
    bp.before_request(views.check_mode)
    bp.after_request(views.observer.end)
    bp.register_error_handler(RequestError, _handle_request_error)
    bp.register_error_handler(HTTPException, views.handle_http_exception)
    bp.register_error_handler(Exception, _handle_exception)
    try:
        from sqlalchemy import exc as sa_exc
    except ImportError:  # pragma: no cover - flask-sqlalchemy is a dependency
        pass
    else:
        for cls in (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError):
            bp.register_error_handler(cls, _handle_database_error)
    return bp


__all__ = [
    "AnyPath",
    "Views",
    "create_blueprint",
    "dump_error",
    "json_error",
    "rate_limited",
]
