"""A receiver stores each delivery `queued` and sends it right after the commit (one write per
delivery). One killed between the two leaves deliveries nobody will send: its heartbeat stops,
and beat's sweep sets them back to `received` and sends them. A receiver that stopped cleanly
is left alone (nothing of it is sent twice)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psutil
from starlette.testclient import TestClient

from tests.conftest import Servers, WorkerProcess, receiver_process, wait_for
from tests.webhooks import JSON, body, delivery_ids_on_broker, load_integrations, payload, url
from worker.receiver.app import create_app
from worker.runtime.resources import Resources
from worker.store.db import transaction

COUNT = 5


def rows(res: Resources, ids: set[int]) -> dict[int, tuple[str, int | None]]:
    with transaction(res.pool) as conn:
        found = conn.execute(
            "SELECT id, status, sender FROM webhook_delivery WHERE id = ANY(%s)", (list(ids),)
        ).fetchall()
    return {int(r["id"]): (str(r["status"]), r["sender"]) for r in found}


def silence(res: Resources, sender: int, seconds: float) -> None:
    """As if the receiver's last heartbeat was `seconds` ago."""
    with transaction(res.pool) as conn:
        conn.execute(
            "UPDATE receiver_process SET seen_at = now() - make_interval(secs => %s) WHERE id = %s",
            (seconds, sender),
        )


def listener_pid(base: str) -> int:
    port = int(base.rsplit(":", 1)[1])
    for conn in psutil.net_connections("tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port and conn.pid:
            return int(conn.pid)
    raise AssertionError(f"no process listens on {port}")


def post(base: str, key: str) -> int:
    answer = httpx.post(base + url(), content=body(payload(key)), headers=JSON, timeout=10)
    assert answer.status_code == 202, answer.text
    return int(answer.json()["delivery"])


def test_deliveries_a_killed_receiver_never_sent_are_sent_by_the_sweep(
    res: Resources,
    servers: Servers,
    scene: Callable[[dict[str, Any]], None],
    start_worker: Callable[..., WorkerProcess],
    tmp_path: Path,
) -> None:
    assert servers.redis is not None, "needs the embedded Redis"
    from tasks.maintenance import SWEEP_MIN_AGE_S, stalled_after_s, sweep_deliveries

    load_integrations(scene)
    broker_url = servers.env["BROKER_URL"]
    with receiver_process({**os.environ, **servers.env}, tmp_path / "receiver.log") as (base, _):
        first = post(base, "APP-0")  # sent: the broker answers
        wait_for(lambda: first in delivery_ids_on_broker(broker_url), 10, "the first one sent")
        with servers.redis.paused():  # the broker takes no send: the receiver waits on it
            ids = {post(base, f"APP-{n}") for n in range(1, COUNT + 1)}
            found = rows(res, ids)
            assert {status for status, _ in found.values()} == {"queued"}
            (sender,) = {s for _, s in found.values()}
            assert sender is not None
            psutil.Process(listener_pid(base)).kill()  # between the commits and the sends
    # The send under way when Redis stopped may still land (its bytes were in the socket);
    # the ones after it waited in the killed process.
    never_sent = ids - delivery_ids_on_broker(broker_url)
    assert never_sent

    sweep_deliveries.run()  # its heartbeat is recent: nothing is taken over yet
    assert {status for status, _ in rows(res, ids).values()} == {"queued"}
    assert ids - delivery_ids_on_broker(broker_url) == never_sent

    silence(res, sender, res.settings.receiver_silent_after_s + 1)
    # Set back to `received`, then sent once older than the sweep's minimum age; well before
    # the sweep of stalled deliveries would send them again.
    bound_s = stalled_after_s(res.settings) / 2
    assert bound_s > SWEEP_MIN_AGE_S + 3
    wait_for(
        lambda: (sweep_deliveries.run(), delivery_ids_on_broker(broker_url))[1] == ids | {first},
        bound_s,
        "the sweep to send what the killed receiver had not",
    )
    start_worker(concurrency=2)
    wait_for(
        lambda: {s for s, _ in rows(res, ids | {first}).values()} == {"done"},
        60,
        "every delivery processed by a real worker",
    )


def test_a_receiver_stopped_cleanly_is_not_taken_over(
    res: Resources, servers: Servers, scene: Callable[[dict[str, Any]], None]
) -> None:
    from tasks.maintenance import sweep_deliveries

    load_integrations(scene)
    broker_url = servers.env["BROKER_URL"]
    with TestClient(create_app(res=res, configure_logs=False)) as client:
        answer = client.post(url(), content=body(payload("APP-1")), headers=JSON)
        assert answer.status_code == 202
        delivery_id = int(answer.json()["delivery"])
    # Stopping sent everything first and recorded the clean stop.
    assert delivery_ids_on_broker(broker_url) == {delivery_id}
    ((status, sender),) = rows(res, {delivery_id}).values()
    assert status == "queued" and sender is not None
    with transaction(res.pool) as conn:
        ended = conn.execute(
            "SELECT ended_at IS NOT NULL AS ended FROM receiver_process WHERE id = %s", (sender,)
        ).fetchone()
    assert ended is not None and ended["ended"]

    silence(res, sender, res.settings.receiver_silent_after_s + 60)
    sweep_deliveries.run()
    assert rows(res, {delivery_id}) == {delivery_id: ("queued", sender)}
    assert len([m for m in delivery_ids_on_broker(broker_url) if m == delivery_id]) == 1


def test_a_receiver_whose_send_is_stuck_stops_its_heartbeat_and_is_taken_over(
    res: Resources, servers: Servers, scene: Callable[[dict[str, Any]], None], tmp_path: Path
) -> None:
    """Alive but stuck (its send waits on a broker that does not answer): beat's sweep must not
    wait for it forever."""
    assert servers.redis is not None, "needs the embedded Redis"
    from worker.store.queries import deliveries as dq

    load_integrations(scene)
    env = {**os.environ, **servers.env, "RECEIVER_SILENT_AFTER_S": "3"}  # beats every 0.5 s
    with receiver_process(env, tmp_path / "receiver.log") as (base, log):
        post(base, "APP-0")  # registers the process as a sender
        with servers.redis.paused():
            ids = {post(base, f"APP-{n}") for n in range(1, 4)}
            wait_for(lambda: "receiver.send_stuck" in log(), 15, "the stuck send noticed")

            def taken_over() -> bool:
                with transaction(res.pool) as conn:  # now() is the transaction's start
                    return dq.release_silent_senders(conn, 3.0) > 0

            wait_for(taken_over, 15, "the sweep's takeover of the silent receiver")
            assert {status for status, _ in rows(res, ids).values()} == {"received"}
