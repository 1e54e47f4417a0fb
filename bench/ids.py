"""Figure 3: snowflake id claims/s from one process and Redis round trips per id.

Cases, each from one client on one connection:
- raw INCR: the floor, one command per id;
- claim, normal: the current second has free sequence values;
- claim, current second used up, so the claim searches DEPTH seconds back (1 and 60): the
  Redis state is laid out so that every claim finds its current second and the DEPTH - 1
  before it full, and the one DEPTH seconds back free;
- the old look-back on that same state: one INCR per earlier second looked at (and an EXPIRE
  once it found one), as the original did.
A simulated clock moves on after each 16 claims (a second's worth of sequence values), so
the state each claim sees stays the same however fast the loop runs. Round trips are counted
at the client: one per reply read from the socket.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
from redis.connection import Connection

from bench.harness import Servers
from bench.report import Figure, Report, Sample
from worker import cache
from worker.domain import snowflake
from worker.domain.errors import NoIdAvailable

DEPTHS_S = (1, 60)
MAX_IDS = 40_000  # per case and run: bounds the state laid out in Redis beforehand
MAX_KEYS = 120_000  # counters laid out per case: deep look-backs get fewer ids
# Regions of their own, far from a real deployment's, one per case and run.
REGION_BASE = 3000


class CountingConnection(Connection):
    """A Redis connection that counts the replies it reads: its round trips."""

    replies = 0

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        CountingConnection.replies += 1
        return super().read_response(*args, **kwargs)


def counting_client(url: str) -> redis.Redis:
    pool = redis.ConnectionPool.from_url(url, connection_class=CountingConnection)
    return redis.Redis(connection_pool=pool)


@dataclass
class Rate:
    """Ids per second, round trips per id and Redis's own time per id of one timed loop."""

    per_s: float
    round_trips_per_id: float
    server_us_per_id: float = float("nan")


def _server_usec(client: redis.Redis, commands: tuple[str, ...]) -> float:
    """Microseconds Redis spent in these commands (scripts count their inner commands)."""
    stats: dict[str, Any] = client.info("commandstats")
    return float(sum(stats.get(f"cmdstat_{c}", {}).get("usec", 0) for c in commands))


def timed(
    step: Callable[[int], bool],
    duration_s: float,
    limit: int | None = None,
    client: redis.Redis | None = None,
    commands: tuple[str, ...] = (),
) -> Rate:
    """Call step(i) until the time is up (or it returns False, or limit calls)."""
    if client is not None:
        client.config_resetstat()
    before = CountingConnection.replies
    done = 0
    started = time.perf_counter()
    deadline = started + duration_s
    while time.perf_counter() < deadline and (limit is None or done < limit):
        if not step(done):
            break
        done += 1
    elapsed = time.perf_counter() - started
    trips = CountingConnection.replies - before
    rate = Rate(done / elapsed if elapsed else 0.0, trips / done if done else float("nan"))
    if client is not None and done:
        rate.server_us_per_id = _server_usec(client, commands) / done
    return rate


def _lay_out(
    client: redis.Redis, region: int, first_s: int, depth_s: int, blocks: int, epoch_s: int
) -> list[int]:
    """Blocks of depth_s + 1 seconds: the first free, the others full. Returns each block's
    current second (its last): a claim there searches exactly depth_s seconds back."""
    pipe = client.pipeline(transaction=False)
    currents = []
    for block in range(blocks):
        start = first_s + block * (depth_s + 1)
        for second in range(start + 1, start + depth_s + 1):
            key = cache.snowflake_counter_key(region, second)
            pipe.set(key, snowflake.SEQUENCE_SIZE)
            pipe.expireat(key, epoch_s + second + snowflake.LOOKBACK_S + 1)
        currents.append(start + depth_s)
    pipe.execute()
    return currents


def old_lookback_claim(client: redis.Redis, region: int, now_s: int, epoch_s: int) -> int:
    """The original: INCR one second after another, then EXPIRE (not atomic)."""
    for second in range(now_s, max(now_s - snowflake.LOOKBACK_S, 0) - 1, -1):
        key = cache.snowflake_counter_key(region, second)
        used = int(client.incr(key))
        if used <= snowflake.SEQUENCE_SIZE:
            client.expire(key, snowflake.LOOKBACK_S + 1)
            return snowflake.encode(second, region, used - 1)
    raise NoIdAvailable("no id available")


def _cleanup(client: redis.Redis, regions: list[int]) -> None:
    for region in regions:
        keys = list(client.scan_iter(match=f"{cache.SNOWFLAKE_KEY_PREFIX}:{region}:*", count=1000))
        for start in range(0, len(keys), 1000):
            client.delete(*keys[start : start + 1000])


def one_run(
    client: redis.Redis, run_no: int, duration_s: float, max_ids: int, epoch_s: int
) -> dict[str, Rate]:
    now_s = snowflake.seconds_since_epoch(time.time(), epoch_s)
    region = REGION_BASE + run_no * 8
    regions: list[int] = []
    rates: dict[str, Rate] = {}

    incr_key = f"{cache.SNOWFLAKE_KEY_PREFIX}:bench-incr"
    rates["raw INCR"] = timed(
        lambda i: bool(client.incr(incr_key)), duration_s, max_ids, client, ("incr", "incrby")
    )

    for depth_s in (0, *DEPTHS_S):
        region += 1
        regions.append(region)
        limit = min(max_ids, MAX_KEYS // (depth_s + 1))
        blocks = limit // snowflake.SEQUENCE_SIZE + 1
        currents = _lay_out(client, region, now_s, depth_s, blocks, epoch_s)
        claimer = cache.IdClaimer(client, region, epoch_s)
        claimer.load()

        def claim(i: int, c: cache.IdClaimer = claimer, cur: list[int] = currents) -> bool:
            c.claim(cur[i // snowflake.SEQUENCE_SIZE])
            return True

        rates[_case(depth_s)] = timed(claim, duration_s, limit, client, ("evalsha",))
        if depth_s == 0:
            continue
        region += 1
        regions.append(region)
        currents = _lay_out(client, region, now_s, depth_s, blocks, epoch_s)

        def old(i: int, r: int = region, cur: list[int] = currents) -> bool:
            old_lookback_claim(client, r, cur[i // snowflake.SEQUENCE_SIZE], epoch_s)
            return True

        rates[_case(depth_s, old=True)] = timed(
            old, duration_s, limit, client, ("incr", "incrby", "expire")
        )
    _cleanup(client, regions)
    client.delete(incr_key)
    return rates


def _profile(client: redis.Redis, epoch_s: int, say: Callable[[str], None]) -> None:
    """py-spy on this very process while it claims ids (normal case) for 2 seconds."""
    from bench import profile

    now_s = snowflake.seconds_since_epoch(time.time(), epoch_s)
    region = REGION_BASE + 999
    claimer = cache.IdClaimer(client, region, epoch_s)
    claimer.load()
    spy = profile.attach(os.getpid(), 2.0, "ids")
    time.sleep(0.3)  # py-spy attaching
    timed(lambda i: bool(claimer.claim(now_s + i // snowflake.SEQUENCE_SIZE)), 2.0)
    spy.wait()
    _cleanup(client, [region])
    say(profile.finish("ids", "ids (claims, normal case, in this process)"))


def _case(depth_s: int, old: bool = False) -> str:
    if depth_s == 0:
        return "claim, normal"
    return f"{'old look-back' if old else 'claim'}, {depth_s} s back"


def run(
    srv: Servers,
    report: Report,
    runs: int,
    duration_s: float,
    say: Callable[[str], None],
    profile: bool = False,
) -> None:
    from config.settings import get_settings

    epoch_s = get_settings().snowflake_epoch_s
    client = counting_client(srv.redis_url)
    client.ping()
    results: list[dict[str, Rate]] = []
    for run_no in range(runs):
        rates = one_run(client, run_no, duration_s, MAX_IDS, epoch_s)
        results.append(rates)
        say(
            f"  ids run {run_no + 1}/{runs}: "
            + "; ".join(
                f"{name} {r.per_s:,.0f}/s ({r.round_trips_per_id:.2f} rt/id)"
                for name, r in rates.items()
            )
        )
    if profile:
        _profile(client, epoch_s, say)
    client.close()

    def per_s(name: str) -> Sample:
        return Sample([r[name].per_s for r in results])

    def server_us(name: str) -> Sample:
        return Sample([r[name].server_us_per_id for r in results])

    def trips(name: str) -> Sample:
        return Sample([r[name].round_trips_per_id for r in results])

    report.setup["ids"] = (
        f"one client, one connection, {duration_s:g} s per case and run; 'N s back': the "
        "current second and those before it full, the one N seconds back free"
    )
    report.add(Figure("ids", "claims/s, normal", "ids/s", per_s("claim, normal"),
                      "raw INCR", per_s("raw INCR"), goal=0.8))  # fmt: skip
    report.add(Figure("ids", "round trips per id, normal", "round trips",
                      trips("claim, normal"), "raw INCR", trips("raw INCR"),
                      better="lower", goal_abs=1.0))  # fmt: skip
    report.add(Figure("ids", "Redis time per id, normal", "µs",
                      server_us("claim, normal"), "raw INCR", server_us("raw INCR"),
                      better="lower",
                      note="from INFO commandstats: the claim script's own time in Redis, "
                      "inner commands included"))  # fmt: skip
    for depth_s in DEPTHS_S:
        case, old = _case(depth_s), _case(depth_s, old=True)
        label = f"current second used up, {depth_s} s back"
        report.add(Figure("ids", f"claims/s, {label}", "ids/s", per_s(case), "raw INCR",
                          per_s("raw INCR"), goal=0.8 if depth_s == 1 else None))  # fmt: skip
        report.add(Figure("ids", f"claims/s, {label}", "ids/s", per_s(case),
                          "look-back, 1 INCR per second", per_s(old)))  # fmt: skip
        report.add(Figure("ids", f"round trips per id, {label}", "round trips", trips(case),
                          "look-back, 1 INCR per second", trips(old), better="lower",
                          goal_abs=1.0))  # fmt: skip
