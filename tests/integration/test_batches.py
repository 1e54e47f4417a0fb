"""Steps carry batches (SPEC 8): stored deliveries go to the broker as one message per batch,
each item keeps every rule, a permanent failure of one item is recorded and replayed alone."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

from tasks.inbound import sync
from tasks.pipeline import ASSIGN, CHECK_CHANGELOG, SYNC
from tests.conftest import Servers, WorkerProcess, wait_for
from tests.integration.failure_support import failed_records
from tests.integration.inbound_support import (
    ANN,
    BOB,
    CY,
    GROUP,
    base_scene,
    enqueue,
    group_state,
    jira_payload,
    store,
    store_raw,
    wait_finished,
)
from tests.integration.test_failed_constraint import (
    OTHER_GROUP,
    OTHER_KEY,
    UNBLOCK,
    two_issue_scene,
)
from tests.webhooks import broker_messages
from worker.cli import main
from worker.cli.common import EXIT_OK
from worker.domain.model import ActivityType, SubscriptionReason
from worker.runtime.resources import Resources
from worker.store.db import transaction

# The activity row of an assignment (ASSIGNED = 11) to the second group breaks a constraint.
BLOCK_OTHER_GROUP = (
    "ALTER TABLE activity ADD CONSTRAINT test_no_assigned "
    f"CHECK (NOT (type = 11 AND group_id = {OTHER_GROUP}))"
)


def kwargs_on_broker(broker_url: str) -> list[dict[str, Any]]:
    return [
        json.loads(base64.b64decode(m["body"]))[1] for m in reversed(broker_messages(broker_url))
    ]


def test_stored_deliveries_go_to_the_broker_as_one_message_per_batch(
    res: Resources, servers: Servers, scene: Callable[[dict[str, Any]], None]
) -> None:
    scene(base_scene())
    ids = [store(res, jira_payload(ANN, ts=1000 + n, changelog_id=n)) for n in range(5)]
    enqueue(res, [i for i in ids if i is not None])
    assert kwargs_on_broker(servers.env["BROKER_URL"]) == [{"delivery_ids": ids}]


def test_a_bad_delivery_in_a_batch_is_recorded_alone_and_the_others_finish(
    res: Resources,
    scene: Callable[[dict[str, Any]], None],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    scene(base_scene())
    first = store(res, jira_payload(BOB, ts=1000, changelog_id=1))
    bad = store_raw(res, 1, "bad", "{not json", "APP-1", 1500)
    last = store(res, jira_payload(ANN, ts=2000, changelog_id=2))
    assert first is not None and bad is not None and last is not None
    enqueue(res, [first, bad, last])  # one message: check_changelog(delivery_ids=[...])
    start_worker(concurrency=1)
    done = wait_finished(res, [first, last], timeout_s=30)
    assert {done[first].outcome, done[last].outcome} == {"assigned"}
    assert group_state(res).assignee == ANN  # the newer event of the batch decides
    wait_for(lambda: failed_records(res), 15, "the bad delivery's record")
    [record] = failed_records(res)
    assert (record["task_name"], record["kwargs"]) == (CHECK_CHANGELOG, {"delivery_ids": [bad]})
    assert record["delivery_id"] == bad
    # Its replay runs that delivery alone (and it fails again, alone).
    assert main(["failed", "replay", str(record["id"])]) == EXIT_OK
    wait_for(
        lambda: (
            failed_records(res)[0]["attempts"] == 2 and failed_records(res)[0]["status"] == "failed"
        ),
        15,
        "the replayed delivery to fail again",
    )
    assert len(failed_records(res)) == 1
    assert group_state(res, GROUP).assignee == ANN


def test_a_batch_whose_retries_run_out_is_recorded_per_delivery(
    res: Resources,
    scene: Callable[[dict[str, Any]], None],
    start_worker: Callable[..., WorkerProcess],
    servers: Servers,
) -> None:
    assert servers.pg is not None, "needs the embedded PostgreSQL"
    scene(base_scene())
    ids = [store(res, jira_payload(ANN, ts=1000 + n, changelog_id=n)) for n in range(3)]
    start_worker(concurrency=1, env={"RETRY_BUDGET_S": "0.5", "RETRY_BACKOFF_MAX_S": "1"})
    servers.pg.stop()
    try:
        from worker.runtime.app import app

        app.send_task(SYNC, kwargs={"delivery_ids": ids})
        wait_for(lambda: res.redis.llen("jira_sync:failure_spool") >= 3, 60, "spooled records")
    finally:
        servers.pg.start()
        res.pool.check()
    spooled = [json.loads(r) for r in res.redis.lrange("jira_sync:failure_spool", 0, -1)]
    assert sorted(s["kwargs"]["delivery_ids"][0] for s in spooled) == sorted(ids)
    assert {s["task_name"] for s in spooled} == {SYNC}


def test_a_group_change_that_fails_permanently_leaves_the_rest_of_its_batch_applied(
    res: Resources,
    servers: Servers,
    scene: Callable[[dict[str, Any]], None],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    """The set-wise attempt fails on the constraint, so the group step applies the batch
    again change by change, each in a savepoint of its own: the one that fails for good is
    rolled back and recorded alone, the other is applied."""
    scene(two_issue_scene())
    first = store(res, jira_payload(ANN, ts=1000, changelog_id=1))
    second = store(res, jira_payload(BOB, ts=2000, changelog_id=2, key=OTHER_KEY))
    assert first is not None and second is not None
    sync.run(delivery_ids=[first, second])  # plans both; one assign message carries both
    assert [k for k in kwargs_on_broker(servers.env["BROKER_URL"]) if "changes" in k] == [
        {"changes": [[first, GROUP], [second, OTHER_GROUP]]}
    ]
    with transaction(res.pool) as conn:
        conn.execute(BLOCK_OTHER_GROUP)
    try:
        start_worker(concurrency=1)
        wait_for(lambda: failed_records(res), 30, "the failing change's record")
        done = wait_finished(res, [first], timeout_s=30)
    finally:
        with transaction(res.pool) as conn:
            conn.execute(UNBLOCK)
    assert done[first].outcome == "assigned"
    assert group_state(res, GROUP).assignee == ANN
    assert group_state(res, OTHER_GROUP).assignee is None
    [record] = failed_records(res)
    assert (record["task_name"], record["error_type"]) == (ASSIGN, "CheckViolation")
    assert record["kwargs"] == {"changes": [[second, OTHER_GROUP]]}


def test_changes_of_one_group_in_one_batch_apply_in_event_order(
    res: Resources,
    servers: Servers,
    scene: Callable[[dict[str, Any]], None],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    """The set-wise group step decides a batch's changes against one read of the group and
    keeps it current: three events of one issue in one message end as three applied in
    order would, whatever order they were stored in."""
    scene(base_scene())
    bob = store(res, jira_payload(BOB, ts=2000, changelog_id=2))
    cy = store(res, jira_payload(CY, ts=3000, changelog_id=3))
    ann = store(res, jira_payload(ANN, ts=1000, changelog_id=1))
    assert bob is not None and cy is not None and ann is not None
    sync.run(delivery_ids=[bob, cy, ann])  # plans all three; one assign message carries them
    assert [k for k in kwargs_on_broker(servers.env["BROKER_URL"]) if "changes" in k] == [
        {"changes": [[bob, GROUP], [cy, GROUP], [ann, GROUP]]}
    ]
    start_worker(concurrency=1)
    done = wait_finished(res, [ann, bob, cy], timeout_s=30)
    assert {d: done[d].outcome for d in (ann, bob, cy)} == {
        ann: "assigned",
        bob: "assigned",
        cy: "assigned",
    }
    state = group_state(res)
    assert state.assignee == CY
    # Each earlier assignee's `assigned` subscription went when the next one came.
    assert state.subscriptions == {f"user:{CY}": int(SubscriptionReason.ASSIGNED)}
    assert [a[0] for a in state.activity] == [int(ActivityType.ASSIGNED)] * 3
    assert [a[1]["assignee"] for a in state.activity] == [str(ANN), str(BOB), str(CY)]
