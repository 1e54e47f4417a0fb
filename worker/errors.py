"""The error tree. Every step decides retry or not by the branch an error sits on.

JiraSyncError
|- RetryableError            transient: retried with backoff, then recorded as failed
|   |- DatabaseUnavailable
|   |- JiraUnavailable
|   |- CacheUnavailable
|   '- IdSpaceExhausted
'- PermanentError            retrying cannot help: recorded as failed at once
    |- BadPayload
    |- NotFound
    |- JiraRejected
    |- NoIdAvailable
    '- InvalidInput
"""

from __future__ import annotations


class JiraSyncError(Exception):
    """Raised for every failure this service knows how to classify."""


class RetryableError(JiraSyncError):
    """Raised when a step may succeed if tried again later."""


class PermanentError(JiraSyncError):
    """Raised when a step can never succeed with the same input."""


class DatabaseUnavailable(RetryableError):
    """Raised when PostgreSQL cannot be reached or aborts the transaction for concurrency."""


class JiraUnavailable(RetryableError):
    """Raised when Jira answers 5xx, times out or cannot be reached."""


class CacheUnavailable(RetryableError):
    """Raised when Redis (the cache) cannot be reached or times out."""


class IdSpaceExhausted(PermanentError):
    """Raised when five snowflake ids in a row collided (id space exhausted)."""


class BadPayload(PermanentError):
    """Raised when a stored webhook body does not have the shape the pipeline needs."""


class NotFound(PermanentError):
    """Raised when a row a step was given by id no longer exists."""


class JiraRejected(PermanentError):
    """Raised when Jira answers 4xx or does not know the user we look for."""


class NoIdAvailable(PermanentError):
    """Raised when every sequence value of the current and 300 earlier seconds is used."""


class InvalidInput(PermanentError):
    """Raised when an operator's or caller's input breaks a documented rule."""
