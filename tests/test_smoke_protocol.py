from flask_chatkit import stream_text
from flask_chatkit.testing import user_input


def test_create_streams_thread_user_message_then_answer(chatkit, alice):
    @chatkit.respond
    def respond(thread, message, context):
        thread.title = "Greeting"
        yield from stream_text(thread, ["Hel", "lo"])

    ex = alice.chatkit("threads.create", input=user_input("hi"))
    assert ex.status == 200
    assert ex.types[:3] == ["thread.created", "thread.item.done", "stream_options"]
    assert ex.events[0]["thread"]["items"] == {"data": [], "has_more": False}
    assert "title" not in ex.events[0]["thread"]
    assert ex.types[-1] == "thread.item.done"
    assert "thread.updated" in ex.types
    thread_id = ex.events[0]["thread"]["id"]
    got = alice.chatkit("threads.get_by_id", thread_id=thread_id)
    assert got.body["title"] == "Greeting"
    assert [i["type"] for i in got.body["items"]["data"]] == ["user_message", "assistant_message"]
    assert got.body["items"]["data"][1]["content"][0]["text"] == "Hello"
