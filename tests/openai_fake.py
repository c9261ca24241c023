"""A real HTTP server on loopback that plays OpenAI's ``POST /v1/chatkit/sessions``.

It records every request (method, path, headers, JSON body) and answers with a
session built from the request, or with whatever ``reply`` is set to: a
``(status, body)`` or ``(status, body, headers)`` tuple, or ``"hang"`` to never
answer in time.
"""

from __future__ import annotations

import itertools
import json
import time
import typing as t

from .loopback import LoopbackAPI
from .loopback import QuietHandler
from .loopback import Recorded


def session_for(body: dict[str, t.Any], number: int) -> dict[str, t.Any]:
    """The session OpenAI would answer for the request *body*."""
    seconds = (body.get("expires_after") or {}).get("seconds", 600)
    per_minute = (body.get("rate_limits") or {}).get("max_requests_per_1_minute", 10)
    upload = (body.get("chatkit_configuration") or {}).get("file_upload") or {}
    return {
        "id": f"cksess_{number}",
        "object": "chatkit.session",
        "client_secret": f"ek_fake_secret_{number}_{body['user']}",
        "expires_at": int(time.time()) + seconds,
        "max_requests_per_1_minute": per_minute,
        "rate_limits": {"max_requests_per_1_minute": per_minute},
        "status": "active",
        "user": body["user"],
        "workflow": {
            "id": body["workflow"]["id"],
            "state_variables": None,
            "tracing": {"enabled": True},
            "version": None,
        },
        "chatkit_configuration": {
            "automatic_thread_titling": {"enabled": True},
            "file_upload": {
                "enabled": upload.get("enabled", False),
                "max_file_size": upload.get("max_file_size", 512),
                "max_files": upload.get("max_files", 10),
            },
            "history": {"enabled": True, "recent_threads": None},
        },
    }


class FakeOpenAI(LoopbackAPI):
    """Start with ``with FakeOpenAI() as fake``; point the client at ``fake.base_url``."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.reply: t.Any = None  # None: a session built from the request
        self._numbers = itertools.count(1)
        fake = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                body = json.loads(raw) if raw else None
                fake.requests.append(
                    Recorded(
                        "POST", self.path, {k.lower(): v for k, v in self.headers.items()}, body
                    )
                )
                reply = fake.reply
                if reply == "hang":
                    fake.stopping.wait(5)
                    return
                headers: dict[str, str] = {}
                if reply is None:
                    status, answer = 200, session_for(body, next(fake._numbers))
                else:
                    status, answer, *more = reply
                    headers = more[0] if more else {}
                data = json.dumps(answer).encode()
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("x-request-id", "req_fake")
                self.end_headers()
                self.wfile.write(data)

        super().__init__(Handler)
