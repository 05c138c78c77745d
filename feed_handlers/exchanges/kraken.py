"""Kraken spot WebSocket v2: ``trade`` channel frames to TradeRecords, and the subscribe requests.

Sources: [K2] docs.kraken.com/api/docs/websocket-v2/trade; [K3] the newer spot-websocket-v2/trade page;
[K4] websocket-v2/status; [K5] websocket-v2/heartbeat; [K6] websocket-v2/ping; [K7] krakenfx/kraken-api-sdk.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import orjson

from feed_handlers.errors import ParseError
from feed_handlers.exchanges._base import ParseResult, Venue, trades_result
from feed_handlers.exchanges._wire import (
    INT64_MAX,
    JsonObject,
    as_int,
    as_object,
    ascending,
    get_decimal,
    get_int,
    get_list,
    get_rfc3339_ns,
    get_str,
    load_exact,
)
from feed_handlers.records import MAX_DECIMAL_CHARS, TradeRecord, new_trade, rfc3339_to_ns
from k2.errors import ConfigError

__all__ = ["NAME", "SNAPSHOT", "TRADE_CHANNELS", "VENUE", "WS_URL", "parse", "subscribe", "unsubscribe"]

NAME = "kraken"
WS_URL = "wss://ws.kraken.com/v2"
TRADE_CHANNELS = ("trade",)
# Ask for the last 50 trades on (re)subscribe: they refill a reconnect gap and silver drops the overlap
# by trade id. Sent explicitly every time because the documented default is contested ([K2] true, [K3][K7] false).
SNAPSHOT = True
_SIDES = ("buy", "sell")
_TRADE_TYPES = ("snapshot", "update")
# A trade's "price":<number>,"qty":<number> in plain notation, as Kraken writes them: see _trades_fast.
_PLAIN_NUMBER = rb"(-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?)"
_PRICE_QTY = re.compile(rb'"price":' + _PLAIN_NUMBER + rb',"qty":' + _PLAIN_NUMBER + rb"[,}]")


def subscribe(symbols: Sequence[str], *, channel: str = "trade", req_id: int, snapshot: bool = SNAPSHOT) -> list[str]:
    """One subscribe request for ``symbols`` ("BTC/USD"), ``snapshot`` always explicit; [] for no symbols.

    Kraken acks each symbol separately, echoing ``req_id`` [K2].
    """
    _check(channel)
    if not symbols:
        return []
    params = {"channel": channel, "symbol": list(symbols), "snapshot": snapshot}
    return [orjson.dumps({"method": "subscribe", "params": params, "req_id": req_id}).decode()]


def unsubscribe(symbols: Sequence[str], *, channel: str = "trade", req_id: int) -> list[str]:
    """One unsubscribe request (same shape, ``"method":"unsubscribe"``); [] for no symbols."""
    _check(channel)
    if not symbols:
        return []
    params = {"channel": channel, "symbol": list(symbols)}
    return [orjson.dumps({"method": "unsubscribe", "params": params, "req_id": req_id}).decode()]


def _check(channel: str) -> None:
    if channel not in TRADE_CHANNELS:
        raise ConfigError(f"kraken channel {channel!r} is not one of {', '.join(TRADE_CHANNELS)}")


def parse(frame: bytes | str, *, ts_received_ns: int, canonical: Mapping[str, str]) -> ParseResult:
    """One Kraken v2 frame. A symbol missing from ``canonical`` gets "BTC/USD" -> "BTC-USD"."""
    # v2 sends price and qty as JSON numbers, sometimes in scientific notation (5.1e-05) [K2][K7]: their
    # decimal text comes from the frame's own text (fast path) or from Decimal (load_exact), never from a float.
    result = _trades_fast(frame, ts_received_ns, canonical)
    return _parse(load_exact(frame), ts_received_ns, canonical) if result is None else result


def _parse(msg: JsonObject, ts_received_ns: int, canonical: Mapping[str, str]) -> ParseResult:
    """Any frame, every field checked by the helpers that say what was wrong."""
    if "channel" in msg:
        channel = get_str(msg, "channel")
        if channel == "trade":
            return _trades(msg, ts_received_ns, canonical)
        if channel == "heartbeat":  # about once a second when nothing else is sent [K5]
            return ParseResult(kind="heartbeat", channel=channel)
        if channel == "status":  # sent on connect and on every engine status change [K4]
            first = as_object(_first(get_list(msg, "data"), "'data'"), "status data")
            return ParseResult(kind="status", channel=channel, system=get_str(first, "system"))
        return ParseResult(kind="ignored", channel=channel)
    if "method" in msg:
        return _response(msg, get_str(msg, "method"))
    raise ParseError("unrecognized kraken frame")


def _trades_fast(frame: bytes | str, ts_received_ns: int, canonical: Mapping[str, str]) -> ParseResult | None:
    """The frame that comes many times a second: a trade update or snapshot, compact, numbers in plain notation.

    orjson reads the structure, and each price and qty comes from its own text in the frame, never from the
    float orjson made of it. Accepts exactly what the careful path accepts for such a frame and builds the
    same result; None as soon as anything differs (escapes, spaces, exponents, string numbers, a bad field),
    and the careful path then decides.
    """
    try:
        raw = frame.encode() if type(frame) is str else frame
        msg = orjson.loads(raw)
    except (UnicodeEncodeError, orjson.JSONDecodeError, TypeError):
        return None
    if not (type(raw) is bytes and type(msg) is dict and msg.get("channel") == "trade"):
        return None
    kind = msg.get("type")
    items = msg.get("data")
    # With no backslash in the frame, every '"price"' in it is literal. As many as there are trades (and as many
    # '"qty"') means each trade has its key once and nothing else has one: the n-th match is the n-th trade's.
    numbers = _PRICE_QTY.findall(raw)
    if not (
        kind in _TRADE_TYPES
        and type(items) is list
        and b"\\" not in raw
        and len(numbers) == len(items) == raw.count(b'"price"') == raw.count(b'"qty"')
    ):
        return None
    pairs = []
    for item, (price_text, qty_text) in zip(items, numbers, strict=True):
        pair = _trade_fast(item, price_text, qty_text, kind == "snapshot", ts_received_ns, canonical)
        if pair is None:
            return None
        pairs.append(pair)
    trades = (pairs[0][1],) if len(pairs) == 1 else ascending(pairs)
    return trades_result(trades, "trade")


def _trade_fast(
    item: object,
    price_text: bytes,
    qty_text: bytes,
    is_snapshot: bool,
    ts_received_ns: int,
    canonical: Mapping[str, str],
) -> tuple[int, TradeRecord] | None:
    """One element of ``data`` as ``_trade`` reads it, or None."""
    if type(item) is not dict:
        return None
    symbol = item.get("symbol")
    side = item.get("side")
    trade_id = item.get("trade_id")
    ord_type = item.get("ord_type")
    timestamp = item.get("timestamp")
    price = _exact(item.get("price"), price_text)
    quantity = _exact(item.get("qty"), qty_text)
    if not (
        type(symbol) is str
        and symbol
        and side in _SIDES
        and type(trade_id) is int
        and 0 <= trade_id <= INT64_MAX
        and type(ord_type) is str
        and ord_type
        and type(timestamp) is str
        and price is not None
        and quantity is not None
    ):
        return None
    try:
        ts_event_ns = rfc3339_to_ns(timestamp)
    except ValueError:
        return None
    if not 0 <= ts_event_ns <= INT64_MAX:
        return None
    canonical_symbol = canonical.get(symbol) or symbol.replace("/", "-").upper()  # as in _trade
    extras = {"ord_type": ord_type, "is_snapshot": is_snapshot}
    return trade_id, new_trade(NAME, symbol, canonical_symbol, str(trade_id), price, quantity, side, ts_event_ns,
                               ts_received_ns, extras)  # fmt: skip


def _exact(value: object, text: bytes) -> str | None:
    """``decimal_text`` of a JSON number: an int as it is, a float from ``text``, its plain notation in the frame."""
    if type(value) is int:
        return str(value)  # as decimal_text(int); JSON "-0" is the integer 0, so the text is not used
    if type(value) is float and len(text) <= MAX_DECIMAL_CHARS:
        return text.decode()
    return None


def _response(msg: JsonObject, method: str) -> ParseResult:
    req_id = _req_id(msg)
    if method == "pong":  # answer to {"method":"ping"} [K6]
        return ParseResult(kind="heartbeat", channel=method, req_id=req_id)
    success = msg.get("success")
    if success is False or "error" in msg:
        # A reject may lack "result" and "channel": correlate on req_id [K7].
        error = get_str(msg, "error") if "error" in msg else "request failed"
        return ParseResult(kind="error", channel=method, req_id=req_id, error=error)
    if method not in ("subscribe", "unsubscribe"):
        return ParseResult(kind="ignored", channel=method, req_id=req_id)
    if success is not True:
        raise ParseError(f"kraken {method} response without 'success'")
    result = msg.get("result")
    if result is None:
        return ParseResult(kind="ack", channel=method, req_id=req_id)
    result = as_object(result, "'result'")
    symbol = get_str(result, "symbol")
    return ParseResult(kind="ack", channel=get_str(result, "channel"), req_id=req_id, symbols=(symbol,))


def _trades(msg: JsonObject, ts_received_ns: int, canonical: Mapping[str, str]) -> ParseResult:
    kind = get_str(msg, "type")
    if kind not in _TRADE_TYPES:
        raise ParseError(f"kraken trade frame of unknown type {kind[:20]!r}")
    is_snapshot = kind == "snapshot"  # the 50 most recent trades, same schema as live ones [K2]
    # A batch may hold several trades, and nothing promises one symbol: read each element's own [K2].
    pairs = [_trade(as_object(item, "trade"), is_snapshot, ts_received_ns, canonical) for item in get_list(msg, "data")]
    return ParseResult(kind="trades", trades=ascending(pairs), channel="trade")


def _trade(
    item: JsonObject, is_snapshot: bool, ts_received_ns: int, canonical: Mapping[str, str]
) -> tuple[int, TradeRecord]:
    symbol = get_str(item, "symbol")
    side = get_str(item, "side")
    if side not in _SIDES:  # already the TAKER side [K2][K7]
        raise ParseError(f"kraken side {side[:20]!r} is not buy or sell")
    trade_id = get_int(item, "trade_id")  # integer, sequential per book [K3]
    record = TradeRecord(
        exchange=NAME,
        symbol=symbol,
        # Tokenized equities are mixed case ("AAPLx/USD"); config says how to spell them canonically.
        canonical_symbol=canonical.get(symbol) or symbol.replace("/", "-").upper(),
        trade_id=str(trade_id),
        price=get_decimal(item, "price"),  # number, or a string in some SDK paths [K7]
        quantity=get_decimal(item, "qty"),
        side=side,
        ts_event_ns=get_rfc3339_ns(item, "timestamp"),  # RFC 3339, microseconds
        ts_received_ns=ts_received_ns,
        extras={"ord_type": get_str(item, "ord_type"), "is_snapshot": is_snapshot},
    )
    return trade_id, record


def _first(items: list[object], what: str) -> object:
    if not items:
        raise ParseError(f"{what} is empty")
    return items[0]


def _req_id(msg: JsonObject) -> int | None:
    value = msg.get("req_id")
    return None if value is None else as_int(value, "'req_id'", maximum=2**64 - 1)


VENUE = Venue(
    name=NAME,
    ws_url=WS_URL,
    trade_channels=TRADE_CHANNELS,
    subscribe=subscribe,
    unsubscribe=unsubscribe,
    parse=parse,
    silence_timeout_s=10.0,  # heartbeat about every second once subscribed [K5]; 5-10 s of silence is dead
    max_messages_per_s=2.0,  # subscribe requests are rate limited per connection; no number published
    subscribe_deadline_s=None,
    max_connection_age_s=None,
    snapshot_on_subscribe=SNAPSHOT,
)
