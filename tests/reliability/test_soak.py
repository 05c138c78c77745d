"""A minute of bench/soak.py in CI: the replay loops at 1,000 trades/s, offloads run every 20 s, and
nothing is lost, duplicated, dead-lettered or restarted; ingest never stalls between samples (not while
an offload runs either)."""

from __future__ import annotations

from pathlib import Path

from bench.soak import natural_rate, soak, soak_stack

RATE = 1000.0


def test_a_minute_of_replay_with_offloads_loses_duplicates_and_restarts_nothing(tmp_path: Path) -> None:
    speed = RATE / natural_rate()
    with soak_stack(tmp_path / "data", speed) as stack:
        report = soak(stack, speed, RATE, seconds=60, sample_s=5, offload_every_s=20)
    print(report.summary())
    assert report.problems == []
    assert len(report.offloads) >= 2 and all(o.ok for o in report.offloads)  # one during the minute, one after
    assert set(report.restarts) == {
        "broker", "clickhouse", "exporter", "replay", "handler-binance", "handler-kraken", "handler-coinbase",
    }  # fmt: skip
    assert all(s.trades > 0 for s in report.samples), [s.trades for s in report.samples]  # ingest never stalled
    assert report.silver_duplicates == report.cold_duplicates == report.cold_missing == 0
    assert 0 < report.cold_rows <= report.silver_rows
