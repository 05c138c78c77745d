"""Writes docker/grafana/dashboards/*.json, the dashboards Grafana provisions.

Edit here, then run ``.venv/bin/python docker/grafana/build_dashboards.py``; the test suite fails if
the committed JSON differs from what this script writes (tests/deploy/test_grafana.py), validates it
against the Grafana dashboard JSON schema, parses every PromQL expression with promtool and runs
every ClickHouse query against the embedded stack.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "dashboards"
PROM = {"type": "prometheus", "uid": "k2-prometheus"}
CH = {"type": "grafana-clickhouse-datasource", "uid": "k2-clickhouse"}
SCHEMA_VERSION = 41
CH_PLUGIN_VERSION = "4.10.1"

Json = dict[str, Any]


class Layout:
    """Places panels left to right on Grafana's 24-column grid, wrapping rows."""

    def __init__(self) -> None:
        self.x = self.y = self.row_h = 0
        self.next_id = 1

    def place(self, w: int, h: int) -> tuple[Json, int]:
        if self.x + w > 24:
            self.x, self.y, self.row_h = 0, self.y + self.row_h, 0
        pos = {"h": h, "w": w, "x": self.x, "y": self.y}
        self.x += w
        self.row_h = max(self.row_h, h)
        self.next_id += 1
        return pos, self.next_id - 1

    def row(self, title: str) -> Json:
        if self.x:
            self.x, self.y, self.row_h = 0, self.y + self.row_h, 0
        panel = {"collapsed": False, "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y}, "id": self.next_id,
                 "panels": [], "title": title, "type": "row"}  # fmt: skip
        self.next_id += 1
        self.y += 1
        return panel


def prom(expr: str, legend: str = "__auto", ref: str = "A", instant: bool = False) -> Json:
    target: Json = {"datasource": PROM, "expr": expr, "legendFormat": legend, "refId": ref}
    if instant:
        target.update(instant=True, range=False, format="table")
    return target


def panel(
    layout: Layout,
    title: str,
    targets: list[Json],
    kind: str = "timeseries",
    w: int = 12,
    h: int = 8,
    unit: str = "short",
    description: str = "",
    datasource: Json = PROM,
    options: Json | None = None,
    thresholds: list[tuple[float | None, str]] | None = None,
    transformations: list[Json] | None = None,
) -> Json:
    pos, panel_id = layout.place(w, h)
    steps = [{"color": color, "value": value} for value, color in (thresholds or [(None, "green")])]
    out: Json = {
        "datasource": datasource,
        "description": description,
        "fieldConfig": {
            "defaults": {"unit": unit, "thresholds": {"mode": "absolute", "steps": steps}},
            "overrides": [],
        },
        "gridPos": pos,
        "id": panel_id,
        "options": options or {},
        "targets": targets,
        "title": title,
        "type": kind,
    }
    if transformations:
        out["transformations"] = transformations
    return out


def query_var(name: str, query: str, label: str, datasource: Json = PROM, include_all: bool = True) -> Json:
    return {
        "datasource": datasource,
        "includeAll": include_all,
        "label": label,
        "multi": include_all,
        "name": name,
        "query": query,
        "refresh": 2,
        "sort": 1,
        "type": "query",
        **({"allValue": ".*"} if include_all else {}),
    }


# every dashboard links to the others (all carry the tag k2)
_LINK = {"asDropdown": True, "icon": "external link", "includeVars": False, "keepTime": True, "tags": ["k2"],
         "targetBlank": False, "title": "K2", "tooltip": "", "type": "dashboards"}  # fmt: skip


def dashboard(uid: str, title: str, description: str, panels: list[Json], variables: list[Json],
              time_from: str = "now-6h") -> Json:  # fmt: skip
    return {
        "annotations": {"list": []},
        "description": description,
        "editable": False,
        "graphTooltip": 1,
        "links": [_LINK],
        "panels": panels,
        "refresh": "30s",
        "schemaVersion": SCHEMA_VERSION,
        "tags": ["k2"],
        "templating": {"list": variables},
        "time": {"from": time_from, "to": "now"},
        "timezone": "utc",
        "title": title,
        "uid": uid,
        "version": 1,
    }


STAT = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}, "colorMode": "background"}
SEL = 'exchange=~"$exchange"'
SEL_SYM = 'exchange=~"$exchange", symbol=~"$symbol"'


def feeds() -> Json:
    lay = Layout()
    panels = [
        lay.row("Handlers and connections"),
        panel(lay, "Handler up", [prom(f'up{{job="feed-handler", {SEL}}}', "{{exchange}}")], "stat", w=8, h=5,
              options=STAT, thresholds=[(None, "red"), (1, "green")],
              description="Prometheus can scrape the handler (FeedHandlerDown)."),
        panel(lay, "Open connections", [prom(f"sum by (exchange) (k2_feed_connected{{{SEL}}})", "{{exchange}}")],
              "stat", w=8, h=5, options=STAT, thresholds=[(None, "red"), (1, "green")],
              description="WebSocket connections to the exchange (ExchangeDisconnected)."),
        panel(lay, "Subscribed symbols", [prom(f"sum by (exchange) (k2_feed_subscribed_symbols{{{SEL}}})",
                                                "{{exchange}}")], "stat", w=8, h=5, options=STAT),
        panel(lay, "Reconnects by cause (1h)",
              [prom(f"sum by (exchange, reason) (increase(k2_feed_reconnects_total{{{SEL}}}[1h]))",
                    "{{exchange}} {{reason}}")]),
        panel(lay, "Frames by kind", [prom(f"sum by (exchange, kind) (rate(k2_feed_frames_total{{{SEL}}}"
                                           "[$__rate_interval]))", "{{exchange}} {{kind}}")], unit="ops"),
        lay.row("Trades per symbol"),
        panel(lay, "Trades/s", [prom(f"sum by (exchange, symbol) (rate(k2_feed_trades_total{{{SEL_SYM}}}"
                                     "[$__rate_interval]))", "{{exchange}} {{symbol}}")], unit="ops"),
        panel(lay, "Seconds since last trade",
              [prom(f"time() - k2_feed_last_trade_timestamp_seconds{{{SEL_SYM}}}", "{{exchange}} {{symbol}}")],
              unit="s", thresholds=[(None, "green"), (300, "red")],
              description="Event time of the last published trade (SymbolStale above 300 s)."),
        panel(lay, "Duplicates dropped/s",
              [prom(f"sum by (exchange, symbol) (rate(k2_feed_duplicate_trades_total{{{SEL_SYM}}}"
                    "[$__rate_interval]))", "{{exchange}} {{symbol}}")], unit="ops"),
        panel(lay, "Trade-id gaps, backfilled and missing trades (1h)", [
            prom(f"sum by (exchange, symbol) (increase(k2_feed_trade_gaps_total{{{SEL_SYM}}}[1h]))",
                 "gaps {{exchange}} {{symbol}}", "A"),
            prom(f"sum by (exchange, symbol) (increase(k2_feed_backfilled_trades_total{{{SEL_SYM}}}[1h]))",
                 "backfilled {{exchange}} {{symbol}}", "B"),
            prom(f"sum by (exchange, symbol) (increase(k2_feed_missing_trades_total{{{SEL_SYM}}}[1h]))",
                 "missing {{exchange}} {{symbol}}", "C"),
        ], description="Missing trades could not be recovered over REST (TradeGaps)."),
        lay.row("Errors and publishing"),
        panel(lay, "Parse errors and dead letters/s", [
            prom(f"sum by (exchange) (rate(k2_feed_parse_errors_total{{{SEL}}}[$__rate_interval]))",
                 "parse errors {{exchange}}", "A"),
            prom(f"sum by (exchange) (rate(k2_feed_dead_letters_total{{{SEL}}}[$__rate_interval]))",
                 "dead letters {{exchange}}", "B"),
        ], w=8, unit="ops"),
        panel(lay, "Publish buffer and backpressure", [
            prom(f"sum by (exchange) (k2_feed_publish_buffer_messages{{{SEL}}})", "buffered {{exchange}}", "A"),
            prom(f"max by (exchange) (k2_feed_publish_backpressure{{{SEL}}})", "backpressure {{exchange}}", "B"),
        ], w=8),
        panel(lay, "Publish errors/s", [prom(f"sum by (exchange) (rate(k2_feed_publish_errors_total{{{SEL}}}"
                                             "[$__rate_interval]))", "{{exchange}}")], w=8, unit="ops"),
    ]  # fmt: skip
    variables = [
        query_var("exchange", "label_values(k2_feed_connected, exchange)", "Exchange"),
        query_var("symbol", 'label_values(k2_feed_trades_total{exchange=~"$exchange"}, symbol)', "Symbol"),
    ]
    return dashboard("k2-feeds", "K2 / Feed health", "Feed handlers per exchange and symbol", panels, variables)


def pipeline() -> Json:
    lay = Layout()
    panels = [
        lay.row("Latency"),
        panel(lay, "End-to-end latency (frame received → silver)",
              [prom(f'k2_pipeline_latency_seconds{{{SEL}, quantile=~"0.5|0.99"}}', "{{exchange}} p{{quantile}}")],
              unit="s", thresholds=[(None, "green"), (5, "red")],
              description="ts_ingested - ts_received of silver rows over the last 5 minutes, from `k2 exporter` "
                          "(EndToEndLatencyHigh at p99 > 5 s)."),
        panel(lay, "Produce latency p50 / p99 (frame received → broker ack)", [
            prom(f"histogram_quantile(0.5, sum by (exchange, le) (rate(k2_feed_produce_latency_seconds_bucket{{{SEL}}}"
                 "[$__rate_interval])))", "{{exchange}} p50", "A"),
            prom(f"histogram_quantile(0.99, sum by (exchange, le) (rate(k2_feed_produce_latency_seconds_bucket"
                 f"{{{SEL}}}[$__rate_interval])))", "{{exchange}} p99", "B"),
        ], unit="s"),
        panel(lay, "Trades in the latency window", [prom(f"k2_pipeline_latency_trades{{{SEL}}}", "{{exchange}}")]),
        panel(lay, "Seconds since the last row reached silver",
              [prom(f"time() - k2_clickhouse_last_ingest_timestamp_seconds{{{SEL}}}", "{{exchange}}")], unit="s"),
        lay.row("Kafka tables"),
        panel(lay, "Consumer lag (messages)", [prom("max by (table) (k2_consumer_lag)", "{{table}}")],
              thresholds=[(None, "green"), (100000, "red")],
              description="Messages behind the end of the topic per queue table (ConsumerLagHigh)."),
        panel(lay, "Rows inserted by queue tables/s",
              [prom("sum by (table) (rate(k2_clickhouse_kafka_rows_total[$__rate_interval]))", "{{table}}")],
              unit="ops", description="Embedded stack; in production see the clickhouse job's own metrics."),
        panel(lay, "Broken messages and failed inserts/s", [
            prom("sum by (table) (rate(k2_clickhouse_kafka_broken_messages_total[$__rate_interval]))",
                 "broken {{table}}", "A"),
            prom("sum by (table) (rate(k2_clickhouse_kafka_insert_errors_total[$__rate_interval]))",
                 "insert errors {{table}}", "B"),
        ], w=24, unit="ops"),
    ]  # fmt: skip
    variables = [query_var("exchange", "label_values(k2_pipeline_latency_seconds, exchange)", "Exchange")]
    return dashboard("k2-pipeline", "K2 / Pipeline latency and lag", "Latency from exchange frame to silver, "
                     "broker produce latency and Kafka-table lag", panels, variables)  # fmt: skip


def clickhouse() -> Json:
    lay = Layout()
    tables = 'table=~"$table"'
    panels = [
        panel(lay, "ClickHouse up", [prom("k2_clickhouse_up", "{{instance}}")], "stat", w=6, h=5, options=STAT,
              thresholds=[(None, "red"), (1, "green")], description="ClickHouseDown when 0 for a minute."),
        panel(lay, "Exporter query time", [prom("k2_exporter_scrape_duration_seconds", "{{instance}}")], "stat",
              w=6, h=5, unit="s", options=STAT),
        panel(lay, "Rows in ingest_errors", [prom('k2_clickhouse_table_rows{table="ingest_errors"}', "rows")],
              "stat", w=6, h=5, options=STAT, thresholds=[(None, "green"), (1, "orange")],
              description="Messages a queue table could not parse (kept 30 days)."),
        panel(lay, "Exporter scrape errors (1h)", [prom("increase(k2_exporter_scrape_errors_total[1h])", "errors")],
              "stat", w=6, h=5, options=STAT),
        panel(lay, "Rows per table", [prom(f"k2_clickhouse_table_rows{{{tables}}}", "{{table}}")]),
        panel(lay, "Active parts per table", [prom(f"k2_clickhouse_table_parts{{{tables}}}", "{{table}}")],
              description="Steady growth means merges fall behind inserts."),
        panel(lay, "Bytes on disk per table", [prom(f"k2_clickhouse_table_bytes{{{tables}}}", "{{table}}")],
              unit="bytes"),
        panel(lay, "Tables now", [prom(f"k2_clickhouse_table_rows{{{tables}}}", "rows", "A", instant=True),
                                  prom(f"k2_clickhouse_table_parts{{{tables}}}", "parts", "B", instant=True),
                                  prom(f"k2_clickhouse_table_bytes{{{tables}}}", "bytes", "C", instant=True)],
              "table", options={"showHeader": True},
              transformations=[{"id": "merge", "options": {}},
                               {"id": "organize", "options": {"excludeByName": {"Time": True, "__name__": True,
                                                                                 "instance": True, "job": True}}}]),
    ]  # fmt: skip
    variables = [query_var("table", "label_values(k2_clickhouse_table_rows, table)", "Table")]
    return dashboard("k2-clickhouse", "K2 / ClickHouse tables", "Health, rows, parts and size of the k2 tables",
                     panels, variables)  # fmt: skip


def offload() -> Json:
    lay = Layout()
    tables = 'table=~"$table"'
    panels = [
        lay.row("Offload to Iceberg (every 15 minutes)"),
        panel(lay, "Since last successful offload",
              [prom(f"time() - max by (table) (k2_offload_last_success_timestamp_seconds{{{tables}}})", "{{table}}")],
              unit="s", thresholds=[(None, "green"), (1800, "orange"), (2700, "red")],
              description="OffloadStale above 45 minutes."),
        panel(lay, "Watermark lag", [prom(f"max by (table) (k2_offload_watermark_lag_seconds{{{tables}}})",
                                          "{{table}}")], unit="s",
              description="Now minus the insertion time offloaded up to (committed in the Iceberg snapshot)."),
        panel(lay, "Rows offloaded (15 min)",
              [prom(f"max by (table) (increase(k2_offload_rows_total{{{tables}}}[15m]))", "{{table}}")]),
        panel(lay, "Last offload duration",
              [prom(f"max by (table) (k2_offload_last_duration_seconds{{{tables}}})", "{{table}}")], unit="s"),
        panel(lay, "Failures after retries (1h)",
              [prom(f"max by (table) (increase(k2_offload_failures_total{{{tables}}}[1h]))", "{{table}}")],
              w=24, thresholds=[(None, "green"), (1, "red")], description="OffloadFailed."),
        lay.row("Daily audit: ClickHouse vs Iceberg"),
        panel(lay, "Latest audit status per table",
              [prom(f"max by (table, status) (k2_audit_status{{{tables}}}) == 1", "{{table}}", instant=True)],
              "table", w=16, options={"showHeader": True},
              transformations=[{"id": "organize", "options": {"excludeByName": {"Time": True, "Value": True}}}],
              description="ok, missing_data (AuditMissingData) or error (AuditFailed)."),
        panel(lay, "Since last audit", [prom("time() - max(k2_audit_last_run_timestamp_seconds)", "audit")],
              "stat", w=8, unit="s", options=STAT, thresholds=[(None, "green"), (93600, "red")]),
    ]  # fmt: skip
    variables = [query_var("table", "label_values(k2_offload_last_success_timestamp_seconds, table)", "Table")]
    return dashboard("k2-offload", "K2 / Offload and audit", "Iceberg offload freshness, volume, failures and "
                     "the daily audit", panels, variables, time_from="now-24h")  # fmt: skip


# Candles are exact decimals in ClickHouse; Grafana plots floats, so the chart converts at display time.
OHLCV_SQL = """SELECT bucket AS time, toFloat64(open) AS open, toFloat64(high) AS high, toFloat64(low) AS low,
       toFloat64(close) AS close, toFloat64(volume) AS volume
FROM k2.ohlcv_${interval}
WHERE exchange = '${exchange}' AND canonical_symbol = '${symbol}' AND $__timeFilter(bucket)
ORDER BY bucket"""
LATEST_SQL = """SELECT bucket, open, high, low, close, volume, quote_volume, trade_count, vwap, is_closed
FROM k2.ohlcv_${interval}
WHERE exchange = '${exchange}' AND canonical_symbol = '${symbol}' AND $__timeFilter(bucket)
ORDER BY bucket DESC
LIMIT 20"""
TRADES_SQL = """SELECT bucket AS time, trade_count AS trades
FROM k2.ohlcv_${interval}
WHERE exchange = '${exchange}' AND canonical_symbol = '${symbol}' AND $__timeFilter(bucket)
ORDER BY bucket"""


def ch(sql: str, fmt: str = "time_series", ref: str = "A") -> Json:
    return {"datasource": CH, "editorType": "sql", "format": 0 if fmt == "time_series" else 1,
            "pluginVersion": CH_PLUGIN_VERSION, "queryType": "timeseries" if fmt == "time_series" else "table",
            "rawSql": sql, "refId": ref}  # fmt: skip


def ohlcv() -> Json:
    lay = Layout()
    panels = [
        panel(lay, "OHLCV ${exchange} ${symbol} (${interval})", [ch(OHLCV_SQL)], "candlestick", w=24, h=12,
              datasource=CH, options={"mode": "candles+volume", "candleStyle": "candles", "colorStrategy": "open-close",
                                      "includeAllFields": False}),
        panel(lay, "Trades per candle", [ch(TRADES_SQL)], "barchart", w=24, h=6, datasource=CH),
        panel(lay, "Latest candles (exact decimals)", [ch(LATEST_SQL, "table")], "table", w=24, h=10, datasource=CH,
              options={"showHeader": True}),
    ]  # fmt: skip
    interval_options = ["1m", "5m", "15m", "30m", "1h", "1d"]
    variables = [
        query_var("exchange", "SELECT DISTINCT exchange FROM k2.gold_ohlcv_1d ORDER BY exchange", "Exchange", CH,
                  include_all=False),
        query_var("symbol", "SELECT DISTINCT canonical_symbol FROM k2.gold_ohlcv_1d WHERE exchange = '${exchange}' "
                  "ORDER BY canonical_symbol", "Symbol", CH, include_all=False),
        {"current": {"text": "1m", "value": "1m"}, "label": "Interval", "name": "interval",
         "options": [{"selected": o == "1m", "text": o, "value": o} for o in interval_options],
         "query": ",".join(interval_options), "type": "custom"},
    ]  # fmt: skip
    return dashboard("k2-ohlcv", "K2 / OHLCV", "Exact gold candles from ClickHouse (k2.ohlcv_<interval>)", panels,
                     variables, time_from="now-3h")  # fmt: skip


DASHBOARDS = {"k2-feeds": feeds, "k2-pipeline": pipeline, "k2-clickhouse": clickhouse, "k2-offload": offload,
              "k2-ohlcv": ohlcv}  # fmt: skip


def render() -> dict[str, str]:
    """File name → JSON text of every dashboard."""
    return {f"{name}.json": json.dumps(build(), indent=2, ensure_ascii=False) + "\n"
            for name, build in DASHBOARDS.items()}  # fmt: skip


if __name__ == "__main__":
    OUT.mkdir(exist_ok=True)
    for name, text in render().items():
        (OUT / name).write_text(text)
        print(f"wrote {OUT / name}")
