"""The receiver's `GET /metrics`: Prometheus text that prometheus_client's own parser reads,
counters that move with the requests sent, one sum over every process of a multi-process
receiver, and never open to the world."""

from __future__ import annotations

import base64
import ipaddress
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from tests.conftest import receiver_process
from tests.webhooks import JSON, body, load_integrations, payload, url
from worker.receiver.app import create_app
from worker.runtime.resources import Resources

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(base: str, **kw: Any) -> Samples:
    answer = httpx.get(base + "/metrics", timeout=10, **kw)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain; version=")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(answer.text)
        for s in family.samples
    }


def send(base: str) -> None:
    """2 accepted, 1 duplicate, 1 ignored and 1 refused (401), each on its own connection."""
    once = {**JSON, "X-Atlassian-Webhook-Identifier": "same-delivery"}
    answers = [
        httpx.post(base + url(), content=body(payload()), headers=JSON),
        httpx.post(base + url(), content=body(payload()), headers=once),
        httpx.post(base + url(), content=body(payload()), headers=once),
        httpx.post(base + url(), content=body({"timestamp": 1, "issue": {}}), headers=JSON),
        httpx.post(base + url("not-a-token"), content=b"{}", headers=JSON),
    ]
    assert [a.status_code for a in answers] == [202, 202, 200, 200, 401]


def test_metrics_parse_and_count_what_the_receiver_answered(
    res: Resources,
    scene: Callable[[dict[str, Any]], None],
    settings_env: dict[str, str],
    tmp_path: Path,
) -> None:
    load_integrations(scene)
    with receiver_process(settings_env, tmp_path / "receiver.log") as (base, _):
        send(base)
        first = scrape(base)
        send_one = httpx.post(base + url(), content=body(payload()), headers=JSON)
        assert send_one.status_code == 202
        second = scrape(base)

    def moved(name: str, **labels: str) -> tuple[float, float]:
        key = (name, tuple(sorted(labels.items())))
        return first.get(key, 0.0), second.get(key, 0.0)

    assert moved("jira_sync_receiver_requests_total", code="202") == (2, 3)
    assert moved("jira_sync_receiver_requests_total", code="200") == (2, 2)
    assert moved("jira_sync_receiver_requests_total", code="401") == (1, 1)
    assert moved("jira_sync_receiver_deliveries_total", result="accepted") == (2, 3)
    assert moved("jira_sync_receiver_deliveries_total", result="duplicate") == (1, 1)
    assert moved("jira_sync_receiver_deliveries_total", result="ignored") == (1, 1)
    assert moved("jira_sync_receiver_request_duration_seconds_count") == (5, 6)
    # The duplicate went through the INSERT too (ON CONFLICT decides): 3 then 4 rows.
    assert moved("jira_sync_receiver_insert_batch_size_sum") == (3, 4)
    # The store's gauges, read at the first scrape (then cached for a few seconds).
    on_the_way = sum(
        first[("jira_sync_deliveries_last_day", (("status", s),))] for s in ("received", "queued")
    )
    assert on_the_way == 2
    assert first[("jira_sync_failed_tasks", (("status", "failed"),))] == 0


def test_multi_process_receiver_sums_every_process_and_needs_its_password(
    res: Resources,
    scene: Callable[[dict[str, Any]], None],
    settings_env: dict[str, str],
    tmp_path: Path,
) -> None:
    load_integrations(scene)
    env = {
        **settings_env,
        "WEB_CONCURRENCY": "2",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
        "METRICS_BASIC_AUTH": "prom:scrape-secret",
    }
    (tmp_path / "metrics").mkdir()
    auth = {"Authorization": "Basic " + base64.b64encode(b"prom:scrape-secret").decode()}
    with receiver_process(env, tmp_path / "receiver.log", workers=2) as (base, _):
        refused = httpx.get(base + "/metrics", timeout=10)
        wrong = httpx.get(base + "/metrics", auth=("prom", "guess"), timeout=10)
        not_ascii = {"Authorization": "Basic é€".encode()}
        odd = httpx.get(base + "/metrics", headers=not_ascii, timeout=10)
        send(base)
        # Whichever process answers a scrape, it counts the requests of both.
        totals = {
            scrape(base, headers=auth)[("jira_sync_receiver_requests_total", (("code", "202"),))]
            for _ in range(6)
        }
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"].startswith("Basic")
    assert refused.json()["detail"] == "/metrics needs the METRICS_BASIC_AUTH user"
    assert wrong.status_code == odd.status_code == 401
    assert totals == {2}


def test_metrics_refuse_a_remote_client_when_no_password_is_set(res: Resources) -> None:
    with TestClient(create_app(res=res, configure_logs=False)) as client:  # client "testclient"
        answer = client.get("/metrics")
    assert answer.status_code == 403
    assert "METRICS_BASIC_AUTH" in answer.json()["detail"]


def a_non_loopback_address() -> str | None:
    """An IPv4 address of this machine that is not loopback, if it has one."""
    for addresses in psutil.net_if_addrs().values():
        for a in addresses:
            if a.family == socket.AF_INET and not ipaddress.ip_address(a.address).is_loopback:
                return str(a.address)
    return None


def test_a_forwarded_loopback_address_does_not_open_metrics_to_a_remote_peer(
    res: Resources, settings_env: dict[str, str], tmp_path: Path
) -> None:
    address = a_non_loopback_address()
    if address is None:
        pytest.skip("this machine has no address but loopback: no remote peer to test with")
    # uvicorn trusts X-Forwarded-For from any peer here: the client address it reports is
    # whatever the header says, so only the socket's peer can tell who asks.
    env = {**settings_env, "FORWARDED_ALLOW_IPS": "*"}
    with receiver_process(env, tmp_path / "receiver.log", host="0.0.0.0") as (base, _):
        remote = base.replace("0.0.0.0", address)
        spoofed = httpx.get(
            remote + "/metrics", headers={"X-Forwarded-For": "127.0.0.1"}, timeout=10
        )
        local = httpx.get(base.replace("0.0.0.0", "127.0.0.1") + "/metrics", timeout=10)
    assert spoofed.status_code == 403, spoofed.text
    assert local.status_code == 200
