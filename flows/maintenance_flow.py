"""Prefect flow ``iceberg-maintenance``: compact, expire snapshots, remove orphans, then audit.

One task per table runs that table's actions in the daily order (``offload.maintenance.ACTIONS``),
tables one after another so the engine is never shared between threads; a failing table is reported
and the others go on. The audit of the previous UTC day (or ``day``) runs last as its own task. The
flow fails when an action failed or the audit found missing data or hit an error; a table an offload
holds for longer than the lock wait is reported busy and left for the next day, not a failure.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from feed_handlers.instruments import EXCHANGES
from k2.settings import Settings, load_settings
from offload.maintenance import ACTIONS, MaintenanceOptions, MaintenanceReport, run_maintenance
from offload.run import make_engine, new_run_id
from offload.tables import TableSpec, select_tables

__all__ = ["iceberg_maintenance"]


@task(cache_policy=NO_CACHE, task_run_name="maintain-{spec.name}")
def maintain_table(
    settings: Settings, spec: TableSpec, actions: tuple[str, ...], run_id: str, engine: object,
    options: MaintenanceOptions,
) -> MaintenanceReport:  # fmt: skip
    chosen = tuple(a for a in ACTIONS if a in actions and a != "audit")
    report = run_maintenance(settings, [spec], chosen, run_id=run_id, engine=engine, options=options)
    for r in report.results:
        print(r.line())
    return report


@task(cache_policy=NO_CACHE, task_run_name="audit")
def audit(settings: Settings, specs: list[TableSpec], run_id: str, options: MaintenanceOptions) -> MaintenanceReport:
    report = run_maintenance(settings, specs, ("audit",), run_id=run_id, options=options)
    if report.audit is not None:
        print(report.audit.summary())
    return report


@flow(name="iceberg-maintenance", log_prints=True)
def iceberg_maintenance(
    tables: list[str] | None = None,
    engine: str | None = None,
    actions: list[str] | None = None,
    day: date | None = None,
) -> dict[str, Any]:
    """Maintain ``tables`` (default: all) with ``engine`` (default: K2_OFFLOAD_ENGINE); ``actions``
    default to all of compact, expire, orphans, audit; ``day`` is the audit day (default yesterday, UTC)."""
    settings = load_settings()
    specs = select_tables(tuple(EXCHANGES), tables)
    wanted = tuple(actions or ACTIONS)
    unknown = sorted(set(wanted) - set(ACTIONS))
    if unknown:
        raise ValueError(f"unknown maintenance action(s) {', '.join(unknown)}; known: {', '.join(ACTIONS)}")
    run_id = new_run_id()
    options = MaintenanceOptions(day=day)
    chosen = make_engine(settings, engine)
    total = MaintenanceReport(run_id, chosen.name)
    try:
        if set(wanted) - {"audit"}:
            for spec in specs:
                total.results.extend(maintain_table(settings, spec, wanted, run_id, chosen, options).results)
    finally:
        chosen.close()
    if "audit" in wanted:
        total.audit = audit(settings, specs, run_id, options).audit
    get_run_logger().info("%s", total.summary())
    if not total.ok:
        raise RuntimeError(f"maintenance run {run_id} failed:\n{total.summary()}")
    return {
        "run_id": run_id,
        "results": [r.__dict__ for r in total.results],
        "audit": None if total.audit is None else total.audit.summary(),
    }
