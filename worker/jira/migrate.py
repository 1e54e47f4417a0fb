"""Moving a project's links from a Data Center instance to a Cloud site (SPEC 15).

Atlassian's migration keeps issue keys and gives every issue a new id. Page by page (in issue
number order) the project's issues still linked on Data Center are looked up on Cloud with
one search for the page's key range, and the found ones move, in one transaction per page, to
the Cloud integration with their Cloud id, keeping groups, assignees, status and the
remembered Jira state; their groups' event order starts afresh (a Cloud event is never judged
against a Data Center clock). Issues Cloud does not have stay linked to Data Center and are
listed; running again finishes the job (a moved issue is no longer on Data Center, so nothing
moves twice), whatever stopped the previous run.

From the first run on (the cutover), a Data Center delivery for an issue of the project that
is no longer linked there ends `migrated` (tasks/changelog.py); reconciliation reads it on
Cloud only, since Data Center no longer links it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from worker.domain.errors import InvalidInput, NotFound
from worker.jira.api import JiraClient, client_for_integration
from worker.runtime.resources import Resources
from worker.store.db import Connection, transaction
from worker.store.queries import identities as q_identities
from worker.store.queries import integrations as q_integrations
from worker.store.queries import migration as q

log = logging.getLogger(__name__)

PROJECT_KEY = re.compile(r"^[A-Z][A-Z0-9_]{0,254}$")
PAGE_SIZE = 100  # keys per search (Cloud answers at most 100 issues a page with fields)


@dataclass
class Result:
    project: str
    dry_run: bool
    moved: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    already_on_cloud: list[str] = field(default_factory=list)
    requests: int = 0


def migrate(
    res: Resources,
    from_id: int,
    to_id: int,
    project: str,
    dry_run: bool = False,
    page_size: int = PAGE_SIZE,
    on_page: Callable[[Result], None] | None = None,
) -> Result:
    """Move what can move now; a dry run searches Cloud and changes nothing."""
    project = project.strip().upper()
    if not PROJECT_KEY.match(project):
        raise InvalidInput(f"--project must be a Jira project key such as ABC, got {project!r}")
    if from_id == to_id:
        raise InvalidInput("--from and --to must be two integrations")
    with transaction(res.pool) as conn:
        _check_pair(conn, from_id, to_id)
        unlinked = q.organizations_not_linked(conn, from_id, to_id, project)
        if unlinked:
            raise InvalidInput(
                f"organization(s) {', '.join(unlinked)} have {project} issues but no link to "
                f"integration {to_id}: link them first (jira-sync integration link ... "
                f"--organization {unlinked[0]})"
            )
        if not dry_run:
            q.start(conn, from_id, to_id, project)
    result = Result(project, dry_run)
    client = client_for_integration(res, to_id)
    try:
        after = 0
        while True:
            with transaction(res.pool) as conn:
                page = q.linked_page(conn, from_id, project, after, page_size)
            if not page:
                break
            after = page[-1].number
            found = _on_cloud(client, project, page[0].key, page[-1].key, result)
            rows = [(r.id, found[r.key]) for r in page if r.key in found]
            result.missing += [r.key for r in page if r.key not in found]
            if not dry_run and rows:
                with transaction(res.pool) as conn:
                    moved = set(q.move(conn, from_id, to_id, rows))
                ids = {r.id: r.key for r in page}
                result.moved += [ids[i] for i, _ in rows if i in moved]
                result.already_on_cloud += [ids[i] for i, _ in rows if i not in moved]
            elif rows:
                result.moved += [r.key for r in page if r.key in found]
            if on_page is not None:
                on_page(result)
    finally:
        client.close()
    if not dry_run:
        with transaction(res.pool) as conn:
            q.finish_run(conn, from_id, project, len(result.moved), result.missing)
    log.info(
        "migration.run",
        extra={"from": from_id, "to": to_id, "project": project, "moved": len(result.moved),
               "missing": len(result.missing), "dry_run": dry_run},
    )  # fmt: skip
    return result


def _check_pair(conn: Connection, from_id: int, to_id: int) -> None:
    """Both integrations exist and the target is a Jira Cloud site."""
    for integration_id in (from_id, to_id):
        if q_integrations.get_integration(conn, integration_id) is None:
            raise NotFound(f"no such integration: {integration_id}")
    target = q_integrations.get_integration(conn, to_id)
    assert target is not None
    if str(target.metadata.get("deployment_type", "")).casefold() != "cloud":
        raise InvalidInput(f"integration {to_id} is not a Jira Cloud site (integration list)")


def _on_cloud(
    client: JiraClient, project: str, first: str, last: str, result: Result
) -> dict[str, str]:
    """The Cloud ids of the project's issues from `first` to `last` (keys), one search paged
    by token: key -> id."""
    jql = f"project = {project} AND issuekey >= {first} AND issuekey <= {last}"
    jql += " ORDER BY issuekey ASC"
    found: dict[str, str] = {}
    token: str | None = None
    while True:
        result.requests += 1
        page = client.search_by_token(jql, ["key"], token, PAGE_SIZE)
        for issue in page.issues:
            if isinstance(issue, dict) and issue.get("key") and issue.get("id") is not None:
                found[str(issue["key"])] = str(issue["id"])
        if page.next_token is None:
            return found
        token = page.next_token


@dataclass
class Seeded:
    mapped: dict[str, int] = field(default_factory=dict)  # Cloud account id -> user id
    not_found: list[int] = field(default_factory=list)  # users no visible e-mail found
    requests: int = 0


def seed_identities(res: Resources, from_id: int, to_id: int, dry_run: bool = False) -> Seeded:
    """Map on the Cloud site every (active) user mapped on the Data Center instance, by e-mail:
    each user's verified e-mails are looked up on Cloud (`user/search`), and the account
    showing one is mapped to them (source `email`; an existing mapping is kept). Users whose
    e-mail Cloud hides are listed: map them with `users import` (the migration tool's user
    export)."""
    with transaction(res.pool) as conn:
        _check_pair(conn, from_id, to_id)
        users = sorted({m.user_id for m in q_identities.mappings(conn, from_id)})
        emails = q_identities.verified_emails(conn, users)
    seeded = Seeded()
    client = client_for_integration(res, to_id)
    try:
        for user_id in users:
            for email in emails.get(user_id, []):
                seeded.requests += 1
                account = client.find_account(email)
                if account is not None:
                    seeded.mapped[account] = user_id
                    break
            else:
                seeded.not_found.append(user_id)
    finally:
        client.close()
    if not dry_run and seeded.mapped:
        rows: list[tuple[q_identities.Identity, int, str | None]] = [
            ((to_id, account), user, None) for account, user in seeded.mapped.items()
        ]
        with transaction(res.pool) as conn:
            q_identities.add_mappings(conn, rows, "email", replace=False)
    return seeded
