"""Reconciliation's cost: Jira requests and time per sweep of one integration with 10,000
linked issues, against the fake Jira of the tests (OAuth signatures verified, search paginated
and capped at 1,000 issues a page as Jira's is).

    python -m bench.reconcile [--issues 10000] [--page-size 500] [--cloud]

`--cloud` sweeps a fake Jira Cloud site instead (API token, `/rest/api/3/search/jql` paged
by token, at most 100 issues a page as assumed of Cloud when fields are asked for).

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
from tests.fakecloud import FakeCloud
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
    parser.add_argument("--cloud", action="store_true", help="a Jira Cloud site (token paging)")
    args = parser.parse_args(argv)
    if args.page_size:
        os.environ["RECONCILE_PAGE_SIZE"] = str(args.page_size)
    jira = FakeJiraServer(FakeCloud() if args.cloud else None).start()
    fake = jira.fake
    fake.add_consumer()
    if isinstance(fake, FakeCloud):
        fake.add_api_token()
    for uid in (ANN, BOB):
        fake.add_user(JIRA_USERS[uid]["name"], JIRA_USERS[uid]["emailAddress"])
    keys = [f"APP-{n}" for n in range(1, args.issues + 1)]
    ann, bob = JIRA_USERS[ANN]["name"], JIRA_USERS[BOB]["name"]
    try:
        with harness.servers(say):
            res = resources.current()
            data = base_scene()
            linked = data["integrations"][0]
            linked["base_url"] = fake.base_url
            if isinstance(fake, FakeCloud):
                data["integrations"][0] = fake.linked(linked)
            else:
                linked["access_token"], linked["access_token_secret"] = fake.grant_access_token()
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
                fake.set_issue(key, ann, an_hour_ago_ms)
            first = "first sweep (--since 2h): every issue changed, no webhook arrived"
            rows = [sweep(res, first, since_ms=an_hour_ago_ms - 3_600_000)]
            with transaction(res.pool) as conn:  # as the pipeline leaves them once applied
                conn.execute("UPDATE external_issue SET jira_assignee = 'ann@acme.test'")
            for key in keys[: len(keys) // 100]:
                # changed after the first window, before the settle margin of the next
                fake.set_issue(key, bob, fake.now_ms() - 90_000)
            rows.append(sweep(res, "next sweep: 1% of the issues changed"))
            rows.append(sweep(res, "next sweep: nothing changed"))
    finally:
        jira.stop()
    page = os.environ.get("RECONCILE_PAGE_SIZE", "500")
    kind = "Jira Cloud (token paging)" if args.cloud else "Jira Server (offset paging)"
    print(f"{kind}: {len(keys)} linked issues, RECONCILE_PAGE_SIZE={page}")
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
