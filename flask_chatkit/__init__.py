"""flask_chatkit: serve OpenAI's ChatKit protocol from a Flask app."""

from __future__ import annotations

from .errors import ChatKitError
from .errors import ConflictError
from .errors import CustomStreamError
from .errors import ErrorCode
from .errors import NotFoundError
from .errors import RequestError
from .errors import StreamError
from .extension import ChatKit
from .server import ChatKitServer
from .server import RequestContext
from .store import AttachmentStore
from .store import InMemoryStore
from .store import Store
from .streaming import progress
from .streaming import stream_text
from .streaming import widget_item

__all__ = [
    "AttachmentStore",
    "ChatKit",
    "ChatKitError",
    "ChatKitServer",
    "ConflictError",
    "CustomStreamError",
    "ErrorCode",
    "InMemoryStore",
    "NotFoundError",
    "RequestContext",
    "RequestError",
    "Store",
    "StreamError",
    "progress",
    "stream_text",
    "widget_item",
]
