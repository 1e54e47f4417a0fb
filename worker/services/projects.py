"""Project save and delete (SPEC 5): the work of each step, over a project_request row.

Save:   choose_slug (serialized per organization) -> claim_id -> insert (id collisions retried)
Delete: delete_notification_settings -> delete (outbox + rows, one transaction) -> purge_caches

Every function takes a request id, re-reads fresh state and is safe to run again: a request
that is no longer pending is left alone.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

from psycopg import errors as pg_errors
from redis.exceptions import LockError

from worker import cache
from worker.cache import IdClaimer
from worker.domain import slugs
from worker.domain.errors import IdSpaceExhausted, InvalidInput, NotFound, RetryableError
from worker.runtime.resources import Resources
from worker.store.db import Connection, transaction
from worker.store.queries import projects as q

log = logging.getLogger(__name__)

SLUG_LOCK_KEY = "jira_sync:lock:project_slug:{organization_id}"
SLUG_LOCK_TIMEOUT_S = 10.0  # held for milliseconds; expires if its holder dies
SLUG_LOCK_WAIT_S = 5.0
ID_ATTEMPTS = 5
ID_SPACE_EXHAUSTED = "id space exhausted, try again in a second"

# Request ids start at 1: no request is excluded when none exists yet.
NO_REQUEST = 0


class SlugLockBusy(RetryableError):
    """Raised when another save of the same organization held the slug lock too long."""


# -- requests (what the CLI or another caller asks for) -------------------------------------


def request_create(
    conn: Connection, organization_id: int, name: str, slug: str | None, team_ids: list[int]
) -> int:
    """Record a create request; an explicit slug that breaks the rules or is taken is refused
    here already (the slug step checks again under its lock, for races)."""
    _check_explicit_slug(conn, organization_id, slug, None)
    _check_teams(conn, organization_id, team_ids)
    return q.insert_request(conn, "create", organization_id, None, name, slug, team_ids)


def request_rename(conn: Connection, project_id: int, name: str, slug: str | None) -> int:
    project = q.get_project(conn, project_id)
    if project is None:
        raise NotFound(f"no project {project_id}")
    _check_explicit_slug(conn, project.organization_id, slug, project_id)
    return q.insert_request(conn, "rename", project.organization_id, project_id, name, slug)


def request_delete(conn: Connection, project_id: int) -> int:
    """Record a delete request; a missing project is accepted (its delete does nothing)."""
    project = q.get_project(conn, project_id)
    organization_id = None if project is None else project.organization_id
    return q.insert_request(conn, "delete", organization_id, project_id)


def _check_explicit_slug(
    conn: Connection, organization_id: int, slug: str | None, project_id: int | None
) -> None:
    if slug is None:
        return
    if problem := slugs.slug_problem(slug):
        raise InvalidInput(problem)
    if q.slug_taken(conn, organization_id, slug, NO_REQUEST, project_id):
        raise InvalidInput(f"slug {slug!r} is already used in this organization")


def _check_teams(conn: Connection, organization_id: int, team_ids: list[int]) -> None:
    missing = set(team_ids) - q.teams_of_organization(conn, organization_id, team_ids)
    if missing:
        raise InvalidInput(f"no such team in this organization: {sorted(missing)}")


def _pending(conn: Connection, request_id: int) -> q.ProjectRequest | None:
    """The request, locked; None when it is done. A failed one is reopened: its step is
    being replayed."""
    req = q.get_request(conn, request_id, for_update=True)
    if req is None:
        raise NotFound(f"no project request {request_id}")
    if req.status == "failed":
        q.reopen_request(conn, request_id)
        return replace(req, status="pending", error=None, finished_at=None)
    return req if req.status == "pending" else None


def is_pending(res: Resources, request_id: int) -> bool:
    """Whether the request's chain still has work to do."""
    with transaction(res.pool) as conn:
        req = q.get_request(conn, request_id)
    return req is not None and req.status == "pending"


def fail(res: Resources, request_id: int, error: str) -> None:
    with transaction(res.pool) as conn:
        q.fail_request(conn, request_id, error)


# -- save -------------------------------------------------------------------------------------


@contextmanager
def slug_lock(res: Resources, organization_id: int) -> Iterator[None]:
    """Serialize slug choice within one organization (SPEC 5)."""
    lock = res.redis.lock(
        SLUG_LOCK_KEY.format(organization_id=organization_id),
        timeout=SLUG_LOCK_TIMEOUT_S,
        blocking_timeout=SLUG_LOCK_WAIT_S,
    )
    if not lock.acquire():
        raise SlugLockBusy(f"slug lock of organization {organization_id} is busy")
    try:
        yield
    finally:
        try:
            lock.release()
        except LockError:
            log.warning("project.slug_lock_expired", extra={"organization_id": organization_id})


def choose_slug(res: Resources, request_id: int) -> str | None:
    """Pick and reserve the slug of a save; the reservation is committed under the lock."""
    with transaction(res.pool) as conn:
        req = _pending(conn, request_id)
    if req is None or req.kind == "delete":
        return None
    if req.slug is not None:
        return req.slug
    assert req.organization_id is not None
    with slug_lock(res, req.organization_id), transaction(res.pool) as conn:
        req = _pending(conn, request_id)
        if req is None:
            return None
        slug = _decide_slug(conn, req)
        q.reserve_slug(conn, req.id, slug)
    log.info("project.slug_chosen", extra={"request_id": request_id, "slug": slug})
    return slug


def _decide_slug(conn: Connection, req: q.ProjectRequest) -> str:
    assert req.organization_id is not None
    org = req.organization_id

    def taken(slug: str) -> bool:
        return q.slug_taken(conn, org, slug, req.id, req.project_id)

    if req.kind == "rename":
        project = q.get_project(conn, req.project_id or 0)
        if project is None:
            raise NotFound(f"no project {req.project_id}")
        if req.requested_slug is None:
            return project.slug  # a rename keeps the slug unless asked otherwise
    if req.requested_slug is not None:
        if problem := slugs.slug_problem(req.requested_slug):
            raise InvalidInput(problem)
        if taken(req.requested_slug):
            raise InvalidInput(f"slug {req.requested_slug!r} is already used in this organization")
        return req.requested_slug
    try:
        return slugs.choose_slug(req.name or "", taken)
    except slugs.SlugUnavailable as exc:
        raise InvalidInput(str(exc)) from exc


def claimer(res: Resources) -> IdClaimer:
    return IdClaimer(res.redis, res.settings.snowflake_region_id, res.settings.snowflake_epoch_s)


def claim_id(res: Resources, request_id: int, now_s: int | None = None) -> int | None:
    """Claim a snowflake id for a create (once: a replay keeps the id already claimed)."""
    with transaction(res.pool) as conn:
        req = _pending(conn, request_id)
        if req is None or req.kind != "create":
            return None
        if req.project_id is not None:
            return req.project_id
    project_id = claimer(res).claim(now_s).id
    with transaction(res.pool) as conn:
        q.set_request_project(conn, request_id, project_id)
    return project_id


def insert(res: Resources, request_id: int, now_s: int | None = None) -> int | None:
    """Write the project; an id collision claims a new id, at most ID_ATTEMPTS in all."""
    for attempt in range(1, ID_ATTEMPTS + 1):
        try:
            return _write(res, request_id, now_s)
        except pg_errors.UniqueViolation as exc:
            if exc.diag.constraint_name == q.PROJECT_SLUG_CONSTRAINT:
                # Not an id collision: the slug was taken behind the reservation's back.
                raise InvalidInput(f"slug already used in this organization: {exc}") from exc
            if exc.diag.constraint_name != q.PROJECT_ID_CONSTRAINT:
                raise
            log.warning(
                "project.id_collision", extra={"request_id": request_id, "attempt": attempt}
            )
            if attempt == ID_ATTEMPTS:
                break
            new_id = claimer(res).claim(now_s).id
            with transaction(res.pool) as conn:
                q.set_request_project(conn, request_id, new_id)
    raise IdSpaceExhausted(ID_SPACE_EXHAUSTED)


def _write(res: Resources, request_id: int, now_s: int | None) -> int | None:
    with transaction(res.pool) as conn:
        req = _pending(conn, request_id)
        if req is None or req.kind == "delete":
            return None
        if req.slug is None:
            raise InvalidInput(f"project request {request_id} has no slug chosen yet")
        if req.kind == "rename":
            assert req.project_id is not None
            if q.get_project(conn, req.project_id, for_update=True) is None:
                raise NotFound(f"no project {req.project_id}")
            q.rename_project(conn, req.project_id, req.name or "", req.slug)
            q.finish_request(conn, request_id, "renamed")
            return req.project_id
        if req.project_id is None:
            raise InvalidInput(f"project request {request_id} has no id claimed yet")
        assert req.organization_id is not None
        _check_teams(conn, req.organization_id, req.team_ids)
        q.insert_project(
            conn, req.project_id, req.organization_id, req.name or "", req.slug, req.team_ids
        )
        q.finish_request(conn, request_id, "created")
    log.info("project.created", extra={"project_id": req.project_id, "slug": req.slug})
    return req.project_id


# -- delete -----------------------------------------------------------------------------------


def delete_notification_settings(res: Resources, project_id: int) -> int:
    with transaction(res.pool) as conn:
        return q.delete_notification_settings(conn, project_id)


def recent_group_ids(conn: Connection, project_id: int) -> Iterator[list[int]]:
    """The project's groups seen in the last 24 h, 1,000 ids per page."""
    after = 0
    while page := q.recent_group_ids(
        conn, project_id, cache.PROJECT_PURGE_WINDOW_S, after, cache.PURGE_BATCH
    ):
        yield page
        after = page[-1]


def delete(res: Resources, project_id: int, request_id: int) -> bool:
    """Outbox row and the project with its rows, in one transaction; False when it is gone."""
    with transaction(res.pool) as conn:
        req = _pending(conn, request_id)
        if req is None:
            return False
        project = q.get_project(conn, project_id, for_update=True)
        if project is None:
            return False
        # Collected before the delete: afterwards nothing says which groups it had.
        group_ids = [g for page in recent_group_ids(conn, project_id) for g in page]
        q.insert_project_update(conn, project.organization_id, project_id)
        q.delete_project(conn, project_id)
        q.set_purge_groups(conn, request_id, group_ids)
    log.info("project.deleted", extra={"project_id": project_id, "groups": len(group_ids)})
    return True


def purge_caches(res: Resources, project_id: int, request_id: int) -> int:
    """After the delete committed: purge the caches of the groups it had, then finish."""
    with transaction(res.pool) as conn:
        req = _pending(conn, request_id)
    if req is None:
        return 0
    group_ids = req.purge_group_ids or []
    cache.purge_group_caches(res.redis, group_ids)
    with transaction(res.pool) as conn:
        q.finish_request(conn, request_id, "missing" if req.purge_group_ids is None else "deleted")
    return len(group_ids)


def purge_project_caches(res: Resources, project_id: int) -> int:
    """SPEC 4.7's whole-project purge: groups seen in the last 24 h, in batches of 1,000."""
    purged = 0
    with transaction(res.pool) as conn:
        for page in recent_group_ids(conn, project_id):
            cache.purge_group_caches(res.redis, page)
            purged += len(page)
    return purged
