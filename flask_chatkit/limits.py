"""Every size limit in one place: the fixed bounds, and the errors each raises (no Flask here).

The configurable limits (``CHATKIT_MAX_REQUEST_SIZE``, ``CHATKIT_UPLOAD_MAX_BYTES``,
``CHATKIT_USER_QUOTA_BYTES``, ``CHATKIT_MAX_FILES_PER_MESSAGE``; see
:mod:`flask_chatkit.config`) are checked by the functions here, and the fixed
ones below hold whatever the configuration says. Where each is enforced:

- a request body: :func:`check_request_size` (the blueprint, before parsing);
- its JSON: :data:`MAX_JSON_CONTAINERS` (parsing), :data:`MAX_TEXT_LENGTH`,
  :data:`MAX_FEEDBACK_ITEMS` and the field lengths of :mod:`flask_chatkit.requests`;
- a message's attachments: :func:`check_files_per_message` (the server);
- an upload: :func:`file_too_large` while it is written (the storage) and
  :data:`MULTIPART_OVERHEAD` on its body, :func:`quota_exceeded` per user
  (:mod:`flask_chatkit.attachments`).
"""

from __future__ import annotations

from .errors import ErrorCode
from .errors import RequestError

#: Most JSON objects and arrays a request body may hold. Every one becomes a Python
#: object: 4 MiB of ``{},`` would otherwise be ~100 MiB of memory per request.
MAX_JSON_CONTAINERS = 50_000
#: Largest body parsed a second time to name the field at fault in an error.
MAX_REPARSED_BODY = 256 * 1024
#: Most characters of text one user message may hold (all its parts together), and
#: most in its ``quoted_text``: a 400 even when ``CHATKIT_MAX_REQUEST_SIZE`` is raised.
MAX_TEXT_LENGTH = 1_000_000
#: Largest number of ids one ``items.feedback`` request may name.
MAX_FEEDBACK_ITEMS = 1000
#: Room for multipart boundaries and headers on top of the file size limit.
MULTIPART_OVERHEAD = 64 * 1024


def request_too_large(limit: int) -> RequestError:
    """The 413 for a request body over ``CHATKIT_MAX_REQUEST_SIZE``."""
    return RequestError(
        f"The request body is larger than {limit} bytes (CHATKIT_MAX_REQUEST_SIZE).",
        code=ErrorCode.REQUEST_TOO_LARGE,
        status=413,
    )


def check_request_size(length: int | None, limit: int) -> None:
    """413 when a declared (or read) body *length* is over *limit*."""
    if length is not None and length > limit:
        raise request_too_large(limit)


def file_too_large(limit: int) -> RequestError:
    """The 413 for a file over ``CHATKIT_UPLOAD_MAX_BYTES``."""
    return RequestError(
        f"The file is larger than the limit of {limit} bytes (CHATKIT_UPLOAD_MAX_BYTES).",
        code=ErrorCode.FILE_TOO_LARGE,
        status=413,
    )


def quota_exceeded(quota: int) -> RequestError:
    """The 413 for a user whose stored attachments would pass *quota* bytes."""
    return RequestError(
        f"Your stored files would exceed {quota} bytes (CHATKIT_USER_QUOTA_BYTES); "
        "delete some attachments first.",
        code=ErrorCode.QUOTA_EXCEEDED,
        status=413,
    )


def check_files_per_message(count: int, limit: int) -> None:
    """400 when a message names more than *limit* attachments (``0``: no limit)."""
    if limit and count > limit:
        raise RequestError(
            f"A message may attach at most {limit} files "
            f"(CHATKIT_MAX_FILES_PER_MESSAGE); this one has {count}.",
            code=ErrorCode.TOO_MANY_FILES,
            field="params.input.attachments",
        )


__all__ = [
    "MAX_FEEDBACK_ITEMS",
    "MAX_JSON_CONTAINERS",
    "MAX_REPARSED_BODY",
    "MAX_TEXT_LENGTH",
    "MULTIPART_OVERHEAD",
    "check_files_per_message",
    "check_request_size",
    "file_too_large",
    "quota_exceeded",
    "request_too_large",
]
