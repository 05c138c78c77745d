"""Crash at every step of an offload, concurrent runs, a failing table: no duplicate, no gap, no stall."""

from __future__ import annotations

import subprocess
import sys

import pytest

from offload.run import FAULT_POINTS, offload_all
from offload.state import StateStore
from offload.tables import TableSpec, select_tables
from tests.offload.conftest import offload_settings
from tests.offload.helpers import cold_silver, hot_silver, minutes_ago_ns, publish_trades, watermark_of
from tests.support import REPO, Stack

EXCHANGES = ("binance", "kraken", "coinbase")

_CRASHING_RUN = """
import os, sys
from k2.settings import load_settings
from offload.run import offload_all, set_fault
from offload.tables import select_tables

point = sys.argv[1]
set_fault(lambda at, table: os._exit(9) if (at, table) == (point, "silver_trades") else None)
offload_all(load_settings(), select_tables(("binance",), ["silver_trades"]))
sys.exit(0)
"""


@pytest.mark.integration
@pytest.mark.parametrize("point", FAULT_POINTS)
def test_a_crash_at_any_step_then_a_rerun_leaves_no_duplicate_and_no_gap(cold_stack: Stack, point: str) -> None:
    settings = offload_settings(cold_stack)
    symbol = f"OFC{FAULT_POINTS.index(point)}-USDT"
    specs = select_tables(EXCHANGES, ["silver_trades"])
    publish_trades(cold_stack, symbol, 1, 10, minutes_ago_ns(30))
    assert offload_all(settings, specs).ok
    publish_trades(cold_stack, symbol, 11, 10, minutes_ago_ns(20))
    before = watermark_of(settings, "silver_trades")

    env = {**cold_stack.env, "K2_OFFLOAD_SAFETY_BUFFER_S": "0", "K2_OFFLOAD_RETRIES": "0"}
    crashed = subprocess.run([sys.executable, "-c", _CRASHING_RUN, point], env=env, cwd=REPO, capture_output=True,
                             text=True, timeout=120)  # fmt: skip
    assert crashed.returncode == 9, crashed.stderr
    committed = watermark_of(settings, "silver_trades")
    assert (committed > before) == (point in ("after_commit", "after_state"))

    rerun = offload_all(settings, specs)  # the crashed run's lock is taken over: its process is gone
    assert rerun.ok, rerun.summary()
    cold = cold_silver(settings, f"{symbol[:4]}%")
    assert cold == hot_silver(cold_stack, f"{symbol[:4]}%")
    assert sorted(int(r[2]) for r in cold) == list(range(1, 21))
    mirror = StateStore(settings.state_url).watermark("silver_trades")
    assert mirror is not None and mirror.watermark_us == watermark_of(settings, "silver_trades")


@pytest.mark.integration
def test_a_table_held_by_another_run_is_skipped_and_left_to_it(cold_stack: Stack) -> None:
    settings = offload_settings(cold_stack)
    publish_trades(cold_stack, "OFB-USDT", 1, 5, minutes_ago_ns(15))
    state = StateStore(settings.state_url)
    with state.lock("silver_trades", "otherhost-1-running", 60):
        report = offload_all(settings, select_tables(EXCHANGES, ["silver_trades", "gold_ohlcv_1m"]))
    by_table = {r.table: r for r in report.results}
    assert by_table["silver_trades"].status == "busy"
    assert "otherhost-1-running" in by_table["silver_trades"].error
    assert by_table["gold_ohlcv_1m"].status == "ok"
    assert report.ok  # skipping a table another run is offloading is not a failure
    assert offload_all(settings, select_tables(EXCHANGES, ["silver_trades"])).ok
    assert sorted(int(r[2]) for r in cold_silver(settings, "OFB-%")) == [1, 2, 3, 4, 5]


@pytest.mark.integration
def test_a_failing_table_is_retried_reported_and_does_not_stop_the_others(cold_stack: Stack) -> None:
    settings = offload_settings(cold_stack, offload_retries=1)
    broken = TableSpec("bronze_trades_nowhere", "bronze", "ingested_at", "ingested_at", quantity_column="quantity")
    publish_trades(cold_stack, "OFF-USDT", 1, 3, minutes_ago_ns(15))
    report = offload_all(settings, [broken, *select_tables(EXCHANGES, ["silver_trades"])])
    by_table = {r.table: r for r in report.results}
    assert (by_table["bronze_trades_nowhere"].status, by_table["bronze_trades_nowhere"].attempts) == ("failed", 2)
    assert "UNKNOWN_TABLE" in by_table["bronze_trades_nowhere"].error
    assert by_table["silver_trades"].status == "ok"
    assert not report.ok
    mirror = StateStore(settings.state_url).watermark("bronze_trades_nowhere")
    assert mirror is not None and mirror.failures_total == 1 and "UNKNOWN_TABLE" in (mirror.last_error or "")
    assert sorted(int(r[2]) for r in cold_silver(settings, "OFF-%")) == [1, 2, 3]
