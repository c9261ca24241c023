"""A throwaway PostgreSQL server for the test session, from the OS binaries.

``initdb`` + ``pg_ctl`` in a temp dir: loopback only (127.0.0.1 on a free port,
unix socket inside the temp dir), trust auth, durability off for speed. When
running as root (CI), ``initdb`` refuses to run, so the server runs as the
``postgres`` OS user on a temp dir chowned to it.

Every step is bounded in time. ``stop`` runs from the fixture teardown and from
``atexit``; a small watchdog process stops the server if this process dies
without either (SIGKILL, SIGTERM), so no postmaster outlives the test run.
"""

from __future__ import annotations

import atexit
import glob
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import typing as t
from urllib.parse import quote

import psycopg
from psycopg import sql

START_TIMEOUT = 60  # seconds for pg_ctl start -w
STOP_TIMEOUT = 30
SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "400",  # tests run 100+ simultaneous streams
    "shared_buffers": "32MB",
    "autovacuum": "off",
    "log_min_messages": "warning",
    "log_line_prefix": "'%m [%p] %d '",
}


def _version_key(path: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", path)) or (0,)


def find_bin_dir() -> str | None:
    """The directory holding ``initdb`` and ``pg_ctl``: ``$CHATKIT_PG_BIN`` when set
    (``none`` = pretend there is none), else the newest Debian
    ``/usr/lib/postgresql/*/bin``, else wherever ``pg_ctl`` is on PATH."""
    chosen = os.environ.get("CHATKIT_PG_BIN")
    if chosen is not None:
        candidates = [chosen]
    else:
        candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True)
        on_path = shutil.which("pg_ctl")
        if on_path:
            candidates.append(os.path.dirname(os.path.realpath(on_path)))
    for bin_dir in candidates:
        if all(os.access(os.path.join(bin_dir, tool), os.X_OK) for tool in ("initdb", "pg_ctl")):
            return bin_dir
    return None


def _runuser() -> str:
    found = shutil.which("runuser", path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")
    if found is None:
        raise RuntimeError("running as root needs runuser (util-linux) to run as 'postgres'")
    return found


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # type: ignore[no-any-return]


class PostgresServer:
    """One PostgreSQL cluster in a temp dir; ``start``/``stop``/``cleanup`` are idempotent."""

    host = "127.0.0.1"

    def __init__(self, bin_dir: str | None = None) -> None:
        found = bin_dir or find_bin_dir()
        if found is None:
            raise RuntimeError("PostgreSQL binaries (initdb, pg_ctl) not found")
        self.bin_dir = found
        self.port = 0
        self.dir: str | None = None
        self._running = False
        self._watchdog: subprocess.Popen[bytes] | None = None
        self._as_postgres = os.geteuid() == 0
        self._atexit_registered = False

    # --- paths and commands -------------------------------------------------------

    @property
    def data_dir(self) -> str:
        assert self.dir is not None
        return os.path.join(self.dir, "data")

    @property
    def log_file(self) -> str:
        assert self.dir is not None
        return os.path.join(self.dir, "postgres.log")

    def _cmd(self, tool: str, *args: str) -> list[str]:
        cmd = [os.path.join(self.bin_dir, tool), *args]
        if self._as_postgres:
            return [_runuser(), "-u", "postgres", "--", *cmd]
        return cmd

    def _run(self, cmd: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            cmd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd=self.dir,  # not the caller's cwd: /root is closed to the postgres user
        )

    def log_tail(self, lines: int = 30) -> str:
        try:
            with open(self.log_file, encoding="utf-8", errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""

    # --- lifecycle ----------------------------------------------------------------

    def _init(self) -> None:
        # a short path under /tmp: the postgres user can reach it (TMPDIR may sit under
        # /root), and the unix socket path stays under its ~100 byte limit
        base = "/tmp" if os.access("/tmp", os.W_OK | os.X_OK) else None
        self.dir = tempfile.mkdtemp(prefix="chatkit-pg-", dir=base)
        if self._as_postgres:
            try:
                owner = pwd.getpwnam("postgres")
            except KeyError:
                raise RuntimeError(
                    "running as root, but there is no 'postgres' OS user to run initdb as"
                ) from None
            os.chown(self.dir, owner.pw_uid, owner.pw_gid)
        os.makedirs(os.path.join(self.dir, "sock"), exist_ok=True)
        if self._as_postgres:
            os.chown(os.path.join(self.dir, "sock"), owner.pw_uid, owner.pw_gid)
        done = self._run(
            self._cmd(
                "initdb",
                "-D",
                self.data_dir,
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ),
            timeout=120,
        )
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")

    def _write_settings(self) -> None:
        settings = dict(SETTINGS, port=str(self.port))
        settings["unix_socket_directories"] = f"'{os.path.join(self.dir or '', 'sock')}'"
        conf = os.path.join(self.data_dir, "postgresql.auto.conf")
        # postgresql.auto.conf wins over postgresql.conf; rewritten on each start (new port)
        with open(conf, "w", encoding="utf-8") as f:
            f.write("".join(f"{key} = {value}\n" for key, value in settings.items()))
        if self._as_postgres:
            owner = pwd.getpwnam("postgres")
            os.chown(conf, owner.pw_uid, owner.pw_gid)

    def start(self) -> None:
        """Start the server (initdb on first use) and wait until it accepts connections."""
        if self._running:
            return
        if not self._atexit_registered:
            atexit.register(self.cleanup)
            self._atexit_registered = True
        if self.dir is None:
            self._init()
        if self._watchdog is None:
            self._start_watchdog()
        last_error = ""
        for attempt in range(3):  # the free port may be taken between probe and bind
            # a restart keeps the port, so apps holding the URL reconnect to it
            if attempt or not self.port:
                self.port = _free_port()
            self._write_settings()
            try:
                done = self._run(
                    self._cmd(
                        "pg_ctl",
                        "-D",
                        self.data_dir,
                        "-l",
                        self.log_file,
                        "-w",
                        "-t",
                        str(START_TIMEOUT),
                        "start",
                    ),
                    timeout=START_TIMEOUT + 15,
                )
                started = done.returncode == 0
                output = f"{done.stdout}\n{done.stderr}"
            except subprocess.TimeoutExpired:
                started, output = False, "pg_ctl start timed out"
            if started and self._wait_ready(deadline=time.monotonic() + 30):
                self._running = True
                return
            last_error = f"{output}\n{self.log_tail()}"
            self._force_stop()
            if "could not bind" not in last_error and "in use" not in last_error:
                break
        raise RuntimeError(f"PostgreSQL did not start:\n{last_error}")

    def _wait_ready(self, deadline: float) -> bool:
        while time.monotonic() < deadline:
            try:
                with psycopg.connect(self._dsn("postgres"), connect_timeout=5) as conn:
                    conn.execute("SELECT 1")
                return True
            except psycopg.OperationalError:
                time.sleep(0.1)
        return False

    def _start_watchdog(self) -> None:
        """A detached shell loop that stops the server once this process is gone."""
        stop = shlex.join(
            self._cmd("pg_ctl", "-D", self.data_dir, "-m", "immediate", "-w", "-t", "10", "stop")
        )
        script = (
            f"while kill -0 {os.getpid()} 2>/dev/null; do sleep 1; done; "
            f"{stop} >/dev/null 2>&1; rm -rf {shlex.quote(self.dir or '')}"
        )
        self._watchdog = subprocess.Popen(
            ["sh", "-c", script],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C aimed at pytest must not kill it early
        )

    def _stop_watchdog(self) -> None:
        if self._watchdog is not None:
            if self._watchdog.poll() is None:
                self._watchdog.kill()
            self._watchdog.wait(timeout=10)
            self._watchdog = None

    def _postmaster_pid(self) -> int | None:
        try:
            with open(os.path.join(self.data_dir, "postmaster.pid"), encoding="ascii") as f:
                return int(f.readline().strip())
        except (OSError, ValueError, AssertionError):
            return None

    def _force_stop(self) -> None:
        """``pg_ctl stop -m immediate``, then SIGKILL the postmaster we started."""
        if self.dir is None or not os.path.isdir(self.data_dir):
            return
        pid = self._postmaster_pid()
        if pid is None:
            return
        try:
            self._run(
                self._cmd(
                    "pg_ctl", "-D", self.data_dir, "-m", "immediate", "-w", "-t", "10", "stop"
                ),
                timeout=20,
            )
        except subprocess.TimeoutExpired:
            pass
        if self._postmaster_pid() == pid:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    os.kill(pid, 0)
                except OSError:
                    break
                time.sleep(0.05)

    def stop(self) -> None:
        """Fast shutdown (disconnects clients); falls back to immediate, then SIGKILL."""
        if not self._running:
            return
        self._running = False
        try:
            done = self._run(
                self._cmd(
                    "pg_ctl",
                    "-D",
                    self.data_dir,
                    "-m",
                    "fast",
                    "-w",
                    "-t",
                    str(STOP_TIMEOUT),
                    "stop",
                ),
                timeout=STOP_TIMEOUT + 10,
            )
            ok = done.returncode == 0
        except subprocess.TimeoutExpired:
            ok = False
        if not ok:
            self._force_stop()
        self._stop_watchdog()

    def cleanup(self) -> None:
        """Stop the server and remove its temp dir."""
        try:
            self.stop()
        finally:
            self._stop_watchdog()
            if self.dir is not None:
                shutil.rmtree(self.dir, ignore_errors=True)
                self.dir = None

    # --- databases ----------------------------------------------------------------

    def _dsn(self, dbname: str) -> str:
        return f"host={self.host} port={self.port} user=postgres dbname={dbname}"

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@{self.host}:{self.port}/{quote(dbname, safe='')}"

    def admin(self, dbname: str = "postgres") -> psycopg.Connection[t.Any]:
        """An autocommit connection as the superuser (use it in a ``with``)."""
        return psycopg.connect(self._dsn(dbname), autocommit=True, connect_timeout=10)

    def create_database(self, name: str) -> str:
        with self.admin() as conn:
            # FILE_COPY: a checkpoint-free copy of the small template, much faster
            # than the default WAL_LOG strategy with fsync off
            strategy = " STRATEGY FILE_COPY" if conn.info.server_version >= 150000 else ""
            conn.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE template0" + strategy).format(
                    sql.Identifier(name)
                )
            )
        return self.url(name)

    def terminate_connections(self, name: str) -> None:
        with self.admin() as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )

    def drop_database(self, name: str) -> None:
        with self.admin() as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )
            force = " WITH (FORCE)" if conn.info.server_version >= 130000 else ""
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}" + force).format(sql.Identifier(name)))


if __name__ == "__main__":  # manual check: python -m tests.pg
    server = PostgresServer()
    try:
        began = time.monotonic()
        server.start()
        print(f"started in {time.monotonic() - began:.2f}s: {server.url()}", file=sys.stderr)
    finally:
        server.cleanup()
