"""The Grafana dashboard and the Prometheus alerts: well-formed, and built on metrics ragserve exports."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "ragserve-dashboard.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yaml"
METRICS_MODULE = ROOT / "src" / "ragserve" / "observability" / "metrics.py"

# The metrics the dashboard must show (some are being added to observability/metrics.py in other issues).
DASHBOARD_METRICS = {
    "ragserve_http_request_duration_seconds",
    "ragserve_http_requests_in_flight",
    "ragserve_stage_duration_seconds",
    "ragserve_answer_first_token_seconds",
    "ragserve_embedding_cache_lookups_total",
    "ragserve_retrieval_top_similarity_score",
    "ragserve_retrieval_query_length_tokens",
    "ragserve_embedding_dimensions",
    "ragserve_llm_tokens_total",
    "ragserve_jobs_pending_documents",
    "ragserve_job_duration_seconds",
    "ragserve_ingest_lag_seconds",
    "ragserve_llm_breaker_state",
    "ragserve_answer_groundedness_score",
    "ragserve_index_queries_total",
    "process_resident_memory_bytes",
    "up",
}
# Series from Prometheus itself and kube-state-metrics that the dashboard and alerts may use too.
EXTERNAL_METRICS = {"up", "process_resident_memory_bytes", "kube_pod_container_resource_limits"}
ALERT_NAMES = {
    "RagserveHighErrorRate",
    "RagserveHighLatency",
    "RagserveInstanceDown",
    "RagserveMemoryNearLimit",
    "RagserveQueueBacklogGrowing",
    "RagserveGroundednessFalling",
}
PROMQL_KEYWORDS = {
    "by",
    "on",
    "and",
    "or",
    "unless",
    "offset",
    "bool",
    "without",
    "ignoring",
    "group_left",
    "group_right",
}


def known_metrics() -> set[str]:
    declared = set(re.findall(r'"(ragserve_[a-z0-9_]+)"', METRICS_MODULE.read_text(encoding="utf-8")))
    return declared | DASHBOARD_METRICS | EXTERNAL_METRICS


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression, with a histogram's _bucket/_sum/_count suffix removed."""
    bare = re.sub(r'"[^"]*"', "", expr)  # label values
    bare = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", bare)  # label matchers, ranges
    bare = re.sub(r"\b(by|on|without|ignoring|group_left|group_right)\s*\([^)]*\)", "", bare)  # label lists
    bare = re.sub(r"\boffset\s+\w+", "", bare)
    names = set()
    for match in re.finditer(r"(?<![\w.:])([a-zA-Z_:][a-zA-Z0-9_:]*)(?![\w:])(?!\s*\()", bare):
        word = match.group(1)
        if word not in PROMQL_KEYWORDS:
            names.add(re.sub(r"_(bucket|sum|count)$", "", word) if word.startswith("ragserve_") else word)
    return names


def is_balanced(expr: str) -> bool:
    pairs = {")": "(", "}": "{", "]": "["}
    stack: list[str] = []
    for char in expr:
        if char in "({[":
            stack.append(char)
        elif char in pairs and (not stack or stack.pop() != pairs[char]):
            return False
    return not stack


def test_metric_names_helper_sees_through_promql() -> None:
    expr = 'histogram_quantile(0.99, sum by (le) (rate(ragserve_x_seconds_bucket{job="a", route!~"/b"}[5m]))) > 1'
    assert metric_names(expr) == {"ragserve_x_seconds"}
    assert metric_names('a / on (pod) max by (pod) (b{c="d"} offset 1d) and up == 0') == {"a", "b", "up"}
    assert not is_balanced("sum(rate(x[5m])")


# --- Grafana -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return loaded


def panels_with_queries(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in dashboard["panels"] if p["type"] != "row"]


def test_dashboard_is_an_importable_grafana_dashboard(dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"] == "ragserve-overview"
    assert dashboard["title"]
    assert isinstance(dashboard["schemaVersion"], int)
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    for panel in panels_with_queries(dashboard):
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        position = panel["gridPos"]
        assert position["x"] + position["w"] <= 24, panel["title"]


def test_dashboard_panels_do_not_overlap(dashboard: dict[str, Any]) -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in dashboard["panels"]:
        position = panel["gridPos"]
        for x in range(position["x"], position["x"] + position["w"]):
            for y in range(position["y"], position["y"] + position["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


def test_dashboard_shows_every_ragserve_metric(dashboard: dict[str, Any]) -> None:
    exprs = [t["expr"] for p in panels_with_queries(dashboard) for t in p["targets"]]
    referenced = set().union(*(metric_names(e) for e in exprs))
    assert DASHBOARD_METRICS - referenced == set()
    assert referenced - known_metrics() == set(), "the dashboard queries metrics ragserve does not export"
    for expr in exprs:
        assert is_balanced(expr), expr
        if "histogram_quantile" in expr:
            assert "_bucket" in expr, expr
            assert re.search(r"by \([^)]*\ble\b", expr), expr


# --- Prometheus alerts -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def alerts() -> dict[str, dict[str, Any]]:
    document = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    rules = [rule for group in document["groups"] for rule in group["rules"]]
    by_name = {rule["alert"]: rule for rule in rules}
    assert len(by_name) == len(rules), "alert names must be unique"
    return by_name


def test_alerts_are_the_six_expected(alerts: dict[str, dict[str, Any]]) -> None:
    assert set(alerts) == ALERT_NAMES


def test_alerts_are_well_formed(alerts: dict[str, dict[str, Any]]) -> None:
    for name, rule in alerts.items():
        assert set(rule) == {"alert", "expr", "for", "labels", "annotations"}, name
        assert re.fullmatch(r"\d+[smh]", rule["for"]), name
        assert rule["labels"]["severity"] in {"critical", "warning"}, name
        assert rule["annotations"]["summary"], name
        assert is_balanced(rule["expr"]), name
        assert metric_names(rule["expr"]) <= known_metrics(), name


@pytest.mark.parametrize(
    ("name", "fragments", "duration"),
    [
        ("RagserveHighErrorRate", ['status=~"5.."', "> 0.05"], "5m"),
        ("RagserveHighLatency", ["histogram_quantile(0.99", "request_duration_seconds_bucket", ") > 1"], "10m"),
        ("RagserveInstanceDown", ["up{", "== 0"], "2m"),
        ("RagserveMemoryNearLimit", ["process_resident_memory_bytes", 'resource="memory"', "> 0.9"], "5m"),
        ("RagserveQueueBacklogGrowing", ["ragserve_jobs_pending_documents", "deriv(", ") > 0"], "15m"),
        ("RagserveGroundednessFalling", ["ragserve_answer_groundedness_score_sum", "offset 1d", "<"], "30m"),
    ],
)  # fmt: skip
def test_alert_thresholds(alerts: dict[str, dict[str, Any]], name: str, fragments: list[str], duration: str) -> None:
    expr = " ".join(alerts[name]["expr"].split())
    for fragment in fragments:
        assert fragment in expr, f"{name}: {fragment!r} not in {expr!r}"
    assert alerts[name]["for"] == duration
