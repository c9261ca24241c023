"""A real headless Chromium (the OS package) driven by Playwright, and the example app
served by gunicorn's gevent worker for it to visit.

The fixtures ``browser``, ``example_site`` and ``page`` are registered once, in
conftest.py (Playwright's sync API allows one instance per thread, so a test
module must not import them again: that would start a second browser).

The browser is the system's ``chromium`` (Debian's package; Playwright's own
download is never used). Every page may reach 127.0.0.1 only: other requests
(OpenAI's CDN, fonts, telemetry) are aborted, so nothing leaves the machine.
Tests skip when Playwright or Chromium is missing, unless
``CHATKIT_REQUIRE_BROWSER=1`` (CI) makes that a failure. Screenshots go to
``$CHATKIT_SCREENSHOTS`` (default ``test-artifacts/screenshots``).
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import typing as t
import urllib.parse
from pathlib import Path

import pytest

from .servers import ROOT
from .servers import run_gunicorn
from .servers import server_env

DEMO_LINE = re.compile(r"Demo login: username=(\S+) password=(\S+)")
SCREENSHOTS = Path(os.environ.get("CHATKIT_SCREENSHOTS") or ROOT / "test-artifacts" / "screenshots")
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-sync",
    "--metrics-recording-only",
    "--no-first-run",
    "--disable-features=Translate,OptimizationHints,MediaRouter",
]


def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def need_browser() -> t.Any:
    """The Playwright module, or skip (fail under ``CHATKIT_REQUIRE_BROWSER=1``)."""
    required = os.environ.get("CHATKIT_REQUIRE_BROWSER") == "1"
    try:
        from playwright import sync_api
    except ImportError:
        if required:
            pytest.fail("CHATKIT_REQUIRE_BROWSER=1 but Playwright is not installed")
        pytest.skip("Playwright is not installed (pip install -e '.[dev]')")
    if chromium_path() is None:
        if required:
            pytest.fail("CHATKIT_REQUIRE_BROWSER=1 but no chromium is installed")
        pytest.skip("no chromium on PATH (apt-get install chromium)")
    return sync_api


@pytest.fixture(scope="session")
def browser() -> t.Iterator[t.Any]:
    """One headless Chromium for the session."""
    sync_api = need_browser()
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=chromium_path(), args=CHROMIUM_ARGS, headless=True
        )
        yield chromium
        chromium.close()


def loopback_only(route: t.Any) -> None:
    host = urllib.parse.urlsplit(route.request.url).hostname
    if host in ("127.0.0.1", "localhost") or route.request.url.startswith(("data:", "blob:")):
        route.continue_()
    else:
        route.abort()


@dataclasses.dataclass
class Site:
    """The example app under gunicorn: its address, demo login and log file."""

    url: str
    username: str
    password: str
    log: Path


@pytest.fixture(scope="session")
def example_site(tmp_path_factory: pytest.TempPathFactory) -> t.Iterator[Site]:
    """The example app (offline demo responder) served by gunicorn -k gevent."""
    tmp = tmp_path_factory.mktemp("browser-site")
    env = server_env(tmp / "instance", DEMO_SLOW_DELAY=0.05, DEMO_SLOW_CHUNKS=400)
    log = tmp / "server.log"
    with run_gunicorn(env, workers=1, log=log, ready=DEMO_LINE.search) as port:
        found = DEMO_LINE.search(log.read_text())
        assert found is not None
        yield Site(f"http://127.0.0.1:{port}", found.group(1), found.group(2), log)


@pytest.fixture
def page(browser: t.Any, example_site: Site) -> t.Iterator[t.Any]:
    """A fresh browser context (no cookies) on the example site, loopback only."""
    context = browser.new_context(
        base_url=example_site.url, viewport={"width": 1280, "height": 800}
    )
    context.route("**/*", loopback_only)
    context.set_default_timeout(10_000)
    page = context.new_page()
    yield page
    context.close()


def screenshot(page: t.Any, name: str) -> Path:
    """Save a full-page screenshot as ``<SCREENSHOTS>/<name>.png`` for reviewers."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def log_in(page: t.Any, site: Site) -> None:
    """Log in through the login form as the demo user."""
    page.goto("/login")
    page.get_by_label("Username").fill(site.username)
    page.get_by_label("Password").fill(site.password)
    page.get_by_role("button", name=re.compile("log in", re.I)).click()
    page.wait_for_url(re.compile(r".*/$|.*/agents.*"))
