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
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from feed_handlers.metrics import BACKPRESSURE, BUFFERED, PRODUCE_LATENCY, PUBLISH_ERRORS

__all__ = ["KafkaSink", "Message", "Publisher", "Sink"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()
    received_ns: int = 0  # frame receive time: produce latency is measured from it (0: not measured)


class Sink(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def send(self, messages: Sequence[Message]) -> list[BaseException | None]:
        """Deliver ``messages``; one result per message, None when the broker acknowledged it."""
        ...


class KafkaSink:
    """aiokafka producer tuned for throughput: batching, linger, lz4, ``acks=all``."""

    def __init__(self, bootstrap: str, *, idempotence: bool, linger_ms: int = 5, client_id: str = "k2") -> None:
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            client_id=client_id,
            acks="all",
            enable_idempotence=idempotence,  # Redpanda: yes; Tansu lacks InitProducerId
            linger_ms=linger_ms,
            max_batch_size=512 * 1024,
            compression_type="lz4",
            request_timeout_ms=15_000,
            retry_backoff_ms=200,
        )

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    async def send(self, messages: Sequence[Message]) -> list[BaseException | None]:
        futures: list[asyncio.Future[object] | BaseException] = []
        for m in messages:
            try:
                futures.append(await self._producer.send(m.topic, m.value, key=m.key, headers=list(m.headers)))
            except KafkaError as exc:  # no metadata / buffer timeout: the broker is unreachable
                futures.append(exc)
        results: list[BaseException | None] = []
        for future in futures:
            if isinstance(future, BaseException):
                results.append(future)
                continue
            try:
                await future
                results.append(None)
            except KafkaError as exc:
                results.append(exc)
        return results


class Publisher:
    """Bounded buffer + ordered, retrying drain into a Sink. ``start``/``stop``/``flush``."""

    def __init__(self, sink: Sink, exchange: str, *, max_buffered: int = 100_000, batch: int = 2_000) -> None:
        self._sink = sink
        self._exchange = exchange
        self._max = max_buffered
        self._batch = batch
        self._buffer: deque[Message] = deque()
        self._has_data = asyncio.Event()
        self._has_room = asyncio.Event()
        self._has_room.set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._full_since: float | None = None
        self._started = False

    async def start(self) -> None:
        """Start draining; a broker that is down at start is waited for (messages buffer meanwhile)."""
        self._task = asyncio.create_task(self._drain(), name=f"{self._exchange}-publisher")

    async def stop(self, flush_timeout_s: float = 8.0) -> bool:
        """Flush within the timeout, then stop. True when everything buffered was delivered."""
        delivered = await self.flush(flush_timeout_s)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._started:
            await self._sink.stop()
        if not delivered:
            log.error("%s: stopping with %d messages not delivered", self._exchange, len(self._buffer))
        return delivered

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def check(self) -> None:
        """Raise what killed the drain task, if it died."""
        if self._task is not None and self._task.done() and not self._task.cancelled():
            self._task.result()

    async def publish(self, message: Message) -> None:
        """Buffer ``message``; wait while the buffer is full (backpressure)."""
        if len(self._buffer) >= self._max:
            self._full_since = time.monotonic()
            BACKPRESSURE.labels(self._exchange).set(1)
            log.warning("%s: publish buffer full (%d messages): pausing reads until the broker catches up",
                        self._exchange, self._max)  # fmt: skip
            while len(self._buffer) >= self._max:
                self._has_room.clear()
                await self._has_room.wait()
            BACKPRESSURE.labels(self._exchange).set(0)
            log.warning("%s: publish buffer has room again after %.1fs", self._exchange,
                        time.monotonic() - self._full_since)  # fmt: skip
        self._buffer.append(message)
        self._idle.clear()
        self._has_data.set()
        BUFFERED.labels(self._exchange).set(len(self._buffer))

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
                log.warning("%s: broker unreachable (%r); retrying in %.1fs", self._exchange, exc, delay)
                await asyncio.sleep(delay)

    async def _drain(self) -> None:
        await self._connect()
        failures = 0
        while True:
            if not self._buffer:
                self._idle.set()
                self._has_data.clear()
                await self._has_data.wait()
                continue
            batch = [self._buffer[i] for i in range(min(self._batch, len(self._buffer)))]
            results = await self._sink.send(batch)
            delivered = 0
            for message, error in zip(batch, results, strict=True):
                if error is not None:
                    break  # keep order: this and the rest are retried
                delivered += 1
                if message.received_ns:
                    PRODUCE_LATENCY.labels(self._exchange).observe((time.time_ns() - message.received_ns) / 1e9)
            for _ in range(delivered):
                self._buffer.popleft()
            BUFFERED.labels(self._exchange).set(len(self._buffer))
            self._has_room.set()
            if delivered < len(batch):
                failures += 1
                PUBLISH_ERRORS.labels(self._exchange).inc()
                delay = min(5.0, 0.1 * 2**failures)
                log.warning("%s: broker did not take %d messages (%r); retrying in %.1fs",
                            self._exchange, len(batch) - delivered, results[delivered], delay)  # fmt: skip
                await asyncio.sleep(delay)
            else:
                failures = 0
