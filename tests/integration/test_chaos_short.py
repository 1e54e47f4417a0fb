"""The short chaos run (tests/chaos.py): a few hundred deliveries while workers are killed,
Redis restarts without its data and PostgreSQL restarts, 10% of the webhooks never posted;
nothing lost, nothing duplicated, every group as the sequential oracle says once one
reconciliation sweep has read the fake Jira, no 202 while the database was down."""

from __future__ import annotations

import os

import pytest

from tests import chaos

pytestmark = pytest.mark.broker  # run again on RabbitMQ: tests/amqp_leg.py


@pytest.mark.timeout(420)
def test_short_chaos_run_loses_and_duplicates_nothing() -> None:
    # The RabbitMQ leg hands its vhost down; the run restarts RabbitMQ in place of Redis.
    broker_url = os.environ.get("TEST_BROKER_URL")
    report = chaos.run(chaos.SHORT, broker_url=broker_url if broker_url else None)
    print(report.table())
    assert report.faults, report.problems
    assert len(report.faults) == 2 + chaos.SHORT.worker_kills, report.problems
    assert report.accepted > 0
    assert report.lost == 0, report.problems
    assert report.duplicated == 0, report.problems
    assert report.dropped > 0
    assert report.oracle_mismatches == 0, report.problems
    assert report.needless_reconciles == 0, report.problems
    assert report.accepted_while_db_down == 0, report.answered_while_db_down
    assert report.answered_while_db_down[503] > 0, "the outage must be seen by the load"
    assert report.quiet_after_last_fault_s is not None, "the run never became quiet"
