"""Soak: the embedded stack under a steady replay, offloading on a schedule, sampled over time.

Starts ``k2 up --replay captures --speed S`` (S chosen so the three fake exchanges together send about
``--rate`` trades/s, looping), then every ``--sample-s`` seconds records per process RSS and CPU, the
trades that reached silver since the last sample with their end-to-end latency (silver ``ts_ingested``
minus the handler's ``ts_received``), and the error counters; every ``--offload-every-s`` seconds it runs
``k2 offload run`` (all tables) as the 15-minute deployment would. At the end it checks what must never
happen: a duplicate in silver ``FINAL``, a trade in Iceberg twice or missing from it below the committed
watermark, an ingest error, a dead letter, a component restart, a failed offload.

    PYTHONPATH=. .venv/bin/python bench/soak.py --minutes 30 --rate 5000 --offload-every-s 900

``tests/reliability/test_soak.py`` runs the same loop for a minute in CI.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from feed_handlers.replay._timeline import Timeline
from feed_handlers.replay.run import load_capture
from feed_handlers.replay.server import VENUES
from k2.settings import load_settings
from offload.state import StateStore
from tests.support import K2, REPO, Stack, running_stack, wait_for

CAPTURES = REPO / "captures"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024
#: counters that must stay at zero, from the handlers' /metrics
HANDLER_ERRORS = ("k2_feed_parse_errors_total", "k2_feed_dead_letters_total", "k2_feed_publish_errors_total")
LATENCY_SQL = """
SELECT count(), quantile(0.5)(l), quantile(0.99)(l), max(l)
FROM (
    SELECT (toUnixTimestamp64Micro(ts_ingested) - intDiv(toUnixTimestamp64Nano(ts_received), 1000)) / 1000 AS l
    FROM k2.silver_trades
    WHERE ts_ingested > fromUnixTimestamp64Micro({since:Int64}, 'UTC')
      AND ts_ingested <= fromUnixTimestamp64Micro({until:Int64}, 'UTC')
)
"""


def natural_rate(captures: Path = CAPTURES) -> float:
    """Trades per second the captures hold at speed 1, all venues together."""
    total = 0.0
    for name, venue_type in VENUES.items():
        path = captures / f"{name}.jsonl"
        if not path.is_file():
            continue
        venue = venue_type()
        capture = venue.load(load_capture(path))
        trades = sum(len(venue.render(frame, 0, {})[1]) for frame in capture.frames)
        total += trades / (Timeline.of(capture.frames, 1).lap_ns / 1e9)
    return total


@dataclass
class Sample:
    t_s: float
    trades: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    rss_mb: dict[str, float]
    cpu_pct: dict[str, float]


@dataclass
class Offload:
    at_s: float
    duration_s: float
    ok: bool
    output: str


@dataclass
class SoakReport:
    rate_target: float
    speed: float
    seconds: float
    samples: list[Sample] = field(default_factory=list)
    offloads: list[Offload] = field(default_factory=list)
    restarts: dict[str, int] = field(default_factory=dict)
    handler_errors: dict[str, float] = field(default_factory=dict)
    ingest_errors: int = 0
    invalid_rows: int = 0
    silver_rows: int = 0
    silver_duplicates: int = 0
    cold_rows: int = 0
    cold_duplicates: int = 0
    cold_missing: int = 0

    @property
    def problems(self) -> list[str]:
        found = [f"{name} restarted {n} time(s)" for name, n in self.restarts.items() if n]
        found += [f"{name} = {value:g}" for name, value in self.handler_errors.items() if value]
        found += [f"offload at {o.at_s:.0f} s failed: {o.output[-300:]}" for o in self.offloads if not o.ok]
        for label, value in (
            ("ingest errors", self.ingest_errors),
            ("invalid silver rows", self.invalid_rows),
            ("silver duplicates under FINAL", self.silver_duplicates),
            ("trades twice in Iceberg", self.cold_duplicates),
            ("trades below the watermark missing from Iceberg", self.cold_missing),
        ):
            if value:
                found.append(f"{label}: {value}")
        if not self.offloads:
            found.append("no offload ran")
        return found

    def growth(self) -> dict[str, tuple[float, float]]:
        """RSS per process: (MB after the first quarter, MB at the end), the first quarter being warm-up."""
        if len(self.samples) < 2:
            return {}
        first = self.samples[len(self.samples) // 4]
        last = self.samples[-1]
        return {name: (first.rss_mb[name], last.rss_mb.get(name, 0.0)) for name in first.rss_mb}

    def summary(self) -> str:
        lines = [
            f"soak: {self.seconds:.0f} s at speed {self.speed:.1f} (target {self.rate_target:,.0f} trades/s), "
            f"{len(self.samples)} samples, {len(self.offloads)} offloads"
        ]
        step = max(1, len(self.samples) // 12)
        lines.append("   t_s  trades/s   p50_ms   p99_ms   max_ms  " + "  ".join(
            f"{n[:14]:>14}" for n in (self.samples[0].rss_mb if self.samples else {})
        ) + "   (RSS MB / CPU %)")  # fmt: skip
        for i in range(0, len(self.samples), step):
            s = self.samples[i]
            per_s = s.trades / max(s.t_s - (self.samples[i - 1].t_s if i else 0.0), 1e-9)
            lines.append(
                f"{s.t_s:6.0f} {per_s:9,.0f} {s.p50_ms:8.0f} {s.p99_ms:8.0f} {s.max_ms:8.0f}  "
                + "  ".join(f"{s.rss_mb[n]:7.0f}/{s.cpu_pct.get(n, 0):5.1f}" for n in s.rss_mb)
            )
        if self.samples:
            p50 = statistics.median(s.p50_ms for s in self.samples if s.trades)
            p99 = max(s.p99_ms for s in self.samples if s.trades)
            total = sum(s.trades for s in self.samples)
            lines.append(f"trades into silver: {total:,} ({total / self.seconds:,.0f}/s); latency: median of "
                         f"sample p50s {p50:.0f} ms, worst sample p99 {p99:.0f} ms")  # fmt: skip
        for name, (a, b) in self.growth().items():
            lines.append(f"RSS {name}: {a:.0f} -> {b:.0f} MB ({(b - a) / a:+.0%} after warm-up)")
        for o in self.offloads:
            lines.append(f"offload at {o.at_s:.0f} s: {'ok' if o.ok else 'FAILED'} in {o.duration_s:.1f} s")
        if self.offloads:
            lines += ["last offload:", *("  " + line for line in self.offloads[-1].output.strip().splitlines())]
        lines.append(f"silver rows {self.silver_rows:,}, duplicates under FINAL {self.silver_duplicates}; Iceberg "
                     f"silver rows {self.cold_rows:,}, twice {self.cold_duplicates}, missing below the watermark "
                     f"{self.cold_missing}")  # fmt: skip
        lines.append("problems: " + ("; ".join(self.problems) if self.problems else "none"))
        return "\n".join(lines)


def _proc(pid: int) -> tuple[float, float]:
    """(RSS in MB, CPU seconds) of ``pid`` and its children, from /proc."""
    rss_kb = 0
    cpu_ticks = 0
    for p in _tree(pid):
        try:
            stat = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            statm = Path(f"/proc/{p}/statm").read_text().split()
        except OSError:
            continue
        cpu_ticks += int(stat[11]) + int(stat[12])  # utime, stime
        rss_kb += int(statm[1]) * PAGE_KB
    return rss_kb / 1024, cpu_ticks / CLOCK_TICKS


def _tree(pid: int) -> list[int]:
    out = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    try:
        for child in children.read_text().split():
            out += _tree(int(child))
    except OSError:
        pass
    return out


def _components(stack: Stack) -> dict[str, int]:
    status = json.loads(stack.k2("status", "--json", check=False).stdout)
    return {name: int(c["pid"]) for name, c in status["components"].items() if c.get("pid")}


def _handler_errors(stack: Stack) -> dict[str, float]:
    base = int(stack.env["K2_HANDLER_METRICS_PORT_BASE"])
    totals = dict.fromkeys(HANDLER_ERRORS, 0.0)
    for i in range(3):
        with urllib.request.urlopen(f"http://127.0.0.1:{base + i}/metrics", timeout=10) as response:
            for line in response.read().decode().splitlines():
                name = line.split("{", 1)[0].split(" ", 1)[0]
                if name in totals:
                    totals[name] += float(line.rsplit(" ", 1)[1])
    return totals


def _offload(stack: Stack, at_s: float) -> Offload:
    started = time.monotonic()
    result = subprocess.run(
        [*K2, "offload", "run"], env=stack.env, capture_output=True, text=True, timeout=1800, cwd=REPO, check=False
    )
    return Offload(at_s, time.monotonic() - started, result.returncode == 0, result.stdout + result.stderr)


def _final_checks(stack: Stack, report: SoakReport) -> None:
    client = stack.client()
    report.ingest_errors = int(client.command("SELECT count() FROM k2.ingest_errors"))
    report.invalid_rows = int(client.command("SELECT countIf(NOT is_valid) FROM k2.silver_trades"))
    final, unique = client.query(
        "SELECT count(), uniqExact(exchange, canonical_symbol, trade_id) FROM k2.silver_trades FINAL"
    ).result_rows[0]
    report.silver_rows, report.silver_duplicates = int(final), int(final) - int(unique)
    settings = load_settings(stack.env)
    watermark = StateStore(settings.state_url).watermark("silver_trades")
    if watermark is None:
        return
    cold_rows, cold_unique = client.query(
        "SELECT count(), uniqExact(exchange, canonical_symbol, trade_id) FROM cold.silver_trades"
    ).result_rows[0]
    hot_below = int(client.command(
        "SELECT count() FROM k2.silver_trades FINAL WHERE ts_ingested < fromUnixTimestamp64Micro({w:Int64}, 'UTC')",
        parameters={"w": watermark.watermark_us},
    ))  # fmt: skip
    report.cold_rows, report.cold_duplicates = int(cold_rows), int(cold_rows) - int(cold_unique)
    report.cold_missing = max(hot_below - int(cold_unique), 0)


@contextmanager
def soak_stack(data_dir: Path, speed: float) -> Iterator[Stack]:
    with running_stack(
        data_dir, "--replay", str(CAPTURES), "--speed", f"{speed:.3f}", K2_OFFLOAD_SAFETY_BUFFER_S="5"
    ) as stack:
        yield stack


def soak(
    stack: Stack, speed: float, rate: float, seconds: float, sample_s: float, offload_every_s: float
) -> SoakReport:
    """Sample ``stack`` for ``seconds`` while its replay runs; offload every ``offload_every_s``."""
    report = SoakReport(rate, speed, seconds)
    client = stack.client()
    pids = _components(stack)
    report.restarts = dict.fromkeys(pids, 0)
    cpu_before = {name: _proc(pid)[1] for name, pid in pids.items()}
    wait_for(lambda: int(client.command("SELECT count() FROM k2.silver_trades")) > 0, 60, "first trades in silver")
    started = time.monotonic()
    since_us = time.time_ns() // 1000
    last_offload = started
    previous = started
    while (now := time.monotonic()) - started < seconds:
        if now - last_offload >= offload_every_s:
            report.offloads.append(_offload(stack, now - started))
            last_offload = time.monotonic()
        time.sleep(max(0.0, sample_s - (time.monotonic() - previous)))  # the sampling period, not a readiness wait
        moment = time.monotonic()
        until_us = time.time_ns() // 1000 - 2_000_000  # rows inserted up to 2 s ago are all visible
        count, p50, p99, top = client.query(LATENCY_SQL, parameters={"since": since_us, "until": until_us}).result_rows[
            0
        ]
        since_us = until_us
        current = _components(stack)
        rss, cpu = {}, {}
        for name, pid in pids.items():
            if current.get(name) != pid:
                report.restarts[name] += 1
                pids[name] = current.get(name, pid)
            mb, cpu_s = _proc(pids[name])
            rss[name] = mb
            cpu[name] = 100 * (cpu_s - cpu_before.get(name, cpu_s)) / max(moment - previous, 1e-9)
            cpu_before[name] = cpu_s
        report.samples.append(Sample(moment - started, int(count), float(p50 or 0), float(p99 or 0),
                                     float(top or 0), rss, cpu))  # fmt: skip
        previous = moment
    report.offloads.append(_offload(stack, time.monotonic() - started))
    report.seconds = time.monotonic() - started
    report.handler_errors = _handler_errors(stack)
    _final_checks(stack, report)
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=5000.0, help="trades/s the fake exchanges send together")
    parser.add_argument("--sample-s", type=float, default=30.0)
    parser.add_argument("--offload-every-s", type=float, default=900.0)
    args = parser.parse_args()
    speed = args.rate / natural_rate()
    with tempfile.TemporaryDirectory(prefix="k2-soak-") as scratch, soak_stack(Path(scratch) / "data", speed) as stack:
        report = soak(stack, speed, args.rate, args.minutes * 60, args.sample_s, args.offload_every_s)
    print(report.summary())
    return 1 if report.problems else 0


if __name__ == "__main__":
    sys.exit(main())
