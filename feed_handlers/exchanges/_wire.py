"""Strict readers for venue JSON: every surprise becomes a ParseError naming the field, nothing else escapes."""

from __future__ import annotations

import json
from collections.abc import Iterable
from decimal import Decimal

import orjson

from feed_handlers.errors import ParseError
from feed_handlers.records import TradeRecord, decimal_text, rfc3339_to_ns

INT64_MAX = 2**63 - 1
UINT64_MAX = 2**64 - 1
NS_PER_MS = 1_000_000
#: Largest epoch milliseconds whose nanoseconds fit Int64.
MAX_MS = INT64_MAX // NS_PER_MS

JsonObject = dict[str, object]


def load(frame: bytes | str) -> JsonObject:
    """A frame whose numbers we never need exactly (prices are strings): orjson, top level must be an object.

    orjson rejects invalid UTF-8, lone surrogates, NaN/Infinity and nesting deeper than 1024; integers
    beyond 64 bits come back as float and fail the int checks below.
    """
    try:
        value = orjson.loads(frame)
    except (orjson.JSONDecodeError, TypeError) as exc:
        raise ParseError(f"invalid JSON: {exc}") from exc
    return value if type(value) is dict else as_object(value, "frame")


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not a JSON number")


def load_exact(frame: bytes | str) -> JsonObject:
    """A frame whose JSON numbers are prices: floats become Decimal from their text, never float."""
    try:
        text = frame.decode("utf-8") if isinstance(frame, bytes) else frame
        value = json.loads(text, parse_float=Decimal, parse_constant=_reject_constant)
    # ValueError covers JSONDecodeError, UnicodeDecodeError and int-digit limits; ArithmeticError is
    # decimal.InvalidOperation for exponents Decimal cannot hold; RecursionError is deep nesting.
    except (ValueError, TypeError, ArithmeticError, RecursionError) as exc:
        raise ParseError(f"invalid JSON: {exc}") from exc
    return as_object(value, "frame")


def as_object(value: object, what: str) -> JsonObject:
    if not isinstance(value, dict):
        raise ParseError(f"{what} must be a JSON object, not {_type(value)}")
    return value


def get_object(obj: JsonObject, key: str) -> JsonObject:
    return as_object(_required(obj, key), repr(key))


def get_list(obj: JsonObject, key: str) -> list[object]:
    value = _required(obj, key)
    if not isinstance(value, list):
        raise ParseError(f"{key!r} must be a list, not {_type(value)}")
    return value


def as_str(value: object, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise ParseError(f"{what} must be a non-empty string, not {_type(value)}")
    if not value.isascii():
        try:
            value.encode()  # lone surrogates from "\ud800" escapes could not be published
        except UnicodeEncodeError as exc:
            raise ParseError(f"{what} is not valid Unicode") from exc
    return value


def get_str(obj: JsonObject, key: str) -> str:
    return as_str(_required(obj, key), repr(key))


def as_int(value: object, what: str, *, maximum: int = INT64_MAX) -> int:
    """A non-negative JSON integer (bool is not one) no larger than ``maximum``."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise ParseError(f"{what} must be an integer, not {_type(value)}")
    if not 0 <= value <= maximum:
        raise ParseError(f"{what} out of range: {str(value)[:30]}")
    return value


def get_int(obj: JsonObject, key: str, *, maximum: int = INT64_MAX) -> int:
    return as_int(_required(obj, key), repr(key), maximum=maximum)


def get_bool(obj: JsonObject, key: str) -> bool:
    value = _required(obj, key)
    if not isinstance(value, bool):
        raise ParseError(f"{key!r} must be true or false, not {_type(value)}")
    return value


def get_decimal(obj: JsonObject, key: str) -> str:
    """Exact plain decimal text from a JSON string, integer or (exact loader only) Decimal; never a float."""
    value = _required(obj, key)
    if not isinstance(value, str | int | Decimal) or isinstance(value, bool):
        raise ParseError(f"{key!r} must be a decimal number, not {_type(value)}")
    try:
        return decimal_text(value)
    except ValueError as exc:
        raise ParseError(f"{key!r}: {exc}") from exc


def get_ms_as_ns(obj: JsonObject, key: str) -> int:
    """Epoch milliseconds to nanoseconds, exact, within Int64."""
    return get_int(obj, key, maximum=MAX_MS) * NS_PER_MS


def get_rfc3339_ns(obj: JsonObject, key: str) -> int:
    text = get_str(obj, key)
    try:
        ns = rfc3339_to_ns(text)
    except ValueError as exc:
        raise ParseError(f"{key!r}: {exc}") from exc
    if not 0 <= ns <= INT64_MAX:
        raise ParseError(f"{key!r} out of range: {text[:40]!r}")
    return ns


def ascending(trades: Iterable[tuple[int, TradeRecord]]) -> tuple[TradeRecord, ...]:
    """Trades sorted by numeric id within each symbol; symbols keep their order of first appearance."""
    pairs = list(trades)
    first_seen: dict[str, int] = {}
    for _, record in pairs:
        first_seen.setdefault(record.symbol, len(first_seen))
    pairs.sort(key=lambda pair: (first_seen[pair[1].symbol], pair[0]))
    return tuple(record for _, record in pairs)


def _required(obj: JsonObject, key: str) -> object:
    try:
        return obj[key]
    except KeyError:
        raise ParseError(f"missing {key!r}") from None


def _type(value: object) -> str:
    return "null" if value is None else type(value).__name__
