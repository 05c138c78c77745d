"""Recorded frames as replayable items: per venue, where a frame goes and how to re-time/renumber it.

A capture is ``<exchange>.jsonl``: one WebSocket text frame per line, as received. Replaying shifts
every trade and frame time by the same amount (spacing kept) and, on each loop, moves trade ids up by
the symbol's id span so ids never repeat and stay contiguous. Prices are never re-encoded: Binance and
Coinbase send strings (orjson round trips them verbatim); Kraken sends JSON numbers, so its frames are
rewritten textually and their number text is untouched.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

from feed_handlers.records import rfc3339_to_ns

__all__ = ["Item", "Served", "load_capture", "load_items", "ns_to_rfc3339"]


@dataclass(frozen=True)
class Served:
    symbol: str
    trade_id: int
    ts_ns: int
    price: str
    quantity: str
    taker_side: str
    element: Any  # the trade as the venue encodes it inside a frame (Kraken: text; Coinbase: dict)


@dataclass
class Item:
    """One capture frame. ``render(shift_ns, offsets)`` gives the frame payload and its trades."""

    route: str  # Binance stream name; Kraken/Coinbase symbol; "" for frames the server never forwards
    time_ns: int  # pacing time (0: unknown, take the previous frame's)
    snapshot: bool
    render: Callable[[int, dict[str, int]], tuple[Any, list[Served]]]
    symbols: tuple[str, ...] = field(default=())
    ids: dict[str, tuple[int, int]] = field(default_factory=dict)  # symbol -> (min, max) trade id


def load_capture(path: Path) -> list[bytes]:
    return [line for line in path.read_bytes().splitlines() if line.strip()]


def ns_to_rfc3339(ns: int) -> str:
    seconds, rest = divmod(ns, 1_000_000_000)
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{rest // 1000:06d}Z"


# -- Binance -----------------------------------------------------------------------------------------


def _binance(line: bytes) -> Item | None:
    frame = orjson.loads(line)
    stream, data = frame.get("stream"), frame.get("data")
    if not isinstance(stream, str) or not isinstance(data, dict):
        return None
    event = data.get("e")
    if event not in ("trade", "aggTrade"):
        return Item(stream.lower(), 0, False, lambda shift, offsets: (frame, []))
    symbol = data["s"]
    id_key = "t" if event == "trade" else "a"

    def render(shift_ns: int, offsets: dict[str, int]) -> tuple[Any, list[Served]]:
        out = dict(data)
        off = offsets.get(symbol, 0)
        out[id_key] += off
        if event == "aggTrade":
            out["f"] += offsets.get(symbol + "#raw", 0)
            out["l"] += offsets.get(symbol + "#raw", 0)
        out["T"] += shift_ns // 1_000_000
        out["E"] += shift_ns // 1_000_000
        served = Served(symbol, out[id_key], out["T"] * 1_000_000, out["p"], out["q"],
                        "sell" if out["m"] else "buy", out)  # fmt: skip
        return {"stream": stream, "data": out}, [served]

    ids = {symbol: (data[id_key], data[id_key])}
    if event == "aggTrade":
        ids[symbol + "#raw"] = (data["f"], data["l"])
    return Item(stream.lower(), data["T"] * 1_000_000, False, render, (symbol,), ids)


# -- Kraken v2: JSON numbers, rewritten as text --------------------------------------------------------

_KRAKEN_TRADE = re.compile(rb"\{[^{}]*\}")
_KRAKEN_TS = re.compile(rb'"timestamp":"([^"]+)"')
_KRAKEN_ID = re.compile(rb'"trade_id":([0-9]+)')


def _kraken(line: bytes) -> Item | None:
    frame = json.loads(line, parse_float=Decimal)
    if frame.get("channel") != "trade" or not frame.get("data"):
        return None
    data_text = line[line.index(b'"data"') :]
    elements = _KRAKEN_TRADE.findall(data_text)
    trades = frame["data"]
    symbols = tuple(dict.fromkeys(t["symbol"] for t in trades))
    times = [rfc3339_to_ns(t["timestamp"]) for t in trades]
    ids: dict[str, tuple[int, int]] = {}
    for t in trades:
        lo, hi = ids.get(t["symbol"], (t["trade_id"], t["trade_id"]))
        ids[t["symbol"]] = (min(lo, t["trade_id"]), max(hi, t["trade_id"]))

    def render(shift_ns: int, offsets: dict[str, int]) -> tuple[Any, list[Served]]:
        served, out = [], []
        for trade, element in zip(trades, elements, strict=True):
            off = offsets.get(trade["symbol"], 0)
            ts = rfc3339_to_ns(trade["timestamp"]) + shift_ns
            text = _KRAKEN_TS.sub(b'"timestamp":"' + ns_to_rfc3339(ts).encode() + b'"', element)
            text = _KRAKEN_ID.sub(_renumber(off), text)
            out.append(text)
            served.append(Served(trade["symbol"], trade["trade_id"] + off, ts, str(trade["price"]), str(trade["qty"]),
                                 trade["side"], text))  # fmt: skip
        return _kraken_frame(frame["type"], out), served

    return Item(symbols[0], max(times), frame.get("type") == "snapshot", render, symbols, ids)


def _renumber(offset: int) -> Callable[[re.Match[bytes]], bytes]:
    def sub(match: re.Match[bytes]) -> bytes:
        return b'"trade_id":' + str(int(match.group(1)) + offset).encode()

    return sub


def _kraken_frame(kind: str, elements: list[bytes]) -> bytes:
    return b'{"channel":"trade","type":"' + kind.encode() + b'","data":[' + b",".join(elements) + b"]}"


# -- Coinbase Advanced Trade ---------------------------------------------------------------------------


def _coinbase(line: bytes) -> Item | None:
    frame = orjson.loads(line)
    if frame.get("channel") != "market_trades":
        return None
    events = frame["events"]
    trades = [t for e in events for t in e.get("trades", [])]
    if not trades:
        return None
    kind = events[0].get("type", "update")
    symbols = tuple(dict.fromkeys(t["product_id"] for t in trades))
    ids: dict[str, tuple[int, int]] = {}
    for t in trades:
        tid = int(t["trade_id"])
        lo, hi = ids.get(t["product_id"], (tid, tid))
        ids[t["product_id"]] = (min(lo, tid), max(hi, tid))

    def render(shift_ns: int, offsets: dict[str, int]) -> tuple[Any, list[Served]]:
        out_trades, served = [], []
        for t in trades:
            tid = int(t["trade_id"]) + offsets.get(t["product_id"], 0)
            ts = rfc3339_to_ns(t["time"]) + shift_ns
            new = {**t, "trade_id": str(tid), "time": ns_to_rfc3339(ts)}
            out_trades.append(new)
            # Coinbase "side" is the maker's; the taker is the other side
            served.append(Served(t["product_id"], tid, ts, t["price"], t["size"],
                                 "buy" if t["side"] == "SELL" else "sell", new))  # fmt: skip
        envelope = {"channel": "market_trades", "timestamp": ns_to_rfc3339(max(s.ts_ns for s in served)),
                    "sequence_num": 0, "events": [{"type": kind, "trades": out_trades}]}  # fmt: skip
        return envelope, served

    return Item(symbols[0], max(rfc3339_to_ns(t["time"]) for t in trades), kind == "snapshot", render, symbols, ids)


_LOADERS: dict[str, Callable[[bytes], Item | None]] = {"binance": _binance, "kraken": _kraken, "coinbase": _coinbase}


def load_items(exchange: str, lines: list[bytes]) -> list[Item]:
    """The capture's frames the fake server forwards, ascending by time (stable for equal times)."""
    items = [item for line in lines if (item := _LOADERS[exchange](line)) is not None]
    last = 0
    for item in items:
        item.time_ns = item.time_ns or last
        last = item.time_ns
    return sorted(items, key=lambda i: i.time_ns)
