"""Worker and CLI output: one JSON object per log line, carrying task, delivery and issue ids,
and never a secret (private key, tokens, webhook secret, SECRET_KEY, basic-auth password),
even when Jira fails and tracebacks are logged and stored."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.conftest import WorkerProcess, wait_for
from tests.fakejira import FakeJira
from tests.integration.failure_support import (
    OUTBOUND_SYNC,
    failed_records,
    jira_sync,
    outbound_scene,
)
from tests.integration.inbound_support import (
    ANN,
    BOB,
    enqueue,
    jira_payload,
    post,
    store_raw,
    wait_finished,
)
from worker.runtime.resources import Resources
from worker.store.db import transaction

FLOWER_PASSWORD = "flower-pw-" + "q8z1k"


@dataclass
class Run:
    """A worker that assigned, failed on Jira and on a bad body; and the secrets it held."""

    worker: WorkerProcess
    secrets: dict[str, str]
    delivery_ids: list[int]


def secrets_of(scene: dict[str, Any], env: dict[str, str]) -> dict[str, str]:
    found = {"SECRET_KEY": env["SECRET_KEY"], "flower password": FLOWER_PASSWORD}
    for integ in scene["integrations"]:
        n = integ["id"]
        found[f"access token {n}"] = integ["access_token"]
        found[f"access secret {n}"] = integ["access_token_secret"]
        found[f"webhook secret {n}"] = integ["webhook_secret"]
        # Any line of the key's body, not just its armour.
        body = integ["private_key"].strip().splitlines()[1:-1]
        found[f"private key {n}"] = body[len(body) // 2]
    return found


@pytest.fixture
def run(
    res: Resources,
    fake_jira: FakeJira,
    scene: Callable[[dict[str, Any]], None],
    start_worker: Callable[..., WorkerProcess],
    settings_env: dict[str, str],
) -> Iterator[Run]:
    data = outbound_scene(fake_jira)
    scene(data)
    worker = start_worker(
        concurrency=1,
        env={
            "LOG_LEVEL": "DEBUG",
            "FLOWER_BASIC_AUTH": f"ops:{FLOWER_PASSWORD}",
            "RETRY_BUDGET_S": "0.5",
            "RETRY_BACKOFF_MAX_S": "1",
        },
    )
    first = post(res, jira_payload(ANN, ts=1000, changelog_id=1))
    wait_finished(res, [first])
    wait_for(lambda: fake_jira.assignees, 30, "the outbound call")
    fake_jira.fail_status = 500
    second = post(res, jira_payload(BOB, ts=2000, changelog_id=2))
    bad = store_raw(res, 1, "bad", "{not json", "APP-1", 3000)
    assert bad is not None
    enqueue(res, [bad])
    wait_for(lambda: len(failed_records(res)) == 2, 60, "two failures to be recorded")
    assert {r["task_name"] for r in failed_records(res)} >= {OUTBOUND_SYNC}
    yield Run(worker, secrets_of(data, settings_env), [first, second, bad])


def test_worker_log_and_cli_output_never_contain_a_secret(
    res: Resources, run: Run, settings_env: dict[str, str]
) -> None:
    outputs = {"worker log": run.worker.log()}
    env = {**settings_env, "LOG_LEVEL": "DEBUG"}
    commands = [
        ["failed", "list"],
        ["failed", "list", "--json"],
        *(["failed", "show", str(r["id"]), "--json"] for r in failed_records(res)),
        *(["failed", "show", str(r["id"])] for r in failed_records(res)),
        ["failed", "replay", "--all", "--dry-run"],
        ["integration", "list"],
        ["deliveries", "list"],
        *(["deliveries", "show", str(d)] for d in run.delivery_ids),
        ["group", "show", "100", "--json"],
    ]
    for argv in commands:
        proc = jira_sync(env, *argv)
        assert proc.returncode == 0, (argv, proc.stderr)
        outputs[" ".join(argv)] = proc.stdout + proc.stderr
    with transaction(res.pool) as conn:
        rows = conn.execute("SELECT message, traceback FROM failed_task").fetchall()
    outputs["failed_task rows"] = json.dumps(rows)
    assert "Traceback" in outputs["failed_task rows"]
    leaks = [
        f"{what} in {where}"
        for where, text in outputs.items()
        for what, secret in run.secrets.items()
        if secret in text
    ]
    assert leaks == []
    assert "PRIVATE KEY-----" not in "".join(outputs.values())


def test_worker_log_lines_are_json_with_task_delivery_and_issue(run: Run) -> None:
    lines = [json.loads(line) for line in run.worker.log().splitlines() if line.startswith("{")]
    assert lines, "no JSON log lines"
    finished = [e for e in lines if e["event"] == "delivery.finished"]
    assert finished
    for entry in finished:
        assert entry["task_id"] and entry["task"].startswith("jira_sync.")
        assert entry["delivery_id"] in run.delivery_ids
        assert entry["issue_key"] == "APP-1"
    failed = [e for e in lines if e["event"] == "step.failed"]
    assert {e["delivery_id"] for e in failed} == set(run.delivery_ids[1:])
    # Celery's own lines about a task carry its context too.
    traced = [e for e in lines if e["logger"] == "celery.app.trace"]
    assert traced and all(e.get("task_id") for e in traced)
