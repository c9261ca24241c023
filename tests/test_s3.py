"""The S3 storage backend, against a real S3-compatible server (moto) on loopback.

The server runs as a subprocess for this module (``python -m moto.server`` on a
free 127.0.0.1 port, dummy credentials, no other network). Without boto3 or
moto the module is skipped with the reason.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
import typing as t
import urllib.request
import uuid

import pytest
from flask import Flask

boto3 = pytest.importorskip(
    "boto3", reason="boto3 is not installed: pip install 'flask-chatkit[s3]'"
)

from botocore.config import Config  # noqa: E402

from flask_chatkit import InMemoryStore  # noqa: E402
from flask_chatkit import RequestError  # noqa: E402
from flask_chatkit.attachments import Attachments  # noqa: E402
from flask_chatkit.s3 import S3Storage  # noqa: E402
from flask_chatkit.storage import CHUNK_SIZE  # noqa: E402

from .conftest import logged_in  # noqa: E402
from .conftest import make_app  # noqa: E402
from .samples import make_png  # noqa: E402
from .servers import free_port  # noqa: E402
from .servers import stop_process  # noqa: E402

# a real S3-compatible server (moto) in a subprocess
pytestmark = pytest.mark.slow

MiB = 1024 * 1024
STARTUP_TIMEOUT = 30.0


PNG = make_png()


# --- the server -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def s3_endpoint() -> t.Iterator[str]:
    """The URL of a moto S3 server started on loopback for this module."""
    if importlib.util.find_spec("moto") is None:
        pytest.skip("moto is not installed (pip install 'moto[server]'): no S3 server to test on")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        try:
            _wait_until_up(proc, url, log)
            yield url
        finally:
            stop_process(proc)


def _wait_until_up(proc: subprocess.Popen[bytes], url: str, log: t.IO[bytes]) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.seek(0)
            tail = log.read().decode(errors="replace").strip().splitlines()[-3:]
            pytest.skip(f"the moto S3 server did not start (exit {proc.returncode}): {tail}")
        try:
            with urllib.request.urlopen(url + "/", timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    pytest.skip(f"the moto S3 server did not answer within {STARTUP_TIMEOUT:.0f}s")


def client_kwargs(endpoint: str) -> dict[str, t.Any]:
    return {
        "endpoint_url": endpoint,
        "region_name": "us-east-1",
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
        "config": Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    }


@pytest.fixture(scope="module")
def s3_client(s3_endpoint: str) -> t.Any:
    """One boto3 client for the module (making a client costs most of a second)."""
    return boto3.session.Session().client("s3", **client_kwargs(s3_endpoint))


@pytest.fixture
def bucket(s3_client: t.Any) -> str:
    """A new, empty bucket of this test's own."""
    name = f"chatkit-{uuid.uuid4().hex[:16]}"
    s3_client.create_bucket(Bucket=name)
    return name


def storage_for(client: t.Any, bucket: str, prefix: str = "chatkit/") -> S3Storage:
    return S3Storage(bucket, prefix=prefix, client=client)


@pytest.fixture
def storage(s3_client: t.Any, bucket: str) -> S3Storage:
    return storage_for(s3_client, bucket)


def objects(storage: S3Storage) -> dict[str, bytes]:
    """Every object in the storage's bucket (all prefixes) with its bytes."""
    listed = storage.client.list_objects_v2(Bucket=storage.bucket).get("Contents", [])
    return {
        o["Key"]: storage.client.get_object(Bucket=storage.bucket, Key=o["Key"])["Body"].read()
        for o in listed
    }


def read_all(storage: S3Storage, key: str) -> bytes:
    handle = storage.open(key)
    try:
        return handle.read()
    finally:
        handle.close()


class Endless(io.RawIOBase):
    """A stream of *size* bytes (endless by default) that keeps none of them.

    Reading more than *give_up* bytes fails the test (instead of filling memory
    or disk when a backend does not stop at its limit).
    """

    def __init__(self, size: float = float("inf"), give_up: float = float("inf")) -> None:
        self.left = size
        self.give_up = give_up
        self.served = 0
        self.block = bytes(range(256)) * (CHUNK_SIZE // 256)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: t.Any) -> int:
        if self.served > self.give_up:
            raise AssertionError(f"read {self.served} bytes, far past the limit")
        n = int(min(len(buffer), self.left, len(self.block)))
        buffer[:n] = self.block[:n]
        self.left -= n
        self.served += n
        return n


# --- the Storage contract ---------------------------------------------------------------


def test_write_open_overwrite_and_delete_round_trip(storage: S3Storage) -> None:
    assert storage.write("atc_1", io.BytesIO(b"hello"), limit=100) == 5
    assert read_all(storage, "atc_1") == b"hello"
    assert objects(storage) == {"chatkit/atc_1": b"hello"}

    assert storage.write("atc_1", io.BytesIO(b"bye"), limit=100) == 3
    assert read_all(storage, "atc_1") == b"bye"

    storage.delete("atc_1")
    assert objects(storage) == {}
    storage.delete("atc_1")  # deleting again is fine
    storage.delete("atc_never")


def test_open_of_a_missing_key_is_file_not_found(storage: S3Storage) -> None:
    with pytest.raises(FileNotFoundError):
        storage.open("atc_missing")
    storage.write("atc_gone", io.BytesIO(b"x"), limit=10)
    storage.delete("atc_gone")
    with pytest.raises(FileNotFoundError):
        storage.open("atc_gone")


def test_client_options_make_a_client_of_its_own(s3_endpoint: str, storage: S3Storage) -> None:
    own = S3Storage(storage.bucket, prefix="chatkit/", **client_kwargs(s3_endpoint))
    assert own.client is not storage.client
    own.write("k", io.BytesIO(b"via options"), limit=100)
    assert read_all(storage, "k") == b"via options"
    with pytest.raises(ValueError):
        S3Storage(storage.bucket, client=storage.client, region_name="us-east-1")


def test_prefixes_keep_two_storages_apart_in_one_bucket(s3_client: t.Any, bucket: str) -> None:
    one = storage_for(s3_client, bucket, "one/")
    two = storage_for(s3_client, bucket, "two/")
    one.write("same", io.BytesIO(b"first"), limit=100)
    two.write("same", io.BytesIO(b"second"), limit=100)
    assert read_all(one, "same") == b"first"
    assert read_all(two, "same") == b"second"
    one.delete("same")
    assert objects(two) == {"two/same": b"second"}
    with pytest.raises(FileNotFoundError):
        one.open("same")


@pytest.mark.parametrize("key", ["../escape", "a/b", "..", "", "x\x00y", "with space", "é"])
def test_unsafe_keys_are_refused_before_touching_the_bucket(storage: S3Storage, key: str) -> None:
    storage.write("ok", io.BytesIO(b"keep"), limit=10)
    with pytest.raises(ValueError):
        storage.write(key, io.BytesIO(b"data"), limit=10)
    with pytest.raises(ValueError):
        storage.open(key)
    with pytest.raises(ValueError):
        storage.delete(key)
    assert objects(storage) == {"chatkit/ok": b"keep"}


def test_a_write_of_exactly_the_limit_is_kept(storage: S3Storage) -> None:
    assert storage.write("exact", io.BytesIO(b"x" * 1000), limit=1000) == 1000
    assert read_all(storage, "exact") == b"x" * 1000


def test_a_write_over_the_limit_is_413_and_leaves_no_object(storage: S3Storage) -> None:
    with pytest.raises(RequestError) as info:
        storage.write("big", io.BytesIO(b"x" * 1001), limit=1000)
    assert info.value.status == 413
    assert info.value.code == "file_too_large"
    assert objects(storage) == {}


def test_an_endless_stream_is_cut_off_at_the_limit(storage: S3Storage) -> None:
    stream = Endless(give_up=MiB + 2 * CHUNK_SIZE)  # stops reading right after the limit
    with pytest.raises(RequestError) as info:
        storage.write("endless", io.BufferedReader(stream), limit=MiB)
    assert info.value.status == 413
    assert objects(storage) == {}


def test_an_oversize_overwrite_keeps_the_earlier_object(storage: S3Storage) -> None:
    storage.write("atc_1", io.BytesIO(b"old"), limit=10)
    with pytest.raises(RequestError):
        storage.write("atc_1", io.BytesIO(b"x" * 11), limit=10)
    assert objects(storage) == {"chatkit/atc_1": b"old"}


def test_a_big_file_streams_in_and_out_with_bounded_memory(storage: S3Storage) -> None:
    size = 24 * MiB
    expected = hashlib.sha256()
    block = Endless().block
    for _ in range(size // len(block)):
        expected.update(block)

    tracemalloc.start()
    try:
        written = storage.write("big", io.BufferedReader(Endless(size)), limit=size)
        _, write_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        handle = storage.open("big")
        got = hashlib.sha256()
        read = 0
        while chunk := handle.read(CHUNK_SIZE):
            got.update(chunk)
            read += len(chunk)
        handle.close()
        _, read_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert written == read == size
    assert got.hexdigest() == expected.hexdigest()
    assert write_peak < 4 * MiB, write_peak  # a 24 MiB file never sits in memory
    assert read_peak < 4 * MiB, read_peak


# --- end to end through the blueprint ---------------------------------------------------


def s3_app(
    store_kind: str,
    tmp_path: t.Any,
    storage: S3Storage,
    *,
    host: str = "host1",
    memory_store: InMemoryStore | None = None,
    **config: t.Any,
) -> Flask:
    """An app from conftest's ``make_app``, with attachment bytes in *storage*.

    Apps made with the same *tmp_path* (and *memory_store*) share the chat store
    database, like several hosts behind one load balancer.
    """
    store = memory_store if store_kind == "memory" else None
    return make_app(
        store_kind,
        tmp_path,
        {"attachments": Attachments(storage=storage)},
        store=store,
        instance=f"{host}/instance",
        CHATKIT_HEARTBEAT_INTERVAL=0,
        **config,
    )


def local_files(app: Flask) -> list[str]:
    folder = app.config["CHATKIT_ATTACHMENTS_FOLDER"]
    return os.listdir(folder) if os.path.isdir(folder) else []


def direct_upload(client: t.Any, data: bytes = PNG, name: str = "cat.png") -> dict[str, t.Any]:
    response = client.post(
        "/chatkit/upload",
        data={"file": (io.BytesIO(data), name, "image/png")},
        content_type="multipart/form-data",
        buffered=True,
    )
    assert response.status_code == 200, response.data
    return response.get_json()  # type: ignore[no-any-return]


def two_phase_upload(creator: t.Any, uploader: t.Any, data: bytes = PNG) -> dict[str, t.Any]:
    """``attachments.create`` on *creator*, bytes sent to its descriptor by *uploader*."""
    created = creator.chatkit(
        "attachments.create", name="cat.png", size=len(data), mime_type="image/png"
    )
    assert created.status == 200, created.body
    descriptor = created.body["upload_descriptor"]
    method = descriptor.get("method", "POST").upper()
    headers = dict(descriptor.get("headers") or {})
    if method == "PUT":
        headers.setdefault("Content-Type", "image/png")
        response = uploader.put(descriptor["url"], data=data, headers=headers, buffered=True)
    else:
        response = uploader.open(
            descriptor["url"],
            method=method,
            data={"file": (io.BytesIO(data), "cat.png", "image/png")},
            content_type="multipart/form-data",
            headers=headers,
            buffered=True,
        )
    assert response.status_code == 200, response.data
    body = response.get_json()
    assert body["id"] == created.body["id"]
    return body  # type: ignore[no-any-return]


def fetch_preview(client: t.Any, attachment: dict[str, t.Any]) -> t.Any:
    response = client.get(attachment["preview_url"], buffered=True)
    response.close()
    return response


@pytest.mark.parametrize("strategy", ["direct", "two_phase"])
def test_uploads_land_in_the_bucket_and_previews_come_from_it(
    store_kind: str, tmp_path: t.Any, storage: S3Storage, strategy: str
) -> None:
    app = s3_app(store_kind, tmp_path, storage)
    alice = logged_in(app, "alice")
    if strategy == "direct":
        body = direct_upload(alice)
    else:
        body = two_phase_upload(alice, alice)

    assert objects(storage) == {f"chatkit/{body['id']}": PNG}
    assert local_files(app) == []  # nothing went to the local folder

    preview = fetch_preview(alice, body)
    assert preview.status_code == 200, preview.data
    assert preview.data == PNG
    assert preview.mimetype == "image/png"
    assert preview.headers["X-Content-Type-Options"] == "nosniff"


def test_a_preview_whose_object_vanished_is_404(
    store_kind: str, tmp_path: t.Any, storage: S3Storage
) -> None:
    app = s3_app(store_kind, tmp_path, storage)
    alice = logged_in(app, "alice")
    body = direct_upload(alice)
    storage.client.delete_object(Bucket=storage.bucket, Key=f"chatkit/{body['id']}")
    preview = fetch_preview(alice, body)
    assert preview.status_code == 404
    assert preview.get_json()["error"]["code"] == "not_found"


def test_attachments_delete_removes_the_object(
    store_kind: str, tmp_path: t.Any, storage: S3Storage
) -> None:
    app = s3_app(store_kind, tmp_path, storage)
    alice = logged_in(app, "alice")
    keep = direct_upload(alice, make_png(2, 2), "keep.png")
    gone = direct_upload(alice)
    assert len(objects(storage)) == 2

    ex = alice.chatkit("attachments.delete", attachment_id=gone["id"])
    assert ex.status == 200, ex.body
    assert objects(storage) == {f"chatkit/{keep['id']}": make_png(2, 2)}
    assert fetch_preview(alice, gone).status_code == 404


def test_an_oversize_upload_is_413_and_leaves_nothing_in_the_bucket(
    store_kind: str, tmp_path: t.Any, storage: S3Storage
) -> None:
    app = s3_app(store_kind, tmp_path, storage, CHATKIT_UPLOAD_MAX_BYTES=len(PNG) + 10)
    alice = logged_in(app, "alice")
    response = alice.post(
        "/chatkit/upload",
        data={"file": (io.BytesIO(PNG + b"\x00" * 4096), "big.png", "image/png")},
        content_type="multipart/form-data",
        buffered=True,
    )
    assert response.status_code == 413, response.data
    assert response.get_json()["error"]["code"] == "file_too_large"
    assert objects(storage) == {}
    direct_upload(alice)  # a file within the limit still goes through
    assert len(objects(storage)) == 1


def test_two_hosts_sharing_a_bucket_and_database_see_the_same_files(
    store_kind: str, tmp_path: t.Any, s3_endpoint: str, s3_client: t.Any, bucket: str
) -> None:
    shared = InMemoryStore() if store_kind == "memory" else None
    hosts = [
        s3_app(
            store_kind,
            tmp_path,
            # each host with a client of its own, as on separate machines
            S3Storage(bucket, prefix="chatkit/", **client_kwargs(s3_endpoint)),
            host=host,
            memory_store=shared,
        )
        for host in ("host1", "host2")
    ]
    host1, host2 = hosts
    alice1 = logged_in(host1, "alice")
    alice2 = logged_in(host2, "alice")

    direct = direct_upload(alice1)
    preview = fetch_preview(alice2, direct)
    assert preview.status_code == 200, preview.data
    assert preview.data == PNG

    # Created on one host, bytes sent to the other, shown by the first.
    phased = two_phase_upload(alice2, alice1, make_png(3, 3))
    assert fetch_preview(alice2, phased).data == make_png(3, 3)
    viewer = storage_for(s3_client, bucket)
    assert set(objects(viewer)) == {f"chatkit/{direct['id']}", f"chatkit/{phased['id']}"}

    ex = alice2.chatkit("attachments.delete", attachment_id=direct["id"])
    assert ex.status == 200, ex.body
    assert set(objects(viewer)) == {f"chatkit/{phased['id']}"}
    assert fetch_preview(alice1, direct).status_code == 404
    assert local_files(host1) == local_files(host2) == []
