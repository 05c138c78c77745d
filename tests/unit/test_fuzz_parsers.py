"""Property-based fuzzing of every venue parser through the handler's per-frame path (issue 6).

Every input goes to ``FeedHandler.on_frame``, what the runner calls for each frame, with an in-memory sink:
mutated recorded frames (bytes and JSON values), random bytes and random JSON, frames of 1 to 5 MB and
nesting up to 100 000 deep. Whatever comes in, nothing escapes ``on_frame``, the verbatim frame goes to the
raw topic once, and the frame ends in exactly one accounted class:

trades       one frame counted as kind "trades"; each of its trades published or counted as a duplicate,
             every published value traced back to the frame (prices exact, no float anywhere)
ignored      one frame counted by its kind (heartbeat, ack, status, error, ignored, shutdown); no trade
dead letter  the verbatim frame on the dead-letter topic with a reason, counted; no trade, no frame kind

The published trades are checked against an oracle written here from the venue protocols, reading the frame
with the standard library (numbers kept as their text), not with the parsers' own helpers.
"""

from __future__ import annotations

import asyncio
import calendar
import copy
import json
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from feed_handlers.handler import FeedHandler, HandlerOptions
from feed_handlers.instruments import ExchangeConfig, Instrument, topic_names
from feed_handlers.publisher import Message, Publisher
from tests.unit.test_handler import RecordingSink
from tests.unit.test_runner import FakeTransport

TESTS = Path(__file__).resolve().parent.parent
RECEIVED = 1_786_309_551_500_000_123
INT64_MAX = 2**63 - 1
VENUES = ("binance", "kraken", "coinbase")
CHANNEL = {"binance": "trade", "kraken": "trade", "coinbase": "market_trades"}
CANONICAL = {
    "binance": {
        "BNBBTC": "BNB-BTC",
        "ZILUSDT": "ZIL-USDT",
        "DENTUSDT": "DENT-USDT",
        "MANAUSDT": "MANA-USDT",
        "BTCSTUSDT": "BTCST-USDT",
        "ETHBRL": "ETH-BRL",
        "QTUMETH": "QTUM-ETH",
    },
    "kraken": {"BTC/USD": "BTC-USD", "ETH/USD": "ETH-USD", "AAPLx/USD": "AAPL-USD"},
    "coinbase": {"BTC-USD": "BTC-USD", "ETH-USD": "ETH-USD"},
}


def _config(venue: str) -> ExchangeConfig:
    symbols = tuple(Instrument(symbol=s, canonical=c) for s, c in CANONICAL[venue].items())
    return ExchangeConfig(ws_url="ws://127.0.0.1:1", channel=CHANNEL[venue], partitions=1, symbols=symbols)


CONFIG = {venue: _config(venue) for venue in VENUES}


def _recorded(venue: str) -> list[bytes]:
    paths = [*sorted((TESTS / "fixtures" / venue).glob("*.jsonl")), TESTS.parent / "captures" / f"{venue}.jsonl"]
    return [line for path in paths for line in path.read_bytes().splitlines() if line.strip()]


RECORDED = {venue: _recorded(venue) for venue in VENUES}
# The recorded frames that carry trades: the seeds of the value-preserving mutations.
TRADE_SEEDS = {
    "binance": [f for f in RECORDED["binance"] if b'"e":"trade"' in f or b'"e":"aggTrade"' in f],
    "kraken": [f for f in RECORDED["kraken"] if b'"channel":"trade"' in f],
    "coinbase": [f for f in RECORDED["coinbase"] if b'"channel":"market_trades"' in f],
}


# -- one frame through the handler -------------------------------------------------------------------------


@dataclass(frozen=True)
class Handled:
    raw: bytes  # what the handler must keep verbatim
    shutdown: bool  # on_frame's return value
    messages: list[Message]
    frames: dict[str, int]  # frames counted by kind
    duplicates: int
    dead_letters: float  # metric increments
    parse_errors: float


def _metric(name: str, venue: str) -> float:
    return REGISTRY.get_sample_value(name, {"exchange": venue}) or 0.0


async def _feed(venue: str, frame: bytes | str) -> Handled:
    sink = RecordingSink()
    publisher = Publisher(sink, venue)
    handler = FeedHandler(venue, CONFIG[venue], publisher, FakeTransport(), options=HandlerOptions())
    dead, errors = _metric("k2_feed_dead_letters_total", venue), _metric("k2_feed_parse_errors_total", venue)
    await publisher.start()
    try:
        shutdown = await handler.on_frame(frame, RECEIVED, 1)
        assert await publisher.flush(5.0)
    finally:
        await publisher.stop()
    return Handled(
        raw=frame.encode() if isinstance(frame, str) else frame,
        shutdown=shutdown,
        messages=sink.messages,
        frames=dict(handler.stats.frames),
        duplicates=sum(handler.stats.duplicates.values()),
        dead_letters=_metric("k2_feed_dead_letters_total", venue) - dead,
        parse_errors=_metric("k2_feed_parse_errors_total", venue) - errors,
    )


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.Runner]:
    """One event loop for the module: a new one per example would cost more than the example."""
    with asyncio.Runner() as runner:
        yield runner


def check_frame(loop: asyncio.Runner, venue: str, frame: bytes | str) -> str:
    """Feed ``frame`` to a fresh handler, assert it is accounted for exactly once, return its class."""
    handled = loop.run(_feed(venue, frame))
    topic, raw_topic, dlq_topic = topic_names(venue)
    by_topic: dict[str, list[Message]] = {topic: [], raw_topic: [], dlq_topic: []}
    for message in handled.messages:
        by_topic[message.topic].append(message)  # KeyError: a topic nobody reads
    raws, dlq, trades = by_topic[raw_topic], by_topic[dlq_topic], by_topic[topic]
    assert [(m.value, list(m.headers)) for m in raws] == [(handled.raw, [("ts_received_ns", str(RECEIVED).encode())])]
    if dlq:
        (dead,) = dlq
        assert dead.value == handled.raw
        headers = dict(dead.headers)
        assert headers["reason"] and headers["ts_received_ns"] == str(RECEIVED).encode()
        assert (trades, handled.frames, handled.shutdown) == ([], {}, False)
        assert handled.dead_letters == handled.parse_errors == 1
        return "dead letter"
    assert handled.dead_letters == handled.parse_errors == 0
    ((kind, count),) = handled.frames.items()
    assert count == 1
    assert handled.shutdown is (kind == "shutdown")
    if kind != "trades":
        assert kind in ("heartbeat", "ack", "status", "error", "ignored", "shutdown")
        assert (trades, handled.duplicates) == ([], 0)
        return "ignored"
    _check_trades(venue, handled.raw, [m.value for m in trades], handled.duplicates)
    return "trades"


def check(loop: asyncio.Runner, venue: str, frame: bytes | str) -> str:
    outcome = check_frame(loop, venue, frame)
    event(f"{venue}: {outcome}")
    return outcome


# -- the oracle: what a trade frame says, read with the standard library -----------------------------------


class Num(str):
    """A JSON number token as it is written in the frame."""


def _reject_constant(name: str) -> Any:
    raise ValueError(name)


def _no_float(text: str) -> Any:
    raise AssertionError(f"a float in a published trade: {text}")


_PLAIN = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?")
_NUMBER = re.compile(r"-?[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_INT = re.compile(r"-?[0-9]+")
_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{1,9}))?(?:[Zz]|([+-])([0-9]{2}):([0-9]{2}))"
)


def _int(value: object) -> int:
    if not (isinstance(value, Num) and _INT.fullmatch(value)):
        raise ValueError(f"not a JSON integer: {value!r}")
    return int(value)


def _str(value: object, *options: str) -> str:
    """A JSON string (not a number token), one of ``options`` when given."""
    if not isinstance(value, str) or isinstance(value, Num) or (options and value not in options):
        raise ValueError(f"not the JSON string expected: {value!r}")
    return value


def _bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"not a JSON boolean: {value!r}")
    return value


def _ns(text: object) -> int:
    match = _RFC3339.fullmatch(_str(text))
    if match is None:
        raise ValueError(f"not a timestamp: {text!r}")
    year, month, day, hour, minute, second, fraction, sign, off_h, off_m = match.groups()
    seconds = calendar.timegm((int(year), int(month), int(day), int(hour), int(minute), int(second), 0, 0, 0))
    if sign:
        seconds -= (1 if sign == "+" else -1) * (int(off_h) * 3600 + int(off_m) * 60)
    return seconds * 10**9 + int((fraction or "").ljust(9, "0"))


def _same_number(published: object, source: object) -> bool:
    """``published`` is the plain decimal text of ``source`` (a JSON number token or a string of one)."""
    if not (isinstance(published, str) and _PLAIN.fullmatch(published) and isinstance(source, str)):
        return False
    if not _NUMBER.fullmatch(source):
        return False
    if isinstance(source, Num) and _INT.fullmatch(source):
        return published == str(int(source))  # a JSON integer ("-0" is 0)
    if _PLAIN.fullmatch(source):
        return published == source  # kept exactly as sent, trailing zeros included
    return Decimal(published) == Decimal(source)


Expected = tuple[dict[str, object], object, object]  # (fields except price and quantity, price, quantity)


def _binance(msg: dict[str, Any]) -> list[Expected]:
    data = msg["data"] if "stream" in msg or "data" in msg else msg
    event_type = _str(data["e"], "trade", "aggTrade")
    agg, symbol = event_type == "aggTrade", _str(data["s"])
    fields: dict[str, object] = {
        "exchange": "binance", "symbol": symbol, "canonical_symbol": CANONICAL["binance"][symbol],
        "trade_id": str(_int(data["a" if agg else "t"])), "side": "sell" if _bool(data["m"]) else "buy",
        "ts_event_ns": _int(data["T"]) * 10**6, "ts_received_ns": RECEIVED,
        "event_time_ns": _int(data["E"]) * 10**6, "is_buyer_maker": data["m"], "stream_type": event_type,
        "first_trade_id": _int(data["f"]) if agg else None, "last_trade_id": _int(data["l"]) if agg else None,
    }  # fmt: skip
    return [(fields, data["p"], data["q"])]


def _kraken(msg: dict[str, Any]) -> list[Expected]:
    expected: list[Expected] = []
    _str(msg["channel"], "trade")
    is_snapshot = _str(msg["type"], "snapshot", "update") == "snapshot"
    for item in msg["data"]:
        symbol = _str(item["symbol"])
        fields: dict[str, object] = {
            "exchange": "kraken", "symbol": symbol,
            "canonical_symbol": CANONICAL["kraken"].get(symbol) or symbol.replace("/", "-").upper(),
            "trade_id": str(_int(item["trade_id"])), "side": _str(item["side"], "buy", "sell"),
            "ts_event_ns": _ns(item["timestamp"]), "ts_received_ns": RECEIVED, "ord_type": _str(item["ord_type"]),
            "is_snapshot": is_snapshot,
        }  # fmt: skip
        expected.append((fields, item["price"], item["qty"]))
    return expected


def _coinbase(msg: dict[str, Any]) -> list[Expected]:
    expected: list[Expected] = []
    _str(msg["channel"], "market_trades")
    for event_ in msg["events"]:
        is_snapshot = _str(event_["type"], "snapshot", "update") == "snapshot"
        for trade in event_["trades"]:
            product, maker_side = _str(trade["product_id"]), _str(trade["side"], "BUY", "SELL")
            fields: dict[str, object] = {
                "exchange": "coinbase", "symbol": product, "canonical_symbol": CANONICAL["coinbase"].get(product, product),
                "trade_id": _str(trade["trade_id"]), "side": "sell" if maker_side == "BUY" else "buy",  # the maker's given
                "ts_event_ns": _ns(trade["time"]), "ts_received_ns": RECEIVED,
                "sequence_num": _int(msg["sequence_num"]), "maker_side": maker_side, "is_snapshot": is_snapshot,
            }  # fmt: skip
            expected.append((fields, trade["price"], trade["size"]))
    return expected


ORACLE: dict[str, Callable[[dict[str, Any]], list[Expected]]] = {
    "binance": _binance,
    "kraken": _kraken,
    "coinbase": _coinbase,
}


def _check_trades(venue: str, raw: bytes, published: list[bytes], duplicates: int) -> None:
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(limit + 2000)  # the standard library reads an unknown key 1 000 levels deep too
    try:
        msg = json.loads(raw.decode(), parse_float=Num, parse_int=Num, parse_constant=_reject_constant)
    finally:
        sys.setrecursionlimit(limit)
    expected = ORACLE[venue](msg)
    assert len(published) + duplicates == len(expected)
    by_id: dict[tuple[object, object], list[Expected]] = {}
    for want in expected:
        by_id.setdefault((want[0]["symbol"], want[0]["trade_id"]), []).append(want)
    for value in published:
        trade = json.loads(value, parse_float=_no_float)
        fields = {k: v for k, v in trade.items() if k not in ("price", "quantity")}
        candidates = by_id.get((trade["symbol"], trade["trade_id"]), [])
        assert any(
            fields == want and _same_number(trade["price"], price) and _same_number(trade["quantity"], qty)
            for want, price, qty in candidates
        ), (trade, candidates)
        assert trade["trade_id"].isascii() and trade["trade_id"].isdigit()
        assert 0 <= trade["ts_event_ns"] <= INT64_MAX


# -- inputs ------------------------------------------------------------------------------------------------


def dump(value: object) -> str:
    """Compact JSON like the venues send; a Num is written as its own token (valid or not)."""
    if isinstance(value, Num):
        return str.__str__(value)
    if isinstance(value, str):
        try:
            value.encode()
        except UnicodeEncodeError:  # a lone surrogate: as a \u escape
            return json.dumps(value)
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, dict):
        return "{" + ",".join(f"{dump(k)}:{dump(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(dump(v) for v in value) + "]"
    return json.dumps(value)  # None, bool, int


def read(frame: bytes) -> Any:
    return json.loads(frame, parse_float=Num, parse_int=Num)


# Decimal texts, valid and not: as JSON number tokens (Num) and as strings.
NUMBER_TEXTS = [
    "0", "-0", "-0.0", "1", "-1", "0.00000001", "65083.123456789012345678", "1e5", "1E+5", "5.1e-05", "1e-7",
    "007.5", "9223372036854775807", "9223372036854775808", "18446744073709551615", "18446744073709551616",
    "1" + "0" * 99, "1" + "0" * 100, "0." + "0" * 97 + "1", "0." + "0" * 98 + "1", "1e400", "-1e-400",
    "1e999999999", "1e-999999999", "1E+999999999999999999999",
]  # fmt: skip
BAD_NUMBER_TEXTS = ["NaN", "Infinity", "-Infinity", "nan", "inf", "sNaN", "1.", ".5", "+1", "0x10", "1e", "--1", "1_000",
                    " 1", "1 ", "", "\u0661\u0662", "1\u00a0", "\uff11"]  # fmt: skip
number_texts = (
    st.sampled_from(NUMBER_TEXTS)
    | st.just(5000).map(lambda n: "1" * n)
    | st.from_regex(r"-?[0-9]{1,30}(\.[0-9]{1,30})?([eE][+-]?[0-9]{1,4})?", fullmatch=True)
)
numbers = (
    number_texts.map(Num)
    | number_texts
    | st.sampled_from(BAD_NUMBER_TEXTS)
    | st.sampled_from(BAD_NUMBER_TEXTS[:10]).map(Num)  # tokens that make the frame invalid JSON
)
# Values every venue gives meaning to, and the edges of the types they must have.
VOCABULARY = [
    "trade", "aggTrade", "serverShutdown", "!serverShutdown", "bnbbtc@trade", "snapshot", "update", "BUY", "SELL",
    "buy", "sell", "limit", "market_trades", "heartbeats", "subscriptions", "heartbeat", "status", "subscribe",
    "unsubscribe", "pong", "error", "BNBBTC", "BTC/USD", "AAPLx/USD", "BTC-USD", "bnbbtc", "\ud800", "\u00e9",
    "2026-08-09T21:05:51.426861Z", "2026-13-09T21:05:51Z", "0000-01-01T00:00:00Z", "9999-12-31T23:59:59.999999999Z",
    "1969-12-31T23:59:59Z", "2026-08-09T21:05:51.1234567890Z", "2026-08-09T21:05:51+23:59", "2026-02-30T00:00:00Z",
    "2026-08-09T21:05:60Z", "2262-04-11T23:47:16.854775808Z", "2026-08-09 21:05:51Z",
]  # fmt: skip
leaves = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.sampled_from([-1, 0, INT64_MAX, INT64_MAX + 1, 2**64 - 1, 2**64, 9_223_372_036_854, 9_223_372_036_855])
    | st.text(max_size=12)
    | st.sampled_from(VOCABULARY)
    | numbers
)
json_values = st.recursive(
    leaves, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)  # fmt: skip
KEYS = {
    "binance": ["stream", "data", "e", "E", "s", "t", "a", "f", "l", "p", "q", "T", "m", "M", "result", "id", "code",
                "msg", "error"],
    "kraken": ["channel", "type", "data", "symbol", "side", "price", "qty", "ord_type", "trade_id", "timestamp",
               "method", "req_id", "success", "result", "error", "system"],
    "coinbase": ["channel", "type", "sequence_num", "events", "trades", "product_id", "trade_id", "price", "size",
                 "time", "side", "heartbeat_counter", "subscriptions", "market_trades", "message", "reason"],
}  # fmt: skip


def _slots(value: object, out: list[tuple[Any, Any]]) -> list[tuple[Any, Any]]:
    """Every (container, key or index) in a JSON value, depth first."""
    if isinstance(value, dict):
        for key, item in value.items():
            out.append((value, key))
            _slots(item, out)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            out.append((value, i))
            _slots(item, out)
    return out


def mutate_json(msg: dict[str, Any], data: st.DataObject, venue: str) -> None:
    """One structural mutation: drop a key, replace a value by another JSON type or a number variant,
    add a key, duplicate or empty a container."""
    slots = _slots(msg, [])
    op = data.draw(st.sampled_from(["delete", "replace", "number", "add", "duplicate", "empty"]), label="op")
    if op == "add":
        objects = [msg, *(c[k] for c, k in slots if isinstance(c[k], dict))]
        target = data.draw(st.sampled_from(objects))
        target[data.draw(st.sampled_from(KEYS[venue]) | st.text(max_size=4))] = data.draw(json_values)
        return
    if op == "duplicate":
        lists = [c[k] for c, k in slots if isinstance(c[k], list) and c[k]]
        if lists:
            target = data.draw(st.sampled_from(lists))
            target.insert(data.draw(st.integers(0, len(target))), copy.deepcopy(data.draw(st.sampled_from(target))))
        return
    if not slots:
        return
    container, key = data.draw(st.sampled_from(slots), label="slot")
    if op == "delete":
        del container[key]
    elif op == "replace":
        container[key] = data.draw(json_values)
    elif op == "number":
        container[key] = data.draw(numbers)
    else:
        container[key] = data.draw(st.sampled_from([[], {}, "", None]))


def trades_in(venue: str, msg: dict[str, Any]) -> list[dict[str, Any]]:
    """The trade objects of a recorded trade frame."""
    if venue == "binance":
        return [msg.get("data", msg)]
    return msg["data"] if venue == "kraken" else [t for e in msg["events"] for t in e["trades"]]


def as_text_sometimes(frame: bytes, data: st.DataObject) -> bytes | str:
    """A text WebSocket frame arrives as str (valid UTF-8 by the protocol), a binary one as bytes."""
    if data.draw(st.booleans(), label="as str"):
        try:
            return frame.decode()
        except UnicodeDecodeError:
            pass
    return frame


def fuzz(examples: int) -> settings:
    """Reproducible in CI: derandomized, no example database; no deadline (some frames are megabytes)."""
    return settings(database=None, derandomize=True, deadline=None, max_examples=examples)


venues = st.sampled_from(VENUES)


# -- the properties -----------------------------------------------------------------------------------------


def test_every_recorded_frame_is_accounted_for(loop: asyncio.Runner) -> None:
    for venue in VENUES:
        outcomes = {check_frame(loop, venue, frame) for frame in RECORDED[venue]}
        assert outcomes == {"trades", "ignored"}  # real frames are never dead letters


@fuzz(450)
@given(venues, st.data())
def test_json_mutations_of_recorded_frames(loop: asyncio.Runner, venue: str, data: st.DataObject) -> None:
    seeds = st.sampled_from(TRADE_SEEDS[venue]) | st.sampled_from(RECORDED[venue])
    msg = read(data.draw(seeds, label="seed"))
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        mutate_json(msg, data, venue)
    frame = dump(msg).encode(errors="surrogatepass")  # a raw surrogate is invalid UTF-8: a bad frame too
    check(loop, venue, as_text_sometimes(frame, data))


@fuzz(300)
@given(venues, st.data())
def test_byte_mutations_of_recorded_frames(loop: asyncio.Runner, venue: str, data: st.DataObject) -> None:
    frame = bytearray(data.draw(st.sampled_from(RECORDED[venue]), label="seed"))
    for _ in range(data.draw(st.integers(1, 4), label="mutations")):
        start = data.draw(st.integers(0, len(frame)))
        op = data.draw(st.sampled_from(["flip", "delete", "insert", "repeat"]))
        if op == "flip" and start < len(frame):
            frame[start] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "delete":
            del frame[start : start + data.draw(st.integers(1, 16))]
        elif op == "insert":
            insert = st.binary(min_size=1, max_size=6) | st.sampled_from([b"\\", b'"', b" ", b"-", b"0", b"e5", b"\\u0041",
                                                                          b"\\ud800", b",", b"}", b"]", b"\xc3", b"\x00"])  # fmt: skip
            frame[start:start] = data.draw(insert)
        else:
            frame[start:start] = frame[start : start + data.draw(st.integers(1, 64))]
    check(loop, venue, as_text_sometimes(bytes(frame), data))


@fuzz(250)
@given(venues, st.binary(max_size=600) | st.text(max_size=200).map(lambda s: s.encode(errors="surrogatepass")))
def test_random_bytes(loop: asyncio.Runner, venue: str, frame: bytes) -> None:
    assert check(loop, venue, frame) == "dead letter" or frame.lstrip()[:1] == b"{"


def vocabulary_json(venue: str) -> st.SearchStrategy[dict[str, Any]]:
    """Objects three levels deep keyed by the venue's own field names: envelopes, events, trades."""
    keys = st.sampled_from(KEYS[venue])
    trade = st.dictionaries(keys, leaves, max_size=10)
    event = st.dictionaries(keys, leaves | trade | st.lists(trade, max_size=3), max_size=6)
    return st.dictionaries(keys, leaves | event | st.lists(event, max_size=2), max_size=6)


VOCABULARY_JSON = {venue: vocabulary_json(venue) for venue in VENUES}


@fuzz(300)
@given(venues, st.data())
def test_random_json_in_the_venues_vocabulary(loop: asyncio.Runner, venue: str, data: st.DataObject) -> None:
    check(loop, venue, dump(data.draw(VOCABULARY_JSON[venue])).encode(errors="surrogatepass"))


# Replacements that keep a trade valid: the published price and quantity must be their exact decimal text.
valid_decimals = st.from_regex(r"-?(0|[1-9][0-9]{0,20})(\.[0-9]{1,20})?([eE][+-]?0?[0-9])?", fullmatch=True)


@fuzz(300)
@given(venues, st.data())
def test_valid_price_and_quantity_variants_publish_their_exact_value(
    loop: asyncio.Runner, venue: str, data: st.DataObject
) -> None:
    msg = read(data.draw(st.sampled_from(TRADE_SEEDS[venue]), label="seed"))
    trades = trades_in(venue, msg)
    keys = {"binance": ("p", "q"), "kraken": ("price", "qty"), "coinbase": ("price", "size")}[venue]
    target = data.draw(st.sampled_from(trades))
    as_number = venue == "kraken" and data.draw(st.booleans())  # Kraken sends JSON numbers, sometimes strings
    for key in keys:
        text = data.draw(valid_decimals, label=key)
        target[key] = Num(text) if as_number else text
    assert check(loop, venue, dump(msg).encode()) == "trades"  # _check_trades traced every value to the frame


HUGE_SHAPES = ("padding", "many trades", "long number", "garbage", "open brackets", "long string")


def _huge(venue: str, shape: str) -> bytes:
    """A frame of 5 MB (1 MB of trades: 7 000 of them, each checked against the frame)."""
    size = 1 << 20 if shape == "many trades" else 5 << 20
    seed = TRADE_SEEDS[venue][0]
    msg = read(seed)
    if shape == "padding":  # a valid frame with a multi-megabyte extra field
        trades_in(venue, msg)[0]["padding"] = "x" * size
        return dump(msg).encode()
    if shape == "many trades" and venue != "binance":  # a valid frame of thousands of trades
        trades = msg["data"] if venue == "kraken" else msg["events"][0]["trades"]
        first = trades[0]
        for i in range(1, size // (len(dump(first)) + 1)):
            trade_id = str(int(first["trade_id"]) + i)
            trades.append({**first, "trade_id": Num(trade_id) if venue == "kraken" else trade_id})
        return dump(msg).encode()
    if shape == "long number":  # a price of megabytes of digits
        needle = {"binance": b'"p":"', "kraken": b'"price":', "coinbase": b'"price":"'}[venue]
        return seed.replace(needle, needle + b"1" * size, 1)
    return {"garbage": b"\xff" * size, "open brackets": b"[" * size, "long string": b'"' + b"a" * size + b'"',
            "many trades": b"[" + b"{}," * (size // 3) + b"{}]"}[shape]  # fmt: skip  # Binance: one trade a frame


@pytest.mark.parametrize("shape", HUGE_SHAPES)
@pytest.mark.parametrize("venue", VENUES)
def test_huge_frames(loop: asyncio.Runner, venue: str, shape: str) -> None:
    outcome = check_frame(loop, venue, _huge(venue, shape))
    assert outcome == (
        "trades" if shape == "padding" or (shape == "many trades" and venue != "binance") else "dead letter"
    )


DEPTHS = st.sampled_from([500, 1022, 1023, 1024, 1025, 10_000, 100_000])


@fuzz(60)
@given(venues, st.data())
def test_deeply_nested_frames(loop: asyncio.Runner, venue: str, data: st.DataObject) -> None:
    depth = data.draw(DEPTHS, label="depth")
    opener, closer = data.draw(st.sampled_from([("[", "]"), ('{"a":', "}"), ('{"data":', "}"), ('{"events":[', "]}")]))
    closed = data.draw(st.booleans(), label="closed")
    nested = opener * depth + "1" + (closer * depth if closed else "")
    where = data.draw(st.sampled_from(["whole frame", "a value", "an extra key"]))
    if where == "whole frame":
        frame = nested
    else:
        msg = read(data.draw(st.sampled_from(TRADE_SEEDS[venue][:20])))
        slots = _slots(msg, [])
        if where == "a value":
            container, key = data.draw(st.sampled_from(slots))
            container[key] = Num("\0")  # placeholder token, replaced below
        else:
            msg["deep"] = Num("\0")
        frame = dump(msg).replace("\0", nested, 1)
    outcome = check(loop, venue, frame.encode())
    if closed and where == "an extra key" and depth <= 500:
        assert outcome == "trades"  # within orjson's 1024 levels an unknown deep key changes nothing
