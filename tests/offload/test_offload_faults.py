"""Crash at every step of an offload, concurrent runs, a failing table: no duplicate, no gap, no stall."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time

import pytest

from offload.run import FAULT_POINTS, offload_all
from offload.state import StateStore
from offload.tables import TableSpec, select_tables
from tests.offload.conftest import offload_settings
from tests.offload.helpers import (
    cold_candles,
    cold_silver,
    cold_table,
    hot_candles,
    hot_silver,
    minutes_ago_ns,
    publish_trades,
    watermark_of,
)
from tests.support import REPO, Stack

EXCHANGES = ("binance", "kraken", "coinbase")

_CRASHING_RUN = """
import os, sys
from k2.settings import load_settings
from offload.run import offload_all, set_fault
from offload.tables import select_tables

point = sys.argv[1]
set_fault(lambda at, table: os._exit(9) if (at, table) == (point, "silver_trades") else None)
offload_all(load_settings(), select_tables(("binance",), ["silver_trades"]))
sys.exit(0)
"""


@pytest.mark.integration
@pytest.mark.parametrize("point", FAULT_POINTS)
def test_a_crash_at_any_step_then_a_rerun_leaves_no_duplicate_and_no_gap(cold_stack: Stack, point: str) -> None:
    settings = offload_settings(cold_stack)
    symbol = f"OFC{FAULT_POINTS.index(point)}-USDT"
    specs = select_tables(EXCHANGES, ["silver_trades"])
    publish_trades(cold_stack, symbol, 1, 10, minutes_ago_ns(30))
    assert offload_all(settings, specs).ok
    publish_trades(cold_stack, symbol, 11, 10, minutes_ago_ns(20))
    before = watermark_of(settings, "silver_trades")

    env = {**cold_stack.env, "K2_OFFLOAD_SAFETY_BUFFER_S": "0", "K2_OFFLOAD_RETRIES": "0"}
    crashed = subprocess.run([sys.executable, "-c", _CRASHING_RUN, point], env=env, cwd=REPO, capture_output=True,
                             text=True, timeout=120)  # fmt: skip
    assert crashed.returncode == 9, crashed.stderr
    committed = watermark_of(settings, "silver_trades")
    assert (committed > before) == (point in ("after_commit", "after_state"))

    rerun = offload_all(settings, specs)  # the crashed run's lock is taken over: its process is gone
    assert rerun.ok, rerun.summary()
    cold = cold_silver(settings, f"{symbol[:4]}%")
    ids = sorted(int(r[2]) for r in cold)
    print(f"offload crash (os._exit) at {point} of silver_trades, then a rerun: sent=20 stored={len(ids)} "
          f"lost={len(set(range(1, 21)) - set(ids))} duplicated={len(ids) - len(set(ids))} "
          f"committed_before_crash={committed > before}")  # fmt: skip
    assert cold == hot_silver(cold_stack, f"{symbol[:4]}%")
    assert ids == list(range(1, 21))
    mirror = StateStore(settings.state_url).watermark("silver_trades")
    assert mirror is not None and mirror.watermark_us == watermark_of(settings, "silver_trades")


@pytest.mark.integration
def test_a_table_held_by_another_run_is_skipped_and_left_to_it(cold_stack: Stack) -> None:
    settings = offload_settings(cold_stack)
    publish_trades(cold_stack, "OFB-USDT", 1, 5, minutes_ago_ns(15))
    state = StateStore(settings.state_url)
    with state.lock("silver_trades", "otherhost-1-running", 60):
        report = offload_all(settings, select_tables(EXCHANGES, ["silver_trades", "gold_ohlcv_1m"]))
    by_table = {r.table: r for r in report.results}
    assert by_table["silver_trades"].status == "busy"
    assert "otherhost-1-running" in by_table["silver_trades"].error
    assert by_table["gold_ohlcv_1m"].status == "ok"
    assert report.ok  # skipping a table another run is offloading is not a failure
    assert offload_all(settings, select_tables(EXCHANGES, ["silver_trades"])).ok
    assert sorted(int(r[2]) for r in cold_silver(settings, "OFB-%")) == [1, 2, 3, 4, 5]


@pytest.mark.integration
def test_a_failing_table_is_retried_reported_and_does_not_stop_the_others(cold_stack: Stack) -> None:
    settings = offload_settings(cold_stack, offload_retries=1)
    broken = TableSpec("bronze_trades_nowhere", "bronze", "ingested_at", "ingested_at", quantity_column="quantity")
    publish_trades(cold_stack, "OFF-USDT", 1, 3, minutes_ago_ns(15))
    report = offload_all(settings, [broken, *select_tables(EXCHANGES, ["silver_trades"])])
    by_table = {r.table: r for r in report.results}
    assert (by_table["bronze_trades_nowhere"].status, by_table["bronze_trades_nowhere"].attempts) == ("failed", 2)
    assert "UNKNOWN_TABLE" in by_table["bronze_trades_nowhere"].error
    assert by_table["silver_trades"].status == "ok"
    assert not report.ok
    mirror = StateStore(settings.state_url).watermark("bronze_trades_nowhere")
    assert mirror is not None and mirror.failures_total == 1 and "UNKNOWN_TABLE" in (mirror.last_error or "")
    assert sorted(int(r[2]) for r in cold_silver(settings, "OFF-%")) == [1, 2, 3]


_STEPPING_RUN = """
import sys
from k2.settings import load_settings
from offload.run import offload_all, set_fault
from offload.tables import select_tables

settings, specs = load_settings(), select_tables(("binance",), sys.argv[1].split(","))
set_fault(lambda point, table: print(point, table, flush=True))
sys.stdin.readline()  # imported and ready: the test says when to run
print("done", offload_all(settings, specs).ok, flush=True)
"""
KILL_TABLES = ["bronze_trades_binance", "silver_trades", "gold_ohlcv_1m"]
KILLS = 6
KILL_SEED = 20261107


def _stepping_run(env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", _STEPPING_RUN, ",".join(KILL_TABLES)], env=env, cwd=REPO,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)  # fmt: skip


@pytest.mark.integration
def test_sigkill_at_random_moments_in_every_layer_then_a_rerun_copies_each_row_once(cold_stack: Stack) -> None:
    """SIGKILL from outside, a random few milliseconds after a random step of a bronze, silver or gold table
    (so it lands between the instrumented points too: inside an extract, a data file write, a catalog commit);
    new trades arrive between the runs; a last clean run must leave cold equal to hot, each row once."""
    rng = random.Random(KILL_SEED)
    settings = offload_settings(cold_stack)
    specs = select_tables(("binance",), KILL_TABLES)
    env = {**cold_stack.env, "K2_OFFLOAD_SAFETY_BUFFER_S": "0", "K2_OFFLOAD_RETRIES": "0"}
    steps = [f"{point} {table}" for table in KILL_TABLES for point in FAULT_POINTS]
    # two kills per layer, at steps drawn at random
    chosen = [i for layer in range(3) for i in rng.sample(range(4 * layer, 4 * layer + 4), KILLS // 3)]
    rng.shuffle(chosen)
    started = time.monotonic()
    killed: list[str] = []
    spare = _stepping_run(env)
    for n, step in enumerate(chosen):
        publish_trades(cold_stack, "OFK-USDT", 1 + 10 * n, 10, minutes_ago_ns(40 - 3 * n))
        run, spare = spare, _stepping_run(env)  # the next run imports while this one works
        assert run.stdin is not None and run.stdout is not None
        run.stdin.write("go\n")
        run.stdin.flush()
        seen = []
        while (line := run.stdout.readline().strip()) and len(seen) <= step:
            seen.append(line)
        time.sleep(rng.uniform(0.0, 0.05))  # the kill's moment: somewhere after that step
        run.kill()
        run.wait(timeout=30)
        run.stdin.close()
        run.stdout.close()
        assert seen[-1] == steps[step], f"the run took other steps than expected: {seen}"
        killed.append(f"{steps[step]}+" if run.returncode == -signal.SIGKILL else f"{steps[step]}(finished first)")
    spare.kill()
    spare.wait(timeout=30)
    for pipe in (spare.stdin, spare.stdout):
        assert pipe is not None
        pipe.close()

    rerun = offload_all(settings, specs)
    assert rerun.ok, rerun.summary()
    sent = list(range(1, 10 * KILLS + 1))
    cold = cold_silver(settings, "OFK-%")
    bronze = sorted(int(r["trade_id"]) for r in cold_table(settings, "bronze_trades_binance").scan().to_arrow().to_pylist()
                    if r["canonical_symbol"] == "OFK-USDT")  # fmt: skip
    candles = cold_candles(settings, "1m", "OFK-%")
    silver_ids = sorted(int(r[2]) for r in cold)
    print(f"offload SIGKILL x{len(killed)} at {killed}: sent={len(sent)} cold_silver={len(cold)} "
          f"lost={len(set(sent) - set(silver_ids))} duplicated={len(silver_ids) - len(set(silver_ids))} "
          f"cold_bronze={len(bronze)} bronze_duplicated={len(bronze) - len(set(bronze))} gold_1m_candles={len(candles)} "
          f"run={time.monotonic() - started:.1f}s")  # fmt: skip

    assert all(k.endswith("+") for k in killed), killed
    assert silver_ids == sent
    assert cold == hot_silver(cold_stack, "OFK-%")
    assert bronze == sent
    assert candles == hot_candles(cold_stack, "1m", "OFK-%")
    assert sum(c[9] for c in candles) == len(sent)
    mirror = StateStore(settings.state_url).watermarks()
    assert {w.table_name: w.watermark_us for w in mirror if w.table_name in KILL_TABLES} == {
        name: watermark_of(settings, name) for name in KILL_TABLES
    }
