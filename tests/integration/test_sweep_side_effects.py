"""A changed group's side effects whose broker messages were lost (Redis restarted without its
data) are sent again by the beat sweep once they have stalled past their bound; the outbound
call then happens exactly once."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import redis

from config.celery import QUEUE_INBOUND, QUEUE_SIDE_EFFECTS
from tests.conftest import WorkerProcess, wait_for
from tests.fakejira import FakeJira
from tests.integration.failure_support import OUTBOUND_KEY, outbound_scene
from tests.integration.inbound_support import ANN, jira_payload, outcome_of, post
from worker.runtime.resources import Resources
from worker.store.db import transaction


def side_effects_done(res: Resources) -> bool:
    with transaction(res.pool) as conn:
        row = conn.execute(
            "SELECT bool_and(side_effects_done_at IS NOT NULL) AS done FROM delivery_effect"
        ).fetchone()
    return bool(row and row["done"])


def backdate_effects(res: Resources, seconds: float) -> None:
    with transaction(res.pool) as conn:
        conn.execute(
            "UPDATE delivery_effect SET updated_at = now() - make_interval(secs => %s)", (seconds,)
        )


def test_lost_side_effects_are_sent_again_and_call_jira_once(
    res: Resources,
    fake_jira: FakeJira,
    scene: Callable[[dict[str, Any]], None],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    from tasks.maintenance import stalled_after_s, sweep_deliveries

    scene(outbound_scene(fake_jira))
    inbound_only = start_worker(concurrency=1, queues=QUEUE_INBOUND)
    assert outcome_of(res, post(res, jira_payload(ANN, ts=1000, changelog_id=1))) == "assigned"
    broker = redis.Redis.from_url(res.settings.broker_url)
    wait_for(lambda: broker.llen(QUEUE_SIDE_EFFECTS) > 0, 10, "the side effects to be queued")
    inbound_only.stop()
    broker.delete(QUEUE_SIDE_EFFECTS)  # lost, as with a broker restarted without its data
    assert sweep_deliveries.run() == 0  # not stalled yet: left alone

    backdate_effects(res, stalled_after_s(res.settings) + 1)
    start_worker(concurrency=2)
    assert sweep_deliveries.run() == 1
    wait_for(lambda: side_effects_done(res), 30, "the re-sent side effects to finish")
    assert fake_jira.assignees == {OUTBOUND_KEY: "ann"}
    assert len(fake_jira.calls_to("/rest/api/2/issue/", "PUT")) == 1

    backdate_effects(res, stalled_after_s(res.settings) + 1)
    assert sweep_deliveries.run() == 0  # finished: nothing to send again
