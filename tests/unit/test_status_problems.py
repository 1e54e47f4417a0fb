"""What `jira-sync status` calls a problem (exit 1) and what only a warning, decided from the
figures alone."""

from __future__ import annotations

from typing import Any

from worker.cli.problems import BEAT_LATE_AFTER_S, problems

DAY_S = 86400.0


def integration(id: int, name: str, status: str = "active", **over: Any) -> dict[str, Any]:
    sweep = {"enabled": True, "interval_s": 300, "ran": True, "since_success_s": 120.0}
    sweep |= {"last_error": None, **over.pop("reconcile", {})}
    signature = {"expected": False, "seen": False, "refusals": 0, "since_refusal_s": None}
    signature |= over.pop("signature", {})
    return {
        "id": id, "name": name, "status": status, "quiet_s": 60.0, "reconcile": sweep,
        "signature": signature, **over,
    }  # fmt: skip


def healthy(**over: Any) -> dict[str, Any]:
    view: dict[str, Any] = {
        "receiver": {"url": "http://127.0.0.1:8000", "ready": True, "detail": {}},
        "broker": {"reachable": True, "queues": {}, "unacked": 0},
        "unfinished": {"count": 0, "stuck_after_s": 600.0, "stuck": 0, "stuck_ids": []},
        "failed": {"not_replayed": 0, "by_error_type": {}},
        "beat": {"age_s": 3.0},
        "integrations": [integration(1, "jira")],
    }
    view.update(over)
    return view


def test_healthy_figures_are_no_problem() -> None:
    assert problems(healthy(), DAY_S) == ([], [])


def test_beat_that_stopped_sweeping_is_a_problem() -> None:
    found, _ = problems(healthy(beat={"age_s": BEAT_LATE_AFTER_S + 1}), DAY_S)
    assert found == ["beat has not swept for 2 min (every 15 s)"]


def test_a_quiet_active_integration_is_a_warning_and_a_disabled_one_nothing() -> None:
    integrations = [
        integration(1, "a", quiet_s=3 * DAY_S),
        integration(2, "b", "disabled", quiet_s=3 * DAY_S),
    ]
    assert problems(healthy(integrations=integrations), DAY_S) == (
        [],
        ["integration 1 (a) has sent nothing for 3 d"],
    )


def test_unreachable_broker_is_a_problem() -> None:
    broker = {"reachable": False, "detail": "unreachable (ConnectionError)"}
    found, _ = problems(healthy(broker=broker), DAY_S)
    assert found == ["broker (BROKER_URL) unreachable (ConnectionError)"]


def test_a_reconciliation_that_stopped_completing_is_a_problem() -> None:
    failing = {"since_success_s": 3600.0, "last_error": "Jira answered 503 to GET search"}
    integrations = [
        integration(1, "a", reconcile=failing),
        integration(2, "b", reconcile={"since_success_s": None, "last_error": "refused"}),
        integration(3, "c", reconcile={**failing, "enabled": False}),  # switched off
        integration(4, "d", reconcile={"since_success_s": 600.0}),  # two intervals: in time
    ]
    found, _ = problems(healthy(integrations=integrations), DAY_S)
    assert found == [
        "reconciliation of integration 1 (a) has not completed for 60 min: Jira answered 503 "
        "to GET search (jira-sync reconcile status)",
        "reconciliation of integration 2 (b) has not completed ever: refused "
        "(jira-sync reconcile status)",
    ]


def test_recent_signature_refusals_are_a_problem_and_old_ones_not() -> None:
    integrations = [
        integration(1, "a", signature={"expected": True, "seen": True, "refusals": 3,
                                       "since_refusal_s": 120.0}),
        integration(2, "b", signature={"expected": True, "seen": True, "refusals": 9,
                                       "since_refusal_s": 2 * DAY_S}),
    ]  # fmt: skip
    found, _ = problems(healthy(integrations=integrations), DAY_S)
    assert len(found) == 1
    assert found[0].startswith(
        "integration 1 (a): 3 delivery(ies) refused for their signature, the last 2 min ago"
    )


def test_a_signature_expected_and_not_seen_yet_is_a_warning() -> None:
    integrations = [
        integration(1, "a", signature={"expected": True, "seen": False}),
        integration(2, "b", signature={"expected": True, "seen": True}),
    ]
    _, warnings = problems(healthy(integrations=integrations), DAY_S)
    assert [w.split(" (Jira")[0] for w in warnings] == [
        "integration 1 (a): signature expected, not seen yet"
    ]
