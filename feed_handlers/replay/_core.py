"""What the fake venues share: the replayed trade, outgoing frames, per-connection state, the venue interface.

A venue module (``binance``, ``kraken``, ``coinbase`` in this package) is pure, like the parsers in
``feed_handlers.exchanges``: it turns capture lines into :class:`Frame` s, re-times and renumbers a frame
(:meth:`ReplayVenue.render`), and answers a client's messages, a heartbeat tick or a REST request with the
bytes to send. It opens no socket and reads no clock: the server (``server.FakeExchange``) passes time in
through :class:`Ctx` and does all I/O.
"""

from __future__ import annotations

import itertools
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import ClassVar, Generic, TypeVar

from k2.errors import ConfigError

__all__ = [
    "Capture",
    "Ctx",
    "Frame",
    "Out",
    "ReplayTrade",
    "ReplayVenue",
    "RestAnswer",
    "Session",
    "format_rfc3339",
    "plain_decimal",
    "recent",
    "spans_of",
]

NS_PER_S = 1_000_000_000
NS_PER_MS = 1_000_000
NS_PER_US = 1_000


@dataclass(frozen=True, slots=True)
class ReplayTrade:
    """A trade as the fake venue replays it: re-timed, renumbered, in the venue's own encoding."""

    symbol: str  # venue spelling: "BTCUSDT", "BTC/USD", "BTC-USD"
    trade_id: int
    ts_ns: int  # trade time after the shift
    price: str  # the venue's own text (a Kraken JSON number's text, exponent included)
    quantity: str
    channel: str  # "trade" | "aggTrade" (Binance), "trade" (Kraken), "market_trades" (Coinbase)
    element: bytes  # the trade exactly as the venue writes it inside a frame (Binance: the "data" object)


@dataclass(frozen=True, slots=True)
class Out:
    """One frame to send on one connection.

    ``data`` is a callable when the frame carries a per-connection counter (Coinbase ``sequence_num``): it is
    called under the connection's send lock, right before the write, so counters follow the write order.
    ``liveness`` frames (heartbeats, pongs) are dropped, not delayed, while the server is told to go silent.
    """

    data: bytes | Callable[[], bytes]
    trades: tuple[ReplayTrade, ...] = ()
    liveness: bool = False


@dataclass(eq=False)
class Session:
    """Per-connection state. Venues subclass it with their subscriptions."""

    path: str  # the request target, query included
    #: A subscribe was accepted on this connection (satisfies a subscribe deadline, starts the feed).
    subscribed: bool = False
    #: monotonic time of the last frame written (Kraken sends a heartbeat only after a quiet second)
    last_sent_mono: float = 0.0


@dataclass(frozen=True, slots=True)
class Ctx:
    """What a venue may know of the server when it answers: the time and the recent trades."""

    now_ns: int  # wall clock
    now_mono: float
    uptime_ns: int  # since the server started (Coinbase writes it into heartbeats, as Go's m=+...)
    heartbeat_interval_s: float
    history: Mapping[str, deque[ReplayTrade]]  # per symbol, release order (ascending trade id)


@dataclass(frozen=True, slots=True)
class Frame:
    """One capture line the feed can serve, or a recorded snapshot that seeds the history."""

    time_ns: int  # pacing time as recorded (the venue's send time where it has one); 0: not known
    payload: object  # the venue's parsed form, opaque to the server
    #: id counter -> (lowest, highest) in this frame; a loop moves each counter up by its span over the capture
    spans: Mapping[str, tuple[int, int]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Capture:
    frames: tuple[Frame, ...]  # served in order, re-timed and (when looping) renumbered
    seed: tuple[Frame, ...] = ()  # recorded snapshots: trades from before the first frame, history only


@dataclass(frozen=True, slots=True)
class RestAnswer:
    status: int
    body: bytes


S = TypeVar("S", bound=Session)
R = TypeVar("R")


class ReplayVenue(ABC, Generic[S, R]):
    """One venue's protocol as the fake server speaks it. Pure: no I/O, no clock reads."""

    name: ClassVar[str]
    #: URL path our client connects to ("/stream", "/v2", "")
    path: ClassVar[str]
    #: resolution of the venue's timestamps: shifts are whole multiples of it, so spacing is kept exactly
    time_unit_ns: ClassVar[int]
    #: the venue drops a connection that has not subscribed within the server's ``subscribe_deadline_s``
    has_subscribe_deadline: ClassVar[bool] = False

    @abstractmethod
    def load(self, lines: Sequence[bytes]) -> Capture:
        """Parse capture lines; raises ConfigError naming the line for one the venue would never send."""

    @abstractmethod
    def render(self, frame: Frame, shift_ns: int, offsets: Mapping[str, int]) -> tuple[R, list[ReplayTrade]]:
        """The frame with times moved by ``shift_ns`` and ids by ``offsets``: (what ``route`` takes, its trades)."""

    @abstractmethod
    def new_session(self, path: str) -> S: ...

    def on_connect(self, session: S, ctx: Ctx) -> list[Out]:
        return []

    @abstractmethod
    def on_message(self, session: S, message: str | bytes, ctx: Ctx) -> list[Out]:
        """Answer one client frame (acks, snapshots, pongs, errors)."""

    @abstractmethod
    def route(self, session: S, rendered: R) -> Out | None:
        """The part of a rendered frame this connection subscribed to, or None."""

    def on_tick(self, session: S, ctx: Ctx, beat: int) -> list[Out]:
        """Heartbeats, once per heartbeat interval; ``beat`` counts ticks since the server started."""
        return []

    def server_shutdown(self, ctx: Ctx) -> bytes:
        raise ConfigError(f"{self.name} has no server shutdown notice")

    @abstractmethod
    def rest(self, path: str, query: Mapping[str, str], ctx: Ctx) -> RestAnswer:
        """Answer a REST backfill request from ``ctx.history``."""


# -- helpers ------------------------------------------------------------------------------------------


def recent(history: Mapping[str, deque[ReplayTrade]], symbol: str, count: int) -> list[ReplayTrade]:
    """The last ``count`` released trades of ``symbol``, oldest first."""
    trades = history.get(symbol)
    if not trades:
        return []
    return list(itertools.islice(reversed(trades), count))[::-1]


def spans_of(pairs: Iterable[tuple[str, int]]) -> dict[str, tuple[int, int]]:
    """counter -> (lowest, highest) over (counter, id) pairs."""
    out: dict[str, tuple[int, int]] = {}
    for key, value in pairs:
        lo, hi = out.get(key, (value, value))
        out[key] = (min(lo, value), max(hi, value))
    return out


def format_rfc3339(ns: int, *, digits: int, trim: bool = False, sep: str = "T", suffix: str = "Z") -> str:
    """UTC time with ``digits`` fractional digits (truncated); ``trim`` drops trailing zeros, as Go does."""
    seconds, rest = divmod(ns, NS_PER_S)
    fraction = f"{rest:09d}"[:digits]
    if trim:
        fraction = fraction.rstrip("0")
    stamp = datetime.fromtimestamp(seconds, UTC).strftime(f"%Y-%m-%d{sep}%H:%M:%S")
    return stamp + (f".{fraction}" if fraction else "") + suffix


def plain_decimal(text: str) -> str:
    """A decimal number's text without exponent ("5.1e-05" -> "0.000051"), digits kept exactly."""
    value = Decimal(text)
    return format(value, "f") if "e" in text.lower() else text
