"""What `jira-sync status` calls a problem (exit 1, an operator is needed) and what only a
warning, decided from the status screen's figures (`overview.gather`): pure rules, one place.
The alerting rules of deploy/prometheus/alerts.yml fire on the same conditions."""

from __future__ import annotations

from typing import Any

from config.celery import SWEEP_INTERVAL_S

BEAT_LATE_AFTER_S = 8 * SWEEP_INTERVAL_S
RECONCILE_LATE_INTERVALS = 3
REFUSALS_RECENT_S = 3600.0
TOKEN_WARN_DAYS = 14
# Beat refreshes a dynamic webhook with 20 of its 30 days left: fewer than this means it did not.
DYNAMIC_WEBHOOK_WARN_DAYS = 10
RELINK = {
    "oauth2": "its OAuth 2.0 grant ends (90 days unused, or 365 days after consent); link "
    "again with --oauth2-client-id to consent anew",
    "scoped_token": "link again with a new token: jira-sync integration link ... "
    "--scoped-token --api-token-file F --api-token-expires DATE",
}
DEFAULT_RELINK = (
    "link again with a new token: jira-sync integration link ... --api-token-file F "
    "--api-token-expires DATE"
)


def problems(view: dict[str, Any], quiet_after_s: float) -> tuple[list[str], list[str]]:
    """What needs an operator (exit 1), and what only deserves a look."""
    found: list[str] = []
    receiver = view["receiver"]
    if not receiver["ready"]:
        found.append(f"receiver at {receiver['url']} not ready: {detail_text(receiver['detail'])}")
    if not view["broker"]["reachable"]:
        found.append(f"broker (BROKER_URL) {view['broker']['detail']}")
    unfinished = view["unfinished"]
    if unfinished["stuck"]:
        ids = ", ".join(str(i) for i in unfinished["stuck_ids"])
        more = unfinished["stuck"] - len(unfinished["stuck_ids"])
        found.append(
            f"{unfinished['stuck']} delivery(ies) stuck, not done "
            f"{age_text(unfinished['stuck_after_s'])} after arriving: "
            f"{ids}{f' and {more} more' if more > 0 else ''} (jira-sync deliveries show ID)"
        )
    failed = view["failed"]
    if failed["not_replayed"]:
        kinds = ", ".join(f"{k} {n}" for k, n in failed["by_error_type"].items())
        found.append(
            f"{failed['not_replayed']} failed task(s) not replayed ({kinds}): "
            "jira-sync failed list, then failed replay"
        )
    beat = view["beat"]
    if beat is None:
        found.append("beat has never swept (is the beat process running?)")
    elif beat["age_s"] > BEAT_LATE_AFTER_S:
        found.append(
            f"beat has not swept for {age_text(beat['age_s'])} (every {SWEEP_INTERVAL_S:g} s)"
        )
    for i in view["integrations"]:
        sweep = i["reconcile"]
        if i["status"] != "active" or not sweep["enabled"] or not sweep["ran"]:
            continue
        late_after_s = RECONCILE_LATE_INTERVALS * sweep["interval_s"]
        since = sweep["since_success_s"]
        if since is None or since > late_after_s:
            when = "ever" if since is None else f"for {age_text(since)}"
            error = f": {sweep['last_error']}" if sweep["last_error"] else ""
            found.append(
                f"reconciliation of integration {i['id']} ({i['name']}) has not completed "
                f"{when}{error} (jira-sync reconcile status)"
            )
    for i in view["integrations"]:
        signature = i["signature"]
        since = signature["since_refusal_s"]
        if since is not None and since < REFUSALS_RECENT_S:
            found.append(
                f"integration {i['id']} ({i['name']}): {signature['refusals']} delivery(ies) "
                f"refused for their signature, the last {age_text(since)} ago (Jira signs with "
                "another secret, or something else posts to its URL: jira-sync integration "
                f"configure {i['id']} --refresh-server-info)"
            )
    warnings = [
        f"integration {i['id']} ({i['name']}): signature expected, not seen yet (Jira has sent "
        "no signed delivery since its webhook was registered; the token alone verifies)"
        for i in view["integrations"]
        if i["signature"]["expected"] and not i["signature"]["seen"]
    ]
    warnings += [
        f"integration {i['id']} ({i['name']}) "
        + (
            "has never sent a delivery"
            if i["quiet_s"] is None
            else f"has sent nothing for {age_text(i['quiet_s'])}"
        )
        for i in view["integrations"]
        if i["status"] == "active" and (i["quiet_s"] is None or i["quiet_s"] > quiet_after_s)
    ]
    for i in view["integrations"]:
        token = i.get("token") or {}
        days = token.get("days_left")
        if days is not None and days < 0:
            found.append(
                f"integration {i['id']} ({i['name']}): its token expired on "
                f"{token['expires_on']}; Jira refuses every call "
                f"({RELINK.get(token['kind'], DEFAULT_RELINK)})"
            )
    warnings += [
        f"integration {i['id']} ({i['name']}): its token expires on "
        f"{i['token']['expires_on']}, in {i['token']['days_left']} day(s) (link again with a "
        "new token before then)"
        for i in view["integrations"]
        if (i.get("token") or {}).get("days_left") is not None
        and 0 <= i["token"]["days_left"] <= TOKEN_WARN_DAYS
    ]
    for i in view["integrations"]:
        hook = i.get("dynamic_webhook") or {}
        days = hook.get("days_left")
        refresh = f"jira-sync integration configure {i['id']} --refresh-server-info"
        if days is not None and days < 0:
            found.append(
                f"integration {i['id']} ({i['name']}): its dynamic webhook expired on "
                f"{hook['expires_at']}; Cloud sends nothing (is beat running? {refresh} "
                "registers it again)"
            )
        elif days is not None and days < DYNAMIC_WEBHOOK_WARN_DAYS and i["status"] == "active":
            warnings.append(
                f"integration {i['id']} ({i['name']}): its dynamic webhook expires on "
                f"{hook['expires_at']}, in {days} day(s), and beat has not refreshed it "
                f"(is beat running? {refresh} refreshes it now)"
            )
    warnings += [
        f"integration {i['id']} ({i['name']}): Jira asked every process to wait (429), "
        f"{i['throttled_s']:g}s left; calls resume after that"
        for i in view["integrations"]
        if i.get("throttled_s")
    ]
    warnings += [
        f"integration {i['id']} ({i['name']}): {i['unmapped_users']} Jira user(s) named as "
        "assignee match no user here; their assignments were not applied (jira-sync users "
        f"unmapped --integration {i['id']}, then users map)"
        for i in view["integrations"]
        if i.get("unmapped_users")
    ]
    return found, warnings


def detail_text(detail: Any) -> str:
    if isinstance(detail, dict):
        return ", ".join(f"{k} {v}" for k, v in detail.items() if k != "status")
    return str(detail)


def age_text(seconds: float) -> str:
    """`0.4 s`, `45 s`, `12 min`, `5 h`, `3 d`."""
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= 2 * size:
            return f"{seconds / size:.0f} {unit}"
    return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
