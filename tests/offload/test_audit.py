"""The audit compares closed windows exactly and catches missing rows and a lost data file."""

from __future__ import annotations

import datetime as dt
import os
import shutil
from decimal import Decimal
from pathlib import Path

import pytest
from pyiceberg.expressions import And, EqualTo, Reference
from pyiceberg.expressions.literals import literal

from offload.audit import audit_tables
from offload.catalog import WATERMARK
from offload.run import new_run_id, offload_all
from offload.state import StateStore
from offload.tables import select_tables
from tests.offload.conftest import offload_settings
from tests.offload.helpers import cold_table, data_files_of_day, day_ns, publish_trades, watermark_of
from tests.support import Stack

EXCHANGES = ("binance", "kraken", "coinbase")
SILVER = select_tables(EXCHANGES, ["silver_trades"])
MINUTE_NS = 60 * 10**9


def _quantity(n: int, minus: int = 0) -> str:
    """Total quantity of publish_trades' first ``n`` trades (0.00000001, 0.00000002, ...) as the log has it."""
    total = sum((Decimal(f"0.{i + 1:08d}") for i in range(n)), Decimal(0)) - Decimal(f"0.{minus:08d}")
    return format(total.normalize(), "f")


@pytest.mark.integration
def test_audit_is_ok_after_an_offload_and_ignores_rows_after_the_watermark(cold_stack: Stack) -> None:
    settings = offload_settings(cold_stack)
    day, ts = day_ns(14)
    publish_trades(cold_stack, "MAU-USDT", 1, 6, ts, step_ns=MINUTE_NS)  # six 1m candles, one 1d candle
    specs = select_tables(EXCHANGES, ["bronze_trades_binance", "silver_trades", "gold_ohlcv_1m", "gold_ohlcv_1d"])
    assert offload_all(settings, specs).ok

    report = audit_tables(settings, specs[1:], day, run_id=new_run_id())
    assert report.ok, report.summary()
    got = {r.table_name: (r.status, r.clickhouse_rows, r.iceberg_rows, r.clickhouse_quantity, r.iceberg_quantity)
           for r in report.rows}  # fmt: skip
    q = _quantity(6)
    assert got == {
        "silver_trades": ("ok", 6, 6, q, q),
        "gold_ohlcv_1m": ("ok", 6, 6, q, q),
        "gold_ohlcv_1d": ("ok", 1, 1, q, q),
    }
    assert [r.detail for r in report.rows] == ["", "", ""]
    assert StateStore(settings.state_url).latest_audit() == report.rows

    today = dt.datetime.now(dt.UTC).date()  # bronze days are insertion days; other tests share it
    bronze = audit_tables(settings, specs[:1], today, run_id=new_run_id()).rows[0]
    assert bronze.status == "ok", bronze.detail
    assert bronze.clickhouse_rows == bronze.iceberg_rows and (bronze.iceberg_rows or 0) >= 6
    assert bronze.clickhouse_quantity == bronze.iceberg_quantity

    # a late trade inserted after the watermark is not part of the closed window: still ok, still six
    publish_trades(cold_stack, "MAU-USDT", 7, 1, ts + 30 * MINUTE_NS)
    again = audit_tables(settings, SILVER, day, run_id=new_run_id()).rows[0]
    assert (again.status, again.clickhouse_rows, again.iceberg_rows) == ("ok", 6, 6)


@pytest.mark.integration
def test_audit_reports_rows_missing_from_cold_and_rows_never_offloaded(cold_stack: Stack) -> None:
    settings = offload_settings(cold_stack)
    day, ts = day_ns(15)
    publish_trades(cold_stack, "MAM-USDT", 1, 4, ts)
    assert offload_all(settings, SILVER).ok
    assert audit_tables(settings, SILVER, day, run_id=new_run_id()).ok

    table = cold_table(settings, "silver_trades")
    lost = And(
        EqualTo(term=Reference("canonical_symbol"), value=literal("MAM-USDT")),
        EqualTo(term=Reference("trade_id"), value=literal("2")),
    )
    row = table.scan(row_filter=lost).to_arrow()
    watermark = {WATERMARK: str(watermark_of(settings, "silver_trades"))}
    table.delete(lost, snapshot_properties=watermark)
    missing = audit_tables(settings, SILVER, day, run_id=new_run_id())
    assert not missing.ok
    r = missing.rows[0]
    assert (r.status, r.clickhouse_rows, r.iceberg_rows) == ("missing_data", 4, 3)
    assert (r.clickhouse_quantity, r.iceberg_quantity) == (_quantity(4), _quantity(4, minus=2))
    assert r.detail == "iceberg lacks 1 row(s), quantity 0.00000002"

    table.append(row, snapshot_properties=watermark)  # put it back
    assert audit_tables(settings, SILVER, day, run_id=new_run_id()).ok

    # a row that reached silver before the watermark but is not in cold (it would never be offloaded)
    cold_stack.client().command(
        "INSERT INTO k2.silver_trades SELECT * REPLACE ('99' AS trade_id, toUInt64(99) AS trade_id_num, "
        "ts_ingested - INTERVAL 1 HOUR AS ts_ingested) "
        "FROM (SELECT * FROM k2.silver_trades WHERE canonical_symbol = 'MAM-USDT' AND trade_id = '1')"
    )
    unoffloaded = audit_tables(settings, SILVER, day, run_id=new_run_id()).rows[0]
    assert (unoffloaded.status, unoffloaded.clickhouse_rows, unoffloaded.iceberg_rows) == ("missing_data", 5, 4)
    assert unoffloaded.detail == "iceberg lacks 1 row(s), quantity 0.00000001"


@pytest.mark.integration
def test_audit_catches_a_deleted_data_file_and_the_cli_exits_non_zero(cold_stack: Stack, tmp_path: Path) -> None:
    settings = offload_settings(cold_stack)
    day, ts = day_ns(16)
    publish_trades(cold_stack, "MAF-USDT", 1, 3, ts)
    assert offload_all(settings, SILVER).ok
    [data_file] = data_files_of_day(cold_table(settings, "silver_trades"), "ts_event", day)
    path = Path(data_file.removeprefix("file://"))
    shutil.copy2(path, tmp_path / "backup.parquet")
    os.remove(path)
    try:
        report = audit_tables(settings, SILVER, day, run_id=new_run_id())
        r = report.rows[0]
        assert not report.ok
        assert (r.status, r.clickhouse_rows, r.iceberg_rows) == ("error", 3, 0)
        assert r.detail == f"unreadable data file(s): {data_file} (missing)"

        run = cold_stack.k2("maintenance", "run", "--action", "audit", "--tables", "silver_trades",
                            "--day", day.isoformat(), check=False)  # fmt: skip
        assert run.returncode == 1, run.stdout + run.stderr
        assert "FAILED" in run.stdout and data_file in run.stdout
        [logged] = StateStore(settings.state_url).latest_audit()
        assert (logged.table_name, logged.audit_day, logged.status) == ("silver_trades", day.isoformat(), "error")
        assert data_file in logged.detail
    finally:
        shutil.copy2(tmp_path / "backup.parquet", path)  # the package's other tests read this table
    restored = audit_tables(settings, SILVER, day, run_id=new_run_id()).rows[0]
    assert (restored.status, restored.iceberg_rows) == ("ok", 3)
