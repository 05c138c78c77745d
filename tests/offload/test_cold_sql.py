"""Cold data in ClickHouse SQL: `k2 sql` reads cold.* natively; k2.silver_trades_all unions both tiers once."""

from __future__ import annotations

import time

import pyarrow as pa
import pytest

from tests.offload.conftest import offload_settings
from tests.offload.helpers import cold_table, minutes_ago_ns, publish_trades
from tests.support import Stack

DAY_NS = 86_400 * 10**9


@pytest.mark.integration
def test_k2_offload_run_then_cold_tables_answer_sql_like_hot_ones(cold_stack: Stack) -> None:
    publish_trades(cold_stack, "OFS-USDT", 1, 6, minutes_ago_ns(40))
    run = cold_stack.k2("offload", "run", "--tables", "silver_trades", "gold_ohlcv_1h", check=False)
    assert run.returncode == 0, run.stderr
    assert "silver_trades" in run.stdout and "ok" in run.stdout

    query = ("SELECT trade_id, price, quantity, toUnixTimestamp64Nano(fromUnixTimestamp64Nano(ts_event_ns, 'UTC')) "
             "FROM {} WHERE canonical_symbol = 'OFS-USDT' ORDER BY toUInt64(trade_id) FORMAT TSV")  # fmt: skip
    hot = cold_stack.k2("sql", query.replace("fromUnixTimestamp64Nano(ts_event_ns, 'UTC')", "ts_event")
                        .format("k2.silver_trades FINAL")).stdout  # fmt: skip
    cold = cold_stack.k2("sql", query.format("cold.silver_trades")).stdout
    assert cold == hot
    assert [line.split("\t")[0] for line in cold.splitlines()] == ["1", "2", "3", "4", "5", "6"]


@pytest.mark.integration
def test_the_hot_cold_union_counts_each_trade_once(cold_stack: Stack) -> None:
    settings = offload_settings(cold_stack)
    publish_trades(cold_stack, "OFU-USDT", 1, 4, minutes_ago_ns(40))
    assert cold_stack.k2("offload", "run", "--tables", "silver_trades").returncode == 0
    # history from before the hot TTL exists only in cold: plant a trade 40 days old there
    table = cold_table(settings, "silver_trades")
    recent = table.scan(row_filter="canonical_symbol == 'OFU-USDT'").to_arrow()
    old = recent.slice(0, 1)
    ts_ns = time.time_ns() - 40 * DAY_NS
    old = old.set_column(old.schema.get_field_index("trade_id"), "trade_id", pa.array(["0"], pa.large_string()))
    old = old.set_column(old.schema.get_field_index("ts_event_ns"), "ts_event_ns", pa.array([ts_ns], pa.int64()))
    old = old.set_column(old.schema.get_field_index("ts_event"), "ts_event",
                         pa.array([ts_ns // 1000], pa.timestamp("us", tz="UTC")))  # fmt: skip
    table.append(old)

    rows = (
        cold_stack.client()
        .query(
            "SELECT trade_id, tier, toUnixTimestamp64Nano(ts_event) FROM k2.silver_trades_all "
            "WHERE canonical_symbol = 'OFU-USDT' ORDER BY toUInt64(trade_id)"
        )
        .result_rows
    )
    assert [(r[0], r[1]) for r in rows] == [("0", "cold"), ("1", "hot"), ("2", "hot"), ("3", "hot"), ("4", "hot")]
    assert rows[0][2] == ts_ns  # restored to the nanosecond from ts_event_ns
    in_cold = cold_stack.client().command("SELECT count() FROM cold.silver_trades WHERE canonical_symbol = 'OFU-USDT'")
    assert in_cold == 5  # the recent four are in both tiers, and the union still counts them once
