"""Figure 1: accepted deliveries/s and latency of the receiver at 32 connections, beside a naive
receiver calling Celery's delay() per request and a handler that only LPUSHes to Redis.

All three run under the same uvicorn command (uvloop + httptools, same process count) and are
loaded in turns, round after round, so that a noisy moment hits each of them alike. After the
run every 202 the product answered must be a row in webhook_delivery.
"""

from __future__ import annotations

import base64
import http.client
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg

from bench import harness, loadgen, payloads, profile
from bench.harness import PeakRss, Servers
from bench.report import Figure, Report, Sample

PATH_PREFIX = "/extensions/jira-server/issue-updated/"
PRODUCT = "jira-sync"
APPS = {
    PRODUCT: "worker.receiver.app:app",
    "naive delay()": "bench.baseline_apps:naive",
    "LPUSH only": "bench.baseline_apps:lpush",
}


@dataclass
class Options:
    runs: int
    duration_s: float
    warmup_s: float
    connections: int = 32
    web_workers: int = 1
    generator: str = "auto"  # auto (wrk when installed), wrk, python
    profile: bool = False


@dataclass
class Runs:
    """Per app: one generator result per round."""

    results: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def sample(self, app: str, key: str) -> Sample:
        return Sample([float(r[key]) for r in self.results.get(app, [])])


def webhook_token() -> str:
    from worker.domain import tokens

    return tokens.issue(payloads.EXTERNAL_ID, payloads.WEBHOOK_SECRET)


PYTHON_LOAD_WARNING = (
    "WARNING: {why}: the receiver's load came from the Python generator, which shares the "
    "cores with the receiver and inflates its tail; judge the receiver goals by wrk's figures"
)


def generator(opts: Options) -> Callable[..., dict[str, Any]]:
    use_wrk = opts.generator == "wrk" or (opts.generator == "auto" and loadgen.wrk_available())
    return loadgen.run_wrk if use_wrk else loadgen.run_python


def warn_if_python(opts: Options, report: Report, say: Callable[[str], None]) -> None:
    """One line, printed and in the report, when the Python generator is the load."""
    if generator(opts) is loadgen.run_python:
        why = (
            "--generator python was asked for"
            if opts.generator == "python"
            else "wrk is not installed (apt-get install wrk)"
        )
        line = PYTHON_LOAD_WARNING.format(why=why)
        say(line)
        if line not in report.notes:
            report.notes.append(line)


def prime(port: int, path: str) -> int:
    """One delivery, waited for: the app opens its connections before any timed load."""
    body = payloads.templates(1, int(time.time() * 1000))[0]
    body = body.replace(payloads.CHANGELOG_SLOT, b"%012d" % port, 1)
    conn = http.client.HTTPConnection(harness.HOST, port, timeout=60)
    try:
        conn.request(
            "POST",
            path,
            body,
            {
                "Content-Type": "application/json",
                "X-Atlassian-Webhook-Identifier": f"prime-{uuid.uuid4().hex}",
            },
        )
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def _last_id(srv: Servers) -> int:
    with psycopg.connect(srv.database_url) as conn:
        row = conn.execute("SELECT coalesce(max(id), 0) FROM webhook_delivery").fetchone()
    return int(row[0]) if row else 0


def _unsent(srv: Servers, after_id: int) -> int | None:
    """How many deliveries stored after `after_id` have no first step on the broker yet (the
    queues were emptied before the load); None on RabbitMQ, where the bench cannot read the
    messages without taking them. The receiver stores a delivery `queued` before it sends it,
    so the broker, not the row, says whether it was sent."""
    from config.celery import QUEUE_INBOUND

    if srv.on_rabbitmq:
        return None
    client = srv.broker_client()
    try:
        raw = client.lrange(QUEUE_INBOUND, 0, -1)
    finally:
        client.close()
    sent = 0
    for message in raw:
        body = json.loads(message)["body"]
        sent += len(json.loads(base64.b64decode(body))[1]["delivery_ids"])
    with psycopg.connect(srv.database_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM webhook_delivery WHERE id > %s", (after_id,)
        ).fetchone()
    return (int(row[0]) if row else 0) - sent


def _count_rows(srv: Servers) -> int:
    with psycopg.connect(srv.database_url) as conn:
        row = conn.execute("SELECT count(*) FROM webhook_delivery").fetchone()
    return int(row[0]) if row else 0


@dataclass
class Load:
    """What the rounds of load measured, with what the durability check needs."""

    runs: Runs = field(default_factory=Runs)
    accepted_by_product: int = 0  # every 202 the product answered, priming included
    lag_s: list[float] = field(default_factory=list)
    generator: str = ""
    peaks: dict[str, int] = field(default_factory=dict)


def run(
    srv: Servers, report: Report, opts: Options, deadline: float, say: Callable[[str], None]
) -> None:
    warn_if_python(opts, report, say)
    with psycopg.connect(srv.database_url, autocommit=True) as conn:
        conn.execute("TRUNCATE webhook_delivery CASCADE")
    load = Load()
    servers: dict[str, tuple[harness.Process, int]] = {}
    try:
        with PeakRss() as rss:
            for name, app in APPS.items():
                servers[name] = harness.uvicorn(srv, f"web-{len(servers)}", app, opts.web_workers)
                rss.watch(name, servers[name][0])
            _rounds(srv, report, opts, servers, load, deadline, say)
        load.peaks = rss.peaks
    finally:
        for process, _ in servers.values():
            process.stop()
        harness.drop_queues(srv)
    _report(srv, report, opts, load)


def _rounds(
    srv: Servers,
    report: Report,
    opts: Options,
    servers: dict[str, tuple[harness.Process, int]],
    load: Load,
    deadline: float,
    say: Callable[[str], None],
) -> None:
    generate = generator(opts)
    path = PATH_PREFIX + webhook_token() + "/"
    for name, (_, port) in servers.items():
        if prime(port, path) == 202 and name == PRODUCT:
            load.accepted_by_product += 1
    names = list(servers)
    for round_no in range(opts.runs):
        round_started = time.monotonic()
        # A different app goes first each round: no app always gets the warm machine.
        order = names[round_no % len(names) :] + names[: round_no % len(names)]
        for name in order:
            harness.drop_queues(srv)
            process, port = servers[name]
            last_id = _last_id(srv) if name == PRODUCT else 0
            with harness.CpuUse({"app": process.tree, "servers": harness.server_processes}) as cpu:
                result = generate(
                    port, path, opts.connections, opts.duration_s, opts.warmup_s,
                    f"r{round_no}-{uuid.uuid4().hex[:8]}",
                )  # fmt: skip
            result["app_cores"] = cpu.cores("app")
            result["servers_cores"] = cpu.cores("servers")
            result["app_cpu_ms_per_accepted"] = cpu.ms_per("app", int(result["accepted_total"]))
            load.generator = result["generator"]
            load.runs.results.setdefault(name, []).append(result)
            if name == PRODUCT:
                load.accepted_by_product += int(result["accepted_total"])
                # The receiver publishes after answering: let it finish before the next app
                # is loaded, and say how long that took.
                stopped = time.monotonic()
                if _unsent(srv, last_id) is not None:
                    harness.poll_until(lambda after=last_id: _unsent(srv, after) == 0, 120, 0.05)
                    load.lag_s.append(time.monotonic() - stopped)
            say(
                f"  receiver round {round_no + 1}/{opts.runs} {name:14} "
                f"{result['accepted_per_s']:8,.0f} accepted/s  p50 {result['p50_ms']:6.1f} ms  "
                f"p99 {result['p99_ms']:6.1f} ms  statuses {result['statuses']} "
                f"errors {result['errors']}  cores: app {result['app_cores']:.2f}, "
                f"PostgreSQL+Redis {result['servers_cores']:.2f}; "
                f"app CPU {result['app_cpu_ms_per_accepted']:.3f} ms per 202"
            )
        took = time.monotonic() - round_started
        if round_no + 1 < opts.runs and time.monotonic() + took > deadline:
            report.notes.append(
                f"receiver: {round_no + 1} round(s) of {opts.runs}: time budget spent"
            )
            break
    if opts.profile:
        process, port = servers[PRODUCT]
        spy = profile.attach(process.pid, opts.duration_s, "receiver", subprocesses=True, gil=True)
        result = generate(port, path, opts.connections, opts.duration_s, 0.0, "profile")
        load.accepted_by_product += int(result["accepted_total"])
        spy.wait()
        say(profile.finish("receiver", "receiver (jira-sync under load, GIL holder only)"))


def _report(srv: Servers, report: Report, opts: Options, load: Load) -> None:
    rows = _count_rows(srv)
    # wrk drops the answers still in flight when its time is up (at most one per connection
    # and wrk run): those rows have no counted 202. Every counted 202 must have its row.
    durable = rows >= load.accepted_by_product
    in_flight = rows - load.accepted_by_product
    report.setup["receiver"] = (
        f"uvicorn --loop uvloop --http {harness.http_protocol()} --workers {opts.web_workers} "
        "(all three apps), "
        f"{opts.connections} connections, {opts.duration_s:g} s per run after "
        f"{opts.warmup_s:g} s warm-up; load generator: {load.generator}"
    )
    runs = load.runs
    naive, lpush = "naive delay()", "LPUSH only"
    report.add(
        Figure(
            "receiver", "accepted deliveries/s", "req/s",
            runs.sample(PRODUCT, "accepted_per_s"), "naive delay() receiver",
            runs.sample(naive, "accepted_per_s"), goal=2.0,
            note=(
                f"durability: {rows:,} rows in webhook_delivery for "
                f"{load.accepted_by_product:,} answers 202 counted "
                f"({'every 202 durable' if durable else 'ROWS MISSING'}"
                f"{f'; {in_flight} answered after the generator stopped' if in_flight else ''}); "
                + (
                    f"the last accepted delivery reached the broker "
                    f"{max(load.lag_s):.1f} s (worst run) after the load stopped"
                    if load.lag_s
                    else "not checked on RabbitMQ when the deliveries reached the broker"
                )
            ),
        )
    )  # fmt: skip
    report.add(
        Figure(
            "receiver", "p99 latency", "ms", runs.sample(PRODUCT, "p99_ms"),
            "naive delay() receiver", runs.sample(naive, "p99_ms"), better="lower", goal=1.0,
        )
    )  # fmt: skip
    report.add(
        Figure(
            "receiver", "p50 latency", "ms", runs.sample(PRODUCT, "p50_ms"),
            "naive delay() receiver", runs.sample(naive, "p50_ms"), better="lower",
        )
    )  # fmt: skip
    report.add(
        Figure(
            "receiver", "accepted deliveries/s", "req/s", runs.sample(PRODUCT, "accepted_per_s"),
            "LPUSH-only handler", runs.sample(lpush, "accepted_per_s"), goal=0.6,
        )
    )  # fmt: skip
    report.add(
        Figure(
            "receiver", "p99 latency", "ms", runs.sample(PRODUCT, "p99_ms"),
            "LPUSH-only handler", runs.sample(lpush, "p99_ms"), better="lower",
        )
    )  # fmt: skip
    for label in APPS:
        for role in ("main", "child"):
            peak = load.peaks.get(f"{label} {role}")
            if peak is not None:
                report.memory[f"receiver: {label} ({role} process)"] = peak
