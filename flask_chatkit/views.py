"""The blueprint: the protocol endpoint, uploads, previews, and JSON errors.

Every check (auth, CSRF, size, JSON, params, ownership) runs before a response
starts, so streaming requests fail with a JSON 4xx instead of a broken stream
(the ChatKit client retries 5xx and non-SSE 200s, which would repeat messages).
"""

from __future__ import annotations

import json
import logging
import mimetypes
import typing as t

from flask import Blueprint
from flask import Response
from flask import current_app
from flask import request
from flask import send_file
from werkzeug.exceptions import ClientDisconnected
from werkzeug.exceptions import HTTPException
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.wsgi import LimitedStream

from . import auth
from . import hosted
from . import reference_client
from .attachments import base_mime_type
from .attachments import build_attachment
from .attachments import check_upload
from .attachments import clean_name
from .cancel import cancel_response
from .errors import ConflictError
from .errors import NotFoundError
from .errors import RequestError
from .errors import StoreUnavailableError
from .errors import file_too_large
from .errors import incomplete_body
from .server import JSONResult
from .server import parse_request
from .sse import sse_response
from .storage import CHUNK_SIZE
from .types import dump_json

if t.TYPE_CHECKING:
    from .extension import ChatKit

logger = logging.getLogger("flask_chatkit")

#: Room for multipart boundaries and headers on top of the file size limit.
MULTIPART_OVERHEAD = 64 * 1024


def json_error(status: int, code: str, message: str, field: str | None = None) -> Response:
    """``{"error": {"code": ..., "message": ...}}`` with *status*."""
    error = RequestError(message, code=code, status=status, field=field)
    return Response(dump_error(error), status=status, mimetype="application/json")


def dump_error(error: RequestError) -> bytes:
    """The compact JSON body of *error*."""
    return json.dumps(error.to_dict(), separators=(",", ":")).encode()


def _ext() -> ChatKit:
    return current_app.extensions["chatkit"]  # type: ignore[no-any-return]


def _context(*, csrf: bool = True) -> t.Any:
    """The authenticated context (401 if anonymous), CSRF-checked for writes (403)."""
    ext = _ext()
    context = ext.load_context()
    if context is None:
        raise auth.unauthorized()
    if csrf:
        auth.check_csrf(context, ext.state().allowed_origins)
    agent_id = request.args.get("agent_id")
    if agent_id is not None:
        ext.apply_agent(context, agent_id)
    return context


def _read_body(limit: int) -> bytes:
    if request.content_length is not None and request.content_length > limit:
        raise _request_too_large(limit)
    # Bodies sent without a length (chunked) are bounded while reading. Werkzeug
    # silently truncates such a body at the limit, so allow one byte more to notice.
    request.max_content_length = limit + 1
    data = request.get_data(cache=False)
    if len(data) > limit:
        raise _request_too_large(limit)
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


def _request_too_large(limit: int) -> RequestError:
    return RequestError(
        f"The request body is larger than {limit} bytes (CHATKIT_MAX_REQUEST_SIZE).",
        code="request_too_large",
        status=413,
    )


def protocol() -> Response:
    """``POST /chatkit``: one ChatKit request, answered with JSON or SSE."""
    ext = _ext()
    state = ext.state()
    context = _context()
    req = parse_request(_read_body(state.max_request_size))
    if hasattr(context, "metadata"):
        context.metadata = req.metadata
    result = state.server.handle(req, context)
    if isinstance(result, JSONResult):
        return Response(result.body, mimetype="application/json")
    return sse_response(
        result, heartbeat_interval=state.heartbeat_interval, detach=state.detach
    )


def cancel() -> Response:
    """``POST {prefix}/cancel``: stop the thread's running turn, wherever it runs
    (``{"thread_id": ...}``; the same auth and CSRF checks as ``/chatkit``)."""
    state = _ext().state()
    context = _context()
    return cancel_response(state.server, _read_body(state.max_request_size), context)


def events(thread_id: str) -> Response:
    """``GET {prefix}/threads/<thread_id>/events``: the thread's running turn as
    SSE, for a client that did not start it (204 when nothing runs). Wherever the
    turn runs; a client that leaves stops only its own watching."""
    state = _ext().state()
    context = _context(csrf=False)  # a read
    if "\x00" in thread_id or len(thread_id) > 255:  # no thread has such an id
        raise NotFoundError("No thread with this id.")
    result = state.server.watch_turn(thread_id, context)
    if result is None:
        return Response(status=204)
    return sse_response(result, heartbeat_interval=state.heartbeat_interval)


def _url_attachment(store: t.Any, attachment_id: str, context: t.Any) -> t.Any:
    """The user's attachment named in the URL (404 when missing)."""
    if "\x00" in attachment_id:  # no id holds NUL (PostgreSQL text cannot store it)
        raise NotFoundError(f"No attachment with id {attachment_id!r}.")
    if len(attachment_id) > 255:  # longer than any id; not echoed back
        raise NotFoundError("No attachment with this id.")
    return store.load_attachment(attachment_id, context)


def _token_context(attachment_id: str, salt: str, max_age: float) -> tuple[t.Any, list[str], float]:
    """The context of the user a signed URL was made for (no cookie needed)."""
    from .attachments import read_token
    from .server import RequestContext

    payload, age = read_token(salt, request.args.get("token"), attachment_id, max_age)
    return RequestContext(user_id=str(payload[1])), payload, age


def upload(attachment_id: str | None = None) -> Response:
    """``POST /chatkit/upload`` (direct) or ``/chatkit/upload/<id>?token=...`` (two-phase).

    Direct uploads need the logged-in user (and CSRF checks for cookies). Two-phase
    uploads are authorised by the signed, single-use URL from ``attachments.create``
    alone, so they work without cookies (without ``token``, the owner's own
    session or bearer token is checked like a direct upload). Takes a multipart
    ``file`` field, or for
    two-phase uploads also a raw body (``PUT``-style). Answers with the Attachment JSON.
    """
    from .attachments import UPLOAD_SALT

    ext = _ext()
    state = ext.state()
    store = state.server.store
    files = state.server.attachment_store
    existing = None
    payload: list[str] | None = None
    if attachment_id is not None and "token" in request.args:
        context, payload, _ = _token_context(attachment_id, UPLOAD_SALT, state.upload_url_expiry)
    else:  # direct, or the owner's own session to a pending attachment
        context = _context()
    if files is None:
        raise RequestError("Attachments are not enabled.", code="not_implemented", status=501)
    limit = state.upload_max_bytes
    if request.content_length is not None and request.content_length > limit + MULTIPART_OVERHEAD:
        raise file_too_large(limit)
    request.max_content_length = limit + MULTIPART_OVERHEAD

    if attachment_id is not None:
        existing = _url_attachment(store, attachment_id, context)
        meta = existing.metadata or {}
        if not meta.get("upload_pending"):
            raise ConflictError(
                f"Attachment {attachment_id!r} was already uploaded; upload URLs work once."
            )
        if payload is not None and (len(payload) < 3 or meta.get("upload_nonce") != payload[2]):
            raise RequestError(
                "This upload URL is not the current one for the attachment.",
                code="forbidden",
                status=403,
            )

    if request.mimetype == "multipart/form-data":
        part = request.files.get("file")
        _check_complete()  # parsed: refuse a cut-short body before writing anything
        if part is None:
            raise RequestError("Send the file in a multipart field named 'file'.", field="file")
        stream: t.BinaryIO = part.stream
        mime = part.mimetype or ""
        name = part.filename
    elif existing is not None:
        stream = request.stream
        mime = request.mimetype
        name = None
    else:
        raise RequestError(
            "Send the file as multipart/form-data in a field named 'file'.",
            code="unsupported_media_type",
            status=415,
        )

    if existing is not None:
        mime = existing.mime_type
        name = existing.name
    elif not mime or mime == "application/octet-stream":
        mime = (name and mimetypes.guess_type(name)[0]) or "application/octet-stream"
    check_upload(mime, None)

    if existing is None:
        attachment_id = store.generate_attachment_id(mime, context)
    assert attachment_id is not None
    size = files.write(  # type: ignore[attr-defined]
        attachment_id, stream, mime_type=mime, user_id=context.user_id
    )
    attachment = build_attachment(
        attachment_id,
        clean_name(name, mime),
        base_mime_type(mime),
        {"size": size},
        context.user_id,
    )
    if existing is not None:
        attachment.thread_id = existing.thread_id
    try:
        _check_complete()  # a raw body has only now been read to its end
        store.save_attachment(attachment, context)
    except Exception:
        files.delete_attachment(attachment, context)  # leave no orphaned or partial bytes
        raise
    return Response(dump_json(attachment), mimetype="application/json")


def preview(attachment_id: str) -> Response:
    """The bytes of an image attachment, for whoever holds its signed URL until it expires.

    No cookie is needed (the ChatKit iframe cannot send one); the signature binds
    the attachment and its owner, so ids cannot be guessed or swapped. Without
    ``token``, only the owner's session or bearer token gets the bytes.
    """
    from .attachments import PREVIEW_IMAGE_TYPES
    from .attachments import PREVIEW_SALT

    state = _ext().state()
    expiry = state.preview_url_expiry
    signed = "token" in request.args
    if signed:
        context, _, age = _token_context(attachment_id, PREVIEW_SALT, expiry)
    else:  # the owner's session or bearer token (an <img> sends no Origin)
        context, age = _context(csrf=False), max(expiry - 300, 0)
    attachment = _url_attachment(state.server.store, attachment_id, context)
    files = state.server.attachment_store
    if attachment.type != "image" or files is None:
        raise RequestError("This attachment has no preview.", code="not_found", status=404)
    try:
        handle = files.open(attachment.id)  # type: ignore[attr-defined]
    except FileNotFoundError:
        raise RequestError("This attachment has no bytes yet.", code="not_found", status=404)
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


def client_secret() -> Response:
    """``POST /chatkit/client_secret``: a fresh ChatKit client secret (hosted mode).

    Mints a session for the logged-in user's stable id; a body with
    ``current_client_secret`` (the ChatKit client's refresh) mints a new one
    for the same user. Answers ``{"client_secret", "expires_after", "expires_at"}``.
    """
    state = _ext().state()
    context = _context()
    if state.sessions is None:
        raise hosted.mode_disabled("hosted")
    refresh = hosted.parse_refresh(_read_body(state.max_request_size))
    minted = state.sessions.mint(str(context.user_id), refresh=refresh)
    response = Response(json.dumps(minted), mimetype="application/json")
    response.headers["Cache-Control"] = "no-store"
    return response


def _check_mode() -> None:
    """Self-hosted routes answer 404 when ``CHATKIT_SELF_HOSTED`` is off (401 if anonymous)."""
    endpoint = (request.endpoint or "").rsplit(".", 1)[-1]
    if endpoint in ("client_secret", "not_found") or _ext().state().self_hosted:
        return
    if _ext().load_context() is None:
        raise auth.unauthorized()
    raise hosted.mode_disabled("self_hosted")


def method_not_allowed(**_: t.Any) -> Response:
    return json_error(405, "method_not_allowed", f"Use POST for {request.path}.")


def not_found(**_: t.Any) -> Response:
    path = request.path if len(request.path) <= 200 else request.path[:200] + "..."
    return json_error(404, "not_found", f"No ChatKit endpoint at {path}.")


def _handle_request_error(error: RequestError) -> Response:
    return Response(dump_error(error), status=error.status, mimetype="application/json")


def _handle_http_exception(error: HTTPException) -> Response:
    if isinstance(error, ClientDisconnected):
        # Werkzeug noticed the early end first (servers that do not end the stream).
        stream = request.stream
        received = stream.tell() if isinstance(stream, LimitedStream) else 0
        return _handle_request_error(incomplete_body(received, request.content_length))
    if isinstance(error, RequestEntityTooLarge):
        if (request.endpoint or "").rsplit(".", 1)[-1] in ("upload", "upload_to"):
            # A body without Content-Length overran the upload limit while parsing.
            return _handle_request_error(file_too_large(_ext().state().upload_max_bytes))
        limit = request.max_content_length or 0
        return _handle_request_error(_request_too_large(limit))
    code = (error.name or "error").lower().replace(" ", "_")
    return json_error(error.code or 500, code, error.description or error.name)


def _handle_database_error(error: Exception) -> Response:
    # Raised outside the store (e.g. by the app's user loader): still a 503.
    logger.warning("Database unavailable: %s", type(error).__name__)
    return _handle_request_error(
        StoreUnavailableError()
    )


def _handle_exception(error: Exception) -> Response:
    logger.exception("Unhandled error in a ChatKit endpoint.")
    return json_error(500, "internal_error", "The server failed to handle this request.")


def create_blueprint(name: str = "chatkit") -> Blueprint:
    """The blueprint with every ChatKit route; mounted by :meth:`ChatKit.init_app`."""
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
    bp.add_url_rule("", "protocol", protocol, methods=["POST"])
    bp.add_url_rule("", "protocol_other", method_not_allowed, methods=other)
    bp.add_url_rule("/upload", "upload", upload, methods=["POST"])
    bp.add_url_rule("/upload/<attachment_id>", "upload_to", upload, methods=["POST", "PUT"])
    bp.add_url_rule(
        "/attachments/<attachment_id>/preview", "preview", preview, methods=["GET"]
    )
    bp.add_url_rule("/client_secret", "client_secret", client_secret, methods=["POST"])
    bp.add_url_rule("/cancel", "cancel", cancel, methods=["POST"])
    bp.add_url_rule("/threads/<thread_id>/events", "events", events, methods=["GET"])
    bp.add_url_rule("/<path:rest>", "not_found", not_found, methods=["GET", "POST", *other[1:]])
    bp.before_request(_check_mode)
    bp.register_error_handler(RequestError, _handle_request_error)
    bp.register_error_handler(HTTPException, _handle_http_exception)
    bp.register_error_handler(Exception, _handle_exception)
    try:
        from sqlalchemy import exc as sa_exc
    except ImportError:  # pragma: no cover - flask-sqlalchemy is a dependency
        pass
    else:
        for cls in (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError):
            bp.register_error_handler(cls, _handle_database_error)
    return bp


__all__ = ["create_blueprint", "json_error"]
