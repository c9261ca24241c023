"""The reference client (flask_chatkit/static/client/) in a real browser.

Headless Chromium (the OS package, driven by Playwright) against the example
app served by gunicorn's gevent worker on loopback, with the offline demo
responder. Every test logs in, opens an agent's chat page with
``?client=reference`` and uses it the way a person would; screenshots of the
main states go to ``test-artifacts/screenshots`` (``$CHATKIT_SCREENSHOTS``).
"""

from __future__ import annotations

import json
import re
import typing as t

import pytest

from .browser import log_in
from .browser import screenshot
from .samples import make_png
from .servers import cli
from .servers import server_env

# a real Chromium against the example app under gunicorn
pytestmark = pytest.mark.slow

expect: t.Any = None  # playwright.sync_api.expect, once the browser fixture has imported it


@pytest.fixture(autouse=True)
def _expect(browser: t.Any) -> None:  # noqa: F811
    global expect
    from playwright.sync_api import expect as playwright_expect

    expect = playwright_expect
    expect.set_options(timeout=10_000)


# --- helpers -----------------------------------------------------------------------


def open_chat(page: t.Any, site: t.Any, agent: int = 0) -> t.Any:  # noqa: F811
    """Log in, follow an agent's "Chat" link from the agents list (reference client)."""
    log_in(page, site)
    page.goto("/")
    agents = page.locator("li.agent")
    link = agents.nth(agent).get_by_role("link", name=re.compile(r"^Chat with"))
    href = link.first.get_attribute("href")
    assert href and re.search(r"/agents/\d+/chat$", href), href
    page.goto(href + "?client=reference")
    chat = page.locator("#chat")
    expect(chat.locator("[data-ck='composer']")).to_be_visible()
    expect(chat.locator("[data-ck='threads']")).to_be_attached()
    return chat


def send(chat: t.Any, text: str) -> None:
    box = chat.get_by_label("Message", exact=True)
    box.fill(text)
    box.press("Enter")


def assistant_texts(chat: t.Any) -> t.Any:
    return chat.locator("[data-ck='item'][data-type='assistant_message'] [data-ck='text']")


def wait_idle(chat: t.Any) -> None:
    """Until no request streams (the mount element's aria-busy is gone)."""
    expect(chat).not_to_have_attribute("aria-busy", "true")


RECORD_TEXTS = """
() => {
  window.__texts = [];
  const log = document.querySelector("[data-ck='messages']");
  new MutationObserver(() => {
    const texts = log.querySelectorAll("[data-type='assistant_message'] [data-ck='text']");
    const last = texts[texts.length - 1];
    if (last && window.__texts[window.__texts.length - 1] !== last.textContent) {
      window.__texts.push(last.textContent);
    }
  }).observe(log, {childList: true, subtree: true, characterData: true});
}
"""


# --- tests -------------------------------------------------------------------------


def test_answer_streams_in_and_the_thread_survives_a_reload(
    page: t.Any,
    example_site: t.Any,  # noqa: F811
) -> None:
    chat = open_chat(page, example_site)
    expect(chat.locator("[data-ck='empty']")).to_be_visible()
    screenshot(page, "01-empty-chat")
    page.evaluate(RECORD_TEXTS)
    send(chat, "Hello there, reference client")
    user = chat.locator("[data-ck='item'][data-type='user_message']")
    expect(user).to_have_count(1)
    expect(user).to_contain_text("Hello there, reference client")
    expect(chat.locator("[data-ck='stop']")).to_be_visible()
    answer = assistant_texts(chat)
    expect(answer).to_contain_text("offline demo responder")
    wait_idle(chat)
    final = answer.inner_text()
    expect(answer).to_contain_text("Try /progress")
    texts = [text for text in page.evaluate("window.__texts") if text]
    partial = [text for text in texts if text.strip() != final.strip()]
    assert len(set(partial)) >= 2, texts  # seen growing, not only finished
    assert all(final.startswith(text.strip()[:10]) for text in partial)
    assert all(len(a) <= len(b) for a, b in zip(partial, partial[1:]))
    expect(chat.locator("[data-ck='stop']")).to_be_hidden()
    entry = chat.locator("[data-ck='thread'][aria-current='true']")
    expect(entry).to_have_text("Hello there, reference client")
    screenshot(page, "02-answered")

    page.reload()
    chat = page.locator("#chat")
    expect(chat.locator("[data-ck='item'][data-type='user_message']")).to_contain_text("Hello")
    expect(assistant_texts(chat)).to_have_text(final)
    expect(chat.locator("[data-ck='thread'][aria-current='true']")).to_have_text(
        "Hello there, reference client"
    )
    # a new chat, then back to the old one from the list
    chat.locator("[data-ck='new-thread']").click()
    expect(chat.locator("[data-ck='item']")).to_have_count(0)
    chat.locator("[data-ck='thread']", has_text="Hello there, reference client").click()
    expect(assistant_texts(chat)).to_have_text(final)
    screenshot(page, "03-history-after-reload")


def test_stop_ends_a_slow_answer_and_keeps_the_part_shown(
    page: t.Any,
    example_site: t.Any,  # noqa: F811
) -> None:
    chat = open_chat(page, example_site)
    send(chat, "/slow")
    answer = assistant_texts(chat)
    expect(answer).to_contain_text(re.compile(r"^1 2 3 4 5 6"))
    screenshot(page, "04-streaming-slow")
    # Stop right after a delta is shown (the next is 50 ms away), as a person
    # does who stops at the word they see: the saved answer must end at it.
    page.evaluate(
        """() => new Promise((resolve, reject) => {
          // the log: a render replaces the answer's element with a fresh one
          const log = document.querySelector(
            "[data-ck='item'][data-type='assistant_message']").parentElement;
          const observer = new MutationObserver(() => {
            observer.disconnect();
            document.querySelector("[data-ck='stop']").click();
            resolve();
          });
          observer.observe(log, {subtree: true, childList: true, characterData: true});
          setTimeout(() => reject(new Error("the answer did not grow")), 10000);
        })"""
    )
    wait_idle(chat)
    expect(chat.locator("[data-ck='stop']")).to_be_hidden()
    expect(chat.locator("[data-ck='send']")).to_be_visible()
    shown = answer.inner_text().split()
    full = [str(n) for n in range(1, 401)]
    assert 5 < len(shown) < len(full) and shown == full[: len(shown)]
    stopped = chat.locator("[data-ck='item'][data-type='assistant_message'] [data-ck='stopped']")
    expect(stopped).to_have_text("Stopped.")
    screenshot(page, "05-stopped")

    # the server saves the partial answer once it notices the disconnect
    for _ in range(20):
        page.reload()
        expect(chat.locator("[data-ck='item'][data-type='user_message']")).to_have_count(1)
        if answer.count():
            break
        page.wait_for_timeout(250)
    saved = answer.inner_text().split()
    assert saved == shown  # what the screen showed, not what was produced after it
    expect(stopped).to_have_text("Stopped.")  # still marked after the reload


def test_a_reload_mid_answer_reattaches_and_watches_the_answer_to_its_end(
    page: t.Any,
    example_site: t.Any,  # noqa: F811
) -> None:
    # The example app finishes answers whose page went away (CHATKIT_DISCONNECT).
    chat = open_chat(page, example_site)
    send(chat, "/slow")
    answer = assistant_texts(chat)
    expect(answer).to_contain_text(re.compile(r"^1 2 3 4 5 6"))
    page.reload()
    chat = page.locator("#chat")
    expect(chat.locator("[data-ck='item'][data-type='user_message']")).to_have_count(1)
    expect(chat.locator("[data-ck='status-banner']")).to_be_visible()  # "Still answering…"
    page.evaluate(RECORD_TEXTS)
    full = " ".join(str(n) for n in range(1, 401))
    expect(answer).to_have_text(full, timeout=40_000)  # grew on to its end, here
    texts = [text.strip() for text in page.evaluate("window.__texts") if text.strip()]
    assert len(set(texts)) >= 3 and all(full.startswith(text) for text in texts), texts[:5]
    expect(chat.locator("[data-ck='status-banner']")).to_be_hidden()  # its own status back
    expect(chat.get_by_label("Message", exact=True)).to_be_enabled()
    screenshot(page, "05b-reattached")
    page.reload()  # and that is what was saved
    expect(assistant_texts(page.locator("#chat"))).to_have_text(full)


@pytest.mark.parametrize("strategy", ["direct", "two_phase"])
def test_an_uploaded_image_shows_its_preview_in_the_chip_and_the_message(
    page: t.Any,
    example_site: t.Any,
    strategy: str,  # noqa: F811
) -> None:
    chat = open_chat(page, example_site)
    if strategy == "two_phase":  # the same page's client, mounted again with the other strategy
        page.evaluate(
            """() => FlaskChatKit.mount(document.getElementById("chat"), {
                 apiUrl: chatPage.config.apiUrl, uploadStrategy: {type: "two_phase"}})"""
        )
    requests: list[str] = []
    page.on("request", lambda r: requests.append(f"{r.method} {r.url}"))
    png = make_png(160, 96, (40, 120, 220))
    chat.get_by_label("Attach files").set_input_files(
        {"name": "blue.png", "mimeType": "image/png", "buffer": png}
    )
    chip = chat.locator("[data-ck='attachment']")
    expect(chip).to_have_attribute("data-state", "ready")
    preview = chip.locator("img")
    expect(preview).to_have_attribute("src", re.compile(r"/attachments/[^/]+/preview\?token="))
    expect(preview).to_have_js_property("complete", True)
    assert preview.evaluate("img => img.naturalWidth") == 160
    uploads = [r for r in requests if "/upload" in r]
    if strategy == "direct":  # one multipart POST to the upload URL
        assert re.fullmatch(r"POST .*/chatkit/upload\?agent_id=\d+", uploads[0]), uploads
    else:  # attachments.create, then the bytes to its signed upload URL
        assert "token=" in uploads[0], uploads
    screenshot(page, f"06-attachment-chip-{strategy}")

    send(chat, "What colour is this?")
    expect(chip).to_have_count(0)
    shown = chat.locator("[data-ck='item'][data-type='user_message'] img")
    expect(shown).to_have_count(1)
    expect(shown).to_have_js_property("complete", True)
    assert shown.evaluate("img => img.naturalWidth") == 160
    wait_idle(chat)
    screenshot(page, f"07-attachment-sent-{strategy}")


def test_a_removed_attachment_is_deleted_and_not_sent(
    page: t.Any,
    example_site: t.Any,  # noqa: F811
) -> None:
    chat = open_chat(page, example_site)
    deleted: list[str] = []
    page.on("request", lambda r: deleted.append(r.post_data or ""))
    chat.get_by_label("Attach files").set_input_files(
        {"name": "a.png", "mimeType": "image/png", "buffer": make_png()}
    )
    chip = chat.locator("[data-ck='attachment']")
    expect(chip).to_have_attribute("data-state", "ready")
    attachment_id = chip.get_attribute("data-id")
    chat.get_by_role("button", name="Remove a.png").click()
    expect(chip).to_have_count(0)
    send(chat, "no picture")
    expect(assistant_texts(chat)).to_contain_text("no picture")
    expect(chat.locator("[data-ck='item'][data-type='user_message'] img")).to_have_count(0)
    assert any("attachments.delete" in body and attachment_id in body for body in deleted)


def test_widget_buttons_run_streamed_and_instant_actions(
    page: t.Any,
    example_site: t.Any,  # noqa: F811
) -> None:
    chat = open_chat(page, example_site)
    send(chat, "/widget")
    widget = chat.locator("[data-ck='widget']")
    expect(widget).to_contain_text("Count: 0")
    screenshot(page, "08-widget")
    widget.get_by_role("button", name="+1", exact=True).click()
    expect(widget).to_contain_text("Count: 1")
    wait_idle(chat)
    widget.get_by_role("button", name="+1 (instant)").click()
    expect(widget).to_contain_text("Count: 2")
    page.reload()
    expect(chat.locator("[data-ck='widget']")).to_contain_text("Count: 2")


def test_a_form_widget_sends_its_values(page: t.Any, example_site: t.Any) -> None:  # noqa: F811
    chat = open_chat(page, example_site)
    send(chat, "/form")
    form = chat.locator("form[data-ck='widget']")
    expect(form).to_be_visible()
    form.get_by_label("Time").fill("19:30")
    form.get_by_label("Guests").select_option("2")
    screenshot(page, "09-form-filled")
    form.get_by_role("button", name="Book").click()
    expect(assistant_texts(chat).last).to_have_text("Booked: 2 people at 19:30.")
    expect(chat.locator("[data-ck='widget']")).to_contain_text("Booked: 2 people at 19:30.")
    expect(chat.locator("form[data-ck='widget']")).to_have_count(0)
    wait_idle(chat)
    screenshot(page, "10-form-answered")


def test_an_error_event_is_shown_and_a_failed_send_can_be_retried(
    page: t.Any,
    example_site: t.Any,  # noqa: F811
) -> None:
    chat = open_chat(page, example_site)
    send(chat, "/error")
    error = chat.locator("[data-ck='error']")
    expect(error).to_contain_text("The demo failed on purpose")
    expect(error).to_have_attribute("role", "alert")
    expect(assistant_texts(chat)).to_contain_text("something went wrong partway")
    wait_idle(chat)
    # Retry runs the turn again (threads.retry_after_item): the same partial answer and error
    retried = []
    page.on(
        "request",
        lambda r: retried.append(r) if "retry_after_item" in (r.post_data or "") else None,
    )
    error.locator("[data-ck='retry']").click()
    expect(chat.locator("[data-ck='item'][data-type='assistant_message']")).to_have_count(1)
    expect(chat.locator("[data-ck='error']")).to_have_count(1)
    wait_idle(chat)
    assert len(retried) == 1
    screenshot(page, "11-error")

    # the server answers the next message with a 503 once: the draft comes back, Retry sends it
    failures = []

    def fail_once(route: t.Any) -> None:
        if not failures and "threads.add_user_message" in (route.request.post_data or ""):
            failures.append(route.request.post_data)
            error = {"code": "unavailable", "message": "Busy, try later."}
            route.fulfill(
                status=503, content_type="application/json", body=json.dumps({"error": error})
            )
        else:
            route.continue_()

    page.route("**/chatkit?*", fail_once)
    send(chat, "second try")
    error = chat.locator("[data-ck='error']", has_text="Busy, try later.")
    expect(error).to_be_visible()
    expect(chat.get_by_label("Message", exact=True)).to_have_value("second try")
    error.locator("[data-ck='retry']").click()
    user = chat.locator("[data-ck='item'][data-type='user_message']")
    expect(user.last).to_contain_text("second try")
    expect(assistant_texts(chat).last).to_contain_text("second try")
    assert len(failures) == 1


def test_feedback_buttons_store_a_vote(page: t.Any, example_site: t.Any) -> None:  # noqa: F811
    chat = open_chat(page, example_site)
    send(chat, "Rate me")
    wait_idle(chat)
    message = chat.locator("[data-ck='item'][data-type='assistant_message']")
    item_id = message.get_attribute("data-id")
    good = message.locator("[data-ck='feedback-positive']")
    expect(good).to_have_accessible_name("Good response")
    good.click()
    expect(good).to_have_attribute("data-sent", "true")
    expect(good).to_have_attribute("aria-pressed", "true")
    env = server_env(example_site.log.parent / "instance")
    votes = [json.loads(line) for line in cli(env, "chatkit", "export-feedback").splitlines()]
    assert any(v["item_id"] == item_id and v["kind"] == "positive" for v in votes), votes


def test_markup_in_model_output_stays_text_and_markdown_is_rendered(
    page: t.Any,
    example_site: t.Any,  # noqa: F811
) -> None:
    chat = open_chat(page, example_site)
    attack = (
        '<img src=x onerror="window.pwned=1"> <script>window.pwned=2</script> '
        "[click](javascript:window.pwned=3) **bold** `code` https://example.com/a"
    )
    send(chat, attack)
    answer = assistant_texts(chat)
    expect(answer).to_contain_text("<script>window.pwned=2</script>")
    wait_idle(chat)
    expect(answer).to_contain_text('<img src=x onerror="window.pwned=1">')
    assert answer.locator("img, script").count() == 0
    assert chat.locator("[data-ck='messages'] img, [data-ck='messages'] script").count() == 0
    assert page.evaluate("window.pwned") is None
    expect(answer.locator("strong")).to_have_text("bold")
    expect(answer.locator("code")).to_have_text("code")
    links = answer.locator("a")
    expect(links).to_have_count(1)  # the https URL, not the javascript: one
    expect(links).to_have_attribute("href", "https://example.com/a")
    expect(links).to_have_attribute("rel", "noopener noreferrer")
    expect(chat.locator("[data-ck='item'][data-type='user_message']")).to_contain_text("<img src=x")
    # block markdown, rendered by the client's own renderer
    rendered = page.evaluate(
        """() => {
          const el = document.createElement("div");
          el.appendChild(FlaskChatKit.renderMarkdown(
            "# Title\\n\\n- one\\n- *two*\\n\\n1. first\\n\\n```\\n<b>x</b>\\n```\\n<b>raw</b>"));
          return el.innerHTML;
        }"""
    )
    assert rendered == (
        "<h1>Title</h1><ul><li>one</li><li><em>two</em></li></ul><ol><li>first</li></ol>"
        "<pre><code>&lt;b&gt;x&lt;/b&gt;</code></pre><p>&lt;b&gt;raw&lt;/b&gt;</p>"
    )


def test_a_phone_gets_a_collapsible_thread_list(
    browser: t.Any,
    example_site: t.Any,  # noqa: F811
) -> None:
    from .browser import loopback_only

    context = browser.new_context(
        base_url=example_site.url,
        viewport={"width": 390, "height": 844},
        is_mobile=True,
        has_touch=True,
        device_scale_factor=2,
    )
    context.route("**/*", loopback_only)
    context.set_default_timeout(10_000)
    try:
        page = context.new_page()
        chat = open_chat(page, example_site)
        threads = chat.locator("[data-ck='sidebar']")
        toggle = chat.get_by_role("button", name="Show conversations")
        expect(threads).to_be_hidden()
        send(chat, "Hello from a phone")
        expect(assistant_texts(chat)).to_contain_text("Hello from a phone")
        wait_idle(chat)
        box = chat.locator("[data-ck='composer']").bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390
        screenshot(page, "12-phone")
        toggle.click()
        expect(toggle).to_have_attribute("aria-expanded", "true")
        expect(threads).to_be_visible()
        page.wait_for_function(  # the slide-in has finished
            "document.querySelector(\"[data-ck='sidebar']\").getAnimations().length === 0"
        )
        expect(threads).to_be_in_viewport(ratio=1)
        expect(chat.locator("[data-ck='thread']")).to_contain_text(["Hello from a phone"])
        screenshot(page, "13-phone-threads")
        chat.locator("[data-ck='thread']", has_text="Hello from a phone").click()
        expect(threads).to_be_hidden()
    finally:
        context.close()


def test_keyboard_alone_writes_and_sends_a_message(
    page: t.Any,
    example_site: t.Any,  # noqa: F811
) -> None:
    chat = open_chat(page, example_site)
    box = chat.get_by_label("Message", exact=True)
    for _ in range(40):  # Tab through the page until the message box has focus
        page.keyboard.press("Tab")
        if box.evaluate("el => el === document.activeElement"):
            break
    expect(box).to_be_focused()
    page.keyboard.type("first line")
    page.keyboard.press("Shift+Enter")
    page.keyboard.type("second line")
    expect(box).to_have_value("first line\nsecond line")
    page.keyboard.press("Enter")
    user = chat.locator("[data-ck='item'][data-type='user_message'] [data-ck='user-text']")
    expect(user).to_contain_text("first line\nsecond line")
    expect(assistant_texts(chat)).to_contain_text("second line")
    wait_idle(chat)
    # the feedback buttons are reachable with Tab and work with Enter
    good = chat.locator("[data-ck='feedback-positive']")
    good.focus()
    page.keyboard.press("Enter")
    expect(good).to_have_attribute("aria-pressed", "true")
    assert good.evaluate("el => getComputedStyle(el).boxShadow") != "none"  # focus is visible


def test_client_tools_answer_tool_calls_and_questions_get_answers(
    page: t.Any,
    example_site: t.Any,  # noqa: F811
) -> None:
    chat = open_chat(page, example_site)
    send(chat, "/tool")  # the demo asks the page for its title and URL
    tool = chat.locator("[data-ck='item'][data-type='client_tool_call']")
    expect(tool).to_contain_text("get_page_context")
    context = {"title": page.title(), "url": page.url}
    assert context["title"] and context["url"].endswith("/chat?client=reference")
    quoted = json.dumps(context, ensure_ascii=False, sort_keys=True)  # as resume() writes it
    expect(assistant_texts(chat).last).to_have_text(f"The page sent its context: {quoted}")
    wait_idle(chat)

    send(chat, "/ask")
    question = chat.locator("[data-ck='structured-input']")
    question.get_by_label("green").check()
    question.get_by_label("Why that one?").fill("It is calm")
    screenshot(page, "14-structured-input")
    question.get_by_role("button", name="Submit").click()
    expect(assistant_texts(chat).last).to_have_text(
        "Your answers: Which colour do you like best? → green; Why that one? → It is calm"
    )
    expect(chat.locator("[data-ck='structured-input'] textarea")).to_have_count(0)
