"""20,000 generated and mutated bodies against the in-process receiver (real PostgreSQL and
Redis): never a 5xx, nothing stored (so nothing enqueued) that the SPEC refuses, and memory
flat: RSS and traced allocations after the run stay within a small bound of before."""

from __future__ import annotations

import asyncio
import copy
import gc
import json
import logging
import random
import tracemalloc
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import psutil
import pytest

from tests.integration.test_receiver_fuzz import acceptable
from tests.webhooks import load_integrations, payload, url
from worker.receiver.app import ReceiverApp, create_app
from worker.runtime.resources import Resources
from worker.store.db import transaction

REQUESTS = 20_000
WARM_UP = 2_000
# Requests in flight at once: the receiver's group commit stores them in a few statements.
CONCURRENT = 50
RSS_GROWTH_MAX_BYTES = 24 << 20
TRACED_GROWTH_MAX_BYTES = 4 << 20
CONTENT_TYPES = (
    "application/json",
    "application/json; charset=utf-8",
    "application/vnd.atlassian+json",
    "text/plain",
    "",
    "application/x-www-form-urlencoded",
)
ODD_VALUES: tuple[Any, ...] = (
    None, True, 0, -1, 2**64, 1.5, "", "x" * 300, "\x00", "\ud800", [], {}, [[[[]]]],
    {"items": None}, "APP-1\n", 1e308,
)  # fmt: skip
PATHS = (
    ("timestamp",), ("webhookEvent",), ("issue",), ("issue", "key"), ("issue", "id"),
    ("issue", "fields"), ("issue", "fields", "assignee"), ("changelog",), ("changelog", "id"),
    ("changelog", "items"),
)  # fmt: skip


def mutate_structure(rng: random.Random, data: dict[str, Any]) -> dict[str, Any]:
    for _ in range(rng.randint(1, 3)):
        path = rng.choice(PATHS)
        target: Any = data
        for step in path[:-1]:
            target = target.get(step) if isinstance(target, dict) else None
        if isinstance(target, dict):
            if rng.random() < 0.3:
                target.pop(path[-1], None)
            else:
                target[path[-1]] = copy.deepcopy(rng.choice(ODD_VALUES))
    return data


def mutate_bytes(rng: random.Random, raw: bytes) -> bytes:
    buf = bytearray(raw)
    for _ in range(rng.randint(1, 8)):
        op, at = rng.randrange(5), rng.randrange(len(buf) + 1)
        if op == 0 and buf:
            buf[min(at, len(buf) - 1)] = rng.randrange(256)
        elif op == 1:
            buf[at:at] = bytes([rng.randrange(256)])
        elif op == 2:
            del buf[at : at + rng.randint(1, 16)]
        elif op == 3:
            buf[at:at] = rng.choice([b"{", b"}", b"[", b'"', b"\\u0000", b"NaN", b"\xff", b","])
        else:
            buf[at:at] = buf[at : at + rng.randint(1, 64)]  # repeat a slice
    return bytes(buf)


def generated(rng: random.Random, n: int) -> tuple[str, bytes]:
    data = payload(changelog_id=n)
    kind = rng.randrange(4)
    if kind == 0:
        raw = json.dumps(data).encode()  # valid: accepted (or a duplicate)
    elif kind == 1:
        raw = json.dumps(mutate_structure(rng, data), ensure_ascii=rng.random() < 0.5).encode(
            "utf-8", "surrogatepass"
        )
    elif kind == 2:
        raw = mutate_bytes(rng, json.dumps(data).encode())
    else:
        raw = rng.randbytes(rng.randrange(64))
    content_type = CONTENT_TYPES[0] if rng.random() < 0.7 else rng.choice(CONTENT_TYPES)
    return content_type, raw


@pytest.fixture
def app(res: Resources, scene: Callable[[dict[str, Any]], None]) -> ReceiverApp:
    load_integrations(scene)
    return create_app(res=res, configure_logs=False)


def stored_count(res: Resources) -> int:
    with transaction(res.pool) as conn:
        row = conn.execute("SELECT count(*) AS n FROM webhook_delivery").fetchone()
    assert row is not None
    return int(row["n"])


@dataclass
class Tally:
    statuses: Counter[int] = field(default_factory=Counter)
    wrong: list[tuple[str, bytes]] = field(default_factory=list)


async def send_all(
    client: httpx.AsyncClient, rng: random.Random, numbers: range, tally: Tally
) -> None:
    target = url()

    async def send(n: int, content_type: str, raw: bytes) -> None:
        headers = {"Content-Type": content_type} if content_type else {}
        answer = await client.post(target, content=raw, headers=headers)
        tally.statuses[answer.status_code] += 1
        if answer.status_code == 202 and not acceptable(content_type, raw):
            tally.wrong.append((content_type, raw[:200]))
        if answer.status_code in (400, 415) and acceptable(content_type, raw):
            tally.wrong.append(("refused a good body", raw[:200]))

    for start in range(numbers.start, numbers.stop, CONCURRENT):
        batch = [
            (n, *generated(rng, n)) for n in range(start, min(start + CONCURRENT, numbers.stop))
        ]
        await asyncio.gather(*(send(*item) for item in batch))


@pytest.mark.timeout(240)
def test_twenty_thousand_mutated_bodies_no_5xx_nothing_wrongly_stored_memory_flat(
    app: ReceiverApp, res: Resources, caplog: pytest.LogCaptureFixture
) -> None:
    # pytest keeps every captured log record in memory: had an earlier in-process CLI test
    # left the root logger at INFO, 18,000 request lines would read as the receiver's growth.
    caplog.set_level(logging.WARNING)
    rng = random.Random(8)
    tally = Tally()
    process = psutil.Process()
    measured: dict[str, int] = {}

    async def run() -> None:
        async with app.starlette.router.lifespan_context(app.starlette):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://receiver") as client:
                await send_all(client, rng, range(WARM_UP), tally)
                gc.collect()
                measured["rss_before"] = process.memory_info().rss
                tracemalloc.start()
                before = tracemalloc.take_snapshot()
                await send_all(client, rng, range(WARM_UP, REQUESTS), tally)
                gc.collect()
                after = tracemalloc.take_snapshot()
                tracemalloc.stop()
                measured["rss_growth"] = process.memory_info().rss - measured["rss_before"]
                measured["traced_growth"] = sum(
                    stat.size_diff for stat in after.compare_to(before, "filename")
                )

    asyncio.run(run())
    statuses = tally.statuses
    print(f"statuses={dict(statuses)} {measured}")
    assert sum(statuses.values()) == REQUESTS
    assert not [s for s in statuses if s >= 500], statuses
    assert tally.wrong == []
    assert stored_count(res) == statuses[202]
    assert statuses[202] > 1000 and statuses[400] > 1000, statuses  # both paths exercised
    assert measured["rss_growth"] < RSS_GROWTH_MAX_BYTES, measured
    assert measured["traced_growth"] < TRACED_GROWTH_MAX_BYTES, measured
