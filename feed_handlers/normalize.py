"""``k2 normalize EXCHANGE``: raw frames on stdin, one trade record JSON per line on stdout.

The live handler's parsing, dedup and ordering, without sockets or a broker. Malformed frames are
counted and reported on stderr; they never stop the run.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import BinaryIO

from feed_handlers.errors import ParseError
from feed_handlers.exchanges import VENUES
from feed_handlers.handler import canonical_map
from feed_handlers.instruments import ExchangeConfig
from feed_handlers.state import TradeState

__all__ = ["NormalizeReport", "normalize"]


@dataclass
class NormalizeReport:
    frames: int = 0
    trades: int = 0
    duplicates: int = 0
    malformed: int = 0

    def __str__(self) -> str:
        return (f"normalize: {self.frames} frames, {self.trades} trades, {self.duplicates} duplicates dropped, "
                f"{self.malformed} malformed")  # fmt: skip


def normalize(exchange: str, config: ExchangeConfig, lines: Iterable[bytes], out: BinaryIO) -> NormalizeReport:
    venue = VENUES[exchange]
    canonical = canonical_map(config)
    state = TradeState(grace_s=float("inf"))
    report = NormalizeReport()
    for line in lines:
        frame = line.rstrip(b"\r\n")
        if not frame.strip():
            continue
        report.frames += 1
        try:
            result = venue.parse(frame, ts_received_ns=time.time_ns(), canonical=canonical)
        except ParseError as exc:
            report.malformed += 1
            print(f"normalize: frame {report.frames} malformed: {exc.reason}", file=sys.stderr)
            continue
        for trade in result.trades:
            if state.accept(trade.symbol, int(trade.trade_id), 0.0).accepted:
                out.write(trade.to_json() + b"\n")
                report.trades += 1
            else:
                report.duplicates += 1
    out.flush()
    return report
