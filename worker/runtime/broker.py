"""What the broker holds, read the same way on Redis and on RabbitMQ (kombu's channel API)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

from kombu import Connection

from config.celery import ALL_QUEUES


def queue_depths(connection: Connection, queues: Iterable[str] = ALL_QUEUES) -> dict[str, int]:
    """Messages waiting on each queue: a Redis list's length, or a RabbitMQ queue's ready
    messages (not those a worker holds unacknowledged). A queue never declared holds 0.
    The connection (e.g. `app.connection_for_read()`) is closed afterwards."""
    depths = {}
    with connection as conn:
        for name in queues:
            # A passive declare of a missing queue closes a RabbitMQ channel: one per queue.
            channel = conn.channel()
            try:
                depths[name] = int(channel.queue_declare(name, passive=True).message_count)
            except conn.channel_errors:
                depths[name] = 0
            finally:
                with contextlib.suppress(Exception):
                    channel.close()
    return depths
