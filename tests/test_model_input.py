"""Attachments reach the model: a user message's files as OpenAI input parts.

Files go through the real upload route and a real message; the helper then runs
on the message the store kept. Every part is checked against the installed
``openai`` package's TypedDicts, and once through the ``openai`` client itself
(pointed at a loopback server) so shape drift shows up here first.
"""

from __future__ import annotations

import base64
import io
import json
import threading
import typing as t
from http.server import BaseHTTPRequestHandler
from http.server import HTTPServer

import openai
import pytest
from flask import Flask
from openai.types.chat import ChatCompletionContentPartImageParam
from openai.types.chat import ChatCompletionContentPartParam
from openai.types.chat import ChatCompletionContentPartTextParam
from openai.types.chat import ChatCompletionUserMessageParam
from openai.types.chat.chat_completion_content_part_image_param import ImageURL
from openai.types.chat.chat_completion_content_part_param import File as ChatFileParam
from openai.types.chat.chat_completion_content_part_param import FileFile
from openai.types.responses import EasyInputMessageParam
from openai.types.responses import ResponseInputContentParam
from openai.types.responses import ResponseInputFileParam
from openai.types.responses import ResponseInputImageParam
from openai.types.responses import ResponseInputTextParam
from pydantic import TypeAdapter

from flask_chatkit import ChatKit
from flask_chatkit import stream_text
from flask_chatkit.model_input import Api
from flask_chatkit.model_input import attachment_parts
from flask_chatkit.model_input import data_url
from flask_chatkit.model_input import user_message_input
from flask_chatkit.testing import user_input
from flask_chatkit.types import FileAttachment
from flask_chatkit.types import UserMessageItem
from flask_chatkit.types import UserMessageTagContent
from flask_chatkit.types import UserMessageTextContent
from flask_chatkit.types import utcnow

from .samples import make_png

PNG = make_png(3, 2, (40, 120, 200))
PDF = (
    b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
    b"2 0 obj<</Type/Pages/Kids[]/Count 0>>endobj\n"
    b"trailer<</Root 1 0 R>>\n%%EOF\n"
)
TEXT = "Quarterly notes: revenue up 5 %, café opens in März.\n".encode()

# --- checks against the openai package's own types ------------------------------------

RESPONSES_PARTS: dict[str, t.Any] = {
    "input_text": ResponseInputTextParam,
    "input_image": ResponseInputImageParam,
    "input_file": ResponseInputFileParam,
}
CHAT_PARTS: dict[str, t.Any] = {
    "text": ChatCompletionContentPartTextParam,
    "image_url": ChatCompletionContentPartImageParam,
    "file": ChatFileParam,
}
NESTED: dict[str, t.Any] = {"image_url": ImageURL, "file": FileFile}


def check_typed_dict(value: t.Any, typed_dict: t.Any) -> None:
    """*value* fits *typed_dict*: no unknown keys, every required key, valid values."""
    assert isinstance(value, dict), value
    known = typed_dict.__required_keys__ | typed_dict.__optional_keys__
    assert set(value) <= known, (typed_dict.__name__, set(value) - known)
    assert typed_dict.__required_keys__ <= set(value), (typed_dict.__name__, value)
    TypeAdapter(typed_dict).validate_python(value, strict=True)


def check_parts(parts: list[dict[str, t.Any]], api: Api) -> None:
    kinds = RESPONSES_PARTS if api == "responses" else CHAT_PARTS
    union: t.Any = (
        ResponseInputContentParam if api == "responses" else ChatCompletionContentPartParam
    )
    for part in parts:
        assert part["type"] in kinds, part
        check_typed_dict(part, kinds[part["type"]])
        if api == "chat" and part["type"] in NESTED:
            check_typed_dict(part[part["type"]], NESTED[part["type"]])
        TypeAdapter(union).validate_python(part)


def check_item(item: dict[str, t.Any], api: Api) -> None:
    message_type = EasyInputMessageParam if api == "responses" else ChatCompletionUserMessageParam
    assert set(item) <= message_type.__required_keys__ | message_type.__optional_keys__
    assert item["role"] == "user"
    check_parts(item["content"], api)


# shapes that differ between the two APIs
def image_url_of(part: dict[str, t.Any]) -> str:
    url = part["image_url"] if part["type"] == "input_image" else part["image_url"]["url"]
    assert isinstance(url, str)
    return url


def file_of(part: dict[str, t.Any]) -> dict[str, t.Any]:
    return part if part["type"] == "input_file" else part["file"]


def text_type(api: Api) -> str:
    return "input_text" if api == "responses" else "text"


def decoded(url: str, mime: str) -> bytes:
    prefix = f"data:{mime};base64,"
    assert url.startswith(prefix), url[:60]
    return base64.b64decode(url[len(prefix) :], validate=True)


# --- uploads through the blueprint, messages through the protocol -----------------------


@pytest.fixture
def echo(chatkit: ChatKit) -> None:
    @chatkit.respond
    def respond(thread: t.Any, message: t.Any, context: t.Any) -> t.Any:
        yield from stream_text(thread, "ok")


def upload(client: t.Any, data: bytes, name: str, mime: str) -> dict[str, t.Any]:
    response = client.post(
        "/chatkit/upload",
        data={"file": (io.BytesIO(data), name, mime)},
        content_type="multipart/form-data",
    )
    assert response.status_code == 200, response.data
    return response.get_json()  # type: ignore[no-any-return]


def send(client: t.Any, store: t.Any, ctx: t.Any, attachments: list[str], **extra: t.Any) -> t.Any:
    """Start a thread with one message carrying *attachments*; the message as stored."""
    params = user_input("see files", attachments=attachments, **extra)
    ex = client.chatkit("threads.create", input=params)
    assert ex.status == 200, ex.body
    done = [e["item"] for e in ex.of_type("thread.item.done")]
    done = [item for item in done if item["type"] == "user_message"]
    assert len(done) == 1
    return store.load_item(done[0]["thread_id"], done[0]["id"], ctx)


def parts_for(app: Flask, message: t.Any, **options: t.Any) -> list[dict[str, t.Any]]:
    """The helper on *message*, inside an app context as a respond hook would be."""
    with app.app_context():
        files = app.extensions["chatkit"].server.attachments
        return attachment_parts(message, files, **options)


@pytest.mark.parametrize("api", ["responses", "chat"])
def test_image_pdf_and_text_attachments_become_image_file_and_text_parts(
    app: Flask, echo: None, alice: t.Any, store: t.Any, ctx_of: t.Any, api: Api
) -> None:
    png = upload(alice, PNG, "chart.png", "image/png")
    pdf = upload(alice, PDF, "report.pdf", "application/pdf")
    txt = upload(alice, TEXT, "notes.txt", "text/plain")
    message = send(alice, store, ctx_of("alice"), [png["id"], pdf["id"], txt["id"]])

    parts = parts_for(app, message, api=api)

    check_parts(parts, api)
    image, file, text = parts  # one part per attachment, in the message's order
    assert image["type"] == ("input_image" if api == "responses" else "image_url")
    assert decoded(image_url_of(image), "image/png") == PNG
    assert file["type"] == ("input_file" if api == "responses" else "file")
    assert file_of(file)["filename"] == "report.pdf"
    assert decoded(file_of(file)["file_data"], "application/pdf") == PDF
    assert text == {"type": text_type(api), "text": "notes.txt:\n" + TEXT.decode()}


@pytest.mark.parametrize("api", ["responses", "chat"])
def test_attachment_whose_bytes_were_deleted_becomes_a_note(
    app: Flask, echo: None, alice: t.Any, store: t.Any, ctx_of: t.Any, api: Api
) -> None:
    gone = upload(alice, PNG, "gone.png", "image/png")
    kept = upload(alice, PDF, "kept.pdf", "application/pdf")
    message = send(alice, store, ctx_of("alice"), [gone["id"], kept["id"]])
    with app.app_context():
        files = app.extensions["chatkit"].server.attachments
        files.delete_attachment(message.attachments[0], ctx_of("alice"))

    parts = parts_for(app, message, api=api)

    check_parts(parts, api)
    note, pdf = parts
    assert note["type"] == text_type(api)
    assert "'gone.png'" in note["text"] and "no longer available" in note["text"]
    assert decoded(file_of(pdf)["file_data"], "application/pdf") == PDF  # the rest still goes


@pytest.mark.parametrize("api", ["responses", "chat"])
def test_attachment_over_the_file_size_limit_becomes_a_note_naming_the_limit(
    app: Flask, echo: None, alice: t.Any, store: t.Any, ctx_of: t.Any, api: Api
) -> None:
    pdf = upload(alice, PDF, "big.pdf", "application/pdf")
    png = upload(alice, PNG, "big.png", "image/png")
    message = send(alice, store, ctx_of("alice"), [pdf["id"], png["id"]])

    parts = parts_for(app, message, api=api, max_file_size=len(PNG) - 1)

    check_parts(parts, api)
    assert [p["type"] for p in parts] == [text_type(api)] * 2
    assert "'big.pdf'" in parts[0]["text"]
    assert f"larger than {len(PNG) - 1} bytes" in parts[0]["text"]
    assert "'big.png'" in parts[1]["text"] and "image/png" in parts[1]["text"]
    # exactly at the limit is still sent
    exact = parts_for(app, message, api=api, max_file_size=max(len(PNG), len(PDF)))
    assert decoded(image_url_of(exact[1]), "image/png") == PNG


def test_total_size_per_message_turns_later_attachments_into_notes(
    app: Flask, echo: None, alice: t.Any, store: t.Any, ctx_of: t.Any
) -> None:
    ids = [upload(alice, PNG, f"p{i}.png", "image/png")["id"] for i in range(3)]
    message = send(alice, store, ctx_of("alice"), ids)

    parts = parts_for(app, message, max_total_size=2 * len(PNG))

    check_parts(parts, "responses")
    assert [p["type"] for p in parts] == ["input_image", "input_image", "input_text"]
    assert "'p2.png'" in parts[2]["text"] and f"{2 * len(PNG)} bytes in total" in parts[2]["text"]


@pytest.mark.parametrize("api", ["responses", "chat"])
def test_user_message_input_carries_text_quote_tags_and_attachments(
    app: Flask, echo: None, alice: t.Any, store: t.Any, ctx_of: t.Any, api: Api
) -> None:
    png = upload(alice, PNG, "cat.png", "image/png")
    content = [
        {"type": "input_text", "text": "Compare "},
        {"type": "input_tag", "id": "u1", "text": "@Ada", "data": {"user": 7}},
        {"type": "input_text", "text": " with this"},
    ]
    message = send(
        alice, store, ctx_of("alice"), [png["id"]], content=content, quoted_text="earlier words"
    )

    with app.app_context():
        files = app.extensions["chatkit"].server.attachments
        item = user_message_input(message, files, api=api)

    check_item(item, api)
    kind = text_type(api)
    text, quote, tags, image = item["content"]
    assert text == {"type": kind, "text": "Compare @Ada with this"}
    assert quote["type"] == kind and quote["text"].endswith("\nearlier words")
    assert tags == {"type": kind, "text": 'Tagged in the message:\n- @Ada: {"user": 7}'}
    assert decoded(image_url_of(image), "image/png") == PNG


def test_image_url_option_sends_the_apps_url_and_falls_back_to_the_bytes(
    app: Flask, echo: None, alice: t.Any, store: t.Any, ctx_of: t.Any
) -> None:
    ids = [upload(alice, PNG, name, "image/png")["id"] for name in ("cdn.png", "local.png")]
    message = send(alice, store, ctx_of("alice"), ids)

    def cdn_url(attachment: t.Any) -> str | None:
        return f"https://cdn.example/{attachment.id}" if attachment.name == "cdn.png" else None

    with app.app_context():
        files = app.extensions["chatkit"].server.attachments
        files.delete_attachment(message.attachments[0], ctx_of("alice"))  # URL: bytes unused
    parts = parts_for(app, message, api="chat", image_detail="low", image_url=cdn_url)

    check_parts(parts, "chat")
    by_url, by_bytes = parts
    assert by_url == {
        "type": "image_url",
        "image_url": {"url": f"https://cdn.example/{ids[0]}", "detail": "low"},
    }
    assert decoded(image_url_of(by_bytes), "image/png") == PNG
    assert by_bytes["image_url"]["detail"] == "low"


def test_respond_hook_builds_model_input_from_the_message_it_is_given(
    chatkit: ChatKit, alice: t.Any
) -> None:
    seen: list[dict[str, t.Any]] = []

    @chatkit.respond
    def respond(thread: t.Any, message: t.Any, context: t.Any) -> t.Any:
        seen.append(user_message_input(message, chatkit.server.attachments))
        yield from stream_text(thread, "ok")

    pdf = upload(alice, PDF, "a.pdf", "application/pdf")
    ex = alice.chatkit("threads.create", input=user_input("read it", attachments=[pdf["id"]]))

    assert ex.status == 200 and "error" not in ex.types
    check_item(seen[0], "responses")
    text, file = seen[0]["content"]
    assert text == {"type": "input_text", "text": "read it"}
    assert file["filename"] == "a.pdf"
    assert decoded(file["file_data"], "application/pdf") == PDF


# --- no app needed: a reader callable and constructed messages ------------------------


def message_with(*files: tuple[str, str, bytes]) -> tuple[UserMessageItem, t.Any]:
    """A message with one attachment per (name, mime, bytes), and a reader for them."""
    blobs = {f"atc_{i}": data for i, (_, _, data) in enumerate(files)}
    message = UserMessageItem(
        id="msg_1",
        thread_id="thr_1",
        created_at=utcnow(),
        content=[UserMessageTextContent(text="hi")],
        attachments=[
            FileAttachment(id=f"atc_{i}", name=name, mime_type=mime)
            for i, (name, mime, _) in enumerate(files)
        ],
    )
    return message, lambda attachment: io.BytesIO(blobs[attachment.id])


@pytest.mark.parametrize("api", ["responses", "chat"])
def test_unsupported_type_becomes_a_note_naming_the_file_and_type(api: Api) -> None:
    message, reader = message_with(
        ("archive.zip", "application/zip", b"PK\x03\x04"), ("logo.svg", "image/svg+xml", b"<svg/>")
    )
    parts = attachment_parts(message, reader, api=api)
    check_parts(parts, api)
    assert [p["type"] for p in parts] == [text_type(api)] * 2
    assert "'archive.zip' (application/zip)" in parts[0]["text"]
    assert "'logo.svg' (image/svg+xml)" in parts[1]["text"]  # SVG is not an image input


def test_text_files_of_every_text_type_are_read_with_invalid_utf8_replaced() -> None:
    files = [
        ("a.md", "text/markdown", b"# Title"),
        ("b.csv", "text/csv", b"x,y\n1,2"),
        ("c.json", "application/json", b'{"k": 1}'),
        ("d.txt", "text/plain", b"bad \xff end"),
    ]
    message, reader = message_with(*files)
    parts = attachment_parts(message, reader)
    check_parts(parts, "responses")
    assert [p["text"] for p in parts] == [
        "a.md:\n# Title",
        "b.csv:\nx,y\n1,2",
        'c.json:\n{"k": 1}',
        "d.txt:\nbad \ufffd end",
    ]


def test_long_text_file_is_cut_between_characters_with_a_note() -> None:
    body = "é" * 10  # two bytes each: a cut at 5 bytes falls inside the third
    message, reader = message_with(("long.txt", "text/plain", body.encode()))
    [part] = attachment_parts(message, reader, max_text_size=5)
    assert part["text"] == "long.txt:\néé\n[... cut: only the first 5 bytes are shown]"
    [whole] = attachment_parts(message, reader, max_text_size=20)
    assert whole["text"] == "long.txt:\n" + body


def test_reader_returning_bytes_and_missing_file_are_both_handled() -> None:
    message, _ = message_with(("a.png", "image/png", PNG), ("b.pdf", "application/pdf", PDF))

    def reader(attachment: t.Any) -> bytes:
        if attachment.id == "atc_1":
            raise FileNotFoundError(attachment.id)
        return PNG

    image, note = attachment_parts(message, reader)
    url = data_url("image/png", PNG)
    assert image == {"type": "input_image", "image_url": url, "detail": "auto"}
    assert "'b.pdf'" in note["text"] and "no longer available" in note["text"]


def test_user_message_input_without_files_and_with_a_tag_describer() -> None:
    message, _ = message_with(("a.png", "image/png", PNG))
    message.content.append(UserMessageTagContent(id="t1", text="@Bo", data={"secret": 1}))
    message.content.append(UserMessageTagContent(id="t2", text="#doc", data={"id": 9}))

    def describe(tag: t.Any) -> str | None:
        return None if tag.id == "t1" else f"{tag.text} is document {tag.data['id']}"

    item = user_message_input(message, None, api="chat", describe_tag=describe)

    check_item(item, "chat")
    assert item["content"] == [
        {"type": "text", "text": "hi@Bo#doc"},
        {"type": "text", "text": "Tagged in the message:\n- #doc is document 9"},
    ]


def test_unknown_api_is_a_value_error() -> None:
    message, reader = message_with()
    with pytest.raises(ValueError, match="'responses' or 'chat'"):
        attachment_parts(message, reader, api="assistants")  # type: ignore[arg-type]


# --- the openai client itself accepts and sends the parts ------------------------------


class _Capture(BaseHTTPRequestHandler):
    bodies: list[tuple[str, t.Any]]

    def do_POST(self) -> None:  # http.server's naming
        length = int(self.headers["Content-Length"])
        self.bodies.append((self.path, json.loads(self.rfile.read(length))))
        reply = json.dumps({"id": "x", "object": "response", "choices": []}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args: t.Any) -> None:
        pass


@pytest.fixture
def openai_server() -> t.Iterator[tuple[str, list[tuple[str, t.Any]]]]:
    """A loopback HTTP server recording what the openai client posts."""
    bodies: list[tuple[str, t.Any]] = []
    handler = type("Capture", (_Capture,), {"bodies": bodies})
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", bodies
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_openai_client_sends_the_input_items_unchanged(
    openai_server: tuple[str, list[tuple[str, t.Any]]],
) -> None:
    base_url, bodies = openai_server
    message, reader = message_with(
        ("a.png", "image/png", PNG),
        ("b.pdf", "application/pdf", PDF),
        ("c.txt", "text/plain", TEXT),
    )
    responses_item = user_message_input(message, reader)
    chat_item = user_message_input(message, reader, api="chat")

    with openai.OpenAI(base_url=base_url, api_key="sk-test", max_retries=0) as client:
        client.responses.create(model="gpt-test", input=[responses_item])  # type: ignore[list-item]
        client.chat.completions.create(
            model="gpt-test",
            messages=[chat_item],  # type: ignore[list-item]
        )

    assert [path for path, _ in bodies] == ["/v1/responses", "/v1/chat/completions"]
    assert bodies[0][1]["input"] == [responses_item]
    assert bodies[1][1]["messages"] == [chat_item]
    assert len(responses_item["content"]) == len(chat_item["content"]) == 4
