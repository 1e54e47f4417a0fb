"""A delivery's way in: the group-commit writer of the inbox, and the background publisher
that hands stored deliveries to the broker.

Both write through an event-loop connection pool: a coroutine waiting on PostgreSQL holds no
thread, so no thread competes with the loop for the GIL (which showed as the receiver's tail
latency). Only the broker send, a blocking kombu call, runs in a thread, once per batch."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

import anyio.to_thread
from celery import Celery
from psycopg_pool import AsyncConnectionPool

from tasks import relay
from worker.receiver import metrics
from worker.store.db import AsyncConnection, autocommit_async
from worker.store.queries import deliveries as q

log = logging.getLogger("jira_sync.receiver")

BATCH_MAX = 256


@dataclass
class _Waiting:
    delivery: q.NewDelivery
    done: asyncio.Future[int | None]


@dataclass
class DeliveryWriter:
    """Group commit: flushers insert every waiting delivery in one statement."""

    pool: AsyncConnectionPool[AsyncConnection]
    flushers: int
    _queue: asyncio.Queue[_Waiting] = field(default_factory=asyncio.Queue)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._flush_forever()) for _ in range(self.flushers)]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def store(self, delivery: q.NewDelivery) -> int | None:
        """The new delivery id once committed; None for a duplicate."""
        waiting = _Waiting(delivery, asyncio.get_running_loop().create_future())
        self._queue.put_nowait(waiting)
        return await waiting.done

    async def _flush_forever(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < BATCH_MAX and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                async with autocommit_async(self.pool) as conn:  # one statement, one commit
                    ids = await q.insert_deliveries_async(conn, [w.delivery for w in batch])
            except Exception as exc:
                for w in batch:
                    if not w.done.done():
                        w.done.set_exception(exc)
                continue
            metrics.INSERT_BATCH.observe(len(batch))
            stored = [i for i in ids if i is not None]
            log.info(
                "payload.stored",
                extra={"count": len(stored), "duplicates": len(ids) - len(stored),
                       "delivery_ids": stored},
            )  # fmt: skip
            for w, delivery_id in zip(batch, ids, strict=True):
                if not w.done.done():
                    w.done.set_result(delivery_id)


@dataclass
class Publisher:
    """Puts stored deliveries on the broker after they were answered, in batches."""

    pool: AsyncConnectionPool[AsyncConnection]
    celery: Celery
    _queue: asyncio.Queue[int] = field(default_factory=asyncio.Queue)
    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._publish_forever())

    def submit(self, delivery_id: int) -> None:
        self._queue.put_nowait(delivery_id)

    async def stop(self, drain_timeout_s: float = 5.0) -> None:
        # Until every submitted delivery was sent (or left for the sweep), in flight included.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(drain_timeout_s):
                await self._queue.join()
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _publish_forever(self) -> None:
        while True:
            ids = [await self._queue.get()]
            while not self._queue.empty():
                ids.append(self._queue.get_nowait())
            try:
                await self._enqueue(ids)
            finally:
                for _ in ids:
                    self._queue.task_done()

    async def _enqueue(self, ids: list[int]) -> None:
        # Anything not sent, or sent but not marked, stays `received`: the beat sweep sends
        # it later (a second send is harmless: the steps are idempotent).
        try:
            if await anyio.to_thread.run_sync(relay.send_starts, self.celery, ids):
                async with autocommit_async(self.pool) as conn:
                    await q.mark_queued_async(conn, ids)
        except Exception as exc:
            log.warning(
                "delivery.enqueue_deferred",
                extra={"count": len(ids), "error": type(exc).__name__},
            )
