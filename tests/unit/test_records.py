"""TradeRecord and the exact conversions: decimal text and RFC 3339 nanoseconds."""

from __future__ import annotations

import dataclasses
from decimal import Decimal

import orjson
import pytest

from feed_handlers.records import MAX_DECIMAL_CHARS, TradeRecord, decimal_text, rfc3339_to_ns


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (Decimal("5.1E-5"), "0.000051"),
        (Decimal("5.1e-05"), "0.000051"),
        ("5.1e-05", "0.000051"),
        ("0.00426990", "0.00426990"),  # trailing zeros the venue sent stay
        (Decimal("0.00426990"), "0.00426990"),
        ("33.82000000", "33.82000000"),
        (Decimal("1E+3"), "1000"),
        ("1.0E+3", "1000"),
        ("1e-7", "0.0000001"),
        (Decimal("65083.123456789012345678"), "65083.123456789012345678"),
        (65083, "65083"),
        ("0", "0"),
        ("-3.5", "-3.5"),  # sign is silver's to judge, not the parser's
        ("007.50", "7.50"),
    ],
)
def test_decimal_text_is_plain_and_exact(value: Decimal | int | str, expected: str) -> None:
    assert decimal_text(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "",
        " 1",
        "1 ",
        "1_000",
        "+1",
        "1.",
        ".5",
        "0x10",
        "NaN",
        "nan",
        "Infinity",
        "-inf",
        "1e",
        "\u0661\u0662",  # Arabic-Indic digits: Decimal() would take them
        "1" * (MAX_DECIMAL_CHARS + 1),
        "1e999999999",
        "1e99999999999999999999999",  # beyond what Decimal can hold at all
        Decimal("NaN"),
        Decimal("Infinity"),
        Decimal("1E+400"),
        Decimal("1E-400"),
        True,
    ],
)
def test_decimal_text_rejects_non_numbers_and_huge_values(value: Decimal | int | str) -> None:
    with pytest.raises(ValueError):
        decimal_text(value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # 2026-08-09T21:05:51Z is 1786309551 s (date -u -d ... +%s); the fraction is appended to 9 digits.
        ("2026-08-09T21:05:51.426861Z", 1_786_309_551_426_861_000),
        ("2026-08-09T21:05:38.50436Z", 1_786_309_538_504_360_000),  # 5 digits (Coinbase)
        ("2026-08-09T21:05:16.1542Z", 1_786_309_516_154_200_000),  # 4 digits (Coinbase)
        ("2026-08-09T21:05:48.228846629Z", 1_786_309_548_228_846_629),  # 9 digits: nothing truncated
        ("2026-08-09T21:05:51Z", 1_786_309_551_000_000_000),
        ("2026-08-09T23:05:51.000000001+02:00", 1_786_309_551_000_000_001),
        ("2026-08-09T20:35:51.5-00:30", 1_786_309_551_500_000_000),
        ("2023-09-25T07:48:36.925533Z", 1_695_628_116_925_533_000),  # Kraken
        ("1970-01-01T00:00:00Z", 0),
        ("2024-02-29T00:00:00z", 1_709_164_800_000_000_000),
    ],
)
def test_rfc3339_to_ns_keeps_every_digit(text: str, expected: int) -> None:
    assert rfc3339_to_ns(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "2026-08-09",
        "2026-08-09T21:05:51",  # no zone
        "2026-08-09 21:05:51Z",
        "2026-08-09T21:05:51.Z",
        "2026-08-09T21:05:51.1234567890Z",  # 10 fractional digits
        "2026-13-09T21:05:51Z",
        "2026-02-30T21:05:51Z",
        "2025-02-29T00:00:00Z",
        "2026-08-09T24:00:00Z",
        "2016-12-31T23:59:60Z",  # leap second
        "2026-08-09T21:05:51+24:00",
        "2026-08-09T21:05:51+01:60",
        "\uff12\uff10\uff12\uff16-08-09T21:05:51Z",  # full-width digits
        "2026-08-09 21:05:48.854840045 +0000 UTC",  # Coinbase heartbeat current_time is not RFC 3339
    ],
)
def test_rfc3339_to_ns_rejects_malformed(text: str) -> None:
    with pytest.raises(ValueError):
        rfc3339_to_ns(text)


def _record(**extras: object) -> TradeRecord:
    return TradeRecord(
        exchange="kraken",
        symbol="BTC/USD",
        canonical_symbol="BTC-USD",
        trade_id="83412377",
        price="65083.123456789012345678",
        quantity="0.000051",
        side="sell",
        ts_event_ns=1_786_309_551_426_861_000,
        ts_received_ns=1_786_309_551_500_000_123,
        extras=extras,
    )


def test_to_json_is_one_flat_object_common_fields_then_extras() -> None:
    record = _record(ord_type="market", is_snapshot=False)
    raw = record.to_json()
    assert raw == (
        b'{"exchange":"kraken","symbol":"BTC/USD","canonical_symbol":"BTC-USD","trade_id":"83412377",'
        b'"price":"65083.123456789012345678","quantity":"0.000051","side":"sell",'
        b'"ts_event_ns":1786309551426861000,"ts_received_ns":1786309551500000123,'
        b'"ord_type":"market","is_snapshot":false}'
    )
    assert list(orjson.loads(raw)) == [
        "exchange",
        "symbol",
        "canonical_symbol",
        "trade_id",
        "price",
        "quantity",
        "side",
        "ts_event_ns",
        "ts_received_ns",
        "ord_type",
        "is_snapshot",
    ]


def test_to_json_writes_none_as_null() -> None:
    decoded = orjson.loads(_record(first_trade_id=None, last_trade_id=7).to_json())
    assert decoded["first_trade_id"] is None
    assert decoded["last_trade_id"] == 7


def test_extras_cannot_shadow_a_common_field() -> None:
    with pytest.raises(ValueError, match="price"):
        _record(price="1")


def test_record_is_frozen_slotted_and_hashable() -> None:
    record = _record(ord_type="market", is_snapshot=False)
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.price = "1"  # type: ignore[misc]
    assert not hasattr(record, "__dict__")
    assert hash(record) == hash(_record(ord_type="limit"))  # extras stay out of the hash
    assert record == _record(ord_type="market", is_snapshot=False)
    assert record != _record(ord_type="limit", is_snapshot=False)
    assert [f.name for f in dataclasses.fields(TradeRecord)] == [
        "exchange",
        "symbol",
        "canonical_symbol",
        "trade_id",
        "price",
        "quantity",
        "side",
        "ts_event_ns",
        "ts_received_ns",
        "extras",
    ]


def orjson_record(record: TradeRecord) -> bytes:
    """What to_json wrote before it moved to msgspec: the same dict through orjson."""
    fields = {f.name: getattr(record, f.name) for f in dataclasses.fields(record) if f.name != "extras"}
    return orjson.dumps({**fields, **record.extras})


@pytest.mark.parametrize(
    "text", ['a"b\\c', "\x00\x01\x1f\x7f", "\b\f\n\r\t", "é€😀", "\u2028\u2029", "</script>", "/", ""]
)
def test_to_json_escapes_strings_as_orjson_does(text: str) -> None:
    record = _record(note=text, big=2**64 - 1, small=-(2**63), flag=True, none=None)
    assert record.to_json() == orjson_record(record)
