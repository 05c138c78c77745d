"""The embedded ClickHouse killed mid-stream loses and duplicates nothing; data survives down/up."""

from __future__ import annotations

import os
import signal
import threading
import time
from decimal import Decimal
from pathlib import Path

from tests.support import Stack, http_ok, running_stack, topic, trade, wait_for

TOTAL = 30_000
CHUNK = 1_000


def _trades() -> list[dict[str, object]]:
    now = time.time_ns()
    return [
        trade("binance", "KILL-USDT", 1_000_000 + i, f"{100 + i % 97}.{i % 1000:03d}", f"0.{i % 9 + 1}", "buy", now + i)
        for i in range(TOTAL)
    ]


def _silver(stack: Stack, final: bool = False) -> tuple[int, int, Decimal]:
    row = (
        stack.client()
        .query(
            f"SELECT count(), sum(trade_id_num), sum(quantity) FROM k2.silver_trades {'FINAL' if final else ''} "
            "WHERE canonical_symbol = 'KILL-USDT'"
        )
        .result_rows[0]
    )
    return int(row[0]), int(row[1]), Decimal(row[2])


def test_kill_mid_stream_then_down_and_up(tmp_path: Path) -> None:
    trades = _trades()
    expected = (TOTAL, sum(int(str(t["trade_id"])) for t in trades), sum(Decimal(str(t["quantity"])) for t in trades))
    with running_stack(tmp_path / "data") as stack:

        def publish() -> None:
            for i in range(0, TOTAL, CHUNK):
                stack.produce((topic("binance"), t) for t in trades[i : i + CHUNK])

        producer = threading.Thread(target=publish)
        producer.start()
        wait_for(lambda: _silver(stack)[0] > 3 * CHUNK, 60, "ingest under way")
        victim = stack.pid("clickhouse")
        os.kill(victim, signal.SIGKILL)
        killed_at = time.monotonic()
        restarted = wait_for(lambda: stack.pid("clickhouse") != victim and stack.pid("clickhouse"), 60, "restart")
        wait_for(lambda: http_ok(stack.clickhouse_url + "/ping"), 60, "ClickHouse answering again")
        producer.join()
        wait_for(lambda: _silver(stack)[0] >= TOTAL, 120, f"{TOTAL} trades in silver")
        recovered_s = time.monotonic() - killed_at
        print(f"killed pid {victim}, restarted as {restarted}; all {TOTAL} trades in silver {recovered_s:.1f}s later")

        assert _silver(stack) == expected  # no duplicate even without FINAL: the dedup gate held
        assert _silver(stack, final=True) == expected
        bronze = stack.client().command(
            "SELECT count() FROM k2.bronze_trades_binance WHERE canonical_symbol = 'KILL-USDT'"
        )
        print(f"bronze rows {bronze} for {TOTAL} trades (redelivered after the kill: {bronze - TOTAL})")
        assert bronze >= TOTAL

        stack.k2("down")
        stack.k2("up", "--detach", "--feeds", "none", "--no-flows")
        assert _silver(stack, final=True) == expected
        day = (
            stack.client()
            .query("SELECT trade_count, volume FROM k2.ohlcv_1d WHERE canonical_symbol = 'KILL-USDT'")
            .result_rows
        )
        assert sum(r[0] for r in day) == TOTAL
        assert sum((r[1] for r in day), Decimal(0)) == expected[2]
