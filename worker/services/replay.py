"""Replay failed steps: send each again by its stable name with its recorded arguments.

A replayed step sends what follows it as it always does (tasks/pipeline.py), so the work
continues from the failed step;
its kwargs (the delivery or project id) are the idempotency key the steps dedupe on, so
replaying twice changes nothing. Records are taken in batches, each in one transaction:
lock the rows, publish every step on one producer, mark the batch `replayed` with one
UPDATE, commit. A crash before the commit leaves the batch `failed` (a second replay is
safe); a replayed step that fails again waits on the row lock and then sets `failed` again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from celery import Celery

from worker.domain.errors import BrokerUnavailable, ErrorKind
from worker.runtime.publish import StepCall, batch_sender
from worker.store.db import Connection, transaction
from worker.store.queries import failed_tasks as q
from worker.store.queries.failed_tasks import FailedTask, Filters
from worker.support.classify import classify

if TYPE_CHECKING:
    from worker.runtime.resources import Resources

log = logging.getLogger(__name__)

BATCH_SIZE = 500
# Records an operator may replay by id; `replayed` ones only with force.
REPLAYABLE = ["failed", "parked"]

Progress = Callable[[int], None]
Publish = Callable[[list["FailedTask"]], None]


@dataclass
class ReplayResult:
    """What a replay did (or, with dry_run, would do)."""

    replayed: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)  # named but not in a replayable status
    missing: list[int] = field(default_factory=list)  # named but not in the store

    @property
    def count(self) -> int:
        return len(self.replayed)


class ReplayInterrupted(Exception):
    """Raised when the database or the broker went away mid-replay; carries what was done."""

    def __init__(self, result: ReplayResult, cause: BaseException) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.result = result
        self.cause = cause


def count_selected(res: Resources, filters: Filters, limit: int | None) -> int:
    """How many records replay_matching would take (for the progress bar)."""
    with transaction(res.pool) as conn:
        total = q.count_matching(conn, filters)
    return total if limit is None else min(total, limit)


def replay_matching(
    res: Resources,
    app: Celery,
    filters: Filters,
    *,
    limit: int | None = None,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> ReplayResult:
    """Replay every record the filters match (status `failed` unless the filters say)."""
    if filters.status is None:
        filters = Filters(**{**filters.__dict__, "status": "failed"})
    result = ReplayResult()
    after_id = 0
    with _interruptible(result), _producer(app, dry_run) as publish:
        while limit is None or result.count < limit:
            size = BATCH_SIZE if limit is None else min(BATCH_SIZE, limit - result.count)
            with transaction(res.pool) as conn:
                batch = q.lock_batch_by_filters(conn, filters, after_id, size)
                if not batch:
                    break
                _replay_batch(conn, batch, publish, dry_run)
            after_id = batch[-1].id
            result.replayed.extend(r.id for r in batch)
            if progress:
                progress(len(batch))
    return result


def replay_ids(
    res: Resources,
    app: Celery,
    ids: list[int],
    *,
    force: bool = False,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> ReplayResult:
    """Replay the named records; already replayed ones are skipped unless force."""
    result = ReplayResult()
    wanted = sorted(set(ids))
    statuses = [*REPLAYABLE, "replayed"] if force else REPLAYABLE
    with _interruptible(result), _producer(app, dry_run) as publish:
        for start in range(0, len(wanted), BATCH_SIZE):
            chunk = wanted[start : start + BATCH_SIZE]
            with transaction(res.pool) as conn:
                present = q.existing_ids(conn, chunk)
                batch = q.lock_by_ids(conn, chunk, statuses)
                _replay_batch(conn, batch, publish, dry_run)
            taken = {r.id for r in batch}
            result.replayed.extend(sorted(taken))
            result.missing.extend(i for i in chunk if i not in present)
            result.skipped.extend(i for i in chunk if i in present and i not in taken)
            if progress:
                progress(len(chunk))
    return result


def _replay_batch(
    conn: Connection, batch: list[FailedTask], publish: Publish, dry_run: bool
) -> None:
    if dry_run:
        return
    publish(batch)
    q.mark_replayed(conn, [r.id for r in batch])
    # One line per batch: a line per record would cost as much as the sending itself.
    log.info(
        "failed.replayed",
        extra={
            "count": len(batch),
            "failed_ids": [r.id for r in batch],
            "delivery_ids": sorted({r.delivery_id for r in batch if r.delivery_id is not None}),
        },
    )


@contextmanager
def _interruptible(result: ReplayResult) -> Iterator[None]:
    # Committed batches stay replayed; the batch in flight rolls back and stays `failed`.
    try:
        yield
    except Exception as exc:
        if classify(exc) is not ErrorKind.UNAVAILABLE:
            raise
        raise ReplayInterrupted(result, exc) from exc


@contextmanager
def _producer(app: Celery, dry_run: bool) -> Iterator[Publish]:
    """One producer for the whole replay; each batch goes out in one round trip."""
    if dry_run:
        yield lambda batch: None
        return
    with batch_sender(app) as send:

        def publish(batch: list[FailedTask]) -> None:
            try:
                send(StepCall(r.task_name, r.kwargs, r.args) for r in batch)
            except Exception as exc:
                if not classify(exc).retryable:
                    raise
                raise BrokerUnavailable(f"{type(exc).__name__}: {exc}") from exc

        yield publish
