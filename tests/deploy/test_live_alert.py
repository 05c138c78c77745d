"""A real Prometheus scrapes a real `k2 handler binance` fed by a local fake Binance, evaluates the shipped
alert rules, and FeedHandlerDown fires after the handler is killed, reaches Alertmanager (with the shipped
routing) and resolves when the handler returns.

Deviations from production, all in the test copies: scrape and evaluation every 1 s, FeedHandlerDown
``for: 3s`` instead of 1m (the shipped rule is covered by promtool), Alertmanager's grouping waits 1 s
and its receiver is a webhook in this test.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.tools import ALERT_RULES, DOCKER, tool
from tests.support import K2, REPO, Stack, free_port, http_ok, wait_for

CAPTURES = REPO / "captures"


class _Webhook(BaseHTTPRequestHandler):
    received: list[dict[str, Any]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append({"at": time.monotonic(), **json.loads(body)})
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def _webhook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    received: list[dict[str, Any]] = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), type("Hook", (_Webhook,), {"received": received}))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/alerts", received
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def _process(args: list[str], log: Path, **kwargs: Any) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, **kwargs)
        try:
            yield process
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def _alerts(prometheus: str, name: str) -> list[dict[str, Any]]:
    return [a for a in _get(f"{prometheus}/api/v1/alerts")["data"]["alerts"] if a["labels"]["alertname"] == name]


def _query(prometheus: str, expr: str) -> list[dict[str, Any]]:
    return list(_get(f"{prometheus}/api/v1/query?query={urllib.parse.quote(expr)}")["data"]["result"])


def _test_configs(tmp: Path, handler_port: int, alertmanager_port: int, webhook: str) -> Path:
    """Copies of the shipped Prometheus and Alertmanager configs, pointed at this test's processes."""
    rules = yaml.safe_load(ALERT_RULES.read_text())
    feed_handler_down = next(r for g in rules["groups"] for r in g["rules"] if r.get("alert") == "FeedHandlerDown")
    assert feed_handler_down["for"] == "1m"
    feed_handler_down["for"] = "3s"
    (tmp / "rules.yml").write_text(yaml.safe_dump(rules))

    prometheus = yaml.safe_load((DOCKER / "prometheus" / "prometheus.yml").read_text())
    prometheus["global"].update(scrape_interval="1s", evaluation_interval="1s")
    prometheus["rule_files"] = [str(tmp / "rules.yml")]
    prometheus["alerting"]["alertmanagers"][0]["static_configs"] = [{"targets": [f"127.0.0.1:{alertmanager_port}"]}]
    job = next(j for j in prometheus["scrape_configs"] if j["job_name"] == "feed-handler")
    job["static_configs"] = [{"targets": [f"127.0.0.1:{handler_port}"], "labels": {"exchange": "binance"}}]
    prometheus["scrape_configs"] = [job]
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(prometheus))

    alertmanager = yaml.safe_load((DOCKER / "alertmanager" / "alertmanager.yml").read_text())
    alertmanager["route"].update(group_wait="1s", group_interval="1s")
    assert [r["name"] for r in alertmanager["receivers"]] == ["k2-default"]
    alertmanager["receivers"] = [{"name": "k2-default", "webhook_configs": [{"url": webhook, "send_resolved": True}]}]
    (tmp / "alertmanager.yml").write_text(yaml.safe_dump(alertmanager))
    return tmp


@pytest.mark.integration
def test_feed_handler_down_fires_when_the_handler_dies_and_resolves_when_it_returns(
    stack: Stack, tmp_path: Path
) -> None:
    prometheus_bin, alertmanager_bin = tool("prometheus"), tool("prometheus-alertmanager", "alertmanager")
    ws_port, handler_port, prom_port, am_port = free_port(), free_port(), free_port(), free_port()
    instruments = tmp_path / "instruments.yaml"
    shutil.copy(CAPTURES / "instruments.yaml", instruments)
    env = {**stack.env, "K2_INSTRUMENTS": str(instruments)}
    handler_args = [*K2, "handler", "binance", "--ws-url", f"ws://127.0.0.1:{ws_port}/stream",
                    "--metrics-port", str(handler_port)]  # fmt: skip
    prometheus = f"http://127.0.0.1:{prom_port}"
    timings: dict[str, float] = {}

    with (
        _webhook() as (webhook, received),
        _process([*K2, "replay", "--dir", str(CAPTURES), "--speed", "20", "--loop", "--ports", f"binance={ws_port}"],
                 tmp_path / "replay.log", env=env, cwd=REPO),
        _process(handler_args, tmp_path / "handler-1.log", env=env, cwd=REPO) as handler,
        _process([alertmanager_bin, f"--config.file={_test_configs(tmp_path, handler_port, am_port, webhook)}"
                  "/alertmanager.yml", f"--storage.path={tmp_path / 'am'}", f"--web.listen-address=127.0.0.1:{am_port}",
                  "--cluster.listen-address="], tmp_path / "alertmanager.log"),
        _process([prometheus_bin, f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                  f"--web.listen-address=127.0.0.1:{prom_port}"], tmp_path / "prometheus.log"),
    ):  # fmt: skip
        wait_for(lambda: http_ok(f"http://127.0.0.1:{handler_port}/health"), 30, "handler /health")
        wait_for(lambda: http_ok(f"{prometheus}/-/ready") and http_ok(f"http://127.0.0.1:{am_port}/-/ready"), 30,
                 "Prometheus and Alertmanager ready")  # fmt: skip
        # a real scrape of the handler: up is 1 and its trade counters are there
        wait_for(lambda: [r for r in _query(prometheus, 'up{job="feed-handler"}') if r["value"][1] == "1"], 20, "up 1")
        trades = wait_for(lambda: _query(prometheus, 'sum(k2_feed_trades_total{exchange="binance"}) > 0'), 20, "trades")
        assert float(trades[0]["value"][1]) > 0
        wait_for(lambda: _get(f"{prometheus}/api/v1/rules")["data"]["groups"], 10, "rules loaded")
        assert _alerts(prometheus, "FeedHandlerDown") == []

        handler.kill()
        handler.wait()
        killed = time.monotonic()
        wait_for(lambda: [a for a in _alerts(prometheus, "FeedHandlerDown") if a["state"] == "pending"], 15, "pending")
        timings["pending"] = time.monotonic() - killed
        firing = wait_for(lambda: [a for a in _alerts(prometheus, "FeedHandlerDown") if a["state"] == "firing"], 20,
                          "FeedHandlerDown firing")  # fmt: skip
        timings["firing"] = time.monotonic() - killed
        assert firing[0]["labels"] == {"alertname": "FeedHandlerDown", "severity": "critical", "job": "feed-handler",
                                       "instance": f"127.0.0.1:{handler_port}", "exchange": "binance"}  # fmt: skip
        assert firing[0]["annotations"]["summary"] == "Feed handler binance is down"
        notified = wait_for(lambda: [n for n in received if n["status"] == "firing"], 20, "Alertmanager notification")
        timings["notified"] = notified[0]["at"] - killed
        assert [a["labels"]["alertname"] for a in notified[0]["alerts"]] == ["FeedHandlerDown"]
        assert notified[0]["groupLabels"] == {"alertname": "FeedHandlerDown", "exchange": "binance"}

        with _process(handler_args, tmp_path / "handler-2.log", env=env, cwd=REPO):
            wait_for(lambda: http_ok(f"http://127.0.0.1:{handler_port}/health"), 30, "handler back")
            back = time.monotonic()
            wait_for(lambda: _alerts(prometheus, "FeedHandlerDown") == [], 20, "FeedHandlerDown resolved")
            timings["resolved"] = time.monotonic() - back
            resolved = wait_for(lambda: [n for n in received if n["status"] == "resolved"], 20, "resolved notification")
            timings["resolved_notified"] = resolved[0]["at"] - back
            assert [a["labels"]["alertname"] for a in resolved[0]["alerts"]] == ["FeedHandlerDown"]
            assert _query(prometheus, 'up{job="feed-handler"}')[0]["value"][1] == "1"

    print("after kill / after return (s): " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
    assert timings["pending"] < timings["firing"]
