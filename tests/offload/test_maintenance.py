"""Compaction keeps every row and the watermark; expiry deletes exactly what it unreferences; orphans go."""

from __future__ import annotations

import os
import time
from collections import Counter
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from offload.catalog import WATERMARK
from offload.maintenance import compact_table, expire_table, remove_orphans_table
from offload.run import new_run_id, offload_all
from offload.state import StateStore
from offload.tables import select_tables
from tests.offload.conftest import offload_settings
from tests.offload.helpers import (
    cold_silver,
    cold_table,
    data_files_of_day,
    day_filter,
    day_ns,
    hot_silver,
    publish_trades,
    watermark_of,
)
from tests.support import Stack

EXCHANGES = ("binance", "kraken", "coinbase")
SILVER = select_tables(EXCHANGES, ["silver_trades"])


def _local(path: str) -> str:
    return path.removeprefix("file://")


def _files_per_partition(table: Any) -> Counter[Any]:
    return Counter(task.file.partition for task in table.scan().plan_files())


def _live_files(table: Any, snapshot_ids: set[int]) -> set[str]:
    """What the given snapshots reference: manifest lists, manifests, live data files."""
    files: set[str] = set()
    for snapshot in table.metadata.snapshots:
        if snapshot.snapshot_id not in snapshot_ids:
            continue
        files.add(_local(snapshot.manifest_list))
        for manifest in snapshot.manifests(table.io):
            files.add(_local(manifest.manifest_path))
            files |= {_local(e.data_file.file_path) for e in manifest.fetch_manifest_entry(table.io)}
    return files


def _on_disk(table: Any) -> set[str]:
    """Files under the table location, metadata.json versions aside (the catalog prunes those itself)."""
    root = Path(_local(table.location()))
    return {str(p) for p in root.rglob("*") if p.is_file() and not p.name.endswith(".metadata.json")}


def _offload_batches(stack: Stack, settings: Any, symbol: str, days_ago: int, batches: int) -> None:
    _, ts = day_ns(days_ago)
    for b in range(batches):
        publish_trades(stack, symbol, 1 + 5 * b, 5, ts + b * 60 * 10**9)
        report = offload_all(settings, SILVER)
        assert report.ok, report.summary()


@pytest.mark.integration
def test_compaction_leaves_one_file_per_partition_with_every_row_and_the_watermark(cold_stack: Stack) -> None:
    settings = offload_settings(cold_stack)
    day, _ = day_ns(10)
    _offload_batches(cold_stack, settings, "MCA-USDT", 10, 3)
    table = cold_table(settings, "silver_trades")
    assert len(data_files_of_day(table, "ts_event", day)) == 3  # one file per offload run
    all_before = table.scan().to_arrow()
    day_before = table.scan(row_filter=day_filter("ts_event", day)).to_arrow().sort_by("trade_id").to_pylist()
    watermark = watermark_of(settings, "silver_trades")
    state = StateStore(settings.state_url)

    with state.lock("silver_trades", "otherhost-1-offloading", 60):
        busy = compact_table(settings, SILVER[0], state, new_run_id())
    assert busy.status == "busy" and "otherhost-1-offloading" in busy.detail

    result = compact_table(settings, SILVER[0], state, new_run_id())
    assert result.status == "ok", result.detail
    table = cold_table(settings, "silver_trades")
    assert set(_files_per_partition(table).values()) == {1}
    assert len(data_files_of_day(table, "ts_event", day)) == 1
    day_after = table.scan(row_filter=day_filter("ts_event", day)).to_arrow().sort_by("trade_id").to_pylist()
    assert day_after == day_before  # every column of every row, decimals exact
    assert [int(r["trade_id"]) for r in day_after] == sorted(range(1, 16), key=str)
    assert sum(r["quantity"] for r in day_after) == sum(Decimal(f"0.{i + 1:08d}") for i in range(5)) * 3
    all_after = table.scan().to_arrow()
    assert all_after.num_rows == all_before.num_rows
    assert sum(all_after.column("quantity").to_pylist()) == sum(all_before.column("quantity").to_pylist())
    snapshot = table.current_snapshot()
    assert snapshot is not None and snapshot.summary.operation.value == "overwrite"
    assert snapshot.summary.additional_properties[WATERMARK] == str(watermark)
    assert watermark_of(settings, "silver_trades") == watermark

    again = compact_table(settings, SILVER[0], state, new_run_id())  # nothing small left to merge
    assert (again.status, again.detail) == ("ok", "nothing to compact")

    # the offload resumes from the carried watermark: the next window's rows, once
    publish_trades(cold_stack, "MCA-USDT", 16, 2, day_ns(10)[1] + 3600 * 10**9)
    assert offload_all(settings, SILVER).ok
    assert cold_silver(settings, "MCA-%") == hot_silver(cold_stack, "MCA-%")
    assert sorted(int(r[2]) for r in cold_silver(settings, "MCA-%")) == list(range(1, 18))


@pytest.mark.integration
def test_expiry_deletes_exactly_the_files_only_expired_snapshots_reached(cold_stack: Stack) -> None:
    settings = offload_settings(cold_stack)
    _offload_batches(cold_stack, settings, "MCE-USDT", 11, 2)
    state = StateStore(settings.state_url)
    assert compact_table(settings, SILVER[0], state, new_run_id()).status == "ok"
    table = cold_table(settings, "silver_trades")
    rows_before = sorted(table.scan().to_arrow().column("trade_id").to_pylist())
    newest = max(table.metadata.snapshots, key=lambda s: s.timestamp_ms).snapshot_id
    expired = {s.snapshot_id for s in table.metadata.snapshots} - {newest}
    unreachable = _live_files(table, expired) - _live_files(table, {newest})
    assert any(f.endswith(".parquet") for f in unreachable)  # the files compaction replaced
    disk_before = _on_disk(table)

    kept = expire_table(settings, SILVER[0], state, new_run_id(), older_than=timedelta(days=7), retain_last=1)
    assert kept.status == "ok" and kept.detail.startswith("0 snapshot(s) expired")  # nothing is 7 days old
    assert _on_disk(cold_table(settings, "silver_trades")) == disk_before

    result = expire_table(settings, SILVER[0], state, new_run_id(), older_than=timedelta(0), retain_last=1)
    assert result.status == "ok", result.detail
    table = cold_table(settings, "silver_trades")
    assert [s.snapshot_id for s in table.metadata.snapshots] == [newest]
    disk_after = _on_disk(table)
    assert disk_before - disk_after == unreachable
    assert disk_after - disk_before == set()
    assert _live_files(table, {newest}) <= disk_after  # everything still referenced exists
    assert sorted(table.scan().to_arrow().column("trade_id").to_pylist()) == rows_before
    assert cold_silver(settings, "MCE-%") == hot_silver(cold_stack, "MCE-%")


@pytest.mark.integration
def test_orphan_cleanup_deletes_unreferenced_files_older_than_the_minimum_age(cold_stack: Stack) -> None:
    settings = offload_settings(cold_stack)
    _offload_batches(cold_stack, settings, "MCO-USDT", 12, 1)
    table = cold_table(settings, "silver_trades")
    root = Path(_local(table.location()))
    old = root / "data" / "ts_event_day=2020-01-01" / "00000-0-crashed-writer.parquet"
    old.parent.mkdir(parents=True, exist_ok=True)
    old.write_bytes(b"PAR1 left by a writer that died before its commit")
    two_days_ago = time.time() - 2 * 86400
    os.utime(old, (two_days_ago, two_days_ago))
    fresh = root / "metadata" / "in-flight-commit-m0.avro"
    fresh.write_bytes(b"a manifest a running commit is writing")
    referenced = _on_disk(table) - {str(old), str(fresh)}
    rows = table.scan().to_arrow().num_rows
    state = StateStore(settings.state_url)

    result = remove_orphans_table(settings, SILVER[0], state, new_run_id())  # default minimum age: one day
    assert result.status == "ok", result.detail
    assert result.detail.startswith("1 orphan file(s) deleted")
    assert not old.exists() and fresh.exists()

    every_file = {str(p) for p in root.rglob("*") if p.is_file()}
    result = remove_orphans_table(settings, SILVER[0], state, new_run_id(), min_age=timedelta(0))
    assert result.status == "ok", result.detail
    table = cold_table(settings, "silver_trades")
    gone = every_file - {str(p) for p in root.rglob("*") if p.is_file()}
    assert str(fresh) in gone
    # besides the planted file, only metadata versions nothing points to (create_table_if_not_exists writes
    # a 00000 version each time it finds the table already there)
    log = {_local(m.metadata_file) for m in table.metadata.metadata_log} | {_local(table.metadata_location)}
    assert all(f.endswith(".metadata.json") and f not in log for f in gone - {str(fresh)})
    assert log <= every_file - gone
    assert _live_files(table, {s.snapshot_id for s in table.metadata.snapshots}) <= _on_disk(table)
    assert _on_disk(table) == referenced
    assert table.scan().to_arrow().num_rows == rows


@pytest.mark.integration
def test_k2_maintenance_run_prints_every_action_and_exits_zero(cold_stack: Stack) -> None:
    settings = offload_settings(cold_stack)
    day, _ = day_ns(13)
    _offload_batches(cold_stack, settings, "MCK-USDT", 13, 2)
    run = cold_stack.k2("maintenance", "run", "--tables", "silver_trades", "--day", day.isoformat(), check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].startswith("maintenance run ") and lines[0].endswith(": ok")
    assert [line.split()[:3] for line in lines[1:4]] == [
        ["compact", "silver_trades", "ok"], ["expire", "silver_trades", "ok"], ["orphans", "silver_trades", "ok"],
    ]  # fmt: skip
    audit = [line.split() for line in lines if line.lstrip().startswith("silver_trades")]
    assert audit and audit[-1][1] == "ok"
    assert "rows ch=10 ice=10" in run.stdout
    assert len(data_files_of_day(cold_table(settings, "silver_trades"), "ts_event", day)) == 1
