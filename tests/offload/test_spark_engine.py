"""The Spark engine end to end on the embedded stack: the same plan as pyiceberg, committed by Spark.

Jars come from ../shared/tools/spark-offline/build-jars (PyPI + Debian, no Maven Central), built into
~/.cache/k2-spark-jars on first use (``make test`` builds them too); a missing JDK or tool fails the test.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pyarrow as pa
import pytest

from k2.settings import Settings
from offload.catalog import RUN_ID, WATERMARK
from offload.engines.pyiceberg_engine import PyIcebergEngine
from offload.engines.spark_engine import SparkEngine, _replaced_keys
from offload.errors import CommitError
from offload.maintenance import MAINTENANCE, compact_table, expire_table, remove_orphans_table
from offload.plan import replace_filter
from offload.run import new_run_id, offload_all
from offload.state import StateStore
from offload.tables import select_tables
from tests.offload.conftest import offload_settings
from tests.offload.helpers import (
    cold_candles,
    cold_silver,
    cold_table,
    data_files_of_day,
    day_filter,
    day_ns,
    hot_candles,
    hot_silver,
    minutes_ago_ns,
    publish_trades,
    watermark_of,
)
from tests.support import Stack

EXCHANGES = ("binance", "kraken", "coinbase")
BUILD_JARS = Path(__file__).resolve().parents[3] / "shared" / "tools" / "spark-offline" / "build-jars"
JAR_DIR = Path.home() / ".cache" / "k2-spark-jars"
MINUTE_NS = 60 * 10**9


def offline_jars() -> tuple[str, str]:
    """(spark.jars, java.library.path) from the build-jars stamp, building the jars when absent."""
    for tool in ("java", "javac"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} not found: the Spark engine test needs a JDK 17 (Debian openjdk-17-jdk-headless)")
    stamp = JAR_DIR / ".built"  # the tool's output; `make test` writes the same stamp
    if not stamp.is_file():
        if not BUILD_JARS.is_file():
            pytest.fail(f"{BUILD_JARS} is missing: it builds the Spark/Iceberg jars without Maven Central")
        built = subprocess.run(
            [str(BUILD_JARS), str(JAR_DIR), sys.executable], capture_output=True, text=True, timeout=600, check=False
        )
        if built.returncode != 0:
            pytest.fail(f"build-jars failed ({built.returncode}):\n{built.stderr[-3000:]}")
        stamp.write_text(built.stdout)
    values = dict(line.split("=", 1) for line in stamp.read_text().splitlines() if "=" in line)
    jars, native = values.get("spark.jars", ""), values.get("java.library.path", "")
    missing = [j for j in jars.split(",") if not Path(j).is_file()] if jars else ["spark.jars"]
    if missing or not native:
        pytest.fail(f"{stamp} names missing jars {missing}: delete {JAR_DIR} and rerun")
    return jars, native


def spark_settings(stack: Stack) -> Settings:
    jars, native = offline_jars()
    return offload_settings(stack, spark_jars=jars, spark_java_library_path=native)


@pytest.fixture(scope="module")
def spark(cold_stack: Stack) -> Iterator[SparkEngine]:
    """One local SparkSession for the module (started by the first commit, ~10 s)."""
    engine = SparkEngine(spark_settings(cold_stack))
    try:
        yield engine
    finally:
        engine.close()


def _local(uri: str) -> Path:
    """A file:// URI as a path (pyiceberg writes file:///x, Spark file:/x)."""
    return Path(urlsplit(uri).path)


def _current(settings: Settings, name: str) -> Any:
    snapshot = cold_table(settings, name).current_snapshot()
    assert snapshot is not None
    return snapshot


@pytest.mark.integration
def test_spark_offload_copies_every_column_incrementally(cold_stack: Stack, spark: SparkEngine) -> None:
    settings = spark_settings(cold_stack)
    specs = select_tables(EXCHANGES, ["bronze_trades_binance", "silver_trades", "gold_ohlcv_1m"])
    publish_trades(cold_stack, "SPA-USDT", 1, 20, minutes_ago_ns(90))
    first = offload_all(settings, specs, engine=spark)
    assert first.ok and first.engine == "spark", first.summary()
    assert cold_silver(settings, "SPA-%") == hot_silver(cold_stack, "SPA-%")  # decimals exact, lists, maps
    assert cold_candles(settings, "1m", "SPA-%") == hot_candles(cold_stack, "1m", "SPA-%")
    price = cold_table(settings, "silver_trades").schema().find_field("price").field_type
    assert str(price) == "decimal(38, 18)"
    for result in first.results:
        snapshot = _current(settings, result.table)
        summary = snapshot.summary.additional_properties
        assert summary[WATERMARK] == str(result.watermark_to_us) == str(watermark_of(settings, result.table))
        assert summary[RUN_ID] == first.run_id
        assert "spark.app.id" in summary  # committed by Spark, not by pyiceberg
    wm1 = watermark_of(settings, "silver_trades")

    publish_trades(cold_stack, "SPA-USDT", 21, 10, minutes_ago_ns(60))
    second = offload_all(settings, specs, engine=spark)
    assert second.ok, second.summary()
    silver = {r.table: r for r in second.results}["silver_trades"]
    assert (silver.rows, silver.watermark_from_us) == (10, wm1)
    cold = cold_silver(settings, "SPA-%")
    assert cold == hot_silver(cold_stack, "SPA-%")
    assert sorted(int(r[2]) for r in cold) == list(range(1, 31))
    assert sum(r[4] for r in cold) == sum(Decimal(f"0.{i + 1:08d}") for i in range(20)) + sum(
        Decimal(f"0.{i + 1:08d}") for i in range(10)
    )
    assert cold_candles(settings, "1m", "SPA-%") == hot_candles(cold_stack, "1m", "SPA-%")
    bronze = cold_table(settings, "bronze_trades_binance").scan().to_arrow().to_pylist()
    published = [(1 + i, f"{100 + i}.{i:04d}") for i in range(20)] + [(21 + i, f"{100 + i}.{i:04d}") for i in range(10)]
    assert sorted((int(r["trade_id"]), r["price"]) for r in bronze if r["canonical_symbol"] == "SPA-USDT") == published

    # nothing new: each table still commits an (empty) snapshot and its watermark advances
    before = {s.name: (watermark_of(settings, s.name), _current(settings, s.name).snapshot_id) for s in specs}
    idle = offload_all(settings, specs, engine=spark)
    assert idle.ok, idle.summary()
    for result in idle.results:
        snapshot = _current(settings, result.table)
        assert result.rows == 0
        assert result.watermark_from_us == before[result.table][0] < result.watermark_to_us
        assert snapshot.parent_snapshot_id == before[result.table][1]
        assert snapshot.summary.additional_properties[WATERMARK] == str(result.watermark_to_us)
        assert snapshot.summary.additional_properties.get("added-records", "0") == "0"
    assert cold_silver(settings, "SPA-%") == hot_silver(cold_stack, "SPA-%")

    state = StateStore(settings.state_url)
    try:
        mirror = {w.table_name: w.watermark_us for w in state.watermarks()}
    finally:
        state.close()
    assert {s.name: mirror[s.name] for s in specs} == {s.name: watermark_of(settings, s.name) for s in specs}


@pytest.mark.integration
def test_spark_corrects_a_gold_candle_in_one_commit(cold_stack: Stack, spark: SparkEngine) -> None:
    settings = spark_settings(cold_stack)
    specs = select_tables(EXCHANGES, ["silver_trades", "gold_ohlcv_1m", "gold_ohlcv_1h"])
    start = minutes_ago_ns(180) // MINUTE_NS * MINUTE_NS + 5 * 10**9  # five trades inside one minute
    publish_trades(cold_stack, "SPL-USDT", 1, 5, start)
    assert offload_all(settings, specs, engine=spark).ok
    before = {i: cold_candles(settings, i, "SPL-%") for i in ("1m", "1h")}
    assert before["1m"] == hot_candles(cold_stack, "1m", "SPL-%") and len(before["1m"]) == 1
    parents = {i: _current(settings, f"gold_ohlcv_{i}").snapshot_id for i in ("1m", "1h")}

    # a late trade lands in the candles cold already holds: both are replaced, not appended beside
    publish_trades(cold_stack, "SPL-USDT", 6, 1, start + 30 * 10**9)
    report = offload_all(settings, specs, engine=spark)
    assert report.ok, report.summary()
    for interval in ("1m", "1h"):
        after = cold_candles(settings, interval, "SPL-%")
        assert after == hot_candles(cold_stack, interval, "SPL-%"), interval
        assert len(after) == len(before[interval]) == 1
        assert (after[0][9], before[interval][0][9]) == (6, 5)  # trade_count
        assert after[0][7] == before[interval][0][7] + Decimal("0.00000001")  # volume, exact
        # delete + append were one Iceberg commit: one snapshot on top of the last, carrying the watermark
        name = f"gold_ohlcv_{interval}"
        snapshot = _current(settings, name)
        assert snapshot.parent_snapshot_id == parents[interval]
        assert snapshot.summary.operation.value == "overwrite"
        result = {r.table: r for r in report.results}[name]
        assert snapshot.summary.additional_properties[WATERMARK] == str(result.watermark_to_us)
        assert snapshot.summary.additional_properties[RUN_ID] == report.run_id


@pytest.mark.integration
def test_spark_compacts_and_expires_a_table_pyiceberg_wrote(cold_stack: Stack, spark: SparkEngine) -> None:
    settings = spark_settings(cold_stack)
    silver = select_tables(EXCHANGES, ["silver_trades"])
    day, ts = day_ns(17)
    for batch in range(3):  # three pyiceberg offloads: three small files in the day's partition
        publish_trades(cold_stack, "SPC-USDT", 1 + 5 * batch, 5, ts + batch * MINUTE_NS)
        report = offload_all(settings, silver, engine=PyIcebergEngine())
        assert report.ok, report.summary()
    table = cold_table(settings, "silver_trades")
    old_files = data_files_of_day(table, "ts_event", day)
    assert len(old_files) == 3
    day_before = table.scan(row_filter=day_filter("ts_event", day)).to_arrow().sort_by("trade_id").to_pylist()
    watermark = watermark_of(settings, "silver_trades")
    state = StateStore(settings.state_url)
    try:
        result = compact_table(settings, silver[0], state, new_run_id(), engine=spark)
        assert result.status == "ok", result.detail
        counts = dict(part.split("=") for part in result.detail.split())
        assert int(counts["rewritten_files"]) >= 3 and int(counts["added_files"]) >= 1, result.detail

        table = cold_table(settings, "silver_trades")  # read back through pyiceberg
        assert len(data_files_of_day(table, "ts_event", day)) == 1
        day_after = table.scan(row_filter=day_filter("ts_event", day)).to_arrow().sort_by("trade_id").to_pylist()
        assert day_after == day_before  # every column, decimals exact
        assert cold_silver(settings, "SPC-%") == hot_silver(cold_stack, "SPC-%")
        summary = _current(settings, "silver_trades").summary
        assert summary.operation.value == "replace"
        assert summary.additional_properties[WATERMARK] == str(watermark)
        assert summary.additional_properties[MAINTENANCE] == "compact"

        expired = expire_table(settings, silver[0], state, new_run_id(), older_than=timedelta(0), retain_last=1,
                               engine=spark)  # fmt: skip
        assert expired.status == "ok", expired.detail
        assert int(dict(p.split("=") for p in expired.detail.split())["deleted_data_files_count"]) >= 3
        assert not [f for f in old_files if _local(f).exists()]  # replaced files deleted
        table = cold_table(settings, "silver_trades")
        assert len(table.metadata.snapshots) == 1
        assert table.scan(row_filter=day_filter("ts_event", day)).to_arrow().sort_by("trade_id").to_pylist() == (
            day_before
        )
        assert watermark_of(settings, "silver_trades") == watermark

        orphan = _local(table.location()) / "data" / "k2-planted-orphan.parquet"
        orphan.write_bytes(b"not referenced")
        os.utime(orphan, (time.time() - 7200, time.time() - 7200))
        swept = remove_orphans_table(settings, silver[0], state, new_run_id(), timedelta(hours=1), engine=spark)
        assert swept.status == "ok" and swept.detail.startswith("orphan_files_deleted="), swept.detail
        assert not orphan.exists()
        live = data_files_of_day(table, "ts_event", day)
        assert all(_local(f).exists() for f in live), (live, swept.detail)
    finally:
        state.close()


def test_replace_must_name_exactly_the_batch_keys() -> None:
    """The MERGE replaces by key equality, so a filter naming other keys is refused before Spark runs."""
    batch = pa.table(
        {
            "exchange": ["binance", "binance"],
            "canonical_symbol": ["SPX-USDT", "SPX-USDT"],
            "bucket": pa.array([60_000_000, 120_000_000], pa.timestamp("us", tz="UTC")),
        }
    )
    spec = select_tables(EXCHANGES, ["gold_ohlcv_1m"])[0]
    exact = replace_filter(batch, spec)
    assert exact is not None
    assert _replaced_keys(exact, batch) == ("bucket", "canonical_symbol", "exchange")
    wider = replace_filter(
        pa.concat_tables([batch, batch.slice(0, 1).set_column(0, "exchange", pa.array(["kraken"]))]), spec
    )
    assert wider is not None
    with pytest.raises(CommitError, match="replace filter names 3 keys"):
        _replaced_keys(wider, batch)
