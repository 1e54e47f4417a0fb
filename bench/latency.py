"""Figure: lone-delivery latency, from the receiver's 202 to the delivery `done`, at a low rate
(10 deliveries/s, one at a time), with the pipeline's batches (PIPELINE_BATCH_SIZE 200)
beside single-delivery batches (PIPELINE_BATCH_SIZE 1: one message per delivery and step,
the shape of the pipeline before batching) in the same run. Batching must not make a lone
delivery slower: at this rate a batch is one delivery whatever the size allows.

Each side: the Procfile's receiver and worker with that batch size, a warm-up delivery, then
deliveries of the realistic mix posted one by one at the rate; the latency of each is
`finished_at - received_at` as PostgreSQL recorded them (both stamps from one clock). The
two sides alternate which runs first.
"""

from __future__ import annotations

import http.client
import time
import uuid
from collections.abc import Callable

import psycopg

from bench import harness, loadgen, payloads
from bench.harness import Servers
from bench.receiver import PATH_PREFIX, webhook_token
from bench.report import Figure, Report, Sample

RATE_PER_S = 10.0
SIDES = (("batched (200)", "200"), ("single-delivery batches (1)", "1"))


def _post(port: int, path: str, body: bytes) -> int | None:
    conn = http.client.HTTPConnection(harness.HOST, port, timeout=30)
    try:
        headers = {
            "Content-Type": "application/json",
            "X-Atlassian-Webhook-Identifier": f"lat-{uuid.uuid4().hex}",
        }
        conn.request("POST", path, body, headers)
        response = conn.getresponse()
        answer = response.read()
        if response.status != 202:
            return None
        return int(answer.split(b'"delivery":"', 1)[1].split(b'"', 1)[0])
    finally:
        conn.close()


def _latencies_ms(srv: Servers, ids: list[int], timeout_s: float) -> list[float]:
    sql = (
        "SELECT extract(epoch FROM finished_at - received_at) * 1000 FROM webhook_delivery"
        " WHERE id = ANY(%s) AND status = 'done'"
    )
    deadline = time.monotonic() + timeout_s
    while True:
        with psycopg.connect(srv.database_url) as conn:
            rows = conn.execute(sql, (ids,)).fetchall()
        if len(rows) == len(ids) or time.monotonic() > deadline:
            return [float(r[0]) for r in rows]
        time.sleep(0.2)


def one_side(srv: Servers, batch_size: str, seconds: float) -> list[float]:
    """The latencies (ms) of deliveries posted at RATE_PER_S for `seconds`."""
    extra = {"PIPELINE_BATCH_SIZE": batch_size}
    receiver, port = harness.uvicorn(srv, f"latency-web-{batch_size}", "worker.receiver.app:app",
                                     1, **extra)  # fmt: skip
    worker = harness.celery_worker(srv, f"latency-worker-{batch_size}", **extra)
    path = f"{PATH_PREFIX}{webhook_token()}/"
    bodies = payloads.templates(int(seconds * RATE_PER_S) + 1, int(time.time() * 1000))
    try:
        # Warm-up: connections open on both sides before anything is timed.
        warm = _post(port, path, bodies[0].replace(payloads.CHANGELOG_SLOT, b"%012d" % 0, 1))
        if warm is not None:
            _latencies_ms(srv, [warm], 60)
        ids: list[int] = []
        started = time.monotonic()
        for n, body in enumerate(bodies[1:], start=1):
            time.sleep(max(0.0, started + n / RATE_PER_S - time.monotonic()))
            slot = b"%012d" % (n + int(batch_size) * 1_000_000)
            delivery = _post(port, path, body.replace(payloads.CHANGELOG_SLOT, slot, 1))
            if delivery is not None:
                ids.append(delivery)
        return _latencies_ms(srv, ids, 60)
    finally:
        worker.stop()
        receiver.stop()


def run(
    srv: Servers, report: Report, runs: int, seconds: float, say: Callable[[str], None]
) -> None:
    p50: dict[str, list[float]] = {label: [] for label, _ in SIDES}
    p99: dict[str, list[float]] = {label: [] for label, _ in SIDES}
    for run_no in range(runs):
        # The sides take turns going first, so that whatever the order favours (a warmer
        # machine, the previous section's tail) falls on each alike.
        for label, size in SIDES if run_no % 2 == 0 else SIDES[::-1]:
            found = one_side(srv, size, seconds)
            p50[label].append(loadgen.percentile(found, 0.50))
            p99[label].append(loadgen.percentile(found, 0.99))
            say(
                f"  latency run {run_no + 1}/{runs}, {label}: {len(found)} deliveries, "
                f"p50 {p50[label][-1]:.0f} ms, p99 {p99[label][-1]:.0f} ms"
            )
    batched, single = (label for label, _ in SIDES)
    for name, values in (("p50", p50), ("p99", p99)):
        report.add(
            Figure(
                section="latency",
                name=f"lone delivery 202 -> done, {name} (10/s)",
                unit="ms",
                product=Sample(values[batched]),
                baseline_name=single,
                baseline=Sample(values[single]),
                better="lower",
                goal=1.0 if name == "p50" else None,
            )
        )
