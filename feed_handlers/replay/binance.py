"""Fake Binance spot: the combined stream (``/stream``) and the trade REST endpoints, from a capture.

Subscriptions come from the URL (``/stream?streams=a@trade/b@trade``) and from live ``SUBSCRIBE`` /
``UNSUBSCRIBE`` requests, acked ``{"result":null,"id":N}`` [B1]. A capture frame goes only to a connection
subscribed to its ``stream`` (bookTicker frames too). Nothing else is enforced: no rate limit, no 24 h
cut. Protocol pings are the library's. Sources as in ``feed_handlers.exchanges.binance``.

REST [B4]: ``GET /api/v3/historicalTrades`` (``@trade`` trades) and ``GET /api/v3/aggTrades`` (``@aggTrade``
trades), ``symbol`` required, ``fromId`` (inclusive; without it the most recent trades), ``limit`` (default
500, at most 1000); aggTrades also takes ``startTime``/``endTime`` (ms, inclusive). Ascending by id.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson

from feed_handlers.replay._core import (
    NS_PER_MS,
    Capture,
    Ctx,
    Frame,
    Out,
    ReplayTrade,
    ReplayVenue,
    RestAnswer,
    Session,
    plain_decimal,
)
from k2.errors import ConfigError

__all__ = ["BinanceReplay"]

_ID_KEY = {"trade": "t", "aggTrade": "a"}
_REST_LIMIT_DEFAULT, _REST_LIMIT_MAX = 500, 1000


@dataclass(eq=False)
class BinanceSession(Session):
    streams: list[str] = field(default_factory=list)  # as the client spelled them, in order
    _lower: set[str] = field(default_factory=set)  # stream names match case-insensitively

    def has(self, stream: str) -> bool:
        return stream.lower() in self._lower

    def add(self, streams: Sequence[str]) -> None:
        for stream in streams:
            if stream and not self.has(stream):
                self.streams.append(stream)
                self._lower.add(stream.lower())

    def remove(self, streams: Sequence[str]) -> None:
        drop = {s.lower() for s in streams}
        self.streams = [s for s in self.streams if s.lower() not in drop]
        self._lower -= drop


@dataclass(frozen=True, slots=True)
class _Line:
    stream: str
    data: dict[str, Any]


_Rendered = tuple[str, bytes, tuple[ReplayTrade, ...]]  # (stream, frame, its trades)


class BinanceReplay(ReplayVenue[BinanceSession, _Rendered]):
    name = "binance"
    path = "/stream"
    time_unit_ns = NS_PER_MS  # E and T are milliseconds

    def load(self, lines: Sequence[bytes]) -> Capture:
        frames = []
        for number, line in enumerate(lines, 1):
            try:
                msg = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise ConfigError(f"binance capture line {number}: not JSON") from exc
            if not isinstance(msg, dict):
                raise ConfigError(f"binance capture line {number}: not a JSON object")
            if "result" in msg or "code" in msg:  # acks and errors: the server writes its own
                continue
            if isinstance(msg.get("data"), dict) and isinstance(msg.get("stream"), str):
                stream, data = msg["stream"], msg["data"]
            elif isinstance(msg.get("e"), str) and isinstance(msg.get("s"), str):  # raw stream: wrap it
                stream, data = f"{msg['s'].lower()}@{msg['e']}", msg
            else:
                raise ConfigError(f"binance capture line {number}: neither a combined-stream event nor a raw one")
            if stream.startswith("!"):  # !serverShutdown and the like: fault injection sends those
                continue
            frames.append(self._frame(number, stream, data))
        return Capture(tuple(frames))

    def _frame(self, number: int, stream: str, data: dict[str, Any]) -> Frame:
        event = data.get("e")
        time_ns = data["E"] * NS_PER_MS if isinstance(data.get("E"), int) else 0
        if event not in _ID_KEY:
            return Frame(time_ns, _Line(stream, data))
        try:
            symbol, trade_id = data["s"], data[_ID_KEY[event]]
            spans = {f"{symbol}@{event}": (trade_id, trade_id)}
            if event == "aggTrade":  # f/l: the raw trade ids the aggregate groups
                spans[f"{symbol}@raw"] = (data["f"], data["l"])
            int(data["T"]), str(data["p"]), str(data["q"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"binance capture line {number}: {event} without {exc}") from exc
        return Frame(time_ns, _Line(stream, data), spans)

    def render(self, frame: Frame, shift_ns: int, offsets: Mapping[str, int]) -> tuple[_Rendered, list[ReplayTrade]]:
        line = frame.payload
        assert isinstance(line, _Line)
        data = dict(line.data)
        shift_ms = shift_ns // NS_PER_MS
        for key in ("E", "T"):
            if isinstance(data.get(key), int):
                data[key] += shift_ms
        event = data.get("e")
        trades = []
        if isinstance(event, str) and event in _ID_KEY:
            symbol = data["s"]
            id_key = _ID_KEY[event]
            data[id_key] += offsets.get(f"{symbol}@{event}", 0)
            if event == "aggTrade":
                raw = offsets.get(f"{symbol}@raw", 0)
                data["f"] += raw
                data["l"] += raw
            element = orjson.dumps(data)
            trades.append(ReplayTrade(symbol, data[id_key], data["T"] * NS_PER_MS, data["p"], data["q"], event,
                                      element))  # fmt: skip
        body = orjson.dumps({"stream": line.stream, "data": data})
        return (line.stream, body, tuple(trades)), trades

    def new_session(self, path: str) -> BinanceSession:
        session = BinanceSession(path)
        streams = parse_qs(urlsplit(path).query).get("streams", [])
        for value in streams:
            session.add(value.split("/"))
        session.subscribed = bool(session.streams)
        return session

    def on_message(self, session: BinanceSession, message: str | bytes, ctx: Ctx) -> list[Out]:
        try:
            msg = orjson.loads(message)
        except orjson.JSONDecodeError:
            return [Out(b'{"code":3,"msg":"Invalid JSON: expected value at line 1 column 1"}')]
        if not isinstance(msg, dict) or not isinstance(msg.get("method"), str):
            return [_error(2, "Invalid request: missing field `method`", msg)]
        return [self._request(session, msg["method"], msg.get("params", []), msg)]

    def _request(self, session: BinanceSession, method: str, params: object, msg: dict[str, Any]) -> Out:
        req_id = msg.get("id")
        if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
            if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
                return _error(2, "Invalid request: params must be a list of stream names", msg)
            if method == "SUBSCRIBE":
                session.add(params)
                session.subscribed = session.subscribed or bool(params)
            else:
                session.remove(params)
            result: object = None
        elif method == "LIST_SUBSCRIPTIONS":
            result = session.streams
        elif method in ("SET_PROPERTY", "GET_PROPERTY"):  # only "combined", which this endpoint always is
            result = None if method == "SET_PROPERTY" else True
        else:
            return _error(2, f"Invalid request: unknown variant `{method}`", msg)
        return Out(orjson.dumps({"result": result, "id": req_id}))

    def route(self, session: BinanceSession, rendered: _Rendered) -> Out | None:
        stream, body, trades = rendered
        return Out(body, trades) if session.has(stream) else None

    def server_shutdown(self, ctx: Ctx) -> bytes:
        # Maintenance notice on a combined stream [B1][B2]; the client must reconnect at once.
        ms = ctx.now_ns // NS_PER_MS
        return orjson.dumps({"stream": "!serverShutdown", "data": {"e": "serverShutdown", "E": ms}})

    # -- REST --------------------------------------------------------------------------------------------

    def rest(self, path: str, query: Mapping[str, str], ctx: Ctx) -> RestAnswer:
        channel = {"/api/v3/historicalTrades": "trade", "/api/v3/aggTrades": "aggTrade"}.get(path)
        if channel is None:
            return RestAnswer(404, b'{"code":-1,"msg":"Not found."}')
        symbol = query.get("symbol", "")
        if not symbol:
            return RestAnswer(400, b'{"code":-1102,"msg":"Mandatory parameter \'symbol\' was not sent."}')
        if symbol not in ctx.history:
            return RestAnswer(400, b'{"code":-1121,"msg":"Invalid symbol."}')
        try:
            limit = min(int(query.get("limit", _REST_LIMIT_DEFAULT)), _REST_LIMIT_MAX)
            from_id = int(query["fromId"]) if "fromId" in query else None
            start_ms = int(query["startTime"]) if "startTime" in query else None
            end_ms = int(query["endTime"]) if "endTime" in query else None
        except ValueError:
            return RestAnswer(400, b'{"code":-1100,"msg":"Illegal characters found in a parameter."}')
        trades = [t for t in ctx.history[symbol] if t.channel == channel]
        if from_id is not None:
            trades = [t for t in trades if t.trade_id >= from_id][:limit]
        elif start_ms is not None or end_ms is not None:
            lo, hi = start_ms or 0, end_ms if end_ms is not None else 2**63
            trades = [t for t in trades if lo <= t.ts_ns // NS_PER_MS <= hi][:limit]
        else:
            trades = trades[-limit:] if limit > 0 else []
        rows = [_rest_row(t) for t in trades]
        return RestAnswer(200, orjson.dumps(rows))


def _rest_row(trade: ReplayTrade) -> dict[str, Any]:
    data = orjson.loads(trade.element)
    if trade.channel == "aggTrade":
        return {key: data[key] for key in ("a", "p", "q", "f", "l", "T", "m", "M")}
    quote = plain_decimal(str((Decimal(trade.price) * Decimal(trade.quantity)).normalize()))
    return {"id": trade.trade_id, "price": trade.price, "qty": trade.quantity, "quoteQty": quote,
            "time": data["T"], "isBuyerMaker": data["m"], "isBestMatch": True}  # fmt: skip


def _error(code: int, text: str, msg: object) -> Out:
    req_id = msg.get("id") if isinstance(msg, dict) else None
    return Out(orjson.dumps({"code": code, "msg": text, "id": req_id}))
