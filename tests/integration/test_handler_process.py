"""`k2 handler` as a process against `k2 replay`: metrics/health, hot reload of instruments.yaml,
records on the broker, SIGTERM."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from pathlib import Path

import orjson

from tests.support import K2, REPO, Stack, free_port, http_ok, read_topic, scraped, wait_for

CAPTURES = REPO / "captures"


def _metric(port: int, prefix: str) -> float:
    return scraped(f"http://127.0.0.1:{port}/metrics", prefix)


def test_handler_process_reload_publish_and_sigterm(stack: Stack, tmp_path: Path) -> None:
    instruments = tmp_path / "instruments.yaml"
    shutil.copy(CAPTURES / "instruments.yaml", instruments)
    env = {**stack.env, "K2_INSTRUMENTS": str(instruments)}
    ws_port, metrics_port = free_port(), free_port()
    replay = subprocess.Popen([*K2, "replay", "--dir", str(CAPTURES), "--speed", "20", "--loop",
                               "--ports", f"kraken={ws_port}"], env=env, cwd=REPO)  # fmt: skip
    log = (tmp_path / "handler.log").open("wb")
    handler = subprocess.Popen([*K2, "handler", "kraken", "--ws-url", f"ws://127.0.0.1:{ws_port}/v2",
                                "--metrics-port", str(metrics_port)], env=env, cwd=REPO, stderr=log)  # fmt: skip
    try:
        wait_for(lambda: http_ok(f"http://127.0.0.1:{metrics_port}/health"), 30, "handler /health")
        wait_for(lambda: _metric(metrics_port, 'k2_feed_trades_total{exchange="kraken",symbol="ETH/USD"}') > 5,
                 30, "ETH/USD trades")  # fmt: skip

        instruments.write_text(instruments.read_text().replace("      - ETH/USD\n", "", 1))
        reloaded = wait_for(lambda: [orjson.loads(line) for line in (tmp_path / "handler.log").read_bytes().splitlines()
                                     if b"instruments reloaded" in line], 20, "reload")  # fmt: skip
        assert (reloaded[0]["added"], reloaded[0]["removed"]) == ([], ["ETH/USD"])
        eth_after_reload = _metric(metrics_port, 'k2_feed_trades_total{exchange="kraken",symbol="ETH/USD"}')
        btc = _metric(metrics_port, 'k2_feed_trades_total{exchange="kraken",symbol="BTC/USD"}')
        wait_for(lambda: _metric(metrics_port, 'k2_feed_trades_total{exchange="kraken",symbol="BTC/USD"}') > btc + 5,
                 30, "more BTC/USD trades")  # fmt: skip
        # after the unsubscribe was answered no ETH/USD trade arrives any more (at most in-flight ones)
        assert _metric(metrics_port, 'k2_feed_trades_total{exchange="kraken",symbol="ETH/USD"}') <= eth_after_reload + 2

        instruments.write_text(instruments.read_text().replace("channel: trade\n", "channel: trade\n    bogus: 1\n", 1))
        wait_for(lambda: b"instruments.yaml not applied" in (tmp_path / "handler.log").read_bytes(), 20, "bad reload")
        assert b"bogus: Extra inputs are not permitted" in (tmp_path / "handler.log").read_bytes()

        published = _metric(metrics_port, 'k2_feed_trades_total{exchange="kraken"')
        started = time.monotonic()
        handler.send_signal(signal.SIGTERM)
        assert handler.wait(timeout=10) == 0
        print(f"SIGTERM to exit: {time.monotonic() - started:.2f}s")
        lines = [orjson.loads(line) for line in (tmp_path / "handler.log").read_bytes().splitlines()]
        assert any(e["msg"] == "stopped" and e["all_delivered"] is True for e in lines)
    finally:
        handler.kill()
        replay.send_signal(signal.SIGINT)
        replay.wait(timeout=10)
        log.close()

    records = [
        r for r in read_topic(stack.kafka, "market.crypto.trades.kraken") if r["symbol"] in ("BTC/USD", "ETH/USD")
    ]
    keys = [(r["symbol"], r["trade_id"]) for r in records]
    assert len(keys) == len(set(keys))
    assert len(records) >= published > 10
    first = next(r for r in records if r["symbol"] == "BTC/USD")
    assert (first["price"], first["quantity"], first["side"], first["ord_type"]) == (
        "65059.9",
        "0.18835067",
        "buy",
        "limit",
    )
