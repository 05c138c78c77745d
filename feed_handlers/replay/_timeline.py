"""A capture's timeline: when each frame goes out, how long a lap is, how far a loop moves each id counter."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from feed_handlers.replay._core import Frame

__all__ = ["Timeline"]


@dataclass(frozen=True, slots=True)
class Timeline:
    times: tuple[int, ...]  # each frame's pacing time as recorded (ns)
    lap_ns: int  # how far times move per lap: the capture's duration plus one mean frame gap
    spans: dict[str, int]  # id counter -> how far its ids move per lap (highest - lowest + 1)
    firsts: dict[str, int]  # id counter -> its lowest id in the capture

    @classmethod
    def of(cls, frames: Sequence[Frame], unit_ns: int) -> Timeline:
        """``unit_ns``: the venue's time resolution; the lap is a whole number of it."""
        times: list[int] = []
        known = next((f.time_ns for f in frames if f.time_ns), 0)
        for frame in frames:  # a frame without a time (a bookTicker) goes with the one before it
            known = frame.time_ns or known
            times.append(known)
        duration = max(times) - times[0] if times else 0
        gap = duration // (len(times) - 1) if len(times) > 1 else 0
        lap_ns = -(-(duration + max(gap, unit_ns)) // unit_ns) * unit_ns
        lows: dict[str, int] = {}
        highs: dict[str, int] = {}
        for frame in frames:
            for counter, (lo, hi) in frame.spans.items():
                lows[counter], highs[counter] = min(lo, lows.get(counter, lo)), max(hi, highs.get(counter, hi))
        spans = {counter: highs[counter] - lows[counter] + 1 for counter in lows}
        return cls(tuple(times), lap_ns, spans, lows)

    @property
    def start_ns(self) -> int:
        return self.times[0] if self.times else 0

    def offsets(self, lap: int) -> dict[str, int]:
        """How far each id counter moves on lap ``lap`` (0 for the first)."""
        return {counter: lap * span for counter, span in self.spans.items()}
