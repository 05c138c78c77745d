"""A lean Kafka consumer for the embedded Kafka engine: record batches in, Arrow columns out.

``AIOKafkaConsumer.getmany`` builds a Python ``ConsumerRecord`` (eleven fields, a generator step, a
deserializer check) for every message: about 3 µs each, a quarter of the embedded server's CPU per
ingested row. The Kafka engine needs none of it: it wants the values, keys, offsets and timestamps of
a whole poll as columns. This consumer speaks the same protocol through aiokafka's client and
request builders, and walks each fetched record batch with aiokafka's C decoder, taking the columns
with one ``map`` per field.

Offsets live in the table's consumer group, as clickhouse-server keeps them: read with OffsetFetch at
start, committed with OffsetCommit after each insert. The group is used for its offsets only (no
group membership): the embedded server runs one consumer per Kafka table (``kafka_num_consumers``
beyond 1 is a production setting). A partition without a committed offset starts at the earliest
one (``auto.offset.reset = earliest``), and so does one whose offset fell out of the log.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any

from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaError, for_code
from aiokafka.protocol.commit import OffsetCommitRequest, OffsetFetchRequest
from aiokafka.protocol.fetch import FetchRequest
from aiokafka.protocol.offset import OffsetRequest
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.structs import TopicPartition

__all__ = ["Fetched", "GroupFetcher"]

log = logging.getLogger(__name__)

_GROUP_COORDINATOR = 0
_EARLIEST = -2
_READ_UNCOMMITTED = 0  # K2's producers are not transactional; control batches are skipped
_OFFSET_OUT_OF_RANGE = 1
# leadership moved or metadata is stale: refresh metadata and fetch again
_RETRIABLE = {3, 5, 6, 9, 74, 75}  # unknown topic/partition, leader n/a, not leader, replica n/a, fenced/unknown epoch
_COMMITTED_AT = "k2-committed-at-ns="  # offset commit metadata: when the block before it was fully inserted
_VALUE = attrgetter("value")
_KEY = attrgetter("key")
_OFFSET = attrgetter("offset")
_TIMESTAMP = attrgetter("timestamp")
_HEADERS = attrgetter("headers")


@dataclass
class Fetched:
    """Messages of one or more fetches, as columns, plus the offsets they span per partition."""

    values: list[bytes | None] = field(default_factory=list)
    keys: list[bytes | None] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    timestamps: list[int] = field(default_factory=list)
    headers: list[Sequence[tuple[str, bytes]]] = field(default_factory=list)  # per message, possibly empty
    # one run per partition fetched, in row order: (partition, row count)
    runs: list[tuple[TopicPartition, int]] = field(default_factory=list)
    first: dict[TopicPartition, int] = field(default_factory=dict)  # first offset per partition
    next: dict[TopicPartition, int] = field(default_factory=dict)  # offset after the last one

    def __len__(self) -> int:
        return len(self.offsets)

    def extend(self, other: Fetched) -> None:
        self.values += other.values
        self.keys += other.keys
        self.offsets += other.offsets
        self.timestamps += other.timestamps
        self.headers += other.headers
        self.runs += other.runs
        for tp, offset in other.first.items():
            self.first.setdefault(tp, offset)
        self.next.update(other.next)


class GroupFetcher:
    """Fetches ``topics`` for consumer group ``group`` from committed (else earliest) offsets."""

    def __init__(
        self,
        bootstrap: str,
        group: str,
        topics: tuple[str, ...],
        *,
        max_wait_ms: int,
        max_partition_bytes: int = 8 * 1024 * 1024,
        max_bytes: int = 64 * 1024 * 1024,
        client_id: str = "k2-kafka-engine",
    ) -> None:
        self._client = AIOKafkaClient(bootstrap_servers=bootstrap, client_id=client_id)
        self._group = group
        self._topics = topics
        self._max_wait_ms = max_wait_ms
        self._max_partition_bytes = max_partition_bytes
        self._max_bytes = max_bytes
        self._positions: dict[TopicPartition, int] = {}
        self.highwater: dict[TopicPartition, int] = {}
        self._bytes_per_record = 512.0  # learned: sizes a fetch to the records wanted
        self._turn = 0
        self._coordinator: int | None = None
        #: where this consumer started per (topic, partition), and when the oldest of those offsets was
        #: committed (None: some partition had no commit time); see k2.gold_repair
        self.started_at: dict[tuple[str, int], int] = {}
        self.committed_at_ns: int | None = None

    async def start(self) -> None:
        await self._client.bootstrap()
        for topic in self._topics:
            self._client.add_topic(topic)
        await self._client.force_metadata_update()
        await self._add_new_partitions()

    async def stop(self) -> None:
        await self._client.close()

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self._positions[tp] = offset

    def behind(self) -> int:
        """Messages between the positions and the ends of the partitions, as of the last answers."""
        return sum(max(0, self.highwater.get(tp, position) - position) for tp, position in self._positions.items())

    async def _add_new_partitions(self) -> None:
        """Start every partition not tracked yet at its committed offset, or the earliest one."""
        cluster = self._client.cluster
        new = [
            TopicPartition(topic, p)
            for topic in self._topics
            for p in sorted(cluster.partitions_for_topic(topic) or ())
            if TopicPartition(topic, p) not in self._positions
        ]
        if not new:
            return
        committed = await self._committed(new)
        missing = [tp for tp in new if committed.get(tp, (-1, None))[0] < 0]
        earliest = await self._earliest(missing) if missing else {}
        times = [committed[tp][1] for tp in new if tp not in missing]
        known_times = [t for t in times if t is not None]
        first_start = not self.started_at
        for tp in new:
            self._positions[tp] = committed[tp][0] if tp not in missing else earliest[tp]
            self.started_at[tp.topic, tp.partition] = self._positions[tp]
        if first_start:
            complete = not missing and len(known_times) == len(times)
            self.committed_at_ns = min(known_times) if complete and known_times else None

    async def _coordinator_node(self) -> int:
        if self._coordinator is None:
            self._coordinator = await self._client.coordinator_lookup(_GROUP_COORDINATOR, self._group)
        return self._coordinator

    async def _committed(self, tps: list[TopicPartition]) -> dict[TopicPartition, tuple[int, int | None]]:
        """(offset, commit time in ns if this consumer committed it) per partition; offset -1: none."""
        node = await self._coordinator_node()
        request = OffsetFetchRequest(self._group, _by_topic(tps, lambda tp: tp.partition))
        response = await self._client.send(node, request)
        top_error = getattr(response, "error_code", 0)
        if top_error:
            raise for_code(top_error)()
        found: dict[TopicPartition, tuple[int, int | None]] = {}
        for topic, partitions in response.topics:
            for partition, offset, *rest in partitions:
                if rest[-1]:
                    raise for_code(rest[-1])()
                metadata = rest[-2]
                at = int(metadata[len(_COMMITTED_AT) :]) if (metadata or "").startswith(_COMMITTED_AT) else None
                found[TopicPartition(topic, partition)] = (offset, at)
        return found

    async def _earliest(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        found: dict[TopicPartition, int] = {}
        for node, group in self._by_leader(tps).items():
            request = OffsetRequest(-1, _READ_UNCOMMITTED, _by_topic(group, lambda tp: (tp.partition, _EARLIEST)))
            response = await self._client.send(node, request)
            for topic, partitions in response.topics:
                for partition, error_code, *rest in partitions:
                    if error_code:
                        raise for_code(error_code)()
                    # v0: [offsets]; v1+: timestamp, offset[, leader epoch]
                    offset = rest[0][0] if isinstance(rest[0], list) else rest[1]
                    found[TopicPartition(topic, partition)] = offset
        return found

    def _by_leader(self, tps: list[TopicPartition]) -> dict[int, list[TopicPartition]]:
        groups: dict[int, list[TopicPartition]] = {}
        for tp in tps:
            leader = self._client.cluster.leader_for_partition(tp)
            if leader is None or leader < 0:
                self._client.force_metadata_update()
                continue
            groups.setdefault(leader, []).append(tp)
        return groups

    async def fetch(self, max_records: int, timeout_ms: int | None = None) -> Fetched:
        """At most ``max_records`` messages from the current positions, which then move past them.

        Waits up to ``timeout_ms``, at most the fetcher's ``max_wait_ms``, for data when there is none.
        """
        await self._add_new_partitions()
        out = Fetched()
        # the broker answers a held fetch late (Tansu: up to ~75 ms after data arrived): never hold it longer
        wait_ms = self._max_wait_ms if timeout_ms is None else min(self._max_wait_ms, timeout_ms)
        # ask for about as many bytes as the records wanted: a bigger answer would be decoded in part and refetched
        budget = max(64 * 1024, min(self._max_bytes, int(max_records * self._bytes_per_record * 1.2)))
        requests = []
        # A broker fills its answer partition by partition, in request order, and may stop well short of the
        # bytes asked for (Tansu: about 4 MB). So the partitions with something to read (all of them until
        # their end is known) come first, each fetch starting at the next of them, and share the budget: a
        # backlog's blocks then mix partitions, hence message keys, which the Kafka engine splits into parts
        # inserted side by side, instead of draining one partition after another.
        behind: list[TopicPartition] = []
        rest: list[TopicPartition] = []
        for tp, position in self._positions.items():
            (behind if self.highwater.get(tp, position + 1) > position else rest).append(tp)
        self._turn = (self._turn + 1) % max(1, len(behind))
        order = behind[self._turn :] + behind[: self._turn] + rest
        per_partition = max(64 * 1024, min(self._max_partition_bytes, budget // max(1, len(behind))))
        for node, tps in self._by_leader(order).items():
            topics = _by_topic(tps, lambda tp: (tp.partition, self._positions[tp], per_partition))
            requests.append(self._client.send(node, FetchRequest(wait_ms, 1, budget, _READ_UNCOMMITTED, topics)))
        if not requests:
            await asyncio.sleep(wait_ms / 1000)
            return out
        sized_bytes = sized_rows = 0
        for response in await asyncio.gather(*requests):
            size, rows = self._take(response, out, max_records)
            sized_bytes, sized_rows = sized_bytes + size, sized_rows + rows
        if sized_rows:
            self._bytes_per_record = max(16.0, sized_bytes / sized_rows)
        return out

    def _take(self, response: Any, out: Fetched, max_records: int) -> tuple[int, int]:
        """Decode one fetch response into ``out``, up to ``max_records`` rows in all.

        Returns (bytes, rows) of the partitions decoded whole, to learn the bytes a record takes."""
        sized_bytes = sized_rows = 0
        for topic, partitions in response.topics:
            for partition, error_code, highwater, *part_data in partitions:
                tp = TopicPartition(topic, partition)
                if error_code == _OFFSET_OUT_OF_RANGE:
                    log.warning("%s: offset %d out of range; restarting at the earliest", tp, self._positions[tp])
                    del self._positions[tp]  # _add_new_partitions re-reads committed / earliest
                    continue
                if error_code in _RETRIABLE:
                    self._client.force_metadata_update()
                    continue
                if error_code:
                    raise for_code(error_code)()
                self.highwater[tp] = highwater
                room = max_records - len(out)
                if room <= 0:
                    continue
                position = self._positions[tp]
                records = MemoryRecords(part_data[-1])
                taken: list[Any] = []
                whole = True
                while records.has_next():
                    batch = records.next_batch()
                    if batch is None:
                        break
                    if not batch.validate_crc():
                        raise KafkaError(f"corrupt record batch (CRC) in {tp} at offset {batch.base_offset}")
                    if batch.is_control_batch or batch.next_offset <= position:
                        position = max(position, batch.next_offset)
                        continue
                    rows = list(batch)
                    if rows and rows[0].offset < position:  # a batch may begin before the offset asked for
                        rows = [r for r in rows if r.offset >= position]
                    if len(rows) > room - len(taken):  # the rest is fetched again next time
                        rows = rows[: room - len(taken)]
                        taken += rows
                        position = rows[-1].offset + 1 if rows else position
                        whole = False
                        break
                    taken += rows
                    position = batch.next_offset
                self._positions[tp] = position
                if not taken:
                    continue
                if whole:
                    sized_bytes += len(part_data[-1])
                    sized_rows += len(taken)
                out.values += map(_VALUE, taken)
                out.keys += map(_KEY, taken)
                out.offsets += map(_OFFSET, taken)
                out.timestamps += map(_TIMESTAMP, taken)
                out.headers += map(_HEADERS, taken)
                out.runs.append((tp, len(taken)))
                out.first.setdefault(tp, taken[0].offset)
                out.next[tp] = position
        return sized_bytes, sized_rows

    async def commit(self, offsets: dict[TopicPartition, int], inserted_at_ns: int | None = None) -> None:
        """Commit ``offsets`` (the next offset to read, per partition) to the group.

        ``inserted_at_ns`` (default: now) is kept with them as the time the messages before them were fully
        inserted; no later block may have started inserting before it (``committed_at_ns``).
        """
        at = time.time_ns() if inserted_at_ns is None else inserted_at_ns
        node = await self._coordinator_node()
        request = OffsetCommitRequest(
            self._group, OffsetCommitRequest.DEFAULT_GENERATION_ID, "", OffsetCommitRequest.DEFAULT_RETENTION_TIME,
            _by_topic(list(offsets), lambda tp: (tp.partition, offsets[tp], f"{_COMMITTED_AT}{at}")),
        )  # fmt: skip
        try:
            response = await self._client.send(node, request)
        except KafkaError:
            self._coordinator = None  # looked up again on the next try
            raise
        for _topic, partitions in response.topics:
            for _partition, error_code in partitions:
                if error_code:
                    self._coordinator = None
                    raise for_code(error_code)()


def _by_topic(tps: list[TopicPartition], entry: Any) -> list[tuple[str, list[Any]]]:
    grouped: dict[str, list[Any]] = {}
    for tp in tps:
        grouped.setdefault(tp.topic, []).append(entry(tp))
    return list(grouped.items())
