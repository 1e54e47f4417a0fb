"""Numeric codes stored in the database, kept compatible with the original system."""

from __future__ import annotations

from enum import IntEnum


class ActivityType(IntEnum):
    SET_RESOLVED = 1
    SET_UNRESOLVED = 2
    ASSIGNED = 11
    UNASSIGNED = 12


class HistoryStatus(IntEnum):
    UNRESOLVED = 0
    RESOLVED = 1
    ASSIGNED = 5
    UNASSIGNED = 6


class SubscriptionReason(IntEnum):
    UNKNOWN = 0
    COMMENT = 1
    ASSIGNED = 2
    BOOKMARK = 3
    STATUS_CHANGE = 4
    DEPLOY_SETTING = 5
    MENTIONED = 6
    TEAM_MENTIONED = 7


def reason_name(code: int) -> str:
    try:
        return SubscriptionReason(code).name.lower()
    except ValueError:
        return str(code)
