"""The error tree: what kind of failure each of our exceptions is. `worker.support.classify`
maps any exception (library errors included) onto it; steps retry by it, the receiver
answers by it, the CLI exits by it.

JiraSyncError
|- RetryableError                 may pass if tried again: retried with backoff, then recorded
|   |- Unavailable                a server we depend on cannot be reached     -> UNAVAILABLE
|   |   |- DatabaseUnavailable
|   |   |- CacheUnavailable
|   |   |- BrokerUnavailable
|   |   '- JiraUnavailable
|   |       '- JiraThrottled     (429: not before its Retry-After)
|   '- (others, e.g. SlugLockBusy) lost a race with another worker            -> TRANSIENT
'- PermanentError                 retrying cannot help: recorded as failed at once
    |- InvalidInput               an operator's or caller's input breaks a rule -> BAD_INPUT
    |- BadPayload                 a stored webhook body lacks what is needed  -> BAD_INPUT
    |- NotFound                                                               -> PERMANENT
    |- JiraRejected                                                           -> PERMANENT
    |   '- JiraUserNotFound
    |- NoIdAvailable                                                          -> PERMANENT
    '- IdSpaceExhausted                                                       -> PERMANENT

Library errors (lost connections, lock races, kombu's publish failures) are mapped onto the
same kinds by `worker.support.classify`, which knows the drivers; this module does not.
"""

from __future__ import annotations

import enum


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


class JiraThrottled(JiraUnavailable):
    """Raised when Jira answers 429 (rate limited), or when an earlier 429 of the same site
    asked every process to wait: nothing calls that site before `retry_after_s` has passed."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


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
