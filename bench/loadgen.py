"""An HTTP/1.1 keep-alive load generator: N connections, each request a distinct delivery.

Run in its own process (`python -m bench.loadgen ...`), so that its CPU shows apart from the
server's; it prints one JSON line. wrk is used instead when installed (see run_wrk), since it
needs far less CPU per request than any Python client on the same cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.payloads import CHANGELOG_SLOT, templates

TEMPLATES = 32
HOST = "127.0.0.1"


@dataclass
class Tally:
    """What one generator run saw; latencies only inside the measured window."""

    latencies_s: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)  # inside the window
    accepted_total: int = 0  # every 202, warm-up included (the durability check counts them)
    errors: int = 0


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))
    return ordered[index]


def _request(port: int, path: str, body: bytes, ident: str) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nUser-Agent: Atlassian HttpClient/bench\r\n"
        f"X-Atlassian-Webhook-Identifier: {ident}\r\n\r\n"
    )
    return head.encode() + body


async def _connection(
    index: int,
    args: argparse.Namespace,
    bodies: list[bytes],
    window: tuple[float, float],
    tally: Tally,
) -> None:
    reader, writer = await asyncio.open_connection(HOST, args.port)
    n = 0
    start, end = window
    try:
        while time.monotonic() < end:
            n += 1
            serial = index * 10_000_000 + n
            body = bodies[serial % len(bodies)].replace(CHANGELOG_SLOT, b"%012d" % serial, 1)
            sent = time.monotonic()
            writer.write(_request(args.port, args.path, body, f"{args.prefix}-{serial}"))
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n")[1:]:
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            if length:
                await reader.readexactly(length)
            done = time.monotonic()
            if status == 202:
                tally.accepted_total += 1
            if start <= done <= end:
                tally.statuses[status] = tally.statuses.get(status, 0) + 1
                tally.latencies_s.append(done - sent)
    except (OSError, asyncio.IncompleteReadError):
        tally.errors += 1
    finally:
        writer.close()


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    bodies = templates(TEMPLATES, int(time.time() * 1000))
    tally = Tally()
    start = time.monotonic() + args.warmup
    window = (start, start + args.duration)
    await asyncio.gather(
        *(_connection(i, args, bodies, window, tally) for i in range(args.connections))
    )
    ok = tally.statuses.get(202, 0)
    return {
        "generator": "python asyncio (uvloop), 1 process",
        "connections": args.connections,
        "duration_s": args.duration,
        "requests": sum(tally.statuses.values()),
        "statuses": {str(k): v for k, v in sorted(tally.statuses.items())},
        "accepted_per_s": ok / args.duration,
        "p50_ms": percentile(tally.latencies_s, 0.50) * 1000,
        "p99_ms": percentile(tally.latencies_s, 0.99) * 1000,
        "accepted_total": tally.accepted_total,
        "errors": tally.errors,
    }


WRK_SCRIPT = """
local bodies = {%(bodies)s}
local slot = "%(slot)s"
local prefix = "%(prefix)s"
local threads = {}
counter = 0
accepted = 0
others = 0

function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end

function request()
  counter = counter + 1
  local serial = tid * 10000000 + counter
  local body = string.gsub(bodies[serial %% #bodies + 1], slot, string.format("%%012d", serial), 1)
  return wrk.format("POST", wrk.path, {
    ["Content-Type"] = "application/json",
    ["User-Agent"] = "Atlassian HttpClient/bench",
    ["X-Atlassian-Webhook-Identifier"] = prefix .. "-" .. tid .. "-" .. counter,
  }, body)
end

function response(status, headers, body)
  if status == 202 then accepted = accepted + 1 else others = others + 1 end
end

function done(summary, latency, requests)
  local a, o = 0, 0
  for _, t in ipairs(threads) do
    a = a + t:get("accepted")
    o = o + t:get("others")
  end
  io.write(string.format(
    '{"accepted": %%d, "others": %%d, "requests": %%d, "errors": %%d, '
    .. '"p50_us": %%d, "p99_us": %%d}\\n',
    a, o, summary.requests,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def _lua_string(data: bytes) -> str:
    return '"' + "".join(f"\\{b:03d}" if b < 32 or b in (34, 92) else chr(b) for b in data) + '"'


def run_wrk(
    port: int, path: str, connections: int, duration_s: float, warmup_s: float, prefix: str
) -> dict[str, Any]:
    """wrk with a Lua script making each request a distinct delivery (2 threads)."""
    bodies = templates(TEMPLATES, int(time.time() * 1000))
    quoted = ", ".join(_lua_string(b) for b in bodies)
    with tempfile.TemporaryDirectory() as tmp:
        url = f"http://{HOST}:{port}{path}"

        def once(seconds: float, tag: str) -> dict[str, Any]:
            # Each wrk run restarts its counters: a prefix of its own keeps deliveries distinct.
            script = WRK_SCRIPT % {
                "bodies": quoted, "slot": CHANGELOG_SLOT.decode(), "prefix": f"{prefix}-{tag}"
            }  # fmt: skip
            script_path = Path(tmp) / f"deliveries-{tag}.lua"
            script_path.write_text(script)
            out = subprocess.run(
                ["wrk", "-t", "2", "-c", str(connections), "-d", f"{max(1, round(seconds))}s",
                 "--latency", "-s", str(script_path), url],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            line = [x for x in out.stdout.splitlines() if x.startswith('{"accepted"')][-1]
            result: dict[str, Any] = json.loads(line)
            return result

        warm = once(warmup_s, "warm") if warmup_s > 0 else {"accepted": 0}
        main = once(duration_s, "main")
    seconds = max(1, round(duration_s))
    return {
        "generator": "wrk (2 threads, Lua script)",
        "connections": connections,
        "duration_s": seconds,
        "requests": main["requests"],
        "statuses": {"202": main["accepted"], "other": main["others"]},
        "accepted_per_s": main["accepted"] / seconds,
        "p50_ms": main["p50_us"] / 1000,
        "p99_ms": main["p99_us"] / 1000,
        "accepted_total": warm["accepted"] + main["accepted"],
        "errors": main["errors"],
    }


def run_python(
    port: int, path: str, connections: int, duration_s: float, warmup_s: float, prefix: str
) -> dict[str, Any]:
    """This module in its own process; returns its JSON line."""
    cmd = [
        sys.executable, "-m", "bench.loadgen", "--port", str(port), "--path", path,
        "--connections", str(connections), "--duration", str(duration_s),
        "--warmup", str(warmup_s), "--prefix", prefix,
    ]  # fmt: skip
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run(cmd, cwd=root, capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", required=True)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--prefix", default="bench")
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    print(json.dumps(asyncio.run(_main(args))))


if __name__ == "__main__":
    main()
