"""Errors of the protocol core.

Two families:

* :class:`RequestError` and its subclasses are raised *before* a response starts
  (parsing, lookups, limits). The blueprint renders them as
  ``{"error": {"code": ..., "message": ...}}`` with their HTTP status.
* :class:`StreamError` and :class:`CustomStreamError` are raised by hooks *while*
  streaming; the server turns them into one ``error`` event.
"""

from __future__ import annotations

import enum
import typing as t


class ChatKitError(Exception):
    """Base class of every flask_chatkit error."""


class ErrorCode(enum.StrEnum):
    """Every error code flask_chatkit sends: in ``error`` stream events and in
    JSON error bodies (``{"error": {"code": ...}}``). Apps may send others.
    """

    AGENT_NOT_FOUND = "agent_not_found"
    CSRF_FAILED = "csrf_failed"
    CUSTOM = "custom"
    FILE_TOO_LARGE = "file_too_large"
    FORBIDDEN = "forbidden"
    HOSTED_MODE_DISABLED = "hosted_mode_disabled"
    INCOMPLETE_BODY = "incomplete_body"
    INTERNAL_ERROR = "internal_error"
    INVALID_JSON = "invalid_json"
    INVALID_REQUEST = "invalid_request"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    NOT_FOUND = "not_found"
    NOT_IMPLEMENTED = "not_implemented"
    QUOTA_EXCEEDED = "quota_exceeded"
    REQUEST_TOO_COMPLEX = "request_too_complex"
    REQUEST_TOO_LARGE = "request_too_large"
    SELF_HOSTED_MODE_DISABLED = "self_hosted_mode_disabled"
    STREAM_ERROR = "stream.error"
    TOO_MANY_FILES = "too_many_files"
    UNAUTHORIZED = "unauthorized"
    UNKNOWN_REQUEST_TYPE = "unknown_request_type"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    UPSTREAM_ERROR = "upstream_error"
    UPSTREAM_TIMEOUT = "upstream_timeout"
    UPSTREAM_UNREACHABLE = "upstream_unreachable"
    URL_EXPIRED = "url_expired"


class StreamError(ChatKitError):
    """A coded error sent to the client as ``{"type":"error","code":...}``.

    :param code: the error code, an :class:`ErrorCode` or any string.
    :param allow_retry: whether the client offers a retry button.
    """

    def __init__(self, code: ErrorCode | str, *, allow_retry: bool = False) -> None:
        self.code = code.value if isinstance(code, ErrorCode) else code
        self.allow_retry = allow_retry
        super().__init__(self.code)


class CustomStreamError(ChatKitError):
    """An error whose message is shown to the user (``code: "custom"``).

    :param message: the text shown in the chat.
    :param allow_retry: whether the client offers a retry button.
    """

    def __init__(self, message: str, *, allow_retry: bool = False) -> None:
        self.message = message
        self.allow_retry = allow_retry
        super().__init__(message)


class RequestError(ChatKitError):
    """A request that cannot be served; becomes a JSON error response.

    :param message: a human-readable explanation, safe to show to the client.
    :param code: a stable machine-readable code.
    :param status: the HTTP status code.
    :param field: the request field at fault, if any (``params.thread_id``).
    """

    status: t.ClassVar[int] = 400
    code: str = ErrorCode.INVALID_REQUEST

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        field: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status  # type: ignore[misc]
        self.field = field

    def to_dict(self) -> dict[str, t.Any]:
        """The JSON error body."""
        error: dict[str, t.Any] = {"code": self.code, "message": self.message}
        if self.field is not None:
            error["field"] = self.field
        return {"error": error}


class NotFoundError(RequestError):
    """A thread, item or attachment that does not exist *for this user*."""

    status = 404
    code = "not_found"


class ConflictError(RequestError):
    """The request does not fit the thread's state (no pending tool call, ...)."""

    status = 409
    code = "conflict"


class StoreUnavailableError(RequestError):
    """The database (or other storage) cannot be reached right now."""

    status = 503
    code = "store_unavailable"

    def __init__(
        self, message: str = "The database is unavailable right now; try again in a moment."
    ) -> None:
        super().__init__(message)


class NotImplementedHookError(RequestError):
    """The app has not provided the hook this request needs."""

    status = 501
    code = "not_implemented"


def incomplete_body(received: int, declared: int | None) -> RequestError:
    """The 400 for a body that ended before its ``Content-Length`` (the client closed early)."""
    expected = f"the {declared} bytes" if declared is not None else "the end"
    return RequestError(
        f"The request body ended after {received} bytes, before {expected} its "
        "Content-Length announced; nothing was stored. Send the whole request again.",
        code=ErrorCode.INCOMPLETE_BODY,
    )


__all__ = [
    "ChatKitError",
    "ConflictError",
    "CustomStreamError",
    "ErrorCode",
    "NotFoundError",
    "NotImplementedHookError",
    "RequestError",
    "StoreUnavailableError",
    "StreamError",
    "incomplete_body",
]
