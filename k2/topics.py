"""Creates the exchange topics with the partition counts from ``instruments.yaml``."""

from __future__ import annotations

import logging

from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic
from aiokafka.errors import IncompatibleBrokerVersion

from feed_handlers.instruments import Instruments, topic_names

__all__ = ["ensure_topics", "wanted_topics"]

log = logging.getLogger(__name__)


def wanted_topics(instruments: Instruments) -> dict[str, int]:
    """Topic name → partitions: normalized and raw topics per exchange, plus its dead letters."""
    wanted: dict[str, int] = {}
    for exchange, config in instruments.exchanges.items():
        normalized, raw, dlq = topic_names(exchange)
        wanted[normalized] = wanted[raw] = config.partitions
        wanted[dlq] = 1
    return wanted


async def ensure_topics(bootstrap: str, wanted: dict[str, int]) -> list[str]:
    """Create missing topics and grow ones with too few partitions; return what was created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [NewTopic(t, n, 1) for t, n in wanted.items() if t not in existing]
        if missing:
            await admin.create_topics(missing)
        present = [t for t in wanted if t in existing]
        if present:
            described = await admin.describe_topics(present)
            grow = {
                d["topic"]: NewPartitions(wanted[d["topic"]])
                for d in described
                if len(d["partitions"]) < wanted[d["topic"]]
            }
            if grow:
                try:
                    await admin.create_partitions(grow)
                except IncompatibleBrokerVersion:
                    log.warning("broker cannot add partitions; topics %s keep fewer than configured", sorted(grow))
        return [t.name for t in missing]
    finally:
        await admin.close()
