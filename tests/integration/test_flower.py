"""Flower, started as the Procfile starts it, sees our worker and our tasks by their stable
names, and refuses its API to anyone without the basic-auth credentials."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from devtools.embedded import free_port
from tests.conftest import WorkerProcess, wait_for
from tests.integration.inbound_support import ANN, base_scene, jira_payload, outcome_of, post
from worker.runtime.app import app
from worker.runtime.resources import Resources

pytestmark = pytest.mark.broker  # run again on RabbitMQ: tests/amqp_leg.py

ROOT = Path(__file__).parents[2]
AUTH = ("ops", "flower-pass-" + "x7q2")
SWEEP = "jira_sync.maintenance.sweep_deliveries"
PIPELINE_TASKS = {"jira_sync.inbound.check_changelog", "jira_sync.inbound.assign"}


@pytest.fixture
def flower(settings_env: dict[str, str], tmp_path: Path) -> Iterator[str]:
    """A Flower process (`python -m worker.runtime.flower`, the Procfile line); yields its
    base URL."""
    port = free_port()
    env = {**settings_env, "FLOWER_BASIC_AUTH": ":".join(AUTH), "FLOWER_PORT": str(port)}
    env.pop("FLOWER_UNAUTHENTICATED_API", None)
    log = (tmp_path / "flower.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "worker.runtime.flower"], cwd=ROOT, env=env, stdout=log, stderr=log
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _up(base) or proc.poll() is not None, 60, "Flower to listen")
        assert proc.poll() is None, (tmp_path / "flower.log").read_text()
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _up(base: str) -> bool:
    try:
        requests.get(f"{base}/healthcheck", timeout=2)
    except requests.ConnectionError:
        return False
    return True


def _get(base: str, path: str, **kwargs: Any) -> requests.Response:
    return requests.get(f"{base}{path}", timeout=10, **kwargs)


def test_api_refuses_requests_without_credentials(
    res: Resources, flower: str, start_worker: Callable[..., WorkerProcess]
) -> None:
    for path in ("/api/workers", "/api/tasks", "/api/task/types", "/"):
        assert _get(flower, path).status_code == 401, path
        assert _get(flower, path, auth=("ops", "wrong")).status_code == 401, path


def test_api_lists_the_worker_with_our_task_names(
    res: Resources, flower: str, start_worker: Callable[..., WorkerProcess]
) -> None:
    start_worker(concurrency=1)

    def workers() -> dict[str, Any]:
        answer = _get(flower, "/api/workers?refresh=1", auth=AUTH)
        assert answer.status_code == 200
        found: dict[str, Any] = answer.json()
        return found

    listed = wait_for(workers, 60, "Flower to list the worker")
    [info] = listed.values()
    assert SWEEP in info["registered"]
    assert "jira_sync.inbound.check_changelog" in info["registered"]


def test_api_lists_a_sent_task_that_ran_by_its_stable_name(
    res: Resources, flower: str, start_worker: Callable[..., WorkerProcess]
) -> None:
    start_worker(concurrency=1)
    task_id = app.send_task(SWEEP).id

    def seen() -> dict[str, Any] | None:
        task: dict[str, Any] | None = _get(flower, "/api/tasks", auth=AUTH).json().get(task_id)
        return task if task and task["state"] == "SUCCESS" else None

    task = wait_for(seen, 60, "Flower to see the task succeed")
    assert task["name"] == SWEEP
    assert task["sent"] is not None  # the client's task-sent event
    assert task["worker"]
    types = _get(flower, "/api/task/types", auth=AUTH).json()
    assert SWEEP in types["task-types"]
    # The workers' per-step counters and durations are Flower's /metrics, by stable task name.
    scraped = {
        (s.name, s.labels.get("task"), s.labels.get("type"))
        for family in text_string_to_metric_families(_get(flower, "/metrics", auth=AUTH).text)
        for s in family.samples
    }
    assert ("flower_events_total", SWEEP, "task-succeeded") in scraped
    assert ("flower_task_runtime_seconds_count", SWEEP, None) in scraped


def test_task_view_shows_ids_and_never_a_secret(
    res: Resources,
    flower: str,
    scene: Callable[[dict[str, Any]], None],
    start_worker: Callable[..., WorkerProcess],
    settings_env: dict[str, str],
) -> None:
    data = base_scene()
    scene(data)
    start_worker(concurrency=1)
    outcome_of(res, post(res, jira_payload(ANN, ts=1000, changelog_id=1)))

    def ours() -> dict[str, Any] | None:
        tasks: dict[str, Any] = _get(flower, "/api/tasks", auth=AUTH).json()
        names = {t["name"] for t in tasks.values()}
        return (
            tasks
            if {"jira_sync.inbound.check_changelog", "jira_sync.inbound.assign"} <= names
            else None
        )

    tasks = wait_for(ours, 60, "Flower to see the pipeline's tasks")
    view = json.dumps(tasks)
    integ = data["integrations"][0]
    key_line = integ["private_key"].strip().splitlines()[1]
    secrets = [integ["webhook_secret"], integ["access_token"], integ["access_token_secret"],
               key_line, settings_env["SECRET_KEY"], AUTH[1]]  # fmt: skip
    assert [s for s in secrets if s in view] == []
    for task in tasks.values():
        kwargs = ast.literal_eval(task["kwargs"])  # Flower shows them as Python reprs
        # A batch step shows its ids: deliveries, or [delivery, group] pairs.
        assert set(kwargs) <= {"delivery_ids", "changes", "project_id", "request_id"}, task
        ids = [i for v in kwargs.values() for i in (v if isinstance(v, list) else [v])]
        flat = [x for i in ids for x in (i if isinstance(i, list) else [i])]
        assert flat and all(isinstance(v, int) for v in flat), task
