"""Per-user rate limits and token budgets (``CHATKIT_RATE_LIMITS``, ``CHATKIT_TOKEN_BUDGET``).

Only the requests that start a model turn count, per user. A turn over a limit
gets a stream of one ``error`` event (validated by the official models) saying in
the user's language when they can write again, a ``Retry-After`` header, and
nothing is saved. Tokens reported by the responder are deducted from the budget;
past 80 % one ``notice`` ends the turn, once per window. On Redis the counts are
shared: by two apps in this process, and by two gunicorn gevent workers.
"""

from __future__ import annotations

import logging
import time
import typing as t
from concurrent.futures import ThreadPoolExecutor
from http.client import HTTPConnection

import pytest
from limits import parse

from flask_chatkit import stream_text
from flask_chatkit.assistant import Assistant
from flask_chatkit.i18n import MESSAGES
from flask_chatkit.quotas import TOKENS
from flask_chatkit.quotas import TURNS
from flask_chatkit.quotas import wait_text
from flask_chatkit.testing import chatkit_request
from flask_chatkit.testing import user_input

from .assistant_helpers import answers
from .assistant_helpers import assistant_app
from .assistant_helpers import create
from .assistant_helpers import send
from .assistant_helpers import thread_of
from .conftest import any_store
from .conftest import logged_in
from .conftest import make_app
from .llm_server import text
from .redis_server import redis_server  # noqa: F401
from .redis_server import redis_url  # noqa: F401
from .samples import pending_items
from .servers import cli
from .servers import exchange
from .servers import free_port
from .servers import run_gunicorn
from .servers import server_env
from .streams import Stream
from .streams import deltas
from .streams import paced

LIMITS = "6 per minute"


@pytest.fixture
def app(store_kind: str, tmp_path: t.Any) -> t.Any:
    """The suite's app, its turns limited to :data:`LIMITS` per user."""
    return make_app(store_kind, tmp_path, CHATKIT_RATE_LIMITS=LIMITS)


def respond_with_pending_items(chatkit: t.Any) -> list[str]:
    """Hooks answering every turn with text; a "setup" message also gets a widget, a
    structured input and a client tool call (what the other turn kinds need)."""
    calls: list[str] = []

    @chatkit.respond
    def respond(thread: t.Any, message: t.Any, context: t.Any) -> t.Iterator[t.Any]:
        calls.append("respond")
        yield from stream_text(thread, ["Hi ", "there"])
        if message is None or message.content[0].text != "setup":
            return
        yield from pending_items(thread)

    @chatkit.action
    def action(thread: t.Any, action: t.Any, sender: t.Any, context: t.Any) -> t.Iterator[t.Any]:
        calls.append("action")
        yield from stream_text(thread, "acted")

    @chatkit.sync_action
    def sync_action(thread: t.Any, action: t.Any, sender: t.Any, context: t.Any) -> None:
        calls.append("sync_action")

    return calls


def remaining(app: t.Any, user: str, limit: str = LIMITS) -> int:
    """Turns *user* has left in the current window, as the shared storage counts them."""
    state = app.extensions["chatkit"].state(app)
    stats = state.limiter.limiter.get_window_stats(parse(limit), TURNS, user)
    return int(stats.remaining)


def assert_refused(exchange: t.Any, key: str = "quota.rate", locale: str = "en") -> int:
    """*exchange* is a refusal: one ``error`` event saying in *locale* when to write
    again, and ``Retry-After`` (returned). The client already validated the events."""
    assert exchange.status == 200
    assert exchange.headers["Content-Type"].startswith("text/event-stream")
    retry_after = int(exchange.headers["Retry-After"])
    assert retry_after >= 1
    message = MESSAGES[locale][key].format(wait=wait_text(retry_after, locale))
    assert exchange.events == [
        {"type": "error", "code": "custom", "message": message, "allow_retry": True}
    ]
    return retry_after


def started(exchange: t.Any) -> bool:
    """*exchange* is a turn that ran: a stream with an answer and no error."""
    return exchange.status == 200 and not exchange.of_type("error") and bool(exchange.events)


# --- what counts ----------------------------------------------------------------------------


@any_store
def test_every_request_that_starts_a_turn_counts_and_no_other_does(app, chatkit, alice):
    calls = respond_with_pending_items(chatkit)
    created = alice.chatkit("threads.create", input=user_input("setup"))
    assert started(created)
    thread_id = created.events[0]["thread"]["id"]
    items = {e["item"]["type"]: e["item"]["id"] for e in created.of_type("thread.item.done")}
    assert remaining(app, "alice") == 5

    reads = [
        ("threads.list", {"limit": 5}),
        ("threads.get_by_id", {"thread_id": thread_id}),
        ("items.list", {"thread_id": thread_id}),
        ("threads.update", {"thread_id": thread_id, "title": "Renamed"}),
        (
            "items.feedback",
            {"thread_id": thread_id, "item_ids": [items["assistant_message"]], "kind": "positive"},
        ),
        (
            "threads.sync_custom_action",
            {
                "thread_id": thread_id,
                "item_id": items["widget"],
                "action": {"type": "x", "payload": {}},
            },
        ),
    ]
    for kind, params in reads * 3:
        assert alice.chatkit(kind, **params).status == 200, kind
    assert remaining(app, "alice") == 5

    turns = [
        (
            "threads.add_structured_input",
            {"item_id": items["structured_input"], "input": {"answers": {"q1": {"values": ["a"]}}}},
        ),
        ("threads.add_client_tool_output", {"result": {"n": 2}}),
        (
            "threads.custom_action",
            {"item_id": items["widget"], "action": {"type": "y", "payload": {}}},
        ),
        ("threads.add_user_message", {"input": user_input("again")}),
        ("threads.retry_after_item", {"item_id": items["user_message"]}),
    ]
    for left, (kind, params) in zip(range(4, -1, -1), turns, strict=True):
        assert started(alice.chatkit(kind, thread_id=thread_id, **params)), kind
        assert remaining(app, "alice") == left, kind

    # over the limit: refused, whatever the kind (the retry made new pending items)
    listed = alice.chatkit("items.list", thread_id=thread_id, limit=50).body["data"]
    items = {item["type"]: item["id"] for item in listed}
    turns[0][1]["item_id"] = items["structured_input"]
    turns[2][1]["item_id"] = items["widget"]
    before = list(calls)
    for kind, params in turns:
        assert_refused(alice.chatkit(kind, thread_id=thread_id, **params))
    assert calls == before
    assert alice.chatkit("threads.list").status == 200  # reads go on


@any_store
def test_each_user_has_their_own_count(app, chatkit, alice, bob):
    respond_with_pending_items(chatkit)
    for _ in range(6):
        assert started(alice.chatkit("threads.create", input=user_input("hi")))
    assert_refused(alice.chatkit("threads.create", input=user_input("one more")))
    assert remaining(app, "bob") == 6
    assert started(bob.chatkit("threads.create", input=user_input("hi")))
    assert remaining(app, "bob") == 5
    # the key is the authenticated user, whichever way: alice's bearer token is refused too
    token = app.test_client()
    token.environ_base["HTTP_AUTHORIZATION"] = "Bearer token-alice"
    assert_refused(token.chatkit("threads.create", input=user_input("by token")))


# --- the refusal --------------------------------------------------------------------------


def test_a_refused_turn_saves_nothing_and_says_when_to_write_again(store_kind, tmp_path):
    app = make_app(store_kind, tmp_path, CHATKIT_RATE_LIMITS="2 per minute; 100 per day")
    chatkit = app.extensions["chatkit"]
    calls = respond_with_pending_items(chatkit)
    alice = logged_in(app, "alice")
    first = alice.chatkit("threads.create", input=user_input("hello"))
    thread_id = first.events[0]["thread"]["id"]
    assert started(
        alice.chatkit("threads.add_user_message", thread_id=thread_id, input=user_input("second"))
    )
    threads = alice.chatkit("threads.list").body
    items = alice.chatkit("items.list", thread_id=thread_id).body
    before = list(calls)

    retry_after = assert_refused(alice.chatkit("threads.create", input=user_input("new")))
    assert retry_after <= 60  # the minute's window, not the day's
    assert_refused(
        alice.chatkit("threads.add_user_message", thread_id=thread_id, input=user_input("third"))
    )
    assert alice.chatkit("threads.list").body == threads  # no thread created
    assert alice.chatkit("items.list", thread_id=thread_id).body == items  # no message stored
    assert calls == before  # the responder never ran


@any_store
def test_the_refusal_is_in_the_users_language(app, chatkit, alice):
    respond_with_pending_items(chatkit)
    for _ in range(6):
        alice.chatkit("threads.create", input=user_input("hi"))
    for locale, header in [("de", "de-DE,de;q=0.9"), ("fr", "fr"), ("en", "es")]:
        refused = alice.chatkit(
            "threads.create", input=user_input("noch eine"), headers={"Accept-Language": header}
        )
        assert_refused(refused, locale=locale)
    assert "schreiben" in MESSAGES["de"]["quota.rate"]


def test_waits_read_as_seconds_minutes_hours_or_days() -> None:
    assert wait_text(0.2) == "1 second"
    assert wait_text(42) == "42 seconds"
    assert wait_text(60) == "1 minute"
    assert wait_text(61) == "2 minutes"  # rounded up: never too early
    assert wait_text(7199) == "120 minutes"
    assert wait_text(7200) == "2 hours"
    assert wait_text(2 * 86400 + 1) == "3 days"
    assert wait_text(30, "de") == "30 Sekunden" and wait_text(86400 * 3, "de") == "3 Tagen"
    assert wait_text(3600 * 5, "fr") == "5 heures"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("CHATKIT_RATE_LIMITS", "lots"),
        ("CHATKIT_RATE_LIMITS", "20 per fortnight"),
        ("CHATKIT_TOKEN_BUDGET", "200000 tokens a day"),
        ("CHATKIT_RATE_LIMIT_STORAGE", "nosuch://127.0.0.1"),
    ],
)
def test_a_bad_value_stops_init_app_naming_its_key(tmp_path, key, value):
    settings = {"CHATKIT_RATE_LIMITS": "5 per minute", key: value}
    with pytest.raises(RuntimeError, match=key):
        make_app("memory", tmp_path, **settings)


def test_without_limits_or_with_flask_limiter_switched_off_nothing_is_counted(tmp_path):
    plain = make_app("memory", tmp_path, instance="a")
    off = make_app(
        "memory",
        tmp_path,
        instance="b",
        CHATKIT_RATE_LIMITS="1 per minute",
        RATELIMIT_ENABLED=False,
    )
    for app in (plain, off):
        assert app.extensions["chatkit"].state(app).quotas is None
        respond_with_pending_items(app.extensions["chatkit"])
        alice = logged_in(app, "alice")
        for _ in range(3):
            assert started(alice.chatkit("threads.create", input=user_input("hi")))


def test_an_unreachable_storage_lets_turns_through_and_says_so_in_the_log(tmp_path, caplog):
    closed = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    app = make_app(
        "memory", tmp_path, CHATKIT_RATE_LIMITS="1 per minute", CHATKIT_RATE_LIMIT_STORAGE=closed
    )
    respond_with_pending_items(app.extensions["chatkit"])
    alice = logged_in(app, "alice")
    with caplog.at_level(logging.WARNING, logger="flask_chatkit"):
        for _ in range(2):
            assert started(alice.chatkit("threads.create", input=user_input("hi")))
    warnings = [r.getMessage() for r in caplog.records if r.name == "flask_chatkit"]
    assert any("let through uncounted" in w for w in warnings), warnings
    assert not any("alice" in w for w in warnings)


# --- token budgets --------------------------------------------------------------------------


def spent(app: t.Any, user: str, budget: str) -> int:
    """The tokens *user* spent in the budget's current window, as the storage counts them."""
    state = app.extensions["chatkit"].state(app)
    return int(state.limiter.storage.get(parse(budget).key_for(TOKENS, user)))


def test_the_tokens_the_model_reports_are_deducted_and_past_the_budget_turns_are_refused(
    tmp_path, llm
):
    budget = "1000 per day"
    app = assistant_app(
        tmp_path, llm, Assistant(), CHATKIT_TOKEN_BUDGET=budget, CHATKIT_TITLES=False
    )
    reported: list[tuple[str, int]] = []
    app.extensions["chatkit"].state(app).usage_listeners.append(
        lambda context, i, o, model: reported.append((context.user_id, i + o))
    )
    alice = logged_in(app, "alice")
    llm.script(text("Hel", "lo"))
    first = create(alice, "Say hello")
    assert answers(first) == ["Hello"]
    assert reported and all(user == "alice" for user, _ in reported)
    assert spent(app, "alice", budget) == sum(n for _, n in reported) > 0
    assert spent(app, "bob", budget) == 0

    # spend the rest through the same path a custom responder takes
    state = app.extensions["chatkit"].state(app)
    state.quotas.meter("alice")(None, 1000, 0, None)
    requests = len(llm.stream_requests)
    thread_id = thread_of(first)
    items = alice.chatkit("items.list", thread_id=thread_id).body
    retry_after = assert_refused(send(alice, thread_id, "More please"), key="quota.tokens")
    assert 86400 - 60 < retry_after <= 86400  # the day's window, started by the first turn
    assert alice.chatkit("items.list", thread_id=thread_id).body == items
    assert len(llm.stream_requests) == requests  # the model was not asked
    bob = logged_in(app, "bob")
    llm.script(text("Hi ", "Bob"))
    assert answers(create(bob, "Hello")) == ["Hi Bob"]


def test_past_80_percent_of_the_budget_one_notice_ends_the_turn_once_per_window(tmp_path):
    budget = "1000 per day"
    app = make_app("memory", tmp_path, CHATKIT_TOKEN_BUDGET=budget)
    chatkit = app.extensions["chatkit"]
    spend: list[int] = []

    @chatkit.respond
    def respond(thread: t.Any, message: t.Any, context: t.Any) -> t.Iterator[t.Any]:
        yield from stream_text(thread, "ok")
        context.report_usage(spend[0], spend[1], model="custom")  # as README says

    alice = logged_in(app, "alice")

    def turn(input_tokens: int, output_tokens: int, **headers: str) -> t.Any:
        spend[:] = [input_tokens, output_tokens]
        return alice.chatkit("threads.create", input=user_input("hi"), headers=headers)

    first = turn(400, 100)
    assert started(first) and not first.of_type("notice")  # 50 %
    crossing = turn(300, 60, **{"Accept-Language": "de"})  # 86 %
    assert crossing.of_type("thread.item.done")  # the answer came whole, then the notice
    assert crossing.events[-1] == {
        "type": "notice",
        "level": "warning",
        "message": MESSAGES["de"]["quota.notice"].format(percent=86, wait=wait_text(86400, "de")),
    }
    assert not turn(10, 0).of_type("notice")  # 87 %: told already
    assert not turn(100, 100).of_type("notice")  # 107 %: over, still no second notice
    assert spent(app, "alice", budget) == 1070
    assert_refused(turn(1, 1), key="quota.tokens")
    assert spent(app, "alice", budget) == 1070  # a refused turn spends nothing

    # the window ends (its counter expires in the storage): a new one, a new notice
    state = app.extensions["chatkit"].state(app)
    state.limiter.storage.clear(parse(budget).key_for(TOKENS, "alice"))
    assert not turn(500, 0).of_type("notice")
    assert turn(200, 200).events[-1]["type"] == "notice"  # 90 % of the new window


def test_a_budget_window_ends_by_itself(tmp_path):
    budget = "100 per 1 second"
    app = make_app("memory", tmp_path, CHATKIT_TOKEN_BUDGET=budget)
    quotas = app.extensions["chatkit"].state(app).quotas
    meter = quotas.meter("alice")
    meter(None, 90, 0, None)
    assert [n.message for n in meter.notices()] == [
        MESSAGES["en"]["quota.notice"].format(percent=90, wait="1 second")
    ]
    meter(None, 20, 0, None)
    assert quotas.admit("alice").reason == "tokens"
    time.sleep(1.1)
    assert quotas.admit("alice") is None
    again = quotas.meter("alice")
    again(None, 85, 0, None)
    assert len(list(again.notices())) == 1


@any_store
def test_a_turn_the_core_refuses_before_it_runs_is_given_back(store_kind, tmp_path):
    app = make_app(
        store_kind,
        tmp_path,
        CHATKIT_RATE_LIMITS=LIMITS,
        CHATKIT_MAX_TURNS_PER_USER=1,
        CHATKIT_HEARTBEAT_INTERVAL=0,
    )

    @app.extensions["chatkit"].respond
    def respond(thread: t.Any, message: t.Any, context: t.Any) -> t.Iterator[t.Any]:
        yield from stream_text(thread, paced([f"w{i} " for i in range(20)], 0.002))

    alice = logged_in(app, "alice")
    first = Stream(alice, chatkit_request("threads.create", input=user_input("story")))
    first.read_until(lambda events: len(deltas(events)) >= 2)
    assert remaining(app, "alice") == 5
    # over CHATKIT_MAX_TURNS_PER_USER, and on the busy thread: both refused in the stream
    other = alice.chatkit("threads.create", input=user_input("another"))
    assert [e["type"] for e in other.events] == ["error"]
    busy = alice.chatkit(
        "threads.add_user_message",
        thread_id=first.events[0]["thread"]["id"],
        input=user_input("more"),
    )
    assert [e["type"] for e in busy.events] == ["error"]
    assert remaining(app, "alice") == 5  # neither ran, neither counts
    first.finish()
    assert started(alice.chatkit("threads.create", input=user_input("again")))
    assert remaining(app, "alice") == 4


# --- shared counts on Redis ------------------------------------------------------------------


@pytest.mark.slow
def test_two_apps_on_one_redis_share_each_users_count(tmp_path, redis_url):
    apps = [
        make_app(
            "memory",
            tmp_path,
            instance=name,
            CHATKIT_RATE_LIMITS="3 per minute",
            CHATKIT_RATE_LIMIT_STORAGE=redis_url,
        )
        for name in ("one", "two")
    ]
    clients = []
    for app in apps:
        respond_with_pending_items(app.extensions["chatkit"])
        clients.append((logged_in(app, "alice"), logged_in(app, "bob")))
    for n in range(3):
        alice, _ = clients[n % 2]
        assert started(alice.chatkit("threads.create", input=user_input("hi")))
    for alice, _ in clients:
        assert_refused(alice.chatkit("threads.create", input=user_input("hi")))
    assert started(clients[1][1].chatkit("threads.create", input=user_input("hi")))
    assert remaining(apps[0], "bob", "3 per minute") == 2


@pytest.mark.slow
def test_apps_with_their_own_key_prefix_keep_their_counts_apart_on_one_redis(tmp_path, redis_url):
    apps = [
        make_app(
            "memory",
            tmp_path,
            instance=name,
            CHATKIT_RATE_LIMITS="1 per minute",
            CHATKIT_RATE_LIMIT_STORAGE=redis_url,
            # its own prefix: a fresh count on the Redis the other tests share
            RATELIMIT_KEY_PREFIX=f"{tmp_path.name}-{name}",
        )
        for name in ("one", "two")
    ]
    for app in apps:
        respond_with_pending_items(app.extensions["chatkit"])
    first, second = (logged_in(app, "alice") for app in apps)
    assert started(first.chatkit("threads.create", input=user_input("hi")))
    assert started(second.chatkit("threads.create", input=user_input("hi")))  # its own count
    assert_refused(first.chatkit("threads.create", input=user_input("hi")))
    assert_refused(second.chatkit("threads.create", input=user_input("hi")))


@pytest.mark.slow
@pytest.mark.server
def test_two_gunicorn_workers_let_exactly_the_limit_through_from_six_turns_at_once(
    tmp_path, redis_url
):
    env = server_env(
        tmp_path / "instance",
        CHATKIT_RATE_LIMITS="3 per minute",
        CHATKIT_RATE_LIMIT_STORAGE=redis_url,
        CHATKIT_DISCONNECT="cancel",
    )
    users = [f"user{n}" for n in range(4)]
    tokens = {}
    for user in users:
        cli(env, "create-user", user, "--password", "secret")
        tokens[user] = cli(env, "create-token", user).strip().splitlines()[-1]
    access = tmp_path / "access.log"
    log = tmp_path / "server.log"
    # the access log names the worker (pid) that served each request (by its X-Test-Id)
    args = ["--access-logfile", str(access), "--access-logformat", "%(p)s %({x-test-id}i)s"]
    pids: set[str] = set()
    with run_gunicorn(env, workers=2, log=log, extra_args=args) as port:
        time.sleep(0.5)  # the workers' create_app (pool warm-up) is done by now
        for round_, user in enumerate(users):  # a fresh user per round: a fresh count
            body = chatkit_request("threads.create", input=user_input(f"round {round_}"))

            def turn(n: int) -> t.Any:
                conn = HTTPConnection("127.0.0.1", port, timeout=60)
                headers = {
                    "Authorization": f"Bearer {tokens[user]}",
                    "X-Test-Id": f"{user}-{n}",
                }
                return exchange(conn, body, headers)

            with ThreadPoolExecutor(6) as pool:
                replies = list(pool.map(turn, range(6)))
            assert all(response.status == 200 for response, _ in replies)
            through = [events for _, events in replies if not _errors(events)]
            refused = [events for _, events in replies if _errors(events)]
            assert len(through) == 3 and len(refused) == 3, replies
            for events in through:
                assert events[0]["type"] == "thread.created"
                assert any(
                    e["type"] == "thread.item.done" and e["item"]["type"] == "assistant_message"
                    for e in events
                )
            for events in refused:
                assert len(events) == 1 and events[0]["message"].startswith(
                    "You are sending messages faster"
                )
            assert all(r.getheader("Retry-After") for r, events in replies if _errors(events))
            served = _served_by(access.read_text(), user)
            assert len(served) == 6, served
            pids |= set(served.values())
            if len(set(served.values())) == 2:
                break  # both workers took part in this round: the count was shared
        # each user's thread list holds exactly the turns that went through
        conn = HTTPConnection("127.0.0.1", port, timeout=30)
        _, listed = exchange(
            conn,
            chatkit_request("threads.list", limit=20),
            {"Authorization": f"Bearer {tokens[user]}"},
        )
        assert len(listed["data"]) == 3
    assert len(pids) == 2, f"every round was served by one worker: {pids}"
    assert "Traceback" not in log.read_text()


def _errors(events: list[dict[str, t.Any]]) -> list[dict[str, t.Any]]:
    return [e for e in events if e["type"] == "error"]


def _served_by(access_log: str, user: str) -> dict[str, str]:
    """Test id -> the pid of the worker that served it, for *user*'s requests."""
    served = {}
    for line in access_log.splitlines():
        pid, _, test_id = line.strip().partition(" ")
        if test_id.startswith(f"{user}-"):
            served[test_id] = pid.strip("<>")
    return served


def test_report_usage_is_documented_for_custom_responders() -> None:
    from .servers import ROOT

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "context.report_usage(" in readme
    assert "CHATKIT_TOKEN_BUDGET" in readme and "Retry-After" in readme
