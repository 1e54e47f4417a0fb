"""Managing a linked Jira instance (SPEC 2, 11): the list, its webhook URL, secret rotation
(old and new verify until finished), per-organization sync switches, status mappings, server
info refresh, the signature requirement and disabling. Linking itself is `linking`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import Any

from worker.domain import tokens
from worker.domain.errors import InvalidInput, JiraSyncError, NotFound
from worker.jira import api, linking, webhooks
from worker.jira.transport import ServerInfo
from worker.runtime.resources import Resources
from worker.store.db import transaction
from worker.store.queries import group_status as q_status
from worker.store.queries import integrations as q
from worker.store.queries import migration as q_migration
from worker.store.queries import oauth2 as q_oauth2

log = logging.getLogger(__name__)

# `rotate-secret --finish` waits until the old secret has verified nothing for this long.
OLD_SECRET_QUIET_S = 600
SYNC_SWITCHES = {
    "reverse": "sync_reverse_assignment",
    "forward": "sync_forward_assignment",
    "reverse_status": "sync_status_reverse",
    "forward_status": "sync_status_forward",
}


def list_view(res: Resources) -> list[dict[str, Any]]:
    """Every integration with its organizations and switches; no secret."""
    with transaction(res.pool) as conn:
        rows = []
        signers = q.auths(conn)
        moves = q_migration.migrations(conn)
        dynamic: dict[int, datetime] = {}
        for hook in q_oauth2.dynamic_webhooks(conn):
            known = dynamic.get(hook.integration_id, hook.expires_at)
            dynamic[hook.integration_id] = min(hook.expires_at, known)
        for i in q.list_integrations(conn):
            signer = signers.get(i.id)
            rows.append(
                {
                    "id": i.id,
                    "external_id": i.external_id,
                    "name": i.name,
                    "base_url": i.metadata.get("base_url"),
                    "verify_ssl": i.metadata.get("verify_ssl", True),
                    "status": i.status,
                    "rotation_in_progress": i.previous_webhook_secret_enc is not None,
                    "server_version": i.metadata.get("server_version"),
                    "deployment_type": i.metadata.get("deployment_type"),
                    "signed": i.signing_secret_enc is not None,
                    "require_signature": i.require_signature,
                    "signature_seen_at": i.signature_seen_at,
                    "auth": signer.auth_kind if signer else None,
                    "account_email": signer.account_email if signer else None,
                    "token_expires_on": signer.token_expires_on.isoformat()
                    if signer and signer.token_expires_on
                    else None,
                    "dynamic_webhook_expires_at": dynamic[i.id].isoformat()
                    if i.id in dynamic
                    else None,
                    "moved_projects": [
                        {
                            "project": m.project_key,
                            "to": m.to_integration_id,
                            "moved": m.moved,
                            "missing": m.missing,
                            "finished": m.finished_at is not None,
                        }
                        for m in moves
                        if m.from_integration_id == i.id
                    ],
                    "organizations": [
                        {
                            "organization": link.organization,
                            "status": link.status,
                            "reverse_assignment": bool(link.config.get(SYNC_SWITCHES["reverse"])),
                            "forward_assignment": bool(link.config.get(SYNC_SWITCHES["forward"])),
                            "reverse_status": bool(
                                link.config.get(SYNC_SWITCHES["reverse_status"])
                            ),
                            "forward_status": bool(
                                link.config.get(SYNC_SWITCHES["forward_status"])
                            ),
                        }
                        for link in q.organization_links(conn, i.id)
                    ],
                }
            )
    return rows


def get_webhook_url(res: Resources, integration_id: int) -> str:
    """The full webhook URL (with its token) signed with the current secret."""
    with transaction(res.pool) as conn:
        integration = webhooks.integration_of(conn, integration_id)
    secret = res.vault.decrypt(integration.webhook_secret_enc)
    return webhooks.webhook_url(res.settings, integration.external_id, secret)


@dataclass(frozen=True, repr=False)
class Rotation:
    """A started rotation. `webhook_url` holds the new token (never logged). An integration
    that signs (Data Center 10) gets a new signing secret too, pushed to Jira's webhook with
    the new URL (`jira_error` says why that failed; then `--refresh-server-info` retries)."""

    webhook_url: str
    signed: bool
    jira_error: str | None

    def __repr__(self) -> str:
        return f"Rotation(signed={self.signed})"


def rotate_secret(res: Resources, integration_id: int) -> Rotation:
    """Start a rotation: new secrets sign, the old ones still verify. Jira's webhook gets the
    new URL (and, on Data Center 10, the new signing secret) at once, whatever the version."""
    secret = tokens.new_secret()
    vault = res.vault
    with transaction(res.pool) as conn:
        integration = webhooks.integration_of(conn, integration_id)
        if integration.previous_webhook_secret_enc is not None:
            raise InvalidInput(
                f"a rotation of integration {integration_id} is in progress: "
                "finish it with `rotate-secret --finish` first"
            )
        q.set_webhook_secrets(
            conn, integration_id, vault.encrypt(secret), integration.webhook_secret_enc
        )
        q.forget_previous_secret_use(conn, integration_id)
        signed = integration.signing_secret_enc is not None
        if signed:
            q.set_signing(
                conn,
                integration_id,
                vault.encrypt(tokens.new_secret()),
                integration.signing_secret_enc,
                integration.require_signature,
            )
    log.info("integration.secret_rotated", extra={"integration_id": integration_id})
    error = None
    try:
        refresh_server_info(res, integration_id)
    except JiraSyncError as exc:
        error = str(exc)
    return Rotation(
        webhooks.webhook_url(res.settings, integration.external_id, secret), signed, error
    )


class Finish(Enum):
    """What `rotate-secret --finish` did."""

    FINISHED = "finished"
    NOTHING_TO_DO = "nothing to do"
    OLD_SECRET_IN_USE = "old secret in use"


def finish_rotation(res: Resources, integration_id: int, force: bool = False) -> Finish:
    """The old secrets stop verifying, unless one of them verified a delivery within
    OLD_SECRET_QUIET_S (a Jira still sending to the old URL, or with the old signing secret,
    would be cut off) and `force` is not given."""
    with transaction(res.pool) as conn:
        integration = webhooks.integration_of(conn, integration_id)
        if integration.previous_webhook_secret_enc is None:
            return Finish.NOTHING_TO_DO
        seen = q.get_webhook_seen(conn, integration_id)
        used_at = seen.previous_secret_used_at if seen else None
        quiet_s = None if used_at is None else (datetime.now(UTC) - used_at).total_seconds()
        if not force and quiet_s is not None and quiet_s < OLD_SECRET_QUIET_S:
            return Finish.OLD_SECRET_IN_USE
        q.set_webhook_secrets(conn, integration_id, integration.webhook_secret_enc, None)
        if integration.previous_signing_secret_enc is not None:
            q.set_signing(
                conn,
                integration_id,
                integration.signing_secret_enc,
                None,
                integration.require_signature,
            )
    log.info(
        "integration.rotation_finished", extra={"integration_id": integration_id, "force": force}
    )
    return Finish.FINISHED


def refresh_server_info(res: Resources, integration_id: int) -> ServerInfo:
    """Read Jira's version again and register the webhook on the resource it uses (after an
    upgrade to Data Center 10: with a new signing secret, then required)."""
    client = api.client_for_integration(res, integration_id)
    try:
        return webhooks.install_webhook(res, integration_id, client)
    finally:
        client.close()


def require_signature(res: Resources, integration_id: int, on: bool) -> bool:
    """Refuse (on) or accept (off) deliveries without a signature; a wrong one is refused
    either way. False when nothing changed."""
    with transaction(res.pool) as conn:
        integration = webhooks.integration_of(conn, integration_id)
        if on and integration.signing_secret_enc is None:
            raise InvalidInput(
                f"integration {integration_id} has no signing secret (its webhook is not "
                "registered on Jira Data Center 10 by jira-sync): run `jira-sync integration "
                f"configure {integration_id} --refresh-server-info` once Jira runs 10.x"
            )
        if integration.require_signature == on:
            return False
        q.set_signing(
            conn,
            integration_id,
            integration.signing_secret_enc,
            integration.previous_signing_secret_enc,
            on,
        )
    log.info(
        "integration.signature_requirement", extra={"integration_id": integration_id, "on": on}
    )
    return True


def configure(
    res: Resources, integration_id: int, organization: str, switches: dict[str, bool]
) -> dict[str, Any]:
    """Turn reverse (inbound) / forward (outbound) assignee and status sync on or off for
    one org."""
    changes = {SYNC_SWITCHES[name]: on for name, on in switches.items()}
    if not changes:
        raise InvalidInput(
            "nothing to configure: give --reverse-assignment, --forward-assignment, "
            "--reverse-status or --forward-status"
        )
    with transaction(res.pool) as conn:
        webhooks.integration_of(conn, integration_id)
        org_id = linking.organization_ids(conn, [organization])[organization]
        if not q.update_organization_config(conn, integration_id, org_id, changes):
            raise NotFound(
                f"organization {organization} is not linked to integration {integration_id}"
            )
        link = next(
            x for x in q.organization_links(conn, integration_id) if x.organization_id == org_id
        )
    log.info(
        "integration.configured",
        extra={"integration_id": integration_id, "organization": organization, **changes},
    )
    return link.config


def map_status(
    res: Resources,
    integration_id: int,
    organization: str,
    jira_project: str,
    resolved: str,
    unresolved: str,
) -> None:
    """The Jira statuses (id or name) an organization's issues of one Jira project are moved
    to when their group is resolved or unresolved (SPEC 10, outbound)."""
    project = jira_project.strip().upper()  # Jira's project keys are upper case
    if not project or "-" in project:
        raise InvalidInput(f"Jira project must be a project key like APP, got {jira_project!r}")
    names = {"--resolved": resolved.strip(), "--unresolved": unresolved.strip()}
    for option, value in names.items():
        if not value:
            raise InvalidInput(f"{option} must name a Jira status (its id or name)")
    with transaction(res.pool) as conn:
        webhooks.integration_of(conn, integration_id)
        org_id = linking.organization_ids(conn, [organization])[organization]
        if not any(x.organization_id == org_id for x in q.organization_links(conn, integration_id)):
            raise NotFound(
                f"organization {organization} is not linked to integration {integration_id}"
            )
        q_status.set_status_mapping(
            conn, org_id, integration_id, project, names["--resolved"], names["--unresolved"]
        )
    log.info(
        "integration.status_mapped",
        extra={"integration_id": integration_id, "organization": organization, "project": project},
    )


def disable(res: Resources, integration_id: int) -> bool:
    """Refuse the integration's webhooks from now on. False when already disabled."""
    with transaction(res.pool) as conn:
        integration = webhooks.integration_of(conn, integration_id)
        if integration.status == "disabled":
            return False
        q.set_integration_status(conn, integration_id, "disabled")
    log.info("integration.disabled", extra={"integration_id": integration_id})
    return True
