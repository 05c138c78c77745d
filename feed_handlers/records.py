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

import orjson

__all__ = ["MAX_DECIMAL_CHARS", "TradeRecord", "decimal_text", "rfc3339_to_ns"]

#: Longest plain decimal text accepted. Bounds the work a hostile "1e999999999" could cause; silver
#: (Decimal(38, 18)) flags anything past 20 integer or 18 fractional digits anyway.
MAX_DECIMAL_CHARS = 100

# Plain decimal text, already in the form we publish: kept exactly as the venue wrote it.
_PLAIN = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?")
# JSON number grammar (leading zeros tolerated): the only other text we accept as a decimal.
_NUMBER = re.compile(r"-?[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})"
    r"(?:\.([0-9]{1,9}))?(?:[Zz]|([+-])([0-9]{2}):([0-9]{2}))"
)
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
        if len(value) <= MAX_DECIMAL_CHARS and _PLAIN.fullmatch(value):
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


def rfc3339_to_ns(text: str) -> int:
    """Nanoseconds since the epoch of an RFC 3339 timestamp, keeping every fractional digit.

    Accepts 0 to 9 fractional digits and a ``Z`` or ``±hh:mm`` offset, e.g. Coinbase's
    ``"2026-08-09T21:05:38.50436Z"`` -> ``1786309538504360000``. No float and no microsecond
    truncation (``datetime`` would drop the last three digits of a 9-digit fraction).
    Raises ValueError for anything else, including impossible dates and leap seconds.
    """
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
        clash = _COMMON_FIELDS.intersection(self.extras)
        if clash:
            raise ValueError(f"extras would overwrite common fields: {sorted(clash)}")

    def to_json(self) -> bytes:
        """One flat JSON object: the common fields in declaration order, then the extras."""
        return orjson.dumps(
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


_COMMON_FIELDS = frozenset(f.name for f in fields(TradeRecord)) - {"extras"}
