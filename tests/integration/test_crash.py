"""Workers killed while chains run: after a restart every delivery is done, nothing is
duplicated, and recovery takes no longer than the broker's bound (Redis: the visibility
timeout, or the stalled-delivery sweep; RabbitMQ: at once, when the connection closes).

The kill lands while chains run whatever the machine's speed: the test holds a row lock on
every group, so a step that writes a group waits in PostgreSQL, mid-chain, and the victim is
the process whose connection waits on that lock."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import psutil
import psycopg
import pytest

from config.celery import SWEEP_INTERVAL_S, UNACKED_RESTORE_INTERVAL_S
from tasks.maintenance import stalled_after_s, sweep_deliveries
from tests.conftest import WorkerProcess, wait_for
from tests.integration.inbound_support import (
    enqueue,
    finished,
    store,
    wait_finished,
)
from tests.integration.test_shuffle import (
    Event,
    event_payload,
    random_events,
    shuffle_scene,
)
from tests.integration.test_shuffle import assert_matches_oracle as shuffle_oracle
from worker.runtime.resources import Resources

pytestmark = pytest.mark.broker  # run again on RabbitMQ: tests/amqp_leg.py

# Time for the restored steps themselves to run once they are back on the queue.
PROCESSING_SLACK_S = 8.0


def post_all(res: Resources, events: list[Event]) -> dict[Event, int]:
    delivery_of = {}
    for event in events:
        delivery_id = store(res, event_payload(event))
        assert delivery_id is not None
        delivery_of[event] = delivery_id
    enqueue(res, list(delivery_of.values()))
    return delivery_of


def _all_done(res: Resources, delivery_of: dict[Event, int]) -> bool:
    return finished(res, list(delivery_of.values())) is not None


def assert_matches_oracle(
    res: Resources, events: list[Event], delivery_of: dict[Event, int]
) -> None:
    results = wait_finished(res, list(delivery_of.values()), timeout_s=5)
    assert {r.status for r in results.values()} == {"done"}
    shuffle_oracle(res, events, results, delivery_of)


@contextlib.contextmanager
def groups_held(res: Resources) -> Iterator[None]:
    """Every group's row locked by this test until the block ends."""
    with psycopg.connect(res.settings.database_url) as conn:
        conn.execute("SELECT id FROM issue_group FOR UPDATE")
        yield
        conn.rollback()


WAITING_PORTS = """
SELECT a.client_port FROM pg_stat_activity a
WHERE a.datname = current_database() AND a.wait_event_type = 'Lock' AND a.client_port > 0
"""


def step_waiting_on_the_lock(res: Resources, candidates: list[int]) -> int | None:
    """The process among `candidates` whose connection waits on a row lock, if any."""
    with psycopg.connect(res.settings.database_url, autocommit=True) as conn:
        ports = {int(r[0]) for r in conn.execute(WAITING_PORTS)}
    for pid in candidates:
        with contextlib.suppress(psutil.NoSuchProcess):
            if any(c.laddr.port in ports for c in psutil.Process(pid).net_connections("tcp")):
                return pid
    return None


def many_events(rng: random.Random, rounds: int) -> list[Event]:
    """Several random sequences per issue, with timestamps that keep growing."""
    events: list[Event] = []
    for r in range(rounds):
        events += [
            Event(e.group_id, e.key, e.ts + r * 10_000_000, e.changelog_id + r * 10_000, e.assignee)
            for e in random_events(rng)
        ]
    return events


def recovery_bound_s(res: Resources) -> float:
    """How long a killed worker's deliveries may take to come back, before processing."""
    if res.settings.broker_is_amqp:
        # RabbitMQ puts back what the dead connection held unacknowledged at once.
        return 0.0
    # Redis: messages the killed worker held come back after the visibility timeout. One it
    # had just popped off the queue and not yet recorded as unacknowledged (a window of
    # Redis's BRPOP) is lost; beat's sweep sends its delivery again once it has stalled, so
    # the test runs the sweep too.
    return max(
        res.settings.broker_visibility_timeout_s + UNACKED_RESTORE_INTERVAL_S,
        stalled_after_s(res.settings) + SWEEP_INTERVAL_S,
    )


def test_killed_pool_child_loses_no_delivery_and_duplicates_nothing(
    res: Resources,
    scene: Callable[[dict[str, Any]], None],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    rng = random.Random(7)
    scene(shuffle_scene())
    workers = [start_worker(concurrency=2), start_worker(concurrency=2)]
    events = many_events(rng, rounds=4)
    with groups_held(res):
        delivery_of = post_all(res, events)
        children = [pid for w in workers for pid in w.children()]
        victim = wait_for(
            lambda: step_waiting_on_the_lock(res, children), 60, "a step to wait mid-chain"
        )
        os.kill(victim, signal.SIGKILL)
    wait_finished(res, list(delivery_of.values()), timeout_s=30)
    assert_matches_oracle(res, events, delivery_of)


def test_killed_worker_is_recovered_within_the_broker_bound(
    res: Resources,
    scene: Callable[[dict[str, Any]], None],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    rng = random.Random(11)
    scene(shuffle_scene())
    victim = start_worker(concurrency=2)
    events = many_events(rng, rounds=4)
    with groups_held(res):
        delivery_of = post_all(res, events)
        wait_for(lambda: step_waiting_on_the_lock(res, victim.children()), 60, "a step mid-chain")
        victim.kill()
        killed_at = time.monotonic()
    start_worker(concurrency=2)
    bound_s = recovery_bound_s(res)
    wait_for(
        lambda: sweep_deliveries.run() is not None and _all_done(res, delivery_of),
        bound_s + PROCESSING_SLACK_S,
        "every delivery to finish",
    )
    recovered_s = time.monotonic() - killed_at
    print(f"crash.recovered_s={recovered_s:.1f} bound_s={bound_s}")
    assert recovered_s <= bound_s + PROCESSING_SLACK_S
    assert_matches_oracle(res, events, delivery_of)
