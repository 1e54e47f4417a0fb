"""The error tree, and `classify`: the one place that decides what kind of failure an
exception is. Steps retry by it, the receiver answers by it, the CLI exits by it.

JiraSyncError
|- RetryableError                 may pass if tried again: retried with backoff, then recorded
|   |- Unavailable                a server we depend on cannot be reached     -> UNAVAILABLE
|   |   |- DatabaseUnavailable
|   |   |- CacheUnavailable
|   |   |- BrokerUnavailable
|   |   '- JiraUnavailable
|   '- (others, e.g. SlugLockBusy) lost a race with another worker            -> TRANSIENT
'- PermanentError                 retrying cannot help: recorded as failed at once
    |- InvalidInput               an operator's or caller's input breaks a rule -> BAD_INPUT
    |- BadPayload                 a stored webhook body lacks what is needed  -> BAD_INPUT
    |- NotFound                                                               -> PERMANENT
    |- JiraRejected                                                           -> PERMANENT
    |   '- JiraUserNotFound
    |- NoIdAvailable                                                          -> PERMANENT
    '- IdSpaceExhausted                                                       -> PERMANENT

Library errors are classified too, so no caller needs to know them: a lost connection to
PostgreSQL, Redis, the broker or Jira (or a pool that has none to give) is UNAVAILABLE; a
serialization failure, deadlock or lock timeout is TRANSIENT; a batch of messages that kombu
could not publish is what made it fail (its cause); anything else is PERMANENT.
"""

from __future__ import annotations

import enum

import psycopg
import redis
import requests
from kombu.exceptions import BatchPublishError
from kombu.exceptions import OperationalError as KombuOperationalError
from psycopg import errors as pg_errors
from psycopg_pool import PoolTimeout


class ErrorKind(enum.Enum):
    """What a failure means for whoever meets it."""

    TRANSIENT = "transient"  # lost a race: try again soon
    UNAVAILABLE = "unavailable"  # a server is down: try again later (503, exit 4)
    BAD_INPUT = "bad_input"  # the input breaks a rule: say which (400, exit 2)
    PERMANENT = "permanent"  # nothing will change by trying again

    @property
    def retryable(self) -> bool:
        return self in (ErrorKind.TRANSIENT, ErrorKind.UNAVAILABLE)


class JiraSyncError(Exception):
    """Raised for every failure this service knows how to classify."""


class RetryableError(JiraSyncError):
    """Raised when a step may succeed if tried again later."""


class Unavailable(RetryableError):
    """Raised when a server this service depends on cannot be reached."""


class PermanentError(JiraSyncError):
    """Raised when a step can never succeed with the same input."""


class DatabaseUnavailable(Unavailable):
    """Raised when PostgreSQL cannot be reached or aborts the transaction for concurrency."""


class JiraUnavailable(Unavailable):
    """Raised when Jira answers 5xx, times out or cannot be reached."""


class CacheUnavailable(Unavailable):
    """Raised when Redis (the cache) cannot be reached or times out."""


class BrokerUnavailable(Unavailable):
    """Raised when the Celery broker cannot be reached."""


class IdSpaceExhausted(PermanentError):
    """Raised when five snowflake ids in a row collided (id space exhausted)."""


class BadPayload(PermanentError):
    """Raised when a stored webhook body does not have the shape the pipeline needs."""


class NotFound(PermanentError):
    """Raised when a row a step was given by id no longer exists."""


class JiraRejected(PermanentError):
    """Raised when Jira answers 4xx (`status`) or an answer we cannot use (`status` None)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class JiraUserNotFound(JiraRejected):
    """Raised when no assignable Jira user on an issue has the assignee's email."""


class NoIdAvailable(PermanentError):
    """Raised when every sequence value of the current and 300 earlier seconds is used."""


class InvalidInput(PermanentError):
    """Raised when an operator's or caller's input breaks a documented rule."""


# A transaction that lost a race with another: the same work succeeds when tried again.
_RACES: tuple[type[BaseException], ...] = (
    pg_errors.SerializationFailure,
    pg_errors.DeadlockDetected,
    pg_errors.LockNotAvailable,
)

# A server went away, refused us or did not answer in time.
_UNREACHABLE: tuple[type[BaseException], ...] = (
    psycopg.OperationalError,
    PoolTimeout,
    redis.ConnectionError,
    redis.TimeoutError,
    KombuOperationalError,
    requests.ConnectionError,
    requests.Timeout,
    ConnectionError,
    TimeoutError,
)


def classify(exc: BaseException) -> ErrorKind:
    """The kind of failure exc is (see the module docstring for the whole table)."""
    if isinstance(exc, BatchPublishError) and exc.__cause__ is not None:
        # kombu wraps whatever broke the publish (Redis gone mid-batch, say): a step whose
        # next messages may or may not have gone out is retried when that is (every step is
        # idempotent, so a message sent twice changes nothing).
        return classify(exc.__cause__)
    if isinstance(exc, InvalidInput | BadPayload):
        return ErrorKind.BAD_INPUT
    if isinstance(exc, PermanentError):
        return ErrorKind.PERMANENT
    if isinstance(exc, _RACES):
        return ErrorKind.TRANSIENT
    if isinstance(exc, (Unavailable, *_UNREACHABLE)):
        return ErrorKind.UNAVAILABLE
    if isinstance(exc, RetryableError):
        return ErrorKind.TRANSIENT
    return ErrorKind.PERMANENT
