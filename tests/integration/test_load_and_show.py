"""`jira-sync load` then `jira-sync group show`: the documented JSON, idempotent, all or nothing."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from worker import cache
from worker.domain.errors import InvalidInput
from worker.runtime.resources import Resources
from worker.services import groups
from worker.services.loader import load_scene

ROOT = Path(__file__).parents[2]
EXAMPLE_PATH = ROOT / "examples" / "scene.json"
EXAMPLE = json.loads(EXAMPLE_PATH.read_text())
TABLES = ("organization", "app_user", "user_email", "team", "team_member", "project",
          "project_team", "issue_group", "group_assignee", "group_subscription", "integration",
          "integration_credential", "organization_integration", "external_issue", "group_link",
          "notification_setting")  # fmt: skip


def snapshot(res: Resources) -> dict[str, list[Any]]:
    with res.pool.connection() as conn:
        return {t: conn.execute(f"SELECT * FROM {t} ORDER BY 1, 2").fetchall() for t in TABLES}


def jira_sync(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", *args],
        env=env, cwd=ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip


def test_group_show_prints_the_documented_json(
    res: Resources, settings_env: dict[str, str]
) -> None:
    assert jira_sync(settings_env, "load", str(EXAMPLE_PATH)).returncode == 0
    proc = jira_sync(settings_env, "group", "show", "100", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {
        "id": 100,
        "project": 4503599627370506,
        "status": "unresolved",
        "resolved_at": None,
        "assignee": {"type": "user", "id": 1},
        "subscriptions": [{"user": 1, "reason": "assigned"}, {"user": 2, "reason": "comment"}],
        "activity": [],
        "history": [],
        "assignee_exists_cache": None,
    }


def test_loading_twice_changes_nothing(res: Resources) -> None:
    load_scene(res, EXAMPLE)
    first = snapshot(res)
    load_scene(res, EXAMPLE)
    assert snapshot(res) == first


def test_dangling_reference_names_the_path_and_imports_nothing(res: Resources) -> None:
    doc = copy.deepcopy(EXAMPLE)
    doc["groups"] += [
        {"id": 102, "project": 4503599627370506},
        {"id": 103, "project": 4503599627370506},
        {"id": 104, "project": 99},
    ]
    with pytest.raises(InvalidInput, match=r"groups\[4\]\.project: no such project 99"):
        load_scene(res, doc)
    assert all(rows == [] for rows in snapshot(res).values())


def test_cli_load_of_a_broken_file_exits_non_zero_naming_the_path(
    res: Resources, settings_env: dict[str, str], tmp_path: Path
) -> None:
    doc = copy.deepcopy(EXAMPLE)
    doc["groups"].append({"id": 105, "project": 99})
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(doc))
    proc = jira_sync(settings_env, "load", str(broken))
    assert proc.returncode == 2
    assert "groups[2].project: no such project 99" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert all(rows == [] for rows in snapshot(res).values())


def test_cli_load_of_invalid_json_names_the_file(
    res: Resources, settings_env: dict[str, str], tmp_path: Path
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    proc = jira_sync(settings_env, "load", str(bad))
    assert proc.returncode == 2
    assert "bad.json: not valid JSON" in proc.stderr


def test_references_to_rows_already_loaded_are_accepted(res: Resources) -> None:
    load_scene(res, EXAMPLE)
    load_scene(res, {"groups": [{"id": 200, "project": 4503599627370506, "title": "later"}]})
    assert groups.show_group(res, 200)["project"] == 4503599627370506


def test_a_group_loads_with_its_status_and_shows_it(res: Resources) -> None:
    doc = copy.deepcopy(EXAMPLE)
    doc["groups"][0].update(status="resolved", resolved_at="2026-11-29T11:00:00Z")
    load_scene(res, doc)
    shown = groups.show_group(res, 100)
    assert (shown["status"], shown["resolved_at"]) == ("resolved", "2026-11-29T11:00:00+00:00")
    doc["groups"][1].update(status="closed")
    doc["groups"][0].update(status="unresolved")
    with pytest.raises(InvalidInput) as caught:
        load_scene(res, doc)
    assert "groups[1].status: must be one of unresolved, resolved" in str(caught.value)
    assert "groups[0].resolved_at: only a resolved group has one" in str(caught.value)


def test_credentials_are_encrypted_at_rest(res: Resources) -> None:
    load_scene(res, EXAMPLE)
    rows = snapshot(res)
    stored = json.dumps(rows["integration"] + rows["integration_credential"], default=str)
    for secret in ("example-access-token", "example-webhook-secret-change-me", "PRIVATE KEY"):
        assert secret not in stored


def test_reading_fills_the_assignee_exists_cache(res: Resources) -> None:
    load_scene(res, EXAMPLE)
    assert groups.show_group(res, 100)["assignee_exists_cache"] is None
    assert groups.show_group(res, 100)["assignee_exists_cache"] is True
    assert res.redis.ttl(cache.assignee_exists_key(100)) > 3600
    assert groups.assignee_exists(res, 101) is False
    assert 0 < res.redis.ttl(cache.assignee_exists_key(101)) <= 60


def test_show_of_a_missing_group_exits_5(res: Resources, settings_env: dict[str, str]) -> None:
    proc = jira_sync(settings_env, "group", "show", "424242")
    assert proc.returncode == 5
    assert "no such group 424242" in proc.stderr


def test_migrate_is_safe_to_run_twice(res: Resources, settings_env: dict[str, str]) -> None:
    first = jira_sync(settings_env, "migrate")
    second = jira_sync(settings_env, "migrate")
    assert first.returncode == 0 and second.returncode == 0
    assert "applied 0 migration(s)" in second.stdout
