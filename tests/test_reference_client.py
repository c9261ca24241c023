"""The reference client's script: its parts in ``static/client/`` served as one.

Pages load ``<prefix>/static/chatkit-client.js`` with one script tag; the
blueprint joins the parts (and the CSS) into it, and serves it like a static
file. How the client behaves is tests/test_browser.py's business.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from flask import Flask
from flask import url_for

from flask_chatkit import reference_client
from flask_chatkit.reference_client import CLIENT_FOLDER
from flask_chatkit.reference_client import PARTS
from flask_chatkit.reference_client import STYLESHEET

from .conftest import make_app

URL = "/chatkit/static/chatkit-client.js"
#: A name declared at the top level of a part (the parts share one scope).
TOP_LEVEL_NAME = re.compile(
    r"^(?:async\s+)?(?:function\*?|class|const|let|var)\s+(\w+)", re.MULTILINE
)


@pytest.fixture
def app(tmp_path: Path) -> Flask:
    return make_app("memory", tmp_path)


def test_the_script_is_the_styles_then_every_part_in_order(app: Flask) -> None:
    with app.test_request_context():
        assert url_for("chatkit.static", filename="chatkit-client.js") == URL
    response = app.test_client().get(URL)
    assert response.status_code == 200
    assert response.mimetype in ("text/javascript", "application/javascript")
    script = response.get_data(as_text=True)
    response.close()
    assert script == reference_client.assemble()
    css = (CLIENT_FOLDER / STYLESHEET).read_text()
    assert f"const CSS = `\n{css}`;" in script
    positions = [script.index((CLIENT_FOLDER / name).read_text().rstrip("\n")) for name in PARTS]
    assert positions == sorted(positions)
    assert script.index("const CSS") < positions[0]
    assert script.rstrip().endswith('})(typeof window !== "undefined" ? window : this);')


def test_the_script_is_cached_like_a_static_file(app: Flask) -> None:
    client = app.test_client()
    first = client.get(URL)
    etag = first.headers["ETag"]
    assert first.headers["Last-Modified"]
    # like the static route: revalidate every time unless SEND_FILE_MAX_AGE_DEFAULT says
    fetch_js = client.get("/chatkit/static/chatkit-fetch.js")
    assert first.headers["Cache-Control"] == fetch_js.headers["Cache-Control"] == "no-cache"
    first.close()
    fetch_js.close()
    again = client.get(URL, headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.data == b""
    assert client.head(URL).headers["ETag"] == etag
    app.config["SEND_FILE_MAX_AGE_DEFAULT"] = 3600
    cached = client.get(URL)
    assert cached.headers["Cache-Control"] == "public, max-age=3600"
    assert cached.headers["ETag"] == etag
    cached.close()


def test_a_changed_part_is_served_at_the_next_request(
    app: Flask, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "client"
    shutil.copytree(CLIENT_FOLDER, folder)
    monkeypatch.setattr(reference_client, "CLIENT_FOLDER", folder)
    client = app.test_client()
    before = client.get(URL)
    (folder / "mount.js").write_text((folder / "mount.js").read_text() + "// edited\n")
    after = client.get(URL)
    assert after.headers["ETag"] != before.headers["ETag"]
    assert after.get_data(as_text=True).count("// edited") == 1
    before.close()
    after.close()


def test_no_name_is_declared_by_two_parts() -> None:
    declared: dict[str, str] = {}
    for name in PARTS:
        for found in TOP_LEVEL_NAME.findall((CLIENT_FOLDER / name).read_text()):
            assert found not in declared, f"{found} in {declared.get(found)} and {name}"
            declared[found] = name
    assert {"mount", "Chat", "Api", "WidgetRenderer", "renderMarkdown", "h"} <= set(declared)


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_every_part_and_the_joined_script_parse(tmp_path: Path) -> None:
    joined = tmp_path / "chatkit-client.js"
    joined.write_text(reference_client.assemble())
    for path in [*(CLIENT_FOLDER / name for name in PARTS), joined]:
        done = subprocess.run(
            ["node", "--check", str(path)], capture_output=True, text=True, timeout=60, check=False
        )
        assert done.returncode == 0, (path.name, done.stderr)
