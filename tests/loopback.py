"""What the suite's fake OpenAI servers share: a threaded HTTP server on
127.0.0.1 (a free port) run in a daemon thread for the length of a ``with``
block, and the record of each request it got.
"""

from __future__ import annotations

import sys
import threading
import typing as t
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from http.server import ThreadingHTTPServer


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    body: t.Any


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def handle_error(self, request: t.Any, client_address: t.Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)
        # clients that vanish mid-answer are part of the tests


class LoopbackAPI:
    """Serve *handler* on loopback: ``with`` starts it; leaving sets :attr:`stopping`
    (handlers that wait should watch it), then shuts the server down."""

    def __init__(self, handler: type[BaseHTTPRequestHandler], poll_interval: float = 0.05) -> None:
        self.stopping = threading.Event()
        self.server = _Server(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": poll_interval}, daemon=True
        )

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> t.Any:
        self._thread.start()
        return self

    def __exit__(self, *exc: t.Any) -> None:
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)


class QuietHandler(BaseHTTPRequestHandler):
    """A request handler that keeps the test output clean."""

    def log_message(self, *args: t.Any) -> None:
        pass
