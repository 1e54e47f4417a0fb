"""Figure 2: stored deliveries of the realistic mix drained end to end by the production worker
(`celery -A worker.runtime.app worker -P prefork -c 2 -E`), against no-op tasks drained by the same
worker command in the same run.

The issue asks for 10,000 deliveries; at the rate this 2-core machine drains them (tens per
second) that alone would take minutes per run, so `make bench` drains 1,500 per run (three runs
within the 10-minute budget) and a run too big for its share of the time makes the next ones
smaller; the table says how many were drained. `--pipeline-deliveries 10000` runs the full size.

Each phase: the messages are put on the broker first, with no worker running; then a worker
starts, and the clock runs from the first message it takes to the last piece of work done
(for the pipeline: every delivery finished and nothing left on the broker, side effects
included). Workers are restarted between phases, so each one's task counts are its own.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psutil
import psycopg

from bench import harness, payloads, profile
from bench.harness import PeakRss, Servers
from bench.report import Figure, Report, Sample

POLL_S = 0.02
MIN_PHASE_S = 20.0
MIN_DELIVERIES = 300
INSERT_BATCH = 1000


@dataclass
class Phase:
    """What one drain measured."""

    items: int  # deliveries (pipeline) or tasks (no-op) finished
    seconds: float
    tasks: int  # tasks the worker ran, from its own stats
    complete: bool
    peaks: dict[str, int] = field(default_factory=dict)
    cores: dict[str, float] = field(default_factory=dict)  # busy cores on average, by whom

    @property
    def per_s(self) -> float:
        return self.items / self.seconds if self.seconds else 0.0

    @property
    def tasks_per_s(self) -> float:
        return self.tasks / self.seconds if self.seconds else 0.0


def publish_noops(count: int) -> None:
    from bench.tasks import noop
    from worker.runtime.app import app

    with app.producer_or_acquire() as producer:
        for _ in range(count):
            noop.apply_async(producer=producer)


def store_and_enqueue(srv: Servers, count: int) -> None:
    """count deliveries of the mix, stored and sent the way the receiver does it."""
    from tasks import relay
    from worker.runtime import resources
    from worker.runtime.app import app
    from worker.store.db import transaction
    from worker.store.queries import deliveries as q

    with psycopg.connect(srv.database_url, autocommit=True) as conn:
        conn.execute("TRUNCATE webhook_delivery CASCADE")
    # Newer than every event of earlier runs: none is dropped as stale for being replayed.
    mix = payloads.mix(count, int(time.time() * 1000), seed=int(time.time()))
    res = resources.current()
    ids: list[int] = []
    for start in range(0, count, INSERT_BATCH):
        chunk = mix[start : start + INSERT_BATCH]
        batch = [
            q.NewDelivery(
                integration_id=payloads.INTEGRATION_ID,
                dedupe_key=f"bench:{start + i}:{time.time_ns()}",
                body=d.body,
                headers={"x-atlassian-webhook-identifier": f"bench-{start + i}"},
                issue_key=payloads.issue_key(d.issue),
                event_ts=None,
            )
            for i, d in enumerate(chunk)
        ]
        with transaction(res.pool) as conn:
            ids.extend(i for i in q.insert_deliveries(conn, batch) if i is not None)
    for start in range(0, len(ids), INSERT_BATCH):
        with transaction(res.pool) as conn:
            relay.enqueue(app, conn, ids[start : start + INSERT_BATCH])


def finished(srv: Servers, count: int) -> int:
    """How many of the `count` stored deliveries are done or failed, counted from the few not
    finished yet through the (status, received_at) index: polled every 20 ms, a count of the
    finished rows scanned the whole table (3.4 ms a poll, about a sixth of a core taken from
    the run it measures)."""
    with psycopg.connect(srv.database_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM webhook_delivery WHERE status IN ('received', 'queued')"
        ).fetchone()
    return count - (int(row[0]) if row else 0)


def _outcomes(srv: Servers) -> dict[str, int]:
    with psycopg.connect(srv.database_url) as conn:
        rows = conn.execute(
            "SELECT coalesce(outcome, status), count(*) FROM webhook_delivery GROUP BY 1"
        ).fetchall()
    return {str(k): int(n) for k, n in rows}


def _tasks_run(name: str) -> int:
    from worker.runtime.app import app

    stats: dict[str, Any] = app.control.inspect(timeout=2).stats() or {}
    return sum(sum(s.get("total", {}).values()) for worker, s in stats.items() if name in worker)


def drain(
    srv: Servers,
    label: str,
    count: int,
    timeout_s: float,
    done: Callable[[], int],
    profile_s: float = 0.0,
    workers: int = 1,
) -> Phase:
    """Start worker processes (started together) on the waiting messages; time until done()
    reaches count and the broker holds nothing more. The clock starts when a worker takes
    its first message: fewer wait than before it started (the pipeline's first steps carry a
    batch of deliveries each, so their number is not `count`; a message taken but not
    acknowledged no longer waits)."""
    waiting = harness.queued(srv, held=False)
    started_workers = [
        harness.celery_worker(srv, label if workers == 1 else f"{label}-{n}")
        for n in range(workers)
    ]
    with PeakRss() as rss:
        rss.watch("worker", started_workers[0])  # peaks per role: the others are alike
        try:
            if not harness.poll_until(
                lambda: harness.queued(srv, held=False) < waiting, 60, POLL_S / 4
            ):
                logs = "\n".join(w.log_tail() for w in started_workers)
                raise RuntimeError(f"{label} worker took nothing:\n{logs}")
            started = time.perf_counter()
            if profile_s:
                spy = profile.attach(
                    started_workers[0].pid, profile_s, label, subprocesses=True, gil=True
                )

            def trees() -> list[psutil.Process]:
                return [p for w in started_workers for p in w.tree()]

            groups = {"worker": trees, "servers": harness.server_processes}
            with harness.CpuUse(groups) as cpu:
                complete = harness.poll_until(
                    lambda: done() >= count and harness.queued(srv) == 0, timeout_s, POLL_S
                )
            seconds = time.perf_counter() - started
            items = min(done(), count)
            tasks = _tasks_run(label)
            if profile_s:
                spy.wait()
        finally:
            for worker in started_workers:
                worker.stop()
    return Phase(
        items, seconds, tasks, complete, dict(rss.peaks),
        cores={"worker": cpu.cores("worker"), "servers": cpu.cores("servers")},
    )  # fmt: skip


@dataclass
class Run:
    """One run: the no-op drain and the pipeline drain of the same number of items."""

    count: int
    noop: Phase
    product: Phase

    @property
    def complete(self) -> bool:
        return self.noop.complete and self.product.complete


def one_run(srv: Servers, count: int, share_s: float) -> tuple[Run, dict[str, int]]:
    harness.drop_queues(srv)
    publish_noops(count)
    noop = drain(srv, "noop", count, share_s * 0.3, lambda: count - harness.queued(srv))
    store_and_enqueue(srv, count)
    product = drain(srv, "pipeline", count, share_s * 0.6, lambda: finished(srv, count))
    outcomes = _outcomes(srv)
    harness.drop_queues(srv)
    return Run(count, noop, product), outcomes


def run(
    srv: Servers,
    report: Report,
    runs: int,
    count: int,
    deadline: float,
    say: Callable[[str], None],
    profile: bool = False,
) -> None:
    done: list[Run] = []
    outcomes: dict[str, int] = {}
    for run_no in range(runs):
        started = time.monotonic()
        # This run's share of what is left; a phase not done by then is measured as it is.
        share_s = max(MIN_PHASE_S, (deadline - started) / (runs - run_no))
        result, outcomes = one_run(srv, count, share_s)
        done.append(result)
        p = result.product
        say(
            f"  pipeline run {run_no + 1}/{runs}, {count:,} deliveries: no-op "
            f"{result.noop.per_s:,.0f} tasks/s; pipeline {p.per_s:,.0f} deliveries/s "
            f"({p.tasks:,} tasks, {p.tasks_per_s:,.0f} tasks/s)"
            f"{'' if result.complete else ' INCOMPLETE'}; outcomes {outcomes}; busy cores: "
            f"no-op worker {result.noop.cores.get('worker', 0):.2f}, pipeline worker "
            f"{p.cores.get('worker', 0):.2f}, PostgreSQL+Redis {p.cores.get('servers', 0):.2f}"
        )
        if not result.complete and run_no + 1 < runs:
            # Too big for this machine's share of the budget: the next runs drain fewer.
            smaller = max(MIN_DELIVERIES, int(p.items * 0.7) // 100 * 100)
            if smaller < count:
                report.notes.append(
                    f"pipeline: {count:,} deliveries did not drain within this run's share of "
                    f"the time budget ({share_s * 0.6:.0f} s); later runs use {smaller:,}"
                )
                count = smaller
        took = time.monotonic() - started
        if run_no + 1 < runs and time.monotonic() + took > deadline:
            report.notes.append(
                f"pipeline: {run_no + 1} run(s) of {runs} planned: the time budget was spent"
            )
            break
    if profile:
        _profile(srv, count, say)
    _report(report, done, outcomes)


def _report(report: Report, done: list[Run], outcomes: dict[str, int]) -> None:
    complete = [r for r in done if r.complete]
    shown = complete or done
    counts = sorted({r.count for r in shown})
    report.setup["pipeline"] = (
        f"{' / '.join(f'{c:,}' for c in counts)} deliveries per run of the mix (70% no assignee "
        "change, 20% assign, 10% unassign), 200 issues linked to 1,000 groups; worker: "
        "celery -A worker.runtime.app worker -P prefork -c 2 -E (log level INFO); "
        "the no-op baseline drains as many tasks"
    )
    last = shown[-1].product
    note = (
        f"{last.tasks / max(1, last.items):.2f} tasks per delivery; outcomes of the last run: "
        + ", ".join(f"{k} {n:,}" for k, n in sorted(outcomes.items(), key=lambda kv: -kv[1]))
    )
    if not complete:
        note += "; NO run drained completely in time: rates of what finished"
    elif len(complete) < len(done):
        note += f"; {len(done) - len(complete)} unfinished run(s) left out"
    report.add(
        Figure(
            "pipeline", "deliveries drained end to end", "deliveries/s",
            Sample([r.product.per_s for r in shown]), "no-op task, same worker",
            Sample([r.noop.per_s for r in shown]), goal=2.0, note=note,
        )
    )  # fmt: skip
    report.add(
        Figure(
            "pipeline", "tasks run by the pipeline", "tasks/s",
            Sample([r.product.tasks_per_s for r in shown]), "no-op task, same worker",
            Sample([r.noop.per_s for r in shown]),
        )
    )  # fmt: skip
    for label in ("pipeline", "no-op"):
        for role in ("main", "child"):
            peaks = [
                (r.product if label == "pipeline" else r.noop).peaks.get(f"worker {role}", 0)
                for r in done
            ]
            if any(peaks):
                report.memory[f"worker, {label} ({role} process)"] = max(peaks)


def _profile(srv: Servers, count: int, say: Callable[[str], None]) -> None:
    """One more drain with py-spy on the worker and its pool processes (15 s at most)."""
    harness.drop_queues(srv)
    store_and_enqueue(srv, count)
    drain(srv, "pipeline-profile", count, 20.0, lambda: finished(srv, count), profile_s=15.0)
    harness.drop_queues(srv)
    say(profile.finish("pipeline-profile", "pipeline (worker main + pool processes)"))
