"""Prometheus and Alertmanager configuration checked by their own tools (Debian prometheus 2.42,
prometheus-alertmanager 0.25), and every DESIGN.md alert tested with `promtool test rules`."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from tests.deploy.tools import ALERT_RULES, DOCKER, RULE_TESTS, RULES, run, tool
from tests.support import REPO

# DESIGN.md, Observability: "Alerts ...: feed handler down, exchange disconnected, symbol stale, trade gaps,
# end-to-end latency high, consumer lag high, offload stale or failed, audit missing data, ClickHouse down."
DESIGN_ALERTS = {
    "feed handler down": "FeedHandlerDown",
    "exchange disconnected": "ExchangeDisconnected",
    "symbol stale": "SymbolStale",
    "trade gaps": "TradeGaps",
    "end-to-end latency high": "EndToEndLatencyHigh",
    "consumer lag high": "ConsumerLagHigh",
    "offload stale": "OffloadStale",
    "offload failed": "OffloadFailed",
    "audit missing data": "AuditMissingData",
    "ClickHouse down": "ClickHouseDown",
}


def _alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERT_RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def _anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to dashes."""
    headings = re.findall(r"^#+\s+(.+?)\s*$", markdown, re.M)
    return {re.sub(r"[^\w\- ]", "", h).strip().lower().replace(" ", "-") for h in headings}


def test_prometheus_config_and_rules_pass_promtool(tmp_path: Path) -> None:
    promtool = tool("promtool")
    config = yaml.safe_load((DOCKER / "prometheus" / "prometheus.yml").read_text())
    assert config["rule_files"] == ["/etc/prometheus/rules/*.yml"]  # where compose mounts RULES
    config["rule_files"] = [str(RULES / "*.yml")]
    local = tmp_path / "prometheus.yml"
    local.write_text(yaml.safe_dump(config))
    out = run(promtool, "check", "config", local).stdout
    assert "SUCCESS: 2 rule files found" in out, out
    assert f"Checking {ALERT_RULES}\n  SUCCESS: {len(_alert_rules())} rules found" in out, out
    for rules in sorted(RULES.glob("*.yml")):
        assert "SUCCESS" in run(promtool, "check", "rules", rules).stdout


def test_every_alert_passes_its_promtool_unit_test() -> None:
    result = run(tool("promtool"), "test", "rules", RULE_TESTS)
    assert "SUCCESS" in result.stdout


def test_every_design_alert_has_a_rule_a_firing_and_a_silent_case_and_a_runbook() -> None:
    rules = {rule["alert"]: rule for rule in _alert_rules()}
    assert set(DESIGN_ALERTS.values()) <= set(rules)
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    cases = [case for test in tests for case in test.get("alert_rule_test", [])]
    runbook_anchors = _anchors((REPO / "docs" / "runbooks.md").read_text())
    for name, rule in rules.items():
        assert [c for c in cases if c["alertname"] == name and c["exp_alerts"]], f"{name}: no firing case"
        assert [c for c in cases if c["alertname"] == name and not c["exp_alerts"]], f"{name}: no silent case"
        assert rule["labels"]["severity"] in ("critical", "warning"), name
        assert {"summary", "description", "runbook"} <= set(rule["annotations"]), name
        page, _, anchor = rule["annotations"]["runbook"].partition("#")
        assert (page, anchor) == ("docs/runbooks.md", name.lower()), name
        assert anchor in runbook_anchors, f"{name}: docs/runbooks.md has no '### {name}' section"


def test_alertmanager_config_passes_amtool_and_inhibits_real_alerts() -> None:
    config_path = DOCKER / "alertmanager" / "alertmanager.yml"
    assert "SUCCESS" in run(tool("amtool"), "check-config", config_path).stdout
    names = {rule["alert"] for rule in _alert_rules()}
    config = yaml.safe_load(config_path.read_text())
    for inhibit in config["inhibit_rules"]:
        for matcher in inhibit["source_matchers"] + inhibit["target_matchers"]:
            pattern = re.fullmatch(r'alertname=~?"(.+)"', matcher)
            assert pattern is not None, matcher
            assert set(pattern.group(1).split("|")) <= names, matcher
