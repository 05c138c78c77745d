"""Coinbase Advanced Trade: ``market_trades`` frames to TradeRecords, and the subscribe messages.

Sources: [C1] docs.cdp.coinbase.com .../websocket/websocket-overview; [C2] .../websocket-channels;
[C3] .../market-trades; [C4] the older ws-channels page; and a recorded session (2026-08-09) whose frames
are the fixtures under tests/fixtures/coinbase/.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import orjson

from feed_handlers.errors import ParseError
from feed_handlers.exchanges._base import ParseResult, Venue, trades_result
from feed_handlers.exchanges._wire import (
    INT64_MAX,
    UINT64_MAX,
    JsonObject,
    as_int,
    as_object,
    as_str,
    ascending,
    get_decimal,
    get_int,
    get_list,
    get_object,
    get_rfc3339_ns,
    get_str,
    load,
)
from feed_handlers.records import TradeRecord, is_plain_decimal, new_trade, rfc3339_to_ns
from k2.errors import ConfigError

__all__ = ["HEARTBEAT_CHANNEL", "NAME", "TRADE_CHANNELS", "VENUE", "WS_URL", "parse", "subscribe", "unsubscribe"]

NAME = "coinbase"
WS_URL = "wss://advanced-trade-ws.coinbase.com"
TRADE_CHANNELS = ("market_trades",)
HEARTBEAT_CHANNEL = "heartbeats"
# Coinbase reports the MAKER side; the taker is the other one (corpus: every trade at or above the best
# ask is "SELL"; tardis-node and bbgo PR #2509 invert it too).
_TAKER_SIDE = {"BUY": "sell", "SELL": "buy"}
_MAKER_SIDES = tuple(_TAKER_SIDE)
_TRADE_TYPES = ("snapshot", "update")


def subscribe(symbols: Sequence[str], *, channel: str = "market_trades", req_id: int = 0) -> list[str]:
    """Two messages, trades then heartbeats: one channel per message [C1]; [] for no symbols.

    Heartbeats keep quiet subscriptions open ("most channels close within 60-90 seconds if no updates
    are sent") [C2]. The first message must be sent within 5 s of connecting [C1]. Coinbase requests
    carry no id: ``req_id`` is accepted for the common signature and not sent. No JWT is needed [C2].
    """
    _check(channel)
    if not symbols:
        return []
    return [_message("subscribe", symbols, channel), _message("subscribe", symbols, HEARTBEAT_CHANNEL)]


def unsubscribe(symbols: Sequence[str], *, channel: str = "market_trades", req_id: int = 0) -> list[str]:
    """One message for the trades channel only; heartbeats stay for the connection's life.

    [] for no symbols: an empty product list would unsubscribe the whole channel [C1].
    """
    _check(channel)
    if not symbols:
        return []
    return [_message("unsubscribe", symbols, channel)]


def _check(channel: str) -> None:
    if channel not in TRADE_CHANNELS:
        raise ConfigError(f"coinbase channel {channel!r} is not one of {', '.join(TRADE_CHANNELS)}")


def _message(kind: str, symbols: Sequence[str], channel: str) -> str:
    return orjson.dumps({"type": kind, "product_ids": list(symbols), "channel": channel}).decode()


def parse(frame: bytes | str, *, ts_received_ns: int, canonical: Mapping[str, str]) -> ParseResult:
    """One Coinbase frame. A product missing from ``canonical`` keeps its id ("BTC-USD") as canonical symbol."""
    msg = load(frame)
    result = _trades_fast(msg, ts_received_ns, canonical)
    return _parse(msg, ts_received_ns, canonical) if result is None else result


def _parse(msg: JsonObject, ts_received_ns: int, canonical: Mapping[str, str]) -> ParseResult:
    """Any frame, every field checked by the helpers that say what was wrong."""
    if msg.get("type") == "error":  # {"type":"error","message":...}: a rejected request
        return ParseResult(kind="error", error=_error_text(msg))
    channel = get_str(msg, "channel")
    # Contiguous per connection across all channels, from 0 on a new connection: a jump means lost frames.
    sequence_num = get_int(msg, "sequence_num", maximum=UINT64_MAX)
    events = get_list(msg, "events")
    if channel == "market_trades":
        trades = _trades(events, sequence_num, ts_received_ns, canonical)
        return ParseResult(kind="trades", trades=trades, channel=channel, sequence_num=sequence_num)
    if channel == HEARTBEAT_CHANNEL:
        counter = _heartbeat_counter(as_object(_first(events), "heartbeats event"))
        return ParseResult(kind="heartbeat", channel=channel, sequence_num=sequence_num, heartbeat_counter=counter)
    if channel == "subscriptions":
        # Cumulative: lists every subscription on the connection, sent after the snapshots (corpus).
        subscriptions = get_object(as_object(_first(events), "subscriptions event"), "subscriptions")
        products = subscriptions.get(TRADE_CHANNELS[0], [])
        if not isinstance(products, list):
            raise ParseError("subscriptions.market_trades must be a list")
        symbols = tuple(as_str(p, "subscribed product") for p in products)
        return ParseResult(kind="ack", channel=channel, sequence_num=sequence_num, symbols=symbols)
    # l2_data (subscribed as "level2"), ticker, candles, status, ...
    return ParseResult(kind="ignored", channel=channel, sequence_num=sequence_num)


def _trades_fast(msg: JsonObject, ts_received_ns: int, canonical: Mapping[str, str]) -> ParseResult | None:
    """The frame that comes many times a second: market_trades events of well-formed trades.

    Accepts exactly what the careful path accepts for it and builds the same result, with bare type tests
    instead of the helpers that word errors; None as soon as anything differs, and the careful path decides.
    """
    sequence_num = msg.get("sequence_num")
    events = msg.get("events")
    if not (
        msg.get("channel") == "market_trades"
        and msg.get("type") != "error"
        and type(sequence_num) is int
        and 0 <= sequence_num <= UINT64_MAX
        and type(events) is list
    ):
        return None
    pairs = []
    for event in events:
        kind = event.get("type") if type(event) is dict else None
        trades = event.get("trades") if kind in _TRADE_TYPES else None
        if type(trades) is not list:
            return None
        for trade in trades:
            pair = _trade_fast(trade, sequence_num, kind == "snapshot", ts_received_ns, canonical)
            if pair is None:
                return None
            pairs.append(pair)
    records = (pairs[0][1],) if len(pairs) == 1 else ascending(pairs)
    return trades_result(records, "market_trades", sequence_num)


def _trade_fast(
    trade: object, sequence_num: int, is_snapshot: bool, ts_received_ns: int, canonical: Mapping[str, str]
) -> tuple[int, TradeRecord] | None:
    """One trade as ``_trade`` reads it, or None."""
    if type(trade) is not dict:
        return None
    product_id = trade.get("product_id")
    trade_id = trade.get("trade_id")
    maker_side = trade.get("side")
    price = trade.get("price")
    size = trade.get("size")
    time = trade.get("time")
    if not (
        type(product_id) is str
        and product_id
        and type(trade_id) is str
        and trade_id.isascii()
        and trade_id.isdigit()
        and len(trade_id) <= 20
        and maker_side in _MAKER_SIDES
        and is_plain_decimal(price)
        and is_plain_decimal(size)
        and type(time) is str
    ):
        return None
    try:
        ts_event_ns = rfc3339_to_ns(time)
    except ValueError:
        return None
    if not 0 <= ts_event_ns <= INT64_MAX:
        return None
    extras = {"sequence_num": sequence_num, "maker_side": maker_side, "is_snapshot": is_snapshot}
    record = new_trade(NAME, product_id, canonical.get(product_id, product_id), trade_id, price, size,
                       _TAKER_SIDE[maker_side], ts_event_ns, ts_received_ns, extras)  # fmt: skip
    return int(trade_id), record


def _trades(
    events: list[object], sequence_num: int, ts_received_ns: int, canonical: Mapping[str, str]
) -> tuple[TradeRecord, ...]:
    pairs: list[tuple[int, TradeRecord]] = []
    for item in events:
        event = as_object(item, "market_trades event")
        kind = get_str(event, "type")
        if kind not in _TRADE_TYPES:
            raise ParseError(f"coinbase market_trades event of unknown type {kind[:20]!r}")
        # On subscribe: one "snapshot" per product with its 100 most recent trades (corpus).
        is_snapshot = kind == "snapshot"
        for trade in get_list(event, "trades"):
            pairs.append(_trade(as_object(trade, "trade"), sequence_num, is_snapshot, ts_received_ns, canonical))
    # Trades in a message come newest first (descending trade_id, 59/59 messages in the corpus).
    return ascending(pairs)


def _trade(
    trade: JsonObject, sequence_num: int, is_snapshot: bool, ts_received_ns: int, canonical: Mapping[str, str]
) -> tuple[int, TradeRecord]:
    product_id = get_str(trade, "product_id")
    trade_id = get_str(trade, "trade_id")  # a numeric string, contiguous per product
    if not (trade_id.isascii() and trade_id.isdigit() and len(trade_id) <= 20):
        raise ParseError(f"coinbase trade_id {trade_id[:30]!r} is not numeric")
    maker_side = get_str(trade, "side")
    taker_side = _TAKER_SIDE.get(maker_side)
    if taker_side is None:
        raise ParseError(f"coinbase side {maker_side[:20]!r} is not BUY or SELL")
    record = TradeRecord(
        exchange=NAME,
        symbol=product_id,
        canonical_symbol=canonical.get(product_id, product_id),
        trade_id=trade_id,
        price=get_decimal(trade, "price"),
        quantity=get_decimal(trade, "size"),
        side=taker_side,
        # RFC 3339 with 4 to 6 fractional digits in the corpus ("21:05:38.50436Z"); all kept.
        ts_event_ns=get_rfc3339_ns(trade, "time"),
        ts_received_ns=ts_received_ns,
        extras={"sequence_num": sequence_num, "maker_side": maker_side, "is_snapshot": is_snapshot},
    )
    return int(trade_id), record


def _heartbeat_counter(event: JsonObject) -> int:
    value = event.get("heartbeat_counter")
    # A JSON number in live frames; the older docs show a string ("3049") [C4].
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 20:
        value = int(value)
    return as_int(value, "'heartbeat_counter'", maximum=UINT64_MAX)


def _first(events: list[object]) -> object:
    if not events:
        raise ParseError("'events' is empty")
    return events[0]


def _error_text(msg: JsonObject) -> str:
    message = as_str(msg["message"], "'message'") if "message" in msg else "error"
    if "reason" in msg:
        return f"{message}: {as_str(msg['reason'], repr('reason'))}"
    return message


VENUE = Venue(
    name=NAME,
    ws_url=WS_URL,
    trade_channels=TRADE_CHANNELS,
    subscribe=subscribe,
    unsubscribe=unsubscribe,
    parse=parse,
    silence_timeout_s=10.0,  # heartbeats arrive every second once subscribed [C2]
    max_messages_per_s=5.0,  # published limits disagree; the lowest is 8 unauthenticated messages/s per IP
    subscribe_deadline_s=5.0,  # no subscribe within 5 s of connecting: disconnected [C1]
    max_connection_age_s=None,
    snapshot_on_subscribe=True,  # the last 100 trades per product, always
)
