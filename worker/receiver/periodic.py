"""A coroutine run every few seconds on the receiver's event loop, from start to stop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable


class Periodic:
    """Runs `work` every `every_s` seconds (the first time one period after start)."""

    def __init__(self, work: Callable[[], Awaitable[None]], every_s: float) -> None:
        self._work, self._every_s = work, every_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._every_s)
            await self._work()
