"""Feedback is kept and exported; user data is deleted and idle threads are purged.

``flask chatkit export-feedback | delete-user-data | purge-threads`` run through
``app.test_cli_runner()`` against every store; attachments are real uploads, so
their bytes on disk are checked too.
"""

from __future__ import annotations

import csv
import io
import json
import os
import typing as t
from datetime import UTC
from datetime import datetime
from datetime import timedelta

import pytest
import sqlalchemy as sa
from flask import Flask

from flask_chatkit import InMemoryStore
from flask_chatkit import stream_text
from flask_chatkit.errors import NotFoundError
from flask_chatkit.testing import user_input

from .conftest import any_store

FIELDS = ["user_id", "thread_id", "item_id", "kind", "created_at"]


@pytest.fixture(autouse=True)
def answer(chatkit: t.Any) -> None:
    @chatkit.respond
    def respond(thread: t.Any, message: t.Any, context: t.Any) -> t.Any:
        yield from stream_text(thread, "an answer")


def start(client: t.Any, text: str = "hi", attachments: list[str] | None = None) -> list[str]:
    """A new thread with a user message and an answer: ``[thread, user msg, answer]``."""
    ex = client.chatkit("threads.create", input=user_input(text, attachments=attachments))
    assert ex.status == 200 and "error" not in ex.types, ex.body
    done = [e["item"]["id"] for e in ex.of_type("thread.item.done")]
    return [ex.events[0]["thread"]["id"], *done]


def vote(client: t.Any, thread_id: str, item_ids: list[str], kind: str) -> None:
    ex = client.chatkit("items.feedback", thread_id=thread_id, item_ids=item_ids, kind=kind)
    assert ex.status == 200, ex.body


def upload(client: t.Any, data: bytes = b"some bytes") -> str:
    response = client.post(
        "/chatkit/upload",
        data={"file": (io.BytesIO(data), "notes.txt", "text/plain")},
        content_type="multipart/form-data",
    )
    assert response.status_code == 200, response.data
    return response.get_json()["id"]  # type: ignore[no-any-return]


def file_of(app: Flask, attachment_id: str) -> str:
    return os.path.join(app.config["CHATKIT_ATTACHMENTS_FOLDER"], attachment_id)


def thread_ids(client: t.Any) -> set[str]:
    return {th["id"] for th in client.chatkit("threads.list", limit=100).body["data"]}


def cli(app: Flask, *args: str, input: str | None = None) -> t.Any:
    return app.test_cli_runner().invoke(args=["chatkit", *args], input=input)


def backend(app: Flask) -> t.Any:
    return app.extensions["chatkit"].state(app).server.store


def rows_of(app: Flask, user_id: str) -> dict[str, int]:
    """How many threads, items, attachments and votes of *user_id* the store holds."""
    store = backend(app)
    if isinstance(store, InMemoryStore):
        mine = {i for i, e in store._threads.items() if e.user_id == user_id}
        return {
            "threads": len(mine),
            "items": sum(len(store._items.get(i, {})) for i in mine),
            "attachments": sum(1 for u, _ in store._attachments.values() if u == user_id),
            "feedback": sum(1 for k in store.feedback if k[0] == user_id),
        }
    with app.app_context(), store.engine.connect() as conn:
        return {
            name: conn.execute(
                sa.select(sa.func.count()).select_from(table).where(table.c.user_id == user_id)
            ).scalar_one()
            for name, table in [
                ("threads", store.threads),
                ("items", store.items),
                ("attachments", store.attachments),
                ("feedback", store.feedback),
            ]
        }


def age(app: Flask, thread_id: str, days: float) -> None:
    """Make a thread and all its items *days* old, as if nothing happened since."""
    when = datetime.now(UTC) - timedelta(days=days)
    store = backend(app)
    if isinstance(store, InMemoryStore):
        entry = store._threads[thread_id]
        entry.updated_at = when
        entry.key = (when, entry.key[1])
        items = store._items[thread_id]
        for item_id, (key, item) in list(items.items()):
            items[item_id] = ((when, key[1]), item)
        return
    naive = when.replace(tzinfo=None)
    th, it = store.threads, store.items
    with app.app_context(), store.engine.begin() as conn:
        conn.execute(
            sa.update(th).where(th.c.id == thread_id).values(created_at=naive, updated_at=naive)
        )
        conn.execute(sa.update(it).where(it.c.thread_id == thread_id).values(created_at=naive))


# --- feedback ----------------------------------------------------------------------------


def test_a_vote_is_kept_and_a_repeated_vote_replaces_it(alice: t.Any, store: t.Any) -> None:
    thread_id, message_id, answer_id = start(alice)
    before = datetime.now(UTC)
    vote(alice, thread_id, [answer_id], "positive")
    after = datetime.now(UTC)
    [first] = store.export_feedback()
    assert {k: v for k, v in first.items() if k != "created_at"} == {
        "user_id": "alice",
        "thread_id": thread_id,
        "item_id": answer_id,
        "kind": "positive",
    }
    assert first["created_at"].tzinfo is not None
    assert before - timedelta(seconds=1) <= first["created_at"] <= after + timedelta(seconds=1)

    vote(alice, thread_id, [answer_id], "negative")
    [second] = store.export_feedback()
    assert (second["item_id"], second["kind"]) == (answer_id, "negative")
    assert second["created_at"] >= first["created_at"]

    vote(alice, thread_id, [message_id, answer_id, answer_id], "positive")
    votes = store.export_feedback("alice")
    assert sorted((v["item_id"], v["kind"]) for v in votes) == sorted(
        [(message_id, "positive"), (answer_id, "positive")]
    )


def test_export_feedback_is_oldest_first_and_filters_by_user(
    alice: t.Any, bob: t.Any, store: t.Any
) -> None:
    a_thread, _, a_answer = start(alice)
    b_thread, _, b_answer = start(bob)
    a2_thread, _, a2_answer = start(alice)
    vote(alice, a_thread, [a_answer], "positive")
    vote(bob, b_thread, [b_answer], "negative")
    vote(alice, a2_thread, [a2_answer], "negative")
    everyone = store.export_feedback()
    assert [(v["user_id"], v["item_id"]) for v in everyone] == [
        ("alice", a_answer),
        ("bob", b_answer),
        ("alice", a2_answer),
    ]
    assert [v["created_at"] for v in everyone] == sorted(v["created_at"] for v in everyone)
    assert [v["item_id"] for v in store.export_feedback("alice")] == [a_answer, a2_answer]
    assert [(v["kind"], v["thread_id"]) for v in store.export_feedback("bob")] == [
        ("negative", b_thread)
    ]
    assert store.export_feedback("nobody") == []


@pytest.fixture
def two_votes(alice: t.Any, bob: t.Any) -> list[tuple[str, str, str, str]]:
    """alice votes positive, then bob negative: ``(user, thread, item, kind)`` each."""
    a_thread, _, a_answer = start(alice)
    b_thread, _, b_answer = start(bob)
    vote(alice, a_thread, [a_answer], "positive")
    vote(bob, b_thread, [b_answer], "negative")
    return [("alice", a_thread, a_answer, "positive"), ("bob", b_thread, b_answer, "negative")]


def check_times(rows: list[dict[str, str]]) -> None:
    for row in rows:
        stamp = datetime.fromisoformat(row["created_at"])
        assert stamp.utcoffset() == timedelta(0), row
        assert abs(datetime.now(UTC) - stamp) < timedelta(minutes=5)


def test_cli_exports_feedback_as_json_lines_by_default(app: Flask, two_votes: t.Any) -> None:
    result = cli(app, "export-feedback")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [list(r) for r in rows] == [FIELDS, FIELDS]
    assert [tuple(r[f] for f in FIELDS[:4]) for r in rows] == two_votes
    check_times(rows)

    only_bob = cli(app, "export-feedback", "--user", "bob")
    assert [json.loads(line)["item_id"] for line in only_bob.stdout.splitlines()] == [
        two_votes[1][2]
    ]
    assert cli(app, "export-feedback", "--user", "nobody").stdout == ""


def test_cli_exports_feedback_as_csv_with_a_header(app: Flask, two_votes: t.Any) -> None:
    result = cli(app, "export-feedback", "--format", "csv")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == ",".join(FIELDS)
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [tuple(r[f] for f in FIELDS[:4]) for r in rows] == two_votes
    check_times(rows)
    alice_only = cli(app, "export-feedback", "--format", "csv", "--user", "alice").stdout
    assert alice_only.splitlines()[0] == ",".join(FIELDS)
    assert [r["user_id"] for r in csv.DictReader(io.StringIO(alice_only))] == ["alice"]
    bad = cli(app, "export-feedback", "--format", "xml")
    assert bad.exit_code == 2 and "xml" in bad.output


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_cli_exports_feedback_to_a_file(
    app: Flask, two_votes: t.Any, tmp_path: t.Any, fmt: str
) -> None:
    target = tmp_path / f"votes.{fmt}"
    result = cli(app, "export-feedback", "--format", fmt, "--output", str(target))
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert "2 feedback votes" in result.stderr
    text = target.read_text(encoding="utf-8")
    if fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(text)))
    else:
        rows = [json.loads(line) for line in text.splitlines()]
    assert [tuple(r[f] for f in FIELDS[:4]) for r in rows] == two_votes


# --- delete-user-data ------------------------------------------------------------------------


@pytest.fixture
def two_users(app: Flask, alice: t.Any, bob: t.Any) -> dict[str, t.Any]:
    """alice: two threads (one with an attached file), one loose upload, one vote;
    bob: one thread with an attached file and one vote."""
    a_file = upload(alice, b"alice attached")
    a_loose = upload(alice, b"alice loose")
    a1 = start(alice, "with a file", [a_file])
    a2 = start(alice, "plain")
    vote(alice, a2[0], [a2[2]], "positive")
    b_file = upload(bob, b"bob attached")
    b1 = start(bob, "bob's", [b_file])
    vote(bob, b1[0], [b1[2]], "negative")
    for attachment_id in (a_file, a_loose, b_file):
        assert os.path.exists(file_of(app, attachment_id))
    return {
        "alice": [a1[0], a2[0]],
        "alice_files": [a_file, a_loose],
        "bob": b1[0],
        "bob_file": b_file,
    }


def assert_bob_intact(
    app: Flask, bob: t.Any, store: t.Any, ctx_of: t.Any, data: dict[str, t.Any]
) -> None:
    assert thread_ids(bob) == {data["bob"]}
    assert len(bob.chatkit("items.list", thread_id=data["bob"]).body["data"]) == 2
    assert store.load_attachment(data["bob_file"], ctx_of("bob")).thread_id == data["bob"]
    with open(file_of(app, data["bob_file"]), "rb") as f:
        assert f.read() == b"bob attached"
    assert [v["kind"] for v in store.export_feedback("bob")] == ["negative"]
    assert rows_of(app, "bob") == {"threads": 1, "items": 2, "attachments": 1, "feedback": 1}


def test_delete_user_data_removes_all_of_one_users_data_and_nothing_else(
    app: Flask, alice: t.Any, bob: t.Any, store: t.Any, ctx_of: t.Any, two_users: t.Any
) -> None:
    assert rows_of(app, "alice") == {"threads": 2, "items": 4, "attachments": 2, "feedback": 1}
    result = cli(app, "delete-user-data", "alice", "--yes")
    assert result.exit_code == 0, result.output
    assert result.output.strip() == (
        "Removed 2 threads, 4 items, 2 attachments, 1 feedback vote of user 'alice'."
    )

    assert rows_of(app, "alice") == {"threads": 0, "items": 0, "attachments": 0, "feedback": 0}
    assert thread_ids(alice) == set()
    for thread_id in two_users["alice"]:
        assert alice.chatkit("threads.get_by_id", thread_id=thread_id).status == 404
    for attachment_id in two_users["alice_files"]:
        assert not os.path.exists(file_of(app, attachment_id))
        with pytest.raises(NotFoundError):
            store.load_attachment(attachment_id, ctx_of("alice"))
    assert store.export_feedback("alice") == []
    assert_bob_intact(app, bob, store, ctx_of, two_users)

    again = cli(app, "delete-user-data", "alice", "--yes")
    assert again.exit_code == 0
    assert "Removed 0 threads, 0 items, 0 attachments, 0 feedback votes" in again.output
    # alice can start over
    fresh = start(alice)[0]
    assert thread_ids(alice) == {fresh}


def test_delete_user_data_asks_first_and_no_deletes_nothing(
    app: Flask, alice: t.Any, bob: t.Any, store: t.Any, ctx_of: t.Any, two_users: t.Any
) -> None:
    refused = cli(app, "delete-user-data", "alice", input="n\n")
    assert refused.exit_code == 1
    assert "Delete all ChatKit data of user 'alice'?" in refused.output
    assert "Aborted" in refused.output and "Removed" not in refused.output
    assert rows_of(app, "alice") == {"threads": 2, "items": 4, "attachments": 2, "feedback": 1}
    assert thread_ids(alice) == set(two_users["alice"])
    assert all(os.path.exists(file_of(app, i)) for i in two_users["alice_files"])

    confirmed = cli(app, "delete-user-data", "alice", input="y\n")
    assert confirmed.exit_code == 0, confirmed.output
    assert "Removed 2 threads, 4 items, 2 attachments, 1 feedback vote" in confirmed.output
    assert rows_of(app, "alice")["threads"] == 0
    assert_bob_intact(app, bob, store, ctx_of, two_users)


# --- purge-threads ---------------------------------------------------------------------------


def test_purge_threads_deletes_only_idle_threads_with_their_bytes(
    app: Flask, alice: t.Any, bob: t.Any, store: t.Any, ctx_of: t.Any
) -> None:
    old_file = upload(alice, b"old")
    old = start(alice, "long ago", [old_file])
    vote(alice, old[0], [old[2]], "positive")
    bob_old = start(bob, "bob long ago")
    recent_file = upload(alice, b"recent")
    recent = start(alice, "today", [recent_file])
    revived = start(alice, "revived by a new message")
    renamed = start(alice, "revived by a new title")
    for thread_id in (old[0], bob_old[0], revived[0], renamed[0]):
        age(app, thread_id, 40)
    more = alice.chatkit(
        "threads.add_user_message", thread_id=revived[0], input=user_input("still here")
    )
    assert more.status == 200 and "error" not in more.types
    assert alice.chatkit("threads.update", thread_id=renamed[0], title="New").status == 200

    nothing = cli(app, "purge-threads", "--older-than", "50")
    assert nothing.exit_code == 0, nothing.output
    assert nothing.output.startswith(
        "Removed 0 threads, 0 items, 0 attachments, 0 feedback votes idle since "
    )

    result = cli(app, "purge-threads", "--older-than", "30")
    assert result.exit_code == 0, result.output
    assert result.output.startswith(
        "Removed 2 threads, 4 items, 1 attachment, 1 feedback vote idle since "
    )
    cutoff = datetime.fromisoformat(result.output.split("idle since ")[1].strip().rstrip("."))
    assert abs(cutoff - (datetime.now(UTC) - timedelta(days=30))) < timedelta(minutes=5)

    assert thread_ids(alice) == {recent[0], revived[0], renamed[0]}
    assert thread_ids(bob) == set()
    assert alice.chatkit("threads.get_by_id", thread_id=old[0]).status == 404
    assert len(alice.chatkit("items.list", thread_id=revived[0]).body["data"]) == 4
    assert not os.path.exists(file_of(app, old_file))
    with pytest.raises(NotFoundError):
        store.load_attachment(old_file, ctx_of("alice"))
    assert os.path.exists(file_of(app, recent_file))
    assert store.load_attachment(recent_file, ctx_of("alice")).thread_id == recent[0]
    assert store.export_feedback() == []
    assert rows_of(app, "alice")["items"] == 2 + 4 + 2


def test_purge_threads_zero_days_purges_everything_idle_until_now(app: Flask, alice: t.Any) -> None:
    start(alice)
    start(alice)
    result = cli(app, "purge-threads", "--older-than", "0")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("Removed 2 threads, 4 items,")
    assert thread_ids(alice) == set()


@any_store
@pytest.mark.parametrize(
    "args", [["--older-than", v] for v in ("-1", "soon", "nan", "inf", "1e9")] + [[]]
)
def test_purge_threads_needs_a_non_negative_age(app: Flask, alice: t.Any, args: list[str]) -> None:
    thread_id = start(alice)[0]
    age(app, thread_id, 400)
    result = cli(app, "purge-threads", *args)
    assert result.exit_code == 2, result.output
    assert "--older-than" in result.output
    assert "Removed" not in result.output
    assert thread_ids(alice) == {thread_id}
