"""The chat pages in a real Chromium: the official component is wired right, and
the page falls back to the reference client when it cannot be loaded.

OpenAI's CDN is never reached: the ``page`` fixture aborts every request that
does not go to 127.0.0.1, and the tests that need the component answer the
CDN URL with a local stub that defines ``openai-chatkit`` and records what
the page passes to ``setOptions``.
"""

from __future__ import annotations

import json
import re
import time
import typing as t

import pytest

from .browser import Site
from .browser import log_in
from .browser import screenshot
from .servers import ROOT

# a real Chromium against the example app under gunicorn
pytestmark = pytest.mark.slow

CDN = "https://cdn.platform.openai.com/deployments/chatkit/chatkit.js"
#: The page's default wait for the component (CHATKIT_SCRIPT_TIMEOUT).
SCRIPT_TIMEOUT = 4.0
#: One of the reference client's parts (served joined as /chatkit/static/chatkit-client.js).
CLIENT_JS = ROOT / "flask_chatkit" / "static" / "client" / "mount.js"

#: Stands in for OpenAI's loader: defines the element and records its options.
STUB_JS = """
class StubChatKit extends HTMLElement {
  fetchUpdates() {
    window.__updates = (window.__updates || 0) + 1;
    return Promise.resolve();
  }
  setOptions(options) {
    window.__chatkitOptions = options;
    this.style.cssText = "display:grid;place-items:center;background:#eef4ff;font:16px system-ui";
    this.textContent = "openai-chatkit (test stub) for " + options.api.url;
  }
}
customElements.define("openai-chatkit", StubChatKit);
"""

RECORDED = """() => {
  const o = window.__chatkitOptions;
  return {api: {url: o.api.url, domainKey: o.api.domainKey, uploadStrategy: o.api.uploadStrategy,
                fetch: typeof o.api.fetch},
          locale: o.locale, header: o.header, history: o.history, composer: o.composer,
          startScreen: o.startScreen};
}"""

#: Calls the recorded ``api.fetch`` like the component does: JSON to the ChatKit
#: URL, and an upload (FormData) to the direct upload URL.
CALL_FETCH = """async () => {
  const o = window.__chatkitOptions;
  const post = (body) => o.api.fetch(o.api.url, {
    method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)});
  const input = {content: [{type: "input_text", text: "hello from the stub"}], attachments: [],
                 inference_options: {}};
  const created = await post({type: "threads.create", params: {input}, metadata: {keep: 1}});
  const stream = await created.text();
  const listed = await post({type: "threads.list", params: {limit: 10, order: "desc"}});
  const form = new FormData();
  form.append("file", new Blob(["hello file"], {type: "text/plain"}), "note.txt");
  const upload = await o.api.fetch(o.api.uploadStrategy.uploadUrl, {method: "POST", body: form});
  return {created: {status: created.status, type: created.headers.get("content-type"), stream},
          listed: {status: listed.status, type: listed.headers.get("content-type"),
                   body: await listed.json()},
          upload: {status: upload.status, body: await upload.json()}};
}"""


#: Calls the recorded ``onClientTool`` like the component does for a client tool call.
CALL_CLIENT_TOOL = """async () => {
  const o = window.__chatkitOptions;
  if (typeof o.onClientTool !== "function") return {type: typeof o.onClientTool};
  return {type: "function",
          title: await o.onClientTool({name: "get_page_context", params: {fields: ["title"]}}),
          unknown: await o.onClientTool({name: "no_such_tool", params: {}})};
}"""


def agent_id(page: t.Any, name: str) -> str:
    """The id of the logged-in user's agent *name*, read from the agents list."""
    page.goto("/")
    found = page.locator(f'.agent:has(h3:text-is("{name}"))').get_attribute("data-agent-id")
    assert found and found.isdigit(), found
    return str(found)


def serve_stub(page: t.Any, body: str = STUB_JS) -> None:
    page.route(CDN, lambda route: route.fulfill(body=body, content_type="text/javascript"))


def test_the_agents_list_links_each_agents_chat_pages(page: t.Any, example_site: Site) -> None:
    log_in(page, example_site)
    page.goto("/")
    agents = page.locator(".agent")
    assert agents.count() == 2
    pirate = page.locator('.agent:has(h3:text-is("Pirate"))')
    assert "like a pirate" in pirate.locator("p").inner_text()
    pirate_id = pirate.get_attribute("data-agent-id")
    assert (
        pirate.get_by_role("link", name="Chat with Pirate", exact=True).get_attribute("href")
        == f"/agents/{pirate_id}/chat"
    )
    assert (
        pirate.get_by_role("link", name="Chat with Pirate in full screen").get_attribute("href")
        == f"/agents/{pirate_id}/chat/full"
    )
    screenshot(page, "agents-list")


def test_the_official_component_gets_the_agents_options_and_a_fetch_with_cookie_and_metadata(
    page: t.Any, example_site: Site
) -> None:
    serve_stub(page)
    log_in(page, example_site)
    pirate = agent_id(page, "Pirate")
    page.set_extra_http_headers({"Accept-Language": "de-DE,de;q=0.9,en;q=0.5"})
    page.goto(f"/agents/{pirate}/chat")
    page.wait_for_function("() => window.__chatkitOptions !== undefined")
    assert page.locator("#chat").get_attribute("data-client") == "official"
    assert page.locator('[data-ck="fallback-note"]').count() == 0

    options = page.evaluate(RECORDED)
    assert options["api"] == {
        "url": f"/chatkit?agent_id={pirate}",
        "domainKey": "local-dev",
        "uploadStrategy": {"type": "direct", "uploadUrl": f"/chatkit/upload?agent_id={pirate}"},
        "fetch": "function",
    }
    assert options["locale"] == "de"
    assert options["header"] == {"title": {"text": "Pirate"}}
    assert options["history"] == {"enabled": True}
    assert options["composer"]["placeholder"] == "Message Pirate…"
    assert options["startScreen"]["greeting"].startswith("Pirate: ")
    screenshot(page, "chat-page-official-stub")

    # the demo's /tool: onClientTool answers get_page_context with the fields asked for
    tools = page.evaluate(CALL_CLIENT_TOOL)
    assert tools["type"] == "function"
    assert tools["title"] == {"title": page.title()}
    assert tools["unknown"] == {"error": "Unknown client tool: no_such_tool"}

    sent: list[t.Any] = []
    page.on("request", lambda request: sent.append(request) if "/chatkit" in request.url else None)
    result = page.evaluate(CALL_FETCH)

    created = result["created"]
    assert created["status"] == 200 and created["type"].startswith("text/event-stream")
    events = [
        json.loads(line[6:]) for line in created["stream"].splitlines() if line.startswith("data: ")
    ]
    thread_id = events[0]["thread"]["id"]
    answer = [
        e["item"]["content"][0]["text"]
        for e in events
        if e["type"] == "thread.item.done" and e["item"]["type"] == "assistant_message"
    ]
    assert answer[0].startswith("Arr! Pirate here.")  # the agent's chat, by the session cookie
    listed = result["listed"]
    assert listed["status"] == 200 and listed["type"] == "application/json"
    assert [thread["id"] for thread in listed["body"]["data"]] == [thread_id]
    assert result["upload"]["status"] == 200 and result["upload"]["body"]["name"] == "note.txt"

    # on the wire: the cookie on every request, page metadata in JSON bodies only
    page_url = page.url
    bodies = []
    for request in sent:
        headers = request.all_headers()
        assert "session=" in headers.get("cookie", ""), request.url
        if headers.get("content-type", "").startswith("application/json"):
            bodies.append(json.loads(request.post_data))
        else:
            assert b"hello file" in request.post_data_buffer  # the upload went as it was
    assert [body["type"] for body in bodies] == ["threads.create", "threads.list"]
    page_title = page.title()
    for body in bodies:
        assert body["metadata"]["page"] == {"url": page_url, "title": page_title}
    assert bodies[0]["metadata"]["keep"] == 1  # the caller's own metadata is kept


def test_without_the_component_the_page_falls_back_with_a_note(
    page: t.Any, example_site: Site
) -> None:
    # the page fixture aborts the CDN request: the script fails at once
    log_in(page, example_site)
    helper = agent_id(page, "Helper")
    started = time.monotonic()
    page.goto(f"/agents/{helper}/chat")
    note = page.locator('[data-ck="fallback-note"]')
    note.wait_for(state="visible", timeout=SCRIPT_TIMEOUT * 1000)
    assert time.monotonic() - started < SCRIPT_TIMEOUT + 2
    assert "reference client" in note.inner_text()
    if not CLIENT_JS.exists():
        pytest.skip("flask_chatkit/static/client/ is not written yet")
    page.locator('[data-ck="composer"]').wait_for(state="visible")
    assert page.locator("#chat").get_attribute("data-client") == "reference"
    assert page.locator("openai-chatkit").count() == 0
    screenshot(page, "chat-page-fallback")


def test_a_script_that_never_defines_the_element_falls_back_after_the_timeout(
    page: t.Any, example_site: Site
) -> None:
    serve_stub(page, body="/* loads, defines nothing */")
    log_in(page, example_site)
    helper = agent_id(page, "Helper")
    page.goto(f"/agents/{helper}/chat")
    page.wait_for_timeout(SCRIPT_TIMEOUT * 1000 / 2)
    note = page.locator('[data-ck="fallback-note"]')
    assert note.count() == 0  # still waiting
    assert page.locator("#chat").get_attribute("aria-busy") == "true"
    note.wait_for(state="visible", timeout=SCRIPT_TIMEOUT * 1000)
    assert re.search(r"did not load within 4 s", note.inner_text())


def test_client_reference_skips_the_cdn(page: t.Any, example_site: Site) -> None:
    cdn_requests: list[str] = []
    page.on("request", lambda r: cdn_requests.append(r.url) if "openai.com" in r.url else None)
    log_in(page, example_site)
    helper = agent_id(page, "Helper")
    page.goto(f"/agents/{helper}/chat?client=reference")
    page.wait_for_function(
        "() => document.getElementById('chat').dataset.client"
        " || document.getElementById('chat-note').textContent"
    )
    assert cdn_requests == []
    assert page.locator('[data-ck="fallback-note"]').count() == 0
    if not CLIENT_JS.exists():
        pytest.skip("flask_chatkit/static/client/ is not written yet")
    assert page.locator("#chat").get_attribute("data-client") == "reference"
    page.locator('[data-ck="composer"]').wait_for(state="visible")


def test_the_full_screen_chat_fills_the_viewport(page: t.Any, example_site: Site) -> None:
    if not CLIENT_JS.exists():
        pytest.skip("flask_chatkit/static/client/ is not written yet")
    log_in(page, example_site)
    helper = agent_id(page, "Helper")
    for size in ({"width": 1280, "height": 800}, {"width": 390, "height": 740}):
        page.set_viewport_size(size)
        page.goto(f"/agents/{helper}/chat/full?client=reference")
        page.locator('[data-ck="composer"]').wait_for(state="visible")
        box = page.locator("#chat").bounding_box()
        assert box == {"x": 0, "y": 0, **size}, box
        assert page.locator(".site-header").count() == 0
        composer = page.locator('[data-ck="composer"]').bounding_box()
        assert composer["y"] + composer["height"] <= size["height"] + 1  # in view, not below
        scroll = page.evaluate("() => document.scrollingElement.scrollHeight")
        assert scroll <= size["height"]
    page.set_viewport_size({"width": 1280, "height": 800})
    screenshot(page, "chat-full-screen")


#: Starts ``/slow`` through the recorded ``api.fetch`` with a signal, reads until the
#: first text delta, then aborts as the component does (after ``pagehide`` when
#: *leave*); then asks the server, through the cookie, what runs and what is stored.
ABORT_FETCH = """async (leave) => {
  const o = window.__chatkitOptions;
  const controller = new AbortController();
  const input = {content: [{type: "input_text", text: "/slow"}], attachments: [],
                 inference_options: {}};
  const response = await o.api.fetch(o.api.url, {
    method: "POST", headers: {"Content-Type": "application/json"}, signal: controller.signal,
    body: JSON.stringify({type: "threads.create", params: {input}})});
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let text = "";
  while (!text.includes("text_delta")) {
    const {value, done} = await reader.read();
    if (done) break;
    text += decoder.decode(value, {stream: true});
  }
  const threadId = /"thread":\\{"id":"([^"]+)"/.exec(text)[1];
  if (leave) window.dispatchEvent(new Event("pagehide"));
  controller.abort();
  try { await reader.read(); } catch (error) { /* aborted */ }
  await new Promise((done) => setTimeout(done, 1500));
  const cancelAgain = await fetch("/chatkit/cancel", {method: "POST",
    headers: {"Content-Type": "application/json"}, body: JSON.stringify({thread_id: threadId})});
  const items = await fetch(o.api.url, {method: "POST", headers: {"Content-Type": "application/json"},
    body: JSON.stringify({type: "items.list", params: {thread_id: threadId, order: "asc"}})});
  return {threadId, again: await cancelAgain.json(), items: (await items.json()).data};
}"""


@pytest.mark.parametrize("leave", [False, True])
def test_the_components_fetch_stops_the_answer_on_the_server_unless_the_page_is_leaving(
    page: t.Any, example_site: Site, leave: bool
) -> None:
    serve_stub(page)
    log_in(page, example_site)
    page.goto(f"/agents/{agent_id(page, 'Helper')}/chat")
    page.wait_for_function("() => window.__chatkitOptions !== undefined")
    cancels: list[t.Any] = []
    page.on("request", lambda r: cancels.append(r) if "/chatkit/cancel" in r.url else None)
    result = page.evaluate(ABORT_FETCH, leave)

    asked = [json.loads(r.post_data)["thread_id"] for r in cancels]
    answers = [i for i in result["items"] if i["type"] == "assistant_message"]
    if leave:  # a reload or a closed tab: the answer runs on (the test's own Stop ends it)
        assert asked == [result["threadId"]]  # only the test's own
        assert result["again"] == {"stopped": True}
    else:  # the Stop: the fetch asked the server, which had stopped when we looked
        assert asked == [result["threadId"]] * 2
        assert result["again"] == {"stopped": False}
        (answer,) = answers
        shown = answer["content"][0]["text"].split()
        assert 0 < len(shown) < 400 and shown == [str(n) for n in range(1, len(shown) + 1)]


#: Starts ``/slow`` and leaves it running as a reload does; then loads the thread as
#: the component does (``threads.get_by_id``, through the recorded ``api.fetch``)
#: and counts the component's ``fetchUpdates()`` calls while the answer runs,
#: after a Stop ends it, and a while later.
FOLLOW_FETCH = """async () => {
  const o = window.__chatkitOptions;
  const sleep = (ms) => new Promise((done) => setTimeout(done, ms));
  const post = (body, signal) => o.api.fetch(o.api.url, {method: "POST", signal,
    headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)});
  const controller = new AbortController();
  const input = {content: [{type: "input_text", text: "/slow"}], attachments: [],
                 inference_options: {}};
  const response = await post({type: "threads.create", params: {input}}, controller.signal);
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let text = "";
  while (!text.includes("text_delta")) text += decoder.decode((await reader.read()).value);
  const threadId = /"thread":\\{"id":"([^"]+)"/.exec(text)[1];
  window.dispatchEvent(new Event("pagehide"));  // a reload: the answer runs on
  controller.abort();
  window.dispatchEvent(new Event("pageshow"));
  const shown = await (await post({type: "threads.get_by_id", params: {thread_id: threadId}})).json();
  await sleep(3200);
  const running = window.__updates || 0;
  await fetch("/chatkit/cancel", {method: "POST", headers: {"Content-Type": "application/json"},
    body: JSON.stringify({thread_id: threadId})});
  await sleep(1500);
  const ended = window.__updates;
  await sleep(2500);
  return {status: shown.status, running, ended, later: window.__updates};
}"""


def test_the_components_fetch_refreshes_a_thread_whose_answer_runs_on_until_it_ends(
    page: t.Any, example_site: Site
) -> None:
    serve_stub(page)
    log_in(page, example_site)
    page.goto(f"/agents/{agent_id(page, 'Helper')}/chat")
    page.wait_for_function("() => window.__chatkitOptions !== undefined")
    watched: list[str] = []
    page.on("request", lambda r: watched.append(r.url) if "/events" in r.url else None)
    result = page.evaluate(FOLLOW_FETCH)
    assert result["status"]["type"] == "locked" and result["status"]["reason"]
    assert 2 <= result["running"] <= 5, result  # about once a second while it ran
    assert result["ended"] == result["later"], result  # none after the answer ended
    assert len(watched) == 1 and "/chatkit/threads/" in watched[0], watched
