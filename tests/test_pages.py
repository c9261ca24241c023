"""The example app's pages and agents, in-process with the Flask test client.

Agents are seeded for every new user, listed on ``/``, and each has a chat
page whose JSON config block tells ``chat-page.js`` how to reach ``/chatkit``
for that agent. The login and logout forms need the session's CSRF token.
``/chatkit`` exchanges are validated with the official ChatKit models.
"""

from __future__ import annotations

import json
import logging
import re
import typing as t
from pathlib import Path

import pytest
from flask import Flask

from example_app import create_app
from example_app.assistant import describe_request
from example_app.demo import BOOK
from example_app.demo import BOOK_CANCEL
from example_app.extensions import db
from example_app.models import DEFAULT_AGENTS
from example_app.models import Agent
from example_app.models import agents_of
from example_app.models import create_user
from example_app.models import find_agent
from example_app.models import find_user
from flask_chatkit.server import RequestContext
from flask_chatkit.testing import ChatKitClient
from flask_chatkit.testing import Exchange
from flask_chatkit.testing import chatkit_request
from flask_chatkit.testing import user_input

from . import wire
from .conftest import dispose_after_test
from .servers import isolate_example_app

FAST = {"TESTING": True, "DEMO_STREAM_DELAY": 0, "DEMO_SLOW_DELAY": 0, "DEMO_USER": False}
TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')
CONFIG_BLOCK = re.compile(r'<script type="application/json" id="chat-config">(.*?)</script>', re.S)
CDN = "https://cdn.platform.openai.com/deployments/chatkit/chatkit.js"


def build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **config: t.Any) -> Flask:
    isolate_example_app(monkeypatch, tmp_path / "instance")
    app = create_app({**FAST, **config})
    app.test_client_class = ChatKitClient
    dispose_after_test(app, db)
    return app


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Flask:
    """The example app with two users, ann and ben (no demo user)."""
    app = build(tmp_path, monkeypatch)
    with app.app_context():
        create_user("ann", "pw-ann")
        create_user("ben", "pw-ben")
    return app


def token_of(html: str) -> str:
    found = TOKEN.search(html)
    assert found is not None, html
    return found.group(1)


def log_in(app: Flask, username: str, password: str) -> ChatKitClient:
    """Log in through the form, with the token the form page gave."""
    client: ChatKitClient = app.test_client()  # type: ignore[assignment]
    token = token_of(client.get("/login").get_data(as_text=True))
    response = client.post(
        "/login", data={"username": username, "password": password, "csrf_token": token}
    )
    assert response.status_code == 302, response.data
    return client


def agent_ids(app: Flask, username: str) -> dict[str, int]:
    with app.app_context():
        user = find_user(username)
        assert user is not None
        return {agent.name: agent.id for agent in agents_of(user.id)}


def call(client: ChatKitClient, type_: str, agent: t.Any, **params: t.Any) -> Exchange:
    """One validated request to ``/chatkit?agent_id=<agent>``."""
    body = chatkit_request(type_, **params)
    wire.check_request(body)
    response = client.post(
        "/chatkit",
        query_string={"agent_id": agent},
        data=json.dumps(body),
        content_type="application/json",
    )
    parsed = wire.check_exchange(
        body, response.status_code, response.headers.get("Content-Type", ""), response.data
    )
    return Exchange(response.status_code, parsed, response.headers)


def assistant_texts(ex: Exchange) -> list[str]:
    return [
        e["item"]["content"][0]["text"]
        for e in ex.of_type("thread.item.done")
        if e["item"]["type"] == "assistant_message"
    ]


def page_config(html: str) -> dict[str, t.Any]:
    found = CONFIG_BLOCK.search(html)
    assert found is not None, html
    return json.loads(found.group(1))  # type: ignore[no-any-return]


# --- agents and the list page ---------------------------------------------------------


def test_new_users_get_the_starter_agents_and_the_home_page_lists_them(app: Flask) -> None:
    result = app.test_cli_runner().invoke(args=["create-user", "cat", "--password", "pw-cat"])
    assert result.exit_code == 0, result.output
    ids = agent_ids(app, "cat")
    assert list(ids) == [name for name, _ in DEFAULT_AGENTS] == ["Helper", "Pirate"]

    html = log_in(app, "cat", "pw-cat").get("/").get_data(as_text=True)
    for name, instructions in DEFAULT_AGENTS:
        assert f"<h3>{name}</h3>" in html
        assert instructions.splitlines()[0].replace('"', "&#34;") in html
        assert instructions.splitlines()[1].replace('"', "&#34;") not in html  # first line only
    for agent_id in ids.values():
        assert f'href="/agents/{agent_id}/chat"' in html
        assert f'href="/agents/{agent_id}/chat/full"' in html
    assert ">Chat</a>" in html and ">Full screen</a>" in html
    assert "POST /chatkit" in html  # the API help stays below


def test_the_demo_user_made_at_start_up_has_the_starter_agents(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    app = build(tmp_path, monkeypatch, DEMO_USER=True)
    assert "Demo login: username=demo" in caplog.text
    assert list(agent_ids(app, "demo")) == ["Helper", "Pirate"]


def test_anonymous_visitors_of_the_chat_pages_are_sent_to_login(app: Flask) -> None:
    helper = agent_ids(app, "ann")["Helper"]
    for path in (f"/agents/{helper}/chat", f"/agents/{helper}/chat/full"):
        response = app.test_client().get(path)
        assert response.status_code == 302 and response.headers["Location"] == "/login"


def test_another_users_or_an_unknown_agent_is_404(app: Flask) -> None:
    ann = log_in(app, "ann", "pw-ann")
    bens = agent_ids(app, "ben")["Helper"]
    for path in (
        f"/agents/{bens}/chat",
        f"/agents/{bens}/chat/full",
        "/agents/999999/chat",
        "/agents/abc/chat",
        "/agents/-1/chat",
    ):
        assert ann.get(path).status_code == 404, path
    assert ann.get(f"/agents/{agent_ids(app, 'ann')['Helper']}/chat").status_code == 200


@pytest.mark.parametrize("value", ["1x", "abc", "", "١", "99999999999999999999", " 1"])
def test_find_agent_treats_untrusted_ids_as_unknown(app: Flask, value: str) -> None:
    with app.app_context():
        user = find_user("ann")
        assert user is not None
        assert find_agent(user.id, value) is None
        assert find_agent("x", agent_ids(app, "ann")["Helper"]) is None


# --- the chat pages --------------------------------------------------------------------


def test_chat_page_config_points_at_the_agents_chatkit_urls_with_the_defaults(
    app: Flask,
) -> None:
    ann = log_in(app, "ann", "pw-ann")
    pirate = agent_ids(app, "ann")["Pirate"]
    page = ann.get(f"/agents/{pirate}/chat", headers={"Accept-Language": "de-DE,de;q=0.9"})
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    config = page_config(html)
    assert config["apiUrl"] == f"/chatkit?agent_id={pirate}"
    assert config["uploadStrategy"] == {
        "type": "direct",
        "uploadUrl": f"/chatkit/upload?agent_id={pirate}",
    }
    assert config["domainKey"] == "local-dev"
    assert config["scriptUrl"] == CDN
    assert config["scriptTimeout"] == 4.0
    assert config["clientUrl"] == "/chatkit/static/chatkit-client.js"
    assert config["locale"] == "de"
    assert config["title"] == "Pirate"
    assert '<div id="chat"' in html and "chat-page.js" in html
    assert "Log out" in html  # the site header is there
    script = ann.get("/static/chat-page.js")
    assert script.status_code == 200 and b"openai-chatkit" in script.data
    script.close()


def test_chat_page_config_follows_the_settings_and_client_reference_skips_the_cdn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    isolate_example_app(monkeypatch, tmp_path / "instance")
    monkeypatch.setenv("CHATKIT_UPLOAD_STRATEGY", "two_phase")  # from the environment, as strings
    monkeypatch.setenv("CHATKIT_DOMAIN_KEY", "domain_pk_123")
    monkeypatch.setenv("CHATKIT_SCRIPT_URL", "http://127.0.0.1:9/chatkit.js")
    monkeypatch.setenv("CHATKIT_SCRIPT_TIMEOUT", "0.5")
    monkeypatch.setenv("CHATKIT_LOCALE", "fr")
    app = create_app(FAST)
    app.test_client_class = ChatKitClient
    dispose_after_test(app, db)
    with app.app_context():
        create_user("ann", "pw-ann")
    helper = agent_ids(app, "ann")["Helper"]
    ann = log_in(app, "ann", "pw-ann")

    config = page_config(ann.get(f"/agents/{helper}/chat/full").get_data(as_text=True))
    assert config["uploadStrategy"] == {"type": "two_phase"}
    assert config["domainKey"] == "domain_pk_123"
    assert config["scriptUrl"] == "http://127.0.0.1:9/chatkit.js"
    assert config["scriptTimeout"] == 0.5
    assert config["locale"] == "fr"

    reference = ann.get(f"/agents/{helper}/chat?client=reference").get_data(as_text=True)
    assert page_config(reference)["scriptUrl"] is None


@pytest.mark.parametrize(
    ("accept", "locale"),
    [
        ("de-DE,de;q=0.9,en;q=0.5", "de"),
        ("pt-BR", "pt"),
        ("xx-YY", "en"),
        ("", "en"),
        ("zh-Hant,en;q=0.1", "zh-Hant"),
    ],
)
def test_chat_locale_is_the_best_supported_match_for_accept_language(
    app: Flask, accept: str, locale: str
) -> None:
    ann = log_in(app, "ann", "pw-ann")
    helper = agent_ids(app, "ann")["Helper"]
    html = ann.get(f"/agents/{helper}/chat", headers={"Accept-Language": accept})
    assert page_config(html.get_data(as_text=True))["locale"] == locale


def test_agent_names_cannot_break_out_of_the_config_block(app: Flask) -> None:
    name = '</script><script>alert("x")</script>'
    with app.app_context():
        user = find_user("ann")
        assert user is not None
        agent = Agent(user_id=user.id, name=name, instructions="Sneaky & <b>bold</b>")
        db.session.add(agent)
        db.session.commit()
        agent_id = agent.id
    html = log_in(app, "ann", "pw-ann").get(f"/agents/{agent_id}/chat").get_data(as_text=True)
    assert "<script>alert" not in html
    assert page_config(html)["title"] == name


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("CHATKIT_UPLOAD_STRATEGY", "bogus"),
        ("CHATKIT_SCRIPT_TIMEOUT", "soon"),
        ("CHATKIT_SCRIPT_TIMEOUT", "0"),
    ],
)
def test_bad_chat_settings_stop_the_start_with_the_key_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, key: str, value: str
) -> None:
    with pytest.raises(RuntimeError, match=key):
        build(tmp_path, monkeypatch, **{key: value})


# --- CSRF on the login and logout forms -------------------------------------------------


@pytest.mark.parametrize("token", ["missing", "wrong", "another session's"])
def test_login_without_this_sessions_token_is_400_and_logs_nobody_in(
    app: Flask, token: str
) -> None:
    client = app.test_client()
    form = {"username": "ann", "password": "pw-ann"}
    if token == "wrong":
        client.get("/login")
        form["csrf_token"] = "x" * 43
    elif token == "another session's":
        client.get("/login")
        form["csrf_token"] = token_of(app.test_client().get("/login").get_data(as_text=True))
    response = client.post("/login", data=form)
    assert response.status_code == 400
    html = response.get_data(as_text=True)
    assert "CSRF token is missing or wrong" in html
    assert token_of(html)  # a fresh form to try again
    assert client.get("/").status_code == 302
    assert client.chatkit("threads.list").status == 401  # type: ignore[attr-defined]


def test_logout_needs_a_post_with_the_token(app: Flask) -> None:
    ann = log_in(app, "ann", "pw-ann")
    home = ann.get("/").get_data(as_text=True)
    token = token_of(home)
    assert ann.get("/logout").status_code == 405
    refused = ann.post("/logout")
    assert refused.status_code == 400 and "CSRF" in refused.get_data(as_text=True)
    assert ann.post("/logout", data={"csrf_token": "nope"}).status_code == 400
    assert ann.get("/").status_code == 200  # still logged in
    done = ann.post("/logout", data={"csrf_token": token})
    assert done.status_code == 302 and done.headers["Location"] == "/login"
    assert ann.get("/").status_code == 302
    assert ann.chatkit("threads.list").status == 401


def test_the_token_changes_when_a_user_logs_in(app: Flask) -> None:
    client = app.test_client()
    before = token_of(client.get("/login").get_data(as_text=True))
    client.post("/login", data={"username": "ann", "password": "pw-ann", "csrf_token": before})
    after = token_of(client.get("/").get_data(as_text=True))
    assert after != before


# --- /chatkit with agents ----------------------------------------------------------------


def test_threads_are_scoped_to_the_agent_and_foreign_agents_are_404(app: Flask) -> None:
    ann = log_in(app, "ann", "pw-ann")
    ids = agent_ids(app, "ann")
    ex = call(ann, "threads.create", ids["Helper"], input=user_input("hello helper"))
    assert ex.status == 200 and "error" not in ex.types, ex.body
    thread_id = ex.events[0]["thread"]["id"]

    def listed(agent: int) -> list[str]:
        page = call(ann, "threads.list", agent)
        assert page.status == 200, page.body
        return [thread["id"] for thread in page.body["data"]]

    assert listed(ids["Helper"]) == [thread_id]
    assert listed(ids["Pirate"]) == []
    assert call(ann, "threads.get_by_id", ids["Pirate"], thread_id=thread_id).status == 404
    for foreign in (agent_ids(app, "ben")["Helper"], "1x", "abc", "999999"):
        refused = call(ann, "threads.list", foreign)
        assert refused.status == 404 and refused.error["code"] == "agent_not_found", foreign


def test_helper_and_pirate_demo_replies_differ(app: Flask) -> None:
    ann = log_in(app, "ann", "pw-ann")
    ids = agent_ids(app, "ann")
    replies = {}
    for name, agent in ids.items():
        ex = call(ann, "threads.create", agent, input=user_input("hello"))
        (replies[name],) = assistant_texts(ex)
    assert replies["Helper"].startswith("Helper here. You said: “hello”")
    assert replies["Pirate"].startswith("Arr! Pirate here. Ye said: “hello”")
    plain = ann.chatkit("threads.create", input=user_input("hello"))
    assert assistant_texts(plain)[0].startswith("You said: “hello”")  # no agent


def test_the_models_instructions_include_the_chats_agent(app: Flask) -> None:
    pirate_id = agent_ids(app, "ann")["Pirate"]
    with app.app_context():
        user = find_user("ann")
        assert user is not None
        pirate = find_agent(user.id, pirate_id)
        page = {"url": "http://x/agents/2/chat", "title": "P"}
        context = RequestContext(
            user_id=str(user.id), user=user, agent=pirate, metadata={"page": page}
        )
        text = describe_request(context, None)
    assert "“Pirate”" in text and 'Start every answer with "Arr!"' in text
    assert "The user's name is ann." in text and "http://x/agents/2/chat" in text
    without = describe_request(RequestContext(user_id="1"), None)
    assert "agent" not in without


# --- the demo's /form --------------------------------------------------------------------


def test_form_command_shows_a_form_and_its_values_come_back_in_the_answer(app: Flask) -> None:
    ann = log_in(app, "ann", "pw-ann")
    helper = agent_ids(app, "ann")["Helper"]
    ex = call(ann, "threads.create", helper, input=user_input("/form"))
    (widget,) = [e["item"] for e in ex.of_type("thread.item.done") if e["item"]["type"] == "widget"]
    card = widget["widget"]
    assert card["asForm"] is True
    fields = {child["type"]: child for child in card["children"] if "name" in child}
    assert fields["Input"]["name"] == "time" and fields["Select"]["name"] == "party_size"
    assert card["confirm"]["action"]["type"] == BOOK
    thread_id = ex.events[0]["thread"]["id"]

    action = {"type": BOOK, "payload": {"time": "19:00", "party_size": "2"}}
    booked = call(
        ann,
        "threads.custom_action",
        helper,
        thread_id=thread_id,
        item_id=widget["id"],
        action=action,
    )
    assert booked.status == 200 and "error" not in booked.types, booked.events
    assert assistant_texts(booked) == ["Booked: 2 people at 19:00."]
    (replaced,) = booked.of_type("thread.item.replaced")
    assert "asForm" not in replaced["item"]["widget"]  # answered: no second submission
    items = call(ann, "threads.get_by_id", helper, thread_id=thread_id).body["items"]["data"]
    assert items[1]["widget"]["children"][1]["value"] == "Booked: 2 people at 19:00."


def test_cancelling_the_form_books_nothing(app: Flask) -> None:
    ann = log_in(app, "ann", "pw-ann")
    ex = ann.chatkit("threads.create", input=user_input("/form"))
    widget = next(
        e["item"] for e in ex.of_type("thread.item.done") if e["item"]["type"] == "widget"
    )
    cancelled = ann.chatkit(
        "threads.custom_action",
        thread_id=ex.events[0]["thread"]["id"],
        item_id=widget["id"],
        action={"type": BOOK_CANCEL},
    )
    assert assistant_texts(cancelled) == ["Cancelled: nothing was booked."]
