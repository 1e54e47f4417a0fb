"""`jira-sync explain` (SPEC 16): one timeline, in Jira order, of every delivery (webhook or
reconcile) and every change made here that touched an issue or a group, each with the rule
that decided it and the outbound pushes it caused with Jira's answers.

It reads indexed rows only (store/queries/explain.py): the deliveries of the issues, what
each decided per group, its pushes and failed-task records, and the group's activity that no
delivery caused.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from worker.domain.errors import NotFound
from worker.domain.event import identity_of
from worker.domain.model import ActivityType
from worker.runtime.resources import Resources
from worker.store.db import transaction
from worker.store.queries import explain as q
from worker.store.queries.effects import Effect

# What each stored outcome means, as the rule that decided it.
RULES = {
    "assigned": "applied",
    "unassigned": "applied",
    "resolved": "applied",
    "unresolved": "applied",
    "stale": "stale",
    "echo": "echo",
    "unchanged": "no change",
    "no-resolution-change": "no change",
    "no-assignee-change": "no change",
    "user-not-found": "user-not-found",
    "missing-assignee-email": "user-not-found",
    "no-affected-groups": "not linked",
    "migrated": "migrated",
}
WHY = {
    "applied": "the newest event for the group: applied",
    "stale": "older (Jira time) than an event already applied to the group: dropped",
    "echo": "Jira announcing a move this service made itself: nothing to apply",
    "no change": "the group already was in that state",
    "user-not-found": "no user here matches the Jira assignee",
    "not linked": "no linked group with sync on in this direction",
    "migrated": "the project moved to Jira Cloud: deliveries from this instance change nothing",
    "failed": "a step gave up: see the failed-task record",
    "pending": "not finished yet",
}


@dataclass
class Entry:
    """One line of the timeline."""

    at: str  # Jira's time of the event (ISO 8601, UTC); for a change made here, when it was
    source: str  # webhook, reconcile, or here
    what: str
    rule: str
    why: str
    delivery_id: int | None = None
    integration_id: int | None = None
    issue_key: str | None = None
    groups: dict[str, str] = field(default_factory=dict)  # group id -> its outcome
    pushes: list[dict[str, Any]] = field(default_factory=list)
    failed_records: list[int] = field(default_factory=list)
    sort_key: tuple[int, int] = (0, 0)


def _iso_ms(ms: int | None) -> str:
    if ms is None:
        return "?"
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


def _who(assignee: dict[str, Any] | None) -> str:
    if not assignee:
        return "nobody"
    shown = {k: v for k, v in assignee.items() if isinstance(v, str) and v.strip()}
    name = shown.get("displayName") or shown.get("name") or "?"
    identity = identity_of(shown)
    email = shown.get("emailAddress")
    parts = [p for p in (identity, email) if p]
    return f"{name} ({', '.join(parts)})" if parts else name


def _delivery_entries(
    d: q.Delivery,
    effects: list[Effect],
    pushes: list[q.Push],
    failed: list[q.FailedRecord],
) -> list[Entry]:
    """A delivery's assignee part and status part, each an entry when the delivery had it."""

    def entry(what: str, rule: str, why: str, groups: dict[str, str]) -> Entry:
        return Entry(
            at=_iso_ms(d.event_ts),
            source=d.source,
            what=what,
            rule=rule,
            why=why,
            delivery_id=d.id,
            integration_id=d.integration_id,
            issue_key=d.issue_key,
            groups=groups,
            failed_records=[r.id for r in failed],
            sort_key=(d.event_ts or 0, d.id),
        )

    entries = []
    assignee_part = d.outcome not in (None, "no-assignee-change") or not d.status_outcome
    if assignee_part:
        rule = (
            "failed" if d.status == "failed" and failed else RULES.get(d.outcome or "", "pending")
        )
        why = WHY.get(rule, "")
        if d.outcome == "user-not-found":
            why = f"{_who(d.assignee)} matches no user here (jira-sync users unmapped)"
        if d.outcome == "missing-assignee-email":
            why = "the body names the assignee by neither identity nor e-mail"
        if rule == "failed":
            why = "; ".join(f"record {r.id}: {r.error_type}: {r.message[:160]}" for r in failed)
        assigned = entry(
            f"assignee -> {_who(d.assignee)}",
            rule,
            why,
            {str(e.group_id): e.outcome for e in effects},
        )
        assigned.pushes = [
            {
                "group_id": p.group_id,
                "integration_id": p.integration_id,
                "issue_key": p.key,
                "result": p.status,
                "jira_answer": p.detail or "ok",
            }
            for p in pushes
        ]
        entries.append(assigned)
    if d.status_outcome:
        item = d.status_item or {}
        moved = f"{item.get('fromString') or item.get('from')} -> "
        moved += f"{item.get('toString') or item.get('to')}"
        rule = RULES.get(d.status_outcome, d.status_outcome)
        groups = d.status_detail.get("groups") if isinstance(d.status_detail, dict) else None
        shown = {str(k): str(v) for k, v in (groups or {}).items()}
        entries.append(entry(f"status {moved}", rule, WHY.get(rule, ""), shown))
    return entries


LOCAL = {
    int(ActivityType.SET_RESOLVED): "resolved here",
    int(ActivityType.SET_UNRESOLVED): "unresolved here",
    int(ActivityType.ASSIGNED): "assigned here",
    int(ActivityType.UNASSIGNED): "unassigned here",
}


def _local_entry(change: q.LocalChange) -> Entry:
    ms = int(change.created_at.timestamp() * 1000)
    return Entry(
        at=change.created_at.astimezone(UTC).isoformat(timespec="milliseconds"),
        source="here",
        what=LOCAL.get(change.type, f"activity {change.type}"),
        rule="applied",
        why="a change made in this service (jira-sync group resolve|unresolve, say): its "
        "linked Jira issues follow where forward sync is on",
        groups={str(change.group_id): "changed"},
        sort_key=(ms, 0),
    )


@dataclass(frozen=True)
class Explained:
    subject: str
    issues: list[dict[str, Any]]
    timeline: list[Entry]

    def as_json(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "issues": self.issues,
            "timeline": [
                {k: v for k, v in asdict(e).items() if k != "sort_key"} for e in self.timeline
            ],
        }


def _explain(res: Resources, subject: str, issues: list[q.LinkedIssue]) -> Explained:
    group_ids = sorted({g for i in issues for g in i.group_ids})
    with transaction(res.pool) as conn:
        found = q.deliveries(conn, issues)
        ids = [d.id for d in found]
        effects = q.effects(conn, ids) if ids else []
        pushes = q.pushes(conn, ids) if ids else []
        failed = q.failed_records(conn, ids) if ids else []
        local = q.local_changes(conn, group_ids) if group_ids else []
    by_delivery: dict[int, tuple[list[Effect], list[q.Push], list[q.FailedRecord]]] = {
        d.id: ([], [], []) for d in found
    }
    for e in effects:
        by_delivery[e.delivery_id][0].append(e)
    for p in pushes:
        by_delivery[p.delivery_id][1].append(p)
    for r in failed:
        by_delivery[r.delivery_id][2].append(r)
    timeline = [e for d in found for e in _delivery_entries(d, *by_delivery[d.id])]
    timeline += [_local_entry(c) for c in local]
    timeline.sort(key=lambda e: e.sort_key)
    listed = [
        {"integration_id": i.integration_id, "issue_key": i.key, "group_ids": i.group_ids}
        for i in issues
    ]
    return Explained(subject, listed, timeline)


def explain_issue(res: Resources, key: str, integration_id: int | None = None) -> Explained:
    """Everything that touched a Jira issue (on one integration, or on each that links it)."""
    with transaction(res.pool) as conn:
        issues = q.issues_by_key(conn, key.strip(), integration_id)
    if not issues:
        where = f" on integration {integration_id}" if integration_id else ""
        raise NotFound(f"no linked Jira issue {key.strip()}{where}")
    return _explain(res, f"issue {key.strip()}", issues)


def explain_group(res: Resources, group_id: int) -> Explained:
    """Everything that touched a group: the deliveries of its linked issues, its changes here."""
    with transaction(res.pool) as conn:
        if not q.group_exists(conn, group_id):
            raise NotFound(f"no such group: {group_id}")
        issues = q.issues_of_group(conn, group_id)
    explained = _explain(res, f"group {group_id}", issues)
    if not issues:  # a group linked to nothing still has its own changes
        with transaction(res.pool) as conn:
            local = q.local_changes(conn, [group_id])
        explained.timeline.extend(_local_entry(c) for c in local)
    mine = str(group_id)
    for entry in explained.timeline:  # a group's view: its own outcome only
        entry.groups = {g: o for g, o in entry.groups.items() if g == mine}
        entry.pushes = [p for p in entry.pushes if p["group_id"] == group_id]
    return explained
