"""The shipped alerting rules and dashboard read metrics /metrics serves, and every alert has a
promtool case that fires it and one that does not (promtool itself runs them: tests/
promtool_leg.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus"
METRIC = re.compile(r"\bjira_sync_[a-z_]+")
SUFFIXES = ("_bucket", "_count", "_sum")


def served() -> set[str]:
    """Every metric name the receiver's /metrics module declares."""
    text = (ROOT / "worker" / "receiver" / "metrics.py").read_text()
    names = set(re.findall(r'"(jira_sync_[a-z_]+)"', text))
    return names | {n + "_total" for n in names}  # Counters gain _total in the text format


def used_in(text: str) -> set[str]:
    found = set()
    for name in METRIC.findall(text):
        for suffix in SUFFIXES:
            name = name.removesuffix(suffix)
        found.add(name)
    return found


def test_alerts_and_dashboard_read_only_metrics_that_exist() -> None:
    rules = yaml.safe_load((RULES / "alerts.yml").read_text())["groups"][0]["rules"]
    exprs = " ".join(str(r["expr"]) for r in rules)
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "jira-sync.json").read_text())
    targets = " ".join(t["expr"] for p in dashboard["panels"] for t in p.get("targets", []))
    missing = (used_in(exprs) | used_in(targets)) - served()
    assert not missing, sorted(missing)


def test_every_alert_has_a_case_that_fires_and_one_that_does_not() -> None:
    rules = yaml.safe_load((RULES / "alerts.yml").read_text())["groups"][0]["rules"]
    cases = yaml.safe_load((RULES / "alerts_test.yml").read_text())["tests"]
    fires, quiet = set(), set()
    for case in cases:
        for check in case["alert_rule_test"]:
            (fires if check["exp_alerts"] else quiet).add(check["alertname"])
    alerts = {r["alert"] for r in rules}
    assert alerts == fires == quiet
