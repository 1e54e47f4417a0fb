"""The receiver as it runs in production: a uvicorn process (uvloop + httptools)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import receiver_process, wait_for
from tests.webhooks import JSON, SECRET, body, load_integrations, payload, url
from worker.runtime.resources import Resources

pytestmark = pytest.mark.broker  # run again on RabbitMQ: tests/amqp_leg.py


@pytest.fixture
def receiver(
    settings_env: dict[str, str], tmp_path: Path
) -> Iterator[tuple[str, Callable[[], str]]]:
    with receiver_process(settings_env, tmp_path / "receiver.log") as found:
        yield found


def test_uvicorn_receiver_accepts_and_logs_json_without_the_token(
    res: Resources,
    scene: Callable[[dict[str, Any]], None],
    receiver: tuple[str, Callable[[], str]],
) -> None:
    load_integrations(scene)
    base, logs = receiver
    webhook = url()
    token = webhook.strip("/").rsplit("/", 1)[1]
    with httpx.Client(base_url=base, timeout=10) as client:
        accepted = client.post(webhook, content=body(payload()), headers=JSON)
        refused = client.post(url("not-a-valid-token-" + "q" * 20), content=b"{}", headers=JSON)
        ready = client.get("/readyz")
    assert accepted.status_code == 202
    assert refused.status_code == 401
    assert ready.status_code == 200
    delivery_id = int(accepted.json()["delivery"])

    def logged() -> list[dict[str, Any]]:
        return [json.loads(line) for line in logs().splitlines() if line.startswith("{")]

    # Accepted deliveries are logged a batch per line; a refusal has a line of its own.
    wait_for(
        lambda: (
            any(delivery_id in (e.get("delivery_ids") or []) for e in logged())
            and any(
                e.get("event") == "payload.request" and e.get("status") == 401 for e in logged()
            )
        ),
        10,
        "the stored batch's line with the delivery id, and the refusal's line",
    )
    text = logs()
    for line in text.splitlines():
        assert line.startswith("{"), f"not a JSON log line: {line!r}"
    assert token not in text
    assert "q" * 20 not in text
    assert SECRET not in text
