"""Run the side-by-side benchmark: (a) the example app as the README serves it, (b) the official server, (c) the ceiling.

::

    python -m benchmarks.run --n 100,500,1000,2000 --stores sqlite,postgresql \\
        --servers flask,official,bare --out benchmarks/results.json

(a) is the example app started with the README quickstart's own gunicorn
command (read from README.md, only the port changed), its defaults untouched:
a fresh instance folder (so a fresh default SQLite file) or, for PostgreSQL,
``DATABASE_URL`` and ``flask --app example_app db upgrade heads`` first; the
bearer token comes from ``flask --app example_app create-token demo``, and
every stream sends ``/slow``. (c) is served by the same gunicorn command.

For each store and each N, each server starts fresh, answers its ready check,
streams one warm-up turn, and then the load generator (its own process) opens N
streams at once. The worker's CPU seconds (utime + stime from
``/proc/<pid>/stat``, the delta over the load) and its peak RSS (``VmHWM``)
are read around the run; then the server stops. (b) keeps its threads in
memory (as the SDK's samples do) and (c) has no store, so each runs once per N
and appears in every store's table.

PostgreSQL is a throwaway cluster from ``tests/pg.py`` (OS binaries, loopback,
fsync off), one per run of this script.
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import typing as t
from pathlib import Path

from .loadgen import raise_nofile

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
CLK_TCK = os.sysconf("SC_CLK_TCK")
LABELS = {
    "flask": "(a) flask_chatkit",
    "official": "(b) official, in memory",
    "bare": "(c) bare gevent",
}
#: Servers whose numbers do not depend on the store: run once per N.
STORELESS = ("official", "bare")
#: A page each server answers once it is ready.
READY_PATH = {"flask": "/login", "official": "/health", "bare": "/health"}


#: Extra gunicorn options (``--gunicorn-args``), added after the README's.
GUNICORN_EXTRA: list[str] = []
#: Where the README's serve command follows.
README_MARK = "Install and serve the example app"


def readme_gunicorn_options() -> list[str]:
    """The options of the README quickstart's gunicorn command, without ``-b`` and the app."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme[readme.index(README_MARK) :]
    line = next(ln for ln in block.splitlines() if "gunicorn " in ln and "wsgi:app" in ln)
    words = line.split("gunicorn ", 1)[1].split()
    if words[-1] != "wsgi:app" or "-b" not in words:
        raise RuntimeError(f"unexpected README serve command: {line}")
    at = words.index("-b")
    return words[:at] + words[at + 2 : -1]


def gunicorn(target: str) -> t.Callable[[int], list[str]]:
    return lambda port: [
        PYTHON,
        "-m",
        "gunicorn",
        *readme_gunicorn_options(),
        "-b",
        f"127.0.0.1:{port}",
        *GUNICORN_EXTRA,
        target,
    ]


def uvicorn(target: str) -> t.Callable[[int], list[str]]:
    return lambda port: [
        PYTHON,
        "-m",
        "uvicorn",
        target,
        "--workers",
        "1",
        "--backlog",
        "4096",
        "--no-access-log",
        "--log-level",
        "warning",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]


COMMANDS = {
    "flask": gunicorn("wsgi:app"),
    "official": uvicorn("benchmarks.servers.official_bench:app"),
    "bare": gunicorn("benchmarks.servers.bare_gevent:app"),
}


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def status_kib(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


#: CPUs of the servers and of the load generator (``--server-cpus`` / ``--loadgen-cpus``).
CPUS: dict[str, set[int]] = {}


def pinned(role: str) -> t.Callable[[], None] | None:
    """A ``preexec_fn`` that keeps a child (and what it forks) on *role*'s CPUs."""
    cpus = CPUS.get(role)
    return (lambda: os.sched_setaffinity(0, cpus)) if cpus else None


class Server:
    """One server process (gunicorn master + worker, or uvicorn), on a free port."""

    def __init__(self, kind: str, env: dict[str, str], log_path: Path) -> None:
        self.kind = kind
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/chatkit"
        self.log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            COMMANDS[kind](self.port),
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=pinned("server"),
        )
        self.worker = 0

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.kind} exited with {self.proc.returncode}; see {self.log.name}"
                )
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                conn.request("GET", READY_PATH[self.kind])
                if conn.getresponse().status == 200:
                    conn.close()
                    break
                conn.close()
            except OSError:
                pass
            time.sleep(0.2)
        else:
            raise RuntimeError(f"{self.kind} did not answer within {timeout}s; see {self.log.name}")
        if self.kind == "official":
            self.worker = self.proc.pid  # uvicorn --workers 1 serves in its own process
        else:
            workers = children(self.proc.pid)
            if len(workers) != 1:
                raise RuntimeError(f"expected one gunicorn worker, found {workers}")
            self.worker = workers[0]

    def warm_up(self, token: str) -> None:
        """One full turn, so lazy imports and first connections are not measured."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        from .loadgen import make_body

        conn.request(
            "POST",
            "/chatkit",
            body=make_body("/slow"),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        response = conn.getresponse()
        body = response.read()
        conn.close()
        if response.status != 200 or b"thread.item.done" not in body:
            raise RuntimeError(f"warm-up of {self.kind} failed: {response.status} {body[:300]!r}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.log.close()


def flask_cli(env: dict[str, str], *args: str) -> str:
    """Run ``flask --app example_app ARGS`` as a user would; its output."""
    done = subprocess.run(
        [PYTHON, "-m", "flask", "--app", "example_app", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode != 0:
        raise RuntimeError(f"flask {' '.join(args)} failed: {done.stderr[-2000:]}")
    return done.stdout


def example_env(
    store: str, name: str, args: argparse.Namespace, workdir: Path, pg: t.Any
) -> dict[str, str]:
    """The example app's environment: a fresh instance folder, and PostgreSQL if asked.

    Only what the README's own setup would set; ``DEMO_SLOW_*`` only when
    ``--k``/``--delay`` differ from the example app's defaults.
    """
    from example_app.config import DEFAULTS

    instance = workdir / name
    instance.mkdir()
    env = dict(os.environ, EXAMPLE_INSTANCE_PATH=str(instance))
    if args.k != DEFAULTS["DEMO_SLOW_CHUNKS"]:
        env["DEMO_SLOW_CHUNKS"] = str(args.k)
    if args.delay != DEFAULTS["DEMO_SLOW_DELAY"]:
        env["DEMO_SLOW_DELAY"] = str(args.delay)
    if store == "postgresql":
        env["DATABASE_URL"] = pg.create_database(f"bench_{n_of(name)}")
        flask_cli(env, "db", "upgrade", "heads")
    return env


def n_of(name: str) -> str:
    return name.rsplit("-", 1)[1]


def run_one(
    kind: str, store: str, n: int, args: argparse.Namespace, workdir: Path, pg: t.Any
) -> dict[str, t.Any]:
    name = f"{kind}-{store}-{n}"
    token = "bench"
    if kind == "flask":
        env = example_env(store, name, args, workdir, pg)
        token = flask_cli(env, "create-token", "demo").strip().splitlines()[-1]
    else:
        env = dict(
            os.environ,
            BENCH_K=str(args.k),
            BENCH_DELAY=str(args.delay),
            BENCH_DATABASE_URL="memory",
        )
    server = Server(kind, env, workdir / f"{name}.log")
    try:
        server.wait_ready()
        server.warm_up(token)
        load_before = os.getloadavg()[0]
        cpu_before = cpu_seconds(server.worker)
        out = workdir / f"{name}.loadgen.json"
        cmd = [
            PYTHON,
            "-m",
            "benchmarks.loadgen",
            "--url",
            server.url,
            "--streams",
            str(n),
            "--k",
            str(args.k),
            "--delay",
            str(args.delay),
            "--ramp",
            str(args.ramp),
            "--timeout",
            str(args.timeout),
            "--token",
            token,
            "--text",
            "/slow",
            "--out",
            str(out),
        ]
        began = time.monotonic()
        done = subprocess.run(
            cmd,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=args.timeout + 120,
            preexec_fn=pinned("loadgen"),
        )
        elapsed = time.monotonic() - began
        if done.returncode != 0:
            raise RuntimeError(f"load generator failed: {done.stderr[-2000:]}")
        alive = server.proc.poll() is None and os.path.exists(f"/proc/{server.worker}")
        cpu = cpu_seconds(server.worker) - cpu_before if alive else None
        hwm = status_kib(server.worker, "VmHWM") if alive else None
        result = json.loads(out.read_text())
        if not args.keep_streams:
            result.pop("streams", None)
    finally:
        server.stop()
    summary = result["summary"]
    completed = summary["completed"]
    row = {
        "server": kind,
        "store": store,
        "n": n,
        "summary": summary,
        "loadgen": result["loadgen"],
        "elapsed_s": elapsed,
        "worker_alive": alive,
        "load_average_before": load_before,
        "server_cpu_s": cpu,
        "cpu_per_stream_s": (cpu / completed) if cpu is not None and completed else None,
        "peak_rss_mib": hwm / 1024 if hwm else None,
    }
    if args.keep_streams:
        row["streams"] = result.get("streams")
    print(
        f"  {LABELS[kind]:<18} {store:<10} N={n:<5} {completed}/{n} ok, "
        f"{summary['streams_per_s']:.1f}/s, errors {summary['error_kinds'] or 0}, "
        f"cpu {cpu if cpu is None else round(cpu, 2)}s",
        file=sys.stderr,
        flush=True,
    )
    return row


# --- report --------------------------------------------------------------------------


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f}"


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "-"
    return f"{a / b:.2f}"


def table(rows: list[dict[str, t.Any]], store: str) -> str:
    lines = [
        f"### Store: {store}",
        "",
        "| server | N | completed streams/s | TTFE p50 ms | TTFE p99 ms | stall p99 ms "
        "| errors | CPU s/stream | peak RSS MiB | loadgen lag p99 ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        s = row["summary"]
        errors = str(s["errors"])
        if s["error_kinds"]:
            errors += (
                " (" + ", ".join(f"{k}: {v}" for k, v in sorted(s["error_kinds"].items())) + ")"
            )
        lines.append(
            f"| {LABELS[row['server']]} | {row['n']} | {s['streams_per_s']:.1f} "
            f"| {_ms(s['ttfe_s']['p50'])} | {_ms(s['ttfe_s']['p99'])} "
            f"| {_ms(s['gap_extra_s']['p99'])} | {errors} "
            f"| {_num(row['cpu_per_stream_s'], '.4f')} | {_num(row['peak_rss_mib'], '.0f')} "
            f"| {_ms(row['loadgen']['loop_lag_s']['p99'])} |"
        )
    lines += [
        "",
        "| N | (a)/(b) streams/s | (a)/(b) TTFE p99 | (a)/(b) CPU/stream "
        "| (a)/(c) streams/s | (a)/(c) TTFE p99 | (a)/(c) CPU/stream |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    by = {(r["server"], r["n"]): r for r in rows}
    for n in sorted({r["n"] for r in rows}):
        a, b, c = by.get(("flask", n)), by.get(("official", n)), by.get(("bare", n))
        if a is None:
            continue

        def trio(other: dict[str, t.Any] | None) -> list[str]:
            if other is None:
                return ["-", "-", "-"]
            return [
                _ratio(a["summary"]["streams_per_s"], other["summary"]["streams_per_s"]),
                _ratio(a["summary"]["ttfe_s"]["p99"], other["summary"]["ttfe_s"]["p99"]),
                _ratio(a["cpu_per_stream_s"], other["cpu_per_stream_s"]),
            ]

        lines.append("| " + " | ".join([str(n), *trio(b), *trio(c)]) + " |")
    lines += [
        "",
        "Targets (issue 12) for (a): 0 errors, TTFE p99 ≤ 2× (c), stall p99 ≤ 100 ms, "
        "CPU/stream ≤ 2× (c):",
        "",
        "| N | errors | TTFE p99 / (c) | stall p99 ms | CPU/stream / (c) |",
        "|---:|---|---|---|---|",
    ]
    for n in sorted({r["n"] for r in rows}):
        a, c = by.get(("flask", n)), by.get(("bare", n))
        if a is None or c is None:
            continue
        ttfe = a["summary"]["ttfe_s"]["p99"] / c["summary"]["ttfe_s"]["p99"]
        stall = a["summary"]["gap_extra_s"]["p99"] * 1000
        cpu = (a["cpu_per_stream_s"] or 0) / (c["cpu_per_stream_s"] or 1)
        errors = a["summary"]["errors"]
        lines.append(
            f"| {n} | {errors} {_mark(errors == 0)} | {ttfe:.2f} {_mark(ttfe <= 2)} "
            f"| {stall:.0f} {_mark(stall <= 100)} | {cpu:.2f} {_mark(cpu <= 2)} |"
        )
    return "\n".join(lines)


def _mark(met: bool) -> str:
    return "met" if met else "**missed**"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--n", default="100,500,1000,2000", help="simultaneous streams, comma-separated"
    )
    parser.add_argument(
        "--k", type=int, default=40, help="text deltas per stream (DEMO_SLOW_CHUNKS)"
    )
    parser.add_argument(
        "--delay", type=float, default=0.1, help="seconds between deltas (DEMO_SLOW_DELAY)"
    )
    parser.add_argument(
        "--ramp", type=float, default=0.0, help="spread the N starts over this many seconds"
    )
    parser.add_argument(
        "--timeout", type=float, default=300.0, help="per-stream limit in the load generator"
    )
    parser.add_argument("--stores", default="sqlite,postgresql")
    parser.add_argument("--servers", default="flask,official,bare")
    parser.add_argument(
        "--gunicorn-args",
        default="",
        help="extra gunicorn options for (a) and (c), after the README's (default: none)",
    )
    parser.add_argument(
        "--server-cpus",
        default="0",
        help="CPUs the server under test runs on, comma-separated ('' : no pinning)",
    )
    parser.add_argument(
        "--loadgen-cpus",
        default="1",
        help="CPUs the load generator runs on, comma-separated ('' : no pinning)",
    )
    parser.add_argument(
        "--keep-streams", action="store_true", help="keep per-stream records in the JSON"
    )
    parser.add_argument("--out", default="benchmarks/results.json")
    args = parser.parse_args(argv)
    ns = [int(x) for x in args.n.split(",") if x.strip()]
    stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    kinds = [s.strip() for s in args.servers.split(",") if s.strip()]
    unknown = set(kinds) - set(COMMANDS) | set(stores) - {"sqlite", "postgresql"}
    if unknown:
        parser.error(f"unknown server or store: {', '.join(sorted(unknown))}")
    GUNICORN_EXTRA[:] = args.gunicorn_args.split()
    for role, spec in (("server", args.server_cpus), ("loadgen", args.loadgen_cpus)):
        if spec.strip():
            CPUS[role] = {int(c) for c in spec.split(",")}
    raise_nofile()  # inherited by the servers and the load generator
    workdir = Path(tempfile.mkdtemp(prefix="chatkit-bench-"))
    pg = None
    rows: list[dict[str, t.Any]] = []
    shared: dict[tuple[str, int], dict[str, t.Any]] = {}
    began = time.monotonic()
    load_at_start = os.getloadavg()
    try:
        for store in stores:
            if store == "postgresql":
                sys.path.insert(0, str(ROOT))
                from tests.pg import PostgresServer

                pg = PostgresServer()
                pg.start()
            print(f"store {store}:", file=sys.stderr, flush=True)
            for n in ns:
                for kind in kinds:
                    if kind in STORELESS:
                        if (kind, n) not in shared:
                            shared[kind, n] = run_one(kind, "none", n, args, workdir, pg)
                        rows.append(dict(shared[kind, n], store=store, shared=True))
                        continue
                    rows.append(run_one(kind, store, n, args, workdir, pg))
            if pg is not None:
                pg.cleanup()
                pg = None
    finally:
        if pg is not None:
            pg.cleanup()
    report = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "commit": subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip(),
        "cpus": os.cpu_count(),
        "command": " ".join(
            ["python -m benchmarks.run", *(argv if argv is not None else sys.argv[1:])]
        ),
        "config": {
            "n": ns,
            "k": args.k,
            "delay": args.delay,
            "ramp": args.ramp,
            "stores": stores,
            "servers": kinds,
            "gunicorn": readme_gunicorn_options() + GUNICORN_EXTRA,
            "server_cpus": sorted(CPUS.get("server", ())),
            "loadgen_cpus": sorted(CPUS.get("loadgen", ())),
        },
        "total_s": time.monotonic() - began,
        "load_average_at_start": load_at_start,
        "rows": rows,
    }
    Path(args.out).write_text(json.dumps(report, indent=1))
    for store in stores:
        print()
        print(table([r for r in rows if r["store"] == store], store))
    print(
        f"\n{len(rows)} runs in {report['total_s']:.0f}s; raw numbers in {args.out}; logs in {workdir}"
    )
    if not any(r["summary"]["errors"] for r in rows):
        shutil.rmtree(workdir, ignore_errors=True)
        print("(no errors: logs removed)")


if __name__ == "__main__":
    main()
