"""`jira-sync failed replay`: what it puts on the broker, what it marks, what it prints."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib
from psycopg.types.json import Jsonb

from config.celery import QUEUE_INBOUND
from tests.integration.conftest import RecordFactory
from worker.cli import main
from worker.cli.common import EXIT_NOT_FOUND, EXIT_OK, EXIT_USAGE
from worker.runtime.resources import Resources

ROOT = Path(__file__).parents[2]


@pytest.fixture
def broker(res: Resources) -> redis_lib.Redis:
    return redis_lib.Redis.from_url(res.settings.broker_url)


def queued(broker: redis_lib.Redis, queue: str) -> list[dict[str, Any]]:
    """The task messages waiting in a queue, oldest first: name, kwargs, rest of chain."""
    messages = []
    for raw in reversed(broker.lrange(queue, 0, -1)):
        message = json.loads(raw)
        args, kwargs, embed = json.loads(base64.b64decode(message["body"]))
        messages.append(
            {"task": message["headers"]["task"], "args": args, "kwargs": kwargs,
             "chain": embed.get("chain")}
        )  # fmt: skip
    return messages


def statuses(res: Resources) -> dict[int, str]:
    with res.pool.connection() as conn:
        rows = conn.execute("SELECT id, status FROM failed_task ORDER BY id").fetchall()
    return {r["id"]: r["status"] for r in rows}


def test_replay_sends_the_failed_step_by_name_with_its_arguments(
    res: Resources, broker: redis_lib.Redis, failed_record: RecordFactory
) -> None:
    failed_id = failed_record(kwargs={"delivery_ids": [42]})
    assert main(["failed", "replay", str(failed_id)]) == EXIT_OK
    assert queued(broker, QUEUE_INBOUND) == [
        {"task": "jira_sync.inbound.check_changelog", "args": [],
         "kwargs": {"delivery_ids": [42]}, "chain": None}
    ]  # fmt: skip
    assert statuses(res) == {failed_id: "replayed"}


@pytest.fixture
def delivery(res: Resources, scene: Callable[[dict[str, Any]], None]) -> Callable[..., int]:
    """Store a delivery (of the example scene's integration) in a given status."""
    scene(json.loads((ROOT / "examples" / "scene.json").read_text()))
    keys = iter(range(1, 1_000_000))

    def _make(status: str = "queued", outcome: str | None = None) -> int:
        with res.pool.connection() as conn:
            row = conn.execute(
                "INSERT INTO webhook_delivery (integration_id, dedupe_key, body, headers,"
                " status, outcome) VALUES (1, %s, '{}', %s, %s, %s) RETURNING id",
                (f"k{next(keys)}", Jsonb({}), status, outcome),
            ).fetchone()
        assert row is not None
        return int(row["id"])

    return _make


def delivery_status(res: Resources, delivery_id: int) -> dict[str, Any] | None:
    with res.pool.connection() as conn:
        return conn.execute(
            "SELECT status, failed_task_id FROM webhook_delivery WHERE id = %s", (delivery_id,)
        ).fetchone()


def test_failed_step_points_its_delivery_at_the_record(
    res: Resources, failed_record: RecordFactory, delivery: Callable[..., int]
) -> None:
    delivery_id = delivery()
    failed_id = failed_record(kwargs={"delivery_id": delivery_id})
    assert delivery_status(res, delivery_id) == {"status": "failed", "failed_task_id": failed_id}


def test_failed_side_effect_shows_its_finished_delivery_failed(
    res: Resources, failed_record: RecordFactory, delivery: Callable[..., int]
) -> None:
    delivery_id = delivery("done", "assigned")
    failed_id = failed_record(
        task_name="jira_sync.effects.outbound_sync",
        kwargs={"delivery_id": delivery_id, "group_id": 1},
    )
    assert delivery_status(res, delivery_id) == {"status": "failed", "failed_task_id": failed_id}


def test_replay_puts_an_unfinished_delivery_back_to_queued(
    res: Resources, failed_record: RecordFactory, delivery: Callable[..., int]
) -> None:
    delivery_id = delivery()
    failed_id = failed_record(kwargs={"delivery_id": delivery_id})
    assert main(["failed", "replay", str(failed_id)]) == EXIT_OK
    assert delivery_status(res, delivery_id) == {"status": "queued", "failed_task_id": failed_id}


def test_replay_of_its_side_effect_puts_a_finished_delivery_back_to_done(
    res: Resources, failed_record: RecordFactory, delivery: Callable[..., int]
) -> None:
    delivery_id = delivery("done", "assigned")
    failed_id = failed_record(
        task_name="jira_sync.effects.outbound_sync",
        kwargs={"delivery_id": delivery_id, "group_id": 1},
    )
    assert main(["failed", "replay", str(failed_id)]) == EXIT_OK
    assert delivery_status(res, delivery_id) == {"status": "done", "failed_task_id": failed_id}


def test_delivery_stays_failed_while_another_of_its_records_is_failed(
    res: Resources, failed_record: RecordFactory, delivery: Callable[..., int]
) -> None:
    delivery_id = delivery("done", "assigned")
    first, second = (
        failed_record(task_name="jira_sync.effects.outbound_sync",
                      kwargs={"delivery_id": delivery_id, "group_id": group})
        for group in (1, 2)
    )  # fmt: skip
    assert main(["failed", "replay", str(first)]) == EXIT_OK
    assert delivery_status(res, delivery_id) == {"status": "failed", "failed_task_id": second}


def test_replaying_a_replayed_record_again_sends_nothing(
    res: Resources,
    broker: redis_lib.Redis,
    failed_record: RecordFactory,
    capsys: pytest.CaptureFixture[str],
) -> None:
    failed_id = failed_record()
    assert main(["failed", "replay", str(failed_id)]) == EXIT_OK
    capsys.readouterr()
    assert main(["failed", "replay", str(failed_id)]) == EXIT_OK
    out = capsys.readouterr().out
    assert "skipped 1 already replayed" in out
    assert len(queued(broker, QUEUE_INBOUND)) == 1


def test_replay_all_with_nothing_to_do_exits_zero(
    res: Resources, failed_record: RecordFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    failed_id = failed_record()
    assert main(["failed", "park", str(failed_id)]) == EXIT_OK
    capsys.readouterr()
    assert main(["failed", "replay", "--all"]) == EXIT_OK
    assert "Nothing to do" in capsys.readouterr().out
    assert statuses(res) == {failed_id: "parked"}


def test_parked_record_named_by_id_is_replayed(
    res: Resources, failed_record: RecordFactory
) -> None:
    failed_id = failed_record()
    main(["failed", "park", str(failed_id)])
    assert main(["failed", "replay", str(failed_id)]) == EXIT_OK
    assert statuses(res) == {failed_id: "replayed"}


def test_replay_all_honours_filters_and_limit(
    res: Resources, broker: redis_lib.Redis, failed_record: RecordFactory
) -> None:
    jira = [failed_record(error_type="JiraUnavailable") for _ in range(3)]
    other = failed_record(error_type="BadPayload")
    argv = ["failed", "replay", "--all", "--error", "JiraUnavailable", "--limit", "2"]
    assert main(argv) == EXIT_OK
    assert statuses(res) == {jira[0]: "replayed", jira[1]: "replayed", jira[2]: "failed",
                             other: "failed"}  # fmt: skip
    assert len(queued(broker, QUEUE_INBOUND)) == 2


def test_replay_dry_run_changes_nothing(
    res: Resources,
    broker: redis_lib.Redis,
    failed_record: RecordFactory,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ids = [failed_record() for _ in range(3)]
    assert main(["failed", "replay", "--all", "--dry-run"]) == EXIT_OK
    assert "would replay 3" in capsys.readouterr().out
    assert statuses(res) == dict.fromkeys(ids, "failed")
    assert broker.dbsize() == 0


def test_replay_of_an_unknown_id_exits_not_found_after_replaying_the_others(
    res: Resources, failed_record: RecordFactory
) -> None:
    failed_id = failed_record()
    assert main(["failed", "replay", str(failed_id), "999"]) == EXIT_NOT_FOUND
    assert statuses(res) == {failed_id: "replayed"}


def test_replay_needs_ids_or_all(res: Resources) -> None:
    assert main(["failed", "replay"]) == EXIT_USAGE


def test_replay_of_1000_records_shows_a_progress_bar_and_finishes(
    res: Resources,
    broker: redis_lib.Redis,
    failed_record: RecordFactory,
    settings_env: dict[str, str],
) -> None:
    with res.pool.connection() as conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO failed_task (task_name, task_id, kwargs, error_type, fingerprint)"
            " VALUES ('jira_sync.inbound.check_changelog', %s, %s, 'JiraUnavailable', %s)",
            [(f"t{n}", Jsonb({"delivery_id": n}), f"fp{n}") for n in range(1000)],
        )
    proc = subprocess.run(
        [sys.executable, "-m", "worker.cli", "failed", "replay", "--all"],
        env=settings_env, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == EXIT_OK, proc.stderr
    assert "replaying" in proc.stderr
    assert "1000/1000 100%" in proc.stderr
    assert "replayed 1000" in proc.stdout
    assert set(statuses(res).values()) == {"replayed"}
    assert broker.llen(QUEUE_INBOUND) == 1000
