"""The embedded server's stand-in for ClickHouse's Kafka table engine.

For every Kafka table (see :mod:`k2.embedded.kafka_ddl`) a consumer joins the table's consumer group,
reads its topics and inserts each poll as one block into the table, whose materialized views then
fire exactly as they do on clickhouse-server. Offsets are committed only after the insert returned,
so a crash redelivers (at-least-once) and never skips; silver's dedup gate makes redelivery harmless.

Parsing follows JSONEachRow through ClickHouse's own ``JSONExtract``: a message that is not a JSON
object becomes a row with ``_error``/``_raw_message`` set in ``stream`` mode, or stops the consumer
(after ``kafka_skip_broken_messages``) in ``default`` mode, as on clickhouse-server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from dataclasses import dataclass
from operator import attrgetter
from typing import Any, TypeAlias

import pyarrow as pa
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError
from prometheus_client import Counter, Gauge

from k2.embedded.chdb_engine import ChdbEngine
from k2.embedded.kafka_ddl import VIRTUAL_COLUMNS, KafkaTableSpec
from k2.errors import ClickHouseError

__all__ = ["KafkaEngine", "KafkaTableConsumer", "build_block"]

log = logging.getLogger(__name__)

ROWS = Counter("k2_clickhouse_kafka_rows_total", "Messages inserted into a Kafka queue table", ["table"])
BROKEN = Counter(
    "k2_clickhouse_kafka_broken_messages_total", "Messages that did not parse as the table format", ["table"]
)
INSERT_ERRORS = Counter(
    "k2_clickhouse_kafka_insert_errors_total",
    "Failed inserts of a polled block (block redelivered)",
    ["table"],
)
LAG = Gauge("k2_consumer_lag", "Messages behind the end of the topic, per Kafka table", ["table"])

_Batch: TypeAlias = dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]
_UNKNOWN_TABLE = 60
_BACKOFF_MAX_S = 10.0
_ARROW_SCHEMA = pa.schema(
    [
        ("value", pa.binary()),
        ("key", pa.binary()),
        ("topic", pa.string()),
        ("partition", pa.uint64()),
        ("offset", pa.uint64()),
        ("ts_ms", pa.int64()),
    ]
)
# Applied to the whole insert, materialized views included. The MVs hanging off a queue table
# (bronze, errors; silver's gold levels) may run side by side. optimize_on_insert would sort and
# collapse each block by the target's key once more: silver's gate (LIMIT 1 BY) and gold's GROUP BY
# already did, and FINAL / the ohlcv views merge at read time whatever reaches the parts.
_INSERT_SETTINGS = "parallel_view_processing = 1, optimize_on_insert = 0"
_VALUE = attrgetter("value")
_KEY = attrgetter("key")
_OFFSET = attrgetter("offset")
_TIMESTAMP = attrgetter("timestamp")
_NOT_OBJECT = "Cannot parse input: expected one JSON object per message (JSONEachRow)"


def build_block(batch: _Batch) -> pa.Table:
    """One polled batch as an Arrow table: the raw values plus everything the virtual columns need."""
    records = [r for recs in batch.values() for r in recs]
    # topic and partition are the same for every record of a TopicPartition: repeat them per run
    topics = pa.array([tp.topic for tp in batch], pa.string()).take(
        pa.array([i for i, recs in enumerate(batch.values()) for _ in range(len(recs))], pa.int32())
    )
    partitions = [tp.partition for tp, recs in batch.items() for _ in range(len(recs))]
    return pa.Table.from_arrays(
        [
            pa.array(list(map(_VALUE, records)), pa.binary()).fill_null(b""),  # None: a tombstone
            pa.array(list(map(_KEY, records)), pa.binary()).fill_null(b""),
            topics,
            pa.array(partitions, pa.uint64()),
            pa.array(list(map(_OFFSET, records)), pa.uint64()),
            pa.array(list(map(_TIMESTAMP, records)), pa.int64()),
        ],
        schema=_ARROW_SCHEMA,
    )


@dataclass(frozen=True)
class _Statements:
    insert: str
    count_broken: str


def _statements(spec: KafkaTableSpec, columns: list[tuple[str, str]]) -> _Statements:
    names = ", ".join(f"`{n}`" for n, _ in columns)
    tuple_type = ", ".join(f"`{n}` {t}" for n, t in columns)
    extracted = ", ".join(f"tupleElement(j, {i + 1})" for i in range(len(columns)))
    virtual = ", ".join(n if n.startswith("`") else f"`{n}`" for n, _ in VIRTUAL_COLUMNS)
    source = (
        "SELECT toString(value) AS raw, toString(key) AS k, topic, partition, offset, ts_ms, "
        # JSONType is 'Null' for anything that is not valid JSON, so one parse tells both apart
        "JSONType(raw) = 'Object' AS ok "
        "FROM Python(k2_arrow)"
    )
    where = "" if spec.handle_error_mode == "stream" else "WHERE ok"
    insert = (
        f"INSERT INTO {spec.qualified_name} ({names}, {virtual}) SETTINGS {_INSERT_SETTINGS} "
        f"SELECT {extracted}, topic, k, offset, partition, "
        "toDateTime(intDiv(ts_ms, 1000), 'UTC'), fromUnixTimestamp64Milli(ts_ms, 'UTC'), [], [], "
        f"if(ok, '', raw), if(ok, '', '{_NOT_OBJECT}') "
        f"FROM (SELECT *, JSONExtract(raw, 'Tuple({tuple_type})') AS j FROM ({source})) {where}"
    )
    return _Statements(insert, f"SELECT countIf(NOT ok) FROM ({source})")


class KafkaTableConsumer:
    """Consumes one Kafka table's topics into it, committing offsets after each successful insert."""

    def __init__(self, engine: ChdbEngine, spec: KafkaTableSpec) -> None:
        self.spec = spec
        self._engine = engine
        self._label = f"{spec.database}.{spec.table}"
        self._statements: _Statements | None = None

    def _prepare(self) -> _Statements:
        virtual = {n.strip("`") for n, _ in VIRTUAL_COLUMNS}
        rows = self._engine.execute(
            "SELECT name, type FROM system.columns WHERE database = {db:String} AND table = {t:String} "
            "ORDER BY position",
            "TabSeparated",
            params={"db": self.spec.database, "t": self.spec.table},
        ).data.decode()
        columns = [tuple(line.split("\t", 1)) for line in rows.splitlines()]
        return _statements(self.spec, [(n, t) for n, t in columns if n not in virtual])

    def _insert(self, block: pa.Table) -> None:
        statements = self._statements or self._prepare()
        self._statements = statements
        if self.spec.handle_error_mode == "default":
            broken = int(self._engine.execute(statements.count_broken, arrow=block).data or b"0")
            if broken > self.spec.skip_broken_messages:
                BROKEN.labels(self._label).inc(broken)
                raise ClickHouseError(f"{_NOT_OBJECT}: {broken} broken messages in block", 117)
        self._engine.execute(statements.insert, arrow=block)

    async def run(self) -> None:
        """Consume until cancelled. Broker outages and failed inserts are retried with capped backoff."""
        attempt = 0
        while True:
            consumer = AIOKafkaConsumer(
                *self.spec.topics,
                bootstrap_servers=self.spec.broker_list,
                group_id=self.spec.group_name,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                max_partition_fetch_bytes=8 * 1024 * 1024,
                # the broker may hold a fetch this long when there is little data: bound it by our flush
                fetch_max_wait_ms=min(100, self.spec.flush_interval_ms),
                fetch_max_bytes=64 * 1024 * 1024,
            )
            try:
                await consumer.start()
                attempt = 0
                await self._consume(consumer)
                return
            except KafkaError as exc:
                attempt += 1
                delay = min(_BACKOFF_MAX_S, 0.2 * 2**attempt) * random.uniform(0.5, 1.0)  # noqa: S311
                log.warning("kafka table %s: broker error %r, retrying in %.1fs", self._label, exc, delay)
                await asyncio.sleep(delay)
            finally:
                with contextlib.suppress(KafkaError):
                    await consumer.stop()

    async def _consume(self, consumer: AIOKafkaConsumer) -> None:
        """Poll into a block, insert it, commit it.

        Polling continues while an insert runs (chDB releases the GIL), so a block holds whatever
        arrived during the previous insert, up to ``kafka_max_block_size``: blocks grow with load and
        stay small (low latency) when the stream is quiet. Inserts and commits stay strictly in order.
        """
        failures = 0
        pending: _Batch = {}
        inflight: tuple[asyncio.Task[None], _Batch] | None = None
        while True:
            room = self.spec.max_block_size - sum(len(r) for r in pending.values())
            if room > 0 and not (inflight is None and pending):
                polled = await consumer.getmany(timeout_ms=self._poll_timeout_ms(inflight), max_records=room)
                for tp, records in polled.items():
                    pending.setdefault(tp, []).extend(records)
            if inflight is not None and (inflight[0].done() or room <= 0):
                task, done = inflight
                inflight = None
                try:
                    await task
                except ClickHouseError as exc:
                    if exc.code == _UNKNOWN_TABLE:
                        log.info("kafka table %s was dropped; its consumer stops", self._label)
                        return
                    failures += 1
                    INSERT_ERRORS.labels(self._label).inc()
                    self._statements = None  # the table may have been altered
                    for tp, records in {**pending, **done}.items():  # redeliver both, in order
                        consumer.seek(tp, records[0].offset)
                    pending = {}
                    delay = min(_BACKOFF_MAX_S, 0.1 * 2**failures)
                    log.error("kafka table %s: insert failed (%s); redelivering in %.1fs", self._label, exc, delay)
                    await asyncio.sleep(delay)
                    continue
                failures = 0
                ROWS.labels(self._label).inc(sum(len(r) for r in done.values()))
                await consumer.commit({tp: records[-1].offset + 1 for tp, records in done.items()})
                self._report_lag(consumer, done)
            if inflight is None and pending:
                block = build_block(pending)
                inflight = (asyncio.create_task(asyncio.to_thread(self._insert, block)), pending)
                pending = {}

    def _poll_timeout_ms(self, inflight: tuple[asyncio.Task[None], _Batch] | None) -> int:
        # While an insert runs, poll briefly so its completion is noticed quickly.
        return 20 if inflight is not None else self.spec.flush_interval_ms

    def _report_lag(self, consumer: AIOKafkaConsumer, batch: dict[TopicPartition, Any]) -> None:
        lag = 0
        for tp, records in batch.items():
            end = consumer.highwater(tp)
            if end is not None:
                lag += max(0, end - (records[-1].offset + 1))
        LAG.labels(self._label).set(lag)


class KafkaEngine:
    """Keeps one consumer task per Kafka table in the chDB data directory, in step with DDL."""

    def __init__(self, engine: ChdbEngine) -> None:
        self._engine = engine
        self._tasks: dict[KafkaTableSpec, asyncio.Task[None]] = {}
        self._changed = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        engine.on_ddl(self._ddl_happened)

    def _ddl_happened(self) -> None:
        self._loop.call_soon_threadsafe(self._changed.set)

    async def run(self) -> None:
        """Reconcile consumers with the tables now and after every DDL statement, until cancelled."""
        try:
            while True:
                self._changed.clear()
                await self._reconcile()
                await self._changed.wait()
        finally:
            await self._stop_all()

    async def _reconcile(self) -> None:
        wanted = set(await asyncio.to_thread(self._engine.kafka_tables))
        for spec in [s for s in self._tasks if s not in wanted]:
            await self._stop(spec)
        for spec, task in list(self._tasks.items()):
            if task.done():
                exc = None if task.cancelled() else task.exception()
                if exc is not None:
                    log.error("kafka table %s: consumer failed: %r; restarting", spec.table, exc)
                del self._tasks[spec]
        for spec in wanted - set(self._tasks):
            log.info("kafka table %s.%s: consuming %s", spec.database, spec.table, ",".join(spec.topics))
            task = asyncio.create_task(KafkaTableConsumer(self._engine, spec).run(), name=spec.table)
            task.add_done_callback(lambda _t: self._changed.set())
            self._tasks[spec] = task

    async def _stop(self, spec: KafkaTableSpec) -> None:
        task = self._tasks.pop(spec)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _stop_all(self) -> None:
        for spec in list(self._tasks):
            await self._stop(spec)
