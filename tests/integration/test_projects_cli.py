"""`jira-sync project|snowflake|cache` against real workers, PostgreSQL and Redis."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tasks import pipeline
from tests.conftest import wait_for
from tests.integration.projects_scene import API, OTHER, RECENT, WEB, project_scene
from worker import cache
from worker.domain import snowflake
from worker.runtime.app import app
from worker.runtime.resources import Resources
from worker.services import projects
from worker.store.db import transaction
from worker.store.queries import projects as q

ROOT = Path(__file__).parents[2]
Scene = Callable[[dict[str, Any]], None]


def jira_sync(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", *args],
        env=env, cwd=ROOT, capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip


@pytest.fixture
def loaded(res: Resources, scene: Scene) -> None:
    scene(project_scene())


@pytest.fixture
def worker(start_worker: Callable[..., Any], loaded: None) -> Any:
    return start_worker(concurrency=2)


def fields(stdout: str) -> dict[str, str]:
    return dict(line.split(None, 1) for line in stdout.strip().splitlines())


def test_create_with_wait_prints_the_id_and_slug(
    res: Resources, settings_env: dict[str, str], worker: Any
) -> None:
    proc = jira_sync(
        settings_env, "project", "create", "--organization", "acme", "--name", "Web",
        "--team", "1", "--wait",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = fields(proc.stdout)
    assert out["slug"].startswith("web-")  # "Web" is taken
    assert snowflake.decode(int(out["id"])).region == res.settings.snowflake_region_id
    listed = json.loads(jira_sync(settings_env, "project", "list", "--organization", "acme",
                                  "--json").stdout)  # fmt: skip
    assert {"id": int(out["id"]), "slug": out["slug"], "name": "Web", "status": "active"} in listed


def test_explicit_slug_taken_is_refused_before_anything_is_queued(
    res: Resources, settings_env: dict[str, str], loaded: None
) -> None:
    for slug in ("api", "web"):  # taken by API and by Web (compared case-insensitively)
        proc = jira_sync(settings_env, "project", "create", "--organization", "acme",
                         "--name", "x", "--slug", slug)  # fmt: skip
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.strip().splitlines() == [
            f"jira-sync: error: slug {slug!r} is already used in this organization"
        ]
    with res.pool.connection() as conn:
        assert conn.execute("SELECT count(*) AS n FROM project_request").fetchone() == {"n": 0}


def test_a_slug_taken_by_a_racing_save_is_refused_on_the_worker(
    res: Resources, worker: Any
) -> None:
    # Both requests pass the early check: neither slug is reserved until a worker picks it.
    with transaction(res.pool) as conn:
        org = q.organization_id(conn, "acme")
        assert org is not None
        racing = [projects.request_create(conn, org, name, "fresh", []) for name in "xy"]
    for request_id in racing:
        pipeline.start_project_save(app, request_id)

    def finished() -> list[q.ProjectRequest]:
        with transaction(res.pool) as conn:
            reqs = [q.get_request(conn, r) for r in racing]
        return [r for r in reqs if r is not None and r.status != "pending"]

    wait_for(lambda: len(finished()) == 2, 30, "both saves to finish")
    assert sorted(r.status for r in finished()) == ["done", "failed"]
    [refused] = [r for r in finished() if r.status == "failed"]
    assert "already used" in (refused.error or "")
    with res.pool.connection() as conn:
        failed = conn.execute("SELECT task_name FROM failed_task").fetchall()
    assert failed == [{"task_name": pipeline.PROJECT_CHOOSE_SLUG}]


def test_explicit_slug_breaking_a_rule_is_refused_at_once(
    settings_env: dict[str, str], loaded: None
) -> None:
    proc = jira_sync(settings_env, "project", "create", "--organization", "acme",
                     "--name", "x", "--slug", "Audit-Log")  # fmt: skip
    assert proc.returncode == 2
    assert "reserved" in proc.stderr


def test_wait_without_workers_times_out_naming_the_request(
    settings_env: dict[str, str], loaded: None
) -> None:
    proc = jira_sync(settings_env, "project", "create", "--organization", "acme",
                     "--name", "Lonely", "--wait", "--timeout", "1")  # fmt: skip
    assert proc.returncode == 1
    assert "still pending after 1s" in proc.stderr


def test_delete_with_wait_then_again_is_nothing_to_do(
    res: Resources, settings_env: dict[str, str], worker: Any
) -> None:
    for group_id in (*RECENT, *OTHER):
        cache.fill_assignee_exists(res.redis, group_id, True)
    proc = jira_sync(settings_env, "project", "delete", str(WEB), "--wait")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == (
        f"deleted project {WEB}; purged the caches of 2 recently seen group(s)"
    )
    assert not any(cache.cached_assignee_exists(res.redis, g) for g in RECENT)
    assert all(cache.cached_assignee_exists(res.redis, g) for g in OTHER)
    again = jira_sync(settings_env, "project", "delete", str(WEB), "--wait")
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == f"Nothing to do: no project {WEB}"


def test_twenty_concurrent_saves_on_real_workers_get_distinct_slugs(
    res: Resources, start_worker: Callable[..., Any], loaded: None
) -> None:
    with transaction(res.pool) as conn:
        org = q.organization_id(conn, "acme")
        assert org is not None
        request_ids = [projects.request_create(conn, org, "Mobile", None, []) for _ in range(20)]
    start_worker(concurrency=2)
    start_worker(concurrency=2)
    for request_id in request_ids:
        pipeline.start_project_save(app, request_id)

    def finished() -> list[q.ProjectRequest] | None:
        with transaction(res.pool) as conn:
            reqs = [q.get_request(conn, r) for r in request_ids]
        done = [r for r in reqs if r is not None and r.status != "pending"]
        return done if len(done) == len(request_ids) else None

    reqs = wait_for(finished, 60, "20 saves to finish")
    assert {r.status for r in reqs} == {"done"}
    slugs = {r.slug for r in reqs}
    assert len(slugs) == 20
    assert "mobile" in slugs
    assert len({r.project_id for r in reqs}) == 20


def test_snowflake_decode_prints_version_time_region_and_sequence(
    settings_env: dict[str, str],
) -> None:
    snowflake_id = snowflake.encode(86_400 + 3661, 5, 9)
    proc = jira_sync(settings_env, "snowflake", "decode", str(snowflake_id), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {
        "id": snowflake_id,
        "version": 1,
        "time": "2022-08-09T01:01:01Z",
        "seconds": 90_061,
        "region": 5,
        "sequence": 9,
    }


def test_snowflake_decode_refuses_an_integer_outside_the_id_range(
    settings_env: dict[str, str],
) -> None:
    proc = jira_sync(settings_env, "snowflake", "decode", "12345")
    assert proc.returncode == 2
    assert "snowflake id must be" in proc.stderr


def test_cache_purge_of_a_project_and_of_one_group(
    res: Resources, settings_env: dict[str, str], loaded: None
) -> None:
    for group_id in (*RECENT, *OTHER):
        cache.fill_assignee_exists(res.redis, group_id, True)
    proc = jira_sync(settings_env, "cache", "purge", "--project", str(WEB))
    assert proc.returncode == 0, proc.stderr
    assert "2 group(s)" in proc.stdout
    assert not any(cache.cached_assignee_exists(res.redis, g) for g in RECENT)
    wrong = jira_sync(settings_env, "cache", "purge", "--project", str(WEB), "--group", "201")
    assert wrong.returncode == 5
    assert all(cache.cached_assignee_exists(res.redis, g) for g in OTHER)
    one = jira_sync(settings_env, "cache", "purge", "--project", str(API), "--group", "201")
    assert one.returncode == 0, one.stderr
    assert [cache.cached_assignee_exists(res.redis, g) for g in OTHER] == [None, True]


def test_failed_save_replayed_after_the_cause_is_fixed_finishes(
    res: Resources, settings_env: dict[str, str], worker: Any
) -> None:
    with transaction(res.pool) as conn:
        org = q.organization_id(conn, "acme")
        assert org is not None
        request_id = projects.request_create(conn, org, "x", "fresh", [])
        conn.execute("UPDATE project SET slug = 'fresh' WHERE id = %s", (API,))  # a racing save
    pipeline.start_project_save(app, request_id)
    wait_for(lambda: not projects.is_pending(res, request_id), 30, "the save to fail")
    with res.pool.connection() as conn:
        failed = conn.execute("SELECT id, kwargs FROM failed_task").fetchone()
        conn.execute("DELETE FROM project WHERE id = %s", (API,))
    assert failed is not None
    replay = jira_sync(settings_env, "failed", "replay", str(failed["id"]))
    assert replay.returncode == 0, replay.stderr

    def done() -> q.ProjectRequest | None:
        with transaction(res.pool) as conn:
            req = q.get_request(conn, failed["kwargs"]["request_id"])
        return req if req is not None and req.status == "done" else None

    req = wait_for(done, 30, "the replayed save to finish")
    assert req.slug == "fresh"
    assert req.project_id is not None
    assert snowflake.decode(req.project_id).version == 1
