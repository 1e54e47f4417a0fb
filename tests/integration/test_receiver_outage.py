"""A 202 is a promise: deliveries accepted while the broker is down are sent once it is back."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.testclient import TestClient

from tests.conftest import Servers, WorkerProcess, wait_for
from tests.webhooks import JSON, body, delivery_ids_on_broker, load_integrations, payload, url
from worker.receiver.app import create_app
from worker.runtime.resources import Resources
from worker.store.db import transaction
from worker.store.queries import deliveries as dq

COUNT = 20


def statuses(res: Resources) -> dict[int, str]:
    with transaction(res.pool) as conn:
        return {d.id: d.status for d in dq.list_deliveries(conn, None, None, 1000)}


def test_deliveries_accepted_while_broker_is_down_are_processed_after_it_returns(
    res: Resources,
    servers: Servers,
    scene: Callable[[dict[str, Any]], None],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    assert servers.redis is not None, "needs the embedded Redis"
    # Imported here, not at collection: the Celery app reads its settings on first use.
    from tasks.maintenance import sweep_deliveries

    load_integrations(scene)
    with TestClient(create_app(res=res, configure_logs=False)) as client:
        servers.redis.stop()
        try:
            answers = [
                client.post(url(), content=body(payload(f"APP-{n}")), headers=JSON)
                for n in range(COUNT)
            ]
            assert [a.status_code for a in answers] == [202] * COUNT
            # The background probe notices within a second or so.
            wait_for(lambda: client.get("/readyz").status_code == 503, 15, "not ready")
            # Stored `queued`; each send that fails sets its deliveries back to `received`.
            wait_for(
                lambda: set(statuses(res).values()) == {"received"},
                30,
                "the failed sends set back to received",
            )
        finally:
            servers.redis.start()
        accepted = {int(a.json()["delivery"]) for a in answers}
        assert set(statuses(res)) == accepted

        # The beat sweep sends what the receiver could not (only rows a few seconds old).
        def swept() -> bool:
            sweep_deliveries.run()
            return set(statuses(res).values()) == {"queued"}

        wait_for(swept, 30, "the sweep to queue every stored delivery")
        assert delivery_ids_on_broker(servers.env["BROKER_URL"]) == accepted

    start_worker(concurrency=2)
    wait_for(
        lambda: set(statuses(res).values()) == {"done"},
        60,
        "every delivery to be processed by a real worker",
    )
