"""Fake Kraken spot WebSocket v2 (``/v2``) and the public Trades REST endpoint, from a capture.

On connect: a ``status`` frame [K4]. ``subscribe``/``unsubscribe`` are acked once per symbol, echoing
``req_id`` [K2]; a trade subscribe with ``"snapshot":true`` (the server's default is false, as in the newer
docs and the SDK [K3][K7]) is followed by a ``type:"snapshot"`` frame holding that symbol's 50 most recent
trades the server has released, across connections: a reconnecting client gets trades it has seen. ``ping``
gets a ``pong`` [K6]; a subscribed connection gets ``{"channel":"heartbeat"}`` after a quiet second [K5].
Sources as in ``feed_handlers.exchanges.kraken``.

Prices and quantities are JSON numbers, some in scientific notation [K7]: capture frames are rewritten as
text (timestamp and trade_id only), never through a float.

REST (legacy ``GET /0/public/Trades``): ``pair`` (the v2 symbol, "BTC/USD", or "BTCUSD"), ``since`` (a
nanosecond cursor, exclusive, as Kraken documents it: trades strictly after that time; without it the most
recent trades) and ``count`` (default and most 1000). Answer, ascending::

    {"error":[],"result":{"<pair>":[[price, volume, time, side, ordType, misc, trade_id], ...],"last":"<ns>"}}

price and volume are strings without exponent, time is seconds as a JSON number with 6 decimals (exact
microseconds), side ``b``/``s`` (taker), ordType ``m``/``l``, misc ``""``, trade_id an integer; ``last`` is
the time of the last row in ns (or ``since`` when there are none), the next call's ``since``.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import orjson

from feed_handlers.records import rfc3339_to_ns
from feed_handlers.replay._core import (
    NS_PER_S,
    NS_PER_US,
    Capture,
    Ctx,
    Frame,
    Out,
    ReplayTrade,
    ReplayVenue,
    RestAnswer,
    Session,
    format_rfc3339,
    plain_decimal,
    recent,
    spans_of,
)
from k2.errors import ConfigError

__all__ = ["KrakenReplay"]

SNAPSHOT_SIZE = 50  # "the 50 most recent trades" [K2]
_REST_COUNT_MAX = 1000
_ELEMENT = re.compile(rb"\{[^{}]*\}")  # trade objects are flat
_NUMBER = rb"(-?[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)"
_PRICE = re.compile(rb'"price":' + _NUMBER)
_QTY = re.compile(rb'"qty":' + _NUMBER)
_TIMESTAMP = re.compile(rb'"timestamp":"[^"]*"')
_TRADE_ID = re.compile(rb'"trade_id":([0-9]+)')
_FIRST_CONNECTION_ID = 13834774380200032777  # a uint64, above int64 [K7]


@dataclass(frozen=True, slots=True)
class _Element:
    symbol: str
    trade_id: int
    ts_ns: int
    price: str
    qty: str
    text: bytes


@dataclass(frozen=True, slots=True)
class _Trades:
    kind: str  # "update" | "snapshot"
    elements: tuple[_Element, ...]


@dataclass(frozen=True, slots=True)
class _Other:  # a frame of another channel (book, ticker, ...), forwarded verbatim to its subscribers
    channel: str
    symbol: str
    line: bytes


_Rendered = tuple[ReplayTrade, ...] | _Other  # a trade frame's trades in frame order


@dataclass(eq=False)
class KrakenSession(Session):
    subscriptions: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))  # channel -> symbols


class KrakenReplay(ReplayVenue[KrakenSession, _Rendered]):
    name = "kraken"
    path = "/v2"
    time_unit_ns = NS_PER_US  # RFC 3339 with microseconds

    def __init__(self) -> None:
        self._connection_ids = iter(range(_FIRST_CONNECTION_ID, 2**64))

    def load(self, lines: Sequence[bytes]) -> Capture:
        frames: list[Frame] = []
        seed: list[Frame] = []
        for number, line in enumerate(lines, 1):
            try:
                msg = json.loads(line, parse_float=Decimal)
            except ValueError as exc:
                raise ConfigError(f"kraken capture line {number}: not JSON") from exc
            channel = msg.get("channel") if isinstance(msg, dict) else None
            if channel in (None, "status", "heartbeat"):  # acks, pongs, status, heartbeats: generated instead
                continue
            if channel != "trade":
                data = msg.get("data")
                first = data[0] if isinstance(data, list) and data and isinstance(data[0], dict) else {}
                frames.append(Frame(0, _Other(str(channel), str(first.get("symbol", "")), line)))
                continue
            try:
                elements = _elements(line, msg["data"])
            except (KeyError, TypeError, ValueError) as exc:
                raise ConfigError(f"kraken capture line {number}: malformed trade frame ({exc})") from exc
            time_ns = max((e.ts_ns for e in elements), default=0)
            frame = Frame(
                time_ns,
                _Trades(msg.get("type", "update"), elements),
                spans_of((e.symbol, e.trade_id) for e in elements),
            )
            (seed if msg.get("type") == "snapshot" else frames).append(frame)
        return Capture(tuple(frames), tuple(seed))

    def render(self, frame: Frame, shift_ns: int, offsets: Mapping[str, int]) -> tuple[_Rendered, list[ReplayTrade]]:
        if isinstance(frame.payload, _Other):
            return frame.payload, []
        assert isinstance(frame.payload, _Trades)
        trades = []
        for e in frame.payload.elements:
            ts_ns, trade_id = e.ts_ns + shift_ns, e.trade_id + offsets.get(e.symbol, 0)
            stamp = b'"timestamp":"' + format_rfc3339(ts_ns, digits=6).encode() + b'"'
            text = _TRADE_ID.sub(b'"trade_id":%d' % trade_id, _TIMESTAMP.sub(stamp, e.text, count=1), count=1)
            trades.append(ReplayTrade(e.symbol, trade_id, ts_ns, e.price, e.qty, "trade", text))
        return tuple(trades), trades

    def new_session(self, path: str) -> KrakenSession:
        return KrakenSession(path)

    def on_connect(self, session: KrakenSession, ctx: Ctx) -> list[Out]:
        status = {"api_version": "v2", "connection_id": next(self._connection_ids), "system": "online",
                  "version": "2.0.0"}  # fmt: skip
        return [Out(orjson.dumps({"channel": "status", "type": "update", "data": [status]}))]

    def on_message(self, session: KrakenSession, message: str | bytes, ctx: Ctx) -> list[Out]:
        try:
            msg = orjson.loads(message)
        except orjson.JSONDecodeError:
            return [_reply(ctx, {"error": "Malformed request", "success": False}, {})]
        method = msg.get("method") if isinstance(msg, dict) else None
        req_id = {"req_id": msg["req_id"]} if isinstance(msg, dict) and "req_id" in msg else {}
        if method == "ping":
            return [_reply(ctx, {"method": "pong"}, req_id, liveness=True)]
        if method not in ("subscribe", "unsubscribe"):
            return [_reply(ctx, {"error": f"Method not found: {method}", "success": False}, req_id)]
        params = msg.get("params")
        channel = params.get("channel") if isinstance(params, dict) else None
        symbols = params.get("symbol") if isinstance(params, dict) else None
        if not isinstance(channel, str) or not isinstance(symbols, list) or not symbols:
            error = {"error": "Missing or invalid channel or symbol", "method": method, "success": False}
            return [_reply(ctx, error, req_id)]
        snapshot = params.get("snapshot") is True
        subscribed = session.subscriptions[channel]
        acks: list[Out] = []
        snapshots: list[Out] = []
        for symbol in symbols:
            if method == "subscribe" and symbol in subscribed:
                acks.append(_reply(ctx, {"error": "Already subscribed", "method": method, "success": False,
                                         "symbol": symbol}, req_id))  # fmt: skip
            elif method == "subscribe":
                subscribed.append(symbol)
                session.subscribed = True
                result = {"channel": channel, "symbol": symbol, "snapshot": snapshot}
                acks.append(_reply(ctx, {"method": method, "result": result, "success": True}, req_id))
                if snapshot and channel == "trade":
                    snapshots.append(_snapshot(recent(ctx.history, symbol, SNAPSHOT_SIZE)))
            elif symbol in subscribed:
                subscribed.remove(symbol)
                result = {"channel": channel, "symbol": symbol}
                acks.append(_reply(ctx, {"method": method, "result": result, "success": True}, req_id))
            else:
                acks.append(_reply(ctx, {"error": "Subscription Not Found", "method": method, "success": False,
                                         "symbol": symbol}, req_id))  # fmt: skip
        return acks + snapshots

    def route(self, session: KrakenSession, rendered: _Rendered) -> Out | None:
        if isinstance(rendered, _Other):
            wanted = rendered.symbol in session.subscriptions.get(rendered.channel, ())
            return Out(rendered.line) if wanted else None
        symbols = session.subscriptions.get("trade", ())
        mine = tuple(t for t in rendered if t.symbol in symbols)
        if not mine:
            return None
        return Out(b'{"channel":"trade","type":"update","data":[' + b",".join(t.element for t in mine) + b"]}", mine)

    def on_tick(self, session: KrakenSession, ctx: Ctx, beat: int) -> list[Out]:
        # "about once a second when there are no other updates", once any channel is subscribed [K5]
        quiet = ctx.now_mono - session.last_sent_mono >= 0.9 * ctx.heartbeat_interval_s
        if quiet and any(session.subscriptions.values()):
            return [Out(b'{"channel":"heartbeat"}', liveness=True)]
        return []

    def rest(self, path: str, query: Mapping[str, str], ctx: Ctx) -> RestAnswer:
        if path != "/0/public/Trades":
            return RestAnswer(404, b'{"error":["EGeneral:Unknown method"]}')
        pair = query.get("pair", "")
        symbol = next((s for s in ctx.history if pair in (s, s.replace("/", ""))), None)
        if symbol is None:
            return RestAnswer(200, b'{"error":["EQuery:Unknown asset pair"]}')
        try:
            count = max(1, min(int(query.get("count", _REST_COUNT_MAX)), _REST_COUNT_MAX))
            since = int(query["since"]) if "since" in query else None
        except ValueError:
            return RestAnswer(200, b'{"error":["EGeneral:Invalid arguments"]}')
        trades = list(ctx.history[symbol])
        if since is None:
            rows = trades[-count:]
        else:
            since_ns = since if since >= 10**12 else since * NS_PER_S  # seconds were accepted too
            rows = [t for t in trades if t.ts_ns > since_ns][:count]
        last = str(rows[-1].ts_ns if rows else (since or 0))
        body = (b'{"error":[],"result":{' + orjson.dumps(pair) + b":[" + b",".join(_rest_row(t) for t in rows)
                + b'],"last":"' + last.encode() + b'"}}')  # fmt: skip
        return RestAnswer(200, body)


def _elements(line: bytes, data: list[dict[str, Any]]) -> tuple[_Element, ...]:
    texts = _ELEMENT.findall(line[line.index(b'"data"') :])
    if len(texts) != len(data):
        raise ValueError("trade objects are not flat")
    out = []
    for trade, text in zip(data, texts, strict=True):
        price, qty = _PRICE.search(text), _QTY.search(text)
        if price is None or qty is None or not isinstance(trade["trade_id"], int):
            raise ValueError("price, qty and trade_id must be JSON numbers")
        out.append(_Element(trade["symbol"], trade["trade_id"], rfc3339_to_ns(trade["timestamp"]),
                            price.group(1).decode(), qty.group(1).decode(), text))  # fmt: skip
    return tuple(out)


def _reply(ctx: Ctx, fields: dict[str, Any], req_id: dict[str, Any], *, liveness: bool = False) -> Out:
    stamp = format_rfc3339(ctx.now_ns, digits=6)
    return Out(orjson.dumps({**fields, "time_in": stamp, "time_out": stamp, **req_id}), liveness=liveness)


def _snapshot(trades: list[ReplayTrade]) -> Out:
    body = b'{"channel":"trade","type":"snapshot","data":[' + b",".join(t.element for t in trades) + b"]}"
    return Out(body, tuple(trades))


def _rest_row(trade: ReplayTrade) -> bytes:
    fields = orjson.loads(trade.element)  # side and ord_type only: price and qty come from their text
    seconds, rest = divmod(trade.ts_ns, NS_PER_S)
    side = b"b" if fields["side"] == "buy" else b"s"
    order = b"m" if fields["ord_type"] == "market" else b"l"
    return (b'["' + plain_decimal(trade.price).encode() + b'","' + plain_decimal(trade.quantity).encode() + b'",'
            + b"%d.%06d" % (seconds, rest // NS_PER_US) + b',"' + side + b'","' + order + b'","",'
            + b"%d" % trade.trade_id + b"]")  # fmt: skip
