"""Bad records are kept where people can see them, and never stop consumption."""

from __future__ import annotations

import time
from decimal import Decimal

from tests.support import Stack, topic, trade, wait_for


def test_invalid_records_are_visible_and_consumption_goes_on(stack: Stack) -> None:
    now = time.time_ns()
    good = trade("kraken", "BAD-USD", 1, "100.5", "2", "buy", now)
    bad_trades = [
        trade("kraken", "BAD-USD", 2, "-3.5", "1", "sell", now),
        trade("kraken", "BAD-USD", 3, "10", "0", "buy", now),
        {**trade("kraken", "BAD-USD", 4, "10", "1", "buy", now), "exchange": "krakenx"},
        trade("kraken", "BAD-USD", 5, "1e5", "1", "buy", now),
        trade("kraken", "BAD-USD", 6, "0.1234567890123456789", "1", "buy", now),
        trade("kraken", "BAD-USD", 7, "10", "1", "hold", now),
        trade("kraken", "BAD-USD", 8, "0.000000001", "0.0000000001", "buy", now),
        trade("kraken", "BAD-USD", 9, "10", "1", "buy", 0),
        {**trade("kraken", "BAD-USD", 10, "10", "1", "buy", now), "exchange": "coinbase"},
    ]
    malformed = [b'{"exchange": "kraken", "symbol": "BAD/USD", "price": ', b"[1, 2, 3]", b"", b"\xff\xfe not utf8"]
    after = trade("kraken", "BAD-USD", 11, "101", "1", "sell", now)
    messages: list[tuple[str, bytes | dict[str, object]]] = [(topic("kraken"), good)]
    messages += [(topic("kraken"), t) for t in bad_trades]
    messages += [(topic("kraken"), m) for m in malformed]
    messages.append((topic("kraken"), after))
    stack.produce(messages)

    client = stack.client()
    wait_for(
        lambda: client.command("SELECT count() FROM k2.silver_trades WHERE canonical_symbol = 'BAD-USD'") == 11,
        what="11 BAD-USD rows in silver",
    )
    rows = client.query(
        "SELECT trade_id, is_valid, validation_errors FROM k2.silver_trades "
        "WHERE canonical_symbol = 'BAD-USD' ORDER BY trade_id_num"
    ).result_rows
    assert rows == [
        ("1", True, []),
        ("2", False, ["price_not_positive"]),
        ("3", False, ["quantity_not_positive"]),
        ("4", False, ["unknown_exchange"]),
        ("5", False, ["price_not_decimal"]),
        ("6", False, ["price_not_decimal"]),
        ("7", False, ["side_invalid"]),
        ("8", False, ["quote_volume_inexact"]),
        ("9", False, ["ts_event_missing"]),
        ("10", False, ["exchange_mismatch"]),
        ("11", True, []),
    ]
    errors = wait_for(
        lambda: (
            client.query(
                "SELECT raw_message, error, topic FROM k2.ingest_errors WHERE exchange = 'kraken' "
                "AND (raw_message LIKE '%BAD/USD%' OR raw_message IN ('[1, 2, 3]', '') OR raw_message LIKE '%not utf8')"
                " ORDER BY offset"
            ).result_rows
        ),
        what="malformed messages in ingest_errors",
    )
    raw = client.query(
        "SELECT hex(raw_message) FROM k2.ingest_errors WHERE exchange = 'kraken' ORDER BY offset"
    ).result_rows
    assert [bytes.fromhex(r[0]) for r in raw][-4:] == malformed
    assert {e[2] for e in errors} == {"market.crypto.trades.kraken"}
    assert all(e[1].startswith("Cannot parse input") for e in errors)
    candle = client.query(
        "SELECT open, close, trade_count FROM k2.ohlcv_1d WHERE canonical_symbol = 'BAD-USD'"
    ).result_rows
    assert candle == [(Decimal("100.5"), Decimal("101"), 2)]
