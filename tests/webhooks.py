"""Helpers for receiver tests: a linked integration scene, payloads, tokens, broker peeking."""

from __future__ import annotations

import base64
import itertools
import json
from collections.abc import Callable
from typing import Any

import redis as redis_lib

from config.celery import QUEUE_INBOUND
from devtools import rabbitmq as amqp
from tests.fakejira import rsa_keypair
from worker.domain import tokens
from worker.runtime.resources import Resources
from worker.store.db import transaction
from worker.store.queries import integrations as iq

EXTERNAL_ID = "jira.acme.test:jira-sync"
SECRET = "webhook-secret-" + "x" * 32
OTHER_EXTERNAL_ID = "jira.other.test:jira-sync"
OTHER_SECRET = "other-secret-" + "y" * 32
PATH = "/extensions/jira-server/issue-updated/{}/"
JSON = {"Content-Type": "application/json"}

_changelog_ids = itertools.count(10_000)


def integration(
    id: int, external_id: str, secret: str, status: str = "active", **extra: Any
) -> dict[str, Any]:
    return {
        "id": id,
        "external_id": external_id,
        "base_url": "https://" + external_id.split(":")[0],
        "consumer_key": external_id.split(":", 1)[1],
        "private_key": rsa_keypair().private_pem,
        "access_token": f"access-token-{id}-secret-value",
        "access_token_secret": f"access-token-secret-{id}-value",
        "webhook_secret": secret,
        "status": status,
        **extra,
    }


def load_integrations(scene: Callable[[dict[str, Any]], None], *, disabled: bool = False) -> None:
    """Integration 1 (EXTERNAL_ID, SECRET) and 2 (OTHER_*, disabled when asked)."""
    scene(
        {
            "integrations": [
                integration(1, EXTERNAL_ID, SECRET),
                integration(
                    2, OTHER_EXTERNAL_ID, OTHER_SECRET, "disabled" if disabled else "active"
                ),
            ]
        }
    )


def url(token: str | None = None) -> str:
    return PATH.format(tokens.issue(EXTERNAL_ID, SECRET) if token is None else token)


def payload(
    key: str = "APP-1", changelog_id: int | None = None, timestamp: int = 1_700_000_000_000
) -> dict[str, Any]:
    """An `issue updated` body whose changelog reassigns the issue."""
    return {
        "timestamp": timestamp,
        "webhookEvent": "jira:issue_updated",
        "issue": {
            "id": "10001",
            "key": key,
            "fields": {"assignee": {"emailAddress": "ann@acme.test", "name": "ann"}},
        },
        "changelog": {
            "id": str(changelog_id if changelog_id is not None else next(_changelog_ids)),
            "items": [{"field": "assignee", "fieldtype": "jira", "from": None, "to": "ann"}],
        },
    }


def body(data: Any) -> bytes:
    return json.dumps(data).encode()


def broker_messages(broker_url: str, queue: str = QUEUE_INBOUND) -> list[dict[str, Any]]:
    """The messages waiting on a broker queue (kombu's Redis list, or RabbitMQ's), decoded."""
    if amqp.is_amqp(broker_url):
        return amqp.messages(broker_url, queue)
    client = redis_lib.Redis.from_url(broker_url)
    try:
        return [json.loads(raw) for raw in client.lrange(queue, 0, -1)]
    finally:
        client.close()


def delivery_ids_on_broker(broker_url: str) -> set[int]:
    """The deliveries whose first step waits on the broker (a message carries a batch)."""
    found = set()
    for message in broker_messages(broker_url):
        args = message.get("body")
        decoded = json.loads(base64.b64decode(args)) if isinstance(args, str) else args
        found.update(int(d) for d in decoded[1]["delivery_ids"])
    return found


def old_secret_use_noted(res: Resources, integration_id: int) -> bool:
    """Whether a receiver has noted a delivery verified by a rotation's previous secret
    (it writes its notes about once a second)."""
    with transaction(res.pool) as conn:
        seen = iq.get_webhook_seen(conn, integration_id)
    return seen is not None and seen.previous_secret_used_at is not None
