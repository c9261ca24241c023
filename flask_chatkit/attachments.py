"""Attachment bytes, with content checks, limits, quotas and signed URLs.

Files are named by their server-generated attachment id, never by the name the
client sent, so nothing can be written outside the storage root. Limits come
from the app config (``CHATKIT_UPLOAD_MAX_BYTES``, ``CHATKIT_ALLOWED_MIME_TYPES``,
``CHATKIT_MAX_FILES_PER_MESSAGE``, ``CHATKIT_USER_QUOTA_BYTES``).

The declared type of an upload is checked against its content while it is
stored: binary types by their magic bytes (puremagic, pure Python), text types
as UTF-8 without NUL. Two-phase upload URLs and image preview URLs carry an
itsdangerous signature made with the app's ``SECRET_KEY``: upload URLs are
bound to the attachment, the user and a one-time nonce; preview URLs to the
attachment and the user, and both expire.
"""

from __future__ import annotations

import codecs
import functools
import mimetypes
import os
import secrets
import time
import typing as t

import puremagic
from flask import current_app
from flask import has_app_context
from flask import url_for
from itsdangerous import BadSignature
from itsdangerous import SignatureExpired
from itsdangerous import TimestampSigner
from itsdangerous import URLSafeTimedSerializer

from .errors import RequestError
from .errors import file_too_large
from .storage import LocalStorage
from .storage import Storage
from .storage import check_key
from .store import AttachmentStore
from .types import AttachmentUploadDescriptor
from .types import FileAttachment
from .types import ImageAttachment

#: Image types shown inline with a preview. SVG is left out on purpose: it can carry script.
PREVIEW_IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
#: Types checked as UTF-8 text (besides every ``text/*``).
TEXT_TYPES = frozenset({"application/json", "application/x-ndjson", "application/xml"})
#: Bytes looked at to recognise a file's type.
SNIFF_BYTES = 8 * 1024
#: Other names of the same type, as magic-byte libraries and browsers spell them.
MIME_ALIASES = {
    "image/jpg": "image/jpeg",
    "image/pjpeg": "image/jpeg",
    "application/x-pdf": "application/pdf",
}
#: Leading signatures of the previewable types and PDF, recognised even in files too
#: short for the magic-byte library (the WHATWG MIME sniffing patterns).
SIGNATURES = (
    (b"\x89PNG", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"%PDF-", "application/pdf"),
)
UPLOAD_SALT = "flask-chatkit.upload"
PREVIEW_SALT = "flask-chatkit.preview"


def base_mime_type(mime_type: str) -> str:
    """``"Image/PNG; q=1"`` -> ``"image/png"``."""
    return mime_type.split(";", 1)[0].strip().lower()


def mime_allowed(mime_type: str, allowed: t.Collection[str]) -> bool:
    """Whether *mime_type* matches the allow-list (``*``, ``type/*`` or exact)."""
    base = base_mime_type(mime_type)
    major = base.split("/", 1)[0]
    return "*" in allowed or base in allowed or f"{major}/*" in allowed


def _settings() -> tuple[int, list[str]]:
    state = current_app.extensions["chatkit"].state()
    return state.upload_max_bytes, state.allowed_mime_types


def _state() -> t.Any:
    return current_app.extensions["chatkit"].state()


def quota_exceeded(quota: int) -> RequestError:
    """The 413 for a user whose stored attachments would pass *quota* bytes."""
    return RequestError(
        f"Your stored files would exceed {quota} bytes (CHATKIT_USER_QUOTA_BYTES); "
        "delete some attachments first.",
        code="quota_exceeded",
        status=413,
    )


def remaining_quota(user_id: str) -> int | None:
    """Bytes *user_id* may still store, or ``None`` without a quota."""
    state = _state()
    if not state.user_quota_bytes:
        return None
    used = state.server.store.attachment_bytes(str(user_id))
    return max(state.user_quota_bytes - used, 0)


def check_quota(user_id: str, size: int | None) -> None:
    """413 if storing *size* more bytes (or any, when unknown) passes the user's quota."""
    left = remaining_quota(user_id)
    if left is not None and (left <= 0 or (size is not None and size > left)):
        raise quota_exceeded(_state().user_quota_bytes)


def check_upload(mime_type: str, size: int | None) -> None:
    """Apply the configured limits to a declared type and size (415 / 413)."""
    limit, allowed = _settings()
    if size is not None and size > limit:
        raise file_too_large(limit)
    if not mime_allowed(mime_type, allowed):
        raise RequestError(
            f"Files of type {base_mime_type(mime_type)!r} are not accepted "
            "(CHATKIT_ALLOWED_MIME_TYPES).",
            code="unsupported_media_type",
            status=415,
        )


def unsupported(message: str) -> RequestError:
    """The 415 for content that is not what it claims to be."""
    return RequestError(message, code="unsupported_media_type", status=415)


def is_text_type(mime_type: str) -> bool:
    """Whether *mime_type* is checked as UTF-8 text rather than by magic bytes."""
    base = base_mime_type(mime_type)
    return base.startswith("text/") or base in TEXT_TYPES


def sniff(head: bytes) -> set[str]:
    """The MIME types the first bytes of a file look like (empty: not recognised)."""
    try:
        found = {m.mime_type for m in puremagic.magic_string(head) if m.mime_type}
    except (puremagic.PureError, ValueError):
        found = set()
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        found.add("image/webp")
    found.update(mime for prefix, mime in SIGNATURES if head.startswith(prefix))
    return {MIME_ALIASES.get(m, m) for m in found}


def check_content(mime_type: str, head: bytes) -> None:
    """415 unless the first bytes of a binary file match its declared type."""
    declared = MIME_ALIASES.get(base_mime_type(mime_type), base_mime_type(mime_type))
    found = sniff(head)
    if declared in found:
        return
    if found or declared.startswith("image/") or declared == "application/pdf":
        looks = ", ".join(sorted(found)) or "nothing recognisable"
        raise unsupported(
            f"The file was declared as {declared!r} but its content looks like {looks}."
        )


class CheckedStream:
    """Read *stream*, checking on the way that its content matches *mime_type*.

    Binary types are sniffed from the first :data:`SNIFF_BYTES`; text types
    must be UTF-8 without NUL all the way. A mismatch raises the 415 in
    the middle of a storage write, which then keeps nothing.
    """

    def __init__(self, stream: t.BinaryIO, mime_type: str) -> None:
        self.stream = stream
        self.mime_type = base_mime_type(mime_type)
        self.started = False
        self.decoder = codecs.getincrementaldecoder("utf-8")() if is_text_type(mime_type) else None

    def read(self, size: int = -1) -> bytes:
        if not self.started:
            self.started = True
            chunk = b""
            while len(chunk) < SNIFF_BYTES and (more := self.stream.read(SNIFF_BYTES - len(chunk))):
                chunk += more
            if self.decoder is None:
                check_content(self.mime_type, chunk)
        else:
            chunk = self.stream.read(size)
        if self.decoder is not None:
            if b"\x00" in chunk:
                raise unsupported(
                    f"The file was declared as {self.mime_type!r} but holds NUL bytes."
                )
            try:
                self.decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError:
                raise unsupported(
                    f"The file was declared as {self.mime_type!r} but is not UTF-8 text."
                ) from None
        return chunk


@functools.lru_cache(maxsize=None)
def _rounding_signer(step: int) -> type[TimestampSigner]:
    class RoundingSigner(TimestampSigner):
        def get_timestamp(self) -> int:
            now = int(time.time())
            return now - now % step

    return RoundingSigner


def _serializer(salt: str, step: int = 1) -> URLSafeTimedSerializer:
    secret = current_app.secret_key
    if not secret:
        raise RuntimeError("flask_chatkit signs upload and preview URLs: set SECRET_KEY.")
    return URLSafeTimedSerializer(secret, salt=salt, signer=_rounding_signer(step))


def upload_token(attachment_id: str, user_id: str, nonce: str) -> str:
    """The signature of a two-phase upload URL."""
    return _serializer(UPLOAD_SALT).dumps([attachment_id, str(user_id), nonce])


def preview_url(attachment_id: str, user_id: str) -> str:
    """An absolute, signed and expiring URL of an image attachment's bytes.

    The signing time is rounded down (to a tenth of the lifetime, at most a
    minute), so the URL stays the same for a while and browsers can cache it;
    it expires early rather than late.
    """
    step = max(1, min(60, int(_state().preview_url_expiry // 10)))
    token = _serializer(PREVIEW_SALT, step).dumps([attachment_id, str(user_id)])
    return url_for("chatkit.preview", attachment_id=attachment_id, token=token, _external=True)


def read_token(
    salt: str, token: str | None, attachment_id: str, max_age: float
) -> tuple[list[str], float]:
    """The signed payload of a URL for *attachment_id* and its age in seconds.

    :raises RequestError: 404 without a token, 403 if it is forged, altered,
        expired or made for another attachment.
    """
    if not token:
        raise RequestError("This URL needs its signature (token).", code="not_found", status=404)
    try:
        payload, signed_at = _serializer(salt).loads(token, max_age=max_age, return_timestamp=True)
    except SignatureExpired:
        raise RequestError("This signed URL has expired.", code="url_expired", status=403) from None
    except BadSignature:
        raise RequestError(
            "This URL's signature is not valid.", code="forbidden", status=403
        ) from None
    if not isinstance(payload, list) or not payload or payload[0] != attachment_id:
        raise RequestError("This URL's signature is not valid.", code="forbidden", status=403)
    return payload, max(time.time() - signed_at.timestamp(), 0.0)


def build_attachment(
    attachment_id: str,
    name: str,
    mime_type: str,
    metadata: dict[str, t.Any],
    user_id: str | None = None,
) -> FileAttachment | ImageAttachment:
    """An attachment record; images get a signed ``preview_url`` served by the blueprint."""
    mime = base_mime_type(mime_type)
    if mime in PREVIEW_IMAGE_TYPES:
        preview = preview_url(attachment_id, user_id or "")
        return ImageAttachment(
            id=attachment_id, name=name, mime_type=mime, preview_url=preview, metadata=metadata
        )
    return FileAttachment(id=attachment_id, name=name, mime_type=mime, metadata=metadata)


def clean_name(name: str | None, mime_type: str) -> str:
    """A display name without path parts or control characters."""
    name = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isprintable()).strip()[:255]
    if not name or name in (".", ".."):
        name = "file" + (mimetypes.guess_extension(base_mime_type(mime_type)) or "")
    return name


class LocalAttachmentStore(AttachmentStore[t.Any]):
    """Attachment bytes in a :class:`~flask_chatkit.storage.Storage`, keyed by attachment id.

    :param folder: the folder of the default :class:`~flask_chatkit.storage.LocalStorage`
        (``CHATKIT_ATTACHMENTS_FOLDER`` by default).
    :param storage: another storage backend (e.g. ``S3Storage``), instead of a folder.
    """

    def __init__(
        self, folder: str | os.PathLike[str] | None = None, *, storage: Storage | None = None
    ) -> None:
        if folder is not None and storage is not None:
            raise ValueError("Pass either folder= or storage=, not both.")
        self.storage = storage if storage is not None else LocalStorage(folder)

    def create_attachment(self, params: t.Any, context: t.Any) -> t.Any:
        """Start a two-phase upload: the record, and where to send the bytes."""
        check_upload(params.mime_type, params.size)
        check_quota(context.user_id, params.size)
        store = current_app.extensions["chatkit"].server.store
        attachment_id = store.generate_attachment_id(params.mime_type, context)
        nonce = secrets.token_urlsafe(16)
        attachment = build_attachment(
            attachment_id,
            clean_name(params.name, params.mime_type),
            params.mime_type,
            {"upload_pending": True, "declared_size": params.size, "upload_nonce": nonce},
            context.user_id,
        )
        token = upload_token(attachment_id, context.user_id, nonce)
        attachment.upload_descriptor = AttachmentUploadDescriptor(
            url=url_for(
                "chatkit.upload_to", attachment_id=attachment_id, token=token, _external=True
            ),
            method="POST",
        )
        return attachment

    def write(
        self,
        attachment_id: str,
        stream: t.BinaryIO,
        mime_type: str | None = None,
        user_id: str | None = None,
    ) -> int:
        """Store *stream* as the attachment's bytes, enforcing while reading the size
        limit, the user's quota (with *user_id*) and that the content is *mime_type*."""
        limit, _ = _settings()
        left = remaining_quota(user_id) if user_id is not None else None
        if left is not None and left <= 0:
            raise quota_exceeded(_state().user_quota_bytes)
        bound = limit if left is None else min(limit, left)
        if mime_type is not None:
            stream = t.cast(t.BinaryIO, CheckedStream(stream, mime_type))
        try:
            return self.storage.write(_key(attachment_id), stream, limit=bound)
        except RequestError as exc:
            if exc.status == 413 and bound < limit:
                raise quota_exceeded(_state().user_quota_bytes) from None
            raise

    def open(self, attachment_id: str) -> t.BinaryIO:
        """The attachment's bytes for reading; :class:`FileNotFoundError` if there are none."""
        return self.storage.open(_key(attachment_id))

    def refresh(self, attachment: t.Any, context: t.Any) -> None:
        """Sign an image's preview URL afresh (they expire)."""
        if attachment.type == "image" and has_app_context():
            attachment.preview_url = preview_url(attachment.id, context.user_id)

    def delete_attachment(self, attachment: t.Any, context: t.Any) -> None:
        """Remove the bytes, if any."""
        self.storage.delete(_key(attachment.id))


def _key(attachment_id: str) -> str:
    try:
        return check_key(attachment_id)
    except ValueError:
        raise RequestError("Invalid attachment id.", field="attachment_id") from None


__all__ = [
    "CheckedStream",
    "LocalAttachmentStore",
    "check_content",
    "check_quota",
    "check_upload",
    "clean_name",
    "file_too_large",
    "mime_allowed",
    "preview_url",
    "sniff",
]
