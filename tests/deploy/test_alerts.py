"""The Prometheus alert rules (deploy/prometheus/lkps-alerts.yaml): each queries what LKPS
exports, has a runbook section, and fires on the failure it names (promtool's unit tests,
lkps-alerts.test.yaml)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import DEPLOY, ROOT, run_tool
from tests.deploy.promql import exported_series, problems

pytestmark = pytest.mark.deploy

RULES = DEPLOY / "prometheus" / "lkps-alerts.yaml"
RULE_TESTS = DEPLOY / "prometheus" / "lkps-alerts.test.yaml"
RUNBOOKS = ROOT / "docs" / "runbooks.md"

# What an on-call person must act on (issue 15).
REQUIRED = {
    "LkpsAuditWritesFailing",
    "LkpsHigh5xxRate",
    "LkpsJwksUnreachable",
    "LkpsGraphUnreachable",
    "LkpsNoAgentJoiningSessions",
    "LkpsAuditChainBroken",
}


def alerts() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_the_alerts_asked_for_exist() -> None:
    assert {rule["alert"] for rule in alerts()} >= REQUIRED


def test_every_alert_queries_exported_metrics_and_labels() -> None:
    series = exported_series()
    found = [
        f"{rule['alert']}: {problem}"
        for rule in alerts()
        for problem in problems(rule["expr"], series)
    ]
    assert found == []


def test_every_alert_has_a_severity_and_its_runbook_section() -> None:
    sections = set(re.findall(r"^#+ .*\{#(\w+)\}\s*$", RUNBOOKS.read_text(), re.MULTILINE))
    for rule in alerts():
        name = rule["alert"]
        assert rule["labels"]["severity"] in ("critical", "warning"), name
        assert rule["annotations"]["runbook"] == f"docs/runbooks.md#{name}"
        assert name in sections, f"docs/runbooks.md has no section {{#{name}}}"


def test_the_audit_and_5xx_alerts_are_unit_tested() -> None:
    tested = {
        case["alertname"]
        for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
    }
    assert {"LkpsAuditWritesFailing", "LkpsHigh5xxRate"} <= tested


def test_promtool_checks_the_rules(promtool: Path) -> None:
    result = run_tool(promtool, "check", "rules", RULES)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_alerts_fire_on_what_they_name(promtool: Path) -> None:
    result = run_tool(promtool, "test", "rules", RULE_TESTS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_unit_tests_catch_an_alert_that_never_fires(promtool: Path, tmp_path: Path) -> None:
    """promtool's tests bite: with the audit alert's threshold out of reach they fail."""
    shutil.copy(RULE_TESTS, tmp_path / RULE_TESTS.name)
    text = RULES.read_text()
    broken = text.replace(
        "expr: sum(increase(lkps_audit_write_failures_total[5m])) > 0",
        "expr: sum(increase(lkps_audit_write_failures_total[5m])) > 1000",
    )
    assert broken != text
    (tmp_path / RULES.name).write_text(broken)
    result = run_tool(promtool, "test", "rules", tmp_path / RULE_TESTS.name)
    assert result.returncode != 0
    assert "LkpsAuditWritesFailing" in result.stdout + result.stderr
