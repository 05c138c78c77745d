"""The embedded ClickHouse killed (SIGKILL) mid-ingest and restarted by the `k2 up` supervisor loses and
duplicates nothing; gold equals its recomputation from silver; the data survives down/up."""

from __future__ import annotations

import os
import signal
import threading
import time
from decimal import Decimal
from pathlib import Path

from tests.integration.test_gold_exact import INTERVALS_S, gold, recomputed_from_silver
from tests.support import Stack, http_ok, running_stack, topic, trade, wait_for

TOTAL = 30_000
CHUNK = 1_000
PACE_S = 0.1  # between chunks: 10k trades/s for 3 s, so the kill lands while trades are still arriving
FIRST_ID = 1_000_000
WHERE = "canonical_symbol = 'KILL-USDT'"


def _trades() -> list[dict[str, object]]:
    start = time.time_ns() - TOTAL * 10_000_000  # one trade every 10 ms up to now: five 1m candles, some 5m
    return [
        trade("binance", "KILL-USDT", FIRST_ID + i, f"{100 + i % 97}.{i % 1000:03d}", f"0.{i % 9 + 1}", "buy",
              start + i * 10_000_000)
        for i in range(TOTAL)
    ]  # fmt: skip


def _silver(stack: Stack, final: bool = False) -> tuple[int, int, Decimal]:
    row = (
        stack.client()
        .query(
            f"SELECT count(), sum(trade_id_num), sum(quantity) FROM k2.silver_trades {'FINAL' if final else ''} "
            f"WHERE {WHERE}"
        )
        .result_rows[0]
    )
    return int(row[0]), int(row[1]), Decimal(row[2])


def _check_gold(stack: Stack, when: str) -> int:
    client = stack.client()
    candles = 0
    for interval, seconds in INTERVALS_S.items():
        got = gold(client, interval, WHERE)
        assert got == recomputed_from_silver(client, seconds, WHERE), f"{interval} gold != silver FINAL {when}"
        assert sum(c[6] for c in got.values()) == TOTAL, f"{interval} candles do not count every trade {when}"
        candles += len(got)
    return candles


def test_kill_mid_stream_then_down_and_up(tmp_path: Path) -> None:
    trades = _trades()
    expected = (TOTAL, sum(int(str(t["trade_id"])) for t in trades), sum(Decimal(str(t["quantity"])) for t in trades))
    with running_stack(tmp_path / "data") as stack:
        published = [0]

        def publish() -> None:
            for i in range(0, TOTAL, CHUNK):
                stack.produce((topic("binance"), t) for t in trades[i : i + CHUNK])
                published[0] = i + CHUNK
                time.sleep(PACE_S)  # the load's shape, not a wait for readiness

        producer = threading.Thread(target=publish)
        producer.start()
        wait_for(lambda: _silver(stack)[0] > 3 * CHUNK, 60, "ingest under way")
        victim = stack.pid("clickhouse")
        os.kill(victim, signal.SIGKILL)
        killed_at = time.monotonic()
        published_at_kill = published[0]
        restarted = wait_for(lambda: stack.pid("clickhouse") != victim and stack.pid("clickhouse"), 60, "restart")
        wait_for(lambda: http_ok(stack.clickhouse_url + "/ping"), 60, "ClickHouse answering again")
        answering_s = time.monotonic() - killed_at
        producer.join()
        wait_for(lambda: _silver(stack)[0] >= TOTAL, 120, f"{TOTAL} trades in silver")
        recovered_s = time.monotonic() - killed_at

        client = stack.client()
        count, unique = client.query(
            f"SELECT count(), uniqExact(trade_id) FROM k2.silver_trades WHERE {WHERE}"
        ).result_rows[0]
        stored = {
            int(r[0]) for r in client.query(f"SELECT trade_id FROM k2.silver_trades FINAL WHERE {WHERE}").result_rows
        }
        bronze = client.command(f"SELECT count() FROM k2.bronze_trades_binance WHERE {WHERE}")
        sent = set(range(FIRST_ID, FIRST_ID + TOTAL))
        print(f"ClickHouse SIGKILL (pid {victim} -> {restarted}) with {published_at_kill}/{TOTAL} published: "
              f"sent={TOTAL} stored={len(stored)} lost={len(sent - stored)} duplicated={count - unique} "
              f"redelivered_to_bronze={bronze - TOTAL} answering_s={answering_s:.1f} recover_s={recovered_s:.1f}")  # fmt: skip

        assert published_at_kill < TOTAL, "the kill came after the last trade was published"
        assert stored == sent
        assert (count, unique) == (TOTAL, TOTAL)  # no duplicate even without FINAL: the dedup gate held
        assert _silver(stack) == expected
        assert _silver(stack, final=True) == expected
        assert bronze >= TOTAL
        candles = _check_gold(stack, "after the kill")
        print(f"gold: {candles} candles over {len(INTERVALS_S)} intervals equal their recomputation from silver")

        stack.k2("down")
        stack.k2("up", "--detach", "--feeds", "none", "--no-flows")
        assert _silver(stack, final=True) == expected
        _check_gold(stack, "after down/up")
