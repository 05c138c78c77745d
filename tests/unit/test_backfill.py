"""REST backfill answers turned into trade records, per venue, from the venues' documented shapes."""

from __future__ import annotations

from feed_handlers.backfill import REST
from feed_handlers.state import ConfirmedGap

GAP = ConfirmedGap("BTC/USD", 101, 102, after_ns=1_688_669_448_000_000_000, before_ns=1_688_669_450_000_000_000)


def test_kraken_trades_rows_with_the_cursor() -> None:
    spec = REST["kraken"]
    assert spec.request("trade", "BTC/USD", GAP, 0) == (
        "/0/public/Trades",
        {"pair": "BTC/USD", "since": "1688669447999999999"},
    )
    body = (
        b'{"error":[],"result":{"BTC/USD":[["30243.40000","0.34507674",1688669448.7664,"b","m","",101],'
        b'["30243.30000","0.00100000",1688669449.03127,"s","l","",102]],"last":"1688669449031270000"}}'
    )
    trades, cursor = spec.parse(body, "trade", "BTC/USD", "BTC-USD", 7)
    assert cursor == 1688669449031270000
    first = trades[0]
    assert (first.trade_id, first.price, first.quantity, first.side, first.ts_event_ns) == (
        "101",
        "30243.40000",
        "0.34507674",
        "buy",
        1_688_669_448_766_400_000,
    )
    assert (trades[1].side, trades[1].extras["ord_type"]) == ("sell", "limit")


def test_coinbase_ticker_trades_side_inverted() -> None:
    spec = REST["coinbase"]
    gap = ConfirmedGap("BTC-USD", 5, 5, after_ns=1_700_000_000_500_000_000, before_ns=1_700_000_002_000_000_000)
    path, query = spec.request("market_trades", "BTC-USD", gap, 0)
    assert (path, query) == (
        "/api/v3/brokerage/market/products/BTC-USD/ticker",
        {"limit": "1000", "start": "1700000000", "end": "1700000003"},
    )
    body = b'{"trades":[{"trade_id":"5","product_id":"BTC-USD","price":"65083.67","size":"0.002186","time":"2023-11-14T22:13:21.5Z","side":"SELL"}],"best_bid":"1","best_ask":"2"}'
    (trade,), cursor = spec.parse(body, "market_trades", "BTC-USD", "BTC-USD", 7)
    assert cursor is None
    assert (trade.trade_id, trade.price, trade.quantity, trade.side, trade.ts_event_ns) == (
        "5",
        "65083.67",
        "0.002186",
        "buy",
        1_700_000_001_500_000_000,
    )


def test_binance_historical_trades_page() -> None:
    spec = REST["binance"]
    gap = ConfirmedGap("BTCUSDT", 10, 2500)
    assert spec.request("trade", "BTCUSDT", gap, 10) == (
        "/api/v3/historicalTrades",
        {"symbol": "BTCUSDT", "fromId": "10", "limit": "1000"},
    )
    body = b'[{"id":10,"price":"4.00000100","qty":"12.00000000","quoteQty":"48.000012","time":1499865549590,"isBuyerMaker":true,"isBestMatch":true}]'
    (trade,), cursor = spec.parse(body, "trade", "BTCUSDT", "BTC-USDT", 7)
    assert (trade.price, trade.quantity, trade.side, trade.ts_event_ns, cursor) == (
        "4.00000100",
        "12.00000000",
        "sell",
        1_499_865_549_590_000_000,
        11,
    )
