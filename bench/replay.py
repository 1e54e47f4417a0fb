"""Figure 4: `jira-sync failed replay --all` over N failed records, against a process that
calls apply_async N times. Both are timed from process start to exit (wall clock), with no
worker running; the broker is emptied before each run."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable

import psycopg

from bench import harness
from bench.harness import Servers
from bench.report import Figure, Report, Sample

TASK = "jira_sync.inbound.check_changelog"
TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "/srv/jira-sync/tasks/base.py", line 61, in __call__\n'
    "    return self.run(*args, **kwargs)\n"
    "worker.domain.errors.DatabaseUnavailable: OperationalError: connection refused\n"
) * 4

COPY = (
    "COPY failed_task (task_name, task_id, args, kwargs, error_type, message, "
    "traceback, attempts, status, delivery_id, fingerprint) FROM STDIN"
)


def store_failures(srv: Servers, count: int) -> None:
    """count failed records of the first step, as exhausted retries leave them."""
    with psycopg.connect(srv.database_url) as conn:
        conn.execute("TRUNCATE failed_task")
        with conn.cursor() as cur, cur.copy(COPY) as copy:
            for n in range(1, count + 1):
                copy.write_row(
                    (
                        TASK, str(uuid.uuid4()), "[]", json.dumps({"delivery_id": n}),
                        "DatabaseUnavailable", "OperationalError: connection refused",
                        TRACEBACK, 6, "failed", n, f"bench-{n}",
                    )
                )  # fmt: skip


def _reset(srv: Servers) -> None:
    with psycopg.connect(srv.database_url, autocommit=True) as conn:
        conn.execute("UPDATE failed_task SET status = 'failed', replayed_at = NULL")
    harness.drop_queues(srv)


def _timed(srv: Servers, cmd: list[str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(
        cmd, cwd=harness.ROOT, env=srv.child_env(), capture_output=True, text=True, check=False
    )
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} exited {done.returncode}: {done.stderr[-2000:]}")
    return elapsed


def run(
    srv: Servers,
    report: Report,
    runs: int,
    count: int,
    deadline: float,
    say: Callable[[str], None],
    profile: bool = False,
) -> None:
    store_failures(srv, count)
    cli = [sys.executable, "-m", "worker.cli", "failed", "replay", "--all"]
    raw = [sys.executable, "-m", "bench.raw_send", str(count)]
    product, baseline = Sample([]), Sample([])
    checks = []
    for run_no in range(runs):
        started = time.monotonic()
        _reset(srv)
        product.values.append(count / _timed(srv, cli))
        sent_by_cli = harness.queued(srv)
        _reset(srv)
        baseline.values.append(count / _timed(srv, raw))
        sent_raw = harness.queued(srv)
        checks.append((sent_by_cli, sent_raw))
        say(
            f"  replay run {run_no + 1}/{runs}: CLI {product.values[-1]:,.0f} records/s "
            f"({sent_by_cli:,} on the broker), apply_async {baseline.values[-1]:,.0f}/s "
            f"({sent_raw:,} on the broker)"
        )
        took = time.monotonic() - started
        if run_no + 1 < runs and time.monotonic() + took > deadline:
            report.notes.append(f"replay: {run_no + 1} run(s) of {runs}: time budget spent")
            break
    if profile:
        from bench import profile as spy

        _reset(srv)
        spy.run_command(cli, "replay", srv.child_env(), harness.ROOT)
        say(spy.finish("replay", "replay (jira-sync failed replay --all, whole process)"))
    harness.drop_queues(srv)
    report.setup["replay"] = (
        f"{count:,} failed records of {TASK}; wall time of each process from start to exit; "
        "no worker running"
    )
    complete = all(c == (count, count) for c in checks)
    report.add(
        Figure(
            "replay", f"{count:,} failed records replayed", "records/s", product,
            "raw apply_async, same count", baseline, goal=0.8,
            note=(
                f"every run put all {count:,} messages on the broker"
                if complete
                else f"messages on the broker (CLI, raw) per run: {checks}"
            ),
        )
    )  # fmt: skip
