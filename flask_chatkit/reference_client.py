"""The reference client's one script, joined from its readable parts.

The client lives in ``static/client/`` as a few files, one concern each, with
no build step. ``GET <prefix>/static/chatkit-client.js`` serves them joined, so
a page still loads the whole client with one synchronous ``<script>`` tag and
can call ``FlaskChatKit.mount`` right after it. The script is assembled at the
first request and again only when a part changes on disk, and served like a
static file: ETag, Last-Modified, ``SEND_FILE_MAX_AGE_DEFAULT``, 304s.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import mimetypes
from pathlib import Path

from flask import Response
from flask import send_file

#: The parts' folder (also reachable as static files, but only useful joined).
CLIENT_FOLDER = Path(__file__).parent / "static" / "client"
#: The parts in the order they are joined; base.js says what each one holds.
PARTS = (
    "base.js",
    "markdown.js",
    "api.js",
    "widgets.js",
    # class Chat, then the parts that add its methods (they need it declared)
    "chat.js",
    "threads.js",
    "items.js",
    "composer.js",
    "streams.js",
    "mount.js",
)
#: The styles, declared as ``const CSS`` ahead of the parts (base.js injects them).
STYLESHEET = "chatkit-client.css"
#: The script's name under the blueprint's static path, as pages ask for it.
SCRIPT_NAME = "chatkit-client.js"

Stamp = tuple[tuple[str, int, int], ...]


@dataclasses.dataclass(frozen=True)
class _Script:
    body: bytes
    etag: str
    last_modified: float
    stamp: Stamp


_cached: _Script | None = None


def _stamp() -> Stamp:
    """Path, mtime and size of every file the script is made of."""
    stamp = []
    for name in (STYLESHEET, *PARTS):
        path = CLIENT_FOLDER / name
        stat = path.stat()
        stamp.append((str(path), stat.st_mtime_ns, stat.st_size))
    return tuple(stamp)


def assemble() -> str:
    """The whole client as one script: the styles as ``CSS``, then :data:`PARTS`
    in order, all inside one function scope (the parts share their names and
    make no globals; ``global`` is ``window``)."""
    css = (CLIENT_FOLDER / STYLESHEET).read_text(encoding="utf-8")
    # a template literal keeps the CSS readable: escape what it would interpret
    css = css.replace("\\", "\\\\").replace("`", "\\`").replace("${", "\\${")
    names = ", ".join(PARTS)
    chunks = [
        "/* flask_chatkit reference client (FlaskChatKit.mount), one script joined by",
        " * flask_chatkit/reference_client.py from flask_chatkit/static/client/:",
        f" * {STYLESHEET} as CSS, then {names}.",
        " * Usage, safety and events: see base.js below. */",
        "(function (global) {",
        '"use strict";',
        "",
        f"const CSS = `\n{css}`;",
    ]
    for name in PARTS:
        text = (CLIENT_FOLDER / name).read_text(encoding="utf-8")
        chunks += ["", f"// ==== {name} ".ljust(80, "="), "", text.rstrip("\n")]
    chunks.append('})(typeof window !== "undefined" ? window : this);\n')
    return "\n".join(chunks)


def _script() -> _Script:
    global _cached
    stamp = _stamp()  # before reading: a part changed meanwhile is read again next time
    cached = _cached
    if cached is None or cached.stamp != stamp:
        body = assemble().encode("utf-8")
        cached = _cached = _Script(
            body=body,
            etag=hashlib.sha256(body).hexdigest()[:32],
            last_modified=max(mtime for _, mtime, _ in stamp) / 1e9,
            stamp=stamp,
        )
    return cached


def client_script() -> Response:
    """``GET <prefix>/static/chatkit-client.js``: the reference client as one script."""
    script = _script()
    return send_file(
        io.BytesIO(script.body),
        # the type the static route would give the file (it depends on the platform)
        mimetype=mimetypes.guess_type(SCRIPT_NAME)[0] or "text/javascript",
        etag=script.etag,
        last_modified=script.last_modified,
        conditional=True,
    )


__all__ = ["CLIENT_FOLDER", "PARTS", "SCRIPT_NAME", "STYLESHEET", "assemble", "client_script"]
