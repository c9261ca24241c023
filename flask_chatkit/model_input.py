"""Turn a user message and its attachments into OpenAI model input (no Flask here).

For a ``respond`` hook that calls the OpenAI API itself::

    from flask_chatkit.model_input import user_message_input

    @chatkit.respond
    def respond(thread, user_message, context):
        files = chatkit.server.attachments
        item = user_message_input(user_message, files)          # Responses API
        stream = client.responses.create(model=..., input=[item], stream=True)
        ...

Images (PNG, JPEG, GIF, WebP) become image inputs, PDFs file inputs, text files
(plain, Markdown, CSV, JSON) text; any other file, and any file whose bytes are
gone or too large, becomes a one-line note so the model knows it was attached.
Nothing here raises for a missing or oversize file: one bad attachment must not
cost the user their whole turn.

Bytes come from the attachments (anything with ``open(attachment_id)``, such
as :class:`~flask_chatkit.attachments.Attachments`), or from a callable
``reader(attachment) -> BinaryIO | bytes``.
"""

from __future__ import annotations

import base64
import codecs
import json
import logging
import typing as t

from .errors import RequestError

if t.TYPE_CHECKING:
    from .attachments import Attachments

logger = logging.getLogger("flask_chatkit")

Api = t.Literal["responses", "chat"]
ImageDetail = t.Literal["auto", "low", "high"]

#: Image types the OpenAI models accept as image input.
IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
#: Types sent as file input.
FILE_TYPES = frozenset({"application/pdf"})
#: Types read as UTF-8 text and sent as text.
TEXT_TYPES = frozenset(
    {"text/plain", "text/markdown", "text/x-markdown", "text/csv", "application/json"}
)

#: Largest file sent to the model (bytes); larger ones become a note.
DEFAULT_MAX_FILE_SIZE = 10 * 1024 * 1024
#: Most attachment bytes sent for one message; attachments past it become notes.
DEFAULT_MAX_TOTAL_SIZE = 20 * 1024 * 1024
#: Longest text file sent whole (bytes); longer ones are cut there, with a note.
DEFAULT_MAX_TEXT_SIZE = 256 * 1024


class Opener(t.Protocol):
    """Anything (such as Attachments) that can hand out an attachment's bytes."""

    def open(self, attachment_id: str) -> t.BinaryIO:
        """The bytes; :class:`FileNotFoundError` if there are none."""
        ...


#: Where attachment bytes come from: anything with ``open(id)`` (such as
#: ``chatkit.server.attachments``), or ``reader(attachment)``.
ByteSource: t.TypeAlias = "Opener | Attachments | t.Callable[[t.Any], t.BinaryIO | bytes]"


class _Budget:
    """The bytes still allowed for one message."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.left = total


class _Unavailable(Exception):
    """Why an attachment's bytes are not sent (the text of the note)."""


def attachment_parts(
    message: t.Any,
    files: ByteSource,
    *,
    api: Api = "responses",
    max_file_size: int = DEFAULT_MAX_FILE_SIZE,
    max_total_size: int = DEFAULT_MAX_TOTAL_SIZE,
    max_text_size: int = DEFAULT_MAX_TEXT_SIZE,
    image_url: t.Callable[[t.Any], str | None] | None = None,
    image_detail: ImageDetail = "auto",
    text_types: t.Collection[str] = TEXT_TYPES,
) -> list[dict[str, t.Any]]:
    """The content parts for the attachments of *message*, in their order.

    :param message: a :class:`~flask_chatkit.types.UserMessageItem` (anything
        with an ``attachments`` list).
    :param files: the attachments (``chatkit.server.attachments``) or a
        ``reader(attachment)`` returning a binary file or bytes.
    :param api: ``"responses"`` (Responses API content parts) or ``"chat"``
        (Chat Completions content parts).
    :param max_file_size: a larger file becomes a note instead of its content.
    :param max_total_size: the attachment bytes sent for the whole message; once
        spent, the remaining attachments become notes.
    :param max_text_size: text files are cut after this many bytes (with a note).
    :param image_url: ``image_url(attachment) -> url`` to send images by URL (e.g.
        a signed, publicly reachable URL) instead of as data URLs; return
        ``None`` to fall back to a data URL for that image.
    :param image_detail: the ``detail`` of image inputs.
    :param text_types: MIME types read as UTF-8 text.
    """
    _check_api(api)
    budget = _Budget(max_total_size)
    text_mime_types = frozenset(m.lower() for m in text_types)
    parts: list[dict[str, t.Any]] = []
    for attachment in getattr(message, "attachments", None) or ():
        parts.append(
            _attachment_part(
                attachment,
                files,
                api=api,
                budget=budget,
                max_file_size=max_file_size,
                max_text_size=max_text_size,
                image_url=image_url,
                image_detail=image_detail,
                text_types=text_mime_types,
            )
        )
    return parts


def user_message_input(
    message: t.Any,
    files: ByteSource | None,
    *,
    api: Api = "responses",
    describe_tag: t.Callable[[t.Any], str | None] | None = None,
    **options: t.Any,
) -> dict[str, t.Any]:
    """The whole user message as one input item: ``{"role": "user", "content": [...]}``.

    The content is the message text (tags inline as their text), then the quoted
    text, then a list of the tagged entities, then the attachments (see
    :func:`attachment_parts`, which takes the remaining keyword *options*).

    :param files: as for :func:`attachment_parts`; ``None`` leaves attachments out.
    :param describe_tag: ``describe_tag(tag) -> str | None``, one line per tag in
        the tag list (``None`` skips the tag); by default the tag's text and data.
    """
    _check_api(api)
    text_type = "input_text" if api == "responses" else "text"
    content: list[dict[str, t.Any]] = []

    text = "".join(part.text for part in getattr(message, "content", ()) or ())
    if text.strip():
        content.append({"type": text_type, "text": text})

    quoted = getattr(message, "quoted_text", None)
    if quoted and quoted.strip():
        content.append({"type": text_type, "text": f"The user is quoting this text:\n{quoted}"})

    describe = describe_tag or _describe_tag
    lines = []
    for part in getattr(message, "content", ()) or ():
        if getattr(part, "type", None) == "input_tag":
            line = describe(part)
            if line:
                lines.append(f"- {line}")
    if lines:
        content.append({"type": text_type, "text": "Tagged in the message:\n" + "\n".join(lines)})

    if files is not None:
        content.extend(attachment_parts(message, files, api=api, **options))
    return {"role": "user", "content": content}


def data_url(mime_type: str, data: bytes) -> str:
    """``data:<mime_type>;base64,...``."""
    return f"data:{mime_type};base64,{base64.b64encode(data).decode('ascii')}"


# --- one attachment -----------------------------------------------------------------


def _attachment_part(
    attachment: t.Any,
    files: ByteSource,
    *,
    api: Api,
    budget: _Budget,
    max_file_size: int,
    max_text_size: int,
    image_url: t.Callable[[t.Any], str | None] | None,
    image_detail: ImageDetail,
    text_types: frozenset[str],
) -> dict[str, t.Any]:
    name = str(getattr(attachment, "name", "") or "file")
    mime = _base_mime(str(getattr(attachment, "mime_type", "") or ""))

    if mime in IMAGE_TYPES:
        url = image_url(attachment) if image_url is not None else None
        if url is None:
            try:
                url = data_url(mime, _read(files, attachment, max_file_size, budget))
            except _Unavailable as why:
                return _note(api, name, mime, str(why))
        if api == "responses":
            return {"type": "input_image", "image_url": url, "detail": image_detail}
        return {"type": "image_url", "image_url": {"url": url, "detail": image_detail}}

    if mime in FILE_TYPES:
        try:
            file_data = data_url(mime, _read(files, attachment, max_file_size, budget))
        except _Unavailable as why:
            return _note(api, name, mime, str(why))
        if api == "responses":
            return {"type": "input_file", "filename": name, "file_data": file_data}
        return {"type": "file", "file": {"filename": name, "file_data": file_data}}

    if mime in text_types:
        keep = min(max_text_size, max_file_size)
        try:
            data = _read(files, attachment, max_file_size, budget, keep=keep)
        except _Unavailable as why:
            return _note(api, name, mime, str(why))
        if len(data) <= keep:
            return _text(api, f"{name}:\n{data.decode('utf-8', errors='replace')}")
        # final=False: a character split by the cut is dropped, not shown as garbage
        body = codecs.getincrementaldecoder("utf-8")("replace").decode(data[:keep], final=False)
        return _text(api, f"{name}:\n{body}\n[... cut: only the first {keep} bytes are shown]")

    return _text(
        api, f"[The user attached {name!r} ({mime or 'unknown type'}); its content is not shown.]"
    )


def _read(
    files: ByteSource,
    attachment: t.Any,
    max_file_size: int,
    budget: _Budget,
    *,
    keep: int | None = None,
) -> bytes:
    """The attachment's bytes, within the limits; :class:`_Unavailable` says why not.

    *keep* (text files, at most *max_file_size*): read only this much plus one
    byte, so a long text file is cut instead of refused, and only what is kept
    counts against the budget.
    """
    limit = max_file_size if keep is None else keep
    try:
        source = _open(files, attachment)
    except FileNotFoundError:
        raise _Unavailable("its content is no longer available") from None
    except RequestError:  # an id the store refuses as a key: nothing stored under it
        raise _Unavailable("its content is no longer available") from None
    except OSError as exc:
        logger.warning("Attachment %s could not be read: %s", attachment.id, exc)
        raise _Unavailable("its content could not be read") from None
    try:
        if isinstance(source, (bytes, bytearray)):
            data = bytes(source[: limit + 1])
        else:
            try:
                data = _read_at_most(source, limit + 1)
            finally:
                source.close()  # not ``with``: S3 bodies need not be context managers
    except OSError as exc:
        logger.warning("Attachment %s could not be read: %s", attachment.id, exc)
        raise _Unavailable("its content could not be read") from None

    if keep is None and len(data) > max_file_size:
        raise _Unavailable(f"it is larger than {max_file_size} bytes")
    used = min(len(data), limit)
    if used > budget.left:
        raise _Unavailable(f"the attachments of this message exceed {budget.total} bytes in total")
    budget.left -= used
    return data


def _open(files: ByteSource, attachment: t.Any) -> t.BinaryIO | bytes:
    opener = getattr(files, "open", None)
    if callable(opener):
        return opener(attachment.id)  # type: ignore[no-any-return]
    if callable(files):
        return files(attachment)
    raise TypeError(
        "files must be Attachments or anything with open(attachment_id) "
        "or a callable reader(attachment)."
    )


def _read_at_most(stream: t.BinaryIO, size: int) -> bytes:
    # read() may return less than asked before the end (sockets, S3 bodies)
    chunks = []
    while size > 0:
        chunk = stream.read(min(size, 64 * 1024))
        if not chunk:
            break
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def _note(api: Api, name: str, mime: str, reason: str) -> dict[str, t.Any]:
    return _text(api, f"[The user attached {name!r} ({mime}), but it is not included: {reason}.]")


def _text(api: Api, text: str) -> dict[str, t.Any]:
    return {"type": "input_text" if api == "responses" else "text", "text": text}


def _describe_tag(tag: t.Any) -> str:
    data = getattr(tag, "data", None)
    if not data:
        return str(tag.text)
    return f"{tag.text}: {json.dumps(data, ensure_ascii=False, default=str, sort_keys=True)}"


def _base_mime(mime_type: str) -> str:
    return mime_type.split(";", 1)[0].strip().lower()


def _check_api(api: str) -> None:
    if api not in ("responses", "chat"):
        raise ValueError(f"api must be 'responses' or 'chat', not {api!r}")


__all__ = [
    "DEFAULT_MAX_FILE_SIZE",
    "DEFAULT_MAX_TEXT_SIZE",
    "DEFAULT_MAX_TOTAL_SIZE",
    "FILE_TYPES",
    "IMAGE_TYPES",
    "TEXT_TYPES",
    "attachment_parts",
    "data_url",
    "user_message_input",
]
