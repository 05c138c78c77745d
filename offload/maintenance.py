"""Daily maintenance of the cold tables: compact, expire snapshots, remove orphan files, then audit.

Each action on a table holds that table's lock in the state DB, the one the offload takes, so an
offload and a maintenance action never touch one table at once (a busy table is waited for, then
reported busy and left for tomorrow). Compaction carries the committed watermark forward in its
snapshot summary; expiry never expires the snapshot that committed it.

The pyiceberg path is implemented here (offload/compaction.py, offload/expiry.py). An engine with its
own procedures (Spark's ``rewrite_data_files``, ``expire_snapshots``, ``remove_orphan_files``) takes
over an action by having the matching method: see ``Compacts``, ``Expires``, ``RemovesOrphans``.

A failing table logs and the others go on; the report fails on a failed action or an audit finding.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Literal, Protocol, runtime_checkable

from pyiceberg.catalog import Catalog
from pyiceberg.table import Table

from k2.settings import Settings
from offload.audit import AuditReport, audit_tables
from offload.catalog import RUN_ID, WATERMARK, committed_watermark, open_catalog
from offload.compaction import compact
from offload.errors import TableBusyError
from offload.expiry import expire_snapshots, remove_orphan_files
from offload.state import StateStore
from offload.tables import TableSpec

__all__ = [
    "ACTIONS",
    "ActionResult",
    "Compacts",
    "Expires",
    "MaintenanceOptions",
    "MaintenanceReport",
    "RemovesOrphans",
    "compact_table",
    "expire_table",
    "remove_orphans_table",
    "run_maintenance",
]

log = logging.getLogger("k2.maintenance")
Action = Literal["compact", "expire", "orphans", "audit"]
#: the daily order: compaction first (expiry then drops the files it replaced), the audit last
ACTIONS: tuple[Action, ...] = ("compact", "expire", "orphans", "audit")
MAINTENANCE = "k2.maintenance"


@runtime_checkable
class Compacts(Protocol):
    """An engine that compacts ``cold.<table>`` itself; it must put ``snapshot_properties`` in its commit."""

    def compact(self, table_id: str, snapshot_properties: dict[str, str]) -> str: ...


@runtime_checkable
class Expires(Protocol):
    """An engine that expires snapshots and deletes the files only they reached."""

    def expire(self, table_id: str, older_than: datetime, retain_last: int) -> str: ...


@runtime_checkable
class RemovesOrphans(Protocol):
    def remove_orphans(self, table_id: str, older_than: datetime) -> str: ...


@dataclass(frozen=True)
class MaintenanceOptions:
    expire_older_than: timedelta = timedelta(days=7)
    retain_last: int = 5
    orphan_min_age: timedelta = timedelta(days=1)
    #: how long an action waits for a table an offload holds before reporting it busy
    lock_wait_s: float = 120.0
    day: date | None = None  # audit day; default the previous UTC day


@dataclass(frozen=True)
class ActionResult:
    table: str
    action: Action
    status: Literal["ok", "failed", "busy"]
    detail: str = ""
    duration_s: float = 0.0

    def line(self) -> str:
        return f"{self.action:<8} {self.table:<26} {self.status:<7} {self.duration_s:6.2f}s  {self.detail}".rstrip()


@dataclass
class MaintenanceReport:
    run_id: str
    engine: str
    results: list[ActionResult] = field(default_factory=list)
    audit: AuditReport | None = None

    @property
    def ok(self) -> bool:
        return all(r.status != "failed" for r in self.results) and (self.audit is None or self.audit.ok)

    def summary(self) -> str:
        lines = [f"maintenance run {self.run_id} (engine {self.engine}): {'ok' if self.ok else 'FAILED'}"]
        for r in self.results:
            lines.append(f"  {r.line()}")
        if self.audit is not None:
            lines.append(self.audit.summary())
        return "\n".join(lines)


@contextmanager
def _locked(state: StateStore, spec: TableSpec, run_id: str, ttl_s: float, wait_s: float) -> Iterator[None]:
    deadline = time.monotonic() + wait_s
    with ExitStack() as held:
        while True:
            try:
                held.enter_context(state.lock(spec.name, run_id, ttl_s))
                break
            except TableBusyError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(min(2.0, max(0.0, deadline - time.monotonic())))
        yield


def _on_table(
    settings: Settings,
    spec: TableSpec,
    action: Action,
    state: StateStore,
    run_id: str,
    wait_s: float,
    work: Callable[[Catalog, Table], str],
) -> ActionResult:
    started = time.monotonic()
    try:
        with _locked(state, spec, run_id, settings.offload_lock_ttl_s, wait_s):
            catalog = open_catalog(settings)
            detail = work(catalog, catalog.load_table(spec.identifier))
    except TableBusyError as exc:
        return ActionResult(spec.name, action, "busy", str(exc), time.monotonic() - started)
    except Exception as exc:  # catalog, IO, engine: this table failed, the others go on
        log.exception("maintenance %s %s failed", action, spec.name)
        return ActionResult(spec.name, action, "failed", f"{type(exc).__name__}: {exc}", time.monotonic() - started)
    log.info("maintenance %s %s: %s", action, spec.name, detail)
    return ActionResult(spec.name, action, "ok", detail, time.monotonic() - started)


def _table_id(spec: TableSpec) -> str:
    return ".".join(spec.identifier)


def compact_table(
    settings: Settings, spec: TableSpec, state: StateStore, run_id: str,
    engine: object | None = None, lock_wait_s: float = 0.0,
) -> ActionResult:  # fmt: skip
    """Bin-pack the table's small files under its lock, carrying the committed watermark forward."""

    def work(_catalog: Catalog, table: Table) -> str:
        watermark, _ = committed_watermark(table)
        properties = {WATERMARK: str(watermark), RUN_ID: run_id, MAINTENANCE: "compact"}
        if isinstance(engine, Compacts):
            return engine.compact(_table_id(spec), properties)
        return compact(table, properties).describe()

    return _on_table(settings, spec, "compact", state, run_id, lock_wait_s, work)


def expire_table(
    settings: Settings, spec: TableSpec, state: StateStore, run_id: str,
    older_than: timedelta = timedelta(days=7), retain_last: int = 5,
    engine: object | None = None, lock_wait_s: float = 0.0,
) -> ActionResult:  # fmt: skip
    """Expire snapshots older than ``older_than`` beyond the newest ``retain_last``; delete unreachable files."""
    cutoff = datetime.now(UTC) - older_than

    def work(_catalog: Catalog, table: Table) -> str:
        if isinstance(engine, Expires):
            return engine.expire(_table_id(spec), cutoff, retain_last)
        return expire_snapshots(table, cutoff, retain_last).describe()

    return _on_table(settings, spec, "expire", state, run_id, lock_wait_s, work)


def remove_orphans_table(
    settings: Settings, spec: TableSpec, state: StateStore, run_id: str,
    min_age: timedelta = timedelta(days=1), engine: object | None = None, lock_wait_s: float = 0.0,
) -> ActionResult:  # fmt: skip
    """Delete files under the table location nothing references, last modified before ``min_age`` ago."""
    cutoff = datetime.now(UTC) - min_age

    def work(_catalog: Catalog, table: Table) -> str:
        if isinstance(engine, RemovesOrphans):
            return engine.remove_orphans(_table_id(spec), cutoff)
        return remove_orphan_files(table, cutoff).describe()

    return _on_table(settings, spec, "orphans", state, run_id, lock_wait_s, work)


def run_maintenance(
    settings: Settings,
    specs: list[TableSpec],
    actions: tuple[Action, ...] = ACTIONS,
    *,
    run_id: str,
    engine: object | None = None,
    options: MaintenanceOptions | None = None,
) -> MaintenanceReport:
    """Run ``actions`` in the daily order over ``specs`` (tables not offloaded yet fail their actions)."""
    opts = options or MaintenanceOptions()
    report = MaintenanceReport(run_id, str(getattr(engine, "name", "pyiceberg")))
    state = StateStore(settings.state_url)
    wait = opts.lock_wait_s
    try:
        for action in (a for a in ACTIONS if a in actions and a != "audit"):
            for spec in specs:
                if action == "compact":
                    result = compact_table(settings, spec, state, run_id, engine, wait)
                elif action == "expire":
                    result = expire_table(settings, spec, state, run_id, opts.expire_older_than,
                                          opts.retain_last, engine, wait)  # fmt: skip
                else:
                    result = remove_orphans_table(settings, spec, state, run_id, opts.orphan_min_age, engine, wait)
                report.results.append(result)
        if "audit" in actions:
            report.audit = audit_tables(settings, specs, opts.day, run_id=run_id)
    finally:
        state.close()
    return report
