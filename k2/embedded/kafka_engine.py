"""The embedded server's stand-in for ClickHouse's Kafka table engine.

For every Kafka table that a materialized view reads (see :mod:`k2.embedded.kafka_ddl`), a consumer
(:mod:`k2.embedded.kafka_fetch`) reads its topics from the offsets committed in the table's consumer
group and inserts each poll as one block into the table, whose materialized views then fire exactly as
they do on clickhouse-server. Offsets are committed only after the insert returned, so a crash
redelivers (at-least-once) and never skips; silver's dedup gate makes redelivery harmless.

Parsing follows JSONEachRow through ClickHouse's own ``JSONExtract``: a message that is not a JSON
object becomes a row with ``_error``/``_raw_message`` set in ``stream`` mode, or stops the consumer
(after ``kafka_skip_broken_messages``) in ``default`` mode, as on clickhouse-server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition
from prometheus_client import Counter, Gauge

from k2.embedded.chdb_engine import ChdbEngine, InsertLane
from k2.embedded.kafka_ddl import VIRTUAL_COLUMNS, KafkaTableSpec
from k2.embedded.kafka_fetch import Fetched, GroupFetcher
from k2.errors import ClickHouseError
from k2.gold_repair import repair_gold

__all__ = ["KafkaEngine", "KafkaTableConsumer", "build_block", "split_by_key"]

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
FETCHES = Counter("k2_clickhouse_kafka_fetches_total", "Fetch requests made for a Kafka table", ["table"])
LAG = Gauge("k2_consumer_lag", "Messages behind the end of the topic, per Kafka table", ["table"])

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
        ("header_names", pa.list_(pa.string())),
        ("header_values", pa.list_(pa.binary())),
    ]
)
# Applied to the whole insert, materialized views included. The MVs hanging off a queue table
# (bronze, errors; silver's gold levels) may run side by side. optimize_on_insert would sort and
# collapse each block by the target's key once more: silver's gate (LIMIT 1 BY) and gold's GROUP BY
# already did, and FINAL / the ohlcv views merge at read time whatever reaches the parts.
_INSERT_SETTINGS = "parallel_view_processing = 1, optimize_on_insert = 0"
#: Least time between two fetches while an insert runs (see KafkaTableConsumer._pace_fetch).
_INFLIGHT_FETCH_INTERVAL_S = 0.05
_NOT_OBJECT = "Cannot parse input: expected one JSON object per message (JSONEachRow)"


def build_block(fetched: Fetched) -> pa.Table:
    """One block of fetched messages as an Arrow table: the raw values plus what the virtual columns need."""
    # topic and partition are the same for every row of a run: repeat them per run
    topics = pa.concat_arrays([pa.repeat(pa.scalar(tp.topic, pa.string()), n) for tp, n in fetched.runs])
    partitions = pa.concat_arrays([pa.repeat(pa.scalar(tp.partition, pa.uint64()), n) for tp, n in fetched.runs])
    return pa.Table.from_arrays(
        [
            pa.array(fetched.values, pa.binary()).fill_null(b""),  # None: a tombstone
            pa.array(fetched.keys, pa.binary()).fill_null(b""),
            topics,
            partitions,
            pa.array(fetched.offsets, pa.uint64()),
            pa.array(fetched.timestamps, pa.int64()),
            *_header_columns(fetched.headers, len(fetched)),
        ],
        schema=_ARROW_SCHEMA,
    )


def _header_columns(headers: list[Sequence[tuple[str, bytes]]], rows: int) -> tuple[pa.Array, pa.Array]:
    """The messages' headers as two list columns (names, values), as ClickHouse's ``_headers.name/value``.

    ``headers`` holds one entry per row, or none at all (blocks built by hand: no headers)."""
    if not any(headers):  # the usual case (trade records carry none): no per-message work
        empty = pa.repeat(pa.scalar(0, pa.int32()), rows + 1)  # every list's offsets: all empty
        return (pa.ListArray.from_arrays(empty, pa.array([], pa.string())),
                pa.ListArray.from_arrays(empty, pa.array([], pa.binary())))  # fmt: skip
    return (pa.array([[n for n, _ in h] for h in headers], pa.list_(pa.string())),
            pa.array([[v for _, v in h] for h in headers], pa.list_(pa.binary())))  # fmt: skip


def split_by_key(block: pa.Table, lanes: int) -> list[pa.Table]:
    """``block`` as at most ``lanes`` blocks that share no message key, each keeping its rows' order.

    Whole keys go to the lane with the fewest rows so far, largest key first, so the parts come out as
    even as the keys allow. Every message of a trade carries the same key (its venue symbol, DESIGN.md),
    so duplicates of a trade always land in the same part: silver's gate and ``LIMIT 1 BY`` see them
    together, as they would in one block.
    """
    if lanes < 2 or block.num_rows < 2:
        return [block]
    keys = block.column("key")
    counts = pc.value_counts(keys)
    if len(counts) < 2:
        return [block]
    sizes = sorted(zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist(), strict=True),
                   key=lambda kv: -kv[1])  # fmt: skip
    loads = [0] * lanes
    members: list[list[bytes]] = [[] for _ in range(lanes)]
    for key, rows in sizes:
        lane = loads.index(min(loads))
        loads[lane] += rows
        members[lane].append(key)
    return [block.filter(pc.is_in(keys, value_set=pa.array(m, pa.binary()))) for m in members if m]


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
        "header_names, arrayMap(v -> toString(v), header_values) AS header_texts, "
        # JSONType is 'Null' for anything that is not valid JSON, so one parse tells both apart
        "JSONType(raw) = 'Object' AS ok "
        "FROM Python(k2_arrow)"
    )
    where = "" if spec.handle_error_mode == "stream" else "WHERE ok"
    insert = (
        f"INSERT INTO {spec.qualified_name} ({names}, {virtual}) SETTINGS {_INSERT_SETTINGS} "
        f"SELECT {extracted}, topic, k, offset, partition, "
        "toDateTime(intDiv(ts_ms, 1000), 'UTC'), fromUnixTimestamp64Milli(ts_ms, 'UTC'), header_names, header_texts, "
        f"if(ok, '', raw), if(ok, '', '{_NOT_OBJECT}') "
        f"FROM (SELECT *, JSONExtract(raw, 'Tuple({tuple_type})') AS j FROM ({source})) {where}"
    )
    return _Statements(insert, f"SELECT countIf(NOT ok) FROM ({source})")


@dataclass
class _Block:
    """Fetched messages not inserted yet: one Arrow table per fetch, built as it arrived, and the offsets
    they span per partition (what the commit after the insert, or a rewind after a failed one, needs)."""

    chunks: list[pa.Table] = field(default_factory=list)
    rows: int = 0
    first: dict[TopicPartition, int] = field(default_factory=dict)  # first offset per partition
    next: dict[TopicPartition, int] = field(default_factory=dict)  # offset after the last one

    def __len__(self) -> int:
        return self.rows

    def add(self, fetched: Fetched) -> None:
        if len(fetched):
            self.chunks.append(build_block(fetched))
            self.rows += len(fetched)
        for tp, offset in fetched.first.items():
            self.first.setdefault(tp, offset)
        self.next.update(fetched.next)

    def table(self) -> pa.Table:
        """The block to insert; its columns keep one chunk per fetch (no copy)."""
        return self.chunks[0] if len(self.chunks) == 1 else pa.concat_tables(self.chunks)


class KafkaTableConsumer:
    """Consumes one Kafka table's topics into it, committing offsets after each successful insert.

    With ``lanes`` above 1, a poll may take up to ``lanes`` x ``kafka_max_block_size`` messages, and a
    block of more than ``kafka_max_block_size`` is inserted as up to ``lanes`` parts that share no
    message key (``split_by_key``), at once, each on its own chDB connection: chDB runs an insert and
    the whole materialized-view chain behind it on one thread, where clickhouse-server would use
    several. The block's offsets are committed once, after every part was inserted. A block that fits
    in one part (any quiet stream) is inserted as it is: splitting it would pay each insert's fixed
    cost twice for no gain.
    """

    def __init__(self, engine: ChdbEngine, spec: KafkaTableSpec, *, lanes: int = 1) -> None:
        self.spec = spec
        self._engine = engine
        self._lanes = lanes
        self._capacity = spec.max_block_size * lanes  # messages a block may hold
        self._extra_lanes: list[InsertLane] = []  # opened on the first split block
        self._pool: ThreadPoolExecutor | None = None
        self._lane_lock = threading.Lock()
        self._label = f"{spec.database}.{spec.table}"
        self._statements: _Statements | None = None
        #: Fetches started so far, and the number of the last one that found nothing new while nothing was
        #: left to insert: everything up to the broker's end as of that fetch is inserted and committed.
        self.fetches_started = 0
        self.caught_up_at = 0
        self.progress = asyncio.Event()  # set when caught_up_at moves
        self._next_fetch = 0.0  # loop time before which no fetch starts while an insert runs

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

    def _run(self, sql: str, fmt: str, params: Mapping[str, str]) -> bytes:
        return self._engine.execute(sql, fmt, params=params or None).data

    def insert(self, block: pa.Table) -> None:
        """Insert one block (``build_block``) into the table: its materialized views run; no offset is committed."""
        statements = self._statements or self._prepare()
        self._statements = statements
        if self.spec.handle_error_mode == "default":
            broken = int(self._engine.execute(statements.count_broken, arrow=block).data or b"0")
            if broken > self.spec.skip_broken_messages:
                BROKEN.labels(self._label).inc(broken)
                raise ClickHouseError(f"{_NOT_OBJECT}: {broken} broken messages in block", 117)
        parts = min(self._lanes, -(-block.num_rows // self.spec.max_block_size))
        first, *others = split_by_key(block, parts)
        if not others:
            self._engine.execute(statements.insert, arrow=first)
            return
        with self._lane_lock:  # against close() from the event loop, when a cancelled consumer's insert runs on
            if self._pool is None:
                self._extra_lanes = [self._engine.open_lane() for _ in range(self._lanes - 1)]
                self._pool = ThreadPoolExecutor(self._lanes - 1, thread_name_prefix=f"k2-lane-{self.spec.table}")
            running = [self._pool.submit(lane.execute, statements.insert, arrow=part)
                       for lane, part in zip(self._extra_lanes, others, strict=False)]  # fmt: skip
        error: ClickHouseError | None = None
        try:
            self._engine.execute(statements.insert, arrow=first)
        except ClickHouseError as exc:
            error = exc
        for future in running:  # every part has finished, one way or the other, before the block is judged
            try:
                future.result()
            except ClickHouseError as exc:
                error = error or exc
        if error is not None:
            raise error

    def close(self) -> None:
        """Close the extra lanes, once the parts running on them have finished."""
        with self._lane_lock:
            pool, lanes = self._pool, self._extra_lanes
            self._pool, self._extra_lanes = None, []
        if pool is not None:
            pool.shutdown()
        for lane in lanes:
            lane.close()

    async def run(self) -> None:
        """Consume until cancelled. Broker outages and failed inserts are retried with capped backoff."""
        try:
            await self._consume_with_retries()
        finally:
            self.close()

    async def _consume_with_retries(self) -> None:
        attempt = 0
        while True:
            fetcher = GroupFetcher(
                self.spec.broker_list,
                self.spec.group_name,
                self.spec.topics,
                # the broker may hold a fetch this long when there is little data: bound it by our flush
                max_wait_ms=min(100, self.spec.flush_interval_ms),
            )
            try:
                await fetcher.start()
                attempt = 0
                # a crash may have torn the last block's MV chain: make gold whole before it is redelivered
                await asyncio.to_thread(repair_gold, self._run, fetcher.started_at, fetcher.committed_at_ns)
                await self._consume(fetcher)
                return
            except KafkaError as exc:
                attempt += 1
                delay = min(_BACKOFF_MAX_S, 0.2 * 2**attempt) * random.uniform(0.5, 1.0)  # noqa: S311
                log.warning("kafka table %s: broker error %r, retrying in %.1fs", self._label, exc, delay)
                await asyncio.sleep(delay)
            finally:
                with contextlib.suppress(KafkaError):
                    await fetcher.stop()

    async def _consume(self, fetcher: GroupFetcher) -> None:
        """Fetch into a block, insert it, commit it.

        Fetching continues while an insert runs (chDB releases the GIL), so a block holds whatever
        arrived during the previous insert, up to ``lanes`` x ``kafka_max_block_size`` messages: blocks
        grow with load and stay small (low latency) when the stream is quiet. Each fetch is built into
        Arrow as it arrives, while the insert runs. When an insert returns, the next one starts at once
        with what was fetched by then, before its offsets are committed and without waiting for a fetch
        still on its way: chDB's thread does not wait for the broker or for Python. Inserts and commits
        stay strictly in order.
        """
        failures = 0
        pending = _Block()
        ready: _Block | None = None  # a full block, waiting for the running insert to return
        inflight: tuple[asyncio.Task[None], _Block] | None = None
        fetching: asyncio.Task[Fetched] | None = None  # the fetch on its way: number fetches_started
        fetches = FETCHES.labels(self._label)
        try:
            while True:
                room = self._capacity - len(pending)
                if fetching is None and room > 0 and ready is None and not (inflight is None and len(pending)):
                    insert = inflight[0] if inflight is not None else None
                    fetching = asyncio.create_task(self._fetch(fetcher, room, insert))
                    fetches.inc()
                    self.fetches_started += 1
                waits: list[asyncio.Task[Any]] = [t for t in (fetching, inflight and inflight[0]) if t is not None]
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                if fetching is not None and fetching.done():
                    fetched = fetching.result()
                    fetching = None
                    pending.add(fetched)
                    if not len(fetched) and not len(pending) and inflight is None and ready is None:
                        self.caught_up_at = self.fetches_started  # one fetch at a time: the one that just ended
                        self.progress.set()
                if ready is None and len(pending) >= self._capacity:
                    ready, pending = pending, _Block()
                if inflight is not None and inflight[0].done():
                    task, done = inflight
                    inflight = None
                    try:
                        task.result()
                    except ClickHouseError as exc:
                        if exc.code == _UNKNOWN_TABLE:
                            log.info("kafka table %s was dropped; its consumer stops", self._label)
                            return
                        failures += 1
                        INSERT_ERRORS.labels(self._label).inc()
                        self._statements = None  # the table may have been altered
                        if fetching is not None:  # it moves the positions: let it land before rewinding them
                            await asyncio.wait((fetching,))
                            with contextlib.suppress(KafkaError):  # what it fetched is fetched again anyway
                                fetching.result()
                            fetching = None
                        later = ready.first if ready is not None else {}
                        for tp, offset in {**pending.first, **later, **done.first}.items():  # redeliver all, in order
                            fetcher.seek(tp, offset)
                        ready, pending = None, _Block()
                        delay = min(_BACKOFF_MAX_S, 0.1 * 2**failures)
                        log.error("kafka table %s: insert failed (%s); redelivering in %.1fs", self._label, exc, delay)
                        await asyncio.sleep(delay)
                        continue
                    failures = 0
                    if fetching is not None and ready is None and not fetcher.behind():
                        # A quiet stream: the fetch on its way holds what arrived as the insert ended and
                        # returns within its short poll; taking it now saves those messages a whole insert.
                        # Under a backlog the next insert starts without it.
                        await asyncio.wait((fetching,))
                        pending.add(fetching.result())
                        fetching = None
                    # Taken before the next insert starts, to the microsecond of silver's ts_ingested: every
                    # row inserted after this commit is at or after it, which is what repair_gold relies on.
                    inserted_at_ns = time.time_ns() // 1000 * 1000
                    inflight, ready, pending = self._start(ready, pending)
                    ROWS.labels(self._label).inc(len(done))
                    await fetcher.commit(done.next, inserted_at_ns)
                    self._report_lag(fetcher, done)
                if inflight is None:
                    inflight, ready, pending = self._start(ready, pending)
        except KafkaError:
            if inflight is not None:  # let chDB finish it before a new consumer starts; it is redelivered
                with contextlib.suppress(ClickHouseError):
                    await inflight[0]
            raise
        finally:
            if fetching is not None:
                fetching.cancel()
                with contextlib.suppress(asyncio.CancelledError, KafkaError):
                    await fetching

    async def _fetch(self, fetcher: GroupFetcher, room: int, insert: asyncio.Task[None] | None) -> Fetched:
        """One fetch of at most ``room`` messages; paced while ``insert`` runs (``_pace_fetch``)."""
        if insert is not None:
            await self._pace_fetch(insert, self._next_fetch)
        self._next_fetch = asyncio.get_running_loop().time() + _INFLIGHT_FETCH_INTERVAL_S
        # While an insert runs, poll briefly so that its completion is not kept waiting for a held fetch.
        return await fetcher.fetch(room, 20 if insert is not None else self.spec.flush_interval_ms)

    def _start(
        self, ready: _Block | None, pending: _Block
    ) -> tuple[tuple[asyncio.Task[None], _Block] | None, None, _Block]:
        """Start inserting ``ready``, or else whatever is pending; returns (inflight, ready, pending)."""
        if ready is None:
            if not len(pending):
                return None, None, pending
            ready, pending = pending, _Block()
        return (asyncio.create_task(asyncio.to_thread(self.insert, ready.table())), ready), None, pending

    @staticmethod
    async def _pace_fetch(insert: asyncio.Task[None], not_before: float) -> None:
        """Wait until ``not_before`` (loop time) or until ``insert`` ends, whichever comes first.

        While an insert runs, a fetch returns as soon as anything arrived: at a few thousand messages a
        second, fetching back to back meant hundreds of tiny fetches per insert, a broker busy answering
        them (Tansu used most of a core) and Python competing with chDB for the CPU. Paced, a block
        still collects everything that arrived during the insert before it.
        """
        delay = not_before - asyncio.get_running_loop().time()
        if delay > 0 and not insert.done():
            await asyncio.wait((insert,), timeout=delay)

    def _report_lag(self, fetcher: GroupFetcher, done: _Block) -> None:
        lag = sum(max(0, fetcher.highwater.get(tp, end) - end) for tp, end in done.next.items())
        LAG.labels(self._label).set(lag)


class KafkaEngine:
    """Keeps one consumer task per Kafka table in the chDB data directory, in step with DDL.

    ``lanes``: how many key-disjoint parts of a block each consumer inserts at once (``KafkaTableConsumer``).
    """

    def __init__(self, engine: ChdbEngine, *, lanes: int = 1) -> None:
        self._engine = engine
        self._lanes = lanes
        self._running: dict[KafkaTableSpec, tuple[KafkaTableConsumer, asyncio.Task[None]]] = {}
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
        for spec in [s for s in self._running if s not in wanted]:
            await self._stop(spec)
        for spec, (_, task) in list(self._running.items()):
            if task.done():
                exc = None if task.cancelled() else task.exception()
                if exc is not None:
                    log.error("kafka table %s: consumer failed: %r; restarting", spec.table, exc)
                del self._running[spec]
        for spec in wanted - set(self._running):
            log.info("kafka table %s.%s: consuming %s", spec.database, spec.table, ",".join(spec.topics))
            consumer = KafkaTableConsumer(self._engine, spec, lanes=self._lanes)
            task = asyncio.create_task(consumer.run(), name=spec.table)
            task.add_done_callback(lambda _t: self._changed.set())
            self._running[spec] = (consumer, task)

    async def drain(self, timeout_s: float) -> list[str]:
        """Wait until every consumer has inserted and committed all its topics held when this was called,
        at most ``timeout_s``; returns the tables that did not get there.

        For a clean stop in front of a broker that keeps nothing (Tansu stores in memory): once the
        producers have stopped, whatever the consumers leave unread is gone with the broker.
        """
        consumers = {spec.qualified_name: c for spec, (c, task) in self._running.items() if not task.done()}
        since = {name: c.fetches_started for name, c in consumers.items()}
        deadline = asyncio.get_running_loop().time() + timeout_s
        while behind := [name for name, c in consumers.items() if c.caught_up_at <= since[name]]:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                return behind
            for name in behind:
                consumers[name].progress.clear()
            waits = [asyncio.ensure_future(consumers[name].progress.wait()) for name in behind]
            _, pending = await asyncio.wait(waits, timeout=left, return_when=asyncio.FIRST_COMPLETED)
            for wait in pending:
                wait.cancel()
        return []

    async def _stop(self, spec: KafkaTableSpec) -> None:
        _, task = self._running.pop(spec)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _stop_all(self) -> None:
        for spec in list(self._running):
            await self._stop(spec)
