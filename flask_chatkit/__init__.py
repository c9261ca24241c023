"""flask_chatkit: serve OpenAI's ChatKit protocol from a Flask app."""

from __future__ import annotations

import typing as t

from .attachments import Attachments
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
from .store import InMemoryStore
from .store import Store
from .streaming import progress
from .streaming import stream_text
from .streaming import widget_item

__all__ = [
    "Attachments",
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


def __getattr__(name: str) -> t.Any:
    if name == "AttachmentStore":  # renamed: one name per concept
        from .attachments import _deprecated

        return _deprecated(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
