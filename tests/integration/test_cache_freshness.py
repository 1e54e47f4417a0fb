"""After an assignment, nobody reads a stale "no assignee", even with side effects backed up."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from config.celery import QUEUE_INBOUND
from tests.conftest import WorkerProcess, wait_for
from tests.integration.inbound_support import ANN, GROUP, base_scene, jira_payload, outcome_of, post
from worker import cache
from worker.runtime.resources import Resources
from worker.services import groups


def test_assignment_is_visible_while_side_effect_steps_wait_in_their_queue(
    res: Resources,
    scene: Callable[[dict[str, Any]], None],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    scene(base_scene())
    start_worker(concurrency=1, queues=QUEUE_INBOUND)  # nobody runs the purge steps
    assert groups.assignee_exists(res, GROUP) is False  # the read path caches "none" for 60 s
    assert outcome_of(res, post(res, jira_payload(ANN, ts=1000, changelog_id=1))) == "assigned"
    wait_for(lambda: groups.assignee_exists(res, GROUP), 2, "the read path to see the assignee")
    assert cache.cached_assignee_exists(res.redis, GROUP) is True
