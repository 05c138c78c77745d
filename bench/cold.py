"""Benchmark: offload throughput per engine against a bare Parquet write, lag after one 15-minute cycle,
and daily maintenance on a 10M-row cold table.

Starts its own embedded stack (``k2 up --feeds none --no-flows``) and fills ``k2.silver_trades`` with
``--rows`` trades whose insertion times spread over the last 15 minutes: one offload cycle's worth at
``rows / 900`` trades/s. The gold MVs build the candles as in production. Then:

1. **Commit throughput**, all on the same Arrow table (every silver row, as the offload extracts it):
   ``pyarrow.parquet.write_table`` (zstd, pyiceberg's default codec) is the ceiling; pyiceberg's
   commit (Parquet write + manifests + catalog) and Spark's (staging Parquet, Spark append) into a
   fresh Iceberg table each. Each engine first commits 10k rows (imports, JIT: reported apart), then
   ``--repeat`` timed commits, each right after a timed ceiling write of the same table, so the share
   of the ceiling compares two runs under the same machine load.
2. **One cycle**, the real ``offload_all`` over every table (bronze empty, silver, six gold) with the
   default 60 s safety buffer, per engine, each into its own warehouse: rows/s and the lag at the end
   (now minus the committed silver watermark).
3. **Maintenance on ``--maintenance-rows``** silver rows in cold (the extracted rows re-keyed and
   spread over ten days, appended in 100 commits, ten small files per day partition): compaction,
   snapshot expiry (keep 1), orphan cleanup, each timed on the pyiceberg path.

    PYTHONPATH=. .venv/bin/python bench/cold.py --rows 1000000 --maintenance-rows 10000000
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from k2.chclient import connect
from k2.settings import Settings, load_settings
from offload.catalog import RUN_ID, WATERMARK, committed_watermark, ensure_table, open_catalog
from offload.engines.base import Engine
from offload.engines.pyiceberg_engine import PyIcebergEngine
from offload.maintenance import MaintenanceOptions, run_maintenance
from offload.plan import clickhouse_now_us, extract, shape_of
from offload.run import make_engine, new_run_id, offload_all
from offload.tables import all_tables, select_tables
from tests.support import Stack, running_stack

EXCHANGES = ("binance", "kraken", "coinbase")
CYCLE_S = 900
JAR_STAMP = Path.home() / ".cache" / "k2-spark-jars" / ".built"

FILL_SQL = """
INSERT INTO k2.silver_trades
SELECT
    ['binance', 'kraken', 'coinbase'][number % 3 + 1] AS exchange,
    ['BTCUSDT', 'ETHUSDT', 'SOLUSDT', 'BNBUSDT'][intDiv(number, 3) % 4 + 1] AS symbol,
    ['BTC-USDT', 'ETH-USDT', 'SOL-USDT', 'BNB-USDT'][intDiv(number, 3) % 4 + 1] AS canonical_symbol,
    toString(number + 1) AS trade_id,
    number + 1 AS trade_id_num,
    toDecimal128(6500000 + number % 5000, 18) / 100 AS price,
    toDecimal128((number * 7919) % 99999999 + 1, 18) / 100000000 AS quantity,
    toDecimal128((6500000 + number % 5000) * ((number * 7919) % 99999999 + 1), 18) / 10000000000 AS quote_volume,
    if(number % 3 = 0, 'sell', 'buy') AS side,
    fromUnixTimestamp64Nano(toInt64({t0:Int64} + intDiv(number * {span:Int64}, {n:Int64})) * 1000 - 200000000)
        AS ts_event,
    fromUnixTimestamp64Nano(toInt64({t0:Int64} + intDiv(number * {span:Int64}, {n:Int64})) * 1000 - 50000000)
        AS ts_received,
    fromUnixTimestamp64Micro(toInt64({t0:Int64} + intDiv(number * {span:Int64}, {n:Int64}))) AS ts_ingested,
    true AS is_valid,
    [] AS validation_errors,
    map('is_buyer_maker', if(number % 3 = 0, 'true', 'false')) AS vendor,
    'market.crypto.trades.bench' AS source_topic,
    toUInt32(number % 40) AS source_partition,
    number AS source_offset
FROM numbers({n:Int64})
"""


def log(message: str) -> None:
    print(message, flush=True)


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def fill_silver(stack: Stack, rows: int) -> float:
    client = stack.client()
    t0 = (time.time_ns() // 1000) - CYCLE_S * 1_000_000
    started = time.perf_counter()
    client.command(FILL_SQL, parameters={"t0": t0, "span": CYCLE_S * 1_000_000, "n": rows})
    elapsed = time.perf_counter() - started
    count = int(client.command("SELECT count() FROM k2.silver_trades"))
    if count != rows:
        raise SystemExit(f"silver holds {count} rows, expected {rows}")
    return elapsed


def warehouse(stack: Stack, name: str, **overrides: object) -> Settings:
    """Settings whose catalog, warehouse and state DB are a directory of their own."""
    root = stack.data_dir / "bench" / name
    root.mkdir(parents=True, exist_ok=True)
    return load_settings(
        stack.env,
        iceberg_catalog_uri=f"sqlite:///{root / 'catalog.db'}",
        iceberg_warehouse=(root / "warehouse").as_uri(),
        offload_state_url=f"sqlite:///{root / 'state.db'}",
        offload_retries=0,
        cold_clickhouse="none",
        **overrides,
    )


def spark_overrides() -> dict[str, object]:
    if not JAR_STAMP.is_file():
        raise SystemExit(f"{JAR_STAMP} missing: run `make spark-jars` first (or --engines pyiceberg)")
    values = dict(line.split("=", 1) for line in JAR_STAMP.read_text().splitlines() if "=" in line)
    return {"spark_jars": values["spark.jars"], "spark_java_library_path": values["java.library.path"]}


SILVER = select_tables(EXCHANGES, ["silver_trades"])[0]


def silver_table(settings: Settings, name: str = SILVER.name) -> Any:
    """A cold table ``name`` shaped as ``k2.silver_trades``, created in ``settings``' catalog if absent."""
    client = connect(settings)
    try:
        shape = shape_of(client, SILVER)
    finally:
        client.close()
    return ensure_table(open_catalog(settings), dataclasses.replace(SILVER, name=name), shape)


def silver_batch(settings: Settings) -> tuple[pa.Table, float]:
    spec = SILVER
    client = connect(settings)
    try:
        shape = shape_of(client, spec)
        table = ensure_table(open_catalog(settings), dataclasses.replace(spec, name="bench_schema"), shape)
        started = time.perf_counter()
        batch = extract(client, spec, shape, table.schema().as_arrow(), 0, clickhouse_now_us(client))
        return batch, time.perf_counter() - started
    finally:
        client.close()


def commit_into_fresh_table(settings: Settings, engine: Engine, batch: pa.Table, name: str) -> float:
    table = silver_table(settings, name)
    started = time.perf_counter()
    engine.commit(table, batch, {WATERMARK: "0", RUN_ID: "bench"}, None)
    elapsed = time.perf_counter() - started
    committed = table.refresh().scan().count()
    if committed != batch.num_rows:
        raise SystemExit(f"{engine.name} committed {committed} rows, expected {batch.num_rows}")
    return elapsed


def _secs(values: Any) -> str:
    return "[" + ", ".join(f"{v:.2f}" for v in values) + "] s"


def parquet_ceiling(batch: pa.Table, scratch: Path) -> tuple[float, int]:
    path = scratch / "ceiling.parquet"
    started = time.perf_counter()
    pq.write_table(batch, path, compression="zstd")
    elapsed = time.perf_counter() - started
    return elapsed, path.stat().st_size


def one_cycle(settings: Settings, engine: Engine) -> dict[str, Any]:
    started = time.perf_counter()
    report = offload_all(settings, all_tables(EXCHANGES), engine=engine)
    wall = time.perf_counter() - started
    finished_us = time.time_ns() // 1000
    if not report.ok:
        raise SystemExit(report.summary())
    silver = {r.table: r for r in report.results}["silver_trades"]
    table = open_catalog(settings).load_table(("cold", "silver_trades"))
    watermark_us, _ = committed_watermark(table)
    return {
        "wall_s": wall,
        "silver_rows": silver.rows,
        "silver_s": silver.duration_s,
        "lag_s": (finished_us - watermark_us) / 1e6,
        "tables": {r.table: (r.rows, round(r.duration_s, 2)) for r in report.results},
    }


def _shifted(batch: pa.Table, day: int) -> pa.Table:
    """``batch`` ``day`` days earlier."""
    columns = []
    for field, original in zip(batch.schema, batch.columns, strict=True):
        column = original
        if pa.types.is_timestamp(field.type):
            column = pc.subtract(original, pa.scalar(dt.timedelta(days=day), pa.duration("us")))
        elif field.name.endswith("_ns"):
            column = pc.subtract(original, pa.scalar(day * 86_400 * 10**9, field.type))
        columns.append(column.cast(field.type))
    return pa.Table.from_arrays(columns, schema=batch.schema)


def maintenance(stack: Stack, batch: pa.Table, rows: int) -> dict[str, Any]:
    settings = warehouse(stack, "maintenance")
    spec = SILVER
    table = silver_table(settings)
    engine = PyIcebergEngine()
    days, commits = 10, 100
    per_commit = rows // commits
    started = time.perf_counter()
    for i in range(commits):
        day = 1 + i * days // commits
        source = pa.concat_tables([batch] * -(-per_commit // batch.num_rows)) if per_commit > batch.num_rows else batch
        start = (i * per_commit) % (source.num_rows - per_commit + 1)
        chunk = _shifted(source.slice(start, per_commit), day)
        ids = chunk.column("trade_id")  # made unique per commit: every commit adds trades of its own
        unique = pc.binary_join_element_wise(pa.scalar(f"c{i}", ids.type), ids, pa.scalar("-", ids.type))
        chunk = chunk.set_column(chunk.schema.get_field_index("trade_id"), "trade_id", unique)
        engine.commit(table, chunk, {WATERMARK: str(i + 1), RUN_ID: "bench"}, None)
    load_s = time.perf_counter() - started
    table.refresh()
    files_before = len(table.inspect.files())
    options = MaintenanceOptions(
        expire_older_than=dt.timedelta(0), retain_last=1, orphan_min_age=dt.timedelta(0), lock_wait_s=0
    )
    report = run_maintenance(settings, [spec], ("compact", "expire", "orphans"), run_id=new_run_id(), options=options)
    if not report.ok:
        raise SystemExit(report.summary())
    table = open_catalog(settings).load_table(spec.identifier)
    kept = table.scan().count()
    if kept != per_commit * commits:
        raise SystemExit(f"maintenance kept {kept} rows, expected {per_commit * commits}")
    return {
        "rows": kept,
        "load_s": load_s,
        "files_before": files_before,
        "files_after": len(table.inspect.files()),
        "snapshots_after": len(table.metadata.snapshots),
        "actions": {r.action: (round(r.duration_s, 1), r.detail) for r in report.results},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="silver rows: one 15-minute cycle's worth")
    parser.add_argument("--maintenance-rows", type=int, default=10_000_000)
    parser.add_argument("--engines", default="pyiceberg,spark", help="comma-separated: pyiceberg, spark")
    parser.add_argument("--repeat", type=int, default=3, help="timed commits per engine (and ceiling writes)")
    parser.add_argument("--keep", action="store_true", help="keep the data directory")
    args = parser.parse_args()
    engines = [e for e in args.engines.split(",") if e]
    log(f"bench/cold.py rows={args.rows:,} maintenance_rows={args.maintenance_rows:,} engines={engines} "
        f"cpus={os.cpu_count()} load={os.getloadavg()[0]:.1f}")  # fmt: skip
    scratch = Path(tempfile.mkdtemp(prefix="k2-bench-offload-"))
    try:
        with running_stack(scratch / "data", K2_OFFLOAD_SAFETY_BUFFER_S="60") as stack:
            fill_s = fill_silver(stack, args.rows)
            log(f"hot fill: {args.rows:,} silver rows (+ 6 gold MVs) in {fill_s:.1f} s ({args.rows / fill_s:,.0f}/s)")

            base = warehouse(stack, "schema")
            batch, extract_s = silver_batch(base)
            log(f"extract (ClickHouse -> Arrow, {batch.num_rows:,} rows, {batch.nbytes / 1e6:.0f} MB in memory): "
                f"{extract_s:.2f} s ({batch.num_rows / extract_s:,.0f} rows/s)")  # fmt: skip
            ceiling_s, size = parquet_ceiling(batch, scratch)
            log(f"ceiling: pyarrow.parquet.write_table zstd {ceiling_s:.2f} s = {batch.num_rows / ceiling_s:,.0f} "
                f"rows/s ({size / 1e6:.0f} MB on disk)")  # fmt: skip

            cycles: dict[str, dict[str, Any]] = {}
            for name in engines:
                settings = warehouse(stack, name, **(spark_overrides() if name == "spark" else {}))
                engine = make_engine(settings, name)
                try:
                    if name == "spark":
                        started = time.perf_counter()
                        _ = engine.spark  # type: ignore[attr-defined]  # the session: started once, not per commit
                        log(f"spark: session start {time.perf_counter() - started:.1f} s (not counted below)")
                    warm = batch.slice(0, min(10_000, batch.num_rows))
                    first_s = commit_into_fresh_table(settings, engine, warm, "bench_warmup")
                    log(f"{name}: first commit in the process ({warm.num_rows:,} rows): {first_s:.2f} s")
                    # each commit right after a ceiling write: a shared machine's load hits both alike
                    pairs = [
                        (parquet_ceiling(batch, scratch)[0],
                         commit_into_fresh_table(settings, engine, batch, f"bench_commit_{i}"))
                        for i in range(args.repeat)
                    ]  # fmt: skip
                    ratios = sorted(c / e for c, e in pairs)
                    best = min(e for _, e in pairs)
                    log(f"{name}: commit of the same Arrow table {_secs(e for _, e in pairs)} (ceiling just before "
                        f"each: {_secs(c for c, _ in pairs)}); best {batch.num_rows / best:,.0f} rows/s; share of "
                        f"the ceiling best {ratios[-1]:.0%}, median {ratios[len(ratios) // 2]:.0%}")  # fmt: skip
                    cycles[name] = one_cycle(settings, engine)
                finally:
                    engine.close()
                c = cycles[name]
                log(f"{name}: one cycle, all 10 tables: {c['wall_s']:.1f} s; silver {c['silver_rows']:,} rows in "
                    f"{c['silver_s']:.1f} s ({c['silver_rows'] / c['silver_s']:,.0f} rows/s end to end incl. "
                    f"extract); lag at the end {c['lag_s']:.1f} s (60 s safety buffer + the run)")  # fmt: skip
                log(f"{name}: per table (rows, s): {c['tables']}")

            if args.maintenance_rows:
                m = maintenance(stack, batch, args.maintenance_rows)
                log(f"maintenance on {m['rows']:,} rows ({m['files_before']} files in 10 day partitions, loaded in "
                    f"{m['load_s']:.0f} s): {m['actions']}; files after {m['files_after']}, "
                    f"snapshots after {m['snapshots_after']}")  # fmt: skip
            log(f"bench process peak RSS {rss_mb():,.0f} MB")
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
        else:
            log(f"kept {scratch}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
