"""A delivery whose broker messages vanished (Redis restarted without its data) is sent again
by the beat sweep once it has stalled past its bound; a merely recent one is left alone."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.conftest import Servers, WorkerProcess, wait_for
from tests.integration.inbound_support import (
    ANN,
    base_scene,
    group_state,
    jira_payload,
    post,
    store,
)
from tests.webhooks import delivery_ids_on_broker
from worker.runtime.resources import Resources
from worker.store.db import transaction


def status_of(res: Resources, delivery_id: int) -> str:
    with transaction(res.pool) as conn:
        row = conn.execute(
            "SELECT status FROM webhook_delivery WHERE id = %s", (delivery_id,)
        ).fetchone()
    assert row is not None
    return str(row["status"])


def backdate_queued(res: Resources, delivery_id: int, seconds: float) -> None:
    with transaction(res.pool) as conn:
        conn.execute(
            "UPDATE webhook_delivery SET queued_at = now() - make_interval(secs => %s)"
            " WHERE id = %s",
            (seconds, delivery_id),
        )


def test_queued_delivery_lost_with_the_broker_is_sent_again_and_finishes(
    res: Resources,
    servers: Servers,
    scene: Callable[[dict[str, Any]], None],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    assert servers.redis is not None, "needs the embedded Redis"
    from tasks.maintenance import stalled_after_s, sweep_deliveries

    scene(base_scene())
    delivery_id = post(res, jira_payload(ANN, 1_764_000_000_000, 1))
    assert status_of(res, delivery_id) == "queued"
    servers.redis.stop()  # restarted without its data: the queued message is gone
    servers.redis.start()
    assert delivery_ids_on_broker(servers.env["BROKER_URL"]) == set()
    backdate_queued(res, delivery_id, stalled_after_s(res.settings) + 1)
    start_worker(concurrency=1)

    assert wait_for(sweep_deliveries.run, 20, "the sweep to re-send the stalled delivery") == 1
    wait_for(lambda: status_of(res, delivery_id) == "done", 30, "the delivery to finish")
    assert group_state(res).assignee == ANN


def test_recently_queued_delivery_is_not_sent_again(
    res: Resources, servers: Servers, scene: Callable[[dict[str, Any]], None]
) -> None:
    from tasks.maintenance import sweep_deliveries

    scene(base_scene())
    delivery_id = post(res, jira_payload(ANN, 1_764_000_000_000, 1))
    assert sweep_deliveries.run() == 0
    assert delivery_ids_on_broker(servers.env["BROKER_URL"]) == {delivery_id}


def test_a_backlog_left_by_a_broker_outage_is_sent_in_one_sweep(
    res: Resources, scene: Callable[[dict[str, Any]], None]
) -> None:
    from tasks.maintenance import SWEEP_BATCH, SWEEP_MIN_AGE_S, sweep_deliveries

    scene(base_scene())
    backlog = SWEEP_BATCH * 2 + 7  # stored while the broker was down: never queued
    ids = [store(res, jira_payload(ANN, 1_764_000_000_000 + n, n + 1)) for n in range(backlog)]
    with transaction(res.pool) as conn:
        conn.execute(
            "UPDATE webhook_delivery SET received_at = now() - make_interval(secs => %s)",
            (SWEEP_MIN_AGE_S + 1,),
        )
    assert sweep_deliveries.run() == backlog
    assert {status_of(res, i) for i in ids if i is not None} == {"queued"}
