"""Malformed input at volume: a property-based fuzzer (hypothesis) against every endpoint.

Thousands of generated bodies go through the Flask test client, each sent as a
cookie user (with ``Origin``) and as a bearer user: valid-shaped requests of all
16 types with mutated fields (wrong types, nulls, ~1 MB strings, 10,000-level
nesting, unknown fields and types, huge numbers, NUL, lone surrogates, other
users' ids), raw bytes (invalid UTF-8, truncated JSON, BOMs, nothing) under
wrong or missing content types, multipart bodies to both upload endpoints,
forged preview URLs and client-secret bodies. A smaller batch goes to the
example app under a real gunicorn gevent worker.

Every answer must be: below 500; for any non-2xx, the JSON error envelope
``{"error": {"code", "message", "field"?}}`` -- every path below ``/chatkit``
answers JSON, even unknown paths and methods (the blueprint's catch-all and
error handlers), so a Werkzeug HTML page is a failure too; only ``/chatkit/`` and
paths with a newline, which match no blueprint rule, get the app's 404 page -- short (never an
echo of huge input) and free of traceback text or server paths; a 2xx stream
must parse as SSE whose events the official models accept.

Runs are deterministic: ``derandomize=True`` and no example database.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import typing as t
import urllib.parse
from http.client import HTTPConnection
from pathlib import Path

import pytest
from flask import Flask
from hypothesis import HealthCheck
from hypothesis import event as note_event
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from flask_chatkit import stream_text
from flask_chatkit.testing import chatkit_request
from flask_chatkit.testing import user_input

from . import wire
from .conftest import logged_in
from .conftest import make_app
from .openai_fake import FakeOpenAI
from .servers import ROOT
from .servers import cli
from .servers import run_gunicorn
from .servers import server_env

# fuzzing: thousands of generated bodies, in-process and against gunicorn
pytestmark = pytest.mark.slow

FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
#: An error body never grows with the input: ids are capped at 255 characters and
#: quoted input at 200, so anything near this size echoes what the client sent.
MAX_ERROR_BYTES = 1500
LEAKS = ("Traceback", 'File "', "site-packages", str(ROOT), "sqlalchemy", "psycopg")
BOB_SECRET = "bob-secret-7f3a"
DEEP = 10_000
#: Placeholders replaced after ``json.dumps``: nesting too deep for Python to encode.
DEEP_LIST, DEEP_DICT = "\x01deep-list\x01", "\x01deep-dict\x01"
REQUEST_TYPES = sorted(wire.STREAMING | wire.EMPTY_RESPONSE | set(wire.JSON_MODELS))


# --- the site under fuzz ---------------------------------------------------------------


@dataclasses.dataclass
class Site:
    app: Flask
    cookie: t.Any  # alice, logged in, same-origin Origin
    bearer: t.Any  # alice by bearer token, no cookie, no Origin
    bob: dict[str, str]
    pending: dict[str, str]  # owner -> upload URL (path + token) of a pending attachment
    image: dict[str, str]  # alice's uploaded image: id and signed preview path
    alice: dict[str, str] = dataclasses.field(default_factory=dict)

    def alice_thread(self) -> dict[str, str]:
        """An existing thread of alice's and its user message (made again once deleted)."""
        if (
            self.alice
            and self.cookie.post(
                "/chatkit",
                json=chatkit_request("threads.get_by_id", thread_id=self.alice["thread"]),
            ).status_code
            == 200
        ):
            return self.alice
        self.alice = turn(self.cookie, "alice says hi")
        return self.alice


def turn(client: t.Any, text: str) -> dict[str, str]:
    ex = client.chatkit("threads.create", input=user_input(text))
    assert ex.status == 200, ex.body
    return {
        "thread": ex.of_type("thread.created")[0]["thread"]["id"],
        "item": ex.of_type("thread.item.done")[0]["item"]["id"],
    }


def pending_upload(client: t.Any) -> str:
    ex = client.chatkit("attachments.create", name="cat.png", size=100, mime_type="image/png")
    assert ex.status == 200, ex.body
    return path_of(ex.body["upload_descriptor"]["url"])


def path_of(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return f"{parts.path}?{parts.query}" if parts.query else parts.path


def register_hooks(chatkit: t.Any) -> None:
    @chatkit.respond
    def respond(thread: t.Any, message: t.Any, context: t.Any) -> t.Any:
        yield from stream_text(thread, "ok")

    @chatkit.action
    def action(thread: t.Any, action: t.Any, sender: t.Any, context: t.Any) -> t.Any:
        yield from stream_text(thread, "acted")

    @chatkit.sync_action
    def sync_action(thread: t.Any, action: t.Any, sender: t.Any, context: t.Any) -> None:
        return None

    @chatkit.transcribe
    def transcribe(audio: t.Any, context: t.Any) -> str:
        return "heard"

    @chatkit.feedback
    def feedback(thread_id: str, item_ids: t.Any, kind: str, context: t.Any) -> None:
        return None


@pytest.fixture(scope="module")
def fake_openai() -> t.Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture(scope="module", params=["memory", "sqlalchemy"])
def site(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    fake_openai: FakeOpenAI,
    monkeypatch_module: pytest.MonkeyPatch,
) -> t.Iterator[Site]:
    """One app per store, self-hosted and hosted (client secrets from a loopback fake)."""
    app = make_app(
        request.param,
        tmp_path_factory.mktemp(f"fuzz-{request.param}"),
        CHATKIT_HEARTBEAT_INTERVAL=0,
        CHATKIT_WORKFLOW_ID="wf_fuzz",
        OPENAI_API_KEY="sk-fuzz",
        OPENAI_BASE_URL=fake_openai.base_url,
        CHATKIT_OPENAI_MAX_RETRIES=0,
    )
    register_hooks(app.extensions["chatkit"])
    cookie, bob = logged_in(app, "alice"), logged_in(app, "bob")
    bearer = app.test_client()
    del bearer.environ_base["HTTP_ORIGIN"]
    bearer.environ_base["HTTP_AUTHORIZATION"] = "Bearer token-alice"
    uploaded = cookie.post(
        "/chatkit/upload",
        data={"file": (_png(), "cat.png", "image/png")},
        content_type="multipart/form-data",
    ).get_json()
    yield Site(
        app=app,
        cookie=cookie,
        bearer=bearer,
        bob=turn(bob, BOB_SECRET),
        pending={"alice": pending_upload(cookie), "bob": pending_upload(bob)},
        image={"id": uploaded["id"], "preview": path_of(uploaded["preview_url"])},
    )
    sessions = app.extensions["chatkit"].state(app).sessions
    if sessions is not None and sessions._client is not None:
        sessions._client.close()
    db = app.extensions.get("test_db")
    if db is not None:
        with app.app_context():
            for engine in db.engines.values():
                engine.dispose()


@pytest.fixture(scope="module")
def monkeypatch_module() -> t.Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("OPENAI_API_KEY", raising=False)
        mp.delenv("OPENAI_BASE_URL", raising=False)
        yield mp


def _png() -> t.Any:
    import io

    return io.BytesIO(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)


# --- judging answers -------------------------------------------------------------------


def assert_clean(
    status: int,
    content_type: str,
    raw: bytes,
    request_body: t.Any = None,
    *,
    stream_ok: bool = True,
    sent: str = "",
) -> t.Any:
    """The rules every answer follows; returns the parsed body (JSON or events).

    *sent* is what the client sent besides *request_body* (a URL, say): an error
    may quote the client's own words back (``No attachment with id 'Traceback'``,
    now that Hypothesis draws text from this module's constants), which is no leak.
    """
    note_event(f"status {status}")  # the spread shows with --hypothesis-show-statistics
    text = raw.decode("utf-8", "replace")
    assert status < 500, (status, raw[:500])
    client_words = sent + ("" if request_body is None else json.dumps(request_body))
    for leak in LEAKS:
        if leak in client_words:  # quoted back, or not: the client said it first
            continue
        assert leak not in text, (status, leak, raw[:500])
    if status >= 300:
        assert 400 <= status < 500, (status, raw[:300])
        assert len(raw) <= MAX_ERROR_BYTES, (status, len(raw), raw[:300])
        assert content_type.startswith("application/json"), (status, content_type, raw[:300])
        body = json.loads(raw)
        wire.check_error(status, body)
        assert set(body["error"]) <= {"code", "message", "field"}, body
        assert isinstance(body["error"].get("field", ""), str), body
        return body
    if content_type.startswith("text/event-stream"):
        assert stream_ok, "a non-streaming endpoint answered with a stream"
        events = wire.parse_frames(raw)
        for event in events:
            wire.check_event(event)
        return events
    if isinstance(request_body, dict) and request_body.get("type") in wire.JSON_MODELS:
        return wire.check_exchange(request_body, status, content_type, raw)
    return json.loads(raw) if content_type.startswith("application/json") else raw


def assert_not_bobs(raw: bytes) -> None:
    assert BOB_SECRET.encode() not in raw, "alice was shown bob's data"


# --- generated values ------------------------------------------------------------------

HUGE = st.sampled_from([10_000, 300_000, 1_000_000]).map(lambda n: "\u00e9x" * (n // 2))
NASTY_TEXT = st.sampled_from(
    [
        "",
        " ",
        "\x00",
        "a\x00b",
        "\ud800",
        "x\udfffy",
        "\u202e\u0000",
        "%00",
        "../../etc/passwd",
        "<script>alert(1)</script>",
        "' OR 1=1 --",
        "\r\n\r\nHTTP/1.1 200 OK",
        "\ufeff",
        "🦄" * 50,
    ]
)
NUMBERS = st.one_of(
    st.integers(),
    st.sampled_from([-1, 0, 2**31, 2**63, -(2**63) - 1, 2**64, 10**30, 10**4000]),
    st.floats(allow_nan=True, allow_infinity=True),
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    NUMBERS,
    st.text(max_size=40),
    NASTY_TEXT,
    st.sampled_from([DEEP_LIST, DEEP_DICT]),
)
JUNK = st.one_of(
    HUGE,
    st.recursive(
        SCALARS,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4),
            st.dictionaries(st.one_of(st.text(max_size=10), NASTY_TEXT), inner, max_size=4),
        ),
        max_leaves=12,
    ),
)
IDS = st.sampled_from(
    ["@thread", "@item", "@bob_thread", "@bob_item", "thr_unknown", "", "\x00", "\ud800"]
)


def template(type_: str) -> dict[str, t.Any]:
    """A valid request of *type_* (ids as placeholders, filled in before sending)."""
    message = {
        "content": [
            {"type": "input_text", "text": "hello"},
            {"type": "input_tag", "id": "t1", "text": "tag", "data": {}},
        ],
        "attachments": [],
        "quoted_text": "quote",
        "inference_options": {"model": "m", "tool_choice": {"id": "tool"}},
    }
    action = {"type": "do.it", "payload": {"n": 1}}
    params: dict[str, dict[str, t.Any]] = {
        "threads.create": {"input": message},
        "threads.add_user_message": {"thread_id": "@thread", "input": message},
        "threads.add_client_tool_output": {"thread_id": "@thread", "result": {"ok": 1}},
        "threads.add_structured_input": {
            "thread_id": "@thread",
            "item_id": "@item",
            "input": {"status": "answered", "answers": {"q": {"values": ["a"]}}},
        },
        "threads.retry_after_item": {"thread_id": "@thread", "item_id": "@item"},
        "threads.custom_action": {"thread_id": "@thread", "item_id": "@item", "action": action},
        "threads.sync_custom_action": {
            "thread_id": "@thread",
            "item_id": "@item",
            "action": action,
        },
        "threads.get_by_id": {"thread_id": "@thread"},
        "threads.list": {"limit": 5, "order": "asc", "after": "@thread"},
        "threads.update": {"thread_id": "@thread", "title": "title"},
        "threads.delete": {"thread_id": "@thread"},
        "items.list": {"thread_id": "@thread", "limit": 5, "order": "desc"},
        "items.feedback": {"thread_id": "@thread", "item_ids": ["@item"], "kind": "positive"},
        "attachments.create": {"name": "a.png", "size": 10, "mime_type": "image/png"},
        "attachments.delete": {"attachment_id": "atc_unknown"},
        "input.transcribe": {"audio_base64": "aGVsbG8=", "mime_type": "audio/webm"},
    }
    return {"type": type_, "params": params[type_], "metadata": {"k": "v"}}


def paths(node: t.Any, prefix: tuple[t.Any, ...] = ()) -> t.Iterator[tuple[t.Any, ...]]:
    yield prefix
    children = (
        node.items()
        if isinstance(node, dict)
        else enumerate(node)
        if isinstance(node, list)
        else ()
    )
    for key, child in children:
        yield from paths(child, (*prefix, key))


@st.composite
def protocol_bodies(draw: st.DrawFn) -> dict[str, t.Any]:
    """A valid-shaped request with 0-3 mutations: set, delete, or add an unknown field."""
    body = copy.deepcopy(template(draw(st.sampled_from(REQUEST_TYPES))))
    for _ in range(draw(st.integers(0, 3))):
        path = draw(st.sampled_from(list(paths(body))))
        op = draw(st.sampled_from(["set", "set", "id", "delete", "unknown", "retype"]))
        if not path or op == "retype":
            body["type"] = draw(st.one_of(st.sampled_from(REQUEST_TYPES), JUNK))
            continue
        parent = body
        for key in path[:-1]:
            parent = parent[key]
        last = path[-1]
        if op == "delete":
            del parent[last]
        elif op == "unknown" and isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=20))] = draw(JUNK)
        else:
            parent[last] = draw(IDS if op == "id" else JUNK)
    return body


def fill_ids(value: t.Any, ids: dict[str, str]) -> t.Any:
    if isinstance(value, str):
        return ids.get(value, value)
    if isinstance(value, list):
        return [fill_ids(v, ids) for v in value]
    if isinstance(value, dict):
        return {fill_ids(k, ids): fill_ids(v, ids) for k, v in value.items()}
    return value


def encode(body: t.Any) -> bytes:
    raw = json.dumps(body).encode()
    for marker, nested in (
        (DEEP_LIST, b"[" * DEEP + b"]" * DEEP),
        (DEEP_DICT, b'{"a":' * DEEP + b"1" + b"}" * DEEP),
    ):
        raw = raw.replace(json.dumps(marker).encode(), nested)
    return raw


# --- /chatkit --------------------------------------------------------------------------


def send(site: Site, raw: bytes, content_type: str | None, request_body: t.Any = None) -> None:
    """*raw* to ``/chatkit`` as the cookie user and as the bearer user; judge both answers."""
    for client in (site.cookie, site.bearer):
        headers = {} if content_type is None else {"Content-Type": content_type}
        response = client.post("/chatkit", data=raw, headers=headers)
        assert_clean(
            response.status_code,
            response.headers.get("Content-Type", ""),
            response.data,
            request_body,
        )
        assert_not_bobs(response.data)


@settings(FUZZ, max_examples=350)
@given(body=protocol_bodies())
def test_mutated_requests_of_every_type_never_fail_the_server(site: Site, body: t.Any) -> None:
    mine = site.alice_thread()
    ids = {
        "@thread": mine["thread"],
        "@item": mine["item"],
        "@bob_thread": site.bob["thread"],
        "@bob_item": site.bob["item"],
    }
    body = fill_ids(body, ids)
    send(site, encode(body), "application/json", body)


RAW_PREFIXES = [b"", b"\xef\xbb\xbf", b"\xff\xfe", b"\x00", b" \n\t"]
CONTENT_TYPES = [
    None,
    "application/json",
    "application/json; charset=utf-16",
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data",
    "multipart/form-data; boundary=zzz",
    "application/octet-stream",
    "",
    "*/*",
]


@st.composite
def raw_bodies(draw: st.DrawFn) -> bytes:
    valid = json.dumps(template(draw(st.sampled_from(REQUEST_TYPES)))).encode()
    kind = draw(
        st.sampled_from(
            ["bytes", "truncated", "prefixed", "utf16", "bad-utf8", "deep", "empty", "form"]
        )
    )
    if kind == "bytes":
        return draw(st.binary(max_size=300))
    if kind == "truncated":
        return valid[: draw(st.integers(0, len(valid) - 1))]
    if kind == "prefixed":
        return draw(st.sampled_from(RAW_PREFIXES)) + valid
    if kind == "utf16":
        return valid.decode().encode(draw(st.sampled_from(["utf-16", "utf-16-le", "utf-32"])))
    if kind == "bad-utf8":
        at = draw(st.integers(0, len(valid)))
        return (
            valid[:at]
            + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80"]))
            + valid[at:]
        )
    if kind == "deep":
        opener = draw(st.sampled_from([b"[", b'{"a":', b'{"type":"threads.list","params":[']))
        return opener * draw(st.sampled_from([1000, DEEP, 100_000]))
    if kind == "form":
        return b"type=threads.list&params=%7B%7D"
    return b""


@settings(FUZZ, max_examples=400)
@given(raw=raw_bodies(), content_type=st.sampled_from(CONTENT_TYPES))
def test_raw_bytes_under_any_content_type_are_clean_json_errors(
    site: Site, raw: bytes, content_type: str | None
) -> None:
    send(site, raw, content_type)


# --- uploads, previews, client secrets -------------------------------------------------

FIELD_NAMES = st.sampled_from(["file", "File", "files", "", "file[]", "\x00", "f" * 300])
FILENAMES = st.one_of(
    st.none(),
    NASTY_TEXT,
    st.text(max_size=30),
    st.sampled_from(["cat.png", "a.txt", "x" * 5000 + ".png"]),
)
FILE_TYPES = st.one_of(
    st.none(),
    st.sampled_from(
        ["image/png", "text/plain", "application/pdf", "text/html", "", "image/png\x00", "a/b/c"]
    ),
)
FILE_DATA = st.one_of(
    st.binary(max_size=200),
    st.sampled_from(
        [b"", b"\x89PNG\r\n\x1a\n" + b"\x00" * 100, b"%PDF-1.4\n", b"hello\n", b"<html>"]
    ),
)


GOOD_FILES = [
    (b"cat.png", b"image/png", b"\x89PNG\r\n\x1a\n" + bytes(range(256))),
    (b"a.txt", b"text/plain", b"hello\n"),
    (b"../../x.txt", b"text/plain", b""),
    (b"d.pdf", b"application/pdf", b"%PDF-1.4\n%%EOF\n"),
]


def _quote_header(value: str) -> bytes:
    return value.encode("utf-8", "surrogatepass").replace(b'"', b"%22")


@st.composite
def multipart(draw: st.DrawFn) -> tuple[bytes, str]:
    """A hand-built multipart body (parts may lie about names, types and framing)."""
    boundary = draw(st.sampled_from(["b0undary", "x", "a" * 71]))
    parts = []
    if draw(st.booleans()):  # a well-formed file part, so that some uploads succeed
        name, mime, data = draw(st.sampled_from(GOOD_FILES))
        parts.append(
            b"--" + boundary.encode() + b"\r\nContent-Disposition: form-data; "
            b'name="file"; filename="' + name + b'"\r\nContent-Type: ' + mime + b"\r\n\r\n" + data
        )
    for _ in range(draw(st.integers(0, 2))):
        head = b'Content-Disposition: form-data; name="' + _quote_header(draw(FIELD_NAMES)) + b'"'
        filename = draw(FILENAMES)
        if filename is not None:
            head += b'; filename="' + _quote_header(filename) + b'"'
        mime = draw(FILE_TYPES)
        if mime is not None:
            head += b"\r\nContent-Type: " + _quote_header(mime)
        parts.append(b"--" + boundary.encode() + b"\r\n" + head + b"\r\n\r\n" + draw(FILE_DATA))
    body = b"\r\n".join(parts) + b"\r\n--" + boundary.encode() + b"--\r\n"
    if draw(st.integers(0, 3)) == 0:
        body = body[: draw(st.integers(0, len(body)))]
    content_type = draw(
        st.sampled_from(
            [
                f"multipart/form-data; boundary={boundary}",
                f"multipart/form-data; boundary={boundary}",
                f'multipart/form-data; boundary="{boundary}"',
                "multipart/form-data",
                "multipart/form-data; boundary=other",
                "image/png",
                "text/plain",
                "",
            ]
        )
    )
    return body, content_type


UPLOAD_TARGETS = st.sampled_from(
    [
        "/chatkit/upload",
        "/chatkit/upload",
        "/chatkit/upload",
        "@pending_alice",
        "@pending_bob",
        "@bob_url_for_alice",
        "/chatkit/upload/atc_unknown",
        "/chatkit/upload/atc_unknown?token=forged",
        "/chatkit/upload/%00?token=x",
        "/chatkit/upload/" + "a" * 3000,
        "/chatkit/upload/%ED%A0%80",
        "@pending_alice_badtoken",
    ]
)


def upload_url(site: Site, target: str) -> str:
    alice_url, bob_url = site.pending["alice"], site.pending["bob"]
    return {
        "@pending_alice": alice_url,
        "@pending_bob": bob_url,
        # bob's attachment id with alice's token
        "@bob_url_for_alice": bob_url.split("?")[0] + "?" + alice_url.split("?")[1],
        "@pending_alice_badtoken": alice_url + "x",
    }.get(target, target)


# Werkzeug's form parser drops the temporary file of a part cut short by a truncated
# body without closing it (CPython's refcounting closes it at once): not ours to fix.
@pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <function SpooledTemporaryFile.__del__"
    ":pytest.PytestUnraisableExceptionWarning"
)
@settings(FUZZ, max_examples=300)
@given(target=UPLOAD_TARGETS, body=multipart(), method=st.sampled_from(["POST", "PUT"]))
def test_fuzzed_uploads_never_fail_the_server(
    site: Site, target: str, body: tuple[bytes, str], method: str
) -> None:
    raw, content_type = body
    url = upload_url(site, target)
    for client in (site.cookie, site.bearer):
        headers = {"Content-Type": content_type} if content_type else {}
        response = client.open(url, method=method, data=raw, headers=headers)
        assert_clean(
            response.status_code,
            response.headers.get("Content-Type", ""),
            response.data,
            stream_ok=False,
        )
        if response.status_code == 200:
            attachment = response.get_json()
            assert set(attachment) >= {"id", "name", "mime_type", "type"}, attachment
            assert "/" not in attachment["name"] and "\x00" not in attachment["name"]


PREVIEW_IDS = st.one_of(
    st.sampled_from(["@image", "atc_unknown", "%00", "%ED%A0%80", "a" * 2000]),
    st.text(max_size=20).map(lambda s: urllib.parse.quote(s, safe="")),
)
TOKENS = st.one_of(
    st.none(), st.sampled_from(["@valid", "", "x", "@valid" + "x", "a.b.c"]), st.text(max_size=40)
)


@settings(FUZZ, max_examples=300)
@given(
    attachment=PREVIEW_IDS,
    token=TOKENS,
    secret=raw_bodies(),
    content_type=st.sampled_from(CONTENT_TYPES),
)
def test_forged_previews_and_client_secret_bodies_are_clean_answers(
    site: Site, attachment: str, token: str | None, secret: bytes, content_type: str | None
) -> None:
    valid_token = urllib.parse.parse_qs(site.image["preview"].split("?", 1)[1])["token"][0]
    attachment_id = site.image["id"] if attachment == "@image" else attachment
    url = f"/chatkit/attachments/{attachment_id}/preview"
    if token is not None:
        token = token.replace("@valid", valid_token)
        url += "?" + urllib.parse.urlencode({"token": token})
    anonymous = site.app.test_client()
    for client in (site.cookie, site.bearer, anonymous):
        response = client.get(url, buffered=True)
        assert_clean(
            response.status_code,
            response.headers.get("Content-Type", ""),
            response.data,
            stream_ok=False,
            sent=urllib.parse.unquote(url),
        )
        if response.status_code == 200:
            assert response.data.startswith(b"\x89PNG")
        headers = {} if content_type is None else {"Content-Type": content_type}
        minted = client.post("/chatkit/client_secret", data=secret, headers=headers)
        body = assert_clean(
            minted.status_code, minted.headers.get("Content-Type", ""), minted.data, stream_ok=False
        )
        if minted.status_code == 200:
            assert body["client_secret"].endswith("_alice"), body


@settings(FUZZ, max_examples=60)
@given(
    path=st.one_of(
        st.sampled_from(
            [
                "",
                "/upload",
                "/client_secret",
                "/attachments/x/preview",
                "/nope",
                "/static/../../wsgi.py",
                "/%00",
                "/" + "a" * 3000,
            ]
        ),
        st.text(max_size=30).map(lambda s: "/" + urllib.parse.quote(s)),
    ),
    method=st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE"]),
)
def test_any_path_and_method_under_chatkit_answers_json_or_a_file(
    site: Site, path: str, method: str
) -> None:
    response = site.bearer.open("/chatkit" + path, method=method, data=b"{}")
    content_type = response.headers.get("Content-Type", "")
    if response.status_code == 200 and path.startswith("/static/"):
        return  # the reference client's files (served by Flask's static view)
    if path == "/" or "\n" in urllib.parse.unquote(path):
        # no blueprint rule matches "/chatkit/" (nor a path with a newline): the app's 404
        assert response.status_code == 404 and "Traceback" not in response.text
        return
    assert_clean(
        response.status_code,
        content_type,
        response.data,
        stream_ok=False,
        sent=urllib.parse.unquote(path),
    )


# --- a real gunicorn gevent server -----------------------------------------------------

pytest_server = pytest.mark.server


@dataclasses.dataclass
class Served:
    port: int
    token: str
    log: Path
    threads: list[str]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> t.Iterator[Served]:
    tmp = tmp_path_factory.mktemp("fuzz-gunicorn")
    env = server_env(tmp / "instance", DEMO_STREAM_DELAY=0, CHATKIT_HEARTBEAT_INTERVAL=0)
    log = tmp / "server.log"
    with run_gunicorn(env, workers=1, log=log) as port:
        token = cli(env, "create-token", "demo").strip().splitlines()[-1]
        yield Served(port, token, log, [])


def over_http(
    served: Served, raw: bytes, content_type: str | None, path: str = "/chatkit"
) -> tuple[int, str, bytes]:
    conn = HTTPConnection("127.0.0.1", served.port, timeout=60)
    headers = {"Authorization": f"Bearer {served.token}"}
    if content_type is not None:
        headers["Content-Type"] = content_type
    try:
        conn.request("POST", path, body=raw, headers=headers)
        response = conn.getresponse()
        return response.status, response.getheader("Content-Type", ""), response.read()
    finally:
        conn.close()


@pytest_server
@settings(FUZZ, max_examples=300)
@given(
    body=protocol_bodies(),
    raw=st.one_of(st.none(), raw_bodies()),
    content_type=st.sampled_from(CONTENT_TYPES),
)
def test_three_hundred_fuzzed_bodies_leave_a_real_gunicorn_worker_up_and_its_log_clean(
    served: Served, body: t.Any, raw: bytes | None, content_type: str | None
) -> None:
    if raw is None:  # a mutated request, as JSON
        if not served.threads:
            status, _, created = over_http(
                served,
                json.dumps(chatkit_request("threads.create", input=user_input("seed"))).encode(),
                "application/json",
            )
            events = wire.parse_frames(created)
            served.threads.extend([events[0]["thread"]["id"], events[1]["item"]["id"]])
        body = fill_ids(body, {"@thread": served.threads[0], "@item": served.threads[1]})
        raw, content_type = encode(body), "application/json"
        if body.get("type") == "threads.delete":
            served.threads.clear()
    status, ctype, answer = over_http(served, raw, content_type)
    assert_clean(status, ctype, answer, body)
    status, _, listed = over_http(
        served, b'{"type":"threads.list","params":{}}', "application/json"
    )
    assert status == 200, listed[:300]  # still up and answering
    log = served.log.read_text(errors="replace")
    assert "Traceback" not in log and "Error handling request" not in log, log[-3000:]
