"""RabbitMQ only (run by tests/amqp_leg.py): a message that keeps coming back unacknowledged
(its worker dies each time) ends, after BROKER_DELIVERY_LIMIT deliveries, in the dead-letter
queue, and beat's drain turns it into a failed-task record that `failed replay` can run."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from kombu import Connection

from config.celery import QUEUE_DEAD_LETTER, QUEUE_INBOUND
from devtools import rabbitmq as amqp
from tasks.maintenance import drain_dead_letters
from tests.conftest import Servers, wait_for
from tests.integration.inbound_support import ANN, base_scene, declare_queues, jira_payload, store
from worker.runtime.app import app
from worker.runtime.resources import Resources
from worker.services import failures
from worker.store.db import transaction
from worker.store.queries.failed_tasks import Filters, list_failed

pytestmark = pytest.mark.amqp_only


def _return_unacknowledged(broker_url: str) -> None:
    """One delivery that ends without an acknowledgement, as when its worker is killed."""
    with Connection(broker_url) as conn:
        channel = conn.channel()
        message = channel.basic_get(QUEUE_INBOUND, no_ack=False)
        assert message is not None, "the message is back on its queue"
        channel.close()  # RabbitMQ returns what the closed channel held


def test_a_message_past_its_delivery_limit_is_dead_lettered_into_the_failed_store(
    res: Resources, servers: Servers
) -> None:
    broker_url = servers.env["BROKER_URL"]
    declare_queues()
    assert drain_dead_letters.run() == 0  # declares the dead-letter queue; nothing in it
    app.send_task("jira_sync.inbound.check_changelog", kwargs={"delivery_ids": [424242]})
    for _ in range(res.settings.broker_delivery_limit + 1):
        _return_unacknowledged(broker_url)
    wait_for(lambda: amqp.messages(broker_url, QUEUE_DEAD_LETTER), 10, "the dead letter")
    assert amqp.messages(broker_url, QUEUE_INBOUND) == []

    assert drain_dead_letters.run() == 1
    with transaction(res.pool) as conn:
        [record] = list_failed(conn, Filters(), 10)
    assert record.task_name == "jira_sync.inbound.check_changelog"
    assert record.kwargs == {"delivery_ids": [424242]}
    assert record.error_type == "DeliveryLimitExceeded"
    assert "without an acknowledgement" in record.message
    assert amqp.messages(broker_url, QUEUE_DEAD_LETTER) == []


def dead_letter(res: Resources, broker_url: str, kwargs: dict[str, Any]) -> None:
    """A check_changelog message with these arguments, past its delivery limit."""
    app.send_task("jira_sync.inbound.check_changelog", kwargs=kwargs)
    for _ in range(res.settings.broker_delivery_limit + 1):
        _return_unacknowledged(broker_url)
    wait_for(lambda: amqp.messages(broker_url, QUEUE_DEAD_LETTER), 10, "the dead letter")


def test_a_dead_batch_is_one_record_per_delivery_each_pointing_at_its_own(
    res: Resources, servers: Servers, scene: Callable[[dict[str, Any]], None]
) -> None:
    broker_url = servers.env["BROKER_URL"]
    scene(base_scene())
    declare_queues()
    drain_dead_letters.run()
    ids = [store(res, jira_payload(ANN, 1_764_000_000_000 + n, n + 1)) for n in (1, 2)]
    dead_letter(res, broker_url, {"delivery_ids": ids})
    assert drain_dead_letters.run() == 1
    with transaction(res.pool) as conn:
        records = list_failed(conn, Filters(), 10)
        rows = conn.execute(
            "SELECT id, status, failed_task_id FROM webhook_delivery ORDER BY id"
        ).fetchall()
    assert sorted(r.kwargs["delivery_ids"][0] for r in records) == sorted(ids)
    by_delivery = {r.kwargs["delivery_ids"][0]: r.id for r in records}
    # Failed, each pointing at its record: beat's stalled sweep does not send them again.
    assert [(r["status"], r["failed_task_id"]) for r in rows] == [
        ("failed", by_delivery[r["id"]]) for r in rows
    ]


def test_a_dead_letter_that_cannot_be_recorded_stays_in_its_queue(
    res: Resources, servers: Servers, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker_url = servers.env["BROKER_URL"]
    declare_queues()
    drain_dead_letters.run()
    dead_letter(res, broker_url, {"delivery_ids": [424242]})
    # Neither PostgreSQL nor the Redis spool takes the record.
    monkeypatch.setattr(failures, "record_durably", lambda res, rec: False)
    assert drain_dead_letters.run() == 0
    assert len(amqp.messages(broker_url, QUEUE_DEAD_LETTER)) == 1
    monkeypatch.undo()
    assert drain_dead_letters.run() == 1
    assert amqp.messages(broker_url, QUEUE_DEAD_LETTER) == []
