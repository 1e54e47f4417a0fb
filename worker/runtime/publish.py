"""Sending many steps at once: one broker connection and producer, and each batch of
messages flushed to Redis in one pipelined round trip (kombu's Producer.batch).

Used wherever steps are sent in bulk: the receiver's publisher, the beat sweep and replay.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from celery import Celery

# Redis commands buffered before kombu flushes the pipeline (a message is one or two).
PIPELINE_SIZE = 1000


@dataclass(frozen=True)
class StepCall:
    """A step to send: its stable name and the arguments it is called with."""

    name: str
    kwargs: dict[str, Any]
    args: list[Any] = field(default_factory=list)


Send = Callable[[Iterable[StepCall]], None]


@contextmanager
def batch_sender(app: Celery) -> Iterator[Send]:
    """A send function on one producer for as long as the block lasts; each call's steps go
    out together. A broker error propagates; steps of the failing call may be partly sent."""
    with app.producer_or_acquire() as producer:

        def send(calls: Iterable[StepCall]) -> None:
            with producer.batch(max_size=PIPELINE_SIZE):
                for call in calls:
                    app.send_task(
                        call.name,
                        args=call.args,
                        kwargs=call.kwargs,
                        producer=producer,
                    )

        yield send
