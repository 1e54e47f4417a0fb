"""A delivery's way in: the group-commit writer of the inbox, and the background publisher
that hands stored deliveries to the broker.

Both write through an event-loop connection pool: a coroutine waiting on PostgreSQL holds no
thread, so no thread competes with the loop for the GIL (which showed as the receiver's tail
latency). Only the broker send, a blocking kombu call, runs in a thread, once per batch.

A delivery is stored `queued`, by this process as its sender, and sent right after: one write
per delivery (marking it queued after the send was a second write of every row, half of
PostgreSQL's work per delivery). A send that fails sets its deliveries back to `received`,
for beat's sweep. The process's heartbeat (receiver_process.seen_at) tells beat's sweep it is
alive; if it is killed between a commit and the send, its heartbeat stops and the sweep sends
again what it stored (migration 0024)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from dataclasses import dataclass, field

import anyio.to_thread
from celery import Celery
from psycopg_pool import AsyncConnectionPool

from tasks import relay
from worker.receiver import metrics
from worker.receiver.periodic import Periodic
from worker.store.db import AsyncConnection, autocommit_async
from worker.store.queries import deliveries as q

log = logging.getLogger("jira_sync.receiver")

BATCH_MAX = 256


@dataclass
class _Waiting:
    delivery: q.NewDelivery
    done: asyncio.Future[int | None]


@dataclass
class Sender:
    """This receiver process as the sender of the deliveries it stores: registered with the
    first one it stores (a receiver starts without its database)."""

    id: int | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def get(self, conn: AsyncConnection) -> int:
        if self.id is None:
            async with self._lock:
                if self.id is None:
                    self.id = await q.register_sender_async(conn, socket.gethostname(), os.getpid())
                    log.info("receiver.registered", extra={"sender": self.id})
        return self.id


@dataclass
class DeliveryWriter:
    """Group commit: flushers insert every waiting delivery in one statement."""

    pool: AsyncConnectionPool[AsyncConnection]
    flushers: int
    sender: Sender
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
                    sender = await self.sender.get(conn)
                    ids = await q.insert_queued_async(conn, [w.delivery for w in batch], sender)
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
    """Puts stored deliveries on the broker after they were answered, in batches; sets back
    to `received` what it could not send, and keeps this process's heartbeat."""

    pool: AsyncConnectionPool[AsyncConnection]
    celery: Celery
    sender: Sender
    heartbeat_s: float
    _queue: asyncio.Queue[int] = field(default_factory=asyncio.Queue)
    _task: asyncio.Task[None] | None = None
    _heartbeat: Periodic | None = None
    # Not sent, and not set back to `received` yet (the database was down too): retried by
    # the heartbeat.
    _unsent: set[int] = field(default_factory=set)
    _sending_since: float | None = None  # when the send under way began (monotonic)

    def start(self) -> None:
        self._task = asyncio.create_task(self._publish_forever())
        self._heartbeat = Periodic(self.beat, self.heartbeat_s)
        self._heartbeat.start()

    def submit(self, delivery_id: int) -> None:
        self._queue.put_nowait(delivery_id)

    async def stop(self, drain_timeout_s: float = 5.0) -> None:
        # Until every submitted delivery was sent (or set back for the sweep), in flight
        # included.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(drain_timeout_s):
                await self._queue.join()
        sending = self._sending_since is not None  # a send that did not finish: unknown
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._heartbeat:
            await self._heartbeat.stop()
        while not self._queue.empty():
            self._unsent.add(self._queue.get_nowait())
        await self._unqueue([])
        if self._unsent or sending or self.sender.id is None:
            return  # beat's sweep takes over once the heartbeat is old
        with contextlib.suppress(Exception):
            async with autocommit_async(self.pool) as conn:
                await q.sender_seen_async(conn, self.sender.id, ended=True)

    async def beat(self) -> None:
        """The heartbeat, and another try at setting back what could not be sent. A send stuck
        for three beats stops the heartbeat: beat's sweep then takes over what this process
        stored, as if it had been killed."""
        await self._unqueue([])
        if self.sender.id is None:
            return
        since = self._sending_since
        if since is not None and time.monotonic() - since > 3 * self.heartbeat_s:
            log.warning("receiver.send_stuck", extra={"stuck_s": round(time.monotonic() - since)})
            return
        try:
            async with autocommit_async(self.pool) as conn:
                await q.sender_seen_async(conn, self.sender.id)
        except Exception as exc:
            log.warning("receiver.heartbeat_failed", extra={"error": type(exc).__name__})

    async def _publish_forever(self) -> None:
        while True:
            ids = [await self._queue.get()]
            while not self._queue.empty():
                ids.append(self._queue.get_nowait())
            self._sending_since = time.monotonic()
            try:
                await self._enqueue(ids)
            finally:
                self._sending_since = None
                for _ in ids:
                    self._queue.task_done()

    async def _enqueue(self, ids: list[int]) -> None:
        try:
            if await anyio.to_thread.run_sync(relay.send_starts, self.celery, ids):
                return
        except Exception as exc:
            log.warning(
                "delivery.enqueue_deferred", extra={"count": len(ids), "error": type(exc).__name__}
            )
        await self._unqueue(ids)

    async def _unqueue(self, ids: list[int]) -> None:
        """Set these (and any earlier ones left) back to `received`: beat's sweep sends them
        (a second send of one that reached the broker after all is harmless: the steps are
        idempotent)."""
        self._unsent.update(ids)
        if not self._unsent:
            return
        pending = sorted(self._unsent)
        try:
            async with autocommit_async(self.pool) as conn:
                await q.unqueue_async(conn, pending)
        except Exception as exc:
            log.warning(
                "delivery.unqueue_deferred",
                extra={"count": len(pending), "error": type(exc).__name__},
            )
            return
        self._unsent.difference_update(pending)
