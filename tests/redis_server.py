"""A throwaway ``redis-server`` on a free loopback port, for the rate-limit tests.

Started once per session from the OS binary (``apt-get install redis-server``),
with no persistence and its files in a temporary folder; every test gets it
emptied (``redis_url``). Without the binary the tests that need it are skipped,
unless ``CHATKIT_REQUIRE_REDIS=1`` (set by CI) turns that into a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
import typing as t
from pathlib import Path

import pytest
import redis

from .servers import free_port
from .servers import stop_process

REQUIRE_REDIS = os.environ.get("CHATKIT_REQUIRE_REDIS") == "1"
SKIP_REASON = "redis-server not found (apt-get install redis-server): skipping Redis tests"
START_TIMEOUT = 15.0


class RedisServer:
    """``redis-server`` on 127.0.0.1:<free port>, persisting nothing."""

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.port = free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="chatkit-redis-"))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        log = open(self.folder / "redis.log", "wb")  # noqa: SIM115 - kept open for the child
        command = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.folder),
        ]
        with log:
            self.proc = subprocess.Popen(command, stdout=log, stderr=log)
        deadline = time.monotonic() + START_TIMEOUT
        client = self.client()
        try:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(
                        f"redis-server exited with {self.proc.returncode}: "
                        + (self.folder / "redis.log").read_text()
                    )
                try:
                    if client.ping():
                        return
                except redis.ConnectionError:
                    if time.monotonic() > deadline:
                        raise
                time.sleep(0.05)
        finally:
            client.close()

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    def flush(self) -> None:
        client = self.client()
        try:
            client.flushall()
        finally:
            client.close()

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_server() -> t.Iterator[RedisServer]:
    """The session's started Redis server (skips without the binary)."""
    binary = shutil.which("redis-server")
    if binary is None:
        if REQUIRE_REDIS:
            pytest.fail(
                "CHATKIT_REQUIRE_REDIS=1 but redis-server was not found: "
                "apt-get install redis-server",
                pytrace=False,
            )
        pytest.skip(SKIP_REASON)
    server = RedisServer(binary)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The URL of the session's Redis server, emptied for this test."""
    redis_server.flush()
    return redis_server.url
