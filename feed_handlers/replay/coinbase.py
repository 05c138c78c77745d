"""Fake Coinbase Advanced Trade market data (``ws://host:port``) and the public ticker REST endpoint.

A connection that has not subscribed within the deadline (5 s [C1]) is closed by the server. A
``market_trades`` subscribe gets one ``type:"snapshot"`` message per product (the 100 most recent trades the
server has released, newest first, as in the corpus) and then the cumulative ``subscriptions`` ack; a
``heartbeats`` subscribe gets a heartbeats frame every second whose ``heartbeat_counter`` is server-wide and
steps by one [C2][C4]. Trades inside a message are newest first, as the venue sends them. Every frame the
server writes carries ``sequence_num``, contiguous per connection from 0 (the capture's values are
rewritten). Frames of other channels in the capture (ticker, ...) go only to their subscribers. Errors
(unverified shape): ``{"type":"error","message":...}``. Sources as in ``feed_handlers.exchanges.coinbase``.

REST: ``GET /api/v3/brokerage/market/products/{product_id}/ticker`` with ``limit`` (default 100, at most
1000), ``start`` and ``end`` (unix seconds; ``start <= time < end``) answers the newest ``limit`` released
trades in the window, newest first, as ``{"trades":[{trade_id, product_id, price, size, time, side}],
"best_bid", "best_ask"}``; best bid/ask are the prices of the last maker BUY and maker SELL.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
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
    recent,
    spans_of,
)
from k2.errors import ConfigError

__all__ = ["CoinbaseReplay"]

SNAPSHOT_SIZE = 100  # corpus: 100 trades per product
_REST_LIMIT_DEFAULT, _REST_LIMIT_MAX = 100, 1000
_TICKER = re.compile(r"/api/v3/brokerage/market/products/([^/]+)/ticker")
_CHANNELS = frozenset({"market_trades", "heartbeats", "ticker", "ticker_batch", "level2", "candles", "status", "user",
                       "futures_balance_summary"})  # fmt: skip
_DATA_CHANNEL = {"level2": "l2_data"}  # subscribed as level2, delivered on l2_data (corpus)
_GENERATED = frozenset({"subscriptions", "heartbeats"})


@dataclass(frozen=True, slots=True)
class _Trades:
    timestamp_ns: int  # envelope time
    events: tuple[tuple[str, tuple[dict[str, Any], ...]], ...]  # (type, trades newest first)


@dataclass(frozen=True, slots=True)
class _Other:
    channel: str
    products: frozenset[str]
    timestamp_ns: int
    events: bytes  # verbatim


@dataclass(frozen=True, slots=True)
class _RenderedTrades:
    timestamp: bytes
    events: tuple[tuple[str, tuple[ReplayTrade, ...]], ...]  # (type, trades newest first)


_Rendered = _RenderedTrades | _Other


@dataclass(eq=False)
class CoinbaseSession(Session):
    subscriptions: dict[str, list[str]] = field(default_factory=dict)  # channel -> products, in subscribe order
    sequence: itertools.count[int] = field(default_factory=itertools.count)

    def frame(self, head: bytes, tail: bytes) -> bytes:
        return head + b',"sequence_num":%d,' % next(self.sequence) + tail


class CoinbaseReplay(ReplayVenue[CoinbaseSession, _Rendered]):
    name = "coinbase"
    path = ""
    time_unit_ns = NS_PER_US  # trade times are microseconds (the envelope's ns digits are kept as recorded)
    has_subscribe_deadline = True

    def __init__(self) -> None:
        self._counter_base = 0

    def load(self, lines: Sequence[bytes]) -> Capture:
        frames: list[Frame] = []
        seed: list[Frame] = []
        for number, line in enumerate(lines, 1):
            try:
                msg = orjson.loads(line)
                channel, stamp = msg.get("channel"), msg.get("timestamp")
                if channel == "heartbeats" and not self._counter_base:  # continue the recorded counter
                    self._counter_base = int(msg["events"][0]["heartbeat_counter"])
                if channel in _GENERATED or not isinstance(channel, str):
                    continue
                time_ns = rfc3339_to_ns(stamp)
                if channel != "market_trades":
                    verbatim = orjson.dumps(msg["events"])
                    frames.append(Frame(time_ns, _Other(channel, _products(msg["events"]), time_ns, verbatim)))
                    continue
                events = tuple((str(e.get("type", "update")), tuple(e.get("trades", ()))) for e in msg["events"])
                ids = [(t["product_id"], int(t["trade_id"])) for _, trades in events for t in trades]
                for _, trades in events:
                    for t in trades:
                        rfc3339_to_ns(t["time"]), str(t["price"]), str(t["size"])
            except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError, IndexError) as exc:
                raise ConfigError(f"coinbase capture line {number}: malformed frame ({exc!r})") from exc
            frame = Frame(time_ns, _Trades(time_ns, events), spans_of(ids))
            (seed if any(kind == "snapshot" for kind, _ in events) else frames).append(frame)
        return Capture(tuple(frames), tuple(seed))

    def render(self, frame: Frame, shift_ns: int, offsets: Mapping[str, int]) -> tuple[_Rendered, list[ReplayTrade]]:
        payload = frame.payload
        if isinstance(payload, _Other):
            return _Other(payload.channel, payload.products, payload.timestamp_ns + shift_ns, payload.events), []
        assert isinstance(payload, _Trades)
        events = []
        for kind, recorded in payload.events:
            trades = []
            for t in recorded:
                product, trade_id = t["product_id"], int(t["trade_id"]) + offsets.get(t["product_id"], 0)
                ts_ns = rfc3339_to_ns(t["time"]) + shift_ns
                # Coinbase writes microseconds without trailing zeros ("21:05:38.50436Z", corpus)
                element = orjson.dumps({**t, "trade_id": str(trade_id), "time": _time(ts_ns)})
                trades.append(ReplayTrade(product, trade_id, ts_ns, t["price"], t["size"], "market_trades", element))
            events.append((kind, tuple(trades)))
        stamp = _stamp(payload.timestamp_ns + shift_ns)
        return _RenderedTrades(stamp, tuple(events)), list(_ascending(t for _, trades in events for t in trades))

    def new_session(self, path: str) -> CoinbaseSession:
        return CoinbaseSession(path)

    def on_message(self, session: CoinbaseSession, message: str | bytes, ctx: Ctx) -> list[Out]:
        try:
            msg = orjson.loads(message)
        except orjson.JSONDecodeError:
            return [_error("malformed JSON")]
        kind = msg.get("type") if isinstance(msg, dict) else None
        channel = msg.get("channel") if isinstance(msg, dict) else None
        products = msg.get("product_ids", []) if isinstance(msg, dict) else None
        if kind not in ("subscribe", "unsubscribe") or not isinstance(channel, str) or channel not in _CHANNELS:
            return [_error("failure to subscribe")]
        if not isinstance(products, list) or not all(isinstance(p, str) for p in products):
            return [_error("failure to subscribe: product_ids must be a list of strings")]
        if kind == "subscribe" and not products and channel not in ("heartbeats", "status"):
            return [_error("failure to subscribe: product_ids required")]
        outs: list[Out] = []
        if kind == "subscribe":
            current = session.subscriptions.setdefault(channel, [])
            added = ["heartbeats"] if channel == "heartbeats" else products
            current.extend(p for p in added if p not in current)
            session.subscribed = True
            if channel == "market_trades":
                outs = [self._snapshot(session, product, ctx) for product in products]
        elif not products or channel == "heartbeats":  # an empty list unsubscribes the whole channel [C1]
            session.subscriptions.pop(channel, None)
        else:
            left = [p for p in session.subscriptions.get(channel, []) if p not in products]
            session.subscriptions[channel] = left
        subscriptions = {c: list(p) for c, p in sorted(session.subscriptions.items()) if p}
        head = b'{"channel":"subscriptions","timestamp":"' + _stamp(ctx.now_ns) + b'"'
        tail = b'"events":' + orjson.dumps([{"subscriptions": subscriptions}]) + b"}"
        outs.append(Out(lambda: session.frame(head, tail)))
        return outs

    def _snapshot(self, session: CoinbaseSession, product: str, ctx: Ctx) -> Out:
        trades = recent(ctx.history, product, SNAPSHOT_SIZE)
        head = b'{"channel":"market_trades","timestamp":"' + _stamp(ctx.now_ns) + b'"'
        events = b'"events":[{"type":"snapshot","trades":[' + b",".join(t.element for t in reversed(trades)) + b"]}]}"
        return Out(lambda: session.frame(head, events), tuple(trades))  # served oldest first

    def route(self, session: CoinbaseSession, rendered: _Rendered) -> Out | None:
        if isinstance(rendered, _Other):
            subscribed = [p for c, ps in session.subscriptions.items() if _DATA_CHANNEL.get(c, c) == rendered.channel
                          for p in ps]  # fmt: skip
            if not subscribed or (rendered.products and rendered.products.isdisjoint(subscribed)):
                return None
            head = b'{"channel":' + orjson.dumps(rendered.channel) + b',"timestamp":"' + _stamp(rendered.timestamp_ns)
            tail = b'"events":' + rendered.events + b"}"
            return Out(lambda: session.frame(head + b'"', tail))
        products = session.subscriptions.get("market_trades", [])
        events, served = [], []
        for kind, trades in rendered.events:
            mine = [t for t in trades if t.symbol in products]
            if mine:
                elements = b",".join(t.element for t in mine)
                events.append(b'{"type":"' + kind.encode() + b'","trades":[' + elements + b"]}")
                served.extend(mine)
        if not events:
            return None
        head = b'{"channel":"market_trades","timestamp":"' + rendered.timestamp + b'"'
        tail = b'"events":[' + b",".join(events) + b"]}"
        return Out(lambda: session.frame(head, tail), _ascending(served))

    def on_tick(self, session: CoinbaseSession, ctx: Ctx, beat: int) -> list[Out]:
        if "heartbeats" not in session.subscriptions:
            return []
        # Go's time.Time.String(), monotonic reading included, as in the corpus
        seconds, rest = divmod(ctx.uptime_ns, NS_PER_S)
        current = format_rfc3339(ctx.now_ns, digits=9, trim=True, sep=" ", suffix=f" +0000 UTC m=+{seconds}.{rest:09d}")
        event = {"current_time": current, "heartbeat_counter": self._counter_base + beat}
        head = b'{"channel":"heartbeats","timestamp":"' + _stamp(ctx.now_ns) + b'"'
        tail = b'"events":' + orjson.dumps([event]) + b"}"
        return [Out(lambda: session.frame(head, tail), liveness=True)]

    def rest(self, path: str, query: Mapping[str, str], ctx: Ctx) -> RestAnswer:
        match = _TICKER.fullmatch(path)
        if match is None:
            return RestAnswer(404, b'{"error":"NOT_FOUND","message":"Not Found"}')
        product = match.group(1)
        if product not in ctx.history:
            return RestAnswer(404, b'{"error":"NOT_FOUND","error_details":"ProductID is invalid",'
                                   b'"message":"ProductID is invalid"}')  # fmt: skip
        try:
            limit = max(0, min(int(query.get("limit", _REST_LIMIT_DEFAULT)), _REST_LIMIT_MAX))
            start_ns = int(query["start"]) * NS_PER_S if query.get("start") else None
            end_ns = int(query["end"]) * NS_PER_S if query.get("end") else None
        except ValueError:
            return RestAnswer(400, b'{"error":"INVALID_ARGUMENT","message":"invalid limit, start or end"}')
        released = list(ctx.history[product])
        lo, hi = start_ns if start_ns is not None else 0, end_ns if end_ns is not None else 2**63
        newest = [t for t in reversed(released) if lo <= t.ts_ns < hi][:limit]
        rows = []
        for t in newest:
            fields = orjson.loads(t.element)
            rows.append({"trade_id": fields["trade_id"], "product_id": fields["product_id"], "price": fields["price"],
                         "size": fields["size"], "time": fields["time"], "side": fields["side"]})  # fmt: skip
        makers = {orjson.loads(t.element)["side"]: t.price for t in released[-_REST_LIMIT_MAX:]}
        body = {"trades": rows, "best_bid": makers.get("BUY", ""), "best_ask": makers.get("SELL", "")}
        return RestAnswer(200, orjson.dumps(body))


def _products(events: list[dict[str, Any]]) -> frozenset[str]:
    """The product ids a frame of another channel is about (its events hold lists of objects with one)."""
    return frozenset(
        item["product_id"]
        for event in events
        for value in event.values()
        if isinstance(value, list)
        for item in value
        if isinstance(item, dict) and isinstance(item.get("product_id"), str)
    )


def _ascending(trades: Iterable[ReplayTrade]) -> tuple[ReplayTrade, ...]:
    return tuple(sorted(trades, key=lambda t: (t.symbol, t.trade_id)))


def _time(ns: int) -> str:
    return format_rfc3339(ns, digits=6, trim=True)


def _stamp(ns: int) -> bytes:
    return format_rfc3339(ns, digits=9, trim=True).encode()


def _error(message: str) -> Out:
    return Out(orjson.dumps({"type": "error", "message": message}))
