"""Recover each symbol's last published trade id from the normalized topic itself (not ClickHouse).

Records are keyed by symbol, so a symbol lives in one partition; the tail of every partition is read
and the highest trade id per symbol kept. A symbol not seen in the tail simply starts fresh.
"""

from __future__ import annotations

import logging

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

__all__ = ["recover_last_ids"]

log = logging.getLogger(__name__)


async def recover_last_ids(bootstrap: str, topic: str, *, tail: int = 5_000) -> dict[str, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    await consumer.start()
    try:
        if topic not in await consumer.topics():  # also refreshes metadata
            return {}
        partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        if not tps:
            return {}
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        starts = await consumer.beginning_offsets(tps)
        last: dict[str, int] = {}
        remaining = {}
        for tp in tps:
            if ends[tp] > starts[tp]:
                consumer.seek(tp, max(starts[tp], ends[tp] - tail))
                remaining[tp] = ends[tp]
        while remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=2_000)
            if not batch:
                break
            for tp, records in batch.items():
                for r in records:
                    try:
                        record = orjson.loads(r.value or b"")
                        symbol, trade_id = record["symbol"], int(record["trade_id"])
                    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                        continue
                    if trade_id > last.get(symbol, -1):
                        last[symbol] = trade_id
                if records and records[-1].offset + 1 >= remaining[tp]:
                    del remaining[tp]
        log.info("recovered last trade ids from %s", topic, extra={"last_ids": last})
        return last
    finally:
        await consumer.stop()
