"""Coinbase Advanced Trade frames (recorded 2026-08-09) to ParseResults; garbage raises ParseError only.

advanced_trade.jsonl holds recorded frames verbatim; variants.jsonl holds an error frame, a heartbeat in
the older docs' shape (string counter) and an l2_data frame.
"""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feed_handlers.errors import ParseError
from feed_handlers.exchanges import VENUES, ParseResult, coinbase
from feed_handlers.records import TradeRecord
from k2.errors import ConfigError

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "coinbase"
RECORDED = (FIXTURES / "advanced_trade.jsonl").read_bytes().splitlines()
SNAPSHOT, ACK, ONE_TRADE, TICKER, HEARTBEAT, TWO_TRADES, FOUR_TRADES = RECORDED
VARIANTS = (FIXTURES / "variants.jsonl").read_bytes().splitlines()
CANONICAL = {"BTC-USD": "BTC-USD", "ETH-USD": "ETH-USD"}
RECEIVED = 1_786_309_551_460_000_042


def parse(frame: bytes | str) -> ParseResult:
    return coinbase.parse(frame, ts_received_ns=RECEIVED, canonical=CANONICAL)


def _trade(trade_id: str, price: str, size: str, side: str, maker_side: str, ts_event_ns: int) -> TradeRecord:
    return TradeRecord(
        exchange="coinbase",
        symbol="BTC-USD",
        canonical_symbol="BTC-USD",
        trade_id=trade_id,
        price=price,
        quantity=size,
        side=side,
        ts_event_ns=ts_event_ns,
        ts_received_ns=RECEIVED,
        extras={"sequence_num": 136, "maker_side": maker_side, "is_snapshot": False},
    )


def test_update_every_field_taker_side_inverted_and_ascending() -> None:
    # Sent newest first: 1068572096 (side "BUY", 21:05:51.426861Z), then 1068572095 ("SELL", 21:05:51.376358Z).
    # 2026-08-09T21:05:51Z is 1786309551 s.
    assert parse(TWO_TRADES) == ParseResult(
        kind="trades",
        channel="market_trades",
        sequence_num=136,
        trades=(
            _trade("1068572095", "65083.67", "0.00322434", "buy", "SELL", 1_786_309_551_376_358_000),
            _trade("1068572096", "65083.66", "0.00100346", "sell", "BUY", 1_786_309_551_426_861_000),
        ),
    )


def test_to_json_carries_coinbase_extras() -> None:
    (trade,) = parse(ONE_TRADE).trades
    assert orjson.loads(trade.to_json()) == {
        "exchange": "coinbase",
        "symbol": "BTC-USD",
        "canonical_symbol": "BTC-USD",
        "trade_id": "1068572091",
        "price": "65083.67",
        "quantity": "0.01034361",
        "side": "buy",  # maker SELL: a buyer lifted the offer
        "ts_event_ns": 1786309548167634000,
        "ts_received_ns": RECEIVED,
        "sequence_num": 9,
        "maker_side": "SELL",
        "is_snapshot": False,
    }


def test_batch_of_four_ascends() -> None:
    result = parse(FOUR_TRADES)
    assert [(t.trade_id, t.price, t.quantity, t.side) for t in result.trades] == [
        ("833140784", "1919.47", "0.10672916", "sell"),
        ("833140785", "1919.43", "0.05050291", "sell"),
        ("833140786", "1919.42", "0.00066375", "sell"),
        ("833140787", "1919.38", "0.89452679", "sell"),
    ]
    assert {t.canonical_symbol for t in result.trades} == {"ETH-USD"}
    assert result.sequence_num == 255


def test_snapshot_is_flagged_ascending_with_variable_fraction_digits() -> None:
    result = parse(SNAPSHOT)
    assert result.kind == "trades"
    assert result.sequence_num == 0
    assert [int(t.trade_id) for t in result.trades] == list(range(1068571991, 1068572091))
    assert all(t.extras["is_snapshot"] is True and t.extras["sequence_num"] == 0 for t in result.trades)
    by_id = {t.trade_id: t for t in result.trades}
    # "time":"2026-08-09T21:05:38.50436Z" (5 digits), "side":"BUY"
    assert by_id["1068572088"].ts_event_ns == 1_786_309_538_504_360_000
    assert (by_id["1068572088"].side, by_id["1068572088"].extras["maker_side"]) == ("sell", "BUY")
    assert (by_id["1068572088"].price, by_id["1068572088"].quantity) == ("65083.66", "0.00007299")
    # "time":"2026-08-09T21:05:16.1542Z" (4 digits), 21:05:16Z = 1786309516 s
    assert by_id["1068572055"].ts_event_ns == 1_786_309_516_154_200_000
    assert (by_id["1068572055"].price, by_id["1068572055"].quantity) == ("65086.36", "0.12781711")


def test_heartbeat_ack_ignored_error() -> None:
    assert parse(HEARTBEAT) == ParseResult(
        kind="heartbeat", channel="heartbeats", sequence_num=35, heartbeat_counter=41691
    )
    assert parse(VARIANTS[1]) == ParseResult(
        kind="heartbeat", channel="heartbeats", sequence_num=0, heartbeat_counter=3049
    )
    assert parse(ACK) == ParseResult(
        kind="ack", channel="subscriptions", sequence_num=2, symbols=("BTC-USD", "ETH-USD")
    )
    assert parse(TICKER) == ParseResult(kind="ignored", channel="ticker", sequence_num=10)
    assert parse(VARIANTS[2]) == ParseResult(kind="ignored", channel="l2_data", sequence_num=25)
    assert parse(VARIANTS[0]) == ParseResult(
        kind="error", error="failure to subscribe: GIBBERISH-USD is not a valid product"
    )


def test_product_without_mapping_keeps_its_id() -> None:
    (trade,) = coinbase.parse(ONE_TRADE, ts_received_ns=0, canonical={}).trades
    assert (trade.symbol, trade.canonical_symbol) == ("BTC-USD", "BTC-USD")


def test_subscribe_sends_one_message_per_channel_with_heartbeats() -> None:
    assert coinbase.subscribe(["BTC-USD", "ETH-USD"], channel="market_trades", req_id=1) == [
        '{"type":"subscribe","product_ids":["BTC-USD","ETH-USD"],"channel":"market_trades"}',
        '{"type":"subscribe","product_ids":["BTC-USD","ETH-USD"],"channel":"heartbeats"}',
    ]
    # unsubscribing a product leaves heartbeats alone; an empty list would drop the whole channel
    assert coinbase.unsubscribe(["ETH-USD"], channel="market_trades", req_id=2) == [
        '{"type":"unsubscribe","product_ids":["ETH-USD"],"channel":"market_trades"}'
    ]
    assert coinbase.unsubscribe([], channel="market_trades", req_id=3) == []
    with pytest.raises(ConfigError):
        coinbase.subscribe(["BTC-USD"], channel="matches", req_id=4)


def test_venue_description() -> None:
    venue = VENUES["coinbase"]
    assert venue is coinbase.VENUE
    assert venue.ws_url == "wss://advanced-trade-ws.coinbase.com"
    assert venue.subscribe_deadline_s == 5.0
    assert venue.parse(TWO_TRADES, ts_received_ns=RECEIVED, canonical=CANONICAL) == parse(TWO_TRADES)


GOOD = ONE_TRADE.decode()

GARBAGE = [
    b"",
    b"not json",
    TWO_TRADES[:150],  # truncated frame
    b"[1, 2, 3]",
    b"null",
    b"\xff\xfe not utf8",
    b"[" * 100_000,
    b"{}",
    b'{"type":"error","message":7}',
    b'{"channel":"market_trades","events":[]}',  # no sequence_num
    b'{"channel":"market_trades","sequence_num":"9","events":[]}',
    b'{"channel":"market_trades","sequence_num":-1,"events":[]}',
    b'{"channel":"market_trades","sequence_num":18446744073709551616,"events":[]}',  # huge numbers
    b'{"channel":"market_trades","sequence_num":1e400,"events":[]}',
    b'{"channel":"market_trades","sequence_num":9,"events":{}}',
    b'{"channel":"market_trades","sequence_num":9,"events":[{"type":"update"}]}',
    b'{"channel":"market_trades","sequence_num":9,"events":[{"type":"partial","trades":[]}]}',
    b'{"channel":"heartbeats","sequence_num":9,"events":[]}',
    b'{"channel":"heartbeats","sequence_num":9,"events":[{"heartbeat_counter":"x"}]}',
    b'{"channel":"subscriptions","sequence_num":9,"events":[{"subscriptions":{"market_trades":"BTC-USD"}}]}',
    GOOD.replace('"price":"65083.67"', '"price":65083.67').encode(),  # price as float
    GOOD.replace('"price":"65083.67"', '"price":"65083.67.1"').encode(),
    GOOD.replace('"price":"65083.67"', '"price":"1e999999999"').encode(),
    GOOD.replace('"size":"0.01034361"', '"size":""').encode(),
    GOOD.replace('"size":"0.01034361"', '"size":"0x10"').encode(),
    GOOD.replace('"trade_id":"1068572091"', '"trade_id":1068572091').encode(),
    GOOD.replace('"trade_id":"1068572091"', '"trade_id":"abc"').encode(),
    GOOD.replace('"trade_id":"1068572091"', '"trade_id":"' + "9" * 5000 + '"').encode(),
    GOOD.replace('"trade_id":"1068572091"', '"trade_id":"\\u0661"').encode(),  # Arabic-Indic one
    GOOD.replace('"side":"SELL"', '"side":"sell"').encode(),
    GOOD.replace('"side":"SELL"', '"side":"UNKNOWN_ORDER_SIDE"').encode(),
    GOOD.replace('"time":"2026-08-09T21:05:48.167634Z"', '"time":"2026-08-09 21:05:48.167634"').encode(),
    GOOD.replace('"product_id":"BTC-USD",', "").encode(),
]


@pytest.mark.parametrize("frame", GARBAGE, ids=range(len(GARBAGE)))
def test_garbage_raises_parse_error(frame: bytes) -> None:
    with pytest.raises(ParseError) as caught:
        parse(frame)
    assert caught.value.reason


def _parse_or_parse_error(frame: bytes | str) -> None:
    try:
        result = parse(frame)
    except ParseError:
        return
    for trade in result.trades:
        trade.to_json()


@settings(database=None)
@given(st.binary(max_size=400))
def test_any_bytes_raise_only_parse_error(frame: bytes) -> None:
    _parse_or_parse_error(frame)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
SMALL = [f for f in RECORDED + VARIANTS if len(f) < 2000]


@settings(database=None, max_examples=300)
@given(st.sampled_from(SMALL), st.data())
def test_any_field_replaced_by_any_json_raises_only_parse_error(frame: bytes, data: st.DataObject) -> None:
    msg = json.loads(frame)
    target = msg
    events = msg.get("events")
    if events and data.draw(st.booleans()):
        target = events[0]
        if target.get("trades") and data.draw(st.booleans()):
            target = target["trades"][0]
    target[data.draw(st.sampled_from(sorted(target)))] = data.draw(JSON)
    _parse_or_parse_error(json.dumps(msg))


@settings(database=None, max_examples=300)
@given(st.sampled_from(SMALL), st.data())
def test_cut_or_corrupted_frames_raise_only_parse_error(frame: bytes, data: st.DataObject) -> None:
    start = data.draw(st.integers(0, len(frame)))
    end = data.draw(st.integers(start, len(frame)))
    _parse_or_parse_error(frame[:start] + data.draw(st.binary(max_size=4)) + frame[end:])
