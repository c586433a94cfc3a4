"""The Grafana dashboard (deploy/grafana/lkps-dashboard.json) queries only what LKPS
exports, and shows what an operator looks at first."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import DEPLOY, run_tool
from tests.deploy.promql import exported_series, problems

pytestmark = pytest.mark.deploy

DASHBOARD = DEPLOY / "grafana" / "lkps-dashboard.json"

# The issue's list: session starts by outcome, latency, agents present, workers and load,
# audit write latency and failures, JWKS/Graph fetch failures, rate-limit hits, no-shows.
MUST_SHOW = (
    "lkps_session_starts_total",
    "lkps_http_request_duration_seconds_bucket",
    "lkps_agents_present",
    "lkps_agent_registrations_live",
    "lkps_gateway_workers",
    "lkps_gateway_worker_load",
    "lkps_audit_write_seconds_bucket",
    "lkps_audit_write_failures_total",
    "lkps_jwks_fetches_total",
    "lkps_graph_requests_total",
    "lkps_rate_limited_total",
    "lkps_session_agent_missing_total",
)


def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in items:
        if panel.get("type") == "row":
            yield from panels(panel.get("panels", []))
        else:
            yield panel


def queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        (panel["title"], target["expr"])
        for panel in panels(dashboard["panels"])
        for target in panel["targets"]
    ]


def test_every_query_is_of_exported_metrics_and_labels() -> None:
    series = exported_series()
    found = {
        f"{title}: {problem}" for title, expr in queries() for problem in problems(expr, series)
    }
    assert not found


def test_it_shows_what_the_issue_asks_for() -> None:
    text = " ".join(expr for _, expr in queries())
    assert [name for name in MUST_SHOW if name not in text] == []


def test_panels_are_well_formed() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    every = list(panels(dashboard["panels"]))
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert all(panel["targets"] and panel["title"] for panel in every)
    assert all(panel["datasource"]["uid"] == "${datasource}" for panel in every)
    assert {variable["name"] for variable in dashboard["templating"]["list"]} == {
        "datasource",
        "job",
    }


def test_the_checker_catches_unknown_metrics_and_labels() -> None:
    """The check above would pass an empty check: it must name what is wrong."""
    series = exported_series()
    assert problems("rate(lkps_http_requests_total[5m])", series) == []
    assert problems("rate(lkps_no_such_thing_total[5m])", series) == [
        "lkps_no_such_thing_total: no such metric in lkps/metrics.py"
    ]
    assert problems('lkps_jwks_fetches_total{result="ok"}', series) == [
        "lkps_jwks_fetches_total: no label 'result'"
    ]
    assert problems("sum by (agent) (lkps_graph_requests_total)", series) == [
        "grouped by 'agent', which none of its metrics carries"
    ]
    assert problems("vector(1)", series) == ["queries no LKPS metric"]


def test_every_query_parses(promtool: Path, tmp_path: Path) -> None:
    """promtool parses each query, as recording rules with Grafana's variables filled in."""
    rules = [
        {
            "record": f"lkps_dashboard:query{number}",
            "expr": expr.replace("$__rate_interval", "5m").replace("$job", ".*"),
        }
        for number, (_, expr) in enumerate(queries())
    ]
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = run_tool(promtool, "check", "rules", path)
    assert result.returncode == 0, result.stdout + result.stderr
