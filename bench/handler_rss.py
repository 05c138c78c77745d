"""Benchmark: resident memory of a `k2 handler` process, idle on the default instruments and under a
replayed load.

    .venv/bin/python bench/handler_rss.py --seconds 20
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from k2.embedded.components import tansu_binary, tcp_open
from tests.support import K2, REPO, free_port, http_ok, wait_for


def rss_mb(pid: int) -> tuple[float, float]:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def measure(instruments: Path, ws_port: int, bootstrap: str, seconds: float) -> tuple[float, float]:
    metrics = free_port()
    env = {**os.environ, "K2_INSTRUMENTS": str(instruments), "K2_KAFKA_BOOTSTRAP": bootstrap}
    handler = subprocess.Popen([*K2, "handler", "binance", "--ws-url", f"ws://127.0.0.1:{ws_port}/stream",
                                "--metrics-port", str(metrics)], env=env, cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_for(lambda: http_ok(f"http://127.0.0.1:{metrics}/health"), 30, "handler")
        time.sleep(seconds)
        return rss_mb(handler.pid)
    finally:
        handler.send_signal(signal.SIGTERM)
        handler.wait(timeout=15)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    bootstrap = f"127.0.0.1:{free_port()}"
    url = f"tcp://{bootstrap}"
    ws_port = free_port()
    broker = subprocess.Popen([str(tansu_binary()), "broker", "--listener-url", url, "--advertised-listener-url", url],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    replay = subprocess.Popen([*K2, "replay", "--dir", str(REPO / "captures"), "--speed", "50", "--loop",
                               "--ports", f"binance={ws_port}"], cwd=REPO,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_for(lambda: tcp_open("127.0.0.1", int(bootstrap.rsplit(":", 1)[1])) and tcp_open("127.0.0.1", ws_port), 30)
        for name, path in (("default instruments (idle: captures carry other symbols)", REPO / "config/instruments.yaml"),
                           ("captures' instruments under replay at 50x", REPO / "captures/instruments.yaml")):  # fmt: skip
            rss, peak = measure(path, ws_port, bootstrap, args.seconds)
            print(f"k2 handler binance, {name}: RSS {rss:.0f} MB (peak {peak:.0f} MB) after {args.seconds:.0f}s")
    finally:
        for process in (replay, broker):
            process.terminate()
            process.wait(timeout=10)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
