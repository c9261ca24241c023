"""What ``pip install flask-chatkit`` would put into site-packages: the library only.

The wheel is built from a copy of the working tree, offline (no build
isolation: setuptools and wheel come from the dev extra), exactly as a release
would be.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from flask_chatkit.reference_client import PARTS
from flask_chatkit.reference_client import STYLESHEET

# builds the wheel
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
#: What the wheel is built from: the files a release is made of.
SOURCES = ("flask_chatkit", "example_app", "setup.cfg", "pyproject.toml", "README.md", "wsgi.py")


def build_wheel(tmp_path: Path) -> zipfile.ZipFile:
    tree = tmp_path / "src"
    tree.mkdir()
    for name in SOURCES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, tree / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, tree / name)
    out = tmp_path / "dist"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-q",
            "-w",
            str(out),
            str(tree),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (wheel,) = out.glob("flask_chatkit-*.whl")
    return zipfile.ZipFile(wheel)


def test_the_wheel_ships_the_library_and_nothing_else(tmp_path: Path) -> None:
    with build_wheel(tmp_path) as wheel:
        names = wheel.namelist()
        tops = {name.split("/", 1)[0] for name in names}
        info = next(top for top in tops if top.endswith(".dist-info"))
        assert tops == {"flask_chatkit", info}, sorted(tops)
        assert wheel.read(f"{info}/top_level.txt").decode().split() == ["flask_chatkit"]
    # what the library needs at run time is in it
    client = [f"flask_chatkit/static/client/{name}" for name in (*PARTS, STYLESHEET)]
    for needed in (
        "flask_chatkit/py.typed",
        *client,
        "flask_chatkit/static/chatkit-fetch.js",
        "flask_chatkit/migrations/__init__.py",
    ):
        assert needed in names, needed
    assert any(n.startswith("flask_chatkit/migrations/versions/") for n in names)
    assert not any("example_app" in name or name == "wsgi.py" for name in names)
