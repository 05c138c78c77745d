"""Helpers shared by the tests: free ports, polling for a condition, the embedded stack as a fixture."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import clickhouse_connect
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from k2.embedded.chdb_engine import ChdbEngine
from k2.embedded.components import tansu_binary, tcp_open
from k2.embedded.kafka_ddl import KafkaTableSpec
from k2.migrations import default_sql_dir, discover
from k2.topics import ensure_topics

T = TypeVar("T")

REPO = Path(__file__).resolve().parent.parent
K2 = [sys.executable, "-m", "k2.cli"]

TEST_INSTRUMENTS = """
exchanges:
  binance:
    ws_url: ws://127.0.0.1:1/stream
    channel: trade
    partitions: 4
    symbols: [{BTCUSDT: BTC-USDT}, {ETHUSDT: ETH-USDT}]
  kraken:
    ws_url: ws://127.0.0.1:1/v2
    channel: trade
    partitions: 2
    symbols: [BTC/USD]
  coinbase:
    ws_url: ws://127.0.0.1:1
    channel: market_trades
    partitions: 2
    symbols: [BTC-USD]
"""


def create_schema(engine: ChdbEngine) -> dict[str, KafkaTableSpec]:
    """Every migration applied in an in-process chDB engine, whose Kafka tables never reach a broker (they
    stream only under the embedded server); returns the Kafka tables' specs by table name."""
    engine.execute("CREATE DATABASE k2")
    for migration in discover(default_sql_dir()):
        engine.execute(migration.render({"KAFKA_BROKER_LIST": "127.0.0.1:9"}))  # never contacted
    return {spec.table: spec for spec in engine.kafka_tables()}


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


# Below the kernel's ephemeral range: the ports free_port hands out, each at most once per process.
_EPHEMERAL_LOW = _ephemeral_low()
_PORTS = range(max(1024, _EPHEMERAL_LOW - 12_000), _EPHEMERAL_LOW)
_handed_out: set[int] = set()
_pick = random.Random(os.getpid() ^ time.time_ns())


def free_port() -> int:
    """A loopback port that nothing listens on, for a component a test is about to start.

    Not one the kernel picks (binding port 0): that is an ephemeral port, which any outgoing connection may take as
    its local port before the component binds it (a handler's health port was lost that way). The kernel never
    picks ports below its ephemeral range, so one found free there stays free until a test binds it; and no port
    is handed out twice in a process.
    """
    for _ in range(1000):
        port = _pick.choice(_PORTS)
        if port in _handed_out:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free loopback port in {_PORTS.start}..{_PORTS.stop - 1}")


def wait_for(condition: Callable[[], T], timeout_s: float = 30.0, what: str = "condition") -> T:
    """Poll ``condition`` until it returns something truthy; fail with ``what`` after the timeout."""
    deadline = time.monotonic() + timeout_s
    last: T = condition()
    while not last:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what} (last value {last!r})")
        time.sleep(0.05)
        last = condition()
    return last


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def scraped(metrics_url: str, prefix: str) -> float:
    """Sum of the samples a Prometheus ``/metrics`` endpoint exposes on lines starting with ``prefix``
    (a metric name, optionally with the start or all of its labels: ``name{label="value"``)."""
    with urllib.request.urlopen(metrics_url, timeout=5) as response:
        text = response.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix))


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds process ``pid`` has used (benches: robust to a shared machine, unlike wall time)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def tansu_broker() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A Tansu broker on a free loopback port: (bootstrap, process); stopped after (resumed first if paused)."""
    bootstrap = f"127.0.0.1:{free_port()}"
    url = f"tcp://{bootstrap}"
    process = subprocess.Popen([str(tansu_binary()), "broker", "--listener-url", url, "--advertised-listener-url", url],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_for(lambda: tcp_open("127.0.0.1", int(bootstrap.rsplit(":", 1)[1])), 30, "broker")
        yield bootstrap, process
    finally:
        process.send_signal(signal.SIGCONT)
        process.terminate()
        process.wait(timeout=30)


@dataclass
class Stack:
    """A running embedded stack started with ``k2 up --detach``."""

    data_dir: Path
    env: dict[str, str]
    kafka: str
    clickhouse_url: str

    def k2(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([*K2, *args], env=self.env, capture_output=True, text=True, timeout=timeout, cwd=REPO)
        if check and result.returncode != 0:
            raise AssertionError(f"k2 {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
        return result

    def client(self) -> Any:
        port = int(self.clickhouse_url.rsplit(":", 1)[1])
        return clickhouse_connect.get_client(host="127.0.0.1", port=port)

    def pid(self, component: str) -> int:
        return int((self.data_dir / "run" / f"{component}.pid").read_text())

    def produce(self, messages: Iterable[tuple[str, bytes | dict[str, Any]]]) -> None:
        """Publish (topic, record) pairs in order, each acknowledged by the broker."""
        asyncio.run(produce(self.kafka, messages))


@contextmanager
def kafka_test_table(stack: Stack, prefix: str, *, sink: str, queue: str, settings: str = "") -> Iterator[str]:
    """A one-partition topic ``k2test.<name>``, a MergeTree ``k2.<name>_sink (<sink>) ORDER BY id`` and a JSONEachRow
    Kafka table ``k2.<name>_queue (<queue>)`` reading it with group ``<name>`` and the extra ``settings``
    (", kafka_..."); yields ``name``. The test creates ``k2.<name>_mv``; all three are dropped after."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    client = stack.client()
    asyncio.run(ensure_topics(stack.kafka, {f"k2test.{name}": 1}))
    client.command(f"CREATE TABLE k2.{name}_sink ({sink}) ENGINE = MergeTree ORDER BY id")
    client.command(
        f"CREATE TABLE k2.{name}_queue ({queue}) ENGINE = Kafka SETTINGS kafka_broker_list = '{stack.kafka}', "
        f"kafka_topic_list = 'k2test.{name}', kafka_group_name = '{name}', kafka_format = 'JSONEachRow'{settings}"
    )
    try:
        yield name
    finally:
        for statement in (f"DROP VIEW IF EXISTS k2.{name}_mv", f"DROP TABLE IF EXISTS k2.{name}_queue",
                          f"DROP TABLE IF EXISTS k2.{name}_sink"):  # fmt: skip
            client.command(statement)


def kafka_table_metric(stack: Stack, metric: str, name: str) -> float:
    """The embedded ClickHouse's ``metric`` for the Kafka table ``k2.<name>_queue``."""
    return scraped(stack.clickhouse_url + "/metrics", f'{metric}{{table="k2.{name}_queue"}} ')


async def produce(bootstrap: str, messages: Iterable[tuple[str, bytes | dict[str, Any]]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        futures = []
        for topic, record in messages:
            value = record if isinstance(record, bytes) else orjson.dumps(record)
            key = b"" if isinstance(record, bytes) else str(record.get("symbol", "")).encode()
            futures.append(await producer.send(topic, value, key=key))
        await producer.flush()
        for future in futures:
            await future
    finally:
        await producer.stop()


def stack_env(data_dir: Path) -> dict[str, str]:
    instruments = data_dir.parent / f"{data_dir.name}-instruments.yaml"
    instruments.write_text(TEST_INSTRUMENTS)
    env = {k: v for k, v in os.environ.items() if not k.startswith("K2_")}
    env.update(
        K2_DATA_DIR=str(data_dir),
        K2_KAFKA_BOOTSTRAP=f"127.0.0.1:{free_port()}",
        K2_CLICKHOUSE_URL=f"http://127.0.0.1:{free_port()}",
        K2_INSTRUMENTS=str(instruments),
        K2_REPLAY_PORT_BASE=str(free_port()),
        K2_HANDLER_METRICS_PORT_BASE=str(free_port()),
        K2_PREFECT_PORT=str(free_port()),
        K2_FLOWS_METRICS_PORT=str(free_port()),
        K2_EXPORTER_PORT=str(free_port()),
    )
    return env


@contextmanager
def running_stack(data_dir: Path, *up_args: str, **env_overrides: str) -> Iterator[Stack]:
    """``k2 up --detach`` (no feed handlers unless ``up_args`` ask for them), ``k2 down`` after."""
    env = {**stack_env(data_dir), **env_overrides}
    stack = Stack(data_dir, env, env["K2_KAFKA_BOOTSTRAP"], env["K2_CLICKHOUSE_URL"])
    args = up_args or ("--feeds", "none")
    if "--flows" not in args:  # Prefect (~7-20 s to start) only for the tests that need it
        args = (*args, "--no-flows")
    stack.k2("up", "--detach", *[a for a in args if a != "--flows"])
    try:
        yield stack
    finally:
        stack.k2("down", check=False)


@contextmanager
def clickhouse_server(data_dir: Path, env: dict[str, str] | None = None) -> Iterator[str]:
    """A bare embedded ClickHouse process (no supervisor); yields its URL."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "k2.embedded.clickhouse_server", "--data-dir", str(data_dir), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: http_ok(url + "/ping") or process.poll() is not None, 60, "embedded ClickHouse")
        assert process.poll() is None, "embedded ClickHouse exited at start"
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


_EXTRAS: dict[str, dict[str, Any]] = {
    "binance": {
        "event_time_ns": 0,
        "is_buyer_maker": False,
        "stream_type": "trade",
        "first_trade_id": None,
        "last_trade_id": None,
    },
    "kraken": {"ord_type": "limit", "is_snapshot": False},
    "coinbase": {"sequence_num": 1, "maker_side": "SELL", "is_snapshot": False},
}
VENUE_SYMBOL = {
    "binance": lambda canonical: canonical.replace("-", ""),
    "kraken": lambda canonical: canonical.replace("-", "/"),
    "coinbase": lambda canonical: canonical,
}


def trade(
    exchange: str,
    canonical: str,
    trade_id: int | str,
    price: str,
    quantity: str,
    side: str,
    ts_event_ns: int,
    **extras: Any,
) -> dict[str, Any]:
    """A trade record as a feed handler publishes it (DESIGN.md contract plus the venue extras)."""
    record: dict[str, Any] = {
        "exchange": exchange,
        "symbol": VENUE_SYMBOL[exchange](canonical),
        "canonical_symbol": canonical,
        "trade_id": str(trade_id),
        "price": price,
        "quantity": quantity,
        "side": side,
        "ts_event_ns": ts_event_ns,
        "ts_received_ns": ts_event_ns + 1_000_000,
        **_EXTRAS[exchange],
    }
    record.update(extras)
    return record


def topic(exchange: str) -> str:
    return f"market.crypto.trades.{exchange}"


def read_topic(bootstrap: str, topic: str, containing: bytes = b"") -> list[dict[str, Any]]:
    """Every record on ``topic`` (JSON values), from the beginning to the current end; with
    ``containing``, only the records whose raw value holds those bytes (a shared stack's topics also
    carry other tests' deliberately broken records)."""

    async def read() -> list[dict[str, Any]]:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
        await consumer.start()
        try:
            await consumer.topics()
            tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            out: list[dict[str, Any]] = []
            while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
                for records in (await consumer.getmany(timeout_ms=1000)).values():
                    out.extend(orjson.loads(r.value) for r in records if containing in r.value)
            return out
        finally:
            await consumer.stop()

    return asyncio.run(read())
