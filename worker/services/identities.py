"""Who a Jira user is here (SPEC 14): the inbound lookup (the map first, then a verified
e-mail, which fills the map in), and the operator's map, unmap, list, import and unmapped.

A Jira identity is the Cloud account id, the Server/Data Center user key, or the username
of bodies from before user keys. A user here is named by id or by a verified e-mail.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass

from worker.domain.errors import InvalidInput, NotFound
from worker.runtime.resources import Resources
from worker.store.db import Connection, transaction
from worker.store.queries import identities as q
from worker.store.queries import inbound as q_inbound
from worker.store.queries import integrations as q_integrations

MAX_IDENTITY_CHARS = 255
IMPORT_COLUMNS = ("jira_user", "user")


@dataclass(frozen=True)
class Wanted:
    """An assignee a delivery names: its identity on that Jira and/or its e-mail."""

    delivery_id: int
    integration_id: int
    identity: str | None
    email: str | None
    display_name: str | None = None
    jira_name: str | None = None


def candidates(conn: Connection, wanted: Iterable[Wanted]) -> dict[int, dict[int, set[int]]]:
    """Per delivery, the users its assignee may be (each with the teams they are active
    members of): the mapped user when the identity is mapped, else the active users with that
    verified e-mail. An identity matched by e-mail to exactly one user is mapped for next
    time; one that matches nobody is counted as unmapped. Four statements for a batch."""
    wanted = list(wanted)
    mapped = q.mapped_users(
        conn, sorted({(w.integration_id, w.identity) for w in wanted if w.identity})
    )
    by_email_of = [w for w in wanted if (w.integration_id, w.identity) not in mapped and w.email]
    emails = sorted({w.email.lower() for w in by_email_of if w.email})
    by_email = q_inbound.user_teams_by_emails(conn, emails) if emails else {}
    teams_of = q.user_teams_by_ids(conn, sorted(set(mapped.values()))) if mapped else {}
    found: dict[int, dict[int, set[int]]] = {}
    fill: dict[q.Identity, tuple[int, str | None]] = {}
    missing: dict[q.Identity, tuple[Wanted, set[int]]] = {}
    for w in wanted:
        key = (w.integration_id, w.identity or "")
        if w.identity and key in mapped:
            user = mapped[key]
            found[w.delivery_id] = {user: teams_of[user]} if user in teams_of else {}
            continue
        users = by_email.get(w.email.lower(), {}) if w.email else {}
        found[w.delivery_id] = users
        if not w.identity:
            continue
        if len(users) == 1:
            fill[key] = (next(iter(users)), w.jira_name)
        elif not users:
            _, deliveries = missing.get(key, (w, set()))
            missing[key] = (w, deliveries | {w.delivery_id})
    q.add_mappings(conn, [(k, user, name) for k, (user, name) in fill.items()], "email", False)
    q.record_unmapped(
        conn,
        {k: q.Seen(w.display_name, w.email, len(ds)) for k, (w, ds) in missing.items()},
    )
    return found


@dataclass(frozen=True)
class ImportResult:
    rows: int
    integration_id: int
    dry_run: bool


def _integration(conn: Connection, integration_id: int) -> None:
    if q_integrations.get_integration(conn, integration_id) is None:
        raise NotFound(f"no such integration: {integration_id}")


def _identity(raw: str, where: str) -> str:
    identity = raw.strip()
    if not identity:
        raise InvalidInput(f"{where}: the Jira user is empty")
    if len(identity) > MAX_IDENTITY_CHARS or not identity.isprintable():
        raise InvalidInput(
            f"{where}: {identity[:40]!r} is not a Jira account id, user key or username"
        )
    return identity


def _users(conn: Connection, named: list[tuple[str, str]]) -> dict[str, int]:
    """Each (where, user) named by id or verified e-mail -> its user id; the first that names
    nobody (or an e-mail several users have verified) is an InvalidInput naming where."""
    ids = [int(u) for _, u in named if u.strip().isdigit()]
    emails = [u.strip() for _, u in named if not u.strip().isdigit()]
    existing = q.existing_users(conn, ids) if ids else set()
    by_email = q.users_by_emails(conn, emails) if emails else {}
    found: dict[str, int] = {}
    for where, raw in named:
        user = raw.strip()
        if not user:
            raise InvalidInput(f"{where}: the user is empty (a user id or a verified e-mail)")
        if user.isdigit():
            if int(user) not in existing:
                raise InvalidInput(f"{where}: no user with id {user}")
            found[raw] = int(user)
            continue
        if "@" not in user:
            raise InvalidInput(f"{where}: {user!r} is neither a user id nor an e-mail")
        match = by_email.get(user.lower())
        if match is None:
            raise InvalidInput(f"{where}: no user has {user} as a verified e-mail")
        if match[1] > 1:
            raise InvalidInput(f"{where}: {match[1]} users have {user} verified: name one by id")
        found[raw] = match[0]
    return found


def map_user(res: Resources, integration_id: int, jira_user: str, user: str) -> int:
    """Map one identity to a user (id or verified e-mail), replacing any mapping; the user id."""
    identity = _identity(jira_user, "--jira-user")
    with transaction(res.pool) as conn:
        _integration(conn, integration_id)
        user_id = _users(conn, [("--user", user)])[user]
        q.add_mappings(conn, [((integration_id, identity), user_id, None)], "operator", True)
        q.forget_jira_assignees(conn, integration_id, [identity])
    return user_id


def unmap_user(res: Resources, integration_id: int, jira_user: str) -> None:
    with transaction(res.pool) as conn:
        _integration(conn, integration_id)
        if not q.delete_mapping(conn, (integration_id, jira_user.strip())):
            raise NotFound(f"{jira_user.strip()!r} is not mapped on integration {integration_id}")


def list_mappings(res: Resources, integration_id: int | None) -> list[q.Mapping]:
    with transaction(res.pool) as conn:
        if integration_id is not None:
            _integration(conn, integration_id)
        return q.mappings(conn, integration_id)


def list_unmapped(res: Resources, integration_id: int | None) -> list[q.Unmapped]:
    with transaction(res.pool) as conn:
        if integration_id is not None:
            _integration(conn, integration_id)
        return q.unmapped(conn, integration_id)


def read_import(text: str) -> list[tuple[int, str, str]]:
    """The (line, jira_user, user) rows of a CSV with a header naming `jira_user` and `user`
    (other columns ignored); an InvalidInput names the line of the first bad row."""
    reader = csv.DictReader(io.StringIO(text.removeprefix("\ufeff")))
    header = [h.strip() for h in reader.fieldnames or []]
    absent = [c for c in IMPORT_COLUMNS if c not in header]
    if absent:
        raise InvalidInput(
            f"line 1: the header must name the columns jira_user and user (missing: "
            f"{', '.join(absent)})"
        )
    reader.fieldnames = header
    rows: list[tuple[int, str, str]] = []
    seen: dict[str, int] = {}
    try:
        for record in reader:
            line = reader.line_num
            if not any((v or "").strip() for v in record.values() if isinstance(v, str)):
                continue  # a blank line
            identity = _identity(record.get("jira_user") or "", f"line {line}")
            if identity in seen:
                raise InvalidInput(
                    f"line {line}: {identity!r} is mapped again (first on line {seen[identity]})"
                )
            seen[identity] = line
            rows.append((line, identity, record.get("user") or ""))
    except csv.Error as exc:
        raise InvalidInput(f"line {reader.line_num}: not CSV: {exc}") from None
    return rows


def import_mappings(
    res: Resources, integration_id: int, text: str, dry_run: bool = False
) -> ImportResult:
    """All or nothing: every row is checked first, then all are stored in one transaction
    (one statement), replacing earlier mappings of the same identities."""
    rows = read_import(text)
    with transaction(res.pool) as conn:
        _integration(conn, integration_id)
        users = _users(conn, [(f"line {line}", user) for line, _, user in rows])
        if not dry_run:
            q.add_mappings(
                conn,
                [((integration_id, identity), users[user], None) for _, identity, user in rows],
                "import",
                True,
            )
            q.forget_jira_assignees(conn, integration_id, [identity for _, identity, _ in rows])
    return ImportResult(len(rows), integration_id, dry_run)
