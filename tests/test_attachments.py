"""Attachments: direct and two-phase uploads, previews, limits, deletion and path safety."""

from __future__ import annotations

import gc
import io
import os
import typing as t
import warnings
from urllib.parse import urlsplit

import pytest
from flask import Flask

from flask_chatkit import stream_text
from flask_chatkit.errors import NotFoundError
from flask_chatkit.testing import user_input

from . import wire
from .conftest import any_store
from .conftest import logged_in
from .conftest import make_app

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(range(256)) * 4
GIF = b"GIF89a" + bytes(range(256)) * 4
WEBP = b"RIFF\x00\x04\x00\x00WEBPVP8 " + bytes(range(256)) * 4
PDF = b"%PDF-1.4\n1 0 obj\n<<>>\nendobj\n"
IMAGES = [
    ("photo.png", "image/png", PNG),
    ("photo.jpg", "image/jpeg", JPEG),
    ("anim.gif", "image/gif", GIF),
    ("pic.webp", "image/webp", WEBP),
]
SVG = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'


def upload(
    client: t.Any,
    data: bytes = PNG,
    filename: str = "photo.png",
    mimetype: str = "image/png",
    url: str = "/chatkit/upload",
    field: str = "file",
) -> t.Any:
    return client.post(
        url,
        data={field: (io.BytesIO(data), filename, mimetype)},
        content_type="multipart/form-data",
        buffered=True,
    )


def files_in(app: Flask) -> list[str]:
    """Everything in the attachments folder (including stray ``.part`` files)."""
    folder = app.config["CHATKIT_ATTACHMENTS_FOLDER"]
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


def all_files(root: t.Any) -> list[str]:
    """Every file under *root* but the SQLite store's own (``chat.db`` and the WAL
    files SQLite adds beside it on first use)."""
    return sorted(
        os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs if not f.startswith("chat.db")
    )


def path_of(url: str) -> str:
    """The path and query (the signature) of an absolute URL."""
    parts = urlsplit(url)
    assert parts.scheme == "http" and parts.netloc == "localhost", url  # absolute URL
    return f"{parts.path}?{parts.query}" if parts.query else parts.path


def check_attachment(body: dict[str, t.Any]) -> None:
    """Valid for the official model, and nothing private or stale on the wire."""
    wire.ATTACHMENT.validate_python(body)
    wire.check_output_rules(body)
    assert "metadata" not in body
    assert "upload_descriptor" not in body


def assert_error(response: t.Any, status: int, code: str | None = None) -> dict[str, t.Any]:
    assert response.status_code == status, response.data
    assert response.mimetype == "application/json"
    body = response.get_json()
    wire.check_error(status, body)
    if code is not None:
        assert body["error"]["code"] == code, body
    return body["error"]  # type: ignore[no-any-return]


@pytest.fixture
def echo(chatkit: t.Any) -> None:
    @chatkit.respond
    def respond(thread: t.Any, message: t.Any, context: t.Any) -> t.Any:
        yield from stream_text(thread, "got it")


def stored(app: Flask, attachment_id: str, user_id: str) -> t.Any:
    """The stored attachment record, read in a short app context of its own."""
    from flask_chatkit import RequestContext

    with app.app_context():
        store = app.extensions["chatkit"].server.store
        return store.load_attachment(attachment_id, RequestContext(user_id=user_id))


def limited_app(store_kind: str, tmp_path: t.Any, **config: t.Any) -> tuple[Flask, t.Any]:
    app = make_app(store_kind, tmp_path, **config)
    return app, logged_in(app, "alice")


# --- direct upload --------------------------------------------------------------------


@pytest.mark.parametrize(("filename", "mime", "data"), IMAGES)
def test_direct_image_upload_has_a_signed_preview_that_needs_no_cookie(
    app: Flask, alice: t.Any, bob: t.Any, filename: str, mime: str, data: bytes
) -> None:
    response = upload(alice, data, filename, mime)
    assert response.status_code == 200, response.data
    assert response.mimetype == "application/json"
    body = response.get_json()
    check_attachment(body)
    assert body["type"] == "image"
    assert body["name"] == filename
    assert body["mime_type"] == mime
    assert body["id"].startswith("atc_")
    assert files_in(app) == [body["id"]]  # stored under its id, not its name

    # The URL is the capability: the cookie-less ChatKit iframe can load it.
    preview = app.test_client().get(path_of(body["preview_url"]))
    assert preview.status_code == 200
    assert preview.data == data
    assert preview.mimetype == mime
    assert preview.headers["X-Content-Type-Options"] == "nosniff"
    preview.close()

    # Without the signature, only the owner's own session gets the bytes.
    unsigned = f"/chatkit/attachments/{body['id']}/preview"
    assert alice.get(unsigned, buffered=True).data == data
    assert_error(bob.get(unsigned), 404)
    assert_error(app.test_client().get(unsigned), 401)
    assert stored(app, body["id"], "alice").mime_type == mime


@pytest.mark.parametrize(
    ("filename", "mime"), [("report.pdf", "application/pdf"), ("notes.txt", "text/plain")]
)
def test_direct_upload_of_other_types_is_a_file_without_preview(
    app: Flask, alice: t.Any, filename: str, mime: str
) -> None:
    response = upload(alice, PDF if mime == "application/pdf" else b"notes", filename, mime)
    assert response.status_code == 200, response.data
    body = response.get_json()
    check_attachment(body)
    assert body["type"] == "file"
    assert "preview_url" not in body
    assert assert_error(alice.get(f"/chatkit/attachments/{body['id']}/preview"), 404)


def test_direct_upload_guesses_the_type_from_the_name_when_sent_as_octet_stream(
    alice: t.Any,
) -> None:
    body = upload(alice, PNG, "photo.png", "application/octet-stream").get_json()
    assert body["mime_type"] == "image/png"
    assert body["type"] == "image"


def test_upload_without_file_field_is_400(app: Flask, alice: t.Any) -> None:
    error = assert_error(upload(alice, field="document"), 400)
    assert error["field"] == "file"
    assert files_in(app) == []


# --- two-phase upload ------------------------------------------------------------------


def test_two_phase_create_returns_an_upload_descriptor(alice: t.Any) -> None:
    ex = alice.chatkit("attachments.create", name="cat.png", size=len(PNG), mime_type="image/png")
    assert ex.status == 200
    assert "metadata" not in ex.body
    descriptor = ex.body["upload_descriptor"]
    assert descriptor["method"] == "POST"
    assert path_of(descriptor["url"]).startswith(f"/chatkit/upload/{ex.body['id']}?token=")
    assert ex.body["type"] == "image" and ex.body["preview_url"]
    # No bytes yet: nothing to preview.
    assert_error(alice.get(path_of(ex.body["preview_url"])), 404)


@pytest.mark.parametrize("how", ["multipart-post", "raw-put"])
def test_two_phase_upload_completes_once_and_clears_the_descriptor(
    app: Flask, alice: t.Any, echo: None, how: str
) -> None:
    created = alice.chatkit(
        "attachments.create", name="cat.png", size=len(PNG), mime_type="image/png"
    ).body
    url = path_of(created["upload_descriptor"]["url"])

    def send() -> t.Any:
        if how == "raw-put":
            return alice.put(url, data=PNG, content_type="image/png", buffered=True)
        return upload(alice, PNG, "ignored.png", "image/png", url=url)

    response = send()
    assert response.status_code == 200, response.data
    body = response.get_json()
    check_attachment(body)
    assert body["id"] == created["id"]
    assert body["name"] == "cat.png"  # the name given at create time
    assert files_in(app) == [created["id"]]
    assert alice.get(path_of(body["preview_url"]), buffered=True).data == PNG

    assert_error(send(), 409, "conflict")
    assert files_in(app) == [created["id"]]

    # The stored record lost its descriptor too: a message embeds it without one.
    ex = alice.chatkit("threads.create", input=user_input("look", attachments=[created["id"]]))
    assert ex.status == 200
    embedded = ex.events[1]["item"]["attachments"]
    assert [a["id"] for a in embedded] == [created["id"]]
    assert "upload_descriptor" not in embedded[0]


@pytest.mark.parametrize("request_type", ["threads.create", "threads.add_user_message"])
def test_message_with_an_attachment_not_uploaded_yet_is_409(
    alice: t.Any, echo: None, request_type: str
) -> None:
    created = alice.chatkit("attachments.create", name="a.txt", size=3, mime_type="text/plain")
    pending = created.body["id"]
    params: dict[str, t.Any] = {"input": user_input("see file", attachments=[pending])}
    if request_type == "threads.add_user_message":
        first = alice.chatkit("threads.create", input=user_input("hello"))
        params["thread_id"] = first.events[0]["thread"]["id"]
    ex = alice.chatkit(request_type, **params)
    assert ex.status == 409
    assert ex.error["code"] == "conflict"
    threads = alice.chatkit("threads.list").body["data"]
    if request_type == "threads.create":
        assert threads == []
    else:
        items = alice.chatkit("items.list", thread_id=params["thread_id"]).body["data"]
        assert [i["type"] for i in items] == ["assistant_message", "user_message"]


# --- limits ---------------------------------------------------------------------------


def test_declared_size_over_the_limit_is_413(store_kind: str, tmp_path: t.Any) -> None:
    app, alice = limited_app(store_kind, tmp_path, CHATKIT_UPLOAD_MAX_BYTES=100)
    ex = alice.chatkit("attachments.create", name="big.txt", size=101, mime_type="text/plain")
    assert ex.status == 413
    assert ex.error["code"] == "file_too_large"
    ok = alice.chatkit("attachments.create", name="ok.txt", size=100, mime_type="text/plain")
    assert ok.status == 200
    assert files_in(app) == []


@pytest.mark.parametrize("size", [101, 200 * 1024], ids=["just-over", "over-multipart-slack"])
def test_direct_upload_over_the_limit_is_413_and_leaves_no_file(
    store_kind: str, tmp_path: t.Any, size: int
) -> None:
    app, alice = limited_app(store_kind, tmp_path, CHATKIT_UPLOAD_MAX_BYTES=100)
    assert_error(upload(alice, b"x" * size, "big.txt", "text/plain"), 413, "file_too_large")
    assert files_in(app) == []
    assert upload(alice, b"x" * 100, "ok.txt", "text/plain").status_code == 200


def test_two_phase_body_larger_than_declared_is_413_and_stays_pending(
    store_kind: str, tmp_path: t.Any
) -> None:
    app, alice = limited_app(store_kind, tmp_path, CHATKIT_UPLOAD_MAX_BYTES=100)
    created = alice.chatkit("attachments.create", name="a.txt", size=10, mime_type="text/plain")
    url = path_of(created.body["upload_descriptor"]["url"])
    assert_error(upload(alice, b"x" * 101, "a.txt", "text/plain", url=url), 413, "file_too_large")
    raw = alice.put(url, data=b"x" * 101, content_type="text/plain", buffered=True)
    assert_error(raw, 413, "file_too_large")
    assert files_in(app) == []
    # Still pending: a retry with an honest body succeeds.
    assert upload(alice, b"x" * 10, "a.txt", "text/plain", url=url).status_code == 200
    assert files_in(app) == [created.body["id"]]


@pytest.mark.parametrize("kind", ["raw-put", "multipart"])
def test_body_without_a_declared_length_is_cut_off_at_the_limit(
    store_kind: str, tmp_path: t.Any, kind: str
) -> None:
    """A chunked body (no Content-Length) cannot slip past the limit."""
    app, alice = limited_app(store_kind, tmp_path, CHATKIT_UPLOAD_MAX_BYTES=100)
    chunked = {
        "headers": {"Transfer-Encoding": "chunked"},
        "environ_overrides": {"wsgi.input_terminated": True},
        "buffered": True,
    }
    if kind == "raw-put":
        created = alice.chatkit("attachments.create", name="a.txt", size=10, mime_type="text/plain")
        url = path_of(created.body["upload_descriptor"]["url"])
        response = alice.put(
            url, input_stream=io.BytesIO(b"x" * 5000), content_type="text/plain", **chunked
        )
    else:
        body = (
            b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\n'
            b"Content-Type: text/plain\r\n\r\n" + b"x" * 300_000 + b"\r\n--b--\r\n"
        )
        # werkzeug's form parser drops its (in-memory) spool file unclosed when the
        # limit stops it mid-part; that ResourceWarning is werkzeug's, not ours.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            response = alice.post(
                "/chatkit/upload",
                input_stream=io.BytesIO(body),
                content_type="multipart/form-data; boundary=b",
                **chunked,
            )
            gc.collect()
    assert response.request.content_length is None
    error = assert_error(response, 413, "file_too_large")
    assert "CHATKIT_UPLOAD_MAX_BYTES" in error["message"]
    assert files_in(app) == []


@any_store
@pytest.mark.parametrize(
    ("allowed", "mime", "ok"),
    [
        ("image/png", "image/png", True),
        ("image/png", "text/plain", False),
        ("image/png", "image/jpeg", False),
        ("image/*", "image/jpeg", True),
        ("image/*", "application/pdf", False),
        ("*", "application/x-custom", True),
        ("image/png, text/plain", "text/plain", True),
    ],
)
def test_allowed_mime_types_are_enforced_with_415(
    store_kind: str, tmp_path: t.Any, allowed: str, mime: str, ok: bool
) -> None:
    app, alice = limited_app(store_kind, tmp_path, CHATKIT_ALLOWED_MIME_TYPES=allowed)
    content = {"image/png": PNG, "image/jpeg": JPEG}.get(mime, b"data")
    direct = upload(alice, content, "f.bin", mime)
    create = alice.chatkit("attachments.create", name="f.bin", size=4, mime_type=mime)
    if ok:
        assert direct.status_code == 200, direct.data
        assert create.status == 200
    else:
        assert_error(direct, 415, "unsupported_media_type")
        assert create.status == 415
        assert create.error["code"] == "unsupported_media_type"
        assert files_in(app) == []


# --- delete ---------------------------------------------------------------------------


def test_delete_removes_bytes_and_record(app: Flask, alice: t.Any, bob: t.Any) -> None:
    body = upload(alice).get_json()
    other = upload(alice, b"keep", "keep.txt", "text/plain").get_json()
    assert bob.chatkit("attachments.delete", attachment_id=body["id"]).status == 404
    assert body["id"] in files_in(app)

    ex = alice.chatkit("attachments.delete", attachment_id=body["id"])
    assert ex.status == 200 and ex.body == {}
    assert files_in(app) == [other["id"]]
    assert_error(alice.get(path_of(body["preview_url"])), 404)
    with pytest.raises(NotFoundError):
        stored(app, body["id"], "alice")
    assert alice.chatkit("attachments.delete", attachment_id=body["id"]).status == 404


def test_delete_of_a_pending_two_phase_attachment_leaves_nothing(app: Flask, alice: t.Any) -> None:
    created = alice.chatkit("attachments.create", name="a.txt", size=3, mime_type="text/plain")
    assert alice.chatkit("attachments.delete", attachment_id=created.body["id"]).status == 200
    url = path_of(created.body["upload_descriptor"]["url"])
    assert_error(upload(alice, b"abc", "a.txt", "text/plain", url=url), 404)
    assert files_in(app) == []


# --- path safety ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "filename",
    [
        "../../etc/passwd",
        "..\\..\\evil.txt",
        "/abs/evil.txt",
        "nul\x00byte.txt",
        "bell\x07esc\x1b[31m.txt",
        "tab\tname.txt",
        "..",
        "",
    ],
)
def test_client_filenames_never_choose_where_bytes_go(
    app: Flask, alice: t.Any, tmp_path: t.Any, filename: str
) -> None:
    before = all_files(tmp_path)
    response = upload(alice, b"payload", filename, "text/plain")
    assert response.status_code == 200, response.data
    body = response.get_json()
    check_attachment(body)
    name = body["name"]
    assert name and name not in (".", "..")
    assert "/" not in name and "\\" not in name
    assert all(ch.isprintable() for ch in name), repr(name)
    assert files_in(app) == [body["id"]]
    created = set(all_files(tmp_path)) - set(before)
    folder = os.path.realpath(app.config["CHATKIT_ATTACHMENTS_FOLDER"])
    assert {os.path.realpath(p) for p in created} == {os.path.join(folder, body["id"])}
    assert not (tmp_path / "etc").exists()


@pytest.mark.parametrize("bad_id", ["..", "x.y", "a%2F..%2Fb", "%00"])
def test_two_phase_url_with_a_bad_id_writes_nothing(app: Flask, alice: t.Any, bad_id: str) -> None:
    response = upload(alice, b"abc", "a.txt", "text/plain", url=f"/chatkit/upload/{bad_id}")
    assert response.status_code in (400, 404)
    assert response.mimetype == "application/json"
    assert files_in(app) == []


# --- ownership and thread stamping ----------------------------------------------------------


def test_a_message_may_only_attach_the_senders_own_attachments(
    app: Flask, alice: t.Any, bob: t.Any, echo: None
) -> None:
    bobs = upload(bob).get_json()
    ex = alice.chatkit("threads.create", input=user_input("steal", attachments=[bobs["id"]]))
    assert ex.status == 404
    assert alice.chatkit("threads.list").body["data"] == []
    mine = alice.chatkit("threads.create", input=user_input("hi")).events[0]["thread"]["id"]
    ex = alice.chatkit(
        "threads.add_user_message",
        thread_id=mine,
        input=user_input("steal", attachments=[bobs["id"]]),
    )
    assert ex.status == 404
    assert upload(alice, url=f"/chatkit/upload/{bobs['id']}").status_code == 404
    assert stored(app, bobs["id"], "bob").thread_id is None
    assert files_in(app) == [bobs["id"]]


def test_message_attachment_gets_thread_id_stamped_and_persisted(
    app: Flask, alice: t.Any, echo: None
) -> None:
    image = upload(alice).get_json()
    doc = upload(alice, b"text", "notes.txt", "text/plain").get_json()
    ex = alice.chatkit(
        "threads.create", input=user_input("see", attachments=[image["id"], doc["id"]])
    )
    assert ex.status == 200
    thread_id = ex.events[0]["thread"]["id"]
    message = ex.events[1]["item"]
    assert message["type"] == "user_message"
    embedded = message["attachments"]
    assert [a["id"] for a in embedded] == [image["id"], doc["id"]]
    assert all(a["thread_id"] == thread_id for a in embedded)
    assert embedded[0]["preview_url"] == image["preview_url"]
    for a in embedded:
        wire.ATTACHMENT.validate_python(a)
        assert stored(app, a["id"], "alice").thread_id == thread_id

    items = alice.chatkit("items.list", thread_id=thread_id, order="asc").body["data"]
    assert [a["thread_id"] for a in items[0]["attachments"]] == [thread_id, thread_id]


# --- SVG ------------------------------------------------------------------------------------


def test_svg_is_refused_by_the_default_allow_list(app: Flask, alice: t.Any) -> None:
    assert_error(upload(alice, SVG, "x.svg", "image/svg+xml"), 415, "unsupported_media_type")
    assert files_in(app) == []


def test_svg_is_never_served_as_an_image_preview(store_kind: str, tmp_path: t.Any) -> None:
    app, alice = limited_app(store_kind, tmp_path, CHATKIT_ALLOWED_MIME_TYPES="image/*")
    body = upload(alice, SVG, "x.svg", "image/svg+xml").get_json()
    check_attachment(body)
    assert body["type"] == "file"
    assert "preview_url" not in body
    assert_error(alice.get(f"/chatkit/attachments/{body['id']}/preview"), 404)
    created = alice.chatkit("attachments.create", name="y.svg", size=10, mime_type="image/svg+xml")
    assert created.body["type"] == "file"
    assert "preview_url" not in created.body
