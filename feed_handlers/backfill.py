"""REST backfill of confirmed trade-id gaps, per venue as data (request builder + response parser).

Binance pages by trade id (``historicalTrades``/``aggTrades?fromId=``); Kraken and Coinbase page by
time, so a gap carries the event times of the trades around it and the answer is filtered to the
missing ids. Only trades whose ids are inside the gap are returned; the handler publishes them.
"""

from __future__ import annotations

import asyncio
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson

from feed_handlers.records import TradeRecord, decimal_text, rfc3339_to_ns
from feed_handlers.state import ConfirmedGap

__all__ = ["REST", "RestSpec", "backfill"]

_PAGE = 1000
_MAX_PAGES = 50
Request = tuple[str, dict[str, str]]


@dataclass(frozen=True)
class RestSpec:
    #: (channel, venue symbol, gap, next id or cursor; 0 for the first page) -> (path, query)
    request: Callable[[str, str, ConfirmedGap, int], Request]
    #: (body, channel, venue symbol, canonical, ts_received_ns) -> (trades, next cursor or None)
    parse: Callable[[bytes, str, str, str, int], tuple[list[TradeRecord], int | None]]
    #: pages run newest first (Coinbase): paging ends at the gap's first id instead of its last
    newest_first: bool = False


def _record(exchange: str, symbol: str, canonical: str, trade_id: int, price: Any, qty: Any, side: str,
            ts_ns: int, received: int, extras: Mapping[str, object]) -> TradeRecord:  # fmt: skip
    return TradeRecord(exchange, symbol, canonical, str(trade_id), decimal_text(price), decimal_text(qty), side,
                       ts_ns, received, extras)  # fmt: skip


# -- Binance: GET /api/v3/historicalTrades | /api/v3/aggTrades ?symbol=&fromId=&limit= [B4] -------------


def _binance_request(channel: str, symbol: str, gap: ConfirmedGap, cursor: int) -> Request:
    path = "/api/v3/aggTrades" if channel == "aggTrade" else "/api/v3/historicalTrades"
    limit = min(_PAGE, gap.last_id - cursor + 1)
    return path, {"symbol": symbol, "fromId": str(cursor), "limit": str(limit)}


def _binance_parse(
    body: bytes, channel: str, symbol: str, canonical: str, received: int
) -> tuple[list[TradeRecord], int | None]:
    rows = orjson.loads(body)
    trades = []
    for r in rows:
        if channel == "aggTrade":
            tid, price, qty, ms, maker = r["a"], r["p"], r["q"], r["T"], r["m"]
            extras: dict[str, object] = {"first_trade_id": r["f"], "last_trade_id": r["l"]}
        else:
            tid, price, qty, ms, maker = r["id"], r["price"], r["qty"], r["time"], r["isBuyerMaker"]
            extras = {"first_trade_id": None, "last_trade_id": None}
        extras = {"event_time_ns": ms * 1_000_000, "is_buyer_maker": maker, "stream_type": channel, **extras}
        trades.append(_record("binance", symbol, canonical, tid, price, qty, "sell" if maker else "buy",
                              ms * 1_000_000, received, extras))  # fmt: skip
    return trades, (int(trades[-1].trade_id) + 1 if trades else None)


# -- Kraken: GET /0/public/Trades?pair=&since=<ns cursor>; rows [price, volume, time, side, type, misc, id] -


def _kraken_request(channel: str, symbol: str, gap: ConfirmedGap, cursor: int) -> Request:
    # `since` is exclusive on the fake and undocumented on Kraken: start 1 ns early, ids filter the rest.
    return "/0/public/Trades", {"pair": symbol, "since": str(cursor or gap.after_ns - 1)}


def _kraken_parse(
    body: bytes, channel: str, symbol: str, canonical: str, received: int
) -> tuple[list[TradeRecord], int | None]:
    answer = orjson.loads(body)
    if answer.get("error"):
        raise ValueError(f"kraken: {answer['error']}")
    result = answer["result"]
    rows = next(v for k, v in result.items() if k != "last")
    trades = []
    for price, volume, when, side, order_type, _misc, tid in rows:
        ts_ns = int(Decimal(str(when)) * 1_000_000_000)  # seconds with decimals; exact via Decimal text
        trades.append(_record("kraken", symbol, canonical, tid, price, volume, "buy" if side == "b" else "sell",
                              ts_ns, received, {"ord_type": "market" if order_type == "m" else "limit",
                                                "is_snapshot": False}))  # fmt: skip
    return trades, (int(result["last"]) if rows else None)


# -- Coinbase: GET /api/v3/brokerage/market/products/{id}/ticker?limit=&start=&end= (unix seconds) -------
# The newest `limit` trades in [start, end), newest first: a full page is followed by the page that ends at
# its oldest trade's second (the second is asked again, the ids sort out the overlap).


def _coinbase_request(channel: str, symbol: str, gap: ConfirmedGap, cursor: int) -> Request:
    start = gap.after_ns // 1_000_000_000
    end = cursor or gap.before_ns // 1_000_000_000 + 1
    return f"/api/v3/brokerage/market/products/{symbol}/ticker", {
        "limit": str(_PAGE),
        "start": str(start),
        "end": str(end),
    }


def _coinbase_parse(
    body: bytes, channel: str, symbol: str, canonical: str, received: int
) -> tuple[list[TradeRecord], int | None]:
    trades = []
    for r in orjson.loads(body)["trades"]:
        maker = r["side"]
        # "side" is the maker's, as on the WebSocket: the taker is the other side
        trades.append(_record("coinbase", symbol, canonical, int(r["trade_id"]), r["price"], r["size"],
                              "sell" if maker == "BUY" else "buy", rfc3339_to_ns(r["time"]), received,
                              {"sequence_num": 0, "maker_side": maker, "is_snapshot": False}))  # fmt: skip
    full = len(trades) >= _PAGE
    return trades, (min(t.ts_event_ns for t in trades) // 1_000_000_000 + 1 if full else None)


REST: Mapping[str, RestSpec] = {
    "binance": RestSpec(_binance_request, _binance_parse),
    "kraken": RestSpec(_kraken_request, _kraken_parse),
    "coinbase": RestSpec(_coinbase_request, _coinbase_parse, newest_first=True),
}


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - URL from config
        return bytes(response.read())


async def backfill(exchange: str, rest_url: str, channel: str, canonical: str, gap: ConfirmedGap,
                   received_ns: int) -> list[TradeRecord]:  # fmt: skip
    """The gap's trades the venue still has, ascending by id (may be fewer than the gap's size)."""
    spec = REST[exchange]
    found: dict[int, TradeRecord] = {}
    cursor = gap.first_id if exchange == "binance" else 0
    for page in range(_MAX_PAGES):
        path, query = spec.request(channel, gap.symbol, gap, cursor)
        body = await asyncio.to_thread(_get, f"{rest_url.rstrip('/')}{path}?{urllib.parse.urlencode(query)}")
        trades, next_cursor = spec.parse(body, channel, gap.symbol, canonical, received_ns)
        before = len(found)
        for t in trades:
            if gap.first_id <= int(t.trade_id) <= gap.last_id:
                found[int(t.trade_id)] = t
        if spec.newest_first:
            done = any(int(t.trade_id) <= gap.first_id for t in trades)
        else:
            done = any(int(t.trade_id) >= gap.last_id for t in trades)
        stuck = page > 0 and len(found) == before  # a page past the first that added nothing: no use going on
        if next_cursor is None or done or not trades or len(found) == gap.size or stuck or next_cursor == cursor:
            break
        cursor = next_cursor
    return [found[i] for i in sorted(found)]
