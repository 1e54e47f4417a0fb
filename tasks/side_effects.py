"""Steps after a group's assignee changed: cache purges (SPEC 4.7) and outbound sync (4.6).

Outbound sync pushes the group's assignee as it is now (not as the delivery had it). Jira is
called with no transaction open; afterwards, holding the group lock (which every assignment
change takes), the step checks that the assignee is still the one it pushed and pushes again
if it changed meanwhile, so the last push to land always carries the newest state. Each
target issue is recorded once per delivery (outbound_call). The Jira user is the one the
assignee is mapped to on that Jira (SPEC 14), else the assignable user with their e-mail.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import redis

from tasks import pipeline
from tasks.base import ChangeBatchStep, Step, changes_of
from worker import cache
from worker.domain.assignment import Assignee
from worker.domain.errors import JiraRejected, JiraUserNotFound, NotFound, RetryableError
from worker.domain.reconcile import assignee_mark
from worker.jira.api import JiraClient, client_for_integration
from worker.runtime.app import app
from worker.runtime.resources import Resources
from worker.store.db import Connection, transaction
from worker.store.queries import effects as q_effects
from worker.store.queries import identities as q_identities
from worker.store.queries import inbound as q
from worker.store.queries import reconcile as q_reconcile

log = logging.getLogger(__name__)


@app.task(base=ChangeBatchStep, bind=True, name=pipeline.PURGE_ASSIGNEE_EXISTS)
def purge_assignee_exists(
    self: Step, *, changes: list[list[int]] | None = None, **legacy: int
) -> int:
    return _purge(self, cache.purge_assignee_exists, changes_of(changes, legacy))


@app.task(base=ChangeBatchStep, bind=True, name=pipeline.PURGE_OWNERS_DEBOUNCE)
def purge_owners_debounce(
    self: Step, *, changes: list[list[int]] | None = None, **legacy: int
) -> int:
    return _purge(self, cache.purge_owners_debounce, changes_of(changes, legacy))


def _purge(
    step: Step, purge: Callable[[redis.Redis, list[int]], int], changes: list[tuple[int, int]]
) -> int:
    """One Redis round trip for the whole batch's groups."""
    return purge(step.resources.redis, sorted({g for _, g in changes}))


@app.task(base=ChangeBatchStep, bind=True, name=pipeline.OUTBOUND_SYNC)
def outbound_sync(
    self: Step,
    *,
    changes: list[list[int]] | None = None,
    external_issue_id: int | None = None,
    **legacy: int,
) -> int:
    """Push each changed group's assignee to its other linked issues, one Jira client per
    instance for the whole batch; with external_issue_id, to that issue alone (the replay of
    its recorded failure). A Jira refusal (4xx, no assignable user) fails that issue only:
    recorded in outbound_call and in the failed-task store."""
    batch = changes_of(changes, legacy)
    with transaction(self.resources.pool) as conn:
        targets = q_effects.outbound_targets(conn, batch)
    clients: dict[int, JiraClient] = {}
    try:
        pushed = self.each(
            batch,
            lambda c: _push_change(self, c, targets.get(c, []), clients, external_issue_id),
        )
    finally:
        for client in clients.values():
            client.close()
    # The last side effect sent: once it finished, the sweep has nothing to send again.
    with transaction(self.resources.pool) as conn:
        q_effects.mark_side_effects_done(conn, [change for change, _ in pushed])
    return sum(count for _, count in pushed)


def _push_change(
    step: Step,
    change: tuple[int, int],
    targets: list[q_effects.OutboundTarget],
    clients: dict[int, JiraClient],
    external_issue_id: int | None,
) -> tuple[tuple[int, int], int]:
    """Push one change to its targets; a refusal is recorded for that issue alone."""
    delivery_id, group_id = change
    called = 0
    for target in targets:
        if external_issue_id is not None and target.external_issue_id != external_issue_id:
            continue
        refused = _push(step, delivery_id, group_id, target, clients, external_issue_id)
        if refused is None:
            called += 1
            continue
        code = getattr(refused, "status", None)
        status = f" (Jira status {code})" if code else ""
        step.record_item_failure(
            refused,
            {"changes": [[delivery_id, group_id]], "external_issue_id": target.external_issue_id},
            f"{target.key} on integration {target.integration_id}: {refused}{status}",
        )
    return change, called


# Pushes of one issue in one step when the assignee keeps changing while Jira is called.
MAX_PUSHES = 3


def _push(
    step: Step,
    delivery_id: int,
    group_id: int,
    target: q_effects.OutboundTarget,
    clients: dict[int, JiraClient],
    replaying: int | None,
) -> JiraRejected | NotFound | None:
    """Push the group's assignee to one issue, once per delivery, recorded in its own short
    transaction so a retry after a 5xx elsewhere does not call this issue again. Returns
    Jira's refusal, if it refused; an issue with nothing to push counts as pushed."""
    res = step.resources
    context = {
        "delivery_id": delivery_id,
        "group_id": group_id,
        "issue_key": target.key,
        "integration_id": target.integration_id,
    }
    with transaction(res.pool) as conn:
        called = q_effects.outbound_called(conn, delivery_id, group_id).get(
            target.external_issue_id
        )
        wanted = _wanted(conn, group_id, target.integration_id)
    # A failed call is tried again only by the replay of its record.
    if called == "done" or (called == "failed" and replaying != target.external_issue_id):
        return None
    for _ in range(MAX_PUSHES):
        if wanted.assignee is not None and wanted.assignee.user_id is None:
            return None  # a team assignee has no Jira counterpart
        refused: JiraRejected | NotFound | None = None
        name, mark = None, assignee_mark(False, None)  # what Jira's assignee will be: nobody
        try:
            client = _client(res, clients, target.integration_id)
            if wanted.assignee is not None:
                name, mark = _jira_username(client, target.key, wanted)
            client.set_assignee(target.key, name)
        except (JiraRejected, NotFound) as exc:
            refused = exc  # permanent for this issue only: the other issues still get theirs
        with transaction(res.pool) as conn:
            if q.lock_group(conn, group_id) is None:
                return None
            now = _wanted(conn, group_id, target.integration_id)
            if now == wanted:
                status, detail = ("failed", str(refused)) if refused else ("done", "")
                q_effects.record_outbound_call(
                    conn, delivery_id, group_id, target.external_issue_id, status, detail
                )
                if refused is None:  # the reconciliation sweep must not feed our own push back
                    q_reconcile.remember_jira_assignee(conn, [target.external_issue_id], mark)
        if now == wanted:
            break
        wanted = now  # changed while Jira was called: push the newer one
    else:
        raise GroupBusy(f"group {group_id}'s assignee changed during {MAX_PUSHES} pushes")
    if refused is not None:
        log.warning("outbound.failed", extra={**context, "error": type(refused).__name__})
        return refused
    log.info("outbound.synced", extra={**context, "assigned": name is not None})
    return None


class GroupBusy(RetryableError):
    """Raised when a group's assignee kept changing while its outbound pushes were sent."""


@dataclass(frozen=True)
class Wanted:
    """The group's assignee now, and how to name that user on the target Jira: the identity
    it is mapped to there (SPEC 14), else the emails to search for."""

    assignee: Assignee | None
    jira_user: tuple[str, str | None] | None = None
    emails: tuple[str, ...] = ()


def _wanted(conn: Connection, group_id: int, integration_id: int) -> Wanted:
    current = q.assignee(conn, group_id)
    if current is None or current.user_id is None:
        return Wanted(current)
    mapped = q_identities.jira_user_of(conn, current.user_id, integration_id)
    if mapped is not None:
        return Wanted(current, jira_user=mapped)
    return Wanted(current, emails=tuple(q_effects.user_emails(conn, current.user_id)))


def _client(res: Resources, clients: dict[int, JiraClient], integration_id: int) -> JiraClient:
    if integration_id not in clients:
        clients[integration_id] = client_for_integration(res, integration_id)
    return clients[integration_id]


def _jira_username(client: JiraClient, issue_key: str, wanted: Wanted) -> tuple[str, str | None]:
    """The Jira user to assign: the mapped one (on Cloud its account id; on Server its
    username, looked up by user key when no body showed it), else the assignable user with
    one of the emails; (what Jira names the user by, mark)."""
    if wanted.jira_user is not None:
        identity, name = wanted.jira_user
        if not client.cloud:  # Server names users by username; Cloud by the account id
            identity_name = name or client.username_of_key(identity)
            return identity_name, assignee_mark(True, None, identity)
        return identity, assignee_mark(True, None, identity)
    for email in wanted.emails:
        name = client.find_assignable_user(issue_key, email)
        if name is not None:
            return name, assignee_mark(True, email)
    hint = " (Cloud hides many e-mails: map the user, jira-sync users map)" if client.cloud else ""
    raise JiraUserNotFound(f"no assignable Jira user on {issue_key} has the assignee's email{hint}")
