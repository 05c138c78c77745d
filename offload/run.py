"""One offload run: bronze tables in parallel, then silver, then gold tables in parallel.

Per table: take the table's lock, read the committed watermark from the Iceberg snapshot (repairing the
mirror if a crash left it behind), read the window from ClickHouse, commit rows + new watermark in one
Iceberg commit, then update the mirror. A crash before the commit leaves the old watermark (the window is
read again); a crash after it leaves the new one in Iceberg (the next run starts from there).
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

from k2.chclient import connect
from k2.settings import Settings, redact_url
from offload.catalog import RUN_ID, WATERMARK, committed_watermark, ensure_table, open_catalog
from offload.coldsql import expose_cold_table
from offload.engines.base import Engine
from offload.errors import OffloadError, TableBusyError
from offload.plan import clickhouse_now_us, drop_already_cold, extract, replace_filter, shape_of
from offload.state import StateStore
from offload.tables import TableSpec

__all__ = ["RunReport", "TableResult", "make_engine", "new_run_id", "offload_all", "offload_table", "set_fault"]

log = logging.getLogger("k2.offload")
Status = Literal["ok", "failed", "busy", "dry_run"]

# Crash-injection points, in order; tests install a hook that kills the process at one of them.
FAULT_POINTS = ("after_extract", "before_commit", "after_commit", "after_state")
_fault_hook: Callable[[str, str], None] | None = None


def set_fault(hook: Callable[[str, str], None] | None) -> None:
    """Call ``hook(point, table)`` at every fault point (tests only)."""
    global _fault_hook  # noqa: PLW0603
    _fault_hook = hook


def _fault(point: str, table: str) -> None:
    if _fault_hook is not None:
        _fault_hook(point, table)


@dataclass(frozen=True)
class TableResult:
    table: str
    status: Status
    rows: int = 0
    watermark_from_us: int = 0
    watermark_to_us: int = 0
    attempts: int = 1
    duration_s: float = 0.0
    error: str = ""


@dataclass
class RunReport:
    run_id: str
    engine: str
    results: list[TableResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(r.status != "failed" for r in self.results)  # "busy": another run is on that table

    def summary(self) -> str:
        lines = [f"offload run {self.run_id} (engine {self.engine}): {'ok' if self.ok else 'FAILED'}"]
        for r in self.results:
            window = f"({r.watermark_from_us}, {r.watermark_to_us}]"
            tail = f"  {r.error}" if r.error else ""
            lines.append(f"  {r.table:<26} {r.status:<8} rows={r.rows:<9} window_us={window} {r.duration_s:.2f}s{tail}")
        return "\n".join(lines)


def new_run_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def make_engine(settings: Settings, name: str | None = None) -> Engine:
    chosen = name or settings.offload_engine
    if chosen == "pyiceberg":
        from offload.engines.pyiceberg_engine import PyIcebergEngine  # noqa: PLC0415

        return PyIcebergEngine()
    if chosen == "spark":
        from offload.engines.spark_engine import SparkEngine  # noqa: PLC0415 - JVM only when asked for

        return SparkEngine(settings)
    raise ValueError(f"unknown offload engine {chosen!r} (pyiceberg or spark)")


def offload_table(
    settings: Settings, spec: TableSpec, engine: Engine, state: StateStore, run_id: str, *, dry_run: bool = False
) -> TableResult:
    """One attempt at one table. Raises OffloadError (TableBusyError when another run holds it)."""
    started = time.monotonic()
    with state.lock(spec.name, run_id, settings.offload_lock_ttl_s):
        client = connect(settings)
        try:
            catalog = open_catalog(settings)
            shape = shape_of(client, spec)
            table = ensure_table(catalog, spec, shape)
            expose_cold_table(client, settings, spec, table)
            low, snapshot_id = committed_watermark(table)
            mirror = state.watermark(spec.name)
            if mirror is None or mirror.watermark_us != low:
                if mirror is not None:  # a crash between the Iceberg commit and the mirror update
                    log.warning("offload %s: mirror watermark %s != committed %s; repaired",
                                spec.name, mirror.watermark_us, low)  # fmt: skip
                state.repair(spec.name, low, snapshot_id)
            high = clickhouse_now_us(client) - int(settings.offload_safety_buffer_s * 1_000_000)
            if high <= low:
                return TableResult(spec.name, "ok", 0, low, low, duration_s=time.monotonic() - started)
            target = table.schema().as_arrow()
            batch = drop_already_cold(table, extract(client, spec, shape, target, low, high), spec)
            _fault("after_extract", spec.name)
            if dry_run:
                return TableResult(
                    spec.name, "dry_run", batch.num_rows, low, high, duration_s=time.monotonic() - started
                )
            _fault("before_commit", spec.name)
            properties = {WATERMARK: str(high), RUN_ID: run_id}
            snapshot = engine.commit(table, batch, properties, replace_filter(batch, spec))
            _fault("after_commit", spec.name)
            duration = time.monotonic() - started
            state.record_success(spec.name, high, snapshot, batch.num_rows, duration)
            _fault("after_state", spec.name)
            return TableResult(spec.name, "ok", batch.num_rows, low, high, duration_s=duration)
        except OffloadError:
            raise
        except Exception as exc:  # ClickHouse, catalog, Arrow: the table failed, the run goes on
            raise OffloadError(f"{spec.name}: {type(exc).__name__}: {exc}") from exc
        finally:
            client.close()


def _with_retries(
    settings: Settings, spec: TableSpec, engine: Engine, state: StateStore, run_id: str, dry_run: bool
) -> TableResult:
    attempts = settings.offload_retries + 1
    for attempt in range(1, attempts + 1):
        try:
            result = offload_table(settings, spec, engine, state, run_id, dry_run=dry_run)
            return TableResult(**{**result.__dict__, "attempts": attempt})
        except TableBusyError as exc:
            return TableResult(spec.name, "busy", attempts=attempt, error=str(exc))
        except OffloadError as exc:
            log.warning("offload %s attempt %d/%d failed: %s", spec.name, attempt, attempts, exc)
            if attempt == attempts:
                state.record_failure(spec.name, str(exc))
                return TableResult(spec.name, "failed", attempts=attempt, error=str(exc))
            time.sleep(min(2.0**attempt, 30.0))
    raise AssertionError("unreachable")


def _stage(specs: Iterable[TableSpec], run: Callable[[TableSpec], TableResult]) -> list[TableResult]:
    specs = list(specs)
    if len(specs) <= 1:
        return [run(s) for s in specs]
    with ThreadPoolExecutor(max_workers=min(4, len(specs)), thread_name_prefix="offload") as pool:
        return list(pool.map(run, specs))


def offload_all(
    settings: Settings,
    specs: list[TableSpec],
    *,
    engine: Engine | None = None,
    dry_run: bool = False,
    run_id: str | None = None,
) -> RunReport:
    """Offload ``specs`` in layer order; a failed table is retried, then reported, and the rest go on."""
    run_id = run_id or new_run_id()
    owned = engine is None
    engine = engine or make_engine(settings)
    state = StateStore(settings.state_url)
    open_catalog(settings)  # creates the catalog's own tables once, before parallel tasks race to
    report = RunReport(run_id, engine.name)

    def run(spec: TableSpec) -> TableResult:
        return _with_retries(settings, spec, engine, state, run_id, dry_run)

    try:
        for layer in ("bronze", "silver", "gold"):
            report.results += _stage((s for s in specs if s.layer == layer), run)
    finally:
        state.close()
        if owned:
            engine.close()
    return report


def describe_settings(settings: Settings) -> dict[str, Any]:
    """Where the cold tier lives, fit to print (passwords in the database URLs redacted)."""
    return {
        "catalog": redact_url(settings.catalog_uri),
        "warehouse": settings.warehouse_uri,
        "state": redact_url(settings.state_url),
    }
