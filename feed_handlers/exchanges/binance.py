"""Binance spot: combined-stream ``@trade``/``@aggTrade`` frames to TradeRecords, and the live SUBSCRIBE requests.

Sources: [B1] binance-spot-api-docs ``web-socket-streams.md``; [B2] its ``CHANGELOG.md``.
Times are the default milliseconds: the URL must not ask for ``timeUnit=MICROSECOND``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated

import msgspec
import orjson

from feed_handlers.errors import ParseError
from feed_handlers.exchanges._base import ParseResult, Venue, trades_result
from feed_handlers.exchanges._wire import (
    INT64_MAX,
    MAX_MS,
    NS_PER_MS,
    JsonObject,
    as_str,
    get_bool,
    get_decimal,
    get_int,
    get_ms_as_ns,
    get_object,
    get_str,
    load,
)
from feed_handlers.records import TradeRecord, is_plain_decimal, new_trade
from k2.errors import ConfigError

__all__ = ["NAME", "TRADE_CHANNELS", "VENUE", "WS_URL", "parse", "subscribe", "unsubscribe"]

NAME = "binance"
# The combined endpoint: every event arrives as {"stream": ..., "data": ...}; streams are added by SUBSCRIBE [B1].
WS_URL = "wss://stream.binance.com:9443/stream"
TRADE_CHANNELS = ("trade", "aggTrade")


def subscribe(symbols: Sequence[str], *, channel: str = "trade", req_id: int) -> list[str]:
    """One ``SUBSCRIBE`` request for ``<symbol lower case>@<channel>`` streams [B1]; [] for no symbols.

    The ack ``{"result":null,"id":req_id}`` may arrive after the first data frames [B1].
    """
    return _request("SUBSCRIBE", symbols, channel, req_id)


def unsubscribe(symbols: Sequence[str], *, channel: str = "trade", req_id: int) -> list[str]:
    """One ``UNSUBSCRIBE`` request for the same stream names; [] for no symbols."""
    return _request("UNSUBSCRIBE", symbols, channel, req_id)


def _request(method: str, symbols: Sequence[str], channel: str, req_id: int) -> list[str]:
    if channel not in TRADE_CHANNELS:
        raise ConfigError(f"binance channel {channel!r} is not one of {', '.join(TRADE_CHANNELS)}")
    if not symbols:
        return []
    # Stream names are lower case; the payload's "s" is upper case [B1].
    streams = [f"{symbol.lower()}@{channel}" for symbol in symbols]
    return [orjson.dumps({"method": method, "params": streams, "id": req_id}).decode()]


def parse(frame: bytes | str, *, ts_received_ns: int, canonical: Mapping[str, str]) -> ParseResult:
    """One Binance frame. Trades need their symbol in ``canonical`` (Binance symbols carry no separator)."""
    result = _trade_fast(frame, ts_received_ns, canonical)
    return _parse(load(frame), ts_received_ns, canonical) if result is None else result


# The fast path's schema: the envelope and the two trade events field for field, nothing else. msgspec decodes
# and type-checks in one pass what orjson.loads plus a dozen type tests did in two (docs/feed_handlers.md).
# Unknown fields are forbidden, so no part of the frame is skipped unread: msgspec does not check UTF-8 or
# number ranges in values it skips, and orjson (the careful path) rejects both.
_Id = Annotated[int, msgspec.Meta(ge=0, le=INT64_MAX)]
_Ms = Annotated[int, msgspec.Meta(ge=0, le=MAX_MS)]


class _Event(msgspec.Struct, tag_field="e", forbid_unknown_fields=True, gc=False, kw_only=True):
    """What ``trade`` and ``aggTrade`` share [B1]."""

    event_ms: _Ms = msgspec.field(name="E")
    symbol: str = msgspec.field(name="s")
    price: str = msgspec.field(name="p")
    quantity: str = msgspec.field(name="q")
    trade_ms: _Ms = msgspec.field(name="T")
    buyer_is_maker: bool = msgspec.field(name="m")
    ignore: bool = msgspec.field(name="M", default=True)  # "ignore" [B1]


class _Trade(_Event, tag="trade", kw_only=True):
    trade_id: _Id = msgspec.field(name="t")
    # the buyer's and seller's order ids, sent until 2024-06-18 [B2]: recorded captures still have them
    buyer_order_id: _Id | None = msgspec.field(name="b", default=None)
    seller_order_id: _Id | None = msgspec.field(name="a", default=None)


class _AggTrade(_Event, tag="aggTrade", kw_only=True):
    trade_id: _Id = msgspec.field(name="a")
    first_trade_id: _Id = msgspec.field(name="f")
    last_trade_id: _Id = msgspec.field(name="l")


class _Envelope(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    stream: str
    data: _Trade | _AggTrade


_decode_envelope = msgspec.json.Decoder(_Envelope).decode


def _trade_fast(frame: bytes | str, ts_received_ns: int, canonical: Mapping[str, str]) -> ParseResult | None:
    """The frame that comes thousands of times a second: one well-formed trade or aggTrade in its envelope.

    Accepts exactly what ``_parse`` accepts for it and builds the same result. None as soon as anything
    differs (another event, an unknown field, a wrong type, invalid JSON): ``_parse`` then decides.
    """
    try:
        envelope = _decode_envelope(frame)
    except (msgspec.DecodeError, UnicodeEncodeError):  # ValidationError is a DecodeError; str with lone surrogates
        return None
    data, price, quantity = envelope.data, envelope.data.price, envelope.data.quantity
    if not (
        envelope.stream
        and data.symbol
        and (canonical_symbol := canonical.get(data.symbol)) is not None
        and is_plain_decimal(price)
        and is_plain_decimal(quantity)
    ):
        return None
    first_trade_id: int | None = None
    last_trade_id: int | None = None
    if type(data) is _AggTrade:
        event, first_trade_id, last_trade_id = "aggTrade", data.first_trade_id, data.last_trade_id
    else:
        event = "trade"
    buyer_is_maker = data.buyer_is_maker
    extras = {
        "event_time_ns": data.event_ms * NS_PER_MS,
        "is_buyer_maker": buyer_is_maker,
        "stream_type": event,
        "first_trade_id": first_trade_id,
        "last_trade_id": last_trade_id,
    }
    side = "sell" if buyer_is_maker else "buy"  # as in _trade
    trade = new_trade(NAME, data.symbol, canonical_symbol, str(data.trade_id), price, quantity, side,
                      data.trade_ms * NS_PER_MS, ts_received_ns, extras)  # fmt: skip
    return trades_result((trade,), event)


def _parse(msg: JsonObject, ts_received_ns: int, canonical: Mapping[str, str]) -> ParseResult:
    """Any frame, every field checked by the helpers that say what was wrong."""
    if "stream" in msg or "data" in msg:
        stream = get_str(msg, "stream")
        return _event(get_object(msg, "data"), stream, ts_received_ns, canonical)
    if "e" in msg:  # raw stream (/ws endpoint): the payload without envelope
        return _event(msg, None, ts_received_ns, canonical)
    if "result" in msg and "id" in msg:
        # {"result":null,"id":1} acks (UN)SUBSCRIBE; LIST_SUBSCRIPTIONS answers with a list [B1].
        return ParseResult(kind="ack", req_id=_req_id(msg))
    if "code" in msg:  # {"code":2,"msg":"Invalid request: ..."} [B1]
        return ParseResult(kind="error", error=_error_text(msg), req_id=_req_id(msg))
    if "error" in msg:  # {"error":{"code":..,"msg":..},"id":..}, as newer servers answer
        return ParseResult(kind="error", error=_error_text(get_object(msg, "error")), req_id=_req_id(msg))
    raise ParseError("unrecognized binance frame")


def _event(payload: JsonObject, stream: str | None, ts_received_ns: int, canonical: Mapping[str, str]) -> ParseResult:
    event = payload.get("e")
    if isinstance(event, str) and event in TRADE_CHANNELS:
        trade = _trade(payload, event, ts_received_ns, canonical)
        return ParseResult(kind="trades", trades=(trade,), channel=event)
    # Maintenance notice, {"e":"serverShutdown","E":...}: reconnect at once [B1][B2].
    if event == "serverShutdown" or stream == "!serverShutdown":
        return ParseResult(kind="shutdown", channel="serverShutdown")
    if event is not None:
        return ParseResult(kind="ignored", channel=as_str(event, "'e'"))
    if stream is None:
        raise ParseError("binance event without 'e'")
    # bookTicker and a few other streams carry no "e": name them by the stream suffix.
    return ParseResult(kind="ignored", channel=stream.rpartition("@")[2])


def _trade(payload: JsonObject, event: str, ts_received_ns: int, canonical: Mapping[str, str]) -> TradeRecord:
    symbol = get_str(payload, "s")
    canonical_symbol = canonical.get(symbol)
    if canonical_symbol is None:  # "BTCUSDT" cannot be split into base and quote without config
        raise ParseError(f"unknown symbol {symbol!r}")
    if event == "aggTrade":
        # aggTrade: "a" is the aggregate id, "f"/"l" the first/last raw trade ids it groups [B1].
        trade_id = get_int(payload, "a")
        first_trade_id: int | None = get_int(payload, "f")
        last_trade_id: int | None = get_int(payload, "l")
    else:
        # @trade: "t" is per symbol and contiguous. "b"/"a" (order ids) were removed on 2024-06-18 [B2].
        trade_id = get_int(payload, "t")
        first_trade_id = last_trade_id = None
    # "m" = is the buyer the maker: true means the taker SOLD, false that it bought [B1]
    # (tardis-node maps it the same way: side = m ? 'sell' : 'buy').
    buyer_is_maker = get_bool(payload, "m")
    return TradeRecord(
        exchange=NAME,
        symbol=symbol,
        canonical_symbol=canonical_symbol,
        trade_id=str(trade_id),
        price=get_decimal(payload, "p"),
        quantity=get_decimal(payload, "q"),
        side="sell" if buyer_is_maker else "buy",
        ts_event_ns=get_ms_as_ns(payload, "T"),  # trade (match) time; "E" is when the event was sent
        ts_received_ns=ts_received_ns,
        extras={
            "event_time_ns": get_ms_as_ns(payload, "E"),
            "is_buyer_maker": buyer_is_maker,
            "stream_type": event,
            "first_trade_id": first_trade_id,
            "last_trade_id": last_trade_id,
        },
    )


def _req_id(msg: JsonObject) -> int | str | None:
    # The id is an int64, an alphanumeric string of at most 36 characters, or null [B1].
    value = msg.get("id")
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    return as_str(value, "'id'")


def _error_text(error: JsonObject) -> str:
    code = error.get("code")  # may be negative
    if not isinstance(code, int) or isinstance(code, bool) or abs(code) > INT64_MAX:
        raise ParseError("binance error without an integer 'code'")
    return f"code {code}: {get_str(error, 'msg')}"


VENUE = Venue(
    name=NAME,
    ws_url=WS_URL,
    trade_channels=TRADE_CHANNELS,
    subscribe=subscribe,
    unsubscribe=unsubscribe,
    parse=parse,
    silence_timeout_s=None,  # no application heartbeat: the server pings every 20 s, pong within 60 s [B1]
    max_messages_per_s=4.0,  # the limit is 5 incoming messages/s, pong frames included [B1]
    subscribe_deadline_s=None,
    max_connection_age_s=24 * 3600.0,  # a connection lives at most 24 h [B1]
    snapshot_on_subscribe=False,  # trades missed while disconnected are never replayed
    max_streams_per_connection=1024,  # [B1]
)
