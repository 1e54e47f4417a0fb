"""The step base class: retries (worker.domain.retry), failure recording and per-process
resources."""

from __future__ import annotations

import logging
import math
import traceback
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from celery import Task

from worker.domain.retry import backoff_s, may_retry
from worker.runtime import resources
from worker.services import failures
from worker.support.classify import classify

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


class Step(Task):  # type: ignore[misc]
    """A pipeline step: retries transient errors with backoff, records what it cannot do."""

    abstract = True
    typing = True
    # This call's keyword arguments, and the batch items a transient error sends again.
    # (None outside a call through Celery, e.g. `.run()` in a test: a transient error raises.)
    _kwargs: dict[str, Any] | None = None
    _deferred: list[tuple[Any, Exception]] | None = None
    # RETRY_BUDGET_S alone bounds the retries (may_retry): Celery's own count must not. Its
    # default of 3 would end an outage's fourth retry with the error escaping unrecorded.
    max_retries = None
    # The keyword argument holding a batch step's items (None: not a batch step).
    batch_kwarg: str | None = None

    @property
    def resources(self) -> resources.Resources:
        return resources.current()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self._kwargs, self._deferred = kwargs, []
        try:
            result = self.run(*args, **kwargs)
        except BaseException as exc:
            if not isinstance(exc, Exception) or _is_celery_control(exc):
                raise
            if self._retry_or_give_up(exc, args, kwargs, self._per_item(kwargs)):
                raise  # gave up: recorded per item
        deferred, self._deferred = self._deferred, None
        if deferred:
            # Only the items that met a transient error go again; the others are done.
            key = self.batch_kwarg
            assert key is not None
            narrowed = {**_without_legacy(kwargs), key: [item for item, _ in deferred]}
            self._retry_or_give_up(deferred[0][1], args, narrowed, self._per_item(narrowed))
        return result

    def _retry_or_give_up(
        self,
        exc: Exception,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        items: list[dict[str, Any]],
    ) -> bool:
        """Send the step again with `kwargs` after a backoff while the error is transient
        and the retry budget lasts (raises Celery's Retry); otherwise record a failure per
        item of `items` and return True."""
        settings = self.resources.settings
        retries = int(self.request.retries or 0)
        cap_s = settings.retry_backoff_max_s
        if classify(exc).retryable and may_retry(retries, settings.retry_budget_s, cap_s):
            countdown = backoff_s(retries, cap_s)
            # A site that answered 429 is not called again before its Retry-After.
            countdown = max(countdown, getattr(exc, "retry_after_s", 0.0))
            if settings.broker_is_amqp:
                # RabbitMQ's native delayed delivery counts whole seconds (at least 1):
                # rounding up keeps every wait at least as long as the budget assumes.
                countdown = float(math.ceil(countdown))
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
            raise self.retry(args=args, kwargs=kwargs, exc=exc, countdown=countdown) from exc
        # A batch that gives up is recorded per item: each replays (and is listed) alone.
        for item_kwargs in items:
            self._record_failure(exc, args, item_kwargs, attempts=retries + 1)
        return True

    def each(self, items: Iterable[T], work: Callable[[T], R]) -> list[R]:
        """Run `work` on each item of this batch step. A permanent failure of one item is
        recorded for that item alone; a transient one (its Jira down, a lock) sends that
        item again after a backoff, alone with the others that met one, once the step has
        finished the rest: either way the other items go on (every item is idempotent)."""
        results = []
        for item in items:
            try:
                results.append(work(item))
            except Exception as exc:
                if _is_celery_control(exc):
                    raise
                assert self.batch_kwarg is not None, f"{self.name} is not a batch step"
                one = list(item) if isinstance(item, tuple) else item  # as JSON will hold it
                if classify(exc).retryable:
                    if self._deferred is None:
                        raise
                    self._deferred.append((one, exc))
                    continue
                self.record_item_failure(exc, {self.batch_kwarg: [one]}, str(exc))
        return results

    def _per_item(self, kwargs: dict[str, Any]) -> list[dict[str, Any]]:
        key = self.batch_kwarg
        items = kwargs.get(key) if key else None
        if key is None or not isinstance(items, list) or len(items) < 2:
            return [kwargs]
        return [{**kwargs, key: [item]} for item in items]

    def record_item_failure(self, exc: Exception, kwargs: dict[str, Any], message: str) -> None:
        """A permanent failure of one item of this step while the others went on: a record of
        its own, whose kwargs make `failed replay` run the step for that item alone (with the
        step's other arguments, such as the instance a change came from)."""
        step_kwargs = _without_legacy(self._kwargs or {})
        self._record_failure(exc, (), {**step_kwargs, **kwargs}, attempts=1, message=message)

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


class DeliveryBatchStep(Step):
    """A step over `delivery_ids`; a delivery that fails permanently is recorded alone."""

    abstract = True
    batch_kwarg = "delivery_ids"


def delivery_ids_of(delivery_ids: list[int] | None, legacy: dict[str, int]) -> list[int]:
    """The batch; a message of the single-delivery form sent before batching (`delivery_id`,
    from a broker or a failed record of then) is a batch of one."""
    single = legacy.get("delivery_id")
    return list(delivery_ids or []) + ([single] if single is not None else [])


class ChangeBatchStep(Step):
    """A step over `changes` ([delivery id, group id] pairs); a change that fails permanently
    is recorded alone."""

    abstract = True
    batch_kwarg = "changes"


class GroupBatchStep(Step):
    """A step over `group_ids`; a group that fails permanently is recorded alone."""

    abstract = True
    batch_kwarg = "group_ids"


def changes_of(changes: list[list[int]] | None, legacy: dict[str, int]) -> list[tuple[int, int]]:
    """The batch; a message of the single-change form sent before batching (`delivery_id`
    and `group_id`) is a batch of one."""
    found = [(int(d), int(g)) for d, g in changes or []]
    if "delivery_id" in legacy and "group_id" in legacy:
        found.append((legacy["delivery_id"], legacy["group_id"]))
    return found


# The single-item keys of messages sent before batching (see delivery_ids_of, changes_of).
LEGACY_ITEM_KWARGS = ("delivery_id", "group_id")


def _without_legacy(kwargs: dict[str, Any]) -> dict[str, Any]:
    """A call's arguments but its single-item legacy ones: what every item of it shares."""
    return {k: v for k, v in kwargs.items() if k not in LEGACY_ITEM_KWARGS}


def _is_celery_control(exc: BaseException) -> bool:
    from celery.exceptions import Ignore, Reject, Retry

    return isinstance(exc, Retry | Ignore | Reject)


CONTEXT_KWARGS = (
    "delivery_id",
    "project_id",
    "group_id",
    "delivery_ids",
    "changes",
    "group_ids",
    "integration_id",
)


def _context(kwargs: dict[str, Any]) -> dict[str, Any]:
    found = {k: kwargs[k] for k in CONTEXT_KWARGS if k in kwargs}
    delivery_id = failures.delivery_of(kwargs)  # the single item of a batch, named
    if delivery_id is not None:
        found["delivery_id"] = delivery_id
    return found
