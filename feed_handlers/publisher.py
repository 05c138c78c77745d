"""Publishing to the broker: a bounded, never-dropping buffer in front of a ``Sink``.

``Publisher.publish`` returns once the message is buffered; when the buffer is full it waits, which
stops the handler from reading its sockets (backpressure) and says so in metrics and logs. A drain
task hands messages to the sink in order and retries failed ones until the broker takes them:
nothing is dropped, delivery is at-least-once (silver deduplicates).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Sequence
from typing import NamedTuple, Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner

from feed_handlers.metrics import BACKPRESSURE, BUFFERED, PUBLISH_ERRORS, HotStats
from k2.logs import bind
from k2.settings import KAFKA_LINGER_MS

__all__ = ["NO_HEADERS", "KafkaSink", "Message", "Publisher", "Sink", "new_message"]

log = logging.getLogger(__name__)


class Message(NamedTuple):
    """One Kafka message. A NamedTuple, not a dataclass: two are built per trade, and a tuple is cheap to
    build (the hot paths use ``new_message``, which skips the keyword-handling constructor)."""

    topic: str
    key: bytes | None
    value: bytes
    # Header lists go to the record-batch builder as they are (it takes lists only). Sequences are accepted
    # and copied into a list when sent.
    headers: Sequence[tuple[str, bytes]] = ()
    received_ns: int = 0  # frame receive time: produce latency is measured from it (0: not measured)


def new_message(fields: tuple[str, bytes | None, bytes, Sequence[tuple[str, bytes]], int]) -> Message:
    """``Message(*fields)`` at half the cost (no argument binding): two are built per trade."""
    return tuple.__new__(Message, fields)


#: The header list of a message without headers, shared: never mutate it.
NO_HEADERS: list[tuple[str, bytes]] = []


Delivery = Awaitable[list[BaseException | None]]


class Sink(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def submit(self, messages: Sequence[Message], *, backlog: bool = False) -> Delivery:
        """Hand ``messages`` to the broker client; the result resolves to one entry per message,
        None when the broker acknowledged it. ``backlog``: more messages wait behind these, so there
        is nothing to linger for."""
        ...


class KafkaSink:
    """aiokafka producer tuned for throughput: record batches built per partition (one future per
    batch, not per message), linger, zstd, ``acks=all``.

    zstd, not lz4: aiokafka compresses lz4 at level 9 (lz4 HC), about 90 MB/s on trade frames, which
    cost the handler more than parsing them; zstd (level 3) runs about 700 MB/s on them and compresses
    them several times smaller. Redpanda, Tansu, librdkafka (ClickHouse) and aiokafka all read it.
    """

    def __init__(
        self, bootstrap: str, *, idempotence: bool, linger_ms: int = KAFKA_LINGER_MS, client_id: str = "k2"
    ) -> None:
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            client_id=client_id,
            acks="all",
            enable_idempotence=idempotence,  # Redpanda: yes; Tansu lacks InitProducerId
            linger_ms=linger_ms,
            max_batch_size=1024 * 1024,
            compression_type="zstd",
            request_timeout_ms=15_000,
            retry_backoff_ms=200,
        )
        self._partitioner = DefaultPartitioner()  # murmur2(key) % partitions, as the Java client
        self._partitions: dict[str, list[int]] = {}
        self._by_key: dict[tuple[str, bytes], int] = {}

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    async def _partition_of(self, topic: str, key: bytes | None, i: int) -> int:
        if key:
            cached = self._by_key.get((topic, key))
            if cached is not None:
                return cached
        partitions = self._partitions.get(topic)
        if partitions is None:
            partitions = self._partitions[topic] = sorted(await self._producer.partitions_for(topic))
        if not key:
            return partitions[i % len(partitions)]
        # keys are symbols, a handful per exchange: hash each once (murmur2 in Python is slow)
        partition: int = self._partitioner(key, partitions, partitions)
        self._by_key[topic, key] = partition
        return partition

    async def submit(self, messages: Sequence[Message], *, backlog: bool = False) -> Delivery:
        """Build ``messages`` into record batches, one or more per partition, and queue them for sending.

        A batch lingers (``linger_ms``) for company only when nothing waits behind it. With a
        ``backlog`` it is closed and sent at once: the messages behind it go into batches of their own,
        so lingering would only hold a busy handler back.
        """
        # One dict lookup per message: group by (topic, key), then map each group to its partition.
        by_key: dict[tuple[str, bytes | None], list[int]] = {}
        for i, m in enumerate(messages):
            indexes = by_key.get((m.topic, m.key))
            if indexes is None:
                by_key[m.topic, m.key] = [i]
            else:
                indexes.append(i)
        groups: dict[tuple[str, int], list[int]] = {}
        merged: set[tuple[str, int]] = set()
        for (topic, key), indexes in by_key.items():
            if key:
                parts = [(await self._partition_of(topic, key, 0), indexes)]
            else:  # keyless: spread one by one
                parts = [(await self._partition_of(topic, None, i), [i]) for i in indexes]
            for partition, part in parts:
                target = (topic, partition)
                existing = groups.get(target)
                if existing is None:
                    groups[target] = part
                else:
                    existing.extend(part)
                    merged.add(target)
        for target in merged:  # several keys on one partition: keep their messages in submission order
            groups[target].sort()
        sent: list[tuple[list[int], asyncio.Future[object]]] = []
        failed: list[tuple[list[int], BaseException]] = []
        for (topic, partition), indexes in groups.items():
            start = 0
            while start < len(indexes):
                batch = self._producer.create_batch()
                # Straight into the batch's record builder (aiokafka's C DefaultRecordBatchBuilder): the public
                # BatchBuilder.append only adds a Python call and the key/value serializers we do not use. The
                # batch learns its record count from _relative_offset, as its own append would have set it.
                append = batch._builder.append
                taken = 0
                for i in indexes[start:] if start else indexes:
                    m = messages[i]
                    headers = m.headers
                    if type(headers) is not list:  # the C builder takes a list only
                        headers = list(headers)
                    if append(taken, None, m.key, m.value, headers) is None:
                        break
                    taken += 1
                batch._relative_offset = taken
                if backlog:  # aiokafka sends a closed batch without lingering
                    batch.close()
                if taken == 0:
                    raise ValueError(f"message of {len(messages[indexes[start]].value)} bytes exceeds a batch")
                chunk = indexes[start : start + taken]
                start += taken
                try:
                    sent.append((chunk, await self._producer.send_batch(batch, topic, partition=partition)))
                except KafkaError as exc:  # no metadata / buffer timeout: the broker is unreachable
                    failed.append((chunk, exc))
        return self._deliveries(len(messages), sent, failed)

    @staticmethod
    async def _deliveries(
        n: int, sent: list[tuple[list[int], asyncio.Future[object]]], failed: list[tuple[list[int], BaseException]]
    ) -> list[BaseException | None]:
        results: list[BaseException | None] = [None] * n
        for indexes, error in failed:
            for i in indexes:
                results[i] = error
        for indexes, future in sent:
            try:
                await future
            except KafkaError as exc:
                for i in indexes:
                    results[i] = exc
        return results


class Publisher:
    """Bounded buffer + ordered, retrying drain into a Sink. ``start``/``stop``/``flush``."""

    def __init__(
        self, sink: Sink, exchange: str, *, max_buffered: int = 100_000, batch: int = 5_000, window: int = 4
    ) -> None:
        self._sink = sink
        self._exchange = exchange
        self._log = bind(log, exchange=exchange)
        self._max = max_buffered
        self._batch = batch
        self.stats = HotStats(exchange)
        self._window = window
        self._buffer: deque[Message] = deque()
        self._has_data = asyncio.Event()
        self._has_room = asyncio.Event()
        self._has_room.set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._started = False

    async def start(self) -> None:
        """Start draining; a broker that is down at start is waited for (messages buffer meanwhile)."""
        self._task = asyncio.create_task(self._drain(), name=f"{self._exchange}-publisher")

    async def stop(self, flush_timeout_s: float = 8.0, close_timeout_s: float = 5.0) -> bool:
        """Flush within the timeout, then stop the sink within its own. True when everything buffered was
        delivered."""
        delivered = await self.flush(flush_timeout_s)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._started:
            try:  # the producer's own stop waits for batches in flight: bounded, the broker may be gone
                await asyncio.wait_for(self._sink.stop(), close_timeout_s)
            except TimeoutError:
                delivered = False
                self._log.error("%s: the producer did not close in %.0fs", self._exchange, close_timeout_s)
        self.stats.close()
        if not delivered:
            self._log.error("%s: stopping with %d messages not delivered", self._exchange, len(self._buffer))
        return delivered

    @property
    def buffered(self) -> int:
        """Messages not yet handed to the broker client (in-flight batches not counted)."""
        return len(self._buffer)

    def check(self) -> None:
        """Raise what killed the drain task, if it died."""
        if self._task is not None and self._task.done() and not self._task.cancelled():
            self._task.result()

    async def publish(self, message: Message) -> None:
        """Buffer ``message``; wait while the buffer is full (backpressure)."""
        await self.publish_many((message,))

    async def publish_many(self, messages: Sequence[Message]) -> None:
        """Buffer ``messages`` (one frame's: raw + trades) in order; wait first while the buffer is full.

        The bound is checked before a frame's messages go in, so the buffer holds at most
        ``max_buffered`` plus one frame's messages.
        """
        if not self.offer(messages):
            await self._wait_for_room()
            self.offer(messages)

    def offer(self, messages: Sequence[Message]) -> bool:
        """``publish_many`` without waiting: buffer ``messages`` and return True, or return False (nothing
        buffered) when the buffer is full. The hot path's way in: no coroutine per frame."""
        if len(self._buffer) >= self._max:
            return False
        self._buffer.extend(messages)
        if self._idle.is_set():
            self._idle.clear()
            self._has_data.set()
        return True

    async def _wait_for_room(self) -> None:
        full_since = time.monotonic()
        BUFFERED.labels(self._exchange).set(len(self._buffer))
        BACKPRESSURE.labels(self._exchange).set(1)
        self._log.warning("%s: publish buffer full (%d messages): pausing reads until the broker catches up",
                    self._exchange, self._max)  # fmt: skip
        while len(self._buffer) >= self._max:
            self._has_room.clear()
            await self._has_room.wait()
        BACKPRESSURE.labels(self._exchange).set(0)
        self._log.warning("%s: publish buffer has room again after %.1fs", self._exchange,
                    time.monotonic() - full_since)  # fmt: skip

    async def flush(self, timeout_s: float) -> bool:
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    async def _connect(self) -> None:
        attempt = 0
        while True:
            try:
                await self._sink.start()
                self._started = True
                return
            except (KafkaError, OSError) as exc:
                attempt += 1
                delay = min(5.0, 0.2 * 2**attempt)
                self._log.warning("%s: broker unreachable (%r); retrying in %.1fs", self._exchange, exc, delay)
                await asyncio.sleep(delay)

    async def _drain(self) -> None:
        """Submit batches in order with up to ``window`` awaiting acknowledgement; failed messages go
        back to the front of the buffer and are retried (at-least-once, order kept per attempt)."""
        await self._connect()
        failures = 0
        inflight: deque[tuple[list[Message], Delivery]] = deque()
        observe = self.stats.observe_acked
        buffered = BUFFERED.labels(self._exchange)
        popleft = self._buffer.popleft
        while True:
            if self._buffer and len(inflight) < self._window:
                batch = [popleft() for _ in range(min(self._batch, len(self._buffer)))]
                self._has_room.set()
                inflight.append((batch, await self._sink.submit(batch, backlog=bool(self._buffer))))
                continue
            if inflight:
                batch, delivery = inflight.popleft()
                results = await delivery
                now_ns = time.time_ns()
                if any(results):
                    retry = [message for message, error in zip(batch, results, strict=True) if error is not None]
                    observe(now_ns, [m for m, error in zip(batch, results, strict=True) if error is None])
                else:
                    retry = []
                    observe(now_ns, batch)
                if retry:
                    self._buffer.extendleft(reversed(retry))
                    failures += 1
                    PUBLISH_ERRORS.labels(self._exchange).inc()
                    delay = min(5.0, 0.1 * 2**failures)
                    self._log.warning("%s: broker did not take %d messages (%r); retrying in %.1fs",
                                self._exchange, len(retry), next(e for e in results if e), delay)  # fmt: skip
                    await asyncio.sleep(delay)
                else:
                    failures = 0
                buffered.set(len(self._buffer))
                continue
            self._idle.set()
            self._has_data.clear()
            await self._has_data.wait()
