"""Reading both tiers back for value-level comparisons."""

from __future__ import annotations

import datetime as dt
import time
from decimal import Decimal
from typing import Any

from k2.settings import Settings
from offload.catalog import committed_watermark, open_catalog
from tests.support import Stack, topic, trade, wait_for

SILVER_COLS = (
    "exchange, canonical_symbol, trade_id, toString(price), toString(quantity), toString(quote_volume), side, "
    "toUnixTimestamp64Nano(ts_event), toUnixTimestamp64Nano(ts_received), validation_errors, vendor, is_valid"
)


def hot_silver(stack: Stack, symbol_like: str) -> list[tuple[Any, ...]]:
    rows = (
        stack.client()
        .query(
            f"SELECT {SILVER_COLS} FROM k2.silver_trades FINAL WHERE canonical_symbol LIKE {{s:String}} "
            "ORDER BY exchange, canonical_symbol, trade_id",
            parameters={"s": symbol_like},
        )
        .result_rows
    )
    return [
        (*r[:3], Decimal(r[3]), Decimal(r[4]), Decimal(r[5]), *r[6:9], list(r[9]), dict(r[10]), r[11]) for r in rows
    ]


def cold_table(settings: Settings, name: str) -> Any:
    return open_catalog(settings).load_table(("cold", name))


def cold_silver(settings: Settings, symbol_like: str) -> list[tuple[Any, ...]]:
    prefix = symbol_like.rstrip("%")
    rows = cold_table(settings, "silver_trades").scan().to_arrow().to_pylist()
    out = [
        (r["exchange"], r["canonical_symbol"], r["trade_id"], r["price"], r["quantity"], r["quote_volume"], r["side"],
         r["ts_event_ns"], r["ts_received_ns"], r["validation_errors"], dict(r["vendor"]), r["is_valid"])
        for r in rows if r["canonical_symbol"].startswith(prefix)
    ]  # fmt: skip
    return sorted(out, key=lambda r: (r[0], r[1], r[2]))


def hot_candles(stack: Stack, interval: str, symbol_like: str) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in stack.client().query(
        f"SELECT exchange, canonical_symbol, toUnixTimestamp(bucket), open, high, low, close, volume, quote_volume, "
        f"trade_count, vwap FROM k2.ohlcv_{interval} WHERE canonical_symbol LIKE {{s:String}} AND is_closed "
        "ORDER BY exchange, canonical_symbol, bucket", parameters={"s": symbol_like},
    ).result_rows]  # fmt: skip


def cold_candles(settings: Settings, interval: str, symbol_like: str) -> list[tuple[Any, ...]]:
    prefix = symbol_like.rstrip("%")
    rows = cold_table(settings, f"gold_ohlcv_{interval}").scan().to_arrow().to_pylist()
    out = [
        (r["exchange"], r["canonical_symbol"], int(r["bucket"].timestamp()), r["open"], r["high"], r["low"],
         r["close"], r["volume"], r["quote_volume"], r["trade_count"], r["vwap"])
        for r in rows if r["canonical_symbol"].startswith(prefix)
    ]  # fmt: skip
    return sorted(out, key=lambda r: (r[0], r[1], r[2]))


def publish_trades(stack: Stack, symbol: str, first_id: int, n: int, ts_ns: int, step_ns: int = 1_000_000_000) -> None:
    """``n`` Binance trades of ``symbol`` with ids from ``first_id``; waits until silver holds them all."""
    trades = [
        trade("binance", symbol, first_id + i, f"{100 + i}.{i:04d}", f"0.{i + 1:08d}", "buy" if i % 2 else "sell",
              ts_ns + i * step_ns)
        for i in range(n)
    ]  # fmt: skip
    stack.produce((topic("binance"), t) for t in trades)
    client = stack.client()
    ids = [str(first_id + i) for i in range(n)]
    wait_for(
        lambda: client.command(
            "SELECT count() FROM k2.silver_trades WHERE canonical_symbol = {s:String} AND trade_id IN {ids:Array(String)}",
            parameters={"s": symbol, "ids": ids},
        ) == n,
        60, f"{n} {symbol} trades in silver",
    )  # fmt: skip


def minutes_ago_ns(minutes: float) -> int:
    return time.time_ns() - int(minutes * 60 * 10**9)


def watermark_of(settings: Settings, name: str) -> int:
    return committed_watermark(cold_table(settings, name))[0]


def day_ns(days_ago: int, hour: int = 10) -> tuple[dt.date, int]:
    """A UTC day ``days_ago`` days back and ``hour`` o'clock on it in ns: maintenance and audit tests each
    put their trades on a day of their own, so their partitions and audit days hold nothing else."""
    day = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=days_ago)
    return day, int(dt.datetime(day.year, day.month, day.day, hour, tzinfo=dt.UTC).timestamp()) * 10**9


def day_filter(column: str, day: dt.date) -> Any:
    """Iceberg row filter for one UTC day of a timestamptz column."""
    from pyiceberg.expressions import And, GreaterThanOrEqual, LessThan, Reference
    from pyiceberg.expressions.literals import literal

    start = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
    lo, hi = (int(t.timestamp()) * 10**6 for t in (start, start + dt.timedelta(days=1)))
    ref = Reference(column)
    return And(GreaterThanOrEqual(term=ref, value=literal(lo)), LessThan(term=ref, value=literal(hi)))


def data_files_of_day(table: Any, column: str, day: dt.date) -> list[str]:
    return sorted(t.file.file_path for t in table.scan(row_filter=day_filter(column, day)).plan_files())
