"""Every metric an alert rule or a dashboard uses is exported by K2's code, with the labels it selects on.

Names are read from the code itself (every prometheus_client metric or metric family constructed with a
literal ``k2_*`` name in k2/, feed_handlers/, offload/, flows/), so a renamed metric breaks this test,
not a dashboard in production.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass

import yaml

from tests.deploy.tools import ALERT_RULES, DASHBOARDS, RULES
from tests.support import REPO

SOURCES = ("k2", "feed_handlers", "offload", "flows")
COUNTERS = {"Counter", "CounterMetricFamily"}
HISTOGRAMS = {"Histogram", "HistogramMetricFamily"}
CONSTRUCTORS = COUNTERS | HISTOGRAMS | {"Gauge", "GaugeMetricFamily", "Summary", "SummaryMetricFamily"}
# Not K2's code: Prometheus' own series and Redpanda's consumer-group lag (docker/prometheus/rules/k2-recording.yml)
EXTERNAL = {"up", "redpanda_kafka_consumer_group_lag_sum"}
# Labels Prometheus adds to every series (job, instance) or that the scrape config sets (exchange)
TARGET_LABELS = {"job", "instance", "exchange"}
# The offload engineer's contract (issue 5 brief): these must exist under exactly these names
OFFLOAD_CONTRACT = {
    "k2_offload_rows_total": {"table"},
    "k2_offload_last_duration_seconds": {"table"},
    "k2_offload_last_success_timestamp_seconds": {"table"},
    "k2_offload_watermark_lag_seconds": {"table"},
    "k2_offload_failures_total": {"table"},
    "k2_audit_status": {"table", "status"},
    "k2_audit_last_run_timestamp_seconds": set(),
}


@dataclass(frozen=True)
class Exported:
    name: str
    labels: frozenset[str]
    source: str


def _constructor(node: ast.Call) -> str | None:
    func = node.func
    name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
    return name if name in CONSTRUCTORS else None


def _labels(node: ast.Call) -> frozenset[str]:
    value = next((k.value for k in node.keywords if k.arg in ("labels", "labelnames")), None)
    if value is None and len(node.args) >= 3:
        value = node.args[2]
    if isinstance(value, ast.List | ast.Tuple):
        return frozenset(e.value for e in value.elts if isinstance(e, ast.Constant) and isinstance(e.value, str))
    return frozenset()


def exported() -> dict[str, Exported]:
    """Series name → what exports it, with the suffixes prometheus_client adds."""
    out: dict[str, Exported] = {}
    files = sorted(f for package in SOURCES for f in (REPO / package).rglob("*.py"))
    assert REPO / "offload" / "metrics.py" in files
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call) or (kind := _constructor(node)) is None or not node.args:
                continue
            first = node.args[0]
            if not (isinstance(first, ast.Constant) and isinstance(first.value, str) and first.value.startswith("k2_")):
                continue
            base, labels, source = first.value, _labels(node), str(path.relative_to(REPO))
            if kind in COUNTERS:
                names = [base.removesuffix("_total") + "_total"]
            elif kind in HISTOGRAMS:
                names = [base + "_bucket", base + "_sum", base + "_count"]
                labels |= {"le"} if names[0] == base + "_bucket" else set()
            else:
                names = [base]
            for name in names:
                out[name] = Exported(name, labels | ({"le"} if name.endswith("_bucket") else set()), source)
    return out


def _rule_exprs() -> list[tuple[str, str]]:
    exprs = []
    for path in sorted(RULES.glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                exprs.append((f"{path.name}: {rule.get('alert') or rule.get('record')}", rule["expr"]))
    return exprs


def _dashboard_exprs() -> list[tuple[str, str]]:
    exprs = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        dashboard = json.loads(path.read_text())
        for panel in dashboard["panels"]:
            exprs += [(f"{path.name}: {panel['title']}", t["expr"]) for t in panel.get("targets", []) if "expr" in t]
        for variable in dashboard["templating"]["list"]:
            if variable.get("datasource", {}).get("type") == "prometheus":
                selector = re.fullmatch(r"label_values\((.+),\s*\w+\)", variable["query"])
                assert selector is not None, variable["query"]
                exprs.append((f"{path.name}: ${variable['name']}", selector.group(1)))
    return exprs


_FUNCTIONS_AND_KEYWORDS = {
    "sum", "max", "min", "avg", "count", "rate", "increase", "irate", "time", "histogram_quantile", "label_replace",
    "by", "without", "on", "ignoring", "and", "or", "unless", "bool", "group_left", "group_right",
    "offset", "absent", "humanize", "topk", "bottomk",
}  # fmt: skip


def _metric_names(expr: str) -> set[str]:
    expr = re.sub(r'"[^"]*"', '""', expr)  # label values and label_replace arguments are not metrics
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    expr = re.sub(r"\{[^}]*\}", "{}", expr)
    expr = re.sub(r"\[[^\]]*\]", "[]", expr)
    names = set(re.findall(r"(?<![\w.$])([a-zA-Z_:][a-zA-Z0-9_:]*)(?![\w(])", expr))
    names |= set(re.findall(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(?=\{)", expr))
    return {n for n in names if n not in _FUNCTIONS_AND_KEYWORDS and not n.isdigit()} - {"e", "Inf"}


def _selected_labels(expr: str) -> list[tuple[str, set[str]]]:
    return [(m.group(1), set(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", m.group(2))))
            for m in re.finditer(r"\b(k2_\w+)\{([^}]*)\}", expr)]  # fmt: skip


def test_metric_names_are_read_from_the_code() -> None:
    names = exported()
    assert names["k2_feed_trades_total"].source == "feed_handlers/metrics.py"  # a CounterMetricFamily
    assert names["k2_feed_produce_latency_seconds_bucket"].labels == {"exchange", "le"}
    assert names["k2_consumer_lag"].source == "k2/embedded/kafka_engine.py"
    assert names["k2_pipeline_latency_seconds"].labels == {"exchange", "quantile"}
    assert names["k2_clickhouse_up"].source == "k2/exporter.py"
    for name, labels in OFFLOAD_CONTRACT.items():
        assert names[name].labels == labels, name
        assert names[name].source == "offload/metrics.py", name
    assert _metric_names('sum by (exchange) (rate(k2_feed_trades_total{exchange=~"$x"}[5m])) > 0 and up') == {
        "k2_feed_trades_total",
        "up",
    }


def test_every_metric_in_rules_and_dashboards_is_exported_with_its_labels() -> None:
    names = exported()
    recorded = {rule["record"] for group in yaml.safe_load((RULES / "k2-recording.yml").read_text())["groups"]
                for rule in group["rules"]}  # fmt: skip
    exprs = _rule_exprs() + _dashboard_exprs()
    assert len(exprs) > 50
    used: set[str] = set()
    for where, expr in exprs:
        metrics = _metric_names(expr)
        assert metrics, (where, expr)
        used |= metrics
        missing = sorted(m for m in metrics if m not in names and m not in EXTERNAL and m not in recorded)
        assert missing == [], f"{where}: {missing} not exported by {', '.join(SOURCES)}"
        for metric, labels in _selected_labels(expr):
            if metric in names:
                unknown = labels - names[metric].labels - TARGET_LABELS
                assert not unknown, f"{where}: {metric} has no label {sorted(unknown)}"
    # the alerts cover every family DESIGN.md names
    alert_metrics = set().union(*(_metric_names(e) for w, e in _rule_exprs() if ALERT_RULES.name in w))
    assert {"up", "k2_feed_connected", "k2_feed_last_trade_timestamp_seconds", "k2_feed_missing_trades_total",
            "k2_pipeline_latency_seconds", "k2_consumer_lag", "k2_offload_last_success_timestamp_seconds",
            "k2_offload_failures_total", "k2_audit_status", "k2_clickhouse_up"} <= alert_metrics  # fmt: skip
    print(f"{len(used)} metrics used by {len(exprs)} expressions, all exported")
