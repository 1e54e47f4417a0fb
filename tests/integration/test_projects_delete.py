"""Project delete (SPEC 5): settings, one outbox row and every dependent row, cache purge."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.integration.projects_scene import API, OTHER, RECENT, STALE, WEB, project_scene
from worker import cache
from worker.runtime.resources import Resources
from worker.services import projects
from worker.store.db import transaction
from worker.store.queries import projects as q

Scene = Callable[[dict[str, Any]], None]
ALL_GROUPS = (*RECENT, STALE, *OTHER)


@pytest.fixture
def loaded(res: Resources, scene: Scene) -> None:
    scene(project_scene())
    for group_id in ALL_GROUPS:
        cache.fill_assignee_exists(res.redis, group_id, True)
        res.redis.set(cache.owners_debounce_key(group_id), "1", ex=cache.OWNERS_DEBOUNCE_TTL_S)


def delete(res: Resources, project_id: int) -> int:
    """The delete chain's three steps, in order, as the workers run them."""
    with transaction(res.pool) as conn:
        request_id = projects.request_delete(conn, project_id)
    projects.delete_notification_settings(res, project_id)
    projects.delete(res, project_id, request_id)
    projects.purge_caches(res, project_id, request_id)
    return request_id


def count(res: Resources, sql: str, *params: Any) -> int:
    with res.pool.connection() as conn:
        row = conn.execute(sql, params).fetchone()
        assert row is not None
        return int(next(iter(row.values())))


def cached(res: Resources, group_id: int) -> tuple[bool, bool]:
    return (
        bool(res.redis.exists(cache.assignee_exists_key(group_id))),
        bool(res.redis.exists(cache.owners_debounce_key(group_id))),
    )


def del_calls(res: Resources) -> int:
    return int(res.redis.info("commandstats").get("cmdstat_del", {}).get("calls", 0))


PER_PROJECT = {
    "project": "SELECT count(*) FROM project WHERE id = %s",
    "project_team": "SELECT count(*) FROM project_team WHERE project_id = %s",
    "issue_group": "SELECT count(*) FROM issue_group WHERE project_id = %s",
    "group_assignee": "SELECT count(*) FROM group_assignee WHERE project_id = %s",
    "group_subscription": "SELECT count(*) FROM group_subscription WHERE project_id = %s",
    "notification_setting": (
        "SELECT count(*) FROM notification_setting WHERE scope_identifier = %s"
    ),
}


def rows_of(res: Resources, project_id: int) -> dict[str, int]:
    return {table: count(res, sql, project_id) for table, sql in PER_PROJECT.items()}


def test_delete_removes_the_project_and_every_row_hanging_off_it(
    res: Resources, loaded: None
) -> None:
    delete(res, WEB)
    assert set(rows_of(res, WEB).values()) == {0}


def test_delete_leaves_the_other_project_alone(res: Resources, loaded: None) -> None:
    before = rows_of(res, API)
    delete(res, WEB)
    assert rows_of(res, API) == before
    assert all(cached(res, g) == (True, True) for g in OTHER)


def test_delete_writes_one_project_update_outbox_row(res: Resources, loaded: None) -> None:
    delete(res, WEB)
    with res.pool.connection() as conn:
        rows = conn.execute(
            "SELECT shard_scope, shard_identifier, category, object_identifier FROM outbox"
        ).fetchall()
        org = conn.execute("SELECT id FROM organization WHERE slug = 'acme'").fetchone()
    assert org is not None
    assert rows == [
        {
            "shard_scope": "organization",
            "shard_identifier": org["id"],
            "category": "PROJECT_UPDATE",
            "object_identifier": WEB,
        }
    ]


def test_delete_purges_the_caches_of_groups_seen_in_the_last_24h(
    res: Resources, loaded: None
) -> None:
    request_id = delete(res, WEB)
    assert [cached(res, g) for g in RECENT] == [(False, False), (False, False)]
    # Seen two days ago: outside the purge window, its keys are left to expire.
    assert cached(res, STALE) == (True, True)
    with transaction(res.pool) as conn:
        req = q.get_request(conn, request_id)
    assert req is not None
    assert (req.status, req.outcome, sorted(req.purge_group_ids or [])) == (
        "done",
        "deleted",
        sorted(RECENT),
    )


def test_deleting_twice_is_safe_and_writes_no_second_outbox_row(
    res: Resources, loaded: None
) -> None:
    delete(res, WEB)
    cache.fill_assignee_exists(res.redis, OTHER[0], True)
    delete(res, WEB)
    assert count(res, "SELECT count(*) FROM outbox") == 1
    assert rows_of(res, API)["project"] == 1


def test_deleting_a_missing_project_is_a_no_op_success(res: Resources, loaded: None) -> None:
    request_id = delete(res, 12345)
    with transaction(res.pool) as conn:
        req = q.get_request(conn, request_id)
    assert req is not None
    assert (req.status, req.outcome) == ("done", "missing")
    assert count(res, "SELECT count(*) FROM outbox") == 0


def test_delete_step_run_again_after_commit_still_purges(res: Resources, loaded: None) -> None:
    with transaction(res.pool) as conn:
        request_id = projects.request_delete(conn, WEB)
    projects.delete_notification_settings(res, WEB)
    projects.delete(res, WEB, request_id)
    # Redelivered after its commit (the worker died before acking): nothing more happens...
    assert projects.delete(res, WEB, request_id) is False
    # ...and the purge still knows the groups collected before the rows went away.
    projects.purge_caches(res, WEB, request_id)
    assert [cached(res, g) for g in RECENT] == [(False, False), (False, False)]
    assert count(res, "SELECT count(*) FROM outbox") == 1


def test_whole_project_purge_pages_through_groups_in_batches(
    res: Resources, loaded: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cache, "PURGE_BATCH", 1)
    deletes_before = del_calls(res)
    assert projects.purge_project_caches(res, WEB) == 2
    assert del_calls(res) - deletes_before == 2  # 2 pages of 1 group, both caches in one DEL
    assert [cached(res, g) for g in RECENT] == [(False, False), (False, False)]
    assert cached(res, STALE) == (True, True)
    assert all(cached(res, g) == (True, True) for g in OTHER)
