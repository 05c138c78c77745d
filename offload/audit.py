"""The daily audit: per table and UTC day, ClickHouse and Iceberg agree exactly on the closed window.

Closed window = rows the offload has committed, i.e. inserted at or before the table's committed
watermark (the snapshot summary, not the mirror). Per layer, for the day on the spec's event column:

- bronze: rows with ``ingested_at <= watermark``; quantity is the published text, summed as a decimal
  where it is decimal text (the same pattern on both sides; other text counts as a row, not in the sum).
- silver: one row per key among rows with ``ts_ingested <= watermark`` (the earliest copy, as the
  offload takes it), so unmerged duplicates count once without FINAL's cost; quantity summed.
- gold: every candle of the day whose bucket closed at or before the watermark; volume summed.

The Iceberg side reads the data files (one at a time, with their deletes), never metadata counts, so a
lost or unreadable file is caught and named. Status:

- ``ok``: row counts and sums are equal.
- ``missing_data``: Iceberg has fewer rows than ClickHouse.
- ``error``: a data file is missing or unreadable, Iceberg has extra rows, sums differ at equal counts,
  or the table could not be audited at all (ClickHouse down, no cold table).

No tolerance: any difference is a finding. One table's failure is logged and the others go on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.catalog import Catalog
from pyiceberg.expressions import And, BooleanExpression, GreaterThanOrEqual, LessThan, LessThanOrEqual, Reference
from pyiceberg.expressions.literals import literal
from pyiceberg.io.pyarrow import ArrowScan
from pyiceberg.table import Table

from k2.chclient import connect
from k2.settings import Settings
from offload.catalog import committed_watermark, open_catalog
from offload.state import AuditRow, StateStore
from offload.tables import TableSpec

__all__ = ["AuditReport", "audit_table", "audit_tables", "previous_utc_day"]

log = logging.getLogger("k2.audit")

#: decimal text both sides sum (re2 in ClickHouse and in Arrow); fits Decimal256(76, 30)
_DECIMAL_TEXT = r"^-?[0-9]{1,40}([.][0-9]{1,30})?$"
_BRONZE_SCALE = 30
_SCALE = 18
_TS = "fromUnixTimestamp64Micro({{{name}:Int64}}, 'UTC')"
_LO, _HI, _WM = (_TS.format(name=n) for n in ("lo", "hi", "wm"))


@dataclass(frozen=True)
class _Side:
    rows: int
    quantity: Decimal


@dataclass
class AuditReport:
    run_id: str
    day: date
    rows: list[AuditRow] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(r.status == "ok" for r in self.rows)

    def summary(self) -> str:
        lines = [f"audit {self.run_id} of {self.day.isoformat()}: {'ok' if self.ok else 'FAILED'}"]
        for r in self.rows:
            counts = f"rows ch={r.clickhouse_rows} ice={r.iceberg_rows}"
            sums = f"quantity ch={r.clickhouse_quantity} ice={r.iceberg_quantity}"
            lines.append(f"  {r.table_name:<26} {r.status:<12} {counts} {sums}  {r.detail}".rstrip())
        return "\n".join(lines)


def previous_utc_day(now: datetime | None = None) -> date:
    return (now or datetime.now(UTC)).astimezone(UTC).date() - timedelta(days=1)


def _micros(moment: datetime) -> int:
    return int(moment.timestamp()) * 1_000_000 + moment.microsecond


def _plain(value: Decimal) -> str:
    """Exact, without exponent or trailing zeros: 1.50 -> '1.5', 0E-18 -> '0'."""
    text = format(value, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


# -- ClickHouse ------------------------------------------------------------------------------------------


def _clickhouse_sql(spec: TableSpec) -> str:
    q, day = spec.quantity_column or "0", f"{spec.event_column} >= {_LO} AND {spec.event_column} < {_HI}"
    if spec.layer == "bronze":
        return (
            f"SELECT count(), toString(sumIf(toDecimal256OrZero({q}, {_BRONZE_SCALE}), match({q}, {{re:String}}))) "
            f"FROM {spec.source} WHERE {day} AND {spec.ingest_column} <= {_WM}"
        )
    if spec.layer == "silver":
        return (
            f"SELECT count(), toString(sum(toDecimal256(q, {_SCALE}))) FROM ("
            f" SELECT argMin({q}, {spec.ingest_column}) AS q FROM {spec.source}"
            f" WHERE {day} AND {spec.ingest_column} <= {_WM} GROUP BY {', '.join(spec.key)})"
        )
    return (
        f"SELECT count(), toString(sum(toDecimal256({q}, {_SCALE}))) FROM {spec.source} "
        f"WHERE {day} AND {spec.event_column} + toIntervalSecond({{n:UInt32}}) <= {_WM}"
    )


def _clickhouse_side(client: Any, spec: TableSpec, lo_us: int, hi_us: int, wm_us: int) -> _Side:
    params = {"lo": lo_us, "hi": hi_us, "wm": wm_us, "n": spec.interval_s, "re": _DECIMAL_TEXT}
    rows, total = client.query(_clickhouse_sql(spec), parameters=params).result_rows[0]
    return _Side(int(rows), Decimal(total or "0"))


# -- Iceberg ---------------------------------------------------------------------------------------------


def _iceberg_filter(spec: TableSpec, lo_us: int, hi_us: int, wm_us: int) -> BooleanExpression:
    event = Reference(spec.event_column)
    day = And(GreaterThanOrEqual(term=event, value=literal(lo_us)), LessThan(term=event, value=literal(hi_us)))
    if spec.layer == "gold":  # bucket + interval <= watermark
        return And(day, LessThanOrEqual(term=event, value=literal(wm_us - spec.interval_s * 1_000_000)))
    return And(day, LessThanOrEqual(term=Reference(spec.ingest_column), value=literal(wm_us)))


def _quantity_sum(spec: TableSpec, column: pa.ChunkedArray) -> Decimal:
    if spec.layer == "bronze":
        decimal_text = pc.fill_null(pc.match_substring_regex(column, _DECIMAL_TEXT), False)
        column = pc.filter(column, decimal_text).cast(pa.decimal256(76, _BRONZE_SCALE))
    else:
        column = column.cast(pa.decimal256(76, _SCALE))
    total = pc.sum(column).as_py()
    return Decimal(total) if total is not None else Decimal(0)


def _iceberg_side(table: Table, spec: TableSpec, lo_us: int, hi_us: int, wm_us: int) -> tuple[_Side, list[str]]:
    """Rows and quantity read from the data files; plus the files that could not be read."""
    quantity = spec.quantity_column
    if quantity is None:
        raise ValueError(f"{spec.name} has no quantity column to audit")
    scan = table.scan(row_filter=_iceberg_filter(spec, lo_us, hi_us, wm_us), selected_fields=(quantity,))
    reader = ArrowScan(table.metadata, table.io, scan.projection(), scan.row_filter, scan.case_sensitive)
    rows, total, unreadable = 0, Decimal(0), []
    for task in scan.plan_files():
        path = task.file.file_path
        if not table.io.new_input(path).exists():
            unreadable.append(f"{path} (missing)")
            continue
        try:
            batch = reader.to_table([task])
        except Exception as exc:  # a corrupt or unreadable file is a finding, not a crash
            unreadable.append(f"{path} ({type(exc).__name__}: {exc})")
            continue
        rows += batch.num_rows
        total += _quantity_sum(spec, batch.column(quantity))
    return _Side(rows, total), unreadable


# -- one table, all tables -------------------------------------------------------------------------------


def _verdict(ch: _Side, ice: _Side, unreadable: list[str]) -> tuple[str, str]:
    if unreadable:
        return "error", f"unreadable data file(s): {'; '.join(unreadable)}"
    if ice.rows < ch.rows:
        lacking = f"{ch.rows - ice.rows} row(s), quantity {_plain(ch.quantity - ice.quantity)}"
        return "missing_data", f"iceberg lacks {lacking}"
    if ice.rows > ch.rows:
        return "error", f"iceberg has {ice.rows - ch.rows} row(s) clickhouse does not"
    if ice.quantity != ch.quantity:
        return "error", f"quantity differs by {_plain(ice.quantity - ch.quantity)} at equal row counts"
    return "ok", ""


def audit_table(client: Any, catalog: Catalog, spec: TableSpec, day: date, run_id: str) -> AuditRow:
    """Compare one table's closed window of ``day``; every failure becomes a row with status error."""
    lo = datetime(day.year, day.month, day.day, tzinfo=UTC)
    lo_us, hi_us = _micros(lo), _micros(lo + timedelta(days=1))

    def row(status: str, detail: str, ch: _Side | None = None, ice: _Side | None = None) -> AuditRow:
        return AuditRow(
            run_id, day.isoformat(), spec.name, ch.rows if ch else None, ice.rows if ice else None,
            _plain(ch.quantity) if ch else None, _plain(ice.quantity) if ice else None, status, detail,
        )  # fmt: skip

    try:
        table = catalog.load_table(spec.identifier)
        wm_us, _ = committed_watermark(table)
        ch = _clickhouse_side(client, spec, lo_us, hi_us, wm_us)
        ice, unreadable = _iceberg_side(table, spec, lo_us, hi_us, wm_us)
    except Exception as exc:  # this table could not be audited; the others still are
        log.exception("audit %s %s failed", spec.name, day)
        return row("error", f"{type(exc).__name__}: {exc}")
    status, detail = _verdict(ch, ice, unreadable)
    if wm_us < hi_us:
        when = "nothing" if wm_us < lo_us else datetime.fromtimestamp(wm_us / 1e6, UTC).isoformat()
        detail = f"{detail}; " if detail else ""
        detail += f"window closed up to {when} (watermark before the day's end)"
    return row(status, detail, ch, ice)


def audit_tables(
    settings: Settings,
    specs: list[TableSpec],
    day: date | None = None,
    *,
    run_id: str,
) -> AuditReport:
    """Audit ``specs`` for ``day`` (default: the previous UTC day); every row goes to maintenance_audit_log."""
    report = AuditReport(run_id, day or previous_utc_day())
    state = StateStore(settings.state_url)
    client = connect(settings)
    try:
        catalog = open_catalog(settings)
        for spec in specs:
            result = audit_table(client, catalog, spec, report.day, run_id)
            if result.status != "ok":
                log.warning("audit %s %s: %s %s", spec.name, report.day, result.status, result.detail)
            state.record_audit(result)
            report.rows.append(result)
    finally:
        client.close()
        state.close()
    return report
