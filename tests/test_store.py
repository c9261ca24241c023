"""The store contract, run against every store: InMemoryStore, SQLAlchemyStore on SQLite
and SQLAlchemyStore on PostgreSQL (the session's throwaway server, ``tests/pg.py``).

Each SQLAlchemy test gets its own Flask app (``make_app``), a fresh ``SQLAlchemy()``
(the store defines its models on ``db.Model``) and a fresh SQLite file (a copy of the
session's schema) or emptied PostgreSQL tables.
"""

from __future__ import annotations

import json
import typing as t
from datetime import UTC
from datetime import datetime
from datetime import timedelta
from datetime import timezone

import pytest
import sqlalchemy as sa

from flask_chatkit import InMemoryStore
from flask_chatkit import NotFoundError
from flask_chatkit import RequestContext
from flask_chatkit import Store
from flask_chatkit.server import ChatKitServer
from flask_chatkit.sqlalchemy_store import SQLAlchemyStore
from flask_chatkit.testing import chatkit_request
from flask_chatkit.types import AssistantMessageContent
from flask_chatkit.types import AssistantMessageItem
from flask_chatkit.types import AttachmentUploadDescriptor
from flask_chatkit.types import ClosedStatus
from flask_chatkit.types import FileAttachment
from flask_chatkit.types import HiddenContextItem
from flask_chatkit.types import ImageAttachment
from flask_chatkit.types import SDKHiddenContextItem
from flask_chatkit.types import ThreadMetadata
from flask_chatkit.types import UserMessageItem
from flask_chatkit.types import UserMessageTextContent
from flask_chatkit.types import utcnow

from .conftest import make_app

ALICE = RequestContext(user_id="alice")
BOB = RequestContext(user_id="bob")
BASE = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return BASE + timedelta(seconds=seconds)


def make_thread(thread_id: str, when: float = 0, **fields: t.Any) -> ThreadMetadata:
    return ThreadMetadata(id=thread_id, created_at=at(when), **fields)


def user_msg(thread_id: str, item_id: str, when: float = 0, text: str = "hi") -> UserMessageItem:
    return UserMessageItem(
        id=item_id,
        thread_id=thread_id,
        created_at=at(when),
        content=[UserMessageTextContent(text=text)],
    )


def answer(thread_id: str, item_id: str, when: float = 0, text: str = "ok") -> AssistantMessageItem:
    return AssistantMessageItem(
        id=item_id,
        thread_id=thread_id,
        created_at=at(when),
        content=[AssistantMessageContent(text=text)],
    )


def hidden(thread_id: str, item_id: str, when: float = 0) -> HiddenContextItem:
    return HiddenContextItem(id=item_id, thread_id=thread_id, created_at=at(when), content="x")


def ids(page: t.Any) -> list[str]:
    return [record.id for record in page.data]


def votes(store: t.Any, ctx: RequestContext) -> dict[tuple[str, str], str]:
    """The user's stored votes as ``{(thread_id, item_id): kind}``, whatever the store."""
    if isinstance(store, SQLAlchemyStore):
        return {(v["thread_id"], v["item_id"]): v["kind"] for v in store.load_feedback(ctx)}
    return {(k[1], k[2]): v[0] for k, v in store.feedback.items() if k[0] == ctx.user_id}


def _sql_store(kind: str, tmp_path: t.Any) -> t.Iterator[SQLAlchemyStore]:
    app = make_app(kind, tmp_path, register=False, login=False)
    db = app.extensions["test_db"]
    with app.app_context():
        yield app.extensions["test_store"]
        db.session.remove()
        db.engine.dispose()


@pytest.fixture
def sqlite_store(tmp_path: t.Any) -> t.Iterator[SQLAlchemyStore]:
    yield from _sql_store("sqlalchemy", tmp_path)


@pytest.fixture
def pg_store(postgres_clean_db: str, tmp_path: t.Any) -> t.Iterator[SQLAlchemyStore]:
    yield from _sql_store("postgresql", tmp_path)


SQL_FIXTURES = {"sqlalchemy": "sqlite_store", "postgresql": "pg_store"}


@pytest.fixture(params=["memory", *SQL_FIXTURES])
def store(request: pytest.FixtureRequest) -> Store[t.Any]:
    if request.param == "memory":
        return InMemoryStore()
    return request.getfixturevalue(SQL_FIXTURES[request.param])  # type: ignore[no-any-return]


@pytest.fixture(params=list(SQL_FIXTURES))
def sql_store(request: pytest.FixtureRequest) -> SQLAlchemyStore:
    """SQLAlchemyStore on SQLite and on PostgreSQL, for the SQL-only tests."""
    return request.getfixturevalue(SQL_FIXTURES[request.param])  # type: ignore[no-any-return]


# --- threads -------------------------------------------------------------------------


def test_saved_thread_loads_back_and_a_second_save_overwrites_it(store):
    thread = make_thread("thr_1", title="First", status=ClosedStatus(reason="done"))
    store.save_thread(thread, ALICE)
    assert store.load_thread("thr_1", ALICE) == thread

    thread.title = "Renamed"
    store.save_thread(thread, ALICE)
    loaded = store.load_thread("thr_1", ALICE)
    assert loaded.title == "Renamed"
    assert loaded.status == ClosedStatus(reason="done")
    assert ids(store.load_threads(10, None, "asc", ALICE)) == ["thr_1"]


def test_thread_title_may_be_null(store):
    store.save_thread(make_thread("thr_1", title="x"), ALICE)
    store.save_thread(make_thread("thr_1", title=None), ALICE)
    assert store.load_thread("thr_1", ALICE).title is None
    assert store.load_threads(10, None, "asc", ALICE).data[0].title is None


def test_private_thread_metadata_and_image_domains_round_trip(store):
    private = {"model": "gpt", "nested": {"n": [1, 2.5, None, True]}, "empty": {}}
    store.save_thread(
        make_thread("thr_1", metadata=private, allowed_image_domains=["img.example"]), ALICE
    )
    loaded = store.load_thread("thr_1", ALICE)
    assert loaded.metadata == private
    assert loaded.allowed_image_domains == ["img.example"]
    assert store.load_threads(10, None, "desc", ALICE).data[0].metadata == private


def test_threads_are_ordered_by_created_at_with_insertion_order_breaking_ties(store):
    # inserted out of time order; b, c and e share one timestamp
    for thread_id, when in [("b", 1), ("c", 1), ("a", 0), ("d", 2), ("e", 1)]:
        store.save_thread(make_thread(thread_id, when), ALICE)
    assert ids(store.load_threads(10, None, "asc", ALICE)) == ["a", "b", "c", "e", "d"]
    assert ids(store.load_threads(10, None, "desc", ALICE)) == ["d", "e", "c", "b", "a"]


def test_thread_order_compares_instants_not_wall_clock_times(store):
    # 12:00 at +02:00 is 10:00 UTC, earlier than 11:00 UTC
    plus_two = timezone(timedelta(hours=2))
    store.save_thread(make_thread("late", 0).model_copy(update={"created_at": at(-3600)}), ALICE)
    store.save_thread(
        ThreadMetadata(id="early", created_at=datetime(2024, 5, 1, 12, 0, tzinfo=plus_two)), ALICE
    )
    assert ids(store.load_threads(10, None, "asc", ALICE)) == ["early", "late"]


# --- paging, the same contract for threads and items -----------------------------------


def _fill(store: Store[t.Any], kind: str) -> t.Callable[..., t.Any]:
    """Five records inserted out of order (asc order: a b c e d); return a lister."""
    order = [("b", 1), ("c", 1), ("a", 0), ("d", 2), ("e", 1)]
    if kind == "threads":
        for record_id, when in order:
            store.save_thread(make_thread(record_id, when), ALICE)
        return lambda limit, after, direction: store.load_threads(limit, after, direction, ALICE)
    store.save_thread(make_thread("thr_p"), ALICE)
    for record_id, when in order:
        store.add_thread_item("thr_p", user_msg("thr_p", record_id, when), ALICE)
    return lambda limit, after, direction: store.load_thread_items(
        "thr_p", after, limit, direction, ALICE
    )


@pytest.mark.parametrize("kind", ["threads", "items"])
def test_pages_follow_the_exclusive_after_cursor_exactly(store, kind):
    page = _fill(store, kind)

    def shape(limit: int, after: str | None, order: str) -> tuple[list[str], bool, str | None]:
        p = page(limit, after, order)
        return ids(p), p.has_more, p.after

    assert shape(10, None, "asc") == (["a", "b", "c", "e", "d"], False, None)
    assert shape(5, None, "asc") == (["a", "b", "c", "e", "d"], False, None)  # exact page
    assert shape(2, None, "asc") == (["a", "b"], True, "b")
    assert shape(2, "b", "asc") == (["c", "e"], True, "e")
    assert shape(2, "e", "asc") == (["d"], False, None)
    assert shape(2, "d", "asc") == ([], False, None)  # after the last record
    assert shape(2, None, "desc") == (["d", "e"], True, "e")
    assert shape(2, "e", "desc") == (["c", "b"], True, "b")
    assert shape(2, "b", "desc") == (["a"], False, None)
    assert shape(2, "a", "desc") == ([], False, None)
    assert shape(4, "b", "asc") == (["c", "e", "d"], False, None)


@pytest.mark.parametrize("kind", ["threads", "items"])
@pytest.mark.parametrize("order", ["asc", "desc"])
def test_walking_one_record_at_a_time_visits_each_record_once_in_order(store, kind, order):
    page = _fill(store, kind)
    seen, after = [], None
    while True:
        p = page(1, after, order)
        seen += ids(p)
        if not p.has_more:
            break
        after = p.after
    expected = ["a", "b", "c", "e", "d"]
    assert seen == (expected if order == "asc" else expected[::-1])


@pytest.mark.parametrize("kind", ["threads", "items"])
def test_unknown_after_cursor_is_not_found(store, kind):
    page = _fill(store, kind)
    with pytest.raises(NotFoundError):
        page(2, "nope", "asc")


def test_empty_lists_have_no_more_and_no_cursor(store):
    empty = store.load_threads(20, None, "desc", ALICE)
    assert (empty.data, empty.has_more, empty.after) == ([], False, None)
    store.save_thread(make_thread("thr_1"), ALICE)
    items = store.load_thread_items("thr_1", None, 20, "asc", ALICE)
    assert (items.data, items.has_more, items.after) == ([], False, None)


# --- items -------------------------------------------------------------------------------


def test_items_round_trip_with_their_type_and_content(store):
    store.save_thread(make_thread("thr_1"), ALICE)
    message, reply = user_msg("thr_1", "msg_u", 0, "hello"), answer("thr_1", "msg_a", 1, "hi!")
    store.add_thread_item("thr_1", message, ALICE)
    store.add_thread_item("thr_1", reply, ALICE)
    assert store.load_item("thr_1", "msg_u", ALICE) == message
    assert store.load_thread_items("thr_1", None, 20, "asc", ALICE).data == [message, reply]
    assert store.load_thread_items("thr_1", None, 20, "desc", ALICE).data == [reply, message]


def test_hidden_items_are_left_out_and_has_more_stays_exact(store):
    store.save_thread(make_thread("thr_1"), ALICE)
    for item in [
        user_msg("thr_1", "u1", 0),
        hidden("thr_1", "h1", 1),
        answer("thr_1", "a1", 2),
        hidden("thr_1", "h2", 3),
        SDKHiddenContextItem(id="h3", thread_id="thr_1", created_at=at(4), content="stop"),
    ]:
        store.add_thread_item("thr_1", item, ALICE)

    def visible(limit: int, after: str | None, order: str) -> tuple[list[str], bool]:
        p = store.load_thread_items("thr_1", after, limit, order, ALICE, include_hidden=False)
        return ids(p), p.has_more

    assert visible(2, None, "asc") == (["u1", "a1"], False)  # only hidden items follow
    assert visible(1, None, "asc") == (["u1"], True)
    assert visible(1, "u1", "asc") == (["a1"], False)
    assert visible(1, None, "desc") == (["a1"], True)
    assert visible(5, "h2", "desc") == (["a1", "u1"], False)  # a hidden cursor still works
    everything = store.load_thread_items("thr_1", None, 2, "asc", ALICE)
    assert (ids(everything), everything.has_more) == (["u1", "h1"], True)


def test_add_thread_item_with_an_existing_id_overwrites_it(store):
    store.save_thread(make_thread("thr_1"), ALICE)
    store.add_thread_item("thr_1", answer("thr_1", "msg_1", 0, "draft"), ALICE)
    store.add_thread_item("thr_1", answer("thr_1", "msg_1", 0, "final"), ALICE)
    page = store.load_thread_items("thr_1", None, 20, "asc", ALICE)
    assert ids(page) == ["msg_1"]
    assert page.data[0].content[0].text == "final"


def test_save_item_inserts_then_updates_in_place(store):
    store.save_thread(make_thread("thr_1"), ALICE)
    store.add_thread_item("thr_1", user_msg("thr_1", "u1", 0), ALICE)
    store.save_item("thr_1", answer("thr_1", "a1", 1, "first"), ALICE)  # insert
    store.add_thread_item("thr_1", user_msg("thr_1", "u2", 2), ALICE)
    store.save_item("thr_1", answer("thr_1", "a1", 1, "second"), ALICE)  # update
    assert store.load_item("thr_1", "a1", ALICE).content[0].text == "second"
    assert ids(store.load_thread_items("thr_1", None, 20, "asc", ALICE)) == ["u1", "a1", "u2"]


def test_load_item_of_an_unknown_id_is_not_found(store):
    store.save_thread(make_thread("thr_1"), ALICE)
    store.save_thread(make_thread("thr_2"), ALICE)
    store.add_thread_item("thr_2", user_msg("thr_2", "u1"), ALICE)
    with pytest.raises(NotFoundError):
        store.load_item("thr_1", "missing", ALICE)
    with pytest.raises(NotFoundError):  # exists, but in another thread
        store.load_item("thr_1", "u1", ALICE)


def test_delete_thread_item_removes_only_that_item(store):
    store.save_thread(make_thread("thr_1"), ALICE)
    for i in range(3):
        store.add_thread_item("thr_1", user_msg("thr_1", f"u{i}", i), ALICE)
    store.delete_thread_item("thr_1", "u1", ALICE)
    store.delete_thread_item("thr_1", "u1", ALICE)  # already gone: no error
    assert ids(store.load_thread_items("thr_1", None, 20, "asc", ALICE)) == ["u0", "u2"]
    with pytest.raises(NotFoundError):
        store.load_item("thr_1", "u1", ALICE)


def test_delete_items_after_deletes_only_later_items_and_counts_them(store):
    store.save_thread(make_thread("thr_1"), ALICE)
    store.save_thread(make_thread("thr_2"), ALICE)
    # equal timestamps: "later" means inserted later
    for i in range(5):
        store.add_thread_item("thr_1", user_msg("thr_1", f"u{i}", 7), ALICE)
    store.add_thread_item("thr_2", user_msg("thr_2", "other", 9), ALICE)
    assert store.delete_items_after("thr_1", "u1", ALICE) == 3
    assert ids(store.load_thread_items("thr_1", None, 20, "asc", ALICE)) == ["u0", "u1"]
    assert store.delete_items_after("thr_1", "u1", ALICE) == 0
    assert ids(store.load_thread_items("thr_2", None, 20, "asc", ALICE)) == ["other"]
    with pytest.raises(NotFoundError):
        store.delete_items_after("thr_1", "missing", ALICE)


def test_delete_thread_removes_items_and_feedback_and_detaches_attachments(store):
    store.save_thread(make_thread("thr_1"), ALICE)
    store.save_thread(make_thread("thr_2"), ALICE)
    store.add_thread_item("thr_1", answer("thr_1", "a1"), ALICE)
    store.add_thread_item("thr_2", answer("thr_2", "a2"), ALICE)
    store.save_feedback("thr_1", ["a1"], "positive", ALICE)
    store.save_feedback("thr_2", ["a2"], "negative", ALICE)
    store.save_attachment(
        FileAttachment(id="atc_1", name="f.txt", mime_type="text/plain", thread_id="thr_1"), ALICE
    )

    store.delete_thread("thr_1", ALICE)

    with pytest.raises(NotFoundError):
        store.load_thread("thr_1", ALICE)
    with pytest.raises(NotFoundError):
        store.load_thread_items("thr_1", None, 20, "asc", ALICE)
    with pytest.raises(NotFoundError):
        store.delete_thread("thr_1", ALICE)
    assert votes(store, ALICE) == {("thr_2", "a2"): "negative"}
    assert store.load_attachment("atc_1", ALICE).thread_id is None
    assert ids(store.load_threads(20, None, "asc", ALICE)) == ["thr_2"]
    # a new thread with the old id starts empty
    store.save_thread(make_thread("thr_1"), ALICE)
    assert store.load_thread_items("thr_1", None, 20, "asc", ALICE).data == []


# --- attachments -------------------------------------------------------------------------


def test_attachments_round_trip_with_private_metadata_kept_out_of_json(store):
    file = FileAttachment(
        id="atc_f",
        name="notes.txt",
        mime_type="text/plain",
        upload_descriptor=AttachmentUploadDescriptor(
            url="https://up.example/atc_f", method="PUT", headers={"X-Key": "1"}
        ),
        metadata={"upload_pending": True, "declared_size": 12, "deep": {"k": [1]}},
    )
    image = ImageAttachment(
        id="atc_i",
        name="dot.png",
        mime_type="image/png",
        preview_url="https://cdn.example/dot.png",
        thread_id="thr_9",
    )
    store.save_attachment(file, ALICE)
    store.save_attachment(image, ALICE)

    loaded = store.load_attachment("atc_f", ALICE)
    assert loaded == file
    assert loaded.metadata == {"upload_pending": True, "declared_size": 12, "deep": {"k": [1]}}
    assert "metadata" not in json.loads(loaded.model_dump_json())
    assert "upload_pending" not in loaded.model_dump_json()
    loaded_image = store.load_attachment("atc_i", ALICE)
    assert loaded_image == image
    assert (loaded_image.type, loaded_image.preview_url) == ("image", "https://cdn.example/dot.png")
    assert loaded_image.metadata is None


def test_save_attachment_upserts(store):
    store.save_attachment(
        FileAttachment(
            id="atc_1", name="a.txt", mime_type="text/plain", metadata={"upload_pending": True}
        ),
        ALICE,
    )
    store.save_attachment(
        FileAttachment(
            id="atc_1",
            name="a.txt",
            mime_type="text/plain",
            thread_id="thr_1",
            metadata={"size": 3},
        ),
        ALICE,
    )
    loaded = store.load_attachment("atc_1", ALICE)
    assert (loaded.thread_id, loaded.metadata) == ("thr_1", {"size": 3})


def test_load_attachments_keeps_the_requested_order_and_fails_on_any_missing(store):
    for attachment_id in ["atc_1", "atc_2", "atc_3"]:
        store.save_attachment(
            FileAttachment(id=attachment_id, name="f", mime_type="text/plain"), ALICE
        )
    loaded = store.load_attachments(["atc_3", "atc_1", "atc_2"], ALICE)
    assert [a.id for a in loaded] == ["atc_3", "atc_1", "atc_2"]
    assert store.load_attachments([], ALICE) == []
    with pytest.raises(NotFoundError):
        store.load_attachments(["atc_1", "atc_missing", "atc_2"], ALICE)
    with pytest.raises(NotFoundError):
        store.load_attachment("atc_missing", ALICE)


def test_delete_attachment_removes_it(store):
    store.save_attachment(FileAttachment(id="atc_1", name="f", mime_type="text/plain"), ALICE)
    store.save_attachment(FileAttachment(id="atc_2", name="g", mime_type="text/plain"), ALICE)
    store.delete_attachment("atc_1", ALICE)
    with pytest.raises(NotFoundError):
        store.load_attachment("atc_1", ALICE)
    with pytest.raises(NotFoundError):
        store.delete_attachment("atc_1", ALICE)
    assert store.load_attachment("atc_2", ALICE).name == "g"


# --- feedback ------------------------------------------------------------------------------


def test_save_feedback_replaces_a_repeated_vote(store):
    store.save_thread(make_thread("thr_1"), ALICE)
    store.add_thread_item("thr_1", answer("thr_1", "a1", 0), ALICE)
    store.add_thread_item("thr_1", answer("thr_1", "a2", 1), ALICE)
    store.save_feedback("thr_1", ["a1", "a2"], "positive", ALICE)
    store.save_feedback("thr_1", ["a1", "a1"], "negative", ALICE)
    assert votes(store, ALICE) == {("thr_1", "a1"): "negative", ("thr_1", "a2"): "positive"}


def test_save_feedback_rejects_unknown_items_and_records_nothing(store):
    store.save_thread(make_thread("thr_1"), ALICE)
    store.save_thread(make_thread("thr_2"), ALICE)
    store.add_thread_item("thr_1", answer("thr_1", "a1"), ALICE)
    store.add_thread_item("thr_2", answer("thr_2", "a2"), ALICE)
    with pytest.raises(NotFoundError):
        store.save_feedback("thr_1", ["a1", "missing"], "positive", ALICE)
    with pytest.raises(NotFoundError):  # an item of another thread
        store.save_feedback("thr_1", ["a2"], "positive", ALICE)
    assert votes(store, ALICE) == {}


# --- per-user isolation --------------------------------------------------------------------


def _alices_world(store: Store[t.Any]) -> None:
    store.save_thread(make_thread("thr_a", title="Alice's", metadata={"secret": 1}), ALICE)
    store.add_thread_item("thr_a", user_msg("thr_a", "msg_a", 0), ALICE)
    store.add_thread_item("thr_a", answer("thr_a", "msg_b", 1), ALICE)
    store.save_attachment(
        FileAttachment(
            id="atc_a",
            name="a.txt",
            mime_type="text/plain",
            thread_id="thr_a",
            metadata={"owner": "alice"},
        ),
        ALICE,
    )


def _snapshot(store: Store[t.Any]) -> t.Any:
    return (
        store.load_thread("thr_a", ALICE),
        store.load_thread_items("thr_a", None, 50, "asc", ALICE),
        store.load_attachment("atc_a", ALICE),
        votes(store, ALICE),
    )


BOB_CALLS: dict[str, t.Callable[[Store[t.Any]], t.Any]] = {
    "load_thread": lambda s: s.load_thread("thr_a", BOB),
    "save_thread": lambda s: s.save_thread(make_thread("thr_a", title="Bob's"), BOB),
    "delete_thread": lambda s: s.delete_thread("thr_a", BOB),
    "load_thread_items": lambda s: s.load_thread_items("thr_a", None, 20, "asc", BOB),
    "load_threads_after": lambda s: s.load_threads(20, "thr_a", "asc", BOB),
    "load_thread_items_after": lambda s: s.load_thread_items("thr_b", "msg_a", 20, "asc", BOB),
    "add_thread_item": lambda s: s.add_thread_item("thr_a", answer("thr_a", "msg_x"), BOB),
    "save_item": lambda s: s.save_item("thr_a", answer("thr_a", "msg_b", 1, "Bob"), BOB),
    "load_item": lambda s: s.load_item("thr_a", "msg_a", BOB),
    "load_item_via_own_thread": lambda s: s.load_item("thr_b", "msg_a", BOB),
    "delete_thread_item": lambda s: s.delete_thread_item("thr_a", "msg_a", BOB),
    "delete_items_after": lambda s: s.delete_items_after("thr_a", "msg_a", BOB),
    "save_feedback": lambda s: s.save_feedback("thr_a", ["msg_b"], "negative", BOB),
    "save_feedback_via_own_thread": lambda s: s.save_feedback("thr_b", ["msg_b"], "negative", BOB),
    "load_attachment": lambda s: s.load_attachment("atc_a", BOB),
    "load_attachments": lambda s: s.load_attachments(["atc_a"], BOB),
    "save_attachment": lambda s: s.save_attachment(
        FileAttachment(id="atc_a", name="bob.txt", mime_type="text/plain"), BOB
    ),
    "delete_attachment": lambda s: s.delete_attachment("atc_a", BOB),
}


@pytest.mark.parametrize("call", list(BOB_CALLS), ids=list(BOB_CALLS))
def test_another_users_records_are_not_found_and_left_unchanged(store, call):
    _alices_world(store)
    store.save_thread(make_thread("thr_b"), BOB)  # Bob has a thread of his own
    before = _snapshot(store)
    with pytest.raises(NotFoundError):
        BOB_CALLS[call](store)
    assert _snapshot(store) == before
    assert ids(store.load_threads(20, None, "asc", BOB)) == ["thr_b"]
    assert store.load_thread_items("thr_b", None, 20, "asc", BOB).data == []


def test_another_users_lists_are_empty(store):
    _alices_world(store)
    assert store.load_threads(20, None, "desc", BOB).data == []
    assert store.load_threads(20, None, "asc", BOB).has_more is False
    assert votes(store, BOB) == {}


def test_a_turns_end_saves_only_into_the_users_own_thread_even_once_its_lease_ran_out(
    store: Store[t.Any],
) -> None:
    store.save_thread(make_thread("thr_a"), ALICE)
    store.save_thread(make_thread("thr_b"), BOB)
    assert store.acquire_turn("thr_a", "token-a", at(10_000_000), ALICE)
    store.end_turn("thr_a", "token-a", [answer("thr_a", "msg_1", 1)], None, ALICE)
    # no lease (it ran out and was given to another turn, say): still alice's thread
    store.end_turn("thr_a", "gone", [answer("thr_a", "msg_2", 2)], None, ALICE)
    ids = [i.id for i in store.load_thread_items("thr_a", None, 10, "asc", ALICE).data]
    assert ids == ["msg_1", "msg_2"]
    assert store.acquire_turn("thr_a", "token-c", at(10_000_000), ALICE)  # released
    # and never into bob's
    with pytest.raises(NotFoundError):
        store.end_turn("thr_b", "gone", [answer("thr_b", "msg_3", 3)], None, ALICE)
    assert store.load_thread_items("thr_b", None, 10, "asc", BOB).data == []


def test_a_checkpoint_inserts_then_updates_and_never_touches_another_users_item(
    store: Store[t.Any],
) -> None:
    store.save_thread(make_thread("thr_a"), ALICE)
    store.save_thread(make_thread("thr_b"), BOB)
    store.add_thread_item("thr_b", answer("thr_b", "msg_x", 1, text="bob's"), BOB)
    store.save_checkpoint("thr_a", [answer("thr_a", "msg_a", 1, text="so")], set(), ALICE)
    store.save_checkpoint("thr_a", [answer("thr_a", "msg_a", 1, text="so far")], {"msg_a"}, ALICE)
    mine = store.load_thread_items("thr_a", None, 10, "asc", ALICE).data
    assert [(i.id, i.content[0].text) for i in mine] == [("msg_a", "so far")]
    # an id that is someone else's: their row stays as it was
    try:
        store.save_checkpoint("thr_a", [answer("thr_a", "msg_x", 2, text="alice's")], set(), ALICE)
    except Exception:
        pass  # a store may refuse it outright
    (bobs,) = store.load_thread_items("thr_b", None, 10, "asc", BOB).data
    assert bobs.content[0].text == "bob's"


# --- timestamps and ids ------------------------------------------------------------------


def test_timestamps_round_trip_as_aware_utc(store):
    plus_two = timezone(timedelta(hours=2))
    local = datetime(2024, 5, 1, 14, 30, 15, 123456, tzinfo=plus_two)
    store.save_thread(ThreadMetadata(id="thr_1", created_at=local), ALICE)
    naive = datetime(2024, 5, 1, 12, 31)  # read as UTC
    store.add_thread_item(
        "thr_1",
        UserMessageItem(
            id="u1", thread_id="thr_1", created_at=naive, content=[UserMessageTextContent(text="x")]
        ),
        ALICE,
    )
    for value, expected in [
        (store.load_thread("thr_1", ALICE).created_at, local),
        (store.load_threads(5, None, "asc", ALICE).data[0].created_at, local),
        (store.load_item("thr_1", "u1", ALICE).created_at, naive.replace(tzinfo=UTC)),
    ]:
        assert value == expected
        assert value.utcoffset() == timedelta(0)
    assert store.load_thread("thr_1", ALICE).created_at.isoformat() == (
        "2024-05-01T12:30:15.123456+00:00"
    )


def test_generated_ids_have_the_sdk_prefixes_and_are_unique(store):
    thread = make_thread("thr_1")
    assert store.generate_thread_id(ALICE).startswith("thr_")
    assert store.generate_attachment_id("image/png", ALICE).startswith("atc_")
    for item_type, prefix in [
        ("message", "msg_"),
        ("tool_call", "tc_"),
        ("workflow", "wf_"),
        ("task", "tsk_"),
        ("sdk_hidden_context", "shcx_"),
    ]:
        assert store.generate_item_id(item_type, thread, ALICE).startswith(prefix)
    many = [store.generate_item_id("message", thread, ALICE) for _ in range(2000)]
    many += [store.generate_thread_id(ALICE) for _ in range(2000)]
    assert len(set(many)) == len(many)


# --- SQLAlchemyStore only ------------------------------------------------------------------


def _indexed(inspector: t.Any, table: str) -> list[list[str]]:
    """Column lists of every index (and unique constraint) on *table*."""
    cols = [ix["column_names"] for ix in inspector.get_indexes(table)]
    cols += [uc["column_names"] for uc in inspector.get_unique_constraints(table)]
    return cols


def test_sqlalchemy_store_creates_its_tables_and_indexes(sql_store):
    inspector = sa.inspect(sql_store.engine)
    tables = set(inspector.get_table_names())
    assert {"chatkit_threads", "chatkit_items", "chatkit_attachments", "chatkit_feedback"} <= tables

    def leads(table: str, *columns: str) -> bool:
        return any(ix[: len(columns)] == list(columns) for ix in _indexed(inspector, table))

    for table in ["chatkit_threads", "chatkit_items", "chatkit_attachments"]:
        assert leads(table, "id"), f"{table}.id is not unique-indexed"
    assert leads("chatkit_threads", "user_id", "created_at")
    assert leads("chatkit_items", "thread_id", "created_at")
    assert leads("chatkit_items", "user_id")
    assert leads("chatkit_attachments", "user_id")
    assert leads("chatkit_attachments", "thread_id")
    assert leads("chatkit_feedback", "thread_id")


def _count_statements(store: SQLAlchemyStore, action: t.Callable[[], t.Any]) -> int:
    statements: list[str] = []

    def count(conn: t.Any, cursor: t.Any, statement: str, *args: t.Any) -> None:
        statements.append(statement)

    sa.event.listen(store.engine, "before_cursor_execute", count)
    try:
        action()
    finally:
        sa.event.remove(store.engine, "before_cursor_execute", count)
    return len(statements)


def test_sqlalchemy_reads_use_a_bounded_number_of_statements(sql_store):
    server: ChatKitServer[t.Any] = ChatKitServer(sql_store)
    counts: dict[int, list[int]] = {}
    for length in (5, 200):
        thread_id = f"thr_{length}"
        sql_store.save_thread(make_thread(thread_id), ALICE)
        for i in range(length):
            item = (hidden if i % 7 == 3 else answer)(thread_id, f"{thread_id}_{i}", i)
            sql_store.add_thread_item(thread_id, item, ALICE)
        requests = [
            chatkit_request("items.list", thread_id=thread_id),
            chatkit_request(
                "items.list", thread_id=thread_id, order="asc", limit=3, after=f"{thread_id}_1"
            ),
            chatkit_request("threads.get_by_id", thread_id=thread_id),
            chatkit_request("threads.list", limit=2),
        ]
        counts[length] = [
            _count_statements(sql_store, lambda r=r: server.process(json.dumps(r), ALICE))
            for r in requests
        ]
        counts[length].append(
            _count_statements(
                sql_store,
                lambda tid=thread_id: sql_store.load_thread_items(
                    tid, None, 20, "desc", ALICE, include_hidden=False
                ),
            )
        )
    assert min(counts[5]) >= 1 and counts[5] == counts[200]
    assert max(counts[200]) <= 4, counts


def from_now(seconds: float) -> datetime:
    return utcnow() + timedelta(seconds=seconds)


def test_an_abandoned_turn_is_closed_once_with_its_notes_and_a_live_one_never(
    store: Store[t.Any],
) -> None:
    store.save_thread(make_thread("thr_a"), ALICE)
    store.save_thread(make_thread("thr_b"), BOB)
    note = answer("thr_a", "msg_note", 5, text="interrupted")
    # a live lease is not abandoned: nothing happens
    assert store.acquire_turn("thr_a", "live", from_now(3600), ALICE)
    assert not store.close_abandoned_turn("thr_a", "live", [note], ALICE)
    store.release_turn("thr_a", "live", ALICE)
    # a lease that ran out unreleased (its process died)
    assert store.acquire_turn("thr_a", "dead", from_now(-1), ALICE)
    thread, lease = store.load_thread_and_lease("thr_a", ALICE)
    assert lease is not None and lease.token == "dead" and not lease.live()
    assert not store.close_abandoned_turn("thr_a", "other", [note], ALICE)  # not its token
    assert not store.close_abandoned_turn("thr_a", "dead", [note], BOB)  # not bob's thread
    assert store.close_abandoned_turn("thr_a", "dead", [note], ALICE)
    assert not store.close_abandoned_turn("thr_a", "dead", [note], ALICE)  # once only
    assert store.load_thread_and_lease("thr_a", ALICE)[1] is None
    items = store.load_thread_items("thr_a", None, 10, "asc", ALICE).data
    assert [i.id for i in items] == ["msg_note"]


def test_renewing_leases_together_extends_only_those_still_held_by_their_turns(
    store: Store[t.Any],
) -> None:
    for thread_id in ("thr_a", "thr_b"):
        store.save_thread(make_thread(thread_id), ALICE)
    assert store.acquire_turn("thr_a", "ta", from_now(60), ALICE)
    assert store.acquire_turn("thr_b", "tb", from_now(60), ALICE)
    later = from_now(3600).replace(microsecond=0)
    store.renew_turns({"thr_a": "ta", "thr_b": "not-its-token"}, later)
    assert store.load_thread_and_lease("thr_a", ALICE)[1].expires_at == later
    assert store.load_thread_and_lease("thr_b", ALICE)[1].expires_at < from_now(61)
