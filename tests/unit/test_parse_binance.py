"""Binance frames (recorded, tests/fixtures/binance/) to ParseResults; garbage raises ParseError only."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feed_handlers.errors import ParseError
from feed_handlers.exchanges import VENUES, ParseResult, binance
from feed_handlers.records import TradeRecord
from k2.errors import ConfigError

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "binance"
TRADE = (FIXTURES / "trade.jsonl").read_bytes().splitlines()
AGG = (FIXTURES / "aggtrade.jsonl").read_bytes().splitlines()
CONTROL = (FIXTURES / "control_documented.jsonl").read_bytes().splitlines()
CANONICAL = {"BNBBTC": "BNB-BTC", "ZILUSDT": "ZIL-USDT", "DENTUSDT": "DENT-USDT"}
RECEIVED = 1_700_000_000_123_456_789


def parse(frame: bytes | str) -> ParseResult:
    return binance.parse(frame, ts_received_ns=RECEIVED, canonical=CANONICAL)


def test_trade_with_buyer_taker_every_field() -> None:
    # {"e":"trade","E":1554076800945,"s":"BNBBTC","t":40756030,"p":"0.00426990","q":"33.82000000",
    #  "b":...,"a":...,"T":1554076800940,"m":false,"M":true}: the old b/a fields are tolerated
    result = parse(TRADE[0])
    assert result == ParseResult(
        kind="trades",
        channel="trade",
        trades=(
            TradeRecord(
                exchange="binance",
                symbol="BNBBTC",
                canonical_symbol="BNB-BTC",
                trade_id="40756030",
                price="0.00426990",
                quantity="33.82000000",
                side="buy",  # m=false: the buyer was the taker
                ts_event_ns=1_554_076_800_940_000_000,
                ts_received_ns=RECEIVED,
                extras={
                    "event_time_ns": 1_554_076_800_945_000_000,
                    "is_buyer_maker": False,
                    "stream_type": "trade",
                    "first_trade_id": None,
                    "last_trade_id": None,
                },
            ),
        ),
    )
    assert orjson.loads(result.trades[0].to_json()) == {
        "exchange": "binance",
        "symbol": "BNBBTC",
        "canonical_symbol": "BNB-BTC",
        "trade_id": "40756030",
        "price": "0.00426990",
        "quantity": "33.82000000",
        "side": "buy",
        "ts_event_ns": 1554076800940000000,
        "ts_received_ns": RECEIVED,
        "event_time_ns": 1554076800945000000,
        "is_buyer_maker": False,
        "stream_type": "trade",
        "first_trade_id": None,
        "last_trade_id": None,
    }


def test_trade_with_buyer_maker_is_a_sell() -> None:
    (trade,) = parse(TRADE[1]).trades
    assert (trade.trade_id, trade.price, trade.quantity) == ("60276726", "0.00219650", "6.48000000")
    assert trade.side == "sell"
    assert trade.extras["is_buyer_maker"] is True
    assert trade.ts_event_ns == 1_567_296_001_034_000_000
    assert trade.extras["event_time_ns"] == 1_567_296_001_038_000_000


def test_agg_trade_every_field() -> None:
    # "a":18938405,"p":"0.21448000","q":"2062.90000000","f":23806928,"l":23806928,"T":1617647603483,"m":false
    assert parse(AGG[1]).trades == (
        TradeRecord(
            exchange="binance",
            symbol="ZILUSDT",
            canonical_symbol="ZIL-USDT",
            trade_id="18938405",
            price="0.21448000",
            quantity="2062.90000000",
            side="buy",
            ts_event_ns=1_617_647_603_483_000_000,
            ts_received_ns=RECEIVED,
            extras={
                "event_time_ns": 1_617_647_603_484_000_000,
                "is_buyer_maker": False,
                "stream_type": "aggTrade",
                "first_trade_id": 23806928,
                "last_trade_id": 23806928,
            },
        ),
    )
    result = parse(AGG[2])
    assert result.channel == "aggTrade"
    (trade,) = result.trades
    assert (trade.trade_id, trade.side, trade.extras["is_buyer_maker"]) == ("18938406", "sell", True)
    assert (trade.extras["first_trade_id"], trade.extras["last_trade_id"]) == (23806929, 23806929)


def test_recorded_agg_trades_keep_their_ids_and_sides() -> None:
    trades = [t for frame in AGG for t in parse(frame).trades]
    assert [(t.symbol, t.trade_id, t.side) for t in trades] == [
        ("ZILUSDT", "18938405", "buy"),
        ("ZILUSDT", "18938406", "sell"),
        ("ZILUSDT", "18938407", "sell"),
        ("ZILUSDT", "18938408", "buy"),
        ("DENTUSDT", "12692423", "buy"),
        ("DENTUSDT", "12692424", "buy"),
        ("ZILUSDT", "18938409", "sell"),
    ]


def test_book_ticker_is_ignored() -> None:
    assert parse(AGG[0]) == ParseResult(kind="ignored", channel="bookTicker")


def test_acks_errors_and_shutdown() -> None:
    assert parse(CONTROL[0]) == ParseResult(kind="ack", req_id=1)
    assert parse(CONTROL[1]) == ParseResult(kind="ack", req_id=3)  # LIST_SUBSCRIPTIONS answer
    assert parse(CONTROL[2]) == ParseResult(
        kind="error", error="code 2: Invalid request: property name must be a string"
    )
    assert parse(CONTROL[3]) == ParseResult(
        kind="error", error="code 2: Invalid request: request ID must be an unsigned integer"
    )
    assert parse(CONTROL[4]) == ParseResult(kind="shutdown", channel="serverShutdown")
    assert parse(CONTROL[5]) == ParseResult(kind="shutdown", channel="serverShutdown")
    assert parse(b'{"result":null,"id":"k2-sub-7"}').req_id == "k2-sub-7"


def test_raw_stream_payload_without_envelope() -> None:
    (trade,) = binance.parse(CONTROL[6], ts_received_ns=1, canonical={"BNBBTC": "BNB-BTC"}).trades
    assert (trade.trade_id, trade.price, trade.quantity, trade.side) == ("12345", "0.001", "100", "sell")
    assert trade.ts_event_ns == 1_672_515_782_136_000_000


def test_str_frames_parse_like_bytes() -> None:
    assert parse(TRADE[0].decode()) == parse(TRADE[0])


def test_symbol_without_mapping_is_a_parse_error() -> None:
    with pytest.raises(ParseError, match="unknown symbol 'BNBBTC'"):
        binance.parse(TRADE[0], ts_received_ns=RECEIVED, canonical={})


def test_subscribe_messages() -> None:
    assert binance.subscribe(["BTCUSDT", "ETHUSDT"], channel="trade", req_id=1) == [
        '{"method":"SUBSCRIBE","params":["btcusdt@trade","ethusdt@trade"],"id":1}'
    ]
    assert binance.subscribe(["BTCUSDT"], channel="aggTrade", req_id=2) == [
        '{"method":"SUBSCRIBE","params":["btcusdt@aggTrade"],"id":2}'
    ]
    assert binance.unsubscribe(["SOLUSDT"], channel="trade", req_id=3) == [
        '{"method":"UNSUBSCRIBE","params":["solusdt@trade"],"id":3}'
    ]
    assert binance.subscribe([], channel="trade", req_id=4) == []
    with pytest.raises(ConfigError):
        binance.subscribe(["BTCUSDT"], channel="trades", req_id=5)


def test_venue_description() -> None:
    venue = VENUES["binance"]
    assert venue is binance.VENUE
    assert venue.ws_url == "wss://stream.binance.com:9443/stream"
    assert venue.trade_channels == ("trade", "aggTrade")
    assert venue.parse(TRADE[0], ts_received_ns=RECEIVED, canonical=CANONICAL) == parse(TRADE[0])
    assert venue.subscribe(["BTCUSDT"], channel="trade", req_id=9) == binance.subscribe(["BTCUSDT"], req_id=9)
    assert venue.silence_timeout_s is None
    assert venue.max_connection_age_s == 86400.0


GOOD = TRADE[0].decode()

GARBAGE = [
    b"",
    b" ",
    b"not json",
    TRADE[0][:80],  # truncated frame
    b"[1, 2, 3]",
    b"null",
    b"42",
    b'"trade"',
    b"\xff\xfe not utf8",
    b"[" * 100_000,
    b"{}",
    b'{"stream":"bnbbtc@trade"}',
    b'{"stream":"bnbbtc@trade","data":[]}',
    b'{"stream":7,"data":{}}',
    b'{"data":{"e":"trade"}}',
    b'{"id":1}',
    b'{"code":"2","msg":"x"}',
    b'{"result":null,"id":[1]}',
    GOOD.replace('"t":40756030', '"t":"40756030"').encode(),  # id as string
    GOOD.replace('"p":"0.00426990"', '"p":0.00426990').encode(),  # price as float
    GOOD.replace('"m":false', '"m":"false"').encode(),
    GOOD.replace('"m":false', '"m":0').encode(),
    GOOD.replace('"s":"BNBBTC"', '"s":null').encode(),
    GOOD.replace('"T":1554076800940,', "").encode(),  # missing trade time
    GOOD.replace('"q":"33.82000000"', '"q":"33,82"').encode(),
    GOOD.replace('"q":"33.82000000"', '"q":"NaN"').encode(),
    GOOD.replace('"q":"33.82000000"', '"q":NaN').encode(),
    GOOD.replace('"q":"33.82000000"', '"q":"1e999999999"').encode(),  # huge numbers
    GOOD.replace('"t":40756030', '"t":1e400').encode(),
    GOOD.replace('"t":40756030', '"t":99999999999999999999999').encode(),
    GOOD.replace('"t":40756030', '"t":9223372036854775808').encode(),
    GOOD.replace('"t":40756030', '"t":-1').encode(),
    GOOD.replace('"T":1554076800940', '"T":9223372036854775807').encode(),  # overflows Int64 as ns
    GOOD.replace('"s":"BNBBTC"', '"s":"BNB\\ud800"').encode(),
    GOOD.replace('"e":"trade"', '"e":"aggTrade"').encode(),  # aggTrade without a/f/l
]


@pytest.mark.parametrize("frame", GARBAGE, ids=range(len(GARBAGE)))
def test_garbage_raises_parse_error(frame: bytes) -> None:
    with pytest.raises(ParseError) as caught:
        parse(frame)
    assert caught.value.reason
    assert caught.value.retriable is False


def _parse_or_parse_error(frame: bytes | str) -> None:
    try:
        result = parse(frame)
    except ParseError:
        return
    for trade in result.trades:
        trade.to_json()  # whatever parses must also publish


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
@given(st.sampled_from(TRADE + AGG + CONTROL), st.data())
def test_any_field_replaced_by_any_json_raises_only_parse_error(frame: bytes, data: st.DataObject) -> None:
    msg = json.loads(frame)
    target = msg["data"] if "data" in msg and data.draw(st.booleans()) else msg
    target[data.draw(st.sampled_from(sorted(target)))] = data.draw(JSON)
    _parse_or_parse_error(json.dumps(msg))


@settings(database=None, max_examples=300)
@given(st.sampled_from(TRADE + AGG + CONTROL), st.data())
def test_cut_or_corrupted_frames_raise_only_parse_error(frame: bytes, data: st.DataObject) -> None:
    start = data.draw(st.integers(0, len(frame)))
    end = data.draw(st.integers(start, len(frame)))
    _parse_or_parse_error(frame[:start] + data.draw(st.binary(max_size=4)) + frame[end:])
