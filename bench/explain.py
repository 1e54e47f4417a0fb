"""`jira-sync explain` over an issue with 1,000 deliveries (SPEC 16; goal: under 100 ms),
timed in-process (the query and the timeline, not Python's start), median of 20 runs.

    python -m bench.explain [--deliveries 1000] [--runs 20]

The deliveries are real-shaped Jira bodies (about 2 KB each), each with its decided effect on
the issue's group and an outbound push; 100,000 deliveries of other issues share the table, so
the indexes have something to skip.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import psycopg

from bench import harness
from tests.integration.inbound_support import ANN, GROUP, ISSUE_KEY, base_scene, jira_payload
from worker.runtime import resources
from worker.services import explain
from worker.services.loader import load_scene

GOAL_MS = 100.0
OTHER_DELIVERIES = 100_000
COPY_DELIVERIES = (
    "COPY webhook_delivery (id, integration_id, dedupe_key, body, issue_key, event_ts, status,"
    " outcome, source) FROM STDIN"
)


def say(message: str) -> None:
    sys.stderr.write(message + "\n")


def store(database_url: str, count: int) -> None:
    body = json.dumps(jira_payload(ANN, ts=1, changelog_id=1))
    with psycopg.connect(database_url) as conn, conn.cursor() as cur:
        with cur.copy(COPY_DELIVERIES) as copy:
            for n in range(1, count + OTHER_DELIVERIES + 1):
                ours = n <= count
                key = ISSUE_KEY if ours else f"OTHER-{n % 5000}"
                outcome = "stale" if n % 3 else "assigned"
                copy.write_row((n, 1, f"bench-{n}", body, key, 1_000 * n, "done", outcome,
                                "webhook"))  # fmt: skip
        with cur.copy("COPY delivery_effect (delivery_id, group_id, outcome) FROM STDIN") as copy:
            for n in range(1, count + 1):
                copy.write_row((n, GROUP, "stale" if n % 3 else "assigned"))
        with cur.copy(
            "COPY outbound_call (delivery_id, group_id, external_issue_id, status, detail)"
            " FROM STDIN"
        ) as copy:
            for n in range(3, count + 1, 3):
                copy.write_row((n, GROUP, 7, "done", ""))
        conn.execute("ANALYZE")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.explain", description=__doc__)
    parser.add_argument("--deliveries", type=int, default=1_000)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args(argv)
    with harness.servers(say) as srv:
        res = resources.current()
        load_scene(res, base_scene())
        say(f"storing {args.deliveries:,} deliveries of {ISSUE_KEY} among {OTHER_DELIVERIES:,}")
        store(srv.database_url, args.deliveries)
        figures = {}
        for what, call in (
            ("explain issue", lambda: explain.explain_issue(res, ISSUE_KEY)),
            ("explain group", lambda: explain.explain_group(res, GROUP)),
        ):
            call()  # warm the pool and the plan cache
            runs = []
            for _ in range(args.runs):
                started = time.perf_counter()
                found = call()
                runs.append((time.perf_counter() - started) * 1000)
            assert len(found.timeline) == args.deliveries, len(found.timeline)
            figures[what] = runs
    print(f"{args.deliveries:,} deliveries of one issue (among {OTHER_DELIVERIES:,}), "
          f"{args.runs} runs each")  # fmt: skip
    print("| figure | median ms | min-max ms | goal |")
    print("| --- | ---: | --- | --- |")
    for what, runs in figures.items():
        median = statistics.median(runs)
        verdict = "met" if median < GOAL_MS else "NOT met"
        print(f"| {what} | {median:.1f} | {min(runs):.1f}-{max(runs):.1f} | "
              f"< {GOAL_MS:g} ms: {verdict} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
