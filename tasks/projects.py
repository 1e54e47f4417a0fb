"""Steps: project save (slug, id, insert) and delete (settings, outbox + rows, cache purge).

Each step does its part of worker.services.projects over a project_request row, then sends
the next step while the request is still pending. Redis unreachable (the slug lock, the id
claim, the purge) is retried like any outage (`worker.support.classify`). A step that gives up marks
its request failed, so `jira-sync project create --wait` can tell.
"""

from __future__ import annotations

import logging
from typing import Any

from tasks import pipeline
from tasks.base import Step
from worker.domain.errors import DatabaseUnavailable
from worker.runtime.app import app
from worker.services import projects

log = logging.getLogger(__name__)


class ProjectStep(Step):
    """A project step: on top of the failed-task record, the request is marked failed."""

    abstract = True

    def _record_failure(
        self,
        exc: Exception,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        attempts: int,
        message: str | None = None,
    ) -> None:
        super()._record_failure(exc, args, kwargs, attempts, message)
        request_id = kwargs.get("request_id")
        if not isinstance(request_id, int):
            return
        try:
            projects.fail(self.resources, request_id, f"{type(exc).__name__}: {exc}")
        except DatabaseUnavailable:
            log.warning("project.request_unmarked", extra={"request_id": request_id})


def _next(step: Step, **kwargs: int) -> None:
    if projects.is_pending(step.resources, kwargs["request_id"]):
        pipeline.after_project_step(app, str(step.name), **kwargs)


@app.task(base=ProjectStep, bind=True, name=pipeline.PROJECT_CHOOSE_SLUG)
def choose_slug(self: Step, *, request_id: int) -> str | None:
    slug = projects.choose_slug(self.resources, request_id)
    _next(self, request_id=request_id)
    return slug


@app.task(base=ProjectStep, bind=True, name=pipeline.PROJECT_CLAIM_ID)
def claim_id(self: Step, *, request_id: int) -> int | None:
    project_id = projects.claim_id(self.resources, request_id)
    _next(self, request_id=request_id)
    return project_id


@app.task(base=ProjectStep, bind=True, name=pipeline.PROJECT_INSERT)
def insert(self: Step, *, request_id: int) -> int | None:
    return projects.insert(self.resources, request_id)


@app.task(base=ProjectStep, bind=True, name=pipeline.PROJECT_DELETE_SETTINGS)
def delete_notification_settings(self: Step, *, project_id: int, request_id: int) -> int:
    removed = projects.delete_notification_settings(self.resources, project_id)
    _next(self, project_id=project_id, request_id=request_id)
    return removed


@app.task(base=ProjectStep, bind=True, name=pipeline.PROJECT_DELETE)
def delete(self: Step, *, project_id: int, request_id: int) -> bool:
    deleted = projects.delete(self.resources, project_id, request_id)
    _next(self, project_id=project_id, request_id=request_id)
    return deleted


@app.task(base=ProjectStep, bind=True, name=pipeline.PROJECT_PURGE_CACHES)
def purge_caches(self: Step, *, project_id: int, request_id: int) -> int:
    return projects.purge_caches(self.resources, project_id, request_id)
