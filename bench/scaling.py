"""Scaling out on one machine: the receiver with two uvicorn processes (`WEB_CONCURRENCY=2`)
beside one, and the pipeline drained by two worker processes (each `-c 2`) beside one, every
one of them against the same PostgreSQL and Redis.

The receiver sides are loaded in turns like the receiver figure (same generator, same 32
connections); the pipeline sides drain the same mix and count as the pipeline figure, the
two workers started together. A ratio above 1 is what the second process adds here; on a
machine with more cores than this bench's two, both should grow further (the load
generator, PostgreSQL and Redis share these two cores with the processes measured).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

from bench import harness
from bench import pipeline as bench_pipeline
from bench import receiver as bench_receiver
from bench.harness import Servers
from bench.report import Figure, Report, Sample

APP = "worker.receiver.app:app"


def run(
    srv: Servers,
    report: Report,
    runs: int,
    receiver_s: float,
    count: int,
    deadline: float,
    say: Callable[[str], None],
) -> None:
    _receiver(srv, report, runs, receiver_s, say)
    _pipeline(srv, report, runs, count, deadline, say)


def _receiver(
    srv: Servers, report: Report, runs: int, seconds: float, say: Callable[[str], None]
) -> None:
    opts = bench_receiver.Options(runs=runs, duration_s=seconds, warmup_s=1.0)
    bench_receiver.warn_if_python(opts, report, say)
    generate = bench_receiver.generator(opts)
    path = bench_receiver.PATH_PREFIX + bench_receiver.webhook_token() + "/"
    sides = {1: "1 receiver process", 2: "2 receiver processes"}
    started = {n: harness.uvicorn(srv, f"scale-web-{n}", APP, n) for n in sides}
    results: dict[int, list[dict[str, float]]] = {n: [] for n in sides}
    try:
        for _, port in started.values():
            bench_receiver.prime(port, path)
        for round_no in range(runs):
            for n in (1, 2) if round_no % 2 == 0 else (2, 1):
                harness.drop_queues(srv)
                _, port = started[n]
                result = generate(
                    port, path, opts.connections, opts.duration_s, opts.warmup_s,
                    f"s{n}-{round_no}-{uuid.uuid4().hex[:8]}",
                )  # fmt: skip
                results[n].append(result)
                say(
                    f"  scaling: {sides[n]:22} {result['accepted_per_s']:8,.0f} accepted/s  "
                    f"p99 {result['p99_ms']:6.1f} ms"
                )
    finally:
        for process, _ in started.values():
            process.stop()
        harness.drop_queues(srv)
    for key, name, unit, better in (
        ("accepted_per_s", "receiver: accepted deliveries/s", "req/s", "higher"),
        ("p99_ms", "receiver: p99 latency", "ms", "lower"),
    ):
        report.add(
            Figure(
                "scaling", name, unit,
                Sample([float(r[key]) for r in results[2]]), sides[1],
                Sample([float(r[key]) for r in results[1]]), better=better,
            )
        )  # fmt: skip


def _pipeline(
    srv: Servers,
    report: Report,
    runs: int,
    count: int,
    deadline: float,
    say: Callable[[str], None],
) -> None:
    per_s: dict[int, list[float]] = {1: [], 2: []}
    for round_no in range(runs):
        for workers in (1, 2) if round_no % 2 == 0 else (2, 1):
            harness.drop_queues(srv)
            bench_pipeline.store_and_enqueue(srv, count)
            phase = bench_pipeline.drain(
                srv, f"scale-{workers}", count, max(20.0, deadline - time.monotonic()),
                lambda: bench_pipeline.finished(srv, count), workers=workers,
            )  # fmt: skip
            per_s[workers].append(phase.per_s)
            say(
                f"  scaling: {workers} worker process(es): {phase.per_s:,.0f} deliveries/s, "
                f"busy cores: workers {phase.cores.get('worker', 0):.2f}, "
                f"PostgreSQL+Redis {phase.cores.get('servers', 0):.2f}"
                f"{'' if phase.complete else ' INCOMPLETE'}"
            )
    harness.drop_queues(srv)
    report.add(
        Figure(
            "scaling", "pipeline: deliveries drained end to end/s", "deliveries/s",
            Sample(per_s[2]), "1 worker process (-c 2)", Sample(per_s[1]),
        )
    )  # fmt: skip
    report.setup["scaling"] = (
        "receiver: 2 uvicorn processes (--workers 2, as WEB_CONCURRENCY=2 gives) against 1, "
        "same generator and connections as the receiver figure; pipeline: 2 worker processes "
        f"(celery worker -c 2 each) against 1, {count:,} deliveries of the mix per drain"
    )
