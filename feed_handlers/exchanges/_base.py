"""What every venue module provides: a parse result and a Venue description a generic runner can drive."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, cast

from feed_handlers.records import TradeRecord

__all__ = ["Kind", "MessageBuilder", "ParseResult", "Parser", "Venue", "trades_result"]

Kind = Literal["trades", "heartbeat", "ack", "status", "error", "ignored", "shutdown"]
"""What a frame was.

trades     ``trades`` holds the frame's trades (possibly none).
heartbeat  venue liveness message (Kraken heartbeat and pong, Coinbase heartbeats).
ack        a subscribe/unsubscribe (or list) request succeeded.
status     venue system status (Kraken ``status``: see ``system``).
error      the venue reports an error, usually a rejected request: see ``error``, ``req_id``.
ignored    a well-formed frame of another channel (book, ticker, ...), nothing to do.
shutdown   the venue announces it will drop the connection (Binance serverShutdown): reconnect now.
"""


@dataclass(frozen=True, slots=True)
class ParseResult:
    """What one frame said. Fields that do not apply to the venue or kind are None/empty."""

    kind: Kind
    #: Ascending by trade id within each symbol (symbols in order of first appearance).
    trades: tuple[TradeRecord, ...] = ()
    #: Venue channel or event name ("trade", "aggTrade", "market_trades", "bookTicker", "subscriptions", ...).
    channel: str | None = None
    #: Coinbase envelope ``sequence_num``, set on every Coinbase frame: contiguous per connection.
    sequence_num: int | None = None
    #: Request id echoed by an ack, error or pong (Binance ``id``, Kraken ``req_id``).
    req_id: int | str | None = None
    #: Venue symbols an ack confirms (Kraken: one per ack; Coinbase: the cumulative market_trades list).
    symbols: tuple[str, ...] = ()
    #: Kraken status ``system``: online, maintenance, cancel_only or post_only.
    system: str | None = None
    #: Coinbase ``heartbeat_counter`` (a server-wide counter: check +1 steps, it does not start at 0).
    heartbeat_counter: int | None = None
    #: The venue's error text, for kind "error".
    error: str | None = None


class _ResultSlots:
    """ParseResult's slot layout without the frozen guard (see ``records.new_trade`` for why)."""

    __slots__ = ParseResult.__slots__
    kind: Kind
    trades: tuple[TradeRecord, ...]
    channel: str | None
    sequence_num: int | None
    req_id: int | str | None
    symbols: tuple[str, ...]
    system: str | None
    heartbeat_counter: int | None
    error: str | None


def trades_result(trades: tuple[TradeRecord, ...], channel: str, sequence_num: int | None = None) -> ParseResult:
    """``ParseResult(kind="trades", trades=..., channel=..., sequence_num=...)``, several times cheaper."""
    result = _ResultSlots()
    result.kind = "trades"
    result.trades = trades
    result.channel = channel
    result.sequence_num = sequence_num
    result.req_id = None
    result.symbols = ()
    result.system = None
    result.heartbeat_counter = None
    result.error = None
    result.__class__ = ParseResult  # type: ignore[assignment]
    return cast(ParseResult, result)


class Parser(Protocol):
    """``parse(frame, *, ts_received_ns, canonical)``: pure; raises only ParseError."""

    def __call__(self, frame: bytes | str, *, ts_received_ns: int, canonical: Mapping[str, str]) -> ParseResult: ...


class MessageBuilder(Protocol):
    """Builds the text frames to send for ``symbols`` (venue spelling); [] when ``symbols`` is empty."""

    def __call__(self, symbols: Sequence[str], *, channel: str, req_id: int) -> list[str]: ...


@dataclass(frozen=True, slots=True)
class Venue:
    """A venue as data: endpoint, limits and the pure functions a generic runner calls."""

    name: str
    ws_url: str
    #: Trade channels ``subscribe`` accepts (config ``channel``); the first is the default.
    trade_channels: tuple[str, ...]
    subscribe: MessageBuilder
    unsubscribe: MessageBuilder
    parse: Parser
    #: No frame at all for this long means the connection is dead. None: the venue has no
    #: application heartbeat, rely on WebSocket ping/pong (a quiet symbol may send nothing for minutes).
    silence_timeout_s: float | None
    #: Most control messages (subscribe/unsubscribe) to send per second on one connection.
    max_messages_per_s: float
    #: The first subscribe must be sent within this long of connecting, or the venue disconnects.
    subscribe_deadline_s: float | None
    #: The venue drops a connection after this long: rotate before it. None: no documented limit.
    max_connection_age_s: float | None
    #: The venue replays recent trades on subscribe (overlapping what was seen): dedup by trade id.
    snapshot_on_subscribe: bool
    #: Most streams (symbols) one connection may carry; more are split over several connections.
    max_streams_per_connection: int | None = None
