"""`jira-sync failed list/show/park/purge`: what an operator sees of the failed-task store."""

from __future__ import annotations

import json

import pytest

from tests.integration.conftest import RecordFactory
from worker.cli import main
from worker.cli.common import EXIT_NOT_FOUND, EXIT_OK
from worker.runtime.resources import Resources


def set_status(res: Resources, failed_id: int, status: str, age_s: float = 0) -> None:
    with res.pool.connection() as conn:
        conn.execute(
            "UPDATE failed_task SET status = %s,"
            " last_failed_at = now() - make_interval(secs => %s) WHERE id = %s",
            (status, age_s, failed_id),
        )


def statuses(res: Resources) -> dict[int, str]:
    with res.pool.connection() as conn:
        rows = conn.execute("SELECT id, status FROM failed_task ORDER BY id").fetchall()
    return {r["id"]: r["status"] for r in rows}


def test_list_ends_with_a_count_per_error_type(
    failed_record: RecordFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    failed_record()
    failed_record()
    failed_record(task_name="jira_sync.effects.outbound_sync", error_type="JiraUnavailable")
    assert main(["failed", "list"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "jira_sync.effects.outbound_sync" in out
    tail = out[out.index("by error type") :]
    assert [line.split() for line in tail.splitlines()[2:]] == [
        ["BadPayload", "2"],
        ["JiraUnavailable", "1"],
    ]


def test_list_filters_by_task_error_and_status(
    res: Resources, failed_record: RecordFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    keep = failed_record(task_name="jira_sync.effects.outbound_sync", error_type="JiraUnavailable")
    failed_record(task_name="jira_sync.effects.outbound_sync", error_type="JiraRejected")
    failed_record(error_type="JiraUnavailable")
    set_status(res, failed_record(task_name="jira_sync.effects.outbound_sync",
                                  error_type="JiraUnavailable"), "parked")  # fmt: skip
    argv = ["failed", "list", "--json", "--task", "jira_sync.effects.outbound_sync",
            "--error", "JiraUnavailable", "--status", "failed"]  # fmt: skip
    assert main(argv) == EXIT_OK
    listed = json.loads(capsys.readouterr().out)
    assert [r["id"] for r in listed["records"]] == [keep]
    assert listed["by_error_type"] == {"JiraUnavailable": 1}


def test_list_filters_by_failure_time(
    res: Resources, failed_record: RecordFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    old = failed_record()
    set_status(res, old, "failed", age_s=3 * 3600)
    new = failed_record()
    assert main(["failed", "list", "--json", "--since", "1h"]) == EXIT_OK
    assert [r["id"] for r in json.loads(capsys.readouterr().out)["records"]] == [new]
    assert main(["failed", "list", "--json", "--until", "2h"]) == EXIT_OK
    assert [r["id"] for r in json.loads(capsys.readouterr().out)["records"]] == [old]


def test_list_of_an_empty_store_says_so_and_exits_zero(
    res: Resources, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["failed", "list"]) == EXIT_OK
    assert "No failed tasks" in capsys.readouterr().out


def test_same_step_failing_again_updates_its_record(
    res: Resources, failed_record: RecordFactory
) -> None:
    first = failed_record(kwargs={"delivery_id": 7}, attempts=3)
    set_status(res, first, "replayed")
    again = failed_record(kwargs={"delivery_id": 7}, attempts=3, error_type="JiraUnavailable")
    assert again == first
    with res.pool.connection() as conn:
        row = conn.execute("SELECT * FROM failed_task WHERE id = %s", (first,)).fetchone()
    assert row is not None
    assert (row["attempts"], row["status"], row["error_type"]) == (6, "failed", "JiraUnavailable")
    assert row["first_failed_at"] <= row["last_failed_at"]


def test_show_prints_arguments_what_a_replay_runs_and_traceback(
    failed_record: RecordFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    failed_id = failed_record(kwargs={"delivery_id": 42})
    assert main(["failed", "show", str(failed_id)]) == EXIT_OK
    out = capsys.readouterr().out
    assert "{'delivery_id': 42}" in out
    assert "then runs:" in out
    assert "jira_sync.inbound.sync -> jira_sync.inbound.assign | jira_sync.inbound.deassign" in out
    assert "(nothing after it)" not in out
    assert "BadPayload: not JSON" in out
    assert main(["failed", "show", str(failed_id), "--json"]) == EXIT_OK
    shown = json.loads(capsys.readouterr().out)
    assert shown["kwargs"] == {"delivery_id": 42}
    assert shown["task"] == "jira_sync.inbound.check_changelog"
    assert shown["attempts"] == 1 and shown["status"] == "failed"


def test_show_of_an_unknown_id_exits_not_found(res: Resources) -> None:
    assert main(["failed", "show", "999"]) == EXIT_NOT_FOUND


def test_park_sets_failed_records_aside(
    res: Resources, failed_record: RecordFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = failed_record(), failed_record()
    assert main(["failed", "park", str(a)]) == EXIT_OK
    assert statuses(res) == {a: "parked", b: "failed"}
    assert "parked 1" in capsys.readouterr().out


def test_park_of_an_unknown_id_exits_not_found_after_parking_the_others(
    res: Resources, failed_record: RecordFactory
) -> None:
    a = failed_record()
    assert main(["failed", "park", str(a), "999"]) == EXIT_NOT_FOUND
    assert statuses(res) == {a: "parked"}


def test_purge_deletes_old_replayed_records_only(
    res: Resources, failed_record: RecordFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    old_replayed, new_replayed, old_failed = failed_record(), failed_record(), failed_record()
    set_status(res, old_replayed, "replayed", age_s=10 * 86400)
    set_status(res, new_replayed, "replayed")
    set_status(res, old_failed, "failed", age_s=10 * 86400)
    assert main(["failed", "purge", "--older-than", "7d"]) == EXIT_OK
    assert "purged 1" in capsys.readouterr().out
    assert statuses(res) == {new_replayed: "replayed", old_failed: "failed"}


def test_purge_with_nothing_to_purge_exits_zero(
    res: Resources, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["failed", "purge", "--status", "parked"]) == EXIT_OK
    assert "Nothing to do" in capsys.readouterr().out
