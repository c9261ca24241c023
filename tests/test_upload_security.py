"""Hostile uploads and previews: signed single-use upload URLs, content sniffing,
signed expiring previews, quotas and limits, and the attachment lifecycle."""

from __future__ import annotations

import io
import threading
import time
import typing as t

import pytest
from flask import Flask
from itsdangerous import TimestampSigner
from itsdangerous import URLSafeTimedSerializer

from flask_chatkit import stream_text
from flask_chatkit.attachments import PREVIEW_SALT
from flask_chatkit.attachments import UPLOAD_SALT
from flask_chatkit.errors import NotFoundError
from flask_chatkit.testing import user_input
from flask_chatkit.types import utcnow

from .conftest import any_store
from .conftest import logged_in
from .conftest import make_app
from .test_attachments import GIF
from .test_attachments import JPEG
from .test_attachments import PDF
from .test_attachments import PNG
from .test_attachments import assert_error
from .test_attachments import files_in
from .test_attachments import limited_app
from .test_attachments import path_of
from .test_attachments import stored
from .test_attachments import upload

HTML = b"<!DOCTYPE html><html><body><script>alert(document.cookie)</script></body></html>"


class _OldSigner(TimestampSigner):
    def get_timestamp(self) -> int:
        return int(time.time()) - 10 * 24 * 3600


def sign(app: Flask, salt: str, payload: list[str], *, old: bool = False) -> str:
    """A token signed with the app's key, as an attacker who knew it could make."""
    kwargs: dict[str, t.Any] = {"signer": _OldSigner} if old else {}
    return URLSafeTimedSerializer(app.secret_key, salt=salt, **kwargs).dumps(payload)


def create(client: t.Any, name: str = "cat.png", mime: str = "image/png", size: int = 0) -> t.Any:
    ex = client.chatkit("attachments.create", name=name, size=size or len(PNG), mime_type=mime)
    assert ex.status == 200, ex.body
    return ex.body


def put(client: t.Any, url: str, data: bytes = PNG, mime: str = "image/png") -> t.Any:
    return client.put(url, data=data, content_type=mime, buffered=True)


@pytest.fixture
def echo(chatkit: t.Any) -> None:
    @chatkit.respond
    def respond(thread: t.Any, message: t.Any, context: t.Any) -> t.Any:
        yield from stream_text(thread, "ok")


def cli(app: Flask, *args: str) -> t.Any:
    return app.test_cli_runner().invoke(args=["chatkit", *args])


# --- 1. two-phase upload URLs ---------------------------------------------------------


def test_two_phase_upload_works_without_cookies_and_only_once(
    app: Flask, alice: t.Any, echo: None
) -> None:
    created = create(alice)
    url = path_of(created["upload_descriptor"]["url"])
    anonymous = app.test_client()  # no session cookie, no Origin
    response = put(anonymous, url)
    assert response.status_code == 200, response.data
    assert response.get_json()["id"] == created["id"]
    # Replayed, even with other bytes: refused, the first upload stays.
    error = assert_error(put(anonymous, url, JPEG, "image/jpeg"), 409, "conflict")
    assert "once" in error["message"]
    preview = anonymous.get(path_of(response.get_json()["preview_url"]), buffered=True)
    assert preview.data == PNG
    ex = alice.chatkit("threads.create", input=user_input("look", attachments=[created["id"]]))
    assert ex.status == 200


def test_two_phase_url_cannot_upload_another_attachment(app: Flask, alice: t.Any) -> None:
    first, second = create(alice), create(alice)
    token = path_of(first["upload_descriptor"]["url"]).split("?", 1)[1]
    response = put(app.test_client(), f"/chatkit/upload/{second['id']}?{token}")
    assert_error(response, 403, "forbidden")
    assert files_in(app) == []
    assert stored(app, second["id"], "alice").metadata["upload_pending"]


def test_two_phase_url_cannot_be_used_for_another_users_attachment(
    app: Flask, alice: t.Any, bob: t.Any
) -> None:
    theirs = create(alice)
    nonce = stored(app, theirs["id"], "alice").metadata["upload_nonce"]
    # Even a correctly signed token naming bob does not reach alice's attachment.
    token = sign(app, UPLOAD_SALT, [theirs["id"], "bob", nonce])
    assert_error(put(bob, f"/chatkit/upload/{theirs['id']}?token={token}"), 404)
    assert files_in(app) == []


@pytest.mark.parametrize("how", ["missing", "altered", "expired", "wrong-nonce", "wrong-key"])
def test_bad_upload_tokens_are_refused_and_write_nothing(
    app: Flask, alice: t.Any, how: str
) -> None:
    created = create(alice)
    path, query = path_of(created["upload_descriptor"]["url"]).split("?", 1)
    nonce = stored(app, created["id"], "alice").metadata["upload_nonce"]
    token = query.removeprefix("token=")
    url = {
        "missing": path,
        "altered": f"{path}?token={token[:-2]}{'AA' if token[-2:] != 'AA' else 'BB'}",
        "expired": f"{path}?token="
        + sign(app, UPLOAD_SALT, [created["id"], "alice", nonce], old=True),
        "wrong-nonce": f"{path}?token={sign(app, UPLOAD_SALT, [created['id'], 'alice', 'x'])}",
        "wrong-key": f"{path}?token="
        + URLSafeTimedSerializer("guess", salt=UPLOAD_SALT).dumps([created["id"], "alice", nonce]),
    }[how]
    # The token is the only credential: without it, a cookie-less client is anonymous.
    status = 401 if how == "missing" else 403
    error = assert_error(put(app.test_client(), url), status)
    if how == "expired":
        assert error["code"] == "url_expired"
    assert files_in(app) == []
    assert put(alice, f"{path}?{query}").status_code == 200  # the real URL still works


def test_direct_upload_still_needs_a_user_and_a_same_origin_cookie(
    app: Flask, alice: t.Any
) -> None:
    assert_error(upload(app.test_client()), 401)
    foreign = alice.post(
        "/chatkit/upload",
        data={"file": (io.BytesIO(PNG), "a.png", "image/png")},
        headers={"Origin": "https://evil.example"},
    )
    assert_error(foreign, 403)
    bearer = upload(app.test_client(), PNG)
    assert bearer.status_code == 401
    ok = app.test_client().post(
        "/chatkit/upload",
        data={"file": (io.BytesIO(PNG), "a.png", "image/png")},
        headers={"Authorization": "Bearer token-alice"},
    )
    assert ok.status_code == 200, ok.data
    assert files_in(app) == [ok.get_json()["id"]]


# --- 2. content checks ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "declared", "looks"),
    [
        (PNG, "application/pdf", "image/png"),
        (HTML, "image/png", "text/html"),
        (PDF, "image/jpeg", "application/pdf"),
        (GIF, "image/png", "image/gif"),
        (b"just some bytes", "image/png", "nothing recognisable"),
    ],
)
def test_declared_type_must_match_the_sniffed_content(
    app: Flask, alice: t.Any, data: bytes, declared: str, looks: str
) -> None:
    error = assert_error(upload(alice, data, "x.bin", declared), 415, "unsupported_media_type")
    assert declared in error["message"] and looks in error["message"]
    created = create(alice, "x.bin", declared, len(data))
    two_phase = put(alice, path_of(created["upload_descriptor"]["url"]), data, declared)
    assert_error(two_phase, 415, "unsupported_media_type")
    assert files_in(app) == []
    assert stored(app, created["id"], "alice").metadata["upload_pending"]  # may retry


@any_store
@pytest.mark.parametrize(
    ("data", "mime", "ok"),
    [
        # multi-byte characters across read chunks
        ("naïve café ☕\n".encode() * 2000, "text/plain", True),
        (b"a,b\n1,2\n", "text/csv", True),
        (b'{"a": 1}', "application/json", True),
        (b"# Title\n\xff\xfe bad", "text/markdown", False),
        (b"text" * 5000 + b"\x00" + b"more", "text/plain", False),
        (b"ends mid-character \xe2\x98", "text/plain", False),
        (PNG, "text/plain", False),
    ],
)
def test_text_types_must_be_utf8_without_nul(
    app: Flask, alice: t.Any, data: bytes, mime: str, ok: bool
) -> None:
    response = upload(alice, data, "notes", mime)
    if ok:
        assert response.status_code == 200, response.data
        assert response.get_json()["mime_type"] == mime
    else:
        assert_error(response, 415, "unsupported_media_type")
        assert files_in(app) == []


class Endless(io.RawIOBase):
    """A request body that never ends; counts what was read from it."""

    def __init__(self) -> None:
        self.read_bytes = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: t.Any) -> int:
        n = len(buffer)
        buffer[:n] = b"a" * n
        self.read_bytes += n
        return n


def test_an_endless_two_phase_body_is_cut_off_with_bounded_reading(
    store_kind: str, tmp_path: t.Any
) -> None:
    app, alice = limited_app(store_kind, tmp_path, CHATKIT_UPLOAD_MAX_BYTES=1000)
    created = create(alice, "a.txt", "text/plain", 10)
    body = Endless()
    response = alice.put(
        path_of(created["upload_descriptor"]["url"]),
        content_type="text/plain",
        headers={"Transfer-Encoding": "chunked"},
        # (the test client would measure an input_stream by seeking to its end)
        environ_overrides={"wsgi.input": body, "wsgi.input_terminated": True},
        buffered=True,
    )
    assert_error(response, 413, "file_too_large")
    assert body.read_bytes < 1000 + 200 * 1024  # stopped near the limit, not at the end
    assert files_in(app) == []


# --- 3. previews ----------------------------------------------------------------------


def test_preview_is_absolute_signed_and_served_safely(app: Flask, alice: t.Any) -> None:
    body = upload(alice, JPEG, "a.jpg", "image/jpeg").get_json()
    assert body["preview_url"].startswith("http://localhost/chatkit/attachments/")
    response = app.test_client().get(path_of(body["preview_url"]), buffered=True)
    assert response.status_code == 200
    assert response.data == JPEG
    assert response.headers["Content-Type"] == "image/jpeg"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Content-Security-Policy"] == "default-src 'none'; sandbox"
    assert response.headers["Content-Disposition"].startswith("inline")
    cache = response.headers["Cache-Control"]
    assert "private" in cache
    max_age = int(cache.split("max-age=")[1])
    assert 0 < max_age <= app.config["CHATKIT_PREVIEW_URL_EXPIRY"]
    assert "Set-Cookie" not in response.headers


def test_preview_urls_are_stable_for_a_while_so_browsers_can_cache_them(
    app: Flask, alice: t.Any
) -> None:
    before = int(time.time())
    first = upload(alice).get_json()["preview_url"]
    created = alice.chatkit("attachments.create", name="x.png", size=9, mime_type="image/png")
    reader = URLSafeTimedSerializer(app.secret_key, salt=PREVIEW_SALT)
    stamps = {
        reader.loads(url.split("token=")[1], return_timestamp=True)[1].timestamp()
        for url in (first, created.body["preview_url"])
    }
    # signed at the start of the minute (a tenth of the default hour, at most 60 s)
    assert all(stamp % 60 == 0 and stamp <= time.time() for stamp in stamps)
    if int(time.time()) // 60 == before // 60:
        assert len(stamps) == 1


def test_preview_cache_lifetime_never_outlives_a_short_signature(
    store_kind: str, tmp_path: t.Any
) -> None:
    app, alice = limited_app(store_kind, tmp_path, CHATKIT_PREVIEW_URL_EXPIRY=30)
    body = upload(alice).get_json()
    response = app.test_client().get(path_of(body["preview_url"]), buffered=True)
    assert response.status_code == 200
    assert int(response.headers["Cache-Control"].split("max-age=")[1]) <= 30


@pytest.mark.parametrize("how", ["no-token", "bobs-token", "altered", "expired", "guessed-key"])
def test_guessed_or_forged_preview_urls_reveal_nothing(
    app: Flask, alice: t.Any, bob: t.Any, how: str
) -> None:
    mine = upload(alice).get_json()
    theirs = upload(bob, GIF, "b.gif", "image/gif").get_json()
    own_path, own_query = path_of(mine["preview_url"]).split("?", 1)
    bobs_query = path_of(theirs["preview_url"]).split("?", 1)[1]
    token = own_query.removeprefix("token=")
    url = {
        "no-token": own_path,
        "bobs-token": f"{own_path}?{bobs_query}",
        "altered": f"{own_path}?token={token[:-2]}{'AA' if token[-2:] != 'AA' else 'BB'}",
        "expired": f"{own_path}?token={sign(app, PREVIEW_SALT, [mine['id'], 'alice'], old=True)}",
        "guessed-key": f"{own_path}?token="
        + URLSafeTimedSerializer("secret", salt=PREVIEW_SALT).dumps([mine["id"], "alice"]),
    }[how]
    response = app.test_client().get(url)
    assert_error(response, 401 if how == "no-token" else 403)
    assert PNG not in response.data


def test_preview_of_another_users_attachment_with_a_token_naming_oneself_is_404(
    app: Flask, alice: t.Any, bob: t.Any
) -> None:
    mine = upload(alice).get_json()
    token = sign(app, PREVIEW_SALT, [mine["id"], "bob"])
    assert_error(bob.get(f"/chatkit/attachments/{mine['id']}/preview?token={token}"), 404)


@pytest.mark.slow  # waits out an expiry
def test_preview_urls_are_signed_afresh_whenever_attachments_are_sent_out(
    store_kind: str, tmp_path: t.Any
) -> None:
    # a 4 s lifetime: URLs are stable for a tenth of it, rounded up to a whole second
    app, alice = limited_app(store_kind, tmp_path, CHATKIT_PREVIEW_URL_EXPIRY=4)

    @app.extensions["chatkit"].respond
    def respond(thread: t.Any, message: t.Any, context: t.Any) -> t.Any:
        yield from stream_text(thread, "ok")

    attachment_id = upload(alice).get_json()["id"]
    created = alice.chatkit("threads.create", input=user_input("hi", attachments=[attachment_id]))
    thread_id = created.events[0]["thread"]["id"]
    time.sleep(1.1)  # signatures carry whole seconds
    before = time.time() - 0.5
    reader = URLSafeTimedSerializer(app.secret_key, salt=PREVIEW_SALT)
    listed = alice.chatkit("items.list", thread_id=thread_id).body["data"]
    loaded = alice.chatkit("threads.get_by_id", thread_id=thread_id).body["items"]["data"]
    for items in (listed, loaded):
        [message] = [i for i in items if i["type"] == "user_message"]
        [attachment] = message["attachments"]
        token = attachment["preview_url"].split("token=", 1)[1]
        payload, signed_at = reader.loads(token, return_timestamp=True)
        assert payload == [attachment_id, "alice"]
        assert signed_at.timestamp() >= int(before)
        fetched = app.test_client().get(path_of(attachment["preview_url"]), buffered=True)
        assert fetched.status_code == 200
    # The message echoed in the stream carries a working URL too.
    echoed = created.events[1]["item"]["attachments"][0]["preview_url"]
    assert app.test_client().get(path_of(echoed), buffered=True).status_code == 200


# --- 4. limits and quotas -------------------------------------------------------------


def test_too_many_files_in_one_message_is_400_before_the_stream(
    store_kind: str, tmp_path: t.Any
) -> None:
    app, alice = limited_app(store_kind, tmp_path, CHATKIT_MAX_FILES_PER_MESSAGE=2)

    @app.extensions["chatkit"].respond
    def respond(thread: t.Any, message: t.Any, context: t.Any) -> t.Any:
        yield from stream_text(thread, "ok")  # pragma: no cover - refused before it

    ids = [upload(alice).get_json()["id"] for _ in range(3)]
    ex = alice.chatkit("threads.create", input=user_input("three", attachments=ids))
    assert ex.status == 400
    assert ex.error["code"] == "too_many_files"
    assert ex.error["field"] == "params.input.attachments"
    assert "CHATKIT_MAX_FILES_PER_MESSAGE" in ex.error["message"]
    assert alice.chatkit("threads.list").body["data"] == []


def test_user_quota_counts_stored_bytes_per_user(store_kind: str, tmp_path: t.Any) -> None:
    app, alice = limited_app(store_kind, tmp_path, CHATKIT_USER_QUOTA_BYTES=len(PNG) + 100)
    bob = logged_in(app, "bob")
    first = upload(alice).get_json()
    error = assert_error(upload(alice), 413, "quota_exceeded")
    assert "CHATKIT_USER_QUOTA_BYTES" in error["message"]
    assert files_in(app) == [first["id"]]
    small = upload(alice, b"tiny", "a.txt", "text/plain")  # what is left still fits
    assert small.status_code == 200
    # Declared sizes are checked up front for two-phase uploads.
    ex = alice.chatkit("attachments.create", name="b.png", size=len(PNG), mime_type="image/png")
    assert ex.status == 413 and ex.error["code"] == "quota_exceeded"
    assert upload(bob).status_code == 200  # bob has a quota of his own
    assert alice.chatkit("attachments.delete", attachment_id=first["id"]).status == 200
    assert upload(alice).status_code == 200  # deleting frees the space


# --- 5. lifecycle ---------------------------------------------------------------------


def test_cleanup_removes_only_old_attachments_never_sent(
    app: Flask, alice: t.Any, echo: None
) -> None:
    sent = upload(alice).get_json()["id"]
    alice.chatkit("threads.create", input=user_input("with file", attachments=[sent]))
    unsent = upload(alice, b"draft", "d.txt", "text/plain").get_json()["id"]
    pending = create(alice)["id"]  # created, never uploaded
    assert sorted(files_in(app)) == sorted([sent, unsent])

    kept = cli(app, "cleanup-attachments", "--older-than", "1")
    assert kept.exit_code == 0, kept.output
    assert "Removed 0 unsent attachments" in kept.output

    result = cli(app, "cleanup-attachments", "--older-than", "0")
    assert result.exit_code == 0, result.output
    assert "Removed 2 unsent attachments" in result.output
    assert unsent in result.output and pending in result.output
    assert files_in(app) == [sent]
    for gone in (unsent, pending):
        with pytest.raises(NotFoundError):
            stored(app, gone, "alice")
    assert stored(app, sent, "alice").thread_id is not None


def test_concurrent_cleanups_each_remove_an_attachment_at_most_once(
    app: Flask, alice: t.Any
) -> None:
    ids = {upload(alice, b"x%d" % i, "a.txt", "text/plain").get_json()["id"] for i in range(12)}
    with app.app_context():
        store = app.extensions["chatkit"].server.store
    cutoff = utcnow()
    results: list[list[str]] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with app.app_context():
                results.append([a.id for a in store.delete_stale_attachments(cutoff)])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    workers = [threading.Thread(target=run) for _ in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert errors == []
    claimed = [i for r in results for i in r]
    assert sorted(claimed) == sorted(ids)  # every one removed, none twice
    assert cli(app, "cleanup-attachments", "--older-than", "0").output.startswith("Removed 0")


def test_deleting_a_thread_deletes_its_attachments_bytes_and_records(
    app: Flask, alice: t.Any, bob: t.Any, echo: None
) -> None:
    first = upload(alice).get_json()["id"]
    second = upload(alice, JPEG, "b.jpg", "image/jpeg").get_json()["id"]
    elsewhere = upload(alice, b"keep", "k.txt", "text/plain").get_json()["id"]
    bobs = upload(bob).get_json()["id"]
    created = alice.chatkit("threads.create", input=user_input("two", attachments=[first, second]))
    other = alice.chatkit("threads.create", input=user_input("one", attachments=[elsewhere]))
    thread_id = created.events[0]["thread"]["id"]

    assert alice.chatkit("threads.delete", thread_id=thread_id).status == 200
    assert sorted(files_in(app)) == sorted([elsewhere, bobs])
    for gone in (first, second):
        with pytest.raises(NotFoundError):
            stored(app, gone, "alice")
    assert stored(app, elsewhere, "alice").thread_id == other.events[0]["thread"]["id"]


def test_cleanup_older_than_defaults_to_the_config(store_kind: str, tmp_path: t.Any) -> None:
    app = make_app(store_kind, tmp_path, CHATKIT_ATTACHMENT_CLEANUP_HOURS=0)
    alice = logged_in(app, "alice")
    upload(alice)
    result = cli(app, "cleanup-attachments")
    assert result.exit_code == 0, result.output
    assert "Removed 1 unsent attachment " in result.output
    assert files_in(app) == []
    with app.app_context():
        assert app.extensions["chatkit"].server.store.attachment_bytes("alice") == 0
