"""Kraken v2 frames to ParseResults: exact JSON numbers, snapshot flag, control frames; garbage raises ParseError only.

doc_examples.jsonl holds Kraken's documented frames verbatim; variants.jsonl holds frames in the same schema
with the number forms the SDK warns about (scientific notation, long mantissas, integers, strings).
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feed_handlers.errors import ParseError
from feed_handlers.exchanges import VENUES, ParseResult, kraken
from feed_handlers.records import TradeRecord
from k2.errors import ConfigError

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "kraken"
DOC = (FIXTURES / "doc_examples.jsonl").read_bytes().splitlines()
VARIANTS = (FIXTURES / "variants.jsonl").read_bytes().splitlines()
CANONICAL = {"BTC/USD": "BTC-USD"}
RECEIVED = 1_786_309_551_500_000_123


def parse(frame: bytes | str) -> ParseResult:
    return kraken.parse(frame, ts_received_ns=RECEIVED, canonical=CANONICAL)


def test_snapshot_trades_every_field() -> None:
    result = parse(DOC[1])
    assert result == ParseResult(
        kind="trades",
        channel="trade",
        trades=(
            TradeRecord(
                exchange="kraken",
                symbol="MATIC/USD",
                canonical_symbol="MATIC-USD",  # not in the mapping: derived
                trade_id="4665846",
                price="0.5147",
                quantity="6423.46326",
                side="buy",
                ts_event_ns=1_695_628_116_925_533_000,  # 2023-09-25T07:48:36Z = 1695628116 s
                ts_received_ns=RECEIVED,
                extras={"ord_type": "limit", "is_snapshot": True},
            ),
            TradeRecord(
                exchange="kraken",
                symbol="MATIC/USD",
                canonical_symbol="MATIC-USD",
                trade_id="4665847",
                price="0.5147",
                quantity="1136.19677815",
                side="buy",
                ts_event_ns=1_695_628_176_925_603_000,
                ts_received_ns=RECEIVED,
                extras={"ord_type": "limit", "is_snapshot": True},
            ),
        ),
    )
    assert orjson.loads(result.trades[1].to_json()) == {
        "exchange": "kraken",
        "symbol": "MATIC/USD",
        "canonical_symbol": "MATIC-USD",
        "trade_id": "4665847",
        "price": "0.5147",
        "quantity": "1136.19677815",
        "side": "buy",
        "ts_event_ns": 1695628176925603000,
        "ts_received_ns": RECEIVED,
        "ord_type": "limit",
        "is_snapshot": True,
    }


def test_numbers_are_exact_scientific_notation_long_mantissa_integer() -> None:
    first, second = parse(VARIANTS[0]).trades
    # "price":65083.123456789012345678 (a float would keep ~17 digits), "qty":5.1e-05
    assert first == TradeRecord(
        exchange="kraken",
        symbol="BTC/USD",
        canonical_symbol="BTC-USD",
        trade_id="83412377",
        price="65083.123456789012345678",
        quantity="0.000051",
        side="sell",
        ts_event_ns=1_786_309_551_426_861_000,  # 2026-08-09T21:05:51Z = 1786309551 s
        ts_received_ns=RECEIVED,
        extras={"ord_type": "market", "is_snapshot": False},
    )
    assert str(float("65083.123456789012345678")) != first.price  # the trap this avoids
    # "price":65083 (a JSON integer) and "qty":0.00426990 (trailing zero kept)
    assert (second.trade_id, second.price, second.quantity, second.side) == ("83412378", "65083", "0.00426990", "buy")
    assert second.ts_event_ns == 1_786_309_551_427_004_000
    assert Decimal(first.quantity) == Decimal("5.1e-05")


def test_trades_ascend_per_symbol_and_accept_string_numbers() -> None:
    trades = parse(VARIANTS[1]).trades
    assert [(t.canonical_symbol, t.trade_id, t.price, t.quantity, t.side, t.ts_event_ns) for t in trades] == [
        ("ETH-USD", "51234567", "1919.4", "2.5", "sell", 1_786_309_551_999_999_000),
        ("ETH-USD", "51234568", "1919.41", "0.0000001", "buy", 1_786_309_552_000_001_000),  # qty 1E-7
        ("BTC-USD", "83412380", "65083.2", "0.5", "buy", 1_786_309_552_100_000_000),  # ".1Z"
    ]


def test_canonical_mapping_wins_over_derivation() -> None:
    frame = DOC[1].replace(b"MATIC/USD", b"AAPLx/USD")
    (first, _) = kraken.parse(frame, ts_received_ns=0, canonical={"AAPLx/USD": "AAPL-USD"}).trades
    assert (first.symbol, first.canonical_symbol) == ("AAPLx/USD", "AAPL-USD")
    (first, _) = kraken.parse(frame, ts_received_ns=0, canonical={}).trades
    assert first.canonical_symbol == "AAPLX-USD"


def test_status_heartbeat_pong_acks_errors_ignored() -> None:
    assert parse(DOC[0]) == ParseResult(kind="status", channel="status", system="online")
    assert parse(VARIANTS[4]) == ParseResult(kind="status", channel="status", system="maintenance")
    assert parse(DOC[2]) == ParseResult(kind="heartbeat", channel="heartbeat")
    assert parse(DOC[3]) == ParseResult(kind="heartbeat", channel="pong", req_id=101)
    assert parse(DOC[4]) == ParseResult(kind="ack", channel="ticker", req_id=1, symbols=("BTC/USD",))
    assert parse(VARIANTS[2]) == ParseResult(kind="ack", channel="trade", req_id=7, symbols=("BTC/USD",))
    assert parse(VARIANTS[3]) == ParseResult(
        kind="error", channel="subscribe", req_id=8, error="Currency pair not supported XBT/USD"
    )
    assert parse(VARIANTS[5]) == ParseResult(kind="ignored", channel="book")


def test_subscribe_messages_always_say_snapshot() -> None:
    assert kraken.subscribe(["BTC/USD", "ETH/USD"], channel="trade", req_id=1) == [
        '{"method":"subscribe","params":{"channel":"trade","symbol":["BTC/USD","ETH/USD"],"snapshot":true},"req_id":1}'
    ]
    assert kraken.subscribe(["BTC/USD"], channel="trade", req_id=2, snapshot=False) == [
        '{"method":"subscribe","params":{"channel":"trade","symbol":["BTC/USD"],"snapshot":false},"req_id":2}'
    ]
    assert kraken.unsubscribe(["ETH/USD"], channel="trade", req_id=3) == [
        '{"method":"unsubscribe","params":{"channel":"trade","symbol":["ETH/USD"]},"req_id":3}'
    ]
    assert kraken.subscribe([], channel="trade", req_id=4) == []
    with pytest.raises(ConfigError):
        kraken.subscribe(["BTC/USD"], channel="book", req_id=5)


def test_venue_description() -> None:
    venue = VENUES["kraken"]
    assert venue is kraken.VENUE
    assert venue.ws_url == "wss://ws.kraken.com/v2"
    assert venue.trade_channels == ("trade",)
    assert venue.silence_timeout_s == 10.0
    assert venue.snapshot_on_subscribe is kraken.SNAPSHOT


GOOD = VARIANTS[0].decode()

GARBAGE = [
    b"",
    b"not json",
    DOC[1][:100],  # truncated frame
    b"[1, 2, 3]",
    b'[0,[["5541.20000","0.15850568","1534614057.321597","s","l",""]],"trade","XBT/USD"]',  # a v1 frame
    b"null",
    b"\xff\xfe not utf8",
    b"\xef\xbb\xbf" + DOC[2],  # BOM
    b"[" * 100_000,
    b"{}",
    b'{"channel":null}',
    b'{"channel":"trade"}',
    b'{"channel":"trade","type":"update"}',
    b'{"channel":"trade","type":"partial","data":[]}',
    b'{"channel":"trade","type":"update","data":{}}',
    b'{"channel":"trade","type":"update","data":[1]}',
    b'{"channel":"status","type":"update","data":[]}',
    b'{"method":"subscribe","req_id":1}',
    b'{"method":"subscribe","success":true,"result":{"channel":"trade"}}',
    b'{"method":"pong","req_id":"a"}',
    GOOD.replace('"qty":5.1e-05', '"qty":NaN').encode(),
    GOOD.replace('"qty":5.1e-05', '"qty":Infinity').encode(),
    GOOD.replace('"qty":5.1e-05', '"qty":1e999999999').encode(),  # huge numbers
    GOOD.replace('"qty":5.1e-05', '"qty":1e99999999999999999999999').encode(),
    GOOD.replace('"qty":5.1e-05', '"qty":' + "9" * 5000).encode(),
    GOOD.replace('"qty":5.1e-05', '"qty":"5,1"').encode(),
    GOOD.replace('"qty":5.1e-05', '"qty":true').encode(),
    GOOD.replace('"qty":5.1e-05', '"qty":null').encode(),
    GOOD.replace('"trade_id":83412377', '"trade_id":83412377.0').encode(),
    GOOD.replace('"trade_id":83412377', '"trade_id":"83412377"').encode(),
    GOOD.replace('"trade_id":83412377', '"trade_id":99999999999999999999').encode(),
    GOOD.replace('"side":"sell"', '"side":"s"').encode(),
    GOOD.replace('"side":"sell"', '"side":"SELL"').encode(),
    GOOD.replace('"timestamp":"2026-08-09T21:05:51.426861Z"', '"timestamp":1786309551.426861').encode(),
    GOOD.replace('"timestamp":"2026-08-09T21:05:51.426861Z"', '"timestamp":"2026-08-09T21:05:51.426861"').encode(),
    GOOD.replace('"timestamp":"2026-08-09T21:05:51.426861Z"', '"timestamp":"1960-01-01T00:00:00Z"').encode(),
    GOOD.replace('"timestamp":"2026-08-09T21:05:51.426861Z"', '"timestamp":"2300-01-01T00:00:00Z"').encode(),
    GOOD.replace('"ord_type":"market",', "").encode(),
    GOOD.replace('"symbol":"BTC/USD"', '"symbol":"\\udc00/USD"').encode(),  # lone surrogate
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


@settings(database=None, max_examples=300)
@given(st.sampled_from(DOC + VARIANTS), st.data())
def test_any_field_replaced_by_any_json_raises_only_parse_error(frame: bytes, data: st.DataObject) -> None:
    msg = json.loads(frame)
    target = msg
    if isinstance(msg.get("data"), list) and msg["data"] and data.draw(st.booleans()):
        target = msg["data"][0]
    target[data.draw(st.sampled_from(sorted(target)))] = data.draw(JSON)
    _parse_or_parse_error(json.dumps(msg))


@settings(database=None, max_examples=300)
@given(st.sampled_from(DOC + VARIANTS), st.data())
def test_cut_or_corrupted_frames_raise_only_parse_error(frame: bytes, data: st.DataObject) -> None:
    start = data.draw(st.integers(0, len(frame)))
    end = data.draw(st.integers(start, len(frame)))
    _parse_or_parse_error(frame[:start] + data.draw(st.binary(max_size=4)) + frame[end:])
