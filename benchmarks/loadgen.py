"""A load generator for ChatKit streams: N simultaneous ``threads.create`` turns.

Run it as its own process, on loopback::

    python -m benchmarks.loadgen --url http://127.0.0.1:8000/chatkit \\
        --streams 1000 --k 100 --delay 0.02 --out /tmp/lg.json

Every stream is one TCP connection (``asyncio`` protocols on raw sockets, no
HTTP library): an HTTP/1.1 POST with ``Authorization: Bearer token-<i>``, then
the status line and headers, then the body read incrementally (chunked or
close-delimited) and cut into Server-Sent Events (``:`` comments are counted
as pings, not events).

Per stream it records (seconds on the shared ``time.monotonic`` clock):
connect start and end, response head, first event, first text delta, the
arrival of every text delta, the last event and the end of the body, the HTTP
status and, for a failure, its kind: ``connect_refused``, ``connect_reset``,
``connect_timeout``, ``connect_error``, ``reset`` (mid-stream), ``timeout``,
``http_<status>``, ``error_event`` (the server sent an ``error`` event),
``incomplete`` (fewer than K deltas or no ``thread.item.done`` of the assistant
message).

Deltas are recognised by a substring test on the event's JSON (no parsing);
the few other events are parsed. All events that arrive in one read share its
timestamp. A ticker measures this process's own event-loop lag so a saturated
load generator shows in the results instead of passing for server delay.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import json
import os
import resource
import sys
import time
import typing as t
from urllib.parse import urlsplit


def make_body(text: str) -> bytes:
    """A ``threads.create`` request whose user message is *text*."""
    return json.dumps(
        {
            "type": "threads.create",
            "params": {
                "input": {
                    "content": [{"type": "input_text", "text": text}],
                    "attachments": [],
                    "inference_options": {},
                }
            },
        },
        separators=(",", ":"),
    ).encode()


BODY = make_body("bench")

#: In the JSON of a text delta event, whatever the spacing of the serializer.
DELTA_MARK = b'content_part.text_delta"'

now = time.monotonic


def raise_nofile() -> tuple[int, int]:
    """Raise RLIMIT_NOFILE's soft limit to the hard one (as root: both to 1M if possible)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if os.geteuid() == 0:
        for target in (1 << 20, 1 << 17, 1 << 16):
            if target <= hard:
                break
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (target, target))
                return target, target
            except (ValueError, OSError):
                continue
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def percentile(values: t.Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile of *values* (``q`` in 0..100), ``None`` if empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(min(rank, len(ordered))) - 1]


class Stream(asyncio.Protocol):
    """One POST and its SSE answer; fills :attr:`rec`."""

    def __init__(self, index: int, request: bytes, k: int, keep_times: bool) -> None:
        self.rec: dict[str, t.Any] = {
            "i": index,
            "t_start": None,
            "t_connected": None,
            "t_head": None,
            "t_first_event": None,
            "t_first_delta": None,
            "t_last_event": None,
            "t_end": None,
            "status": None,
            "error": None,
            "events": 0,
            "deltas": 0,
            "pings": 0,
            "bytes": 0,
            "final": False,
            "clean_end": False,
        }
        self.k = k
        self.request = request
        self.keep_times = keep_times
        self.delta_times: list[float] = []
        self.transport: asyncio.Transport | None = None
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._head = bytearray()
        self._in_body = False
        self._chunked = False
        self._remaining: int | None = None  # Content-Length left, if given
        self._cbuf = bytearray()  # undecoded chunked body
        self._chunk_left = 0  # bytes of the current chunk still to read (+2 for CRLF)
        self._sse = bytearray()
        self._error_body = bytearray()

    # --- asyncio.Protocol ------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = t.cast(asyncio.Transport, transport)
        self.rec["t_connected"] = now()
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        at = now()
        self.rec["bytes"] += len(data)
        if not self._in_body:
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                return
            data = bytes(self._head[end + 4 :])
            self._parse_head(bytes(self._head[:end]), at)
            self._in_body = True
            if not data:
                return
        if self._chunked:
            self._feed_chunked(data, at)
        else:
            if self._remaining is not None:
                data = data[: self._remaining]
                self._remaining -= len(data)
            self._feed_body(data, at)
            if self._remaining == 0:
                self._finish(clean=True)

    def eof_received(self) -> bool:
        # close-delimited bodies end here; a chunked body must have ended already
        self._finish(clean=not self._chunked and self._remaining is None and self._in_body)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None and not self.done.done():
            self.rec["error"] = self.rec["error"] or "reset"
        self._finish(clean=False)

    # --- parsing ------------------------------------------------------------------

    def _parse_head(self, head: bytes, at: float) -> None:
        self.rec["t_head"] = at
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        try:
            self.rec["status"] = int(parts[1])
        except (IndexError, ValueError):
            self.rec["status"] = 0
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            value = value.strip().lower()
            if name == b"transfer-encoding" and b"chunked" in value:
                self._chunked = True
            elif name == b"content-length":
                self._remaining = int(value)

    def _feed_chunked(self, data: bytes, at: float) -> None:
        buf = self._cbuf
        buf += data
        pos = 0
        out = []
        while True:
            if self._chunk_left:
                take = min(self._chunk_left, len(buf) - pos)
                if take <= 0:
                    break
                out.append(bytes(buf[pos : pos + take]))
                pos += take
                self._chunk_left -= take
                continue
            line_end = buf.find(b"\r\n", pos)
            if line_end < 0:
                break
            line = bytes(buf[pos:line_end]).split(b";", 1)[0].strip()
            pos = line_end + 2
            if not line:  # the CRLF after a chunk's data
                continue
            size = int(line, 16)
            if size == 0:
                del buf[:]
                self._feed_body(b"".join(out), at)
                self._finish(clean=True)
                return
            self._chunk_left = size
        del buf[:pos]
        if out:
            self._feed_body(b"".join(out), at)

    def _feed_body(self, data: bytes, at: float) -> None:
        if not data:
            return
        if self.rec["status"] != 200:
            self._error_body += data[: 2000 - len(self._error_body)]
            return
        sse = self._sse
        sse += data
        start = 0
        rec = self.rec
        while True:
            end = sse.find(b"\n\n", start)
            if end < 0:
                break
            block = bytes(sse[start:end])
            start = end + 2
            if block.startswith(b":"):
                rec["pings"] += 1
                continue
            if block.startswith(b"data: "):
                payload = block[6:]
            elif block.startswith(b"data:"):
                payload = block[5:]
            else:  # multi-line or other fields: keep the data lines only
                payload = b"\n".join(
                    line[5:].removeprefix(b" ")
                    for line in block.split(b"\n")
                    if line.startswith(b"data:")
                )
                if not payload:
                    continue
            rec["events"] += 1
            if rec["t_first_event"] is None:
                rec["t_first_event"] = at
            rec["t_last_event"] = at
            if DELTA_MARK in payload:
                rec["deltas"] += 1
                if rec["t_first_delta"] is None:
                    rec["t_first_delta"] = at
                self.delta_times.append(at)
                continue
            try:
                event = json.loads(payload)
            except ValueError:
                rec["error"] = rec["error"] or "bad_event"
                continue
            kind = event.get("type")
            if (
                kind == "thread.item.done"
                and event.get("item", {}).get("type") == "assistant_message"
            ):
                rec["final"] = True
            elif kind == "error":
                rec["error"] = rec["error"] or "error_event"
        del sse[:start]

    def _finish(self, *, clean: bool) -> None:
        if self.done.done():
            return
        rec = self.rec
        rec["t_end"] = now()
        rec["clean_end"] = clean
        status = rec["status"]
        if rec["error"] is None:
            if status is None:
                rec["error"] = "reset"
            elif status != 200:
                rec["error"] = f"http_{status}"
            elif rec["deltas"] < self.k or not rec["final"]:
                rec["error"] = "incomplete"
        if status is not None and status != 200 and self._error_body:
            rec["error_body"] = self._error_body.decode("utf-8", "replace")[:500]
        self.done.set_result(None)
        if self.transport is not None:
            self.transport.close()


def build_request(
    host: str, port: int, path: str, user: int, token: str | None = None, body: bytes = BODY
) -> bytes:
    """The POST of one stream: bearer *token* if given, else ``token-<user>``."""
    return (
        f"POST {path} HTTP/1.1\r\n"
        f"Host: {host}:{port}\r\n"
        f"Authorization: Bearer {token or f'token-{user}'}\r\n"
        "Content-Type: application/json\r\n"
        "Accept: text/event-stream\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n"
        "\r\n"
    ).encode() + body


async def run_stream(
    index: int,
    user: int,
    host: str,
    port: int,
    request: bytes,
    k: int,
    start_at: float,
    connect_timeout: float,
    stream_timeout: float,
    keep_times: bool,
) -> tuple[dict[str, t.Any], list[float]]:
    loop = asyncio.get_running_loop()
    delay = start_at - now()
    if delay > 0:
        await asyncio.sleep(delay)
    proto = Stream(index, request, k, keep_times)
    proto.rec["user"] = user
    proto.rec["t_start"] = now()
    try:
        await asyncio.wait_for(
            loop.create_connection(lambda: proto, host, port), timeout=connect_timeout
        )
    except TimeoutError:
        proto.rec["error"] = "connect_timeout"
    except ConnectionRefusedError:
        proto.rec["error"] = "connect_refused"
    except ConnectionResetError:
        proto.rec["error"] = "connect_reset"
    except OSError as exc:
        proto.rec["error"] = f"connect_error:{errno.errorcode.get(exc.errno or 0, exc.errno)}"
    if proto.rec["error"] is not None:
        proto.rec["t_end"] = now()
        return proto.rec, []
    remaining = stream_timeout - (now() - proto.rec["t_start"])
    try:
        await asyncio.wait_for(asyncio.shield(proto.done), timeout=max(remaining, 0.001))
    except TimeoutError:
        proto.rec["error"] = "timeout"
        if proto.transport is not None:
            proto.transport.abort()
        proto._finish(clean=False)
    return proto.rec, proto.delta_times


async def loop_lag(samples: list[float], stop: asyncio.Event, tick: float = 0.01) -> None:
    """How late this process's event loop wakes up (its own saturation)."""
    while not stop.is_set():
        before = now()
        await asyncio.sleep(tick)
        samples.append(now() - before - tick)


def summarize(
    records: list[dict[str, t.Any]],
    gaps_extra: list[float],
    stream_max_extra: list[float],
) -> dict[str, t.Any]:
    """The numbers the runner reports; all times in seconds."""
    ok = [r for r in records if r["error"] is None]
    errors: dict[str, int] = {}
    for r in records:
        if r["error"] is not None:
            kind = r["error"]
            errors[kind] = errors.get(kind, 0) + 1
    starts = [r["t_start"] for r in records if r["t_start"] is not None]
    wall = (max(r["t_end"] for r in ok) - min(starts)) if ok and starts else None
    ttfe = [r["t_first_event"] - r["t_start"] for r in records if r["t_first_event"]]
    ttfd = [r["t_first_delta"] - r["t_start"] for r in records if r["t_first_delta"]]
    connect = [r["t_connected"] - r["t_start"] for r in records if r["t_connected"]]
    duration = [r["t_end"] - r["t_start"] for r in ok]

    def pct(values: list[float]) -> dict[str, float | None]:
        return {
            "p50": percentile(values, 50),
            "p90": percentile(values, 90),
            "p99": percentile(values, 99),
            "max": max(values) if values else None,
        }

    return {
        "streams": len(records),
        "completed": len(ok),
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "wall_s": wall,
        "streams_per_s": (len(ok) / wall) if wall else 0.0,
        "connect_s": pct(connect),
        "ttfe_s": pct(ttfe),
        "ttfd_s": pct(ttfd),
        "duration_s": pct(duration),
        "gap_extra_s": pct(gaps_extra),
        "gaps": len(gaps_extra),
        "stream_max_gap_extra_s": pct(stream_max_extra),
        "deltas": sum(r["deltas"] for r in records),
        "pings": sum(r["pings"] for r in records),
        "bytes": sum(r["bytes"] for r in records),
    }


async def run(args: argparse.Namespace) -> dict[str, t.Any]:
    url = urlsplit(args.url)
    host = url.hostname or "127.0.0.1"
    port = url.port or 80
    path = url.path or "/"
    users = args.users or args.streams
    body = make_body(args.text)
    lag: list[float] = []
    stop = asyncio.Event()
    ticker = asyncio.create_task(loop_lag(lag, stop))
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    t0 = now() + 0.05
    tasks = [
        asyncio.create_task(
            run_stream(
                i,
                i % users,
                host,
                port,
                build_request(host, port, path, i % users, args.token, body),
                args.k,
                t0 + (args.ramp * i / args.streams if args.ramp else 0.0),
                args.connect_timeout,
                args.timeout,
                args.raw,
            )
        )
        for i in range(args.streams)
    ]
    results = await asyncio.gather(*tasks)
    stop.set()
    await ticker
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    records = [rec for rec, _ in results]
    gaps_extra: list[float] = []
    stream_max_extra: list[float] = []
    for rec, times in results:
        extra = [b - a - args.delay for a, b in zip(times, times[1:])]
        gaps_extra.extend(extra)
        if extra and rec["error"] is None:
            stream_max_extra.append(max(extra))
        if args.raw:
            rec["delta_times"] = [round(x - rec["t_start"], 6) for x in times]
    return {
        "config": {
            "url": args.url,
            "streams": args.streams,
            "users": users,
            "k": args.k,
            "delay": args.delay,
            "ramp": args.ramp,
            "text": args.text,
            "timeout": args.timeout,
            "nofile": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        },
        "summary": summarize(records, gaps_extra, stream_max_extra),
        "loadgen": {
            "cpu_s": (cpu_after.ru_utime - cpu_before.ru_utime)
            + (cpu_after.ru_stime - cpu_before.ru_stime),
            "loop_lag_s": {
                "p50": percentile(lag, 50),
                "p99": percentile(lag, 99),
                "max": max(lag) if lag else None,
            },
        },
        "streams": records,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--url", required=True, help="the ChatKit endpoint, e.g. http://127.0.0.1:8000/chatkit"
    )
    parser.add_argument("--streams", type=int, required=True, help="simultaneous streams (N)")
    parser.add_argument(
        "--users", type=int, default=0, help="distinct users (default: one per stream)"
    )
    parser.add_argument("--k", type=int, default=100, help="text deltas expected per stream")
    parser.add_argument(
        "--delay", type=float, default=0.02, help="server delay between deltas (d, s)"
    )
    parser.add_argument(
        "--ramp", type=float, default=0.0, help="spread the starts over this many seconds"
    )
    parser.add_argument("--timeout", type=float, default=180.0, help="per-stream limit, seconds")
    parser.add_argument(
        "--token", default=None, help="one bearer token for every stream (default: token-<i>)"
    )
    parser.add_argument("--text", default="bench", help="the user message of each threads.create")
    parser.add_argument("--connect-timeout", type=float, default=60.0)
    parser.add_argument("--raw", action="store_true", help="keep every delta's arrival time")
    parser.add_argument("--out", default="-", help="JSON results file ('-': stdout)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    raise_nofile()
    result = asyncio.run(run(args))
    text = json.dumps(result, indent=None, separators=(",", ":"))
    if args.out == "-":
        sys.stdout.write(text + "\n")
    else:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text)
    s = result["summary"]
    print(
        f"{s['completed']}/{s['streams']} completed, {s['streams_per_s']:.1f} streams/s, "
        f"errors {s['error_kinds'] or 0}, loadgen cpu {result['loadgen']['cpu_s']:.1f}s",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
