"""Prefect flow ``iceberg-offload``: bronze tables in parallel, then silver, then gold tables in parallel.

Every table is one task calling ``offload.run.offload_table``; Prefect retries a failed table, the other
tables go on, and the flow fails at the end if any table still failed. A table another run holds is
skipped (the per-table lock in the state DB), and the deployment allows one run at a time.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import wait

from feed_handlers.instruments import EXCHANGES
from k2.settings import Settings, load_settings
from offload.catalog import open_catalog
from offload.engines.base import Engine
from offload.errors import TableBusyError
from offload.run import TableResult, make_engine, new_run_id, offload_table
from offload.state import StateStore
from offload.tables import TableSpec, select_tables

__all__ = ["iceberg_offload"]

TASK_RETRIES = 2


@task(retries=TASK_RETRIES, retry_delay_seconds=10, cache_policy=NO_CACHE, task_run_name="offload-{spec.name}")
def offload_one(
    settings: Settings, spec: TableSpec, engine: Engine, state: StateStore, run_id: str, dry_run: bool
) -> dict[str, Any]:
    try:
        result = offload_table(settings, spec, engine, state, run_id, dry_run=dry_run)
    except TableBusyError as exc:
        get_run_logger().warning("%s skipped: %s", spec.name, exc)
        result = TableResult(spec.name, "busy", error=str(exc))
    return result.__dict__


@flow(name="iceberg-offload", log_prints=True)
def iceberg_offload(
    tables: list[str] | None = None, engine: str | None = None, dry_run: bool = False
) -> list[dict[str, Any]]:
    """Offload ``tables`` (default: all) with ``engine`` (default: K2_OFFLOAD_ENGINE)."""
    settings = load_settings()
    specs = select_tables(tuple(EXCHANGES), tables)
    open_catalog(settings)  # creates the catalog's own tables once, before the parallel tasks race to
    run_id = new_run_id()
    chosen = make_engine(settings, engine)
    state = StateStore(settings.state_url)
    results: list[dict[str, Any]] = []
    failed: list[str] = []
    try:
        for layer in ("bronze", "silver", "gold"):
            futures = [
                offload_one.submit(settings, s, chosen, state, run_id, dry_run) for s in specs if s.layer == layer
            ]
            wait(futures)
            for spec, future in zip([s for s in specs if s.layer == layer], futures, strict=True):
                if future.state.is_completed():
                    results.append(future.result())
                else:
                    failed.append(spec.name)
                    state.record_failure(spec.name, str(future.state.message))
                    results.append({"table": spec.name, "status": "failed", "error": str(future.state.message)})
    finally:
        state.close()
        chosen.close()
    for r in results:
        print(f"{r['table']:<26} {r['status']:<8} rows={r.get('rows', 0)}")
    if failed:
        raise RuntimeError(f"offload failed for {', '.join(failed)} (other tables completed)")
    return results
