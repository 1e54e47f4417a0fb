"""`jira-sync status` against the real thing: a uvicorn receiver, PostgreSQL, the Redis broker,
a Celery worker and beat's sweep (run in-process)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import redis as redis_lib

from config.celery import QUEUE_INBOUND
from devtools.embedded import free_port
from tests.conftest import ROOT, Servers, WorkerProcess, receiver_process, wait_for
from tests.webhooks import JSON, body, delivery_ids_on_broker, load_integrations, payload, url
from worker.cli import main
from worker.cli.common import EXIT_OK
from worker.cli.overview import EXIT_ATTENTION
from worker.runtime.resources import Resources
from worker.store.db import transaction
from worker.store.queries import deliveries as dq


@pytest.fixture(scope="module")
def receiver(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One receiver process for the module (state is cleaned around each test)."""
    log = tmp_path_factory.mktemp("status") / "receiver.log"
    with receiver_process({**os.environ, **servers.env}, log) as (base, _):
        yield base


def post_delivery(base: str) -> int:
    answer = httpx.post(base + url(), content=body(payload()), headers=JSON, timeout=10)
    assert answer.status_code == 202, answer.text
    return int(answer.json()["delivery"])


def delivery_status(res: Resources, delivery_id: int) -> str | None:
    with transaction(res.pool) as conn:
        found = dq.get_delivery(conn, delivery_id)
    return found.status if found else None


def sweep() -> None:
    """What beat runs every 15 s, run here once (it records its run for `status`)."""
    from tasks.maintenance import sweep_deliveries

    sweep_deliveries()


def status(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["status", *args])
    return code, capsys.readouterr().out


@pytest.mark.broker  # also on RabbitMQ: queue depths through kombu
def test_healthy_system_exits_0_and_shows_the_lag_and_last_delivery(
    res: Resources,
    scene: Callable[[dict[str, Any]], None],
    receiver: str,
    start_worker: Callable[..., WorkerProcess],
    capsys: pytest.CaptureFixture[str],
) -> None:
    load_integrations(scene)
    start_worker(concurrency=1)
    delivery_id = post_delivery(receiver)
    wait_for(lambda: delivery_status(res, delivery_id) == "done", 30, "the delivery done")
    sweep()

    code, out = status(capsys, "--receiver-url", receiver)
    assert code == EXIT_OK, out
    assert out.startswith("jira-sync status at ")
    assert ": OK" in out.splitlines()[0]

    code, out = status(capsys, "--receiver-url", receiver, "--json")
    assert code == EXIT_OK
    view = json.loads(out)
    assert view["problems"] == []
    assert view["receiver"]["ready"] is True
    assert view["broker"]["queues"][QUEUE_INBOUND] == 0
    assert view["deliveries"]["last_hour"]["done"] == 1
    assert view["lag"]["sample"] == 1 and view["lag"]["p99_ms"] is not None
    assert view["beat"]["sent_unqueued"] == 0
    integrations = {i["id"]: i for i in view["integrations"]}
    assert integrations[1]["last_delivery_at"] is not None
    # Integration 2 never sent anything: a warning, not a reason to page anyone.
    assert view["warnings"] == [
        "integration 2 (jira.other.test:jira-sync) has never sent a delivery"
    ]


def test_stuck_delivery_and_unreplayed_failure_exit_1_naming_both(
    res: Resources,
    servers: Servers,
    scene: Callable[[dict[str, Any]], None],
    receiver: str,
    failed_record: Callable[..., int],
    capsys: pytest.CaptureFixture[str],
) -> None:
    load_integrations(scene)
    delivery_id = post_delivery(receiver)  # no worker runs: it stays on the broker
    wait_for(
        lambda: delivery_ids_on_broker(servers.env["BROKER_URL"]) == {delivery_id},
        10,
        "the delivery on the broker",
    )
    broker = redis_lib.Redis.from_url(servers.env["BROKER_URL"])
    assert broker.delete(QUEUE_INBOUND) == 1  # its message is lost
    broker.close()
    failed_record(error_type="JiraRejected")
    sweep()  # beat is fine: only the delivery and the failure need an operator
    time.sleep(0.2)  # older than --stuck-after however fast the steps above ran

    code, out = status(capsys, "--receiver-url", receiver, "--stuck-after", "0.1s", "--json")
    assert code == EXIT_ATTENTION
    view = json.loads(out)
    assert view["unfinished"]["stuck_ids"] == [delivery_id]
    assert len(view["problems"]) == 2
    stuck, failed = view["problems"]
    assert f"stuck, not done 0.1 s after arriving: {delivery_id} " in stuck
    assert "1 failed task(s) not replayed (JiraRejected 1)" in failed

    code, out = status(capsys, "--receiver-url", receiver, "--stuck-after", "0.1s")
    assert code == EXIT_ATTENTION
    assert "ATTENTION (2 problem(s))" in out.splitlines()[0]
    assert f"  ! 1 delivery(ies) stuck, not done 0.1 s after arriving: {delivery_id} " in out
    assert "  ! 1 failed task(s) not replayed (JiraRejected 1)" in out


def test_beat_that_never_swept_and_an_unreachable_receiver_need_attention(
    res: Resources, capsys: pytest.CaptureFixture[str]
) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    code, out = status(capsys, "--receiver-url", nowhere, "--json")
    assert code == EXIT_ATTENTION
    problems = json.loads(out)["problems"]
    assert problems == [
        f"receiver at {nowhere} not ready: unreachable (ConnectionError)",
        "beat has never swept (is the beat process running?)",
    ]


def test_watch_redraws_until_interrupted(
    res: Resources, receiver: str, settings_env: dict[str, str]
) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "worker.cli", "status", "--watch", "1", "--receiver-url", receiver],
        env=settings_env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    screens = 0
    for line in proc.stdout:
        screens += line.startswith("jira-sync status at ")
        if screens == 2:
            break
    proc.send_signal(signal.SIGINT)
    assert proc.wait(10) == 130
