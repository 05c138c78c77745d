"""``k2 exporter``: Prometheus metrics that only ClickHouse knows, for either deployment.

Served on ``K2_EXPORTER_HOST:K2_EXPORTER_PORT`` (loopback:9190 by default) at ``/metrics``. Every scrape
runs a few small queries over clickhouse-connect, with bound parameters and short timeouts:

- ``k2_clickhouse_up``                                    1 when the queries below answered, else 0
- ``k2_pipeline_latency_seconds{exchange,quantile}``      silver ``ts_ingested - ts_received`` over the
                                                         last ``latency_window_s`` (0.5, 0.9, 0.99)
- ``k2_pipeline_latency_trades{exchange}``                trades the quantiles were computed from
- ``k2_clickhouse_last_ingest_timestamp_seconds{exchange}`` newest silver ``ts_ingested`` (last day)
- ``k2_clickhouse_table_rows{table}``, ``k2_clickhouse_table_bytes{table}``, ``k2_clickhouse_table_parts{table}``
- ``k2_exporter_scrape_duration_seconds``, ``k2_exporter_scrape_errors_total``

Other collectors (the offload engineer's :class:`offload.metrics.OffloadCollector`) join the same
endpoint through :func:`register_collector`.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

from clickhouse_connect.driver.exceptions import ClickHouseError as DriverError
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from k2 import chclient
from k2.errors import ClickHouseError
from k2.settings import Settings

__all__ = ["QUANTILES", "ClickHouseCollector", "build_registry", "register_collector", "serve"]

log = logging.getLogger(__name__)

QUANTILES = (0.5, 0.9, 0.99)

# Silver is partitioned by event day: the ts_event bound prunes every partition but the last one or
# two, so a scrape never scans 30 days. A trade more than a day late is left out of the latency.
_LATENCY = """
SELECT exchange,
       quantiles(0.5, 0.9, 0.99)(
           (toUnixTimestamp64Micro(ts_ingested) - intDiv(toUnixTimestamp64Nano(ts_received), 1000)) / 1e6
       ) AS q,
       count() AS n
FROM k2.silver_trades
WHERE ts_event >= now() - toIntervalSecond({scan_s:UInt32})
  AND ts_ingested >= now64(6) - toIntervalSecond({window_s:UInt32})
GROUP BY exchange
ORDER BY exchange
"""
_LAST_INGEST = """
SELECT exchange, toUnixTimestamp64Micro(max(ts_ingested)) / 1e6
FROM k2.silver_trades
WHERE ts_event >= now() - toIntervalSecond({scan_s:UInt32})
GROUP BY exchange
ORDER BY exchange
"""
_TABLES = """
SELECT t.name, ifNull(t.total_rows, 0), ifNull(t.total_bytes, 0), ifNull(p.parts, 0)
FROM system.tables AS t
LEFT JOIN (
    SELECT table, count() AS parts FROM system.parts WHERE database = {db:String} AND active GROUP BY table
) AS p ON p.table = t.name
WHERE t.database = {db:String} AND t.engine LIKE '%MergeTree'
ORDER BY t.name
"""


class ClickHouseCollector(Collector):
    """Queries ClickHouse at scrape time; a failed query makes ``k2_clickhouse_up`` 0, never a 500."""

    def __init__(self, settings: Settings, latency_window_s: int = 300, scan_s: int = 86_400) -> None:
        self._settings = settings
        self._params = {"window_s": latency_window_s, "scan_s": scan_s, "db": "k2"}
        self._client: Any = None
        self._lock = threading.Lock()  # prometheus_client serves scrapes from several threads
        self._errors = 0

    def describe(self) -> Iterator[Metric]:
        return iter(())  # registering must not query ClickHouse

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            started = time.perf_counter()
            up = GaugeMetricFamily("k2_clickhouse_up", "1 when ClickHouse answered the exporter's queries")
            try:
                families = self._query()
                up.add_metric([], 1.0)
            except (ClickHouseError, DriverError, OSError) as exc:
                log.warning("ClickHouse at %s did not answer: %s", self._settings.clickhouse_url, exc)
                self._errors += 1
                self._client = None  # reconnect on the next scrape
                families = []
                up.add_metric([], 0.0)
            duration = GaugeMetricFamily("k2_exporter_scrape_duration_seconds", "Time the ClickHouse queries took")
            duration.add_metric([], time.perf_counter() - started)
            errors = CounterMetricFamily("k2_exporter_scrape_errors", "Scrapes where ClickHouse did not answer")
            errors.add_metric([], self._errors)
        yield from (up, *families, duration, errors)

    def _connect(self) -> Any:
        if self._client is None:
            self._client = chclient.connect(self._settings, connect_timeout=3, send_receive_timeout=10)
        return self._client

    def _query(self) -> list[Metric]:
        client = self._connect()
        latency = GaugeMetricFamily(
            "k2_pipeline_latency_seconds",
            "Frame received to row in silver (ts_ingested - ts_received), quantiles over the window",
            labels=["exchange", "quantile"],
        )
        trades = GaugeMetricFamily("k2_pipeline_latency_trades", "Silver trades in the latency window",
                                   labels=["exchange"])  # fmt: skip
        for exchange, q, n in client.query(_LATENCY, parameters=self._params).result_rows:
            for quantile, value in zip(QUANTILES, q, strict=True):
                latency.add_metric([exchange, str(quantile)], float(value))
            trades.add_metric([exchange], float(n))
        last = GaugeMetricFamily("k2_clickhouse_last_ingest_timestamp_seconds",
                                 "Unix time of the newest silver row, per exchange", labels=["exchange"])  # fmt: skip
        for exchange, ts in client.query(_LAST_INGEST, parameters=self._params).result_rows:
            last.add_metric([exchange], float(ts))
        rows = GaugeMetricFamily("k2_clickhouse_table_rows", "Rows in a k2 MergeTree table", labels=["table"])
        size = GaugeMetricFamily("k2_clickhouse_table_bytes", "Bytes on disk of a k2 MergeTree table",
                                 labels=["table"])  # fmt: skip
        parts = GaugeMetricFamily("k2_clickhouse_table_parts", "Active parts of a k2 MergeTree table",
                                  labels=["table"])  # fmt: skip
        for table, n_rows, n_bytes, n_parts in client.query(_TABLES, parameters=self._params).result_rows:
            rows.add_metric([table], float(n_rows))
            size.add_metric([table], float(n_bytes))
            parts.add_metric([table], float(n_parts))
        return [latency, trades, last, rows, size, parts]


_EXTRA: list[Collector] = []


def register_collector(collector: Collector) -> None:
    """Serve ``collector``'s metrics from the exporter's ``/metrics`` too (call before :func:`serve`)."""
    _EXTRA.append(collector)


def build_registry(settings: Settings) -> CollectorRegistry:
    """A registry with the ClickHouse collector and every collector registered so far."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ClickHouseCollector(settings))
    for collector in _EXTRA:
        registry.register(collector)
    return registry


def serve(settings: Settings) -> None:
    """Serve ``/metrics`` until SIGTERM or SIGINT."""
    registry = build_registry(settings)
    server, thread = start_http_server(settings.exporter_port, addr=settings.exporter_host, registry=registry)
    log.info("k2 exporter on http://%s:%d/metrics", settings.exporter_host, settings.exporter_port)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    server.shutdown()
    thread.join(timeout=5)
