"""Records published to the three exchange topics reach bronze, silver and all six gold tables."""

from __future__ import annotations

import time
from decimal import Decimal

from tests.support import Stack, topic, trade, wait_for

DAY_NS = 86_400 * 10**9


def _base_ns() -> int:
    """Yesterday 10:00:00 UTC: inside silver's 30-day TTL, with bucket boundaries we can name."""
    today = time.time_ns() // DAY_NS * DAY_NS
    return today - DAY_NS + 10 * 3600 * 10**9


def test_trades_flow_through_every_layer(stack: Stack) -> None:
    base = _base_ns()
    records = [
        ("binance", trade("binance", "PIPE-USDT", 101, "65000.10000000", "0.50000000", "buy", base + 1_000)),
        ("binance", trade("binance", "PIPE-USDT", 102, "65010.00000000", "0.25000000", "sell", base + 30 * 10**9)),
        ("binance", trade("binance", "PIPE-USDT", 103, "64990.5", "1.125", "buy", base + 61 * 10**9)),
        ("kraken", trade("kraken", "PIPE-USD", 7, "0.5147", "6423.46326", "buy", base + 5 * 10**9)),
        ("coinbase", trade("coinbase", "PIPE-USD", 1068572090, "65083.67", "0.002186", "buy", base + 7 * 10**9)),
    ]
    stack.produce((topic(ex), rec) for ex, rec in records)
    client = stack.client()
    wait_for(
        lambda: client.command("SELECT count() FROM k2.silver_trades WHERE canonical_symbol LIKE 'PIPE-%'") == 5,
        what="5 PIPE trades in silver",
    )

    bronze = client.query(
        "SELECT trade_id, price, quantity, side, ts_event_ns, is_buyer_maker, stream_type, _topic "
        "FROM k2.bronze_trades_binance WHERE canonical_symbol = 'PIPE-USDT' ORDER BY trade_id"
    ).result_rows
    assert bronze[0] == (
        "101", "65000.10000000", "0.50000000", "buy", base + 1_000, False, "trade", "market.crypto.trades.binance"
    )  # fmt: skip
    assert [r[1] for r in bronze] == ["65000.10000000", "65010.00000000", "64990.5"]

    silver = client.query(
        "SELECT exchange, symbol, trade_id, trade_id_num, price, quantity, quote_volume, side, "
        "toUnixTimestamp64Nano(ts_event), is_valid, validation_errors, vendor "
        "FROM k2.silver_trades FINAL WHERE canonical_symbol LIKE 'PIPE-%' ORDER BY exchange, trade_id"
    ).result_rows
    assert silver[0] == (
        "binance", "PIPEUSDT", "101", 101, Decimal("65000.1"), Decimal("0.5"), Decimal("32500.05"), "buy",
        base + 1_000, True, [],
        {"event_time_ns": "0", "is_buyer_maker": "false", "stream_type": "trade", "first_trade_id": "",
         "last_trade_id": ""},
    )  # fmt: skip
    assert silver[3] == (
        "coinbase", "PIPE-USD", "1068572090", 1068572090, Decimal("65083.67"), Decimal("0.002186"),
        Decimal("142.27290262"), "buy", base + 7 * 10**9, True, [],
        {"sequence_num": "1", "maker_side": "SELL", "is_snapshot": "false"},
    )  # fmt: skip
    assert silver[4][4:7] == (Decimal("0.5147"), Decimal("6423.46326"), Decimal("3306.156539922"))

    expected_binance = {
        # interval: (bucket offset from base in s, open, high, low, close, volume, quote volume, count)
        "1m": [
            (0, "65000.1", "65010", "65000.1", "65010", "0.75", "48752.55", 2),
            (60, "64990.5", "64990.5", "64990.5", "64990.5", "1.125", "73114.3125", 1),
        ],
    }
    whole = (0, "65000.1", "65010", "64990.5", "64990.5", "1.875", "121866.8625", 3)
    for interval in ("5m", "15m", "30m", "1h"):
        expected_binance[interval] = [whole]
    expected_binance["1d"] = [(-10 * 3600, *whole[1:])]
    for interval, candles in expected_binance.items():
        rows = client.query(
            f"SELECT toUnixTimestamp(bucket), open, high, low, close, volume, quote_volume, trade_count, vwap "
            f"FROM k2.ohlcv_{interval} WHERE canonical_symbol = 'PIPE-USDT' ORDER BY bucket"
        ).result_rows
        got = [(r[0] - base // 10**9, *r[1:8]) for r in rows]
        want = [(c[0], *(Decimal(v) for v in c[1:7]), c[7]) for c in candles]
        assert got == want, interval
        for row in rows:
            assert row[8] == (row[6] / row[5]).quantize(Decimal("1e-18"), rounding="ROUND_DOWN"), interval

    kraken_1h = client.query(
        "SELECT open, close, volume, trade_count FROM k2.ohlcv_1h WHERE exchange = 'kraken' "
        "AND canonical_symbol = 'PIPE-USD'"
    ).result_rows
    assert kraken_1h == [(Decimal("0.5147"), Decimal("0.5147"), Decimal("6423.46326"), 1)]
