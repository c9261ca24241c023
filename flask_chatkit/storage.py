"""Where attachment bytes live: a small interface and the local-folder backend.

A :class:`Storage` keeps opaque blobs by key (flask_chatkit uses the
server-made attachment id as the key, never a client-sent name). The local
folder is the default; ``flask_chatkit.s3.S3Storage`` shares files between
hosts.
"""

from __future__ import annotations

import abc
import os
import re
import typing as t

from .limits import file_too_large

#: What a storage key may look like: keys are server-made ids, checked anyway.
SAFE_KEY = re.compile(r"^[A-Za-z0-9_.:-]{1,255}$")
#: Bytes read from an upload at a time.
CHUNK_SIZE = 64 * 1024


def check_key(key: str) -> str:
    """*key*, if it cannot name anything outside the storage; else ``ValueError``."""
    if not SAFE_KEY.match(key) or key in (".", ".."):
        raise ValueError(f"invalid storage key {key!r}")
    return key


class Storage(abc.ABC):
    """Blobs by key. Implementations must be safe to use from many greenlets."""

    @abc.abstractmethod
    def write(self, key: str, stream: t.BinaryIO, *, limit: int) -> int:
        """Store what *stream* yields under *key*; return the size.

        Reads at most *limit* bytes: past that, nothing is kept and the 413
        :func:`~flask_chatkit.errors.file_too_large` is raised.
        """

    @abc.abstractmethod
    def open(self, key: str) -> t.BinaryIO:
        """The blob for reading; :class:`FileNotFoundError` if there is none."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove the blob (no error if there is none)."""


class LocalStorage(Storage):
    """Blobs as files in one folder.

    :param folder: where files go; left out, ``init_app`` sets it to
        ``CHATKIT_ATTACHMENTS_FOLDER`` (``chatkit_attachments`` in the instance folder).
    """

    def __init__(self, folder: str | os.PathLike[str] | None = None) -> None:
        self.folder = os.fspath(folder) if folder is not None else None

    def root(self) -> str:
        """The folder, created on first use."""
        if self.folder is None:
            raise RuntimeError(
                "LocalStorage has no folder: pass one, or let ChatKit.init_app set "
                "CHATKIT_ATTACHMENTS_FOLDER."
            )
        os.makedirs(self.folder, exist_ok=True)
        return self.folder

    def path(self, key: str) -> str:
        """The file of *key* (checked, never trusted)."""
        return os.path.join(self.root(), check_key(key))

    def write(self, key: str, stream: t.BinaryIO, *, limit: int) -> int:
        path = self.path(key)
        partial = path + ".part"
        size = 0
        try:
            with open(partial, "wb") as out:
                while chunk := stream.read(CHUNK_SIZE):
                    size += len(chunk)
                    if size > limit:
                        raise file_too_large(limit)
                    out.write(chunk)
            os.replace(partial, path)  # readers never see a half-written file
        finally:
            if os.path.exists(partial):
                os.unlink(partial)
        return size

    def open(self, key: str) -> t.BinaryIO:
        return open(self.path(key), "rb")

    def delete(self, key: str) -> None:
        try:
            os.unlink(self.path(key))
        except FileNotFoundError:
            pass


__all__ = ["CHUNK_SIZE", "LocalStorage", "Storage", "check_key"]
