"""The normalized trade every venue parser produces, and the exact conversions it is built with.

Prices and sizes are decimal text end to end (never float); timestamps are integer nanoseconds since
the Unix epoch (never float seconds). ``TradeRecord.to_json`` is the message published to
``market.crypto.trades.<exchange>``; its keys are the columns of ``clickhouse/bronze/<exchange>_trades_queue.sql``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TypeGuard, cast

import msgspec

__all__ = ["MAX_DECIMAL_CHARS", "TradeRecord", "decimal_text", "is_plain_decimal", "new_trade", "rfc3339_to_ns"]

#: Longest plain decimal text accepted. Bounds the work a hostile "1e999999999" could cause; silver
#: (Decimal(38, 18)) flags anything past 20 integer or 18 fractional digits anyway.
MAX_DECIMAL_CHARS = 100

# Plain decimal text of 1 to MAX_DECIMAL_CHARS characters, already in the form we publish: kept exactly
# as the venue wrote it.
_PLAIN = re.compile(rf"(?=.{{1,{MAX_DECIMAL_CHARS}}}\Z)-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?")
# JSON number grammar (leading zeros tolerated): the only other text we accept as a decimal.
_NUMBER = re.compile(r"-?[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})"
    r"(?:\.([0-9]{1,9}))?(?:[Zz]|([+-])([0-9]{2}):([0-9]{2}))"
)
# The UTC shape every venue sends, "2026-08-09T21:05:51" + optional fraction + "Z": see rfc3339_to_ns.
_UTC_SECOND = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,9})?Z")
_UTC_FRACTION = re.compile(r"(?:\.([0-9]{1,9}))?Z")
_UTC_SECOND_CHARS = len("2026-08-09T21:05:51")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SECOND = timedelta(seconds=1)
_NS_PER_S = 1_000_000_000


def decimal_text(value: Decimal | int | str) -> str:
    """Plain decimal notation of ``value``, exact, without exponent, keeping the digits that were sent.

    ``Decimal("5.1E-5")`` -> ``"0.000051"``, ``"0.00426990"`` -> ``"0.00426990"``, ``"1e3"`` -> ``"1000"``.
    Raises ValueError for anything that is not a finite number in JSON-number syntax (no ``NaN``,
    ``Infinity``, ``_``, spaces or non-ASCII digits) or whose plain text is longer than MAX_DECIMAL_CHARS.
    Sign and scale are not judged here: silver validates them and keeps bad rows visible.
    """
    if isinstance(value, str):
        if is_plain_decimal(value):
            return value
        if len(value) > 2 * MAX_DECIMAL_CHARS or not _NUMBER.fullmatch(value):
            raise ValueError(f"not a decimal number: {value[:40]!r}")
        try:
            number = Decimal(value)
        except ArithmeticError as exc:  # decimal.InvalidOperation: exponent beyond what Decimal holds
            raise ValueError(f"decimal out of range: {value[:40]!r}") from exc
    elif isinstance(value, bool):  # bool is an int subclass; True is not a price
        raise ValueError(f"not a decimal number: {value!r}")
    elif isinstance(value, int):
        number = Decimal(value)
    else:
        number = value
    if not number.is_finite():
        raise ValueError(f"not a finite number: {number}")
    sign, digits, exponent = number.as_tuple()
    assert isinstance(exponent, int)  # finite, so never 'n'/'N'/'F'
    length = sign + (len(digits) + exponent if exponent >= 0 else max(len(digits), 1 - exponent) + 1)
    if length > MAX_DECIMAL_CHARS:
        raise ValueError(f"decimal too long for plain notation: about {length} characters")
    return format(number, "f")


# Plain texts seen lately: prices and sizes repeat (tick and lot sizes), and a set lookup costs a fraction
# of the regex. Cleared when full, so memory stays bounded (a few hundred KB) whatever a venue sends.
_plain_seen: set[str] = set()
_PLAIN_SEEN_MAX = 4096


def is_plain_decimal(value: object) -> TypeGuard[str]:
    """True if ``value`` is a str that ``decimal_text`` returns as it is: a parser's fast path may take it as is."""
    if type(value) is not str:
        return False
    if value in _plain_seen:
        return True
    if _PLAIN.fullmatch(value) is None:
        return False
    if len(_plain_seen) >= _PLAIN_SEEN_MAX:
        _plain_seen.clear()
    _plain_seen.add(value)
    return True


# Seconds since the epoch of the "YYYY-MM-DDTHH:MM:SS" (UTC) texts seen lately. Trades come many to a
# second, so the datetime arithmetic runs about once a second instead of once a trade. Bounded like _plain_seen.
_seconds: dict[str, int] = {}
_SECONDS_MAX = 1024


def rfc3339_to_ns(text: str) -> int:
    """Nanoseconds since the epoch of an RFC 3339 timestamp, keeping every fractional digit.

    Accepts 0 to 9 fractional digits and a ``Z`` or ``±hh:mm`` offset, e.g. Coinbase's
    ``"2026-08-09T21:05:38.50436Z"`` -> ``1786309538504360000``. No float and no microsecond
    truncation (``datetime`` would drop the last three digits of a 9-digit fraction).
    Raises ValueError for anything else, including impossible dates and leap seconds.
    """
    # Fast path: a second already seen (so a valid date and time), then only the fraction and "Z" to read.
    seconds = _seconds.get(text[:_UTC_SECOND_CHARS])
    if seconds is not None:
        tail = _UTC_FRACTION.fullmatch(text, _UTC_SECOND_CHARS)
        if tail is not None:
            fraction = tail[1]
            return seconds * _NS_PER_S + (int(fraction.ljust(9, "0")) if fraction else 0)
    ns = _rfc3339_to_ns(text)
    if _UTC_SECOND.fullmatch(text):  # remember its second: "Z" and a fraction below one second
        if len(_seconds) >= _SECONDS_MAX:
            _seconds.clear()
        _seconds[text[:_UTC_SECOND_CHARS]] = ns // _NS_PER_S
    return ns


def _rfc3339_to_ns(text: str) -> int:
    match = _RFC3339.fullmatch(text)
    if match is None:
        raise ValueError(f"not an RFC 3339 timestamp: {text[:40]!r}")
    year, month, day, hour, minute, second, fraction, sign, off_h, off_m = match.groups()
    moment = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second), tzinfo=UTC)
    seconds = (moment - _EPOCH) // _SECOND
    if sign is not None:
        if int(off_h) > 23 or int(off_m) > 59:
            raise ValueError(f"bad UTC offset in {text!r}")
        offset = (int(off_h) * 3600 + int(off_m) * 60) * (1 if sign == "+" else -1)
        seconds -= offset
    return seconds * _NS_PER_S + (int(fraction.ljust(9, "0")) if fraction else 0)


@dataclass(frozen=True, slots=True)
class TradeRecord:
    """One trade as K2 publishes it, whatever the venue.

    ``side`` is the TAKER side ("buy"/"sell"). ``price``/``quantity`` are plain decimal text as the
    venue sent them. ``extras`` holds the venue's own columns (see the bronze queue tables); they are
    published as top-level keys next to the common ones and must not reuse a common name.
    """

    exchange: str
    symbol: str
    canonical_symbol: str
    trade_id: str
    price: str
    quantity: str
    side: str
    ts_event_ns: int
    ts_received_ns: int
    extras: Mapping[str, object] = field(hash=False)

    def __post_init__(self) -> None:
        _check_extras(self.extras)

    def to_json(self) -> bytes:
        """One flat JSON object: the common fields in declaration order, then the extras.

        msgspec writes the same bytes as ``orjson.dumps`` for these values, and 0.6 us faster for a record
        that is kept (as published records are, until their batch goes out): orjson allocates a 1 KiB
        buffer and shrinks it, msgspec grows one (docs/benchmarks.md).
        """
        return _encode_json(
            {
                "exchange": self.exchange,
                "symbol": self.symbol,
                "canonical_symbol": self.canonical_symbol,
                "trade_id": self.trade_id,
                "price": self.price,
                "quantity": self.quantity,
                "side": self.side,
                "ts_event_ns": self.ts_event_ns,
                "ts_received_ns": self.ts_received_ns,
                **self.extras,
            }
        )


_encode_json = msgspec.json.Encoder().encode
_COMMON_FIELDS = frozenset(f.name for f in fields(TradeRecord)) - {"extras"}


def _check_extras(extras: Mapping[str, object]) -> None:
    if not _COMMON_FIELDS.isdisjoint(extras):
        raise ValueError(f"extras would overwrite common fields: {sorted(_COMMON_FIELDS.intersection(extras))}")


class _TradeSlots:
    """TradeRecord's slot layout without the frozen guard: ``new_trade`` fills one with plain attribute stores."""

    __slots__ = TradeRecord.__slots__
    exchange: str
    symbol: str
    canonical_symbol: str
    trade_id: str
    price: str
    quantity: str
    side: str
    ts_event_ns: int
    ts_received_ns: int
    extras: Mapping[str, object]


def new_trade(
    exchange: str,
    symbol: str,
    canonical_symbol: str,
    trade_id: str,
    price: str,
    quantity: str,
    side: str,
    ts_event_ns: int,
    ts_received_ns: int,
    extras: Mapping[str, object],
) -> TradeRecord:
    """``TradeRecord(...)`` with the same arguments and checks, several times cheaper: for the parsers' hot paths.

    A frozen dataclass's ``__init__`` stores every field through ``object.__setattr__``, the costliest part of
    parsing a trade. Here the fields go into a ``_TradeSlots`` with plain stores, and the object then becomes a
    TradeRecord: ``__class__`` assignment is allowed between classes with identical slots.
    """
    if not _COMMON_FIELDS.isdisjoint(extras):
        _check_extras(extras)  # raises
    record = _TradeSlots()
    record.exchange = exchange
    record.symbol = symbol
    record.canonical_symbol = canonical_symbol
    record.trade_id = trade_id
    record.price = price
    record.quantity = quantity
    record.side = side
    record.ts_event_ns = ts_event_ns
    record.ts_received_ns = ts_received_ns
    record.extras = extras
    record.__class__ = TradeRecord  # type: ignore[assignment]
    return cast(TradeRecord, record)
