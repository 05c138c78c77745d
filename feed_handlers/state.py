"""Per-symbol trade-id state: what was published, what is missing, what is a duplicate.

Trade ids are contiguous per symbol on all three venues (Binance ``t``/aggTrade ``a``, Kraken
``trade_id`` per book, Coinbase ``trade_id`` per product), so a jump is a gap. A gap is not declared
at once: a trade inside it may still arrive (a rotation overlap or a reconnect snapshot delivers
older trades after newer ones). Ids inside an open gap are accepted when they come; what is still
missing after ``grace_s`` is reported once as a confirmed gap (for backfill and the missing-trades
counter). A trade that arrives after its gap was reported is still accepted (it is real, and silver
deduplicates it against a backfilled copy) until ``10 * grace_s`` after the report. Anything else
at or below the last id is a duplicate.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

__all__ = ["ConfirmedGap", "LastTrade", "SymbolState", "TradeState", "Verdict"]

_LATE_FACTOR = 10.0


@dataclass(frozen=True)
class ConfirmedGap:
    symbol: str
    first_id: int  # first missing id
    last_id: int  # last missing id (inclusive)
    after_ns: int = 0  # event time of the trade just before the gap (0: unknown), for time-based backfill
    before_ns: int = 0  # event time of the trade just after it

    @property
    def size(self) -> int:
        return self.last_id - self.first_id + 1


@dataclass(frozen=True)
class LastTrade:
    """The last trade published for a symbol, as a restarted handler recovers it (``recovery.py``)."""

    trade_id: int
    ts_event_ns: int = 0  # 0: unknown (a time-based backfill then has no start)


@dataclass(frozen=True)
class Verdict:
    accepted: bool
    opened_gap: int = 0  # ids now missing because this trade jumped ahead


# The verdicts of almost every trade, built once (one per trade costs as much as the decision).
_ACCEPTED = Verdict(True)
_DUPLICATE = Verdict(False)


@dataclass
class _Gap:
    first: int
    last: int
    confirm_at: float
    after_ns: int = 0
    before_ns: int = 0
    reported: bool = False


@dataclass
class SymbolState:
    last_id: int | None = None
    last_ts_ns: int = 0
    gaps: list[_Gap] = field(default_factory=list)  # sorted, disjoint


class TradeState:
    """Last id and open gaps per symbol; ``now`` is passed in (monotonic seconds), never read here."""

    def __init__(self, grace_s: float = 5.0, last_trades: Mapping[str, LastTrade] | None = None) -> None:
        self.grace_s = grace_s
        self._symbols: dict[str, SymbolState] = {
            s: SymbolState(t.trade_id, t.ts_event_ns) for s, t in (last_trades or {}).items()
        }

    def last_id(self, symbol: str) -> int | None:
        state = self._symbols.get(symbol)
        return None if state is None else state.last_id

    def accept(self, symbol: str, trade_id: int, now: float, ts_event_ns: int = 0) -> Verdict:
        """Decide about one trade; ids of one symbol should come in ascending order within a frame."""
        state = self._symbols.get(symbol)
        if state is None:
            state = self._symbols[symbol] = SymbolState()
        last = state.last_id
        if last is None or trade_id == last + 1:
            state.last_id, state.last_ts_ns = trade_id, ts_event_ns
            return _ACCEPTED
        if trade_id > last:
            state.gaps.append(_Gap(last + 1, trade_id - 1, now + self.grace_s, state.last_ts_ns, ts_event_ns))
            state.last_id, state.last_ts_ns = trade_id, ts_event_ns
            return Verdict(True, trade_id - 1 - last)
        return _ACCEPTED if self._fill(state, trade_id) else _DUPLICATE

    @staticmethod
    def _fill(state: SymbolState, trade_id: int) -> bool:
        for i, gap in enumerate(state.gaps):
            if gap.first <= trade_id <= gap.last:
                parts = [
                    _Gap(lo, hi, gap.confirm_at, gap.after_ns, gap.before_ns, gap.reported)
                    for lo, hi in ((gap.first, trade_id - 1), (trade_id + 1, gap.last))
                    if lo <= hi
                ]
                state.gaps[i : i + 1] = parts
                return True
        return False

    def confirmed_gaps(self, now: float) -> Iterator[ConfirmedGap]:
        """Gaps whose grace period ended since the last call (each reported once)."""
        forget_before = now - _LATE_FACTOR * self.grace_s
        for symbol, state in self._symbols.items():
            for gap in state.gaps:
                if not gap.reported and gap.confirm_at <= now:
                    gap.reported = True
                    yield ConfirmedGap(symbol, gap.first, gap.last, gap.after_ns, gap.before_ns)
            state.gaps = [g for g in state.gaps if not (g.reported and g.confirm_at < forget_before)]

    def unconfirmed_gaps(self) -> int:
        """Open gaps still inside their grace period (not reported yet), over every symbol."""
        return sum(not g.reported for state in self._symbols.values() for g in state.gaps)

    def open_gaps(self, symbol: str) -> list[tuple[int, int]]:
        state = self._symbols.get(symbol)
        return [] if state is None else [(g.first, g.last) for g in state.gaps]
