"""SIGTERM ends `k2 handler` with exit 0 inside 10 s whatever the broker is doing: hanging while the handler
reads its last trades back at start, or frozen while trades are buffered."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import orjson

from tests.support import K2, REPO, free_port, http_ok, scraped, stack_env, tansu_broker, wait_for

CAPTURES = REPO / "captures"


def _log(path: Path) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.startswith(b"{")]


def _stop(handler: subprocess.Popen[bytes]) -> tuple[int, float]:
    started = time.monotonic()
    handler.send_signal(signal.SIGTERM)
    try:
        code = handler.wait(timeout=15)
    except subprocess.TimeoutExpired:
        handler.kill()
        raise
    return code, time.monotonic() - started


def test_sigterm_while_the_broker_hangs_at_start(tmp_path: Path) -> None:
    env = stack_env(tmp_path / "data")
    log_path = tmp_path / "handler.log"
    with tansu_broker() as (bootstrap, broker), log_path.open("wb") as log:
        os.kill(broker.pid, signal.SIGSTOP)  # accepts connections, answers nothing: the recovery read waits
        handler = subprocess.Popen([*K2, "handler", "kraken", "--ws-url", f"ws://127.0.0.1:{free_port()}/v2",
                                    "--bootstrap", bootstrap, "--metrics-port", str(free_port())],
                                   env=env, cwd=REPO, stderr=log)  # fmt: skip
        try:
            wait_for(lambda: any("reading the last trades back" in str(e["msg"]) for e in _log(log_path)), 30,
                     "the recovery read")  # fmt: skip
            code, took = _stop(handler)
        finally:
            handler.kill()
    print(f"SIGTERM during recovery: exit {code} in {took:.2f}s")
    assert code == 0
    assert took < 10
    assert any(e["msg"] == "stopped before the feed started" for e in _log(log_path))


def test_sigterm_while_the_broker_is_frozen_with_trades_buffered(tmp_path: Path) -> None:
    env = stack_env(tmp_path / "data")
    env["K2_INSTRUMENTS"] = str(CAPTURES / "instruments.yaml")
    ws_port, metrics_port = free_port(), free_port()
    log_path = tmp_path / "handler.log"
    with tansu_broker() as (bootstrap, broker), log_path.open("wb") as log:
        replay = subprocess.Popen([*K2, "replay", "--dir", str(CAPTURES), "--speed", "20", "--loop",
                                   "--ports", f"kraken={ws_port}"], env=env, cwd=REPO)  # fmt: skip
        handler = subprocess.Popen([*K2, "handler", "kraken", "--ws-url", f"ws://127.0.0.1:{ws_port}/v2",
                                    "--bootstrap", bootstrap, "--metrics-port", str(metrics_port)],
                                   env=env, cwd=REPO, stderr=log)  # fmt: skip
        metrics = f"http://127.0.0.1:{metrics_port}/metrics"

        def trades() -> float:
            return scraped(metrics, 'k2_feed_trades_total{exchange="kraken"')

        try:
            wait_for(lambda: http_ok(f"http://127.0.0.1:{metrics_port}/health") and trades() > 5, 60, "trades flowing")
            os.kill(broker.pid, signal.SIGSTOP)
            frozen_at = trades()
            wait_for(lambda: trades() > frozen_at + 5, 30, "trades buffered after the broker froze")
            code, took = _stop(handler)
        finally:
            handler.kill()
            replay.send_signal(signal.SIGINT)
            replay.wait(timeout=10)
    print(f"SIGTERM with the broker frozen: exit {code} in {took:.2f}s")
    assert code == 0
    assert took < 10
    stopped = [e for e in _log(log_path) if e["msg"] == "stopped"]
    assert [e["all_delivered"] for e in stopped] == [False]  # said, not hidden
