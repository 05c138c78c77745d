"""The parsers' fast paths against their careful paths: same result or same ParseError for any frame.

Each venue's ``parse`` first tries a fast path for the common trade frame and falls back to ``_parse``, the
path that checks every field with the helpers that word the errors. These tests feed both the recorded
frames and mutations of them and require identical outcomes, and check that the fast path is really taken
for the frames it exists for.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feed_handlers.errors import ParseError
from feed_handlers.exchanges import ParseResult, binance, coinbase, kraken
from feed_handlers.exchanges._base import trades_result
from feed_handlers.exchanges._wire import load, load_exact
from feed_handlers.records import TradeRecord, decimal_text, is_plain_decimal, new_trade, rfc3339_to_ns
from tests.unit.test_records import orjson_record

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
CAPTURES = Path(__file__).resolve().parent.parent.parent / "captures"


def _lines(*paths: Path) -> list[bytes]:
    return [line for path in paths if path.exists() for line in path.read_bytes().splitlines() if line.strip()]


FRAMES = {
    "binance": _lines(*sorted((FIXTURES / "binance").glob("*.jsonl")), CAPTURES / "binance.jsonl"),
    "kraken": _lines(*sorted((FIXTURES / "kraken").glob("*.jsonl")), CAPTURES / "kraken.jsonl"),
    "coinbase": _lines(*sorted((FIXTURES / "coinbase").glob("*.jsonl")), CAPTURES / "coinbase.jsonl"),
}
CANONICAL = {
    "binance": {"BNBBTC": "BNB-BTC", "ZILUSDT": "ZIL-USDT", "DENTUSDT": "DENT-USDT", "BTCUSDT": "BTC-USDT"},
    "kraken": {"BTC/USD": "BTC-USD", "AAPLx/USD": "AAPL-USD"},
    "coinbase": {"BTC-USD": "BTC-USD", "ETH-USD": "ETH-USD"},
}
RECEIVED = 1_786_309_551_500_000_123

Outcome = tuple[object, ...]


def _outcome(parse: Callable[[], ParseResult]) -> Outcome:
    try:
        result = parse()
    except ParseError as exc:
        return ("error", exc.reason)
    # to_json tells true from 1, which == on the records does not
    return ("ok", result, tuple(trade.to_json() for trade in result.trades))


def _both(venue: str, frame: bytes | str) -> tuple[Outcome, Outcome]:
    canonical = CANONICAL[venue]
    module = {"binance": binance, "kraken": kraken, "coinbase": coinbase}[venue]
    loader = load_exact if venue == "kraken" else load
    fast = _outcome(lambda: module.parse(frame, ts_received_ns=RECEIVED, canonical=canonical))
    careful = _outcome(lambda: module._parse(loader(frame), RECEIVED, canonical))
    return fast, careful


def _fast_taken(venue: str, frame: bytes | str) -> bool:
    canonical = CANONICAL[venue]
    if venue == "binance":
        return binance._trade_fast(frame, RECEIVED, canonical) is not None
    if venue == "kraken":
        return kraken._trades_fast(frame, RECEIVED, canonical) is not None
    return coinbase._trades_fast(load(frame), RECEIVED, canonical) is not None


@pytest.mark.parametrize("venue", sorted(FRAMES))
def test_recorded_frames_parse_alike_as_bytes_and_str(venue: str) -> None:
    for frame in FRAMES[venue]:
        fast, careful = _both(venue, frame)
        assert fast == careful, frame
        assert _both(venue, frame.decode()) == (fast, careful)


@pytest.mark.parametrize("venue", sorted(FRAMES))
def test_fast_path_takes_the_recorded_trade_frames(venue: str) -> None:
    careful = {f: _both(venue, f)[1] for f in FRAMES[venue]}
    trade_frames = [f for f, (status, *result) in careful.items() if status == "ok" and result[0].kind == "trades"]  # type: ignore[attr-defined]
    if venue == "binance":  # the raw /ws payload without envelope is left to the careful path
        trade_frames = [f for f in trade_frames if b'"stream"' in f]
    if venue == "kraken":  # so are exponents ("5e-05") and string numbers
        trade_frames = [f for f in trade_frames if not re.search(rb'[0-9][eE]|"(price|qty)":"', f)]
    assert len(trade_frames) > 20
    assert [f for f in trade_frames if not _fast_taken(venue, f)] == []


@pytest.mark.parametrize("venue", sorted(FRAMES))
def test_to_json_writes_orjsons_bytes_for_every_recorded_trade(venue: str) -> None:
    records = [trade for frame in FRAMES[venue] if (outcome := _both(venue, frame)[0])[0] == "ok"
               for trade in outcome[1].trades]  # type: ignore[attr-defined]  # fmt: skip
    assert len(records) > 20
    assert [r.to_json() for r in records] == [orjson_record(r) for r in records]


@pytest.mark.parametrize(
    ("price", "qty", "expected"),
    [
        ("65083.1", "0.00426990", ("65083.1", "0.00426990")),  # trailing zero kept
        ("65083", "1", ("65083", "1")),  # JSON integers
        ("-0", "-0.0", ("0", "-0.0")),  # "-0" is the integer 0; "-0.0" a decimal
        ("65083.123456789012345678", "0.1", ("65083.123456789012345678", "0.1")),  # more than a float holds
    ],
)
def test_kraken_fast_path_keeps_the_number_text(price: str, qty: str, expected: tuple[str, str]) -> None:
    frame = (
        '{"channel":"trade","type":"update","data":[{"symbol":"BTC/USD","side":"buy","price":' + price + ',"qty":'
        + qty + ',"ord_type":"limit","trade_id":7,"timestamp":"2026-08-09T21:05:51.426861Z"}]}'
    ).encode()  # fmt: skip
    assert _fast_taken("kraken", frame)
    (trade,) = kraken.parse(frame, ts_received_ns=0, canonical={}).trades
    assert (trade.price, trade.quantity) == expected
    fast, careful = _both("kraken", frame)
    assert fast == careful


@pytest.mark.parametrize(
    "numbers",
    [
        '"qty":0.5,"price":65083.1',  # other key order
        '"price":65083.1,"qty":0.5,"price":65083.2',  # duplicate key: the last one counts
        '"price":65083.1,"qty":0.5,"x":{"price":1}',  # another "price" elsewhere
        '"price": 65083.1,"qty":0.5',  # whitespace
        '"price":6.5083e4,"qty":5e-05',  # exponents
        '"price":"65083.1","qty":"0.5"',  # strings
    ],
)
def test_kraken_frames_off_the_fast_path_still_parse_exactly(numbers: str) -> None:
    frame = (
        '{"channel":"trade","type":"update","data":[{"symbol":"BTC/USD","side":"buy",' + numbers
        + ',"ord_type":"limit","trade_id":7,"timestamp":"2026-08-09T21:05:51.426861Z"}]}'
    ).encode()  # fmt: skip
    assert not _fast_taken("kraken", frame)
    fast, careful = _both("kraken", frame)
    assert fast == careful
    assert fast[0] == "ok"


BINANCE_TRADE = '{"stream":"btcusdt@trade","data":{"e":"trade","E":1,"s":"BTCUSDT","t":5,"p":"1.0","q":"2","T":1,"m":true%s}}'


@pytest.mark.parametrize(
    ("frame", "taken", "status"),
    [
        # msgspec skips unknown fields without checking their UTF-8 or number range, which orjson rejects;
        # the Binance fast path forbids unknown fields so that such frames reach the careful path
        ((BINANCE_TRADE % ',"x":"\xff"').encode("latin-1"), False, "error"),
        ((BINANCE_TRADE % ',"x":1e999').encode(), False, "error"),
        ((BINANCE_TRADE % ',"x":123456789012345678901234567890').encode(), False, "ok"),
        ((BINANCE_TRADE % (',"x":' + "[" * 2000 + "]" * 2000)).encode(), False, "error"),
        ((BINANCE_TRADE % ',"M":"\xff"').encode("latin-1"), False, "error"),
        ((BINANCE_TRADE % ',"M":1e999').encode(), False, "error"),
        ((BINANCE_TRADE % ',"b":-1').encode(), False, "ok"),  # the careful path ignores "b" and "a"
        ((BINANCE_TRADE % ',"a":1.5').encode(), False, "ok"),
        ((BINANCE_TRADE % "").replace("BTCUSDT", "BTCUSDT\\ud800").encode(), False, "error"),  # lone surrogate
        (BINANCE_TRADE % ',"x":"\ud800"', False, "error"),  # a str that cannot be encoded as UTF-8
        ((BINANCE_TRADE % "").replace('"stream"', '"data":1,"stream"').encode(), False, "ok"),  # msgspec checks both "data"
        ((BINANCE_TRADE % ',"e":"aggTrade"').encode(), False, "error"),  # the tag twice: an aggTrade without "a"
    ],
)
def test_binance_frames_msgspec_would_read_differently_parse_alike(frame: bytes | str, taken: bool, status: str) -> None:
    assert _fast_taken("binance", frame) is taken
    fast, careful = _both("binance", frame)
    assert fast == careful
    assert fast[0] == status


def test_binance_fast_path_takes_order_ids_and_any_field_order() -> None:
    for extra in (',"b":133829535,"a":133829504,"M":true', ',"M":false', ""):
        frame = (BINANCE_TRADE % extra).encode()
        assert _fast_taken("binance", frame)
        reordered = json.dumps(dict(reversed(json.loads(frame)["data"].items())))
        frame = ('{"data":' + reordered + ',"stream":"btcusdt@trade"}').encode()
        assert _fast_taken("binance", frame)
        fast, careful = _both("binance", frame)
        assert fast == careful and fast[0] == "ok"


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=12)
    | st.sampled_from(["", "0", "-0", "0.0", "007.5", "1.", "1e5", "BUY", "buy", "trade", "aggTrade", "snapshot"])
    | st.sampled_from([-1, 2**63 - 1, 2**63, 2**64 - 1, 2**64, 9_223_372_036_854, 9_223_372_036_855]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


def _objects(msg: dict[str, object]) -> list[dict[str, object]]:
    """The frame and the objects a parser reads inside it (envelope data, events, trades)."""
    found = [msg]
    for value in (msg.get("data"), msg.get("events")):
        for inner in value if isinstance(value, list) else [value]:
            if isinstance(inner, dict):
                found.append(inner)
                trades = inner.get("trades")
                found.extend(t for t in (trades if isinstance(trades, list) else []) if isinstance(t, dict))
    return found


TRADE_FRAMES = {venue: [f for f in frames if b"trade" in f and len(f) < 2000] for venue, frames in FRAMES.items()}


@settings(database=None, max_examples=600)
@given(st.sampled_from(sorted(TRADE_FRAMES)), st.data())
def test_any_field_replaced_removed_or_added_parses_alike(venue: str, data: st.DataObject) -> None:
    msg = json.loads(data.draw(st.sampled_from(TRADE_FRAMES[venue])))
    target = data.draw(st.sampled_from(_objects(msg)))
    key = data.draw(st.sampled_from(sorted(target)) | st.sampled_from(["b", "a", "M", "x"]) | st.text(max_size=3))
    if data.draw(st.booleans()):
        target[key] = data.draw(JSON)
    else:
        target.pop(key, None)
    fast, careful = _both(venue, json.dumps(msg, separators=(",", ":")).encode())
    assert fast == careful


@settings(database=None, max_examples=600)
@given(st.sampled_from(sorted(TRADE_FRAMES)), st.data())
def test_cut_or_corrupted_frames_parse_alike(venue: str, data: st.DataObject) -> None:
    frame = data.draw(st.sampled_from(TRADE_FRAMES[venue]))
    start = data.draw(st.integers(0, len(frame)))
    end = data.draw(st.integers(start, min(len(frame), start + 8)))
    insert = data.draw(st.binary(max_size=4) | st.sampled_from([b"\\", b'"', b" ", b"-", b"0", b"e5", b"\\u0041"]))
    fast, careful = _both(venue, frame[:start] + insert + frame[end:])
    assert fast == careful


def _record(**extras: object) -> TradeRecord:
    return TradeRecord("kraken", "BTC/USD", "BTC-USD", "7", "65083.1", "0.5", "buy", 1, 2, extras)


def test_new_trade_is_a_trade_record_like_any_other() -> None:
    made = new_trade("kraken", "BTC/USD", "BTC-USD", "7", "65083.1", "0.5", "buy", 1, 2, {"is_snapshot": False})
    assert type(made) is TradeRecord
    assert made == _record(is_snapshot=False)
    assert repr(made) == repr(_record(is_snapshot=False))
    assert hash(made) == hash(_record())
    assert made.to_json() == _record(is_snapshot=False).to_json()
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.price = "1"  # type: ignore[misc]
    with pytest.raises(ValueError, match="price") as caught:
        new_trade("kraken", "BTC/USD", "BTC-USD", "7", "65083.1", "0.5", "buy", 1, 2, {"price": "1"})
    with pytest.raises(ValueError) as expected:
        _record(price="1")
    assert str(caught.value) == str(expected.value)


def test_trades_result_is_a_parse_result_like_any_other() -> None:
    trades = (_record(),)
    assert trades_result(trades, "trade") == ParseResult(kind="trades", trades=trades, channel="trade")
    made = trades_result(trades, "market_trades", 9)
    assert type(made) is ParseResult
    assert made == ParseResult(kind="trades", trades=trades, channel="market_trades", sequence_num=9)
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.kind = "ack"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("value", "plain"),
    [
        ("0", True),
        ("-0", True),
        ("0.5", True),
        ("65083.12000000", True),
        ("1" * 100, True),
        ("1" * 101, False),
        ("", False),
        ("007.5", False),
        ("1.", False),
        (".5", False),
        ("1e5", False),
        ("-", False),
        ("\u0661", False),
        (5, False),
        (None, False),
    ],
)
def test_is_plain_decimal_means_decimal_text_keeps_it_as_is(value: object, plain: bool) -> None:
    for _ in range(2):  # the second time from the cache
        assert is_plain_decimal(value) is plain
        if plain:
            assert decimal_text(value) == value  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "bad",
    [
        "2026-08-09T21:05:51.1234567890Z",
        "2026-08-09T21:05:51.Z",
        "2026-08-09T21:05:51",
        "2026-08-09T21:05:51.5",
        "2026-08-09T21:05:51.5 ",
        "2026-08-09T21:05:51.\uff15Z",
        "2026-08-09T21:05:51+24:00",
    ],
)
def test_rfc3339_cached_second_still_rejects_bad_tails(bad: str) -> None:
    assert rfc3339_to_ns("2026-08-09T21:05:51.1Z") == 1_786_309_551_100_000_000  # the second is now cached
    with pytest.raises(ValueError):
        rfc3339_to_ns(bad)


def test_rfc3339_cached_second_reads_every_tail_exactly() -> None:
    rfc3339_to_ns("2026-08-09T21:05:51Z")
    assert rfc3339_to_ns("2026-08-09T21:05:51Z") == 1_786_309_551_000_000_000
    assert rfc3339_to_ns("2026-08-09T21:05:51.5Z") == 1_786_309_551_500_000_000
    assert rfc3339_to_ns("2026-08-09T21:05:51.000000001Z") == 1_786_309_551_000_000_001
    assert rfc3339_to_ns("2026-08-09T21:05:51.123456789Z") == 1_786_309_551_123_456_789
    assert rfc3339_to_ns("2026-08-09T21:05:51.5+01:00") == 1_786_309_551_500_000_000 - 3600 * 10**9
    assert rfc3339_to_ns("2026-08-09t21:05:51.5z") == 1_786_309_551_500_000_000
    assert rfc3339_to_ns("1969-12-31T23:59:59.5Z") == rfc3339_to_ns("1969-12-31T23:59:59.5Z") == -500_000_000
