"""Project save (SPEC 5): slug choice, snowflake id, insert with id-collision retries."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.integration.projects_scene import API, WEB, project_scene
from worker import cache
from worker.domain import snowflake
from worker.domain.errors import IdSpaceExhausted, InvalidInput
from worker.runtime.resources import Resources
from worker.services import projects
from worker.store.db import transaction
from worker.store.queries import projects as q

Scene = Callable[[dict[str, Any]], None]


@pytest.fixture
def acme(res: Resources, scene: Scene) -> int:
    scene(project_scene())
    with transaction(res.pool) as conn:
        org = q.organization_id(conn, "acme")
    assert org is not None
    return org


def now_s(res: Resources) -> int:
    # A fixed second, ahead of Redis's clock so that its counters cannot expire mid-test.
    return snowflake.seconds_since_epoch(time.time(), res.settings.snowflake_epoch_s) + 60


def request(res: Resources, org: int, name: str, slug: str | None = None, teams: Any = ()) -> int:
    with transaction(res.pool) as conn:
        return projects.request_create(conn, org, name, slug, list(teams))


def take_slug(res: Resources, project_id: int, slug: str) -> None:
    """Another save took this slug meanwhile."""
    with res.pool.connection() as conn:
        conn.execute("UPDATE project SET slug = %s WHERE id = %s", (slug, project_id))


def save(res: Resources, request_id: int, at_s: int | None = None) -> q.ProjectRequest:
    """The save chain's three steps, in order, as the workers run them."""
    projects.choose_slug(res, request_id)
    projects.claim_id(res, request_id, at_s)
    projects.insert(res, request_id, at_s)
    return get_request(res, request_id)


def get_request(res: Resources, request_id: int) -> q.ProjectRequest:
    with transaction(res.pool) as conn:
        req = q.get_request(conn, request_id)
    assert req is not None
    return req


def get_project(res: Resources, project_id: int) -> q.Project | None:
    with transaction(res.pool) as conn:
        return q.get_project(conn, project_id)


def project_rows(res: Resources) -> list[dict[str, Any]]:
    with res.pool.connection() as conn:
        return conn.execute("SELECT id, slug FROM project ORDER BY id").fetchall()


def teams_of(res: Resources, project_id: int) -> list[int]:
    with res.pool.connection() as conn:
        rows = conn.execute("SELECT team_id FROM project_team WHERE project_id = %s", (project_id,))
        return [r["team_id"] for r in rows]


def test_new_project_gets_a_snowflake_id_of_this_region_and_a_slug(
    res: Resources, acme: int
) -> None:
    req = save(res, request(res, acme, "Backend Service", teams=[1]))
    assert (req.status, req.outcome, req.slug) == ("done", "created", "backend-service")
    assert req.project_id is not None
    fields = snowflake.decode(req.project_id)
    assert (fields.version, fields.region) == (1, res.settings.snowflake_region_id)
    project = get_project(res, req.project_id)
    assert project is not None
    assert (project.name, project.slug, project.organization_id) == (
        "Backend Service",
        "backend-service",
        acme,
    )
    assert teams_of(res, req.project_id) == [1]


def test_name_clashing_with_a_different_case_slug_gets_a_suffix(res: Resources, acme: int) -> None:
    req = save(res, request(res, acme, "WEB"))  # the scene holds slug "Web"
    assert req.slug is not None
    assert req.slug.startswith("web-")
    assert len(req.slug) == len("web-") + 2


def test_same_slug_in_another_organization_is_no_clash(res: Resources, acme: int) -> None:
    with transaction(res.pool) as conn:
        globex = q.organization_id(conn, "globex")
    assert globex is not None
    assert save(res, request(res, globex, "Web")).slug == "web"


def test_reserved_name_gets_a_random_12_char_slug(res: Resources, acme: int) -> None:
    req = save(res, request(res, acme, "Settings"))
    assert req.slug is not None
    assert len(req.slug) == 12


def test_unicode_name_is_folded_to_ascii(res: Resources, acme: int) -> None:
    assert save(res, request(res, acme, "Café Déjà Vu")).slug == "cafe-deja-vu"


def test_all_digit_name_gets_a_suffix(res: Resources, acme: int) -> None:
    req = save(res, request(res, acme, "2024"))
    assert req.slug is not None
    assert req.slug.startswith("2024-")


def test_explicit_slug_is_kept_as_given(res: Resources, acme: int) -> None:
    assert save(res, request(res, acme, "Anything", slug="my-slug")).slug == "my-slug"


def test_explicit_slug_breaking_a_rule_is_refused_before_anything_runs(
    res: Resources, acme: int
) -> None:
    with pytest.raises(InvalidInput, match="reserved"):
        request(res, acme, "x", slug="billing")
    with pytest.raises(InvalidInput, match="lowercase"):
        request(res, acme, "x", slug="My-Slug")


def test_explicit_slug_already_used_with_another_case_is_refused_not_altered(
    res: Resources, acme: int
) -> None:
    with pytest.raises(InvalidInput, match="already used"):
        request(res, acme, "x", slug="web")  # refused before a request exists
    # Taken between the request and its slug step (a racing save): refused on the worker.
    request_id = request(res, acme, "x", slug="fresh")
    take_slug(res, API, "Fresh")
    with pytest.raises(InvalidInput, match="already used"):
        projects.choose_slug(res, request_id)
    assert get_request(res, request_id).slug is None


def test_team_of_another_organization_is_refused(res: Resources, acme: int) -> None:
    with pytest.raises(InvalidInput, match="no such team"):
        request(res, acme, "x", teams=[2])


def test_forced_id_collision_is_retried_with_a_new_id(
    res: Resources, scene: Scene, acme: int
) -> None:
    at_s = now_s(res)
    taken = snowflake.encode(at_s, res.settings.snowflake_region_id, 0)
    scene(project_scene([{"id": taken, "organization": "acme", "slug": "old", "name": "Old"}]))
    req = save(res, request(res, acme, "New", teams=[1]), at_s)
    assert req.status == "done"
    assert req.project_id == snowflake.encode(at_s, res.settings.snowflake_region_id, 1)
    assert teams_of(res, req.project_id) == [1]


def test_five_id_collisions_in_a_row_fail_with_nothing_written(
    res: Resources, scene: Scene, acme: int
) -> None:
    at_s = now_s(res)
    region = res.settings.snowflake_region_id
    taken = [snowflake.encode(at_s, region, seq) for seq in range(5)]
    scene(
        project_scene(
            [{"id": i, "organization": "acme", "slug": f"p{n}", "name": "P"}
             for n, i in enumerate(taken)]
        )
    )  # fmt: skip
    before = project_rows(res)
    request_id = request(res, acme, "New", teams=[1])
    projects.choose_slug(res, request_id)
    projects.claim_id(res, request_id, at_s)
    with pytest.raises(IdSpaceExhausted, match="id space exhausted, try again in a second"):
        projects.insert(res, request_id, at_s)
    assert project_rows(res) == before
    assert teams_of(res, taken[-1]) == []
    # Five attempts in all: no sixth id was claimed.
    assert res.redis.get(cache.snowflake_counter_key(region, at_s)) == b"5"


def test_slug_taken_behind_the_reservation_is_not_retried_as_an_id_collision(
    res: Resources, scene: Scene, acme: int
) -> None:
    at_s = now_s(res)
    request_id = request(res, acme, "Fresh")
    projects.choose_slug(res, request_id)
    claimed = projects.claim_id(res, request_id, at_s)
    scene(project_scene([{"id": API + 100, "organization": "acme", "slug": "FRESH", "name": "F"}]))
    with pytest.raises(InvalidInput, match="slug already used"):
        projects.insert(res, request_id, at_s)
    assert get_request(res, request_id).project_id == claimed
    assert (
        res.redis.get(cache.snowflake_counter_key(res.settings.snowflake_region_id, at_s)) == b"1"
    )


def test_rename_keeps_the_id_and_the_slug(res: Resources, acme: int) -> None:
    with transaction(res.pool) as conn:
        request_id = projects.request_rename(conn, WEB, "Web Frontend", None)
    req = save(res, request_id)
    project = get_project(res, WEB)
    assert project is not None
    assert (req.outcome, project.name, project.slug) == ("renamed", "Web Frontend", "Web")
    assert project_rows(res) == [{"id": WEB, "slug": "Web"}, {"id": API, "slug": "api"}]


def test_rename_with_a_new_slug_keeps_the_id(res: Resources, acme: int) -> None:
    with transaction(res.pool) as conn:
        request_id = projects.request_rename(conn, WEB, "Frontend", "frontend")
    save(res, request_id)
    project = get_project(res, WEB)
    assert project is not None
    assert (project.id, project.slug) == (WEB, "frontend")


def test_steps_run_again_change_nothing(res: Resources, acme: int) -> None:
    request_id = request(res, acme, "Twice")
    first = save(res, request_id)
    second = save(res, request_id)
    assert first.project_id == second.project_id
    assert len(project_rows(res)) == 3


def test_twenty_concurrent_saves_of_one_name_get_distinct_slugs(res: Resources, acme: int) -> None:
    request_ids = [request(res, acme, "Mobile App") for _ in range(20)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(request_ids))

    def run(request_id: int) -> None:
        barrier.wait()
        try:
            save(res, request_id)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(r,)) for r in request_ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    slugs = [get_request(res, r).slug for r in request_ids]
    assert "mobile-app" in slugs
    assert len({s.lower() for s in slugs if s}) == 20
    assert all(get_request(res, r).status == "done" for r in request_ids)


def test_replayed_step_of_a_failed_request_reopens_and_finishes_it(
    res: Resources, acme: int
) -> None:
    request_id = request(res, acme, "Again", slug="fresh")
    take_slug(res, API, "fresh")
    with pytest.raises(InvalidInput):
        projects.choose_slug(res, request_id)
    projects.fail(res, request_id, "InvalidInput: slug 'fresh' is already used")
    take_slug(res, API, "api")
    req = save(res, request_id)
    assert (req.status, req.slug, req.error) == ("done", "fresh", None)
