"""RabbitMQ only (run by tests/amqp_leg.py): a message that keeps coming back unacknowledged
(its worker dies each time) ends, after BROKER_DELIVERY_LIMIT deliveries, in the dead-letter
queue, and beat's drain turns it into a failed-task record that `failed replay` can run."""

from __future__ import annotations

import pytest
from kombu import Connection

from config.celery import QUEUE_DEAD_LETTER, QUEUE_INBOUND
from devtools import rabbitmq as amqp
from tasks.maintenance import drain_dead_letters
from tests.conftest import Servers, wait_for
from tests.integration.inbound_support import declare_queues
from worker.runtime.app import app
from worker.runtime.resources import Resources
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
