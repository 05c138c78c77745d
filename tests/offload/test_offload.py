"""The offload copies each table exactly, incrementally, and corrects gold when a late trade lands."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import pytest

from offload.run import offload_all
from offload.state import StateStore
from offload.tables import all_tables, select_tables
from tests.offload.conftest import offload_settings
from tests.offload.helpers import (
    cold_candles,
    cold_silver,
    cold_table,
    day_ns,
    hot_candles,
    hot_silver,
    minutes_ago_ns,
    publish_trades,
    watermark_of,
)
from tests.support import Stack

EXCHANGES = ("binance", "kraken", "coinbase")


@pytest.mark.integration
def test_incremental_windows_copy_every_column_once(cold_stack: Stack) -> None:
    settings = offload_settings(cold_stack)
    publish_trades(cold_stack, "OFA-USDT", 1000, 30, minutes_ago_ns(90))
    first = offload_all(settings, all_tables(EXCHANGES))
    assert first.ok, first.summary()
    assert cold_silver(settings, "OFA-%") == hot_silver(cold_stack, "OFA-%")
    assert [r.table for r in first.results][:4] == [
        "bronze_trades_binance", "bronze_trades_kraken", "bronze_trades_coinbase", "silver_trades",
    ]  # fmt: skip
    wm1 = watermark_of(settings, "silver_trades")

    publish_trades(cold_stack, "OFA-USDT", 1030, 20, minutes_ago_ns(60))
    second = offload_all(settings, all_tables(EXCHANGES))
    assert second.ok, second.summary()
    silver = {r.table: r for r in second.results}["silver_trades"]
    assert (silver.rows, silver.watermark_from_us) == (20, wm1)
    cold = cold_silver(settings, "OFA-%")
    assert cold == hot_silver(cold_stack, "OFA-%")
    assert [int(r[2]) for r in cold] == list(range(1000, 1050))
    for interval in ("1m", "5m", "1h", "1d"):
        hot = hot_candles(cold_stack, interval, "OFA-%")
        assert cold_candles(settings, interval, "OFA-%") == hot, interval

    bronze = cold_table(settings, "bronze_trades_binance").scan().to_arrow()
    ofa = [r for r in bronze.to_pylist() if r["canonical_symbol"] == "OFA-USDT"]
    expected = [(1000 + i, f"{100 + i}.{i:04d}") for i in range(30)] + [
        (1030 + i, f"{100 + i}.{i:04d}") for i in range(20)
    ]
    assert sorted((int(r["trade_id"]), r["price"]) for r in ofa) == expected  # bronze keeps the published text

    table = cold_table(settings, "silver_trades")  # every metadata file on disk is one the table knows of
    known = [m.metadata_file for m in table.metadata.metadata_log] + [table.metadata_location]
    on_disk = Path(urlparse(table.metadata.location).path, "metadata").glob("*.metadata.json")
    assert sorted(p.name for p in on_disk) == sorted(Path(urlparse(k).path).name for k in known)

    state = StateStore(settings.state_url)
    mirror = {w.table_name: w.watermark_us for w in state.watermarks()}
    assert mirror == {s.name: watermark_of(settings, s.name) for s in all_tables(EXCHANGES)}


@pytest.mark.integration
def test_late_trade_lands_in_the_next_window_and_corrects_gold(cold_stack: Stack) -> None:
    settings = offload_settings(cold_stack)
    specs = select_tables(EXCHANGES, ["silver_trades", "gold_ohlcv_1m", "gold_ohlcv_1d"])
    _, start = day_ns(3, hour=12)  # a past UTC day: its 1m and 1d candles are closed whatever the time now
    publish_trades(cold_stack, "OFL-USDT", 1, 10, start)
    assert offload_all(settings, specs).ok
    before = cold_candles(settings, "1d", "OFL-%")
    assert before == hot_candles(cold_stack, "1d", "OFL-%")

    # a trade half an hour before the others arrives now: a closed 1m bucket that cold never had, a changed 1d candle
    publish_trades(cold_stack, "OFL-USDT", 11, 1, start - 30 * 60 * 10**9)
    report = offload_all(settings, specs)
    assert report.ok, report.summary()
    assert sorted(int(r[2]) for r in cold_silver(settings, "OFL-%")) == list(range(1, 12))
    for interval in ("1m", "1d"):
        assert cold_candles(settings, interval, "OFL-%") == hot_candles(cold_stack, interval, "OFL-%"), interval
    after = cold_candles(settings, "1d", "OFL-%")
    assert len(after) == len(before)  # corrected in place, not appended next to the old candle
    assert sum(c[9] for c in after) == 11
