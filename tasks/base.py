"""The step base class: retries (worker.domain.retry), failure recording and per-process
resources."""

from __future__ import annotations

import logging
import traceback
from typing import Any

from celery import Task

from worker.domain.errors import classify
from worker.domain.retry import backoff_s, may_retry
from worker.runtime import resources
from worker.store import failures

log = logging.getLogger(__name__)


class Step(Task):  # type: ignore[misc]
    """A pipeline step: retries transient errors with backoff, records what it cannot do."""

    abstract = True
    typing = True

    @property
    def resources(self) -> resources.Resources:
        return resources.current()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        settings = self.resources.settings
        try:
            return self.run(*args, **kwargs)
        except BaseException as exc:
            if not isinstance(exc, Exception) or _is_celery_control(exc):
                raise
            retries = int(self.request.retries or 0)
            cap_s = settings.retry_backoff_max_s
            if classify(exc).retryable and may_retry(retries, settings.retry_budget_s, cap_s):
                countdown = backoff_s(retries, cap_s)
                log.warning(
                    "step.retry",
                    extra={
                        "task": self.name,
                        "task_id": self.request.id,
                        "attempt": retries + 1,
                        "countdown_s": round(countdown, 2),
                        "error": type(exc).__name__,
                        **_context(kwargs),
                    },
                )
                raise self.retry(exc=exc, countdown=countdown, max_retries=None) from exc
            self._record_failure(exc, args, kwargs, attempts=retries + 1)
            raise

    def record_item_failure(self, exc: Exception, kwargs: dict[str, Any], message: str) -> None:
        """A permanent failure of one item of this step while the others went on: a record of
        its own, whose kwargs make `failed replay` run the step for that item alone."""
        self._record_failure(exc, (), kwargs, attempts=1, message=message)

    def _record_failure(
        self,
        exc: Exception,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        attempts: int,
        message: str | None = None,
    ) -> None:
        record = failures.FailureRecord(
            task_name=self.name,
            task_id=str(self.request.id or ""),
            args=list(args),
            kwargs=dict(kwargs),
            error_type=type(exc).__name__,
            message=str(exc) if message is None else message,
            traceback="".join(traceback.format_exception(exc)),
            attempts=attempts,
        )
        log.error(
            "step.failed",
            extra={
                "task": self.name,
                "task_id": self.request.id,
                "error": record.error_type,
                "attempts": attempts,
                "kind": classify(exc).value,
                **_context(kwargs),
            },
        )
        failures.record(self.resources, record)


def _is_celery_control(exc: BaseException) -> bool:
    from celery.exceptions import Ignore, Reject, Retry

    return isinstance(exc, Retry | Ignore | Reject)


def _context(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {k: kwargs[k] for k in ("delivery_id", "project_id", "group_id") if k in kwargs}
