"""`k2 up --replay captures`: the whole pipeline offline, from fake exchanges to gold."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

from tests.support import REPO, running_stack, wait_for


def test_replayed_captures_reach_silver_and_gold_for_every_exchange(tmp_path: Path) -> None:
    with running_stack(tmp_path / "data", "--replay", str(REPO / "captures"), "--speed", "20") as stack:
        result = stack.k2("status", "--json", check=False)
        report = json.loads(result.stdout)
        assert result.returncode == 0, report
        assert {n: c["health"] for n, c in report["components"].items()} == dict.fromkeys(
            ["broker", "clickhouse", "exporter", "replay", "handler-binance", "handler-kraken", "handler-coinbase"],
            "healthy",
        )
        client = stack.client()

        def per_exchange() -> dict[str, int] | None:
            rows = dict(client.query("SELECT exchange, count() FROM k2.silver_trades GROUP BY exchange").result_rows)
            return rows if len(rows) == 3 and min(rows.values()) >= 20 else None

        counts = wait_for(per_exchange, 60, "trades from all three exchanges in silver")
        print(f"silver rows per exchange: {counts}")
        # the first Kraken trade of the capture, exactly as its JSON number was written
        first = client.query(
            "SELECT price, quantity, side, vendor['ord_type'] FROM k2.silver_trades "
            "WHERE exchange = 'kraken' AND canonical_symbol = 'BTC-USD' ORDER BY trade_id_num LIMIT 1"
        ).result_rows[0]
        assert first == (Decimal("65059.9"), Decimal("0.18835067"), "buy", "limit")
        # Coinbase's maker side was inverted on the way: the first snapshot trade was a maker SELL
        assert client.query(
            "SELECT side, vendor['maker_side'] FROM k2.silver_trades WHERE exchange = 'coinbase' "
            "AND trade_id = '1068572090'"
        ).result_rows == [("buy", "SELL")]
        assert client.command("SELECT countIf(NOT is_valid) FROM k2.silver_trades") == 0
        # closed minutes: gold candles equal the silver trades in them (nothing more arrives there)
        closed = "bucket < toStartOfMinute(now()) - INTERVAL 1 MINUTE"
        wait_for(lambda: client.command(f"SELECT count() FROM k2.ohlcv_1m WHERE {closed}") > 0, 150, "a closed minute")
        gold = client.query(
            f"SELECT exchange, canonical_symbol, bucket, trade_count, volume FROM k2.ohlcv_1m WHERE {closed} ORDER BY 1, 2, 3"
        ).result_rows
        silver = client.query(
            "SELECT exchange, canonical_symbol, toStartOfMinute(ts_event) AS bucket, count(), sum(quantity) "
            f"FROM k2.silver_trades FINAL WHERE is_valid AND {closed.replace('bucket', 'toStartOfMinute(ts_event)', 1)} "
            "GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
        ).result_rows
        assert gold == silver
