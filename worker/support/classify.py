"""`classify`: the one place that decides what kind of failure an exception is, our own
(`worker.domain.errors`) and the drivers' alike, so no caller needs to know a driver's errors.

A lost connection to PostgreSQL, Redis, the broker or Jira (or a pool that has none to give)
is UNAVAILABLE; a serialization failure, deadlock or lock timeout is TRANSIENT; a batch of
messages that kombu could not publish is what made it fail (its cause); anything else is
PERMANENT.
"""

from __future__ import annotations

import psycopg
import redis
import requests
from kombu.exceptions import BatchPublishError
from kombu.exceptions import OperationalError as KombuOperationalError
from psycopg import errors as pg_errors
from psycopg_pool import PoolTimeout

from worker.domain.errors import (
    BadPayload,
    ErrorKind,
    InvalidInput,
    PermanentError,
    RetryableError,
    Unavailable,
)

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
