"""``flask chatkit export-user-data USER_ID -o FILE [--files]``: one user's data out.

Alice and Bob chat through the test client (threads, answers, a widget, uploads,
votes); the export of Alice's data must hold every one of her records, in the
protocol's JSON shapes (checked with the official models), and nothing of Bob's.
Runs on every store.
"""

from __future__ import annotations

import io
import json
import os
import re
import typing as t
import zipfile

import pytest
from chatkit.types import ThreadMetadata as OfficialThreadMetadata
from flask import Flask

from flask_chatkit import stream_text
from flask_chatkit import widget_item
from flask_chatkit.testing import user_input
from flask_chatkit.types import ThreadItemDoneEvent

from . import wire
from .conftest import any_store

CARD = {"type": "Card", "children": [{"type": "Text", "value": "a widget"}]}


@pytest.fixture(autouse=True)
def answer(chatkit: t.Any) -> None:
    @chatkit.respond
    def respond(thread: t.Any, message: t.Any, context: t.Any) -> t.Any:
        yield from stream_text(thread, "an answer")
        yield ThreadItemDoneEvent(item=widget_item(thread, CARD, copy_text="a widget"))


def start(client: t.Any, text: str, attachments: list[str] | None = None) -> dict[str, t.Any]:
    ex = client.chatkit("threads.create", input=user_input(text, attachments=attachments))
    assert ex.status == 200 and "error" not in ex.types, ex.body
    return {
        "id": ex.events[0]["thread"]["id"],
        "items": [e["item"]["id"] for e in ex.of_type("thread.item.done")],
    }


def upload(client: t.Any, data: bytes, name: str = "notes.txt") -> str:
    response = client.post(
        "/chatkit/upload",
        data={"file": (io.BytesIO(data), name, "text/plain")},
        content_type="multipart/form-data",
    )
    assert response.status_code == 200, response.data
    return response.get_json()["id"]  # type: ignore[no-any-return]


def cli(app: Flask, *args: str) -> t.Any:
    return app.test_cli_runner().invoke(args=["chatkit", *args])


@pytest.fixture
def chats(app: Flask, alice: t.Any, bob: t.Any) -> dict[str, t.Any]:
    """alice: two threads (one with a file whose client name tries to climb out),
    a loose upload, a vote; bob: a thread with a file and a vote."""
    a_file = upload(alice, b"alice attached", name="../../etc/passwd")
    a_loose = upload(alice, b"alice loose")
    a1 = start(alice, "with a file", [a_file])
    a2 = start(alice, "plain")
    vote = alice.chatkit(
        "items.feedback", thread_id=a2["id"], item_ids=[a2["items"][1]], kind="positive"
    )
    assert vote.status == 200
    b_file = upload(bob, b"bob attached")
    b1 = start(bob, "bob's", [b_file])
    assert (
        bob.chatkit(
            "items.feedback", thread_id=b1["id"], item_ids=[b1["items"][1]], kind="negative"
        ).status
        == 200
    )
    return {"alice": [a1, a2], "alice_files": [a_file, a_loose], "bob": b1, "bob_file": b_file}


def parse_lines(data: bytes) -> list[dict[str, t.Any]]:
    lines = data.decode().splitlines()
    records = [json.loads(line) for line in lines]
    assert all(isinstance(r, dict) and "type" in r for r in records)
    return records


def test_export_user_data_writes_every_record_of_one_user_and_nothing_else(
    app: Flask, alice: t.Any, chats: dict[str, t.Any], tmp_path: t.Any
) -> None:
    target = tmp_path / "alice.jsonl"
    result = cli(app, "export-user-data", "alice", "-o", str(target))
    assert result.exit_code == 0, result.output
    assert result.output.strip() == (
        f"Exported 2 threads, 6 items, 2 attachments, 1 feedback vote of user 'alice' to {target}."
    )
    data = target.read_bytes()
    records = parse_lines(data)
    kinds = [r["type"] for r in records]
    assert {k: kinds.count(k) for k in set(kinds)} == {
        "thread": 2,
        "item": 6,
        "attachment": 2,
        "feedback": 1,
    }
    # nothing of bob's: not his thread, items, file or vote
    for bobs in [chats["bob"]["id"], chats["bob_file"], *chats["bob"]["items"], "bob"]:
        assert bobs.encode() not in data

    threads = [r["thread"] for r in records if r["type"] == "thread"]
    assert [th["id"] for th in threads] == [th["id"] for th in chats["alice"]]
    for thread in threads:
        OfficialThreadMetadata.model_validate(thread)
        # the items, in the protocol's shapes, are what items.list serves
        served = alice.chatkit("items.list", thread_id=thread["id"], order="asc", limit=100)
        exported = [
            r["item"] for r in records if r["type"] == "item" and r["thread_id"] == thread["id"]
        ]
        assert exported == served.body["data"]
        for item in exported:
            wire.ITEM.validate_python(item)
    assert "widget" in [r["item"]["type"] for r in records if r["type"] == "item"]

    attachments = [r["attachment"] for r in records if r["type"] == "attachment"]
    assert sorted(a["id"] for a in attachments) == sorted(chats["alice_files"])
    for attachment in attachments:
        wire.ATTACHMENT.validate_python(attachment)
    by_id = {a["id"]: a for a in attachments}
    assert by_id[chats["alice_files"][0]]["thread_id"] == chats["alice"][0]["id"]
    assert "thread_id" not in by_id[chats["alice_files"][1]]  # never sent
    assert not [r for r in records if "file" in r]  # no bytes without --files

    (vote,) = [r for r in records if r["type"] == "feedback"]
    assert vote["thread_id"] == chats["alice"][1]["id"]
    assert vote["item_id"] == chats["alice"][1]["items"][1] and vote["kind"] == "positive"
    assert re.match(r"\d{4}-\d\d-\d\dT", vote["created_at"])


def test_export_with_files_is_a_zip_of_the_lines_and_the_bytes_named_by_id(
    app: Flask, chats: dict[str, t.Any], tmp_path: t.Any
) -> None:
    plain = tmp_path / "alice.jsonl"
    assert cli(app, "export-user-data", "alice", "-o", str(plain)).exit_code == 0
    target = tmp_path / "alice.zip"
    result = cli(app, "export-user-data", "alice", "-o", str(target), "--files")
    assert result.exit_code == 0, result.output
    assert "and the bytes of 2 files of user 'alice'" in result.output
    a_file, a_loose = chats["alice_files"]
    with zipfile.ZipFile(target) as archive:
        assert sorted(archive.namelist()) == sorted(
            ["data.jsonl", f"files/{a_file}", f"files/{a_loose}"]
        )
        assert archive.read(f"files/{a_file}") == b"alice attached"
        assert archive.read(f"files/{a_loose}") == b"alice loose"
        records = parse_lines(archive.read("data.jsonl"))
    files = {r["attachment"]["id"]: r["file"] for r in records if r["type"] == "attachment"}
    assert files == {a_file: f"files/{a_file}", a_loose: f"files/{a_loose}"}
    # the client's name stays in the record, never a path in the archive
    names = [r["attachment"]["name"] for r in records if r["type"] == "attachment"]
    assert any("passwd" in name for name in names)
    without_files = [{k: v for k, v in r.items() if k != "file"} for r in records]
    assert without_files == parse_lines(plain.read_bytes())


@any_store
def test_exporting_a_user_with_nothing_writes_an_empty_file_and_says_so(
    app: Flask, chats: dict[str, t.Any], tmp_path: t.Any
) -> None:
    target = tmp_path / "carol.jsonl"
    result = cli(app, "export-user-data", "carol", "-o", str(target))
    assert result.exit_code == 0, result.output
    assert result.output.strip() == (
        f"User 'carol' has no ChatKit data: wrote an empty export to {target}."
    )
    assert target.read_bytes() == b""
    zipped = tmp_path / "carol.zip"
    assert cli(app, "export-user-data", "carol", "-o", str(zipped), "--files").exit_code == 0
    with zipfile.ZipFile(zipped) as archive:
        assert archive.namelist() == ["data.jsonl"] and archive.read("data.jsonl") == b""


@any_store
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-o", "{tmp}/missing/alice.jsonl"], "the folder '{tmp}/missing' does not exist"),
        (["-o", "{tmp}"], "is a directory"),
        (["-o", "{tmp}/alice.jsonl", "--files"], "name it *.zip"),
        ([], "Missing option '--output' / '-o'"),
    ],
)
def test_export_refuses_an_output_it_cannot_write_with_a_clear_error(
    app: Flask, chats: dict[str, t.Any], tmp_path: t.Any, args: list[str], message: str
) -> None:
    result = cli(app, "export-user-data", "alice", *[a.format(tmp=tmp_path) for a in args])
    assert result.exit_code == 2
    assert message.format(tmp=tmp_path) in " ".join(result.output.split())
    assert "Traceback" not in result.output
    assert not [name for name in os.listdir(tmp_path) if name.endswith(".partial")]
    assert not os.path.exists(tmp_path / "alice.jsonl")


PROGRESS_SCRIPT = """
import sys
from flask import Flask
from flask.cli import ScriptInfo
from flask_chatkit import ChatKit, InMemoryStore, RequestContext
from flask_chatkit.types import ThreadMetadata, utcnow

app = Flask("progress")
app.config["CHATKIT_ATTACHMENTS_FOLDER"] = sys.argv[2]
store = InMemoryStore()
ChatKit(app, store=store)
for number in range(5):
    thread = ThreadMetadata(id=f"thr_{number}", created_at=utcnow())
    store.save_thread(thread, RequestContext(user_id="alice"))
app.cli.main(
    ["chatkit", "export-user-data", "alice", "-o", sys.argv[1]],
    obj=ScriptInfo(create_app=lambda: app),
    standalone_mode=False,
)
"""


@pytest.mark.slow
def test_export_shows_a_progress_bar_on_a_terminal_only(tmp_path: t.Any) -> None:
    import pty
    import subprocess
    import sys

    def run(terminal: bool) -> str:
        target = tmp_path / f"out-{terminal}.jsonl"
        args = [sys.executable, "-c", PROGRESS_SCRIPT, str(target), str(tmp_path)]
        if not terminal:
            done = subprocess.run(args, capture_output=True, text=True, timeout=60)
            assert done.returncode == 0, done.stderr
            return done.stdout + done.stderr
        leader, follower = pty.openpty()
        with subprocess.Popen(args, stdout=follower, stderr=follower) as process:
            os.close(follower)
            output = b""
            while True:
                try:
                    chunk = os.read(leader, 4096)
                except OSError:  # the terminal closed with the process
                    break
                if not chunk:
                    break
                output += chunk
            assert process.wait(timeout=60) == 0, output
        os.close(leader)
        return output.decode(errors="replace")

    shown = run(terminal=True)
    assert "Exporting threads" in shown and "100%" in shown
    assert "Exported 5 threads" in shown
    piped = run(terminal=False)
    assert "Exporting threads" not in piped and "%" not in piped
    assert piped.strip().startswith("Exported 5 threads, 0 items")
