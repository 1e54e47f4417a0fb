"""Celery accepts JSON only: a pickled message put straight on the broker is refused by a real
worker and never unpickled (a payload that would create a marker file does not create it)."""

from __future__ import annotations

import pickle
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kombu import Connection, Producer

from config.celery import QUEUE_INBOUND, celery_config
from tests.conftest import Servers, WorkerProcess, wait_for
from tests.webhooks import broker_messages
from worker.runtime.resources import Resources

pytestmark = pytest.mark.broker  # run again on RabbitMQ: tests/amqp_leg.py


class MarkerFile:
    """Unpickling this opens (so creates) a file: proof that the bytes were unpickled."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (open, (str(self.path), "w"))


def test_the_payload_would_create_its_marker_when_unpickled(tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    pickle.loads(pickle.dumps(MarkerFile(marker))).close()
    assert marker.exists()


def test_pickled_message_on_the_broker_is_refused_not_executed(
    res: Resources, servers: Servers, start_worker: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    marker = tmp_path / "unpickled"
    worker = start_worker(concurrency=1)
    task_id = str(uuid.uuid4())
    with Connection(servers.env["BROKER_URL"]) as conn:
        exchange = celery_config(res.settings)["task_queues"][0].exchange  # as workers bind it
        producer = Producer(conn.channel(), exchange=exchange)
        producer.publish(
            ((), {"delivery_id": MarkerFile(marker)}, {}),
            routing_key=QUEUE_INBOUND,
            serializer="pickle",
            headers={"task": "jira_sync.inbound.check_changelog", "id": task_id, "lang": "py"},
        )
    wait_for(
        lambda: "ContentDisallowed" in worker.log() or "Refusing to deserialize" in worker.log(),
        20,
        "the worker to refuse the pickled message",
    )
    assert broker_messages(servers.env["BROKER_URL"]) == []  # dropped, not left to loop
    assert not marker.exists()
    assert f"Task jira_sync.inbound.check_changelog[{task_id}] received" not in worker.log()
    assert worker.proc.poll() is None, "the worker survives the refusal"
