"""Attachment bytes, with content checks, limits, quotas and signed URLs.

Files are named by their server-generated attachment id, never by the name the
client sent, so nothing can be written outside the storage root. Limits, URL
lifetimes, the signing key and the URL builder are bound once, at ``init_app``
(:class:`AttachmentRules`, see :meth:`Attachments.bind`): nothing here
imports Flask or looks for an app at run time.

The declared type of an upload is checked against its content while it is
stored: binary types by their magic bytes (puremagic, pure Python), text types
as UTF-8 without NUL. Two-phase upload URLs and image preview URLs carry an
itsdangerous signature made with the app's ``SECRET_KEY``: upload URLs are
bound to the attachment, the user and a one-time nonce; preview URLs to the
attachment and the user, and both expire.
"""

from __future__ import annotations

import codecs
import dataclasses
import functools
import mimetypes
import os
import secrets
import time
import typing as t

import puremagic
from itsdangerous import BadSignature
from itsdangerous import SignatureExpired
from itsdangerous import TimestampSigner
from itsdangerous import URLSafeTimedSerializer

from .errors import ConflictError
from .errors import ErrorCode
from .errors import NotFoundError
from .errors import RequestError
from .limits import file_too_large
from .limits import quota_exceeded
from .storage import LocalStorage
from .storage import Storage
from .storage import check_key
from .store import Store
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


def unsupported(message: str) -> RequestError:
    """The 415 for content that is not what it claims to be."""
    return RequestError(message, code=ErrorCode.UNSUPPORTED_MEDIA_TYPE, status=415)


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


@functools.cache
def _rounding_signer(step: int) -> type[TimestampSigner]:
    class RoundingSigner(TimestampSigner):
        def get_timestamp(self) -> int:
            now = int(time.time())
            return now - now % step

    return RoundingSigner


@dataclasses.dataclass
class AttachmentRules:
    """What attachments are held to, bound once at ``init_app`` (no Flask at run time).

    :param records: the store of attachment records (ids, the quota's bytes).
    :param secret_key: what signs upload and preview URLs (the app's ``SECRET_KEY``),
        asked when signing.
    :param url_for: the absolute URL of one of the blueprint's endpoints,
        ``url_for("preview", attachment_id=..., token=...)`` (the web layer's).
    """

    records: Store[t.Any]
    secret_key: t.Callable[[], str | bytes | None]
    url_for: t.Callable[..., str]
    max_bytes: int = 25 * 1024 * 1024
    allowed_mime_types: t.Sequence[str] = ("*",)
    quota_bytes: int = 0
    upload_url_expiry: float = 15 * 60
    preview_url_expiry: float = 60 * 60

    def check_upload(self, mime_type: str, size: int | None) -> None:
        """Apply the limits to a declared type and size (415 / 413)."""
        if size is not None and size > self.max_bytes:
            raise file_too_large(self.max_bytes)
        if not mime_allowed(mime_type, self.allowed_mime_types):
            raise RequestError(
                f"Files of type {base_mime_type(mime_type)!r} are not accepted "
                "(CHATKIT_ALLOWED_MIME_TYPES).",
                code=ErrorCode.UNSUPPORTED_MEDIA_TYPE,
                status=415,
            )

    def remaining_quota(self, user_id: str) -> int | None:
        """Bytes *user_id* may still store, or ``None`` without a quota."""
        if not self.quota_bytes:
            return None
        return max(self.quota_bytes - self.records.attachment_bytes(str(user_id)), 0)

    def check_quota(self, user_id: str, size: int | None) -> None:
        """413 if storing *size* more bytes (or any, when unknown) passes the user's quota."""
        left = self.remaining_quota(user_id)
        if left is not None and (left <= 0 or (size is not None and size > left)):
            raise quota_exceeded(self.quota_bytes)

    def _serializer(self, salt: str, step: int = 1) -> URLSafeTimedSerializer:
        secret = self.secret_key()
        if not secret:
            raise RuntimeError("flask_chatkit signs upload and preview URLs: set SECRET_KEY.")
        return URLSafeTimedSerializer(secret, salt=salt, signer=_rounding_signer(step))

    def upload_url(self, attachment_id: str, user_id: str, nonce: str) -> str:
        """The signed, single-use URL of a two-phase upload."""
        token = self._serializer(UPLOAD_SALT).dumps([attachment_id, str(user_id), nonce])
        return self.url_for("upload_to", attachment_id=attachment_id, token=token)

    def preview_url(self, attachment_id: str, user_id: str) -> str:
        """An absolute, signed and expiring URL of an image attachment's bytes.

        The signing time is rounded down (to a tenth of the lifetime, at most a
        minute), so the URL stays the same for a while and browsers can cache
        it; it expires early rather than late.
        """
        step = max(1, min(60, int(self.preview_url_expiry // 10)))
        token = self._serializer(PREVIEW_SALT, step).dumps([attachment_id, str(user_id)])
        return self.url_for("preview", attachment_id=attachment_id, token=token)

    def read_token(
        self, salt: str, token: str | None, attachment_id: str, max_age: float
    ) -> tuple[list[str], float]:
        """The signed payload of a URL for *attachment_id* and its age in seconds.

        :raises RequestError: 404 without a token, 403 if it is forged, altered,
            expired or made for another attachment.
        """
        if not token:
            raise RequestError(
                "This URL needs its signature (token).", code=ErrorCode.NOT_FOUND, status=404
            )
        try:
            payload, signed_at = self._serializer(salt).loads(
                token,
                max_age=t.cast(int, max_age),
                return_timestamp=True,  # seconds, may be float
            )
        except SignatureExpired:
            raise RequestError(
                "This signed URL has expired.", code=ErrorCode.URL_EXPIRED, status=403
            ) from None
        except BadSignature:
            raise RequestError(
                "This URL's signature is not valid.", code=ErrorCode.FORBIDDEN, status=403
            ) from None
        if not isinstance(payload, list) or not payload or payload[0] != attachment_id:
            raise RequestError(
                "This URL's signature is not valid.", code=ErrorCode.FORBIDDEN, status=403
            )
        return payload, max(time.time() - signed_at.timestamp(), 0.0)

    def build_attachment(
        self,
        attachment_id: str,
        name: str,
        mime_type: str,
        metadata: dict[str, t.Any],
        user_id: str | None = None,
    ) -> FileAttachment | ImageAttachment:
        """An attachment record; images get a signed ``preview_url`` served by the blueprint."""
        mime = base_mime_type(mime_type)
        if mime in PREVIEW_IMAGE_TYPES:
            preview = self.preview_url(attachment_id, user_id or "")
            return ImageAttachment(
                id=attachment_id,
                name=name,
                mime_type=mime,
                preview_url=preview,
                metadata=metadata,
            )
        return FileAttachment(id=attachment_id, name=name, mime_type=mime, metadata=metadata)


def clean_name(name: str | None, mime_type: str) -> str:
    """A display name without path parts or control characters."""
    name = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isprintable()).strip()[:255]
    if not name or name in (".", ".."):
        name = "file" + (mimetypes.guess_extension(base_mime_type(mime_type)) or "")
    return name


@dataclasses.dataclass
class Upload:
    """The bytes of an upload as the web layer received them."""

    stream: t.BinaryIO
    #: The declared type (the multipart part's or the body's), if any.
    mime_type: str | None = None
    #: The client's file name, if any (cleaned before it is kept).
    name: str | None = None
    #: Called once the bytes are stored, before the record is: raises if the
    #: request's body turned out incomplete (nothing is then kept).
    complete: t.Callable[[], None] = lambda: None


class Attachments:
    """The attachment service: uploads (direct and two-phase), previews and
    deletion, over a :class:`~flask_chatkit.storage.Storage` that holds the
    bytes keyed by attachment id; the :class:`~flask_chatkit.store.Store` keeps
    the records.

    Its :class:`AttachmentRules` (limits, URL lifetimes, signing, URLs) are bound by
    :meth:`bind`, which ``init_app`` calls. Subclass it to change a step (e.g.
    :meth:`create_attachment` to upload straight to another service).

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
        self._rules: AttachmentRules | None = None

    def bind(self, rules: AttachmentRules, *, folder: str | None = None) -> None:
        """Hold attachments to *rules*; *folder* is the default storage's folder
        when none was given."""
        self._rules = rules
        if isinstance(self.storage, LocalStorage) and self.storage.folder is None:
            self.storage.folder = folder

    @property
    def rules(self) -> AttachmentRules:
        if self._rules is None:
            raise RuntimeError(
                "These attachments have no rules yet: ChatKit.init_app binds them "
                "(or call bind(AttachmentRules(...)) yourself)."
            )
        return self._rules

    def create_attachment(self, params: t.Any, context: t.Any) -> t.Any:
        """Start a two-phase upload: the record, with an ``upload_descriptor``
        saying where to send the bytes.

        :param params: the ``attachments.create`` params (``name``, ``size``, ``mime_type``).
        """
        rules = self.rules
        rules.check_upload(params.mime_type, params.size)
        rules.check_quota(context.user_id, params.size)
        attachment_id = rules.records.generate_attachment_id(params.mime_type, context)
        nonce = secrets.token_urlsafe(16)
        attachment = rules.build_attachment(
            attachment_id,
            clean_name(params.name, params.mime_type),
            params.mime_type,
            {"upload_pending": True, "declared_size": params.size, "upload_nonce": nonce},
            context.user_id,
        )
        attachment.upload_descriptor = AttachmentUploadDescriptor(
            url=rules.upload_url(attachment_id, context.user_id, nonce), method="POST"
        )
        return attachment

    def signed_context(
        self, attachment_id: str, token: str | None, *, preview: bool
    ) -> tuple[t.Any, list[str], float]:
        """The context of the user a signed upload or preview URL was made for (no
        cookie needed), the URL's payload and its age in seconds."""
        from .server import RequestContext

        rules = self.rules
        salt, expiry = (
            (PREVIEW_SALT, rules.preview_url_expiry)
            if preview
            else (UPLOAD_SALT, rules.upload_url_expiry)
        )
        payload, age = rules.read_token(salt, token, attachment_id, expiry)
        return RequestContext(user_id=str(payload[1])), payload, age

    def receive(
        self,
        upload: Upload,
        context: t.Any,
        *,
        attachment_id: str | None = None,
        payload: list[str] | None = None,
    ) -> t.Any:
        """Store an upload: a new attachment (direct), or the bytes of a pending
        two-phase one (*attachment_id*; *payload*: its signed URL's, whose nonce
        must be the current one). Checks the type, size and quota while writing;
        on any failure nothing is kept. The stored attachment record."""
        rules = self.rules
        records = rules.records
        existing = None
        if attachment_id is not None:
            existing = load_named_attachment(records, attachment_id, context)
            meta = existing.metadata or {}
            if not meta.get("upload_pending"):
                raise ConflictError(
                    f"Attachment {attachment_id!r} was already uploaded; upload URLs work once."
                )
            if payload is not None and (len(payload) < 3 or meta.get("upload_nonce") != payload[2]):
                raise RequestError(
                    "This upload URL is not the current one for the attachment.",
                    code=ErrorCode.FORBIDDEN,
                    status=403,
                )
            mime, name = existing.mime_type, existing.name
        else:
            mime, name = upload.mime_type or "", upload.name
            if not mime or mime == "application/octet-stream":
                mime = (name and mimetypes.guess_type(name)[0]) or "application/octet-stream"
        rules.check_upload(mime, None)
        if attachment_id is None:
            attachment_id = records.generate_attachment_id(mime, context)
        size = self.write(attachment_id, upload.stream, mime_type=mime, user_id=context.user_id)
        attachment = rules.build_attachment(
            attachment_id,
            clean_name(name, mime),
            base_mime_type(mime),
            {"size": size},
            context.user_id,
        )
        if existing is not None:
            attachment.thread_id = existing.thread_id
        try:
            upload.complete()
            records.save_attachment(attachment, context)
        except Exception:
            self.delete_attachment(attachment, context)  # no orphaned or partial bytes
            raise
        return attachment

    def preview(self, attachment_id: str, context: t.Any) -> tuple[t.BinaryIO, t.Any]:
        """The bytes of the user's image attachment and its record (404 otherwise)."""
        attachment = load_named_attachment(self.rules.records, attachment_id, context)
        if attachment.type != "image":
            raise RequestError(
                "This attachment has no preview.", code=ErrorCode.NOT_FOUND, status=404
            )
        try:
            return self.open(attachment.id), attachment
        except FileNotFoundError:
            raise RequestError(
                "This attachment has no bytes yet.", code=ErrorCode.NOT_FOUND, status=404
            ) from None

    def write(
        self,
        attachment_id: str,
        stream: t.BinaryIO,
        mime_type: str | None = None,
        user_id: str | None = None,
    ) -> int:
        """Store *stream* as the attachment's bytes, enforcing while reading the size
        limit, the user's quota (with *user_id*) and that the content is *mime_type*."""
        rules = self.rules
        limit = rules.max_bytes
        left = rules.remaining_quota(user_id) if user_id is not None else None
        if left is not None and left <= 0:
            raise quota_exceeded(rules.quota_bytes)
        bound = limit if left is None else min(limit, left)
        if mime_type is not None:
            stream = t.cast(t.BinaryIO, CheckedStream(stream, mime_type))
        try:
            return self.storage.write(_key(attachment_id), stream, limit=bound)
        except RequestError as exc:
            if exc.status == 413 and bound < limit:
                raise quota_exceeded(rules.quota_bytes) from None
            raise

    def open(self, attachment_id: str) -> t.BinaryIO:
        """The attachment's bytes for reading; :class:`FileNotFoundError` if there are none."""
        return self.storage.open(_key(attachment_id))

    def refresh(self, attachment: t.Any, context: t.Any) -> None:
        """Update what expires in *attachment* before it is sent to the client:
        an image's signed preview URL is signed afresh (unbound, it is left)."""
        if attachment.type == "image" and self._rules is not None:
            attachment.preview_url = self._rules.preview_url(attachment.id, context.user_id)

    def delete_attachment(self, attachment: t.Any, context: t.Any) -> None:
        """Remove the attachment's bytes (no error if there are none)."""
        self.storage.delete(_key(attachment.id))


#: The names this class had before it became :class:`Attachments` (one name per concept).
DEPRECATED_NAMES = ("AttachmentStore", "LocalAttachmentStore")


def _deprecated(name: str) -> type[Attachments]:
    import warnings

    warnings.warn(
        f"{name} is now flask_chatkit.attachments.Attachments (records live in a Store, "
        f"bytes in a Storage, and Attachments runs uploads between them); the old "
        f"name will be removed in a later release.",
        DeprecationWarning,
        stacklevel=3,
    )
    return Attachments


def __getattr__(name: str) -> t.Any:
    if name in DEPRECATED_NAMES:
        return _deprecated(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load_named_attachment(records: Store[t.Any], attachment_id: str, context: t.Any) -> t.Any:
    """The user's attachment named by a URL (404 when missing, foreign or malformed)."""
    if "\x00" in attachment_id:  # no id holds NUL (PostgreSQL text cannot store it)
        raise NotFoundError(f"No attachment with id {attachment_id!r}.")
    if len(attachment_id) > 255:  # longer than any id; not echoed back
        raise NotFoundError("No attachment with this id.")
    return records.load_attachment(attachment_id, context)


def _key(attachment_id: str) -> str:
    try:
        return check_key(attachment_id)
    except ValueError:
        raise RequestError("Invalid attachment id.", field="attachment_id") from None


__all__ = [
    "PREVIEW_IMAGE_TYPES",
    "PREVIEW_SALT",
    "UPLOAD_SALT",
    "AttachmentRules",
    "CheckedStream",
    "Attachments",
    "Upload",
    "base_mime_type",
    "check_content",
    "clean_name",
    "load_named_attachment",
    "mime_allowed",
    "sniff",
]
