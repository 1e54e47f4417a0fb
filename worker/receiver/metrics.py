"""The receiver's Prometheus metrics, served at `GET /metrics` in the text format.

Counters and histograms are bumped on the request path (a lock and an addition each, about
a microsecond). With `WEB_CONCURRENCY` above 1 every receiver process writes its values to
files in one folder and a scrape, whichever process answers it, sums them all
(prometheus_client's multiprocess mode); that folder is `PROMETHEUS_MULTIPROC_DIR` when set,
else one per uvicorn supervisor under the temp folder. The figures of the store (deliveries
and failed-task records per status) are read by one short transaction at most every
`STORE_REFRESH_S` per process, never per scrape.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime

from config.settings import receiver_metrics_folder

# Multiprocess mode must be chosen before prometheus_client is first imported.
_FOLDER = receiver_metrics_folder(os.environ)
MULTIPROCESS = _FOLDER is not None
if _FOLDER is not None:
    os.makedirs(_FOLDER, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = _FOLDER

from prometheus_client import (  # noqa: E402
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily  # noqa: E402

from worker import cache  # noqa: E402
from worker.runtime.resources import Resources  # noqa: E402
from worker.store.db import transaction  # noqa: E402
from worker.store.queries import identities as q_identities  # noqa: E402
from worker.store.queries import integrations as q_integrations  # noqa: E402
from worker.store.queries import oauth2 as q_oauth2  # noqa: E402
from worker.store.queries import overview as q  # noqa: E402
from worker.store.queries import reconcile as q_reconcile  # noqa: E402

CONTENT_TYPE = CONTENT_TYPE_LATEST
STORE_REFRESH_S = 10.0

REQUESTS = Counter(
    "jira_sync_receiver_requests",
    "Webhook requests answered, by HTTP status code.",
    ["code"],
)
DELIVERIES = Counter(
    "jira_sync_receiver_deliveries",
    "Webhook deliveries by what the receiver did: accepted (202, stored), duplicate, ignored.",
    ["result"],
)
LATENCY = Histogram(
    "jira_sync_receiver_request_duration_seconds",
    "Time from a webhook request's start to its answer.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
INSERT_BATCH = Histogram(
    "jira_sync_receiver_insert_batch_size",
    "Deliveries stored per group-commit INSERT.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
)
SIGNATURE_REFUSALS = Counter(
    "jira_sync_receiver_signature_refusals",
    "Deliveries with a valid token refused for a missing or wrong body signature, by "
    "integration id.",
    ["integration"],
)

# Children made once: the request path skips the label lookup.
ACCEPTED = DELIVERIES.labels(result="accepted")
DUPLICATE = DELIVERIES.labels(result="duplicate")
IGNORED = DELIVERIES.labels(result="ignored")


_REQUESTS_BY_CODE: dict[int, Counter] = {}


def observe_request(status: int, duration_s: float) -> None:
    counter = _REQUESTS_BY_CODE.get(status)
    if counter is None:  # the labelled child, looked up once per status code
        counter = _REQUESTS_BY_CODE[status] = REQUESTS.labels(code=str(status))
    counter.inc()
    LATENCY.observe(duration_s)


class StoreGauges:
    """Gauges read from PostgreSQL (one transaction, seven statements, each answered from an
    index or a table of one row per integration) and Redis (two round trips), cached for
    STORE_REFRESH_S."""

    def __init__(self, res: Resources) -> None:
        self.res = res
        self.registry = CollectorRegistry(auto_describe=False)
        self._families: list[GaugeMetricFamily] = []
        self._read_at = float("-inf")
        self._lock = threading.Lock()
        self.registry.register(self)

    def refresh(self) -> None:
        """Read the store if the cached figures are older than STORE_REFRESH_S."""
        with self._lock:
            if time.monotonic() - self._read_at < STORE_REFRESH_S:
                return
            with transaction(self.res.pool) as conn:
                recent = q.recent_counts(conn)
                unfinished = q.unfinished(conn, stuck_after_s=0, shown=0)
                failed = q.failed_counts(conn)
                unmapped = q_identities.unmapped_counts(conn)
                sweeps = q_reconcile.states(conn)
                signers = q_integrations.auths(conn)
                dynamic = q_oauth2.dynamic_webhooks(conn)
            families = _families(recent, unfinished, failed, unmapped)
            families.append(_dynamic_webhooks(dynamic))
            families += _integration_families(
                sweeps,
                signers,
                cache.paused_sites(self.res.redis, [s.integration_id for s in sweeps]),
                self.res.settings.reconcile_interval_s,
            )
            beat = cache.last_sweep(self.res.redis)
            families.append(
                GaugeMetricFamily(
                    "jira_sync_beat_last_sweep_timestamp_seconds",
                    "When beat's periodic sweep last ran (Unix time; 0: never).",
                    value=beat.at if beat else 0.0,
                )
            )
            self._families = families
            self._read_at = time.monotonic()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield from self._families


def _families(
    recent: dict[str, tuple[int, int]],
    unfinished: q.Unfinished,
    failed: dict[str, int],
    unmapped: dict[int, int],
) -> list[GaugeMetricFamily]:
    deliveries = GaugeMetricFamily(
        "jira_sync_deliveries_last_day",
        "Deliveries received in the last 24 hours, by status now.",
        labels=["status"],
    )
    for status, (_, last_day) in recent.items():
        deliveries.add_metric([status], last_day)
    oldest = GaugeMetricFamily(
        "jira_sync_oldest_unfinished_delivery_age_seconds",
        "Age of the oldest delivery still received or queued (0 when none).",
        value=unfinished.oldest_age_s or 0.0,
    )
    records = GaugeMetricFamily(
        "jira_sync_failed_tasks",
        "Records in the failed-task store, by status (failed ones wait for a replay).",
        labels=["status"],
    )
    for status, count in failed.items():
        records.add_metric([status], count)
    users = GaugeMetricFamily(
        "jira_sync_unmapped_jira_users",
        "Jira users named as assignee that match no user here, per integration (SPEC 14).",
        labels=["integration"],
    )
    for integration_id, count in sorted(unmapped.items()):
        users.add_metric([str(integration_id)], count)
    return [deliveries, oldest, records, users]


def _dynamic_webhooks(hooks: list[q_oauth2.DynamicWebhook]) -> GaugeMetricFamily:
    """When Cloud stops sending each OAuth 2.0 link's dynamic webhook unless beat refreshes it."""
    expiry = GaugeMetricFamily(
        "jira_sync_dynamic_webhook_expiry_timestamp_seconds",
        "When Cloud stops sending the integration's dynamic webhook (Unix time; OAuth 2.0).",
        labels=["integration"],
    )
    soonest: dict[int, float] = {}
    for hook in hooks:
        at = hook.expires_at.timestamp()
        soonest[hook.integration_id] = min(at, soonest.get(hook.integration_id, at))
    for integration_id, at in sorted(soonest.items()):
        expiry.add_metric([str(integration_id)], at)
    return expiry


def _integration_families(
    sweeps: list[q_reconcile.State],
    signers: dict[int, q_integrations.Auth],
    throttled: dict[int, float],
    default_interval_s: int,
) -> list[GaugeMetricFamily]:
    """Per active integration (labels: integration ids only, a bounded set): its sweep's last
    success and interval, the seconds a 429 still pauses it, its token's expiry."""
    success = GaugeMetricFamily(
        "jira_sync_reconcile_last_success_timestamp_seconds",
        "When the integration's reconciliation sweep last completed (Unix time; 0: never).",
        labels=["integration"],
    )
    interval = GaugeMetricFamily(
        "jira_sync_reconcile_interval_seconds",
        "How often the integration is swept (absent while its reconciliation is off).",
        labels=["integration"],
    )
    paused = GaugeMetricFamily(
        "jira_sync_jira_throttled_seconds",
        "Seconds every process still waits before calling this Jira (a 429's Retry-After).",
        labels=["integration"],
    )
    expiry = GaugeMetricFamily(
        "jira_sync_token_expiry_timestamp_seconds",
        "When the integration's API token or PAT expires, as given at link time (Unix time).",
        labels=["integration"],
    )
    for state in sweeps:
        if state.integration_status != "active":
            continue
        label = [str(state.integration_id)]
        paused.add_metric(label, round(throttled.get(state.integration_id, 0.0), 3))
        if state.enabled:
            done = state.last_success_at.timestamp() if state.last_success_at else 0.0
            success.add_metric(label, done)
            interval.add_metric(label, float(state.interval_s or default_interval_s))
        signer = signers.get(state.integration_id)
        if signer is not None and signer.token_expires_on is not None:
            day = signer.token_expires_on
            expiry.add_metric(label, datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())
    return [success, interval, paused, expiry]


def _process_registry() -> CollectorRegistry:
    if not MULTIPROCESS:
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return registry


_PROCESS = _process_registry()


def scrape(store: StoreGauges) -> bytes:
    """The exposition text: this process's (or every receiver process's) counters, then the
    store's gauges. Blocking: run it in a thread."""
    store.refresh()
    return generate_latest(_PROCESS) + generate_latest(store.registry)
