"""The independent judge of our wire format: the official ``openai-chatkit`` models.

Every request the suite sends to ``/chatkit`` and every JSON body and SSE event
that comes back goes through :func:`check_exchange` (the shipped
``flask_chatkit.testing.ChatKitClient`` calls it on each exchange), so no shape can
drift unnoticed. The rules live in ``flask_chatkit.testing.WireCheck``; the suite
requires its official half (``openai-chatkit`` is a test-only dependency).
"""

from __future__ import annotations

from flask_chatkit.testing import EMPTY_RESPONSE
from flask_chatkit.testing import JSON_RESPONSE
from flask_chatkit.testing import STREAMING
from flask_chatkit.testing import WireCheck
from flask_chatkit.testing import check_error
from flask_chatkit.testing import check_output_rules
from flask_chatkit.testing import official_models
from flask_chatkit.testing import parse_frames

JUDGE = WireCheck(official=True)
MODELS = official_models()

REQUEST = MODELS["request"]
EVENT = MODELS["event"]
THREAD = MODELS["Thread"]
THREAD_PAGE = MODELS["Page[Thread]"]
ITEM_PAGE = MODELS["Page[ThreadItem]"]
ITEM = MODELS["ThreadItem"]
ATTACHMENT = MODELS["Attachment"]
SYNC = MODELS["SyncCustomActionResponse"]
TRANSCRIPTION = MODELS["TranscriptionResult"]
JSON_MODELS = {req_type: MODELS[model] for req_type, model in JSON_RESPONSE.items()}

check_request = JUDGE.check_request
check_event = JUDGE.check_event
check_exchange = JUDGE.check_exchange

__all__ = [
    "ATTACHMENT",
    "EMPTY_RESPONSE",
    "EVENT",
    "ITEM",
    "ITEM_PAGE",
    "JSON_MODELS",
    "REQUEST",
    "STREAMING",
    "SYNC",
    "THREAD",
    "THREAD_PAGE",
    "TRANSCRIPTION",
    "check_error",
    "check_event",
    "check_exchange",
    "check_output_rules",
    "check_request",
    "parse_frames",
]
