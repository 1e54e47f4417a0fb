"""Reconciliation's cost: Jira requests and time per sweep of one integration with 10,000
linked issues, against the fake Jira of the tests (OAuth signatures verified, search paginated
and capped at 1,000 issues a page as Jira's is).

    python -m bench.reconcile [--issues 10000] [--page-size 500]

Three sweeps: a first one that finds every linked issue changed (all their webhooks lost),
one after 1% of the issues changed, one after none did. What a sweep feeds is stored in the
inbox, not run (no worker): the figures are the sweep's own.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass

from bench import harness
from tests.fakejira import FakeJiraServer
from tests.integration.inbound_support import ANN, BOB, JIRA, JIRA_USERS, PROJECT, base_scene
from worker.jira import reconcile as sweeps
from worker.runtime import resources
from worker.services.loader import load_scene
from worker.store.db import transaction

FIRST_GROUP = 10_000


@dataclass(frozen=True)
class Measured:
    what: str
    requests: int
    checked: int
    fed: int
    seconds: float


def say(message: str) -> None:
    sys.stderr.write(message + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.reconcile", description=__doc__)
    parser.add_argument("--issues", type=int, default=10_000)
    parser.add_argument("--page-size", type=int, help="RECONCILE_PAGE_SIZE (default 500)")
    args = parser.parse_args(argv)
    if args.page_size:
        os.environ["RECONCILE_PAGE_SIZE"] = str(args.page_size)
    jira = FakeJiraServer().start()
    fake = jira.fake
    fake.add_consumer()
    for uid in (ANN, BOB):
        fake.add_user(JIRA_USERS[uid]["name"], JIRA_USERS[uid]["emailAddress"])
    keys = [f"APP-{n}" for n in range(1, args.issues + 1)]
    try:
        with harness.servers(say):
            res = resources.current()
            data = base_scene()
            data["integrations"][0]["base_url"] = fake.base_url
            token, secret = fake.grant_access_token()
            data["integrations"][0]["access_token"] = token
            data["integrations"][0]["access_token_secret"] = secret
            data["groups"] = [{"id": FIRST_GROUP + n, "project": PROJECT} for n in range(len(keys))]
            data["external_issues"] = [
                {"id": 1 + n, "integration": JIRA, "organization": "acme", "key": key,
                 "groups": [FIRST_GROUP + n]}
                for n, key in enumerate(keys)
            ]  # fmt: skip
            say(f"loading {len(keys)} linked issues")
            load_scene(res, data)
            an_hour_ago_ms = int((time.time() - 3600) * 1000)
            for key in keys:
                fake.set_issue(key, "ann", an_hour_ago_ms)
            first = "first sweep (--since 2h): every issue changed, no webhook arrived"
            rows = [sweep(res, first, since_ms=an_hour_ago_ms - 3_600_000)]
            with transaction(res.pool) as conn:  # as the pipeline leaves them once applied
                conn.execute("UPDATE external_issue SET jira_assignee = 'ann@acme.test'")
            for key in keys[: len(keys) // 100]:
                fake.set_issue(key, "bob")
            rows.append(sweep(res, "next sweep: 1% of the issues changed"))
            rows.append(sweep(res, "next sweep: nothing changed"))
    finally:
        jira.stop()
    page = os.environ.get("RECONCILE_PAGE_SIZE", "500")
    print(f"{len(keys)} linked issues, RECONCILE_PAGE_SIZE={page}")
    print("| sweep | Jira requests | linked issues checked | fed | seconds |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for m in rows:
        print(f"| {m.what} | {m.requests} | {m.checked:,} | {m.fed:,} | {m.seconds:.2f} |")
    return 0


def sweep(res: resources.Resources, what: str, since_ms: int | None = None) -> Measured:
    started = time.perf_counter()
    result = sweeps.sweep(res, JIRA, lambda ids: None, since_ms=since_ms)
    elapsed = time.perf_counter() - started
    say(f"{what}: {result.requests} requests")
    return Measured(what, result.requests, result.checked, len(result.fed), elapsed)


if __name__ == "__main__":
    sys.exit(main())
