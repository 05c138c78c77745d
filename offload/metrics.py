"""Offload and audit metrics, read from the state DB at scrape time (so any process can serve them and
they survive restarts): the watermark mirror and the latest audit run.

Names are a contract with docker/prometheus rules and the Grafana dashboards (DESIGN.md, Observability).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from offload.state import StateStore

__all__ = ["AUDIT_STATUSES", "OffloadCollector"]

AUDIT_STATUSES = ("ok", "missing_data", "error")


class OffloadCollector(Collector):
    def __init__(self, state: StateStore) -> None:
        self.state = state

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        rows = CounterMetricFamily("k2_offload_rows", "Rows committed to the cold tier", labels=["table"])
        failures = CounterMetricFamily("k2_offload_failures", "Table offloads that failed after retries",
                                       labels=["table"])  # fmt: skip
        duration = GaugeMetricFamily("k2_offload_last_duration_seconds", "Duration of the last successful offload",
                                     labels=["table"])  # fmt: skip
        success = GaugeMetricFamily("k2_offload_last_success_timestamp_seconds",
                                    "Unix time of the last successful offload", labels=["table"])  # fmt: skip
        lag = GaugeMetricFamily("k2_offload_watermark_lag_seconds",
                                "Now minus the committed watermark (insertion time offloaded up to)",
                                labels=["table"])  # fmt: skip
        now = time.time()
        for w in self.state.watermarks():
            rows.add_metric([w.table_name], w.rows_total)
            failures.add_metric([w.table_name], w.failures_total)
            if w.last_success_at is not None:
                success.add_metric([w.table_name], w.last_success_at)
                duration.add_metric([w.table_name], w.last_duration_s or 0.0)
            if w.watermark_us:
                lag.add_metric([w.table_name], max(0.0, now - w.watermark_us / 1e6))
        yield from (rows, failures, duration, success, lag)

        status = GaugeMetricFamily("k2_audit_status", "1 for the status of the latest audit, per table",
                                   labels=["table", "status"])  # fmt: skip
        for a in self.state.latest_audit():
            for s in AUDIT_STATUSES:
                status.add_metric([a.table_name, s], 1.0 if a.status == s else 0.0)
        yield status
        last = self.state.latest_audit_time()
        if last is not None:
            yield GaugeMetricFamily("k2_audit_last_run_timestamp_seconds", "Unix time of the latest audit", value=last)
