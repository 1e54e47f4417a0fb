"""Steps after a group's assignee changed: cache purges (SPEC 4.7) and outbound sync (4.6).

Outbound sync pushes the group's assignee as it is now (not as the delivery had it), holding
the group lock, so pushes for one group go out one at a time and the last one carries the
newest state. Each target issue is called at most once per delivery (outbound_call).
"""

from __future__ import annotations

import logging

from tasks import pipeline
from tasks.base import Step
from worker import cache
from worker.domain.errors import JiraRejected, NotFound
from worker.jira.api import JiraClient, client_for_integration
from worker.runtime.app import app
from worker.store.db import transaction
from worker.store.queries import deliveries as q_deliveries
from worker.store.queries import inbound as q

log = logging.getLogger(__name__)


@app.task(base=Step, bind=True, name=pipeline.PURGE_ASSIGNEE_EXISTS)
def purge_assignee_exists(self: Step, *, delivery_id: int, group_id: int) -> int:
    return cache.purge_assignee_exists(self.resources.redis, [group_id])


@app.task(base=Step, bind=True, name=pipeline.PURGE_OWNERS_DEBOUNCE)
def purge_owners_debounce(self: Step, *, delivery_id: int, group_id: int) -> int:
    return cache.purge_owners_debounce(self.resources.redis, [group_id])


@app.task(base=Step, bind=True, name=pipeline.OUTBOUND_SYNC)
def outbound_sync(self: Step, *, delivery_id: int, group_id: int) -> int:
    res = self.resources
    with transaction(res.pool) as conn:
        delivery = q_deliveries.get_delivery(conn, delivery_id)
        if delivery is None:
            raise NotFound(f"delivery {delivery_id} does not exist")
        targets = q.outbound_targets(conn, group_id, delivery.integration_id)
    clients: dict[int, JiraClient] = {}
    called = 0
    try:
        for target in targets:
            called += _push(self, delivery_id, group_id, target, clients)
    finally:
        for client in clients.values():
            client.close()
    # The last side effect sent: once it finished, the sweep has nothing to send again.
    with transaction(res.pool) as conn:
        q.mark_side_effects_done(conn, delivery_id, group_id)
    return called


def _push(
    step: Step,
    delivery_id: int,
    group_id: int,
    target: q.OutboundTarget,
    clients: dict[int, JiraClient],
) -> int:
    """Push the group's assignee to one issue, once per delivery; its own transaction, so a
    retry after a 5xx elsewhere does not call this issue again."""
    res = step.resources
    with transaction(res.pool) as conn:
        group = q.lock_group(conn, group_id)
        if group is None or target.external_issue_id in q.outbound_called(
            conn, delivery_id, group_id
        ):
            return 0
        current = q.assignee(conn, group_id)
        if current is not None and current.user_id is None:
            return 0  # a team assignee has no Jira counterpart
        emails = q.user_emails(conn, current.user_id) if current and current.user_id else []
        context = {
            "delivery_id": delivery_id,
            "group_id": group_id,
            "issue_key": target.key,
            "integration_id": target.integration_id,
        }
        try:
            if target.integration_id not in clients:
                clients[target.integration_id] = client_for_integration(res, target.integration_id)
            client = clients[target.integration_id]
            name = _jira_username(client, target.key, emails) if current else None
            client.set_assignee(target.key, name)
        except (JiraRejected, NotFound) as exc:
            # Permanent for this issue only: recorded, and the other issues still get theirs.
            q.record_outbound_call(
                conn, delivery_id, group_id, target.external_issue_id, "failed", str(exc)
            )
            log.warning("outbound.failed", extra={**context, "error": type(exc).__name__})
            return 0
        q.record_outbound_call(conn, delivery_id, group_id, target.external_issue_id, "done")
        log.info("outbound.synced", extra={**context, "assigned": name is not None})
        return 1


def _jira_username(client: JiraClient, issue_key: str, emails: list[str]) -> str:
    for email in emails:
        name = client.find_assignable_username(issue_key, email)
        if name is not None:
            return name
    raise JiraRejected(f"no assignable Jira user on {issue_key} has the assignee's email")
