"""`k2 exporter` against the embedded stack: end-to-end latency quantiles, last ingest per exchange,
table rows and parts from ClickHouse, and `k2_clickhouse_up 0` when ClickHouse does not answer."""

from __future__ import annotations

import subprocess
import time
import urllib.request

from prometheus_client import generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from k2 import exporter
from k2.settings import load_settings
from tests.support import K2, REPO, Stack, free_port, http_ok, wait_for

# Made-up exchange names keep these rows apart from every other test's trades.
LATENCY_S = {"exporter_a": 0.25, "exporter_b": 2.0}


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as response:
        return str(response.read().decode())


def _silver_row(exchange: str, trade_id: int, ingested_us: int, latency_us: int) -> str:
    received_ns = (ingested_us - latency_us) * 1000
    event_ns = received_ns - 1_000_000
    return (
        f"('{exchange}', 'BTCUSDT', 'BTC-USDT', '{trade_id}', {trade_id}, '100.5', '0.1', '10.05', 'buy', "
        f"fromUnixTimestamp64Nano({event_ns}, 'UTC'), fromUnixTimestamp64Nano({received_ns}, 'UTC'), "
        f"fromUnixTimestamp64Micro({ingested_us}, 'UTC'), true, [], map(), 't', 0, {trade_id})"
    )


def test_exporter_reports_latency_tables_and_last_ingest(stack: Stack) -> None:
    client = stack.client()
    now_us = time.time_ns() // 1000
    ingested_us = now_us - 10_000_000  # inside the 5-minute latency window
    old_us = now_us - 600_000_000  # outside it: counted in the last-ingest time only
    rows = [_silver_row(ex, i, ingested_us, round(lat * 1e6)) for ex, lat in LATENCY_S.items() for i in range(1, 6)]
    rows += [_silver_row("exporter_c", i, old_us, 1000) for i in range(1, 4)]
    client.command(
        "INSERT INTO k2.silver_trades (exchange, symbol, canonical_symbol, trade_id, trade_id_num, price, quantity, "
        "quote_volume, side, ts_event, ts_received, ts_ingested, is_valid, validation_errors, vendor, source_topic, "
        "source_partition, source_offset) VALUES " + ", ".join(rows)
    )
    port = free_port()
    process = subprocess.Popen([*K2, "exporter", "--port", str(port)], env=stack.env, cwd=REPO)
    try:
        wait_for(lambda: http_ok(f"http://127.0.0.1:{port}/metrics") or process.poll() is not None, 30, "exporter")
        assert process.poll() is None, "k2 exporter exited"
        started = time.monotonic()
        samples = _samples(_scrape(port))
        print(f"scrape took {time.monotonic() - started:.3f}s")
        # schema_migrations changes only on migrate: an exact comparison; silver may be busy with other tests
        migrations = int(client.command("SELECT count() FROM k2.schema_migrations"))
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0

    assert samples[("k2_clickhouse_up", ())] == 1.0
    for exchange, latency in LATENCY_S.items():
        for quantile in ("0.5", "0.9", "0.99"):
            key = ("k2_pipeline_latency_seconds", (("exchange", exchange), ("quantile", quantile)))
            assert samples[key] == latency
        assert samples[("k2_pipeline_latency_trades", (("exchange", exchange),))] == 5
        last = samples[("k2_clickhouse_last_ingest_timestamp_seconds", (("exchange", exchange),))]
        assert last == ingested_us / 1e6
    # ingested ten minutes ago: too old for the latency window, still the exchange's last ingest
    assert not [k for k in samples if k[0] == "k2_pipeline_latency_seconds" and ("exchange", "exporter_c") in k[1]]
    assert samples[("k2_clickhouse_last_ingest_timestamp_seconds", (("exchange", "exporter_c"),))] == old_us / 1e6
    assert samples[("k2_clickhouse_table_rows", (("table", "schema_migrations"),))] == migrations
    assert migrations == len(list((REPO / "clickhouse").glob("*/*.sql")))
    assert samples[("k2_clickhouse_table_rows", (("table", "silver_trades"),))] >= 13
    assert samples[("k2_clickhouse_table_parts", (("table", "silver_trades"),))] >= 1
    assert samples[("k2_clickhouse_table_bytes", (("table", "silver_trades"),))] > 0
    # every MergeTree table of the schema is listed, empty ones with 0 rows
    tables = {dict(k[1])["table"] for k in samples if k[0] == "k2_clickhouse_table_rows"}
    assert {"bronze_trades_binance", "bronze_trades_kraken", "bronze_trades_coinbase", "ingest_errors",
            "gold_ohlcv_1m", "gold_ohlcv_1d", "schema_migrations"} <= tables  # fmt: skip


class _Extra(Collector):
    def collect(self):  # type: ignore[no-untyped-def]
        yield GaugeMetricFamily("k2_test_extra", "a collector registered by another component", value=7)


def test_exporter_without_clickhouse_reports_down_and_serves_registered_collectors() -> None:
    settings = load_settings(environ={"K2_CLICKHOUSE_URL": f"http://127.0.0.1:{free_port()}"})
    extra = _Extra()
    exporter.register_collector(extra)
    try:
        registry = exporter.build_registry(settings)
        first = _samples(generate_latest(registry).decode())
        second = _samples(generate_latest(registry).decode())
    finally:
        exporter._EXTRA.remove(extra)
    assert first[("k2_clickhouse_up", ())] == 0.0
    assert first[("k2_test_extra", ())] == 7.0
    assert first[("k2_exporter_scrape_errors_total", ())] == 1.0
    assert second[("k2_exporter_scrape_errors_total", ())] == 2.0
    assert not [k for k in first if k[0].startswith(("k2_pipeline", "k2_clickhouse_table"))]
    # loopback unless told otherwise (compose sets K2_EXPORTER_HOST=0.0.0.0 inside its network)
    defaults = load_settings(environ={})
    assert (defaults.exporter_host, defaults.exporter_port) == ("127.0.0.1", 9190)
