"""Sample files the tests upload: real content, so magic-byte sniffing accepts it."""

from __future__ import annotations

import struct
import typing as t
import zlib

from flask_chatkit import widget_item
from flask_chatkit.streaming import new_item_id
from flask_chatkit.types import ClientToolCallItem
from flask_chatkit.types import StructuredInputItem
from flask_chatkit.types import ThreadItemDoneEvent


def make_png(width: int = 8, height: int = 8, rgb: tuple[int, int, int] = (255, 128, 0)) -> bytes:
    """A real, decodable RGB PNG of one colour."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(tag + data))
        return struct.pack(">I", len(data)) + tag + data + crc

    rows = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def pending_items(thread: t.Any) -> t.Iterator[t.Any]:
    """A widget, a structured input and a client tool call on *thread*: what the
    turns after one (actions, answers, tool output) need to act on."""
    yield ThreadItemDoneEvent(
        item=widget_item(thread, {"type": "Card", "children": [{"type": "Text", "value": "w"}]})
    )
    yield ThreadItemDoneEvent(
        item=StructuredInputItem(
            id=new_item_id(),
            thread_id=thread.id,
            inputs=[
                {
                    "type": "multiple_choice",
                    "id": "q1",
                    "question": "Which?",
                    "options": [{"value": "a"}, {"value": "b"}],
                }
            ],
        )
    )
    yield ThreadItemDoneEvent(
        item=ClientToolCallItem(
            id=new_item_id("tool_call"),
            thread_id=thread.id,
            call_id="call_1",
            name="pick",
            arguments={"n": 1},
        )
    )
