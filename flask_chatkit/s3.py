"""Attachment bytes in an S3-compatible bucket, so several hosts share files.

Optional: install with ``pip install flask-chatkit[s3]`` (boto3). Use it as the
storage of the attachments::

    from flask_chatkit import ChatKit
    from flask_chatkit.attachments import Attachments
    from flask_chatkit.s3 import S3Storage

    chatkit = ChatKit(
        app,
        store=SQLAlchemyStore(db),
        attachments=Attachments(
            storage=S3Storage(
                "my-bucket",
                prefix="chatkit/",
                endpoint_url="https://s3.example.com",  # omit for AWS itself
            )
        ),
    )

Credentials and region come from boto3's usual sources (environment, shared
config, instance role) unless given as keyword arguments, which go to
``boto3.client("s3", ...)``. Every host must point at the same bucket and
prefix and use the same database for the chat store.
"""

from __future__ import annotations

import tempfile
import typing as t

import boto3
from botocore.exceptions import ClientError

from .limits import file_too_large
from .storage import CHUNK_SIZE
from .storage import Storage
from .storage import check_key

#: Upload bytes kept in memory before the spool moves to a temporary file.
SPOOL_MEMORY = 1024 * 1024
#: Error codes S3-compatible servers use for a missing object.
MISSING = frozenset({"NoSuchKey", "404", "NotFound"})


class S3Storage(Storage):
    """Blobs as objects in an S3 (or S3-compatible) bucket.

    An upload is read in chunks into a spooled temporary file (in memory up to
    1 MiB, then on disk) while counting bytes, so an oversize or endless body is
    cut off at the limit before anything reaches the bucket; the finished file
    then goes up in one ``PutObject`` (atomic: readers never see half a file).

    :param bucket: the bucket name (it must exist).
    :param prefix: put before every key, e.g. ``"chatkit/"``, to share a bucket.
    :param client: a ready boto3 S3 client; otherwise one is made from
        *client_kwargs* (``endpoint_url``, ``region_name``, credentials, ``config``).
    """

    def __init__(
        self, bucket: str, *, prefix: str = "", client: t.Any = None, **client_kwargs: t.Any
    ) -> None:
        if client is not None and client_kwargs:
            raise ValueError("Pass either client= or client options, not both.")
        self.bucket = bucket
        self.prefix = prefix
        # A session of its own: boto3's default session is not safe to share between threads.
        if client is None:
            client = boto3.session.Session().client("s3", **client_kwargs)
        self.client = client

    def object_key(self, key: str) -> str:
        """The object key of *key* (checked, never trusted)."""
        return self.prefix + check_key(key)

    def write(self, key: str, stream: t.BinaryIO, *, limit: int) -> int:
        name = self.object_key(key)
        size = 0
        with tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY) as spool:
            while chunk := stream.read(CHUNK_SIZE):
                size += len(chunk)
                if size > limit:
                    raise file_too_large(limit)
                spool.write(chunk)
            spool.seek(0)
            self.client.put_object(Bucket=self.bucket, Key=name, Body=spool, ContentLength=size)
        return size

    def open(self, key: str) -> t.BinaryIO:
        name = self.object_key(key)
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=name)
        except ClientError as exc:
            if _error_code(exc) in MISSING:
                raise FileNotFoundError(f"No object {name!r} in bucket {self.bucket!r}.") from None
            raise
        return response["Body"]  # type: ignore[no-any-return]

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.object_key(key))
        except ClientError as exc:
            if _error_code(exc) not in MISSING:
                raise


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


__all__ = ["S3Storage"]
