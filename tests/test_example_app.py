"""The example app through its pages, its CLI and ``/chatkit`` (Flask test client).

Every ``/chatkit`` exchange goes through ``ChatKitClient``, so each request and
each JSON body or SSE event is validated with the official ChatKit models.
"""

from __future__ import annotations

import base64
import logging
import os
import re
import stat
import subprocess
import sys
import time
import typing as t

import pytest
import sqlalchemy as sa
from flask import Flask

from example_app import create_app
from example_app.extensions import db
from example_app.models import ApiToken
from example_app.models import create_user
from flask_chatkit.testing import ChatKitClient
from flask_chatkit.testing import user_input

from .servers import form_token
from .servers import login_with_form

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_LINE = re.compile(r"Demo login: username=(\S+) password=(\S+)")
FAST = {"TESTING": True, "DEMO_STREAM_DELAY": 0, "DEMO_SLOW_DELAY": 0}


def isolate(monkeypatch: pytest.MonkeyPatch, instance: t.Any) -> None:
    """Use *instance* as the instance folder, and none of the developer's settings."""
    for key in list(os.environ):
        if key.startswith(("CHATKIT_", "DEMO_")) or key in (
            "SECRET_KEY",
            "DATABASE_URL",
            "OPENAI_API_KEY",
        ):
            monkeypatch.delenv(key)
    monkeypatch.setenv("EXAMPLE_INSTANCE_PATH", str(instance))


@pytest.fixture(autouse=True)
def clean_env(tmp_path: t.Any, monkeypatch: pytest.MonkeyPatch) -> None:
    isolate(monkeypatch, tmp_path / "instance")


def build(**config: t.Any) -> Flask:
    app = create_app({**FAST, **config})
    app.test_client_class = ChatKitClient
    return app


def demo_credentials(caplog: pytest.LogCaptureFixture) -> tuple[str, str]:
    found = [DEMO_LINE.search(r.getMessage()) for r in caplog.records]
    matches = [m for m in found if m]
    assert len(matches) == 1, [r.getMessage() for r in caplog.records]
    return matches[0].group(1), matches[0].group(2)


@pytest.fixture
def app(caplog: pytest.LogCaptureFixture) -> Flask:
    caplog.set_level(logging.WARNING)
    return build()


@pytest.fixture
def password(app: Flask, caplog: pytest.LogCaptureFixture) -> str:
    return demo_credentials(caplog)[1]


def log_in(app: Flask, username: str, password: str) -> ChatKitClient:
    client = app.test_client()
    response = login_with_form(client, username, password)
    assert response.status_code == 302, response.data
    return client  # type: ignore[return-value]


@pytest.fixture
def demo(app: Flask, password: str) -> ChatKitClient:
    return log_in(app, "demo", password)


@pytest.fixture(scope="module")
def erin(tmp_path_factory: pytest.TempPathFactory) -> ChatKitClient:
    """A logged-in user of one app shared by the responder tests (each uses its own threads)."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        isolate(monkeypatch, tmp_path_factory.mktemp("shared") / "instance")
        app = build(DEMO_USER=False)
    with app.app_context():
        create_user("erin", "pw-erin")
    return log_in(app, "erin", "pw-erin")


def run_cli(app: Flask, *args: str) -> t.Any:
    return app.test_cli_runner().invoke(args=list(args))


def start(client: ChatKitClient, text: str) -> tuple[t.Any, str]:
    ex = client.chatkit("threads.create", input=user_input(text))
    assert ex.status == 200, ex.body
    return ex, ex.events[0]["thread"]["id"]


def deltas(ex: t.Any) -> list[str]:
    return [
        e["update"]["delta"]
        for e in ex.of_type("thread.item.updated")
        if e["update"]["type"] == "assistant_message.content_part.text_delta"
    ]


def assistant_texts(ex: t.Any) -> list[str]:
    return [
        e["item"]["content"][0]["text"]
        for e in ex.of_type("thread.item.done")
        if e["item"]["type"] == "assistant_message"
    ]


def items(client: ChatKitClient, thread_id: str) -> list[dict[str, t.Any]]:
    return client.chatkit("threads.get_by_id", thread_id=thread_id).body["items"]["data"]


# --- pages and login -----------------------------------------------------------------


def test_login_page_shows_a_form_with_username_and_password(app: Flask) -> None:
    page = app.test_client().get("/login")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert 'name="username"' in html and 'name="password"' in html and 'method="post"' in html


def test_login_with_the_right_password_starts_a_session_and_goes_home(
    app: Flask, password: str
) -> None:
    client = app.test_client()
    response = login_with_form(client, "demo", password)
    assert response.status_code == 302
    assert response.headers["Location"] == "/"
    home = client.get("/")
    assert home.status_code == 200
    html = home.get_data(as_text=True)
    assert "Logged in as <strong>demo</strong>" in html
    assert "/chatkit" in html


@pytest.mark.parametrize(("username", "wrong"), [("demo", True), ("nobody", False)])
def test_login_with_bad_credentials_is_401_with_the_form_and_an_error(
    app: Flask, password: str, username: str, wrong: bool
) -> None:
    client = app.test_client()
    attempt = "x" + password if wrong else password
    response = login_with_form(client, username, attempt)
    assert response.status_code == 401
    html = response.get_data(as_text=True)
    assert "Unknown username or wrong password." in html
    assert 'name="password"' in html
    assert client.get("/").status_code == 302  # still anonymous


def test_home_redirects_anonymous_visitors_to_login(app: Flask) -> None:
    response = app.test_client().get("/")
    assert response.status_code == 302
    assert response.headers["Location"] == "/login"


def test_logout_ends_the_session_for_pages_and_the_api(demo: ChatKitClient) -> None:
    assert demo.chatkit("threads.list").status == 200
    response = demo.post("/logout", data={"csrf_token": form_token(demo, "/")})
    assert response.status_code == 302 and response.headers["Location"] == "/login"
    assert demo.get("/").status_code == 302
    assert demo.chatkit("threads.list").status == 401


def test_demo_user_is_created_once_and_its_logged_password_works(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    first = build()
    username, password = demo_credentials(caplog)
    assert username == "demo"
    caplog.clear()
    second = build()  # same instance folder and database
    assert not any(DEMO_LINE.search(r.getMessage()) for r in caplog.records)
    client = log_in(second, username, password)
    assert client.get("/").status_code == 200
    with first.app_context():
        assert db.session.execute(sa.text("select count(*) from users")).scalar() == 1


RACE = """\
import sys, time
from example_app import create_app
time.sleep(max(0.0, float(sys.argv[1]) - time.time()))
print(create_app().config["SECRET_KEY"])
"""


@pytest.mark.slow  # worker processes
def test_workers_starting_at_once_share_one_key_one_schema_and_one_demo_user() -> None:
    start_at = str(time.time() + 2.0)  # after every process has imported the app
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", RACE, start_at],
            cwd=ROOT,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(4)
    ]
    outputs = [proc.communicate(timeout=60) for proc in procs]
    assert [proc.returncode for proc in procs] == [0] * 4, [err for _, err in outputs]
    assert len({out.strip() for out, _ in outputs}) == 1
    assert sum(len(DEMO_LINE.findall(err)) for _, err in outputs) == 1


def test_secret_key_is_generated_once_and_kept_private(tmp_path: t.Any) -> None:
    key = build().config["SECRET_KEY"]
    assert isinstance(key, str) and len(key) >= 32
    assert build().config["SECRET_KEY"] == key
    path = tmp_path / "instance" / "secret_key"
    assert path.read_text() == key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_session_cookie_survives_a_restart_with_the_persisted_key(password: str) -> None:
    client = log_in(build(), "demo", password)
    client.application = build()  # a restarted server with the same instance folder
    assert client.get("/").status_code == 200


def test_environment_configures_the_app_and_test_config_wins(
    tmp_path: t.Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    monkeypatch.setenv("CHATKIT_PAGE_SIZE", "7")
    monkeypatch.setenv("CHATKIT_ALLOWED_ORIGINS", "https://a.example")
    monkeypatch.setenv("SECRET_KEY", "from-env")
    monkeypatch.setenv("DATABASE_URL", url)
    app = build(CHATKIT_ALLOWED_ORIGINS="https://b.example")
    assert app.config["CHATKIT_PAGE_SIZE"] == "7"
    assert app.extensions["chatkit"].state(app).server.page_size == 7
    assert app.config["CHATKIT_ALLOWED_ORIGINS"] == "https://b.example"
    assert app.config["SECRET_KEY"] == "from-env"
    assert app.config["SQLALCHEMY_DATABASE_URI"] == url
    assert (tmp_path / "elsewhere.db").exists()
    assert not (tmp_path / "instance" / "secret_key").exists()


def test_the_example_app_reads_rate_limits_and_budgets_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    default = build()
    assert default.extensions["chatkit"].state(default).quotas is None  # off by default
    monkeypatch.setenv("CHATKIT_RATE_LIMITS", "20 per minute; 500 per day")
    monkeypatch.setenv("CHATKIT_TOKEN_BUDGET", "200000 per day")
    monkeypatch.setenv("CHATKIT_RATE_LIMIT_STORAGE", "memory://")
    app = build()
    quotas = app.extensions["chatkit"].state(app).quotas
    assert [str(item) for item in quotas.rates] == ["20 per 1 minute", "500 per 1 day"]
    assert [str(item) for item in quotas.budget] == ["200000 per 1 day"]


def test_the_example_app_lets_answers_outlive_their_connection_unless_told_otherwise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = build()
    assert app.config["CHATKIT_DISCONNECT"] == "finish"
    assert app.extensions["chatkit"].state(app).detach is not None
    monkeypatch.setenv("CHATKIT_DISCONNECT", "cancel")
    app = build()
    assert app.extensions["chatkit"].state(app).detach is None


# --- CLI and bearer tokens -----------------------------------------------------------


def test_create_user_command_adds_a_user_who_can_log_in(app: Flask) -> None:
    result = run_cli(app, "create-user", "carol", "--password", "s3cret-pw")
    assert result.exit_code == 0, result.output
    client = log_in(app, "carol", "s3cret-pw")
    assert "Logged in as <strong>carol</strong>" in client.get("/").get_data(as_text=True)
    again = run_cli(app, "create-user", "carol", "--password", "other")
    assert again.exit_code != 0
    assert "already exists" in again.output


def test_create_token_prints_a_working_bearer_token_on_the_last_line(app: Flask) -> None:
    result = run_cli(app, "create-token", "demo")
    assert result.exit_code == 0, result.output
    token = result.output.strip().splitlines()[-1]
    with app.app_context():
        stored = db.session.execute(sa.select(ApiToken.token_hash)).scalars().all()
    assert len(stored) == 1 and token not in stored[0] and len(stored[0]) == 64
    client = app.test_client()
    client.environ_base.pop("HTTP_ORIGIN")  # bearer requests need no Origin
    bearer = {"Authorization": f"Bearer {token}"}
    ex = client.chatkit("threads.create", input=user_input("hi"), headers=bearer)
    assert ex.status == 200
    assert client.chatkit("threads.list", headers=bearer).body["data"][0]["title"] == "hi"
    wrong = client.chatkit("threads.list", headers={"Authorization": f"Bearer {token}x"})
    assert wrong.status == 401


def test_a_bearer_tokens_owner_is_looked_up_once_and_a_deleted_token_stops_within_seconds(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    app = build(TOKEN_CACHE_SECONDS=0.5)
    token = run_cli(app, "create-token", "demo").output.strip().splitlines()[-1]
    client = app.test_client()
    client.environ_base.pop("HTTP_ORIGIN")  # bearer requests need no Origin
    bearer = {"Authorization": f"Bearer {token}"}
    lookups: list[str] = []

    def record(conn: t.Any, cursor: t.Any, statement: str, *args: t.Any) -> None:
        if "api_tokens" in statement:
            lookups.append(statement)

    with app.app_context():
        engine = db.engine
    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        for _ in range(3):
            assert client.chatkit("threads.list", headers=bearer).status == 200
        assert len(lookups) == 1  # one query, then the owner is remembered
        with app.app_context():
            db.session.execute(sa.delete(ApiToken))  # the token is revoked
            db.session.commit()
        assert client.chatkit("threads.list", headers=bearer).status == 200  # for a moment
        time.sleep(0.6)
        assert client.chatkit("threads.list", headers=bearer).status == 401
        assert client.chatkit("threads.list", headers={"Authorization": "Bearer x"}).status == 401
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)


def test_create_token_for_an_unknown_user_fails(app: Flask) -> None:
    result = run_cli(app, "create-token", "nobody")
    assert result.exit_code != 0
    assert "No user 'nobody'" in result.output


def test_set_password_lets_the_demo_user_back_in(app: Flask, password: str) -> None:
    result = run_cli(app, "set-password", "demo", "--password", "new-demo-pw")
    assert result.exit_code == 0, result.output
    log_in(app, "demo", "new-demo-pw")
    refused = login_with_form(app.test_client(), "demo", password)
    assert refused.status_code != 302  # the printed first password no longer works

    # without --password it asks twice, hidden
    asked = app.test_cli_runner().invoke(
        args=["set-password", "demo"], input="typed-pw\ntyped-pw\n"
    )
    assert asked.exit_code == 0, asked.output
    assert "typed-pw" not in asked.output
    log_in(app, "demo", "typed-pw")

    unknown = run_cli(app, "set-password", "nobody", "--password", "x")
    assert unknown.exit_code == 1
    assert "No user 'nobody'" in unknown.output


def test_a_restart_says_the_demo_user_exists_and_how_to_reset_it_never_the_password(
    app: Flask, password: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.clear()
    build()  # the same instance folder: a later start
    said = [r.getMessage() for r in caplog.records]
    assert not any(DEMO_LINE.search(line) for line in said), said
    assert not any(password in line for line in said)
    hints = [line for line in said if "flask --app example_app set-password demo" in line]
    assert len(hints) == 1, said


@pytest.mark.slow  # flask CLI processes
def test_cli_on_a_fresh_postgresql_database_says_to_upgrade(
    postgres_db: str, tmp_path: t.Any
) -> None:
    from .servers import server_env

    env = server_env(tmp_path / "instance", DATABASE_URL=postgres_db)

    def flask(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "flask", "--app", "example_app", *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )

    for args in (
        ("create-user", "alice"),
        ("create-user", "alice", "--password", "pw"),
        ("set-password", "demo"),
        ("create-token", "alice"),
    ):
        done = flask(*args)
        output = (done.stdout + done.stderr).strip().splitlines()
        assert done.returncode == 1, (args, output)
        assert output == [
            "Error: The database has no tables yet: run "
            "'flask --app example_app db upgrade heads' first."
        ], args

    # and the command it names makes them work
    assert flask("db", "upgrade", "heads").returncode == 0
    done = flask("create-user", "alice", "--password", "pw-alice")
    assert done.returncode == 0, done.stderr
    assert "Created user 'alice'." in done.stdout


@pytest.mark.slow  # a flask CLI process
def test_cli_against_an_unreachable_database_says_so_in_one_line(tmp_path: t.Any) -> None:
    from .servers import free_port
    from .servers import server_env

    url = f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/none"
    env = server_env(tmp_path / "instance", DATABASE_URL=url, DATABASE_CONNECT_TIMEOUT=2)
    done = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "example_app", "create-token", "alice"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 1
    lines = (done.stdout + done.stderr).strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("Error: The database is unreachable (OperationalError: ")


def test_each_user_sees_only_their_own_threads(app: Flask, demo: ChatKitClient) -> None:
    _, thread_id = start(demo, "mine")
    run_cli(app, "create-user", "dave", "--password", "pw-dave")
    dave = log_in(app, "dave", "pw-dave")
    assert dave.chatkit("threads.get_by_id", thread_id=thread_id).status == 404
    assert dave.chatkit("threads.list").body["data"] == []


def test_api_without_login_is_401(app: Flask) -> None:
    assert app.test_client().chatkit("threads.list").status == 401


# --- the demo responder ----------------------------------------------------------------


def test_plain_message_streams_a_quoting_reply_and_titles_the_thread(
    erin: ChatKitClient,
) -> None:
    ex, thread_id = start(erin, "What is gevent?")
    assert ex.types[:3] == ["thread.created", "thread.item.done", "stream_options"]
    assert len(deltas(ex)) > 3
    (text,) = assistant_texts(ex)
    assert text.startswith("You said: “What is gevent?”")
    assert "".join(deltas(ex)) == text
    (updated,) = ex.of_type("thread.updated")
    assert updated["thread"]["title"] == "What is gevent?"
    thread = erin.chatkit("threads.get_by_id", thread_id=thread_id).body
    assert thread["title"] == "What is gevent?"
    assert [i["type"] for i in thread["items"]["data"]] == ["user_message", "assistant_message"]
    second = erin.chatkit("threads.add_user_message", thread_id=thread_id, input=user_input("more"))
    assert second.of_type("thread.updated") == []  # the title is kept


def test_long_first_message_gives_a_truncated_title(erin: ChatKitClient) -> None:
    ex, _ = start(erin, "word " * 30)
    title = ex.of_type("thread.updated")[0]["thread"]["title"]
    assert len(title) == 40 and title.endswith("…")


def test_progress_command_sends_progress_updates_before_the_reply(erin: ChatKitClient) -> None:
    ex, _ = start(erin, "/progress")
    kinds = [t for t in ex.types if t in ("progress_update", "thread.item.added")]
    assert kinds == ["progress_update", "progress_update", "thread.item.added"]
    assert [e["text"] for e in ex.of_type("progress_update")] == [
        "Reading the thread…",
        "Writing the answer…",
    ]
    assert assistant_texts(ex)[0].startswith("Done")


def test_slow_command_streams_forty_deltas(erin: ChatKitClient) -> None:
    ex, _ = start(erin, "/slow")
    assert len(deltas(ex)) == 40
    assert assistant_texts(ex) == [" ".join(str(n) for n in range(1, 41))]
    assert ex.types[-1] in ("thread.item.done", "thread.updated")


def test_error_command_sends_text_then_an_error_event_and_keeps_the_text(
    erin: ChatKitClient,
) -> None:
    ex, thread_id = start(erin, "/error")
    (error,) = ex.of_type("error")
    assert error["code"] == "custom" and "on purpose" in error["message"]
    assert error["allow_retry"] is True
    done_at = max(i for i, e in enumerate(ex.events) if e["type"] == "thread.item.done")
    assert ex.types.index("error") > done_at
    (partial,) = assistant_texts(ex)
    saved = items(erin, thread_id)
    assert [i["type"] for i in saved] == ["user_message", "assistant_message"]
    assert saved[1]["content"][0]["text"] == partial


def widget_count(item: dict[str, t.Any]) -> str:
    (text,) = [c for c in item["widget"]["children"] if c.get("id") == "count"]
    return text["value"]  # type: ignore[no-any-return]


def test_widget_counter_increments_through_both_kinds_of_action(erin: ChatKitClient) -> None:
    ex, thread_id = start(erin, "/widget")
    (widget,) = [e["item"] for e in ex.of_type("thread.item.done") if e["item"]["type"] == "widget"]
    assert widget_count(widget) == "Count: 0"
    streamed, instant = [c for c in widget["widget"]["children"] if c["type"] == "Button"]
    assert streamed["onClickAction"]["streaming"] is True
    assert instant["onClickAction"]["streaming"] is False

    act = streamed["onClickAction"]
    action = {"type": act["type"], "payload": act["payload"]}
    ex = erin.chatkit(
        "threads.custom_action", thread_id=thread_id, item_id=widget["id"], action=action
    )
    assert ex.types == ["stream_options", "thread.item.replaced"]
    assert widget_count(ex.events[1]["item"]) == "Count: 1"
    assert widget_count(items(erin, thread_id)[1]) == "Count: 1"

    sync = erin.chatkit(
        "threads.sync_custom_action",
        thread_id=thread_id,
        item_id=widget["id"],
        action={"type": instant["onClickAction"]["type"], "payload": {"by": 1}},
    )
    assert sync.status == 200
    assert widget_count(sync.body["updated_item"]) == "Count: 2"
    assert widget_count(items(erin, thread_id)[1]) == "Count: 2"
    again = erin.chatkit(
        "threads.custom_action", thread_id=thread_id, item_id=widget["id"], action=action
    )
    assert widget_count(again.events[1]["item"]) == "Count: 3"


def test_unknown_widget_action_is_refused(erin: ChatKitClient) -> None:
    ex, thread_id = start(erin, "/widget")
    widget_id = ex.of_type("thread.item.done")[-1]["item"]["id"]
    bad = {"type": "demo.unknown"}
    streamed = erin.chatkit(
        "threads.custom_action", thread_id=thread_id, item_id=widget_id, action=bad
    )
    assert streamed.of_type("error")[0]["code"] == "custom"
    sync = erin.chatkit(
        "threads.sync_custom_action", thread_id=thread_id, item_id=widget_id, action=bad
    )
    assert sync.status == 400 and sync.error["field"] == "params.action.type"
    assert widget_count(items(erin, thread_id)[1]) == "Count: 0"


def test_tool_command_waits_for_client_output_then_quotes_it(erin: ChatKitClient) -> None:
    ex, thread_id = start(erin, "/tool")
    call = ex.of_type("thread.item.done")[-1]  # the turn ends with the call
    assert ex.types[-2:] == ["thread.item.done", "thread.updated"]
    assert call["item"]["type"] == "client_tool_call"
    assert call["item"]["status"] == "pending"
    assert call["item"]["name"] == "get_page_context"
    assert call["item"]["call_id"]
    output = {"title": "Pricing", "url": "https://example.com/pricing"}
    resumed = erin.chatkit("threads.add_client_tool_output", thread_id=thread_id, result=output)
    assert resumed.types[0] == "stream_options"
    (text,) = assistant_texts(resumed)
    assert '"title": "Pricing"' in text and "https://example.com/pricing" in text
    stored = items(erin, thread_id)
    assert stored[1]["status"] == "completed" and stored[1]["output"] == output


@pytest.mark.parametrize(
    ("answers", "expected"),
    [
        (
            {"colour": {"values": ["green"]}, "why": {"values": ["calm"]}},
            ["Which colour do you like best? → green", "Why that one? → calm"],
        ),
        (
            {"colour": {"values": ["blue"]}},
            ["Which colour do you like best? → blue", "Why that one? → (skipped)"],
        ),
    ],
)
def test_ask_command_takes_structured_answers_then_quotes_them(
    erin: ChatKitClient, answers: dict[str, t.Any], expected: list[str]
) -> None:
    ex, thread_id = start(erin, "/ask")
    (question,) = [
        e["item"] for e in ex.of_type("thread.item.done") if e["item"]["type"] == "structured_input"
    ]
    assert question["status"] == "pending"
    assert [q["type"] for q in question["inputs"]] == ["multiple_choice", "freeform"]
    resumed = erin.chatkit(
        "threads.add_structured_input",
        thread_id=thread_id,
        item_id=question["id"],
        input={"answers": answers},
    )
    assert resumed.types[:2] == ["stream_options", "thread.item.replaced"]
    assert resumed.events[1]["item"]["status"] == "answered"
    (text,) = assistant_texts(resumed)
    assert text == "Your answers: " + "; ".join(expected)


def test_transcribe_reports_byte_count_and_media_type(erin: ChatKitClient) -> None:
    audio = base64.b64encode(b"\x00" * 1234).decode()
    ex = erin.chatkit("input.transcribe", audio_base64=audio, mime_type="audio/webm;codecs=opus")
    assert ex.status == 200
    assert ex.body == {"text": "(demo transcription of 1234 bytes of audio/webm)"}
