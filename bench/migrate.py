"""`jira-sync integration migrate` of a project with 10,000 linked issues (SPEC 15): its time
and its Jira requests, against the fake Cloud of the tests (token paging, 100 issues a page).

    python -m bench.migrate [--issues 10000]

Every issue exists on Cloud (new ids); the run is timed in-process from start to the last
page moved, then a second run (nothing left) is timed too.
"""

from __future__ import annotations

import argparse
import sys
import time

from bench import harness
from tests.fakecloud import FakeCloud
from tests.fakejira import FakeJiraServer
from tests.integration.inbound_support import JIRA, PROJECT, base_scene, integration
from worker.jira import migrate
from worker.runtime import resources
from worker.services.loader import load_scene

CLOUD = 2
FIRST_GROUP = 10_000


def say(message: str) -> None:
    sys.stderr.write(message + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.migrate", description=__doc__)
    parser.add_argument("--issues", type=int, default=10_000)
    args = parser.parse_args(argv)
    cloud = FakeJiraServer(FakeCloud()).start()
    fake = cloud.fake
    assert isinstance(fake, FakeCloud)
    fake.add_api_token()
    keys = [f"MIG-{n}" for n in range(1, args.issues + 1)]
    for key in keys:
        fake.set_issue(key, None, fake.now_ms())
    try:
        with harness.servers(say):
            res = resources.current()
            data = base_scene()
            linked = integration(CLOUD, "acme.atlassian.net", [{"organization": "acme"}],
                                 base_url=fake.base_url)  # fmt: skip
            data["integrations"].append(fake.linked(linked))
            data["groups"] += [{"id": FIRST_GROUP + n, "project": PROJECT}
                               for n in range(len(keys))]  # fmt: skip
            data["external_issues"] += [
                {"id": 100 + n, "integration": JIRA, "organization": "acme", "key": key,
                 "groups": [FIRST_GROUP + n]}
                for n, key in enumerate(keys)
            ]  # fmt: skip
            say(f"loading {len(keys):,} linked issues")
            load_scene(res, data)
            rows = []
            for what in ("first run: every issue moves", "second run: nothing left"):
                started = time.perf_counter()
                result = migrate.migrate(res, JIRA, CLOUD, "MIG")
                rows.append((what, result.requests, len(result.moved),
                             time.perf_counter() - started))  # fmt: skip
    finally:
        cloud.stop()
    print(f"{len(keys):,} linked issues of one project, Data Center -> Cloud")
    print("| run | Jira requests | issues moved | seconds |")
    print("| --- | ---: | ---: | ---: |")
    for what, requests, moved, seconds in rows:
        print(f"| {what} | {requests} | {moved:,} | {seconds:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
