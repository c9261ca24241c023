"""Prometheus metrics at ``GET /chatkit/metrics`` (``CHATKIT_METRICS``).

Off by default; for loopback clients or the holder of ``CHATKIT_METRICS_TOKEN``;
every metric there with its type; counts that match the requests made (the
model's tokens as the loopback OpenAI server reported them, its errors, a
client that leaves); no user or thread id in a label; and under gunicorn with
two gevent workers in multiprocess mode, the counts of both workers added up.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import typing as t
from concurrent.futures import ThreadPoolExecutor
from http.client import HTTPConnection
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from flask_chatkit import stream_text
from flask_chatkit.assistant import Assistant
from flask_chatkit.testing import chatkit_request
from flask_chatkit.testing import user_input

from .assistant_helpers import API_KEY
from .assistant_helpers import assistant_app
from .assistant_helpers import create
from .assistant_helpers import thread_of
from .conftest import logged_in
from .conftest import make_app
from .llm_server import error
from .llm_server import text
from .servers import cli
from .servers import run_gunicorn
from .servers import server_env
from .streams import Stream
from .streams import paced

METRICS = "/chatkit/metrics"
ELSEWHERE = {"REMOTE_ADDR": "203.0.113.7"}  # TEST-NET-3: not this host

#: Every metric the issue asks for, with its Prometheus type (family names: a
#: counter's family drops ``_total``).
TYPES = {
    "chatkit_requests": "counter",
    "chatkit_streams_active": "gauge",
    "chatkit_time_to_first_event_seconds": "histogram",
    "chatkit_stream_duration_seconds": "histogram",
    "chatkit_disconnects": "counter",
    "chatkit_model_tokens": "counter",
    "chatkit_model_errors": "counter",
    "chatkit_store_seconds": "histogram",
    "chatkit_rate_limited": "counter",
}

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(body: str) -> tuple[dict[str, str], Samples]:
    """The families' types and every sample's value, keyed by name and labels."""
    types: dict[str, str] = {}
    samples: Samples = {}
    for family in text_string_to_metric_families(body):
        types[family.name] = family.type
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return types, samples


def scrape(client: t.Any, **kwargs: t.Any) -> Samples:
    response = client.get(METRICS, **kwargs)
    assert response.status_code == 200, response.data
    return parse(response.get_data(as_text=True))[1]


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def error_code(response: t.Any) -> str:
    assert response.mimetype == "application/json"
    return response.get_json()["error"]["code"]  # type: ignore[no-any-return]


# --- the endpoint ---------------------------------------------------------------------


def test_the_metrics_endpoint_is_off_by_default(tmp_path: Path) -> None:
    client = make_app("memory", tmp_path).test_client()
    response = client.get(METRICS)
    assert response.status_code == 404
    assert error_code(response) == "not_found"


def test_metrics_are_served_to_loopback_clients_only(tmp_path: Path) -> None:
    client = make_app("memory", tmp_path, CHATKIT_METRICS=True).test_client()
    response = client.get(METRICS)  # the test client comes from 127.0.0.1
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    assert "chatkit_requests_total" in response.get_data(as_text=True)
    assert client.get(METRICS, environ_base={"REMOTE_ADDR": "::1"}).status_code == 200
    refused = client.get(METRICS, environ_base=ELSEWHERE)
    assert refused.status_code == 403
    assert error_code(refused) == "forbidden"
    assert b"chatkit_" not in refused.data


def test_with_a_token_only_its_bearer_reads_the_metrics(tmp_path: Path) -> None:
    token = "metrics-secret-5531"
    client = make_app(
        "memory", tmp_path, CHATKIT_METRICS=True, CHATKIT_METRICS_TOKEN=token
    ).test_client()
    # a proxy on the same host makes every client look local: loopback is not enough
    assert client.get(METRICS).status_code == 403
    for wrong in ("metrics-secret-553", "metrics-secret-55311", "token-alice", ""):
        response = client.get(METRICS, headers={"Authorization": f"Bearer {wrong}"})
        assert response.status_code == 403, wrong
        assert error_code(response) == "forbidden"
    for environ in ({}, ELSEWHERE):
        response = client.get(
            METRICS, headers={"Authorization": f"Bearer {token}"}, environ_base=environ
        )
        assert response.status_code == 200
        assert "chatkit_streams_active" in response.get_data(as_text=True)


def test_every_metric_is_there_with_its_type(tmp_path: Path) -> None:
    client = make_app("memory", tmp_path, CHATKIT_METRICS=True).test_client()
    types, _ = parse(client.get(METRICS).get_data(as_text=True))
    for name, kind in TYPES.items():
        assert types.get(name) == kind, (name, types.get(name))


# --- the counts -----------------------------------------------------------------------


def test_counts_match_the_requests_made(tmp_path: Path, llm: t.Any) -> None:
    app = assistant_app(
        tmp_path, llm, Assistant(), kind="sqlalchemy", CHATKIT_METRICS=True, CHATKIT_TITLES=False
    )
    alice = logged_in(app, "alice")
    before = scrape(alice)

    llm.script(text("Hel", "lo"), text("One", " two", " three"))
    first = create(alice, "Say hello")
    create(alice, "Count to three")
    for _ in range(3):
        assert alice.chatkit("threads.list").status == 200
    assert alice.chatkit("threads.get_by_id", thread_id="thr_nope").status == 404
    assert alice.send(b"{not json", valid=False).status == 400
    llm.script(error(429, "Slow down."))
    failed = create(alice, "Fail please")
    assert failed.of_type("error"), failed.events

    after = scrape(alice)
    req = "chatkit_requests_total"
    assert delta(before, after, req, type="threads.create", status="200") == 3
    assert delta(before, after, req, type="threads.list", status="200") == 3
    assert delta(before, after, req, type="threads.get_by_id", status="404") == 1
    assert delta(before, after, req, type="unknown", status="400") == 1

    # the tokens the loopback model server reported: output one per chunk, input
    # its estimate of the request's input (tests/llm_server.py)
    calls = llm.stream_requests
    assert len(calls) == 3
    expected_in = sum(
        max(1, len(json.dumps(c.body.get("input", c.body.get("messages")))) // 4) for c in calls[:2]
    )
    tokens = "chatkit_model_tokens_total"
    assert delta(before, after, tokens, direction="output") == 2 + 3
    assert delta(before, after, tokens, direction="input") == expected_in
    assert delta(before, after, "chatkit_model_errors_total", kind="rate_limit") == 1

    streams = 3
    assert delta(before, after, "chatkit_stream_duration_seconds_count") == streams
    assert delta(before, after, "chatkit_time_to_first_event_seconds_count") == streams
    assert value(after, "chatkit_streams_active") == value(before, "chatkit_streams_active")
    # the SQL store's transactions are timed
    assert delta(before, after, "chatkit_store_seconds_count", operation="write") >= 3
    assert delta(before, after, "chatkit_store_seconds_count", operation="read") >= 4
    assert thread_of(first)


def test_a_client_that_leaves_counts_as_a_disconnect(tmp_path: Path) -> None:
    app = make_app("memory", tmp_path, CHATKIT_METRICS=True)

    @app.extensions["chatkit"].respond
    def respond(thread: t.Any, message: t.Any, context: t.Any) -> t.Iterator[t.Any]:
        yield from stream_text(thread, paced([f"w{n} " for n in range(40)], 0.02))

    alice = logged_in(app, "alice")
    before = scrape(alice)
    stream = Stream(alice, chatkit_request("threads.create", input=user_input("Go on")))
    stream.read_until(lambda events: any(e["type"] == "thread.item.updated" for e in events))
    during = scrape(alice)
    assert value(during, "chatkit_streams_active") == value(before, "chatkit_streams_active") + 1
    stream.close()
    after = scrape(alice)
    assert delta(before, after, "chatkit_disconnects_total", outcome="cancelled") == 1
    assert delta(before, after, "chatkit_disconnects_total", outcome="detached") == 0
    assert value(after, "chatkit_streams_active") == value(before, "chatkit_streams_active")
    req = "chatkit_requests_total"
    assert delta(before, after, req, type="threads.create", status="200") == 1


def test_no_label_holds_a_user_or_thread_id(tmp_path: Path, llm: t.Any) -> None:
    app = assistant_app(tmp_path, llm, Assistant(), CHATKIT_METRICS=True, CHATKIT_TITLES=False)
    alice = logged_in(app, "alice")
    thread_id = thread_of(create(alice, "Hello"))
    alice.chatkit("items.list", thread_id=thread_id)
    alice.chatkit("threads.list", headers={"Authorization": "Bearer token-alice"})
    labels = {
        label_value
        for family in text_string_to_metric_families(alice.get(METRICS).get_data(as_text=True))
        for sample in family.samples
        for label_value in sample.labels.values()
    }
    assert labels  # there are labels to look at
    for label_value in labels:
        assert "alice" not in label_value and thread_id not in label_value, label_value
        assert "thr_" not in label_value and API_KEY not in label_value, label_value


# --- gunicorn, two workers, multiprocess mode ---------------------------------------------


def _per_worker(folder: Path, scratch: Path) -> dict[int, float]:
    """``chatkit_requests_total`` of each worker, from its own counter file (read
    alone, through a copy in *scratch*, by prometheus_client's own collector)."""
    from prometheus_client import CollectorRegistry
    from prometheus_client import generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    counts: dict[int, float] = {}
    for path in folder.glob("counter_*.db"):
        alone = scratch / path.stem
        alone.mkdir(exist_ok=True)
        shutil.copyfile(path, alone / path.name)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(alone))
        samples = parse(generate_latest(registry).decode())[1]
        counts[int(path.stem.split("_")[-1])] = sum(
            v for (name, _), v in samples.items() if name == "chatkit_requests_total"
        )
    return counts


@pytest.mark.slow
@pytest.mark.server
def test_two_gunicorn_workers_add_up_in_multiprocess_mode(tmp_path: Path) -> None:
    folder = tmp_path / "prometheus"
    folder.mkdir()
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    (folder / "counter_999999.db").write_bytes(b"stale")  # a former run's: removed at start
    env = server_env(
        tmp_path / "instance",
        CHATKIT_METRICS="1",
        PROMETHEUS_MULTIPROC_DIR=str(folder),
    )
    cli(env, "create-user", "tester", "--password", "secret")
    token = cli(env, "create-token", "tester").strip().splitlines()[-1]
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    body = json.dumps(chatkit_request("threads.list"))

    def one(_: int) -> int:
        conn = HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            conn.request("POST", "/chatkit", body=body, headers=headers)
            response = conn.getresponse()
            response.read()
            return response.status
        finally:
            conn.close()

    def metrics_text() -> str:
        conn = HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            conn.request("GET", METRICS)
            response = conn.getresponse()
            assert response.status == 200
            return response.read().decode()
        finally:
            conn.close()

    log = tmp_path / "server.log"
    extra = ["-c", "example_app/gunicorn_conf.py", "--graceful-timeout", "5"]
    with run_gunicorn(env, workers=2, log=log, extra_args=extra) as port:
        assert not (folder / "counter_999999.db").exists()
        sent = 0
        # batches of concurrent requests until both workers have answered some
        with ThreadPoolExecutor(max_workers=20) as pool:
            for _ in range(20):
                assert set(pool.map(one, range(20))) == {200}
                sent += 20
                if len([c for c in _per_worker(folder, scratch).values() if c]) >= 2:
                    break
                time.sleep(0.05)
        per_worker = _per_worker(folder, scratch)
        assert len([c for c in per_worker.values() if c]) == 2, per_worker
        for _ in range(4):  # whichever worker answers the scrape, it adds up both
            samples = parse(metrics_text())[1]
            total = value(samples, "chatkit_requests_total", type="threads.list", status="200")
            assert total == sent
        assert value(samples, "chatkit_streams_active") == 0
        assert sum(per_worker.values()) == sent
        assert os.listdir(folder)
    assert "Traceback" not in log.read_text()


def test_a_rate_limited_turn_is_counted_and_logged_as_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app("memory", tmp_path, CHATKIT_METRICS=True, CHATKIT_RATE_LIMITS="1 per minute")

    @app.extensions["chatkit"].respond
    def respond(thread: t.Any, message: t.Any, context: t.Any) -> t.Iterator[t.Any]:
        yield from stream_text(thread, "Hi")

    alice = logged_in(app, "alice")
    before = scrape(app.test_client())
    caplog.set_level(logging.INFO, logger="flask_chatkit")
    first = alice.chatkit("threads.create", input=user_input("one"))
    second = alice.chatkit("threads.create", input=user_input("two"))
    assert [e["type"] for e in second.events] == ["error"]
    after = scrape(app.test_client())
    assert delta(before, after, "chatkit_rate_limited_total") == 1
    outcomes = [
        r.chatkit_access["outcome"] for r in caplog.records if r.name == "flask_chatkit.access"
    ]
    assert outcomes == ["completed", "refused"], outcomes
    assert first.events[0]["type"] == "thread.created"
