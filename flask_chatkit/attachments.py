"""Attachment bytes in a local folder, with size and MIME-type limits.

Files are named by their server-generated attachment id, never by the name the
client sent, so nothing can be written outside the folder. Limits come from
the app config (``CHATKIT_UPLOAD_MAX_BYTES``, ``CHATKIT_ALLOWED_MIME_TYPES``).
"""

from __future__ import annotations

import mimetypes
import os
import re
import typing as t

from flask import current_app
from flask import url_for

from .errors import RequestError
from .store import AttachmentStore
from .types import AttachmentUploadDescriptor
from .types import FileAttachment
from .types import ImageAttachment

#: Image types shown inline with a preview. SVG is left out on purpose: it can carry script.
PREVIEW_IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
_SAFE_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_CHUNK = 64 * 1024


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


def file_too_large(limit: int) -> RequestError:
    """The 413 for a file over ``CHATKIT_UPLOAD_MAX_BYTES``."""
    return RequestError(
        f"The file is larger than the limit of {limit} bytes (CHATKIT_UPLOAD_MAX_BYTES).",
        code="file_too_large",
        status=413,
    )


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


def build_attachment(
    attachment_id: str, name: str, mime_type: str, metadata: dict[str, t.Any]
) -> FileAttachment | ImageAttachment:
    """An attachment record; images get a ``preview_url`` served by the blueprint."""
    mime = base_mime_type(mime_type)
    if mime in PREVIEW_IMAGE_TYPES:
        preview = url_for("chatkit.preview", attachment_id=attachment_id, _external=True)
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
    """Attachment bytes as files in one folder.

    :param folder: where files go; by default ``CHATKIT_ATTACHMENTS_FOLDER``,
        which defaults to ``chatkit_attachments`` in the instance folder.
    """

    def __init__(self, folder: str | os.PathLike[str] | None = None) -> None:
        self.folder = os.fspath(folder) if folder is not None else None

    def root(self) -> str:
        """The folder, created on first use."""
        folder = self.folder or current_app.config["CHATKIT_ATTACHMENTS_FOLDER"]
        os.makedirs(folder, exist_ok=True)
        return folder

    def path(self, attachment_id: str) -> str:
        """Where the bytes of *attachment_id* live (the id is checked, never trusted)."""
        if not _SAFE_ID.match(attachment_id):
            raise RequestError("Invalid attachment id.", field="attachment_id")
        return os.path.join(self.root(), attachment_id)

    def create_attachment(self, params: t.Any, context: t.Any) -> t.Any:
        """Start a two-phase upload: the record, and where to send the bytes."""
        check_upload(params.mime_type, params.size)
        store = current_app.extensions["chatkit"].server.store
        attachment_id = store.generate_attachment_id(params.mime_type, context)
        attachment = build_attachment(
            attachment_id,
            clean_name(params.name, params.mime_type),
            params.mime_type,
            {"upload_pending": True, "declared_size": params.size},
        )
        attachment.upload_descriptor = AttachmentUploadDescriptor(
            url=url_for("chatkit.upload_to", attachment_id=attachment_id, _external=True),
            method="POST",
        )
        return attachment

    def write(self, attachment_id: str, stream: t.BinaryIO) -> int:
        """Copy *stream* to the attachment's file, enforcing the size limit while reading."""
        limit, _ = _settings()
        path = self.path(attachment_id)
        partial = path + ".part"
        size = 0
        try:
            with open(partial, "wb") as out:
                while chunk := stream.read(_CHUNK):
                    size += len(chunk)
                    if size > limit:
                        raise file_too_large(limit)
                    out.write(chunk)
            os.replace(partial, path)
        finally:
            if os.path.exists(partial):
                os.unlink(partial)
        return size

    def open(self, attachment_id: str) -> t.BinaryIO:
        """The attachment's bytes for reading; :class:`FileNotFoundError` if there are none."""
        return open(self.path(attachment_id), "rb")

    def delete_attachment(self, attachment: t.Any, context: t.Any) -> None:
        """Remove the file, if any."""
        try:
            os.unlink(self.path(attachment.id))
        except FileNotFoundError:
            pass


__all__ = ["LocalAttachmentStore", "check_upload", "clean_name", "mime_allowed"]
