"""The chaos run: real processes under faults prove that nothing accepted is lost or duplicated.

    python -m tests.chaos            # short: a few hundred deliveries (also in `make test`)
    python -m tests.chaos --long     # `make chaos`: 5,000 deliveries
    python -m tests.chaos --long --broker amqp   # `make chaos BROKER=amqp`: on RabbitMQ
    python -m tests.chaos --long --cloud         # the second Jira a Jira Cloud site

It starts embedded PostgreSQL and Redis, a receiver (uvicorn, two worker processes), two
Celery workers (prefork, 2 children each) and beat, then posts real-shaped Jira webhooks (10%
of them a second copy of another, each issue's events shuffled) while, at random moments, it
SIGKILLs a worker (the main process with its children, or one pool child) and restarts it,
restarts Redis once without its data (with `--broker amqp`: RabbitMQ once, in place of Redis)
and PostgreSQL once; the long run also links a second Jira that every change is pushed to
(forward sync) and takes it down for JIRA_DOWN_S (503 to every call; with `--cloud` it is a
Jira Cloud site, linked by API token, answering 429 with Retry-After: 2), then checks that nothing
failed, that the pushes held up by the outage finished within one backoff and the broker's
bound after it ended, and that the second Jira ends with every issue's last assignee.
10% of the events are never posted
(the webhooks Jira dropped) but exist in a fake Jira, which holds every issue as its last
event left it. Once quiet, one reconciliation sweep (`jira-sync reconcile run`) reads that
Jira, then the run waits for quiet again and checks: every 202 ends `done` or in the
failed-task store; no delivery is applied twice; each group ends as the last of all its
events (dropped ones included) left its Jira issue, and as the sequential oracle of
tests/integration/test_shuffle.py says over the accepted deliveries in Jira timestamp order
followed by the sweep's; the sweep fed no issue whose last event was delivered; no 202 was
answered while PostgreSQL was down.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import json
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis as redis_lib
from kombu import Connection

from config.celery import QUEUE_INBOUND, QUEUE_MAINTENANCE, QUEUE_SIDE_EFFECTS
from config.settings import default_broker_url, load_settings
from devtools import rabbitmq as amqp
from devtools.embedded import EmbeddedPostgres, EmbeddedRedis, free_port
from tests.conftest import ROOT, WorkerProcess, launch_worker
from tests.fakecloud import FakeCloud
from tests.fakejira import FakeJira, FakeJiraServer
from tests.integration.inbound_support import (
    ANN,
    BOB,
    CY,
    JIRA,
    JIRA_USERS,
    PROJECT,
    assignee_item,
    base_scene,
    integration,
    jira_payload,
)
from tests.integration.status_support import status_item
from tests.integration.test_shuffle import Oracle
from worker.domain import tokens
from worker.domain.model import ActivityType, HistoryStatus, SubscriptionReason
from worker.jira.linking import WEBHOOK_PREFIX
from worker.runtime.broker import queue_depths
from worker.runtime.resources import Resources, open_resources
from worker.services.failures import SPOOL_KEY
from worker.services.loader import load_scene
from worker.store.db import migrate, transaction

CHOICES = (ANN, BOB, CY, None)
BASE_TS = 1_764_000_000_000
FIRST_GROUP = 2000
# Longer than the receiver's database pool timeout (5 s), so requests are answered meanwhile.
PG_DOWN_S = 8.0
# As the Procfile runs the receiver: httptools with a bound on the request head.
HTTP_PROTOCOL = "worker.receiver.limits:LimitedHttpToolsProtocol"
# An answer this long after the stop cannot be for a row committed before it.
COMMIT_SLACK_S = 0.5
REDIS_DOWN_S = 1.0
OTHER_JIRA, OTHER_KEY = 2, "OPS"
# The fake Jira's statuses (tests/fakejira.py): Open, In Progress, Reopened; Resolved and
# Closed are done. Every issue starts Open; this share of the changes also moves its status.
STATUS_IDS, DONE_STATUSES, INITIAL_STATUS = ("1", "3", "4", "5", "6"), {"5", "6"}, "1"
STATUS_RATIO = 0.3
# The final sweep reads this many issues a page, so issues are edited while it pages.
FINAL_SWEEP_PAGE_SIZE = 10
EDIT_INDEX = 1_000_000  # the Editor's events' indexes start here
# Changed groups whose side effects (outbound pushes last) have not finished.
ASSIGNEE_ACTIVITY = [int(ActivityType.ASSIGNED), int(ActivityType.UNASSIGNED)]
ASSIGNEE_HISTORY = [int(HistoryStatus.ASSIGNED), int(HistoryStatus.UNASSIGNED)]
PENDING_EFFECTS = (
    "SELECT {what} FROM delivery_effect"
    " WHERE side_effects_done_at IS NULL AND outcome IN ('assigned', 'unassigned')"
)
# Time for the held-up pushes themselves once Jira answers again.
PUSH_SLACK_S = 10.0
PIPELINE_QUEUES = (QUEUE_INBOUND, QUEUE_SIDE_EFFECTS)


@dataclass(frozen=True)
class Plan:
    """How big a run is and how many faults it injects."""

    posts: int
    issues: int
    load_s: float
    worker_kills: int
    quiet_timeout_s: float
    senders: int = 8
    duplicate_ratio: float = 0.10
    drop_ratio: float = 0.10  # events never posted: only reconciliation can bring them
    jira_down_s: float = 0.0  # > 0: a second, forward-synced Jira, down this long once
    # The second Jira is a Jira Cloud site (API token, account ids, v3) whose outage is a 429
    # storm (Retry-After: 2) instead of 503s.
    cloud: bool = False
    jira_clock_offset_s: float = 0.0  # the sending Jira's clock, ahead of ours (< 0: behind)
    edits_during_sweep: bool = False  # issues changed in Jira (webhook sent) as the sweep pages
    # Longer than any outage of the plan, so that no routine fault needs an operator; it
    # also sets how long lost side effects wait for beat (the visibility timeout plus the
    # retries' longest window), which the quiet timeout must exceed.
    retry_budget_s: float = 20.0


SHORT = Plan(posts=300, issues=20, load_s=40, worker_kills=2, quiet_timeout_s=150)
LONG = Plan(
    posts=5000, issues=100, load_s=150, worker_kills=6, quiet_timeout_s=480, jira_down_s=60,
    jira_clock_offset_s=-180, edits_during_sweep=True, retry_budget_s=90,
)  # fmt: skip

# Short timings so that recovery is bounded in seconds, as in the integration tests.
PROCESS_ENV = {
    "LOG_LEVEL": "INFO",
    "BROKER_VISIBILITY_TIMEOUT_S": "20",
    "RETRY_BACKOFF_MAX_S": "2",
    "JIRA_TIMEOUT_S": "3",
}


@dataclass(frozen=True)
class Event:
    """One Jira change of one issue: the oracle's unit."""

    index: int
    group_id: int
    key: str
    ts: int
    changelog_id: int
    assignee: int | None
    status_from: str | None = None  # the event also moves the issue's status (None: not)
    status_to: str | None = None

    def body(self) -> dict[str, Any]:
        """Its webhook body: the assignee item, and the status item when it has one."""
        name = JIRA_USERS[self.assignee]["name"] if self.assignee else None
        items = [assignee_item(name)]
        if self.status_to is not None:
            items.append(status_item(self.status_from, self.status_to))
        return jira_payload(self.assignee, self.ts, self.changelog_id, key=self.key, items=items)


@dataclass
class Answer:
    event: int
    started: float
    ended: float
    status: int  # 0: no answer (connection refused or reset)
    delivery_id: int | None


@dataclass
class Report:
    sent: int = 0
    dropped: int = 0  # events never posted
    off_before_sweep: int = 0  # groups not as Jira holds their issue, before the sweep
    reconciled: int = 0  # deliveries the sweep fed
    needless_reconciles: int = 0  # fed for an issue whose last event was delivered
    accepted: int = 0
    refused: int = 0
    duplicate_answers: int = 0
    done: int = 0
    failed: int = 0  # recorded in the failed-task store, then replayed by the operator
    still_failed: int = 0
    lost: int = 0
    duplicated: int = 0
    oracle_mismatches: int = 0
    status_mismatches: int = 0  # groups whose status is not as Jira's last status move left it
    edits: int = 0  # issues edited in Jira while the final sweep paged
    accepted_while_db_down: int = 0
    answered_while_db_down: Counter[int] = field(default_factory=Counter)
    failed_tasks: int = 0  # failed-task records before the operator's replay
    pushes_behind: int = 0  # issues of the second Jira not left with their last assignee
    push_backlog_s: float | None = None  # after the second Jira came back
    push_backlog_bound_s: float | None = None
    notes: list[str] = field(default_factory=list)  # said, not failed on
    faults: list[str] = field(default_factory=list)
    quiet_after_last_fault_s: float | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            self.lost == 0
            and self.duplicated == 0
            and self.oracle_mismatches == 0
            and self.status_mismatches == 0
            and self.needless_reconciles == 0
            and self.accepted_while_db_down == 0
            and self.quiet_after_last_fault_s is not None
            and self.pushes_behind == 0
            and (
                self.push_backlog_s is None
                or self.push_backlog_bound_s is None
                or self.push_backlog_s <= self.push_backlog_bound_s
            )
        )

    def table(self) -> str:
        quiet = self.quiet_after_last_fault_s
        rows = [
            ("deliveries sent", self.sent),
            ("events never posted (dropped webhooks)", self.dropped),
            ("groups not as Jira holds their issue, before the sweep", self.off_before_sweep),
            ("deliveries fed by the reconciliation sweep", self.reconciled),
            ("fed for an issue whose last event was delivered", self.needless_reconciles),
            ("accepted (202)", self.accepted),
            ("refused (503 / no answer)", self.refused),
            ("duplicate (200)", self.duplicate_answers),
            ("done", self.done),
            ("failed (recorded, then replayed)", self.failed),
            ("failed-task records (before the replay)", self.failed_tasks),
            ("second Jira's issues not left with their last assignee", self.pushes_behind),
            (
                "side effects pending when the Jira outage ended, done after",
                "-"
                if self.push_backlog_s is None
                else f"{self.push_backlog_s:.1f} s (bound {self.push_backlog_bound_s:.0f} s)"
                if self.push_backlog_bound_s is not None
                else f"{self.push_backlog_s:.1f} s (Redis lost its data meanwhile: not bounded)",
            ),
            ("failed after the replay", self.still_failed),
            ("lost", self.lost),
            ("duplicated", self.duplicated),
            ("groups differing from the oracle (after the sweep)", self.oracle_mismatches),
            ("groups whose status is not Jira's (after the sweep)", self.status_mismatches),
            ("issues edited in Jira while the final sweep paged", self.edits),
            ("202 answered while PostgreSQL was down", self.accepted_while_db_down),
            (
                "answers while PostgreSQL was down",
                ", ".join(f"{s}: {n}" for s, n in sorted(self.answered_while_db_down.items()))
                or "-",
            ),
            ("faults injected", f"{len(self.faults)} ({', '.join(self.fault_counts())})"),
            ("time to quiet after the last fault", f"{quiet:.1f} s" if quiet else "never"),
        ]
        width = max(len(name) for name, _ in rows)
        lines = [f"| {'measure':<{width}} | value |", f"|{'-' * (width + 2)}|-------|"]
        lines += [f"| {name:<{width}} | {value} |" for name, value in rows]
        return "\n".join(lines)

    def fault_counts(self) -> list[str]:
        return [f"{n} {kind}" for kind, n in Counter(self.faults).items()]


# -- the scene and the load ------------------------------------------------------------------


def make_events(plan: Plan, rng: random.Random) -> list[Event]:
    """Each issue's changes in Jira order; STATUS_RATIO of them also move its status."""
    distinct = round(plan.posts * (1 - plan.duplicate_ratio))
    events = []
    status = dict.fromkeys(range(plan.issues), INITIAL_STATUS)
    for i in range(distinct):
        issue, n = i % plan.issues, i // plan.issues
        # Pairs share a timestamp: the changelog id breaks the tie, as in Jira.
        ts = BASE_TS + issue * 10_000_000 + (n // 2) * 1000
        moved_from = moved_to = None
        if rng.random() < STATUS_RATIO:
            moved_from = status[issue]
            moved_to = status[issue] = rng.choice([s for s in STATUS_IDS if s != moved_from])
        events.append(
            Event(
                i, FIRST_GROUP + issue, f"CHS-{issue}", ts, 1_000_000 + i, rng.choice(CHOICES),
                moved_from, moved_to,
            )
        )  # fmt: skip
    return events


def last_resolution_moves(events: list[Event]) -> dict[str, Event]:
    """Per issue, its last change that moved its status into or out of done."""
    found: dict[str, Event] = {}
    for event in sorted(events, key=lambda e: (e.ts, e.changelog_id)):
        if event.status_to is None:
            continue
        was_done = (event.status_from or INITIAL_STATUS) in DONE_STATUSES
        if (event.status_to in DONE_STATUSES) != was_done:
            found[event.key] = event
    return found


def last_statuses(events: list[Event]) -> dict[str, str]:
    """Per issue, its status in Jira as its last status move left it."""
    found: dict[str, str] = {}
    for event in sorted(events, key=lambda e: (e.ts, e.changelog_id)):
        if event.status_to is not None:
            found[event.key] = event.status_to
    return found


def make_posts(plan: Plan, events: list[Event], rng: random.Random) -> list[Event]:
    """Every event once, 10% of the posts a second copy, in random order; then the events
    Jira drops (`drop_ratio` of them) are left out, copies included."""
    posts = events + rng.sample(events, plan.posts - len(events))
    rng.shuffle(posts)
    dropped = {e.index for e in rng.sample(events, round(len(events) * plan.drop_ratio))}
    return [e for e in posts if e.index not in dropped]


def last_events(events: list[Event]) -> dict[str, Event]:
    """Per issue, the event that left it as Jira holds it now."""
    last: dict[str, Event] = {}
    for event in sorted(events, key=lambda e: (e.ts, e.changelog_id)):
        last[event.key] = event
    return last


def fake_jira_with(events: list[Event]) -> FakeJiraServer:
    """A Jira holding every issue as its last event left it, dropped events included."""
    server = FakeJiraServer(FakeJira()).start()
    server.fake.add_consumer()
    for uid in (ANN, BOB, CY):
        u = JIRA_USERS[uid]
        server.fake.add_user(u["name"], u["emailAddress"], u["displayName"])
    for key, event in last_events(events).items():
        name = JIRA_USERS[event.assignee]["name"] if event.assignee else None
        server.fake.set_issue(key, name, event.ts)
        server.fake.issue_statuses[key] = INITIAL_STATUS
    server.fake.issue_statuses.update(last_statuses(events))
    return server


def reconcile_once(services: Services) -> None:
    """One sweep over every event's time, as `jira-sync reconcile run --since` does it, a few
    issues a page (issues edited while it pages: `Editor`)."""
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(BASE_TS // 1000 - 60))
    env = {**services.env, "RECONCILE_PAGE_SIZE": str(FINAL_SWEEP_PAGE_SIZE)}
    out = subprocess.run(
        [sys.executable, "-m", "worker.cli", "reconcile", "run", "--since", since],
        cwd=ROOT, env=env, capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip
    if out.returncode != 0:
        raise RuntimeError(f"reconcile run exited {out.returncode}: {out.stderr[-2000:]}")


@dataclass
class Editor:
    """Someone editing issues in Jira while the final sweep pages: before each search but the
    first, one issue not edited yet gets a new assignee (and maybe status) at Jira's now, and
    its webhook is delivered. Its events join the oracle's; its answers the run's."""

    url: str
    rng: random.Random
    keys: list[str]
    events: list[Event] = field(default_factory=list)
    answers: list[Answer] = field(default_factory=list)
    searches: int = 0

    def __call__(self, fake: FakeJira) -> None:
        self.searches += 1
        if self.searches < 2 or len(self.events) >= len(self.keys):
            return
        key = self.keys[len(self.events)]
        status_from = fake.issue_statuses.get(key, INITIAL_STATUS)
        status_to = self.rng.choice([s for s in STATUS_IDS if s != status_from])
        event = Event(
            EDIT_INDEX + len(self.events), FIRST_GROUP + int(key.split("-")[1]), key,
            fake.now_ms(), 9_000_000 + len(self.events), self.rng.choice(CHOICES),
            status_from, status_to,
        )  # fmt: skip
        name = JIRA_USERS[event.assignee]["name"] if event.assignee else None
        fake.set_issue(key, name, event.ts)
        fake.set_status(key, status_to, event.ts)
        started = time.monotonic()
        response = httpx.post(self.url, json=event.body(), timeout=10)
        delivery = response.json().get("delivery") if response.status_code == 202 else None
        self.events.append(event)
        self.answers.append(
            Answer(event.index, started, time.monotonic(), response.status_code,
                   int(delivery) if delivery else None)
        )  # fmt: skip


def cloud_account(name: str) -> str:
    """The account id of a JIRA_USERS user on the Cloud site."""
    return f"acc-{name}"


def fake_cloud() -> FakeJiraServer:
    """The second Jira as a Cloud site: an administrator's API token, the users as accounts
    whose e-mails it shows (outbound finds them by e-mail)."""
    server = FakeJiraServer(FakeCloud()).start()
    assert isinstance(server.fake, FakeCloud)
    server.fake.add_api_token()
    for uid in (ANN, BOB, CY):
        u = JIRA_USERS[uid]
        server.fake.add_account(cloud_account(u["name"]), u["emailAddress"], u["displayName"])
    return server


def scene(plan: Plan, other: FakeJira | None) -> dict[str, Any]:
    """The groups, each linked to its issue on the Jira that sends; with `other`, also to an
    issue of that second Jira, to which every change is pushed (forward sync)."""
    data = base_scene()
    data["integrations"][0]["organizations"][0]["sync_status_reverse"] = True
    data["groups"] = [{"id": FIRST_GROUP + i, "project": PROJECT} for i in range(plan.issues)]
    data["external_issues"] = [
        {"id": 500 + i, "integration": JIRA, "organization": "acme", "key": f"CHS-{i}",
         "groups": [FIRST_GROUP + i]}
        for i in range(plan.issues)
    ]  # fmt: skip
    if other is not None:
        linked = integration(
            OTHER_JIRA, "ops.acme.test",
            [{"organization": "acme", "sync_reverse_assignment": True,
              "sync_forward_assignment": True}],
            base_url=other.base_url,
        )  # fmt: skip
        if isinstance(other, FakeCloud):
            linked = other.linked(linked)
        else:
            linked["access_token"], linked["access_token_secret"] = other.grant_access_token()
        data["integrations"].append(linked)
        data["external_issues"] += [
            {"id": 5000 + i, "integration": OTHER_JIRA, "organization": "acme",
             "key": f"{OTHER_KEY}-{i}", "groups": [FIRST_GROUP + i]}
            for i in range(plan.issues)
        ]  # fmt: skip
    return data


# -- the processes ---------------------------------------------------------------------------


class Services:
    """Embedded servers, the receiver, two workers and beat, all under one state folder."""

    def __init__(self, state: Path, plan: Plan, broker_url: str | None = None) -> None:
        self.state = state
        self.plan = plan
        self.broker_url = broker_url  # RabbitMQ; None: Redis, beside the cache
        self.pg = EmbeddedPostgres(state / "pg")
        self.redis = EmbeddedRedis(state / "redis")
        self.port = free_port()
        self.env: dict[str, str] = {}
        self.workers: list[WorkerProcess] = []
        self.others: list[subprocess.Popen[bytes]] = []
        self._logs = 0

    def start(self) -> None:
        self.pg.start()
        self.redis.start()
        self.env = {
            **os.environ,
            **PROCESS_ENV,
            "RETRY_BUDGET_S": str(self.plan.retry_budget_s),
            "DATABASE_URL": self.pg.url,
            "REDIS_URL": self.redis.url,
            "BROKER_URL": self.broker_url or default_broker_url(self.redis.url),
            "SECRET_KEY": "chaos-" + secrets.token_hex(16),
            "PUBLIC_URL": f"http://127.0.0.1:{self.port}",
        }
        migrate(self.pg.url)
        self.spawn_receiver()
        self.spawn_beat()
        self.workers = [self.spawn_worker(), self.spawn_worker()]

    def resources(self) -> Resources:
        return open_resources(load_settings(self.env))

    def _log(self, name: str) -> Path:
        self._logs += 1
        return self.state / f"{self._logs:02d}-{name}.log"

    def _popen(self, name: str, cmd: list[str]) -> subprocess.Popen[bytes]:
        with self._log(name).open("wb") as out:
            proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=out, stderr=out)
        self.others.append(proc)
        return proc

    def spawn_receiver(self) -> None:
        self._popen(
            "receiver",
            [sys.executable, "-m", "uvicorn", "worker.receiver.app:app", "--host", "127.0.0.1",
             "--port", str(self.port), "--loop", "uvloop", "--http", HTTP_PROTOCOL,
             "--workers", "2", "--no-access-log"],
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the receiver did not become ready")
            time.sleep(0.2)

    def spawn_beat(self) -> None:
        schedule = str(self.state / "beat-schedule")
        self._popen(
            "beat",
            [sys.executable, "-m", "celery", "-A", "worker.runtime.app", "beat", "-s", schedule],
        )

    def spawn_worker(self) -> WorkerProcess:
        return launch_worker(self.env, self._log("worker"))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()
        for proc in self.others:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.others:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.redis.stop()
        self.pg.stop("immediate")


# -- faults ----------------------------------------------------------------------------------


@dataclass
class Faults:
    """Injects the plan's faults at random moments of the load, one at a time."""

    services: Services
    plan: Plan
    rng: random.Random
    other_jira: FakeJira | None = None
    injected: list[str] = field(default_factory=list)
    db_down: tuple[float, float] | None = None
    jira_up_at: float | None = None  # wall-clock time the second Jira came back
    broker_lost_at: float | None = None  # wall-clock time Redis came back without its data
    held_up: list[tuple[int, int]] = field(default_factory=list)  # side effects pending then
    last_fault_at: float = 0.0
    errors: list[str] = field(default_factory=list)

    def schedule(self) -> list[tuple[float, str]]:
        broker = "rabbitmq" if self.services.broker_url else "redis"
        kinds = [broker, "postgres"] + ["worker"] * self.plan.worker_kills
        kinds += ["jira"] if self.other_jira is not None else []
        self.rng.shuffle(kinds)
        # Spread over the middle of the load, at least a few seconds apart.
        slots = len(kinds)
        span = self.plan.load_s * 0.8
        return [
            (self.plan.load_s * 0.1 + span * (i + self.rng.uniform(0.1, 0.6)) / slots, kind)
            for i, kind in enumerate(kinds)
        ]

    def run(self, started: float, stop: threading.Event) -> None:
        for at, kind in self.schedule():
            if stop.wait(max(0.0, started + at - time.monotonic())):
                return
            try:
                getattr(self, f"_{kind}")()
            except Exception as exc:  # the report says so; the run goes on
                self.errors.append(f"{kind}: {type(exc).__name__}: {exc}")
            self.last_fault_at = time.monotonic()

    def _worker(self) -> None:
        index = self.rng.randrange(len(self.services.workers))
        victim = self.services.workers[index]
        children = victim.children()
        if children and self.rng.random() < 0.5:
            os.kill(self.rng.choice(children), signal.SIGKILL)  # the main process replaces it
            self.injected.append("pool child killed")
            return
        victim.kill()
        self.injected.append("worker killed")
        self.services.workers[index] = self.services.spawn_worker()

    def _redis(self) -> None:
        self.services.redis.stop()
        time.sleep(REDIS_DOWN_S)
        self.services.redis.start()  # empty: the broker's queues and unacked messages are gone
        self.broker_lost_at = time.time()
        self.injected.append("Redis restarted without data")

    def _rabbitmq(self) -> None:
        subprocess.run(["rabbitmqctl", "-q", "stop_app"], check=True, timeout=120)
        time.sleep(REDIS_DOWN_S)
        subprocess.run(["rabbitmqctl", "-q", "start_app"], check=True, timeout=120)
        self.injected.append("RabbitMQ restarted")

    def _jira(self) -> None:
        assert self.other_jira is not None
        if isinstance(self.other_jira, FakeCloud):
            self.other_jira.throttle(self.plan.jira_down_s, retry_after_s=2)
            time.sleep(self.plan.jira_down_s)
        else:
            self.other_jira.fail_status = 503
            time.sleep(self.plan.jira_down_s)
            self.other_jira.fail_status = None
        self.jira_up_at = time.time()
        res = self.services.resources()
        try:
            with transaction(res.pool) as conn:
                self.held_up = [
                    (int(r["delivery_id"]), int(r["group_id"]))
                    for r in conn.execute(PENDING_EFFECTS.format(what="delivery_id, group_id"))
                ]
        finally:
            res.close()
        what = "429 storm on the Cloud site" if self.plan.cloud else "second Jira down"
        self.injected.append(f"{what} {self.plan.jira_down_s:g} s")

    def _postgres(self) -> None:
        self.services.pg.stop("immediate")
        down_from = time.monotonic()
        time.sleep(PG_DOWN_S)
        down_until = time.monotonic()
        self.services.pg.start()
        self.db_down = (down_from, down_until)
        self.injected.append("PostgreSQL restarted")


# -- the load --------------------------------------------------------------------------------


def post_all(services: Services, plan: Plan, posts: list[Event], url: str) -> list[Answer]:
    interval = plan.load_s / len(posts)
    started = time.monotonic()
    local = threading.local()

    def send(n: int, event: Event) -> Answer:
        time.sleep(max(0.0, started + n * interval - time.monotonic()))
        if not hasattr(local, "client"):
            local.client = httpx.Client(timeout=10)
        body = event.body()
        t0 = time.monotonic()
        try:
            response = local.client.post(url, json=body)
        except httpx.HTTPError:
            return Answer(event.index, t0, time.monotonic(), 0, None)
        t1 = time.monotonic()
        delivery = response.json().get("delivery") if response.status_code == 202 else None
        return Answer(
            event.index, t0, t1, response.status_code, int(delivery) if delivery else None
        )

    with concurrent.futures.ThreadPoolExecutor(plan.senders) as pool:
        return list(pool.map(send, range(len(posts)), posts))


# -- quiet and the checks --------------------------------------------------------------------


def _pending_messages(broker_url: str) -> int:
    waiting = sum(queue_depths(Connection(broker_url), PIPELINE_QUEUES).values())
    if amqp.is_amqp(broker_url):
        return waiting  # RabbitMQ redelivers what a dead worker held; unfinished rows show it
    broker = redis_lib.Redis.from_url(broker_url, socket_timeout=5)
    try:
        held = broker.hvals("unacked")
    finally:
        broker.close()
    unacked = 0
    for raw in held:
        try:
            routing_key = json.loads(raw)[2]
        except (ValueError, IndexError, TypeError):
            routing_key = None
        unacked += routing_key != QUEUE_MAINTENANCE
    return waiting + unacked


def unfinished(res: Resources, accepted: list[int]) -> int:
    with transaction(res.pool) as conn:
        row = conn.execute(
            "SELECT count(*) AS n FROM webhook_delivery"
            " WHERE id = ANY(%s) AND status NOT IN ('done', 'failed')",
            (accepted,),
        ).fetchone()
    assert row is not None
    return int(row["n"])


def pending_side_effects(res: Resources) -> int:
    """Changes whose side effects have not finished, but for those in the failed-task store
    (the operator's to replay)."""
    with transaction(res.pool) as conn:
        row = conn.execute(
            PENDING_EFFECTS.format(what="count(*) AS n")
            + " AND NOT EXISTS (SELECT 1 FROM failed_task f WHERE f.status = 'failed'"
            " AND f.delivery_id = delivery_effect.delivery_id)"
        ).fetchone()
    return int(row["n"]) if row else 0


def wait_for_quiet(res: Resources, accepted: list[int], timeout_s: float) -> bool:
    """Every accepted delivery finished, no pipeline message waiting, the failure spool empty,
    for a few seconds in a row."""
    deadline, quiet_since = time.monotonic() + timeout_s, None
    while time.monotonic() < deadline:
        try:
            busy = (
                unfinished(res, accepted)
                + _pending_messages(res.settings.broker_url)
                + int(res.redis.llen(SPOOL_KEY))
                + pending_side_effects(res)
            )
        except Exception:
            busy = 1  # a server is still coming back
        if busy:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since >= 3:
            return True
        time.sleep(0.5)
    return False


def replay_failed(services: Services) -> None:
    """What an operator does after an outage: replay every failed step."""
    out = subprocess.run(
        [sys.executable, "-m", "worker.cli", "failed", "replay", "--all"],
        cwd=ROOT, env=services.env, capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    if out.returncode != 0:
        raise RuntimeError(f"failed replay --all exited {out.returncode}: {out.stderr[-2000:]}")


def check(
    res: Resources,
    report: Report,
    events: list[Event],
    answers: list[Answer],
    db_down: tuple[float, float] | None,
    swept: list[Event],
) -> None:
    """`events` and `answers` include the edits made while the final sweep paged; `swept` are
    the events before it (what the sweep could find)."""
    delivery_of: dict[int, set[int]] = {}
    for a in answers:
        if a.status == 202 and a.delivery_id is not None:
            delivery_of.setdefault(a.event, set()).add(a.delivery_id)
        if db_down and db_down[0] + COMMIT_SLACK_S <= a.ended <= db_down[1]:
            report.answered_while_db_down[a.status] += 1
            report.accepted_while_db_down += a.status == 202
    # The same event accepted twice is a duplicate delivery.
    report.duplicated += sum(len(ids) - 1 for ids in delivery_of.values())
    accepted = sorted(i for ids in delivery_of.values() for i in ids)
    with transaction(res.pool) as conn:
        rows = {
            r["id"]: r
            for r in conn.execute(
                "SELECT d.id, d.status, d.outcome, f.id AS failed_id FROM webhook_delivery d"
                " LEFT JOIN failed_task f ON f.id = d.failed_task_id WHERE d.id = ANY(%s)",
                (accepted,),
            )
        }
        repeated = conn.execute(
            "SELECT count(*) AS n FROM (SELECT delivery_id, group_id, type FROM activity"
            " GROUP BY 1, 2, 3 HAVING count(*) > 1) x"
        ).fetchone()
    report.duplicated += int(repeated["n"]) if repeated else 0
    for delivery_id in accepted:
        row = rows.get(delivery_id)
        if row is None or not (
            row["status"] == "done" or (row["status"] == "failed" and row["failed_id"])
        ):
            report.lost += 1
            report.problems.append(f"delivery {delivery_id} lost: {row and row['status']}")
        else:
            report.done += row["status"] == "done"
            report.still_failed += row["status"] == "failed"
    fed = reconcile_outcomes(res)
    report.reconciled = len(fed)
    before_sweep = last_events(swept)
    # Needless: the issue's last change was delivered, and so was its last move into or out
    # of done (what a status feed would bring).
    moves = last_resolution_moves(swept)
    report.needless_reconciles = sum(
        before_sweep[key].index in delivery_of
        and (key not in moves or moves[key].index in delivery_of)
        for key in fed
    )
    last = last_events(events)
    statuses = last_statuses(events)
    for key, event in sorted(last.items()):
        wanted = "resolved" if statuses.get(key, INITIAL_STATUS) in DONE_STATUSES else "unresolved"
        actual = group_state(res, event.group_id)["status"]
        if actual != wanted:
            report.status_mismatches += 1
            report.problems.append(f"group {event.group_id} ({key}): {actual} != {wanted}")
    by_group: dict[int, list[Event]] = {}
    for event in events:
        if event.index in delivery_of:
            by_group.setdefault(event.group_id, []).append(event)
    for key, event in sorted(last.items()):
        in_order = sorted(by_group.get(event.group_id, []), key=lambda e: (e.ts, e.changelog_id))
        oracle = Oracle()
        # The sweep's delivery (Jira's state before any edit made while it paged) comes after
        # every event it could read and before those edits.
        swept_fed = fed.get(key, "stale") != "stale"
        for accepted_event in in_order:
            if accepted_event.index >= EDIT_INDEX and swept_fed:
                oracle.apply(before_sweep[key].assignee)
                swept_fed = False
            (delivery_id,) = sorted(delivery_of[accepted_event.index])[:1]
            if rows.get(delivery_id, {}).get("outcome") != "stale":
                oracle.apply(accepted_event.assignee)
        if swept_fed:
            oracle.apply(before_sweep[key].assignee)
        group_id = event.group_id
        state = group_state(res, group_id)
        expected_subs = {f"user:{u}": int(SubscriptionReason.ASSIGNED) for u in oracle.subscribed}
        if (
            state["assignee"] != event.assignee
            or state["assignee"] != oracle.assignee
            or state["subscriptions"] != expected_subs
        ):
            report.oracle_mismatches += 1
            report.problems.append(f"group {group_id}: {state} != oracle {oracle}")
        extra = max(state["activity"], state["history"]) - oracle.activity
        if extra > 0:
            report.duplicated += extra
            report.problems.append(f"group {group_id}: {extra} activity rows too many")
        elif extra < 0:
            report.oracle_mismatches += 1
            report.problems.append(f"group {group_id}: {-extra} activity rows missing")


def check_pushes(
    res: Resources,
    report: Report,
    events: list[Event],
    other: FakeJira,
    up_at: float | None,
    held_up: list[tuple[int, int]],
    broker_lost_at: float | None = None,
    outage_s: float = 0.0,
) -> None:
    """The second Jira holds every issue's last assignee, and the side effects pending when
    the outage ended finished within one backoff plus the broker's bound (a worker killed
    meanwhile) of its end; within beat's stall bound when Redis lost its data after the
    outage began (the parked retries went with it)."""
    for issue, event in last_events(events).items():
        name = JIRA_USERS[event.assignee]["name"] if event.assignee else None
        if name is not None and isinstance(other, FakeCloud):
            name = cloud_account(name)
        key = f"{OTHER_KEY}-{issue.split('-')[1]}"
        if other.assignees.get(key) != name:
            report.pushes_behind += 1
            report.problems.append(f"{key}: {other.assignees.get(key)!r} != {name!r}")
    if up_at is None:
        return
    with transaction(res.pool) as conn:
        row = conn.execute(
            "SELECT extract(epoch FROM max(side_effects_done_at))::float8 AS last"
            " FROM delivery_effect e JOIN unnest(%s::bigint[], %s::bigint[]) AS h(d, g)"
            " ON e.delivery_id = h.d AND e.group_id = h.g",
            ([d for d, _ in held_up], [g for _, g in held_up]),
        ).fetchone()
    settings = res.settings
    report.push_backlog_bound_s = (
        settings.retry_backoff_max_s + settings.broker_visibility_timeout_s + PUSH_SLACK_S
    )
    if broker_lost_at is not None and broker_lost_at >= up_at - outage_s:
        # Redis lost its data while the held-up pushes were parked in it (retries waiting for
        # their countdown; a worker may also exit on the lost connection, kombu's
        # restore_unacked failing): only beat's sweep of stalled side effects sends them again,
        # each once its last retry is older than the stall bound. Not bounded here: every push
        # must still land (pushes_behind).
        report.push_backlog_bound_s = None
        report.notes.append(
            "Redis lost its data after the Jira outage began: the held-up pushes came back "
            "through beat's stalled sweep (not bounded)"
        )
    if row and row["last"] is not None:
        report.push_backlog_s = max(0.0, float(row["last"]) - up_at)


def fed_ids(res: Resources) -> list[int]:
    with transaction(res.pool) as conn:
        rows = conn.execute("SELECT id FROM webhook_delivery WHERE source = 'reconcile'")
        return [int(r["id"]) for r in rows]


def reconcile_outcomes(res: Resources) -> dict[str, str | None]:
    """The sweep's deliveries: issue key -> outcome."""
    with transaction(res.pool) as conn:
        rows = conn.execute(
            "SELECT issue_key, outcome FROM webhook_delivery WHERE source = 'reconcile'"
        ).fetchall()
    return {r["issue_key"]: r["outcome"] for r in rows}


def group_state(res: Resources, group_id: int) -> dict[str, Any]:
    with transaction(res.pool) as conn:
        assignee = conn.execute(
            "SELECT user_id FROM group_assignee WHERE group_id = %s", (group_id,)
        ).fetchone()
        subs = conn.execute(
            "SELECT user_id, reason FROM group_subscription WHERE group_id = %s", (group_id,)
        ).fetchall()
        counts = conn.execute(
            "SELECT (SELECT count(*) FROM activity WHERE group_id = %(g)s"
            "        AND type = ANY(%(activity)s)) AS activity,"
            " (SELECT count(*) FROM group_history WHERE group_id = %(g)s"
            "        AND status = ANY(%(history)s)) AS history,"
            " (SELECT status FROM issue_group WHERE id = %(g)s) AS status",
            {"g": group_id, "activity": ASSIGNEE_ACTIVITY, "history": ASSIGNEE_HISTORY},
        ).fetchone()
    assert counts is not None
    return {
        "assignee": assignee["user_id"] if assignee else None,
        "subscriptions": {f"user:{s['user_id']}": s["reason"] for s in subs},
        "activity": int(counts["activity"]),  # the assignee's (the oracle's)
        "history": int(counts["history"]),
        "status": counts["status"],
    }


# -- the run ---------------------------------------------------------------------------------


@contextmanager
def state_folder(keep: bool) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="jira-sync-chaos-"))
    try:
        yield path
    finally:
        if not keep:
            shutil.rmtree(path, ignore_errors=True)


def run(
    plan: Plan, seed: int | None = None, keep_state: bool = False, broker_url: str | None = None
) -> Report:
    """One chaos run; `broker_url` (RabbitMQ) replaces the Redis broker when given."""
    seed = random.randrange(1 << 30) if seed is None else seed
    rng = random.Random(seed)
    report = Report()
    with state_folder(keep_state) as state:
        services = Services(state, plan, broker_url)
        events = make_events(plan, rng)
        posts = make_posts(plan, events, rng)
        jira = fake_jira_with(events)
        jira.fake.clock_offset_ms = int(plan.jira_clock_offset_s * 1000)
        other = None
        if plan.jira_down_s > 0:
            other = fake_cloud() if plan.cloud else fake_jira_with([])
        try:
            services.start()
            res = services.resources()
            data = scene(plan, other.fake if other else None)
            integration = data["integrations"][0]
            integration["base_url"] = jira.fake.base_url
            integration["access_token"], integration["access_token_secret"] = (
                jira.fake.grant_access_token()
            )
            load_scene(res, data)
            token = tokens.issue(integration["external_id"], integration["webhook_secret"])
            url = f"{services.url}{WEBHOOK_PREFIX}{token}/"
            faults = Faults(services, plan, rng, other.fake if other else None)
            stop = threading.Event()
            started = time.monotonic()
            injector = threading.Thread(target=faults.run, args=(started, stop), daemon=True)
            injector.start()
            answers = post_all(services, plan, posts, url)
            injector.join()
            report.faults = faults.injected
            report.problems += faults.errors
            report.sent = len(answers)
            report.dropped = len(events) - len({e.index for e in posts})
            report.accepted = sum(a.status == 202 for a in answers)
            report.duplicate_answers = sum(a.status == 200 for a in answers)
            report.refused = report.sent - report.accepted - report.duplicate_answers
            accepted = [a.delivery_id for a in answers if a.delivery_id is not None]
            if wait_for_quiet(res, accepted, plan.quiet_timeout_s):
                report.quiet_after_last_fault_s = time.monotonic() - faults.last_fault_at
            with transaction(res.pool) as conn:
                failed_row = conn.execute(
                    "SELECT count(*) AS n FROM webhook_delivery WHERE status = 'failed'"
                ).fetchone()
                tasks_row = conn.execute("SELECT count(*) AS n FROM failed_task").fetchone()
            report.failed_tasks = int(tasks_row["n"]) if tasks_row else 0
            if failed_row and failed_row["n"]:
                report.failed = int(failed_row["n"])
                replay_failed(services)
                wait_for_quiet(res, accepted, plan.quiet_timeout_s)
            report.off_before_sweep = sum(
                group_state(res, e.group_id)["assignee"] != e.assignee
                for e in last_events(events).values()
            )
            swept = events
            if plan.edits_during_sweep:
                editor = Editor(url, rng, sorted(last_events(events))[: plan.issues // 4])
                jira.fake.on_search = editor
            reconcile_once(services)
            jira.fake.on_search = None
            if plan.edits_during_sweep:
                events, answers = events + editor.events, answers + editor.answers
                accepted += [a.delivery_id for a in editor.answers if a.delivery_id is not None]
                report.edits = len(editor.events)
            wait_for_quiet(res, accepted + fed_ids(res), plan.quiet_timeout_s)
            check(res, report, events, answers, faults.db_down, swept)
            if other is not None:
                check_pushes(res, report, events, other.fake, faults.jira_up_at, faults.held_up,
                             faults.broker_lost_at, plan.jira_down_s)  # fmt: skip
            res.close()
        finally:
            services.stop()
            jira.stop()
            if other is not None:
                other.stop()
        print(f"chaos seed={seed} state={state if keep_state else '(removed)'}")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    parser.add_argument("--long", action="store_true", help="5,000 deliveries (make chaos)")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--keep-state", action="store_true", help="keep logs and data")
    parser.add_argument(
        "--broker",
        choices=("redis", "amqp"),
        default="redis",
        help="amqp: RabbitMQ at TEST_AMQP_URL (a vhost of its own) as the Celery broker",
    )
    parser.add_argument(
        "--cloud", action="store_true",
        help="with --long: the second Jira is a Jira Cloud site (a 429 storm for its outage)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    plan = LONG if args.long else SHORT
    if args.cloud:
        if not args.long:
            parser.error("--cloud goes with --long (the short run has no second Jira)")
        plan = dataclasses.replace(plan, cloud=True)
    if args.broker == "redis":
        report = run(plan, args.seed, args.keep_state)
    else:
        with amqp.run_vhost() as broker_url:
            report = run(plan, args.seed, args.keep_state, broker_url)
    print(f"chaos broker: {args.broker}" + (", second Jira: Cloud" if args.cloud else ""))
    print(report.table())
    for note in report.notes:
        print(f"  note: {note}")
    for problem in report.problems[:30]:
        print(f"  problem: {problem}")
    print("chaos: OK" if report.ok else "chaos: FAILED")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
