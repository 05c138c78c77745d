"""Recover each symbol's last published trade from the normalized topic itself (not ClickHouse).

Records are keyed by symbol, so a symbol lives in one partition. The tail of every partition is read
and the highest trade id per symbol kept, with its event time (a time-based backfill of the first gap
after a restart starts there). A configured symbol missing from the tail (a quiet symbol sharing its
partition with busy ones) makes the read go four times further back, up to ``max_tail`` messages per
partition; a symbol still not found starts fresh.

Binance's ``trade`` and ``aggTrade`` streams number their ids separately: records of another
``stream_type`` than the handler's channel are not counted (after a channel change the handler starts
from the new stream's ids instead of dropping them all as duplicates).
"""

from __future__ import annotations

import logging
from collections.abc import Collection

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from feed_handlers.state import LastTrade

__all__ = ["recover_last_trades"]

log = logging.getLogger(__name__)


async def recover_last_trades(
    bootstrap: str,
    topic: str,
    symbols: Collection[str],
    *,
    stream_type: str | None = None,
    tail: int = 5_000,
    max_tail: int = 1_280_000,
) -> dict[str, LastTrade]:
    """The last trade per symbol found in ``topic``; ``symbols`` are those the handler will subscribe."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    try:
        await consumer.start()  # inside: a start that fails half-way is stopped too
        if topic not in await consumer.topics():  # also refreshes metadata
            return {}
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not tps:
            return {}
        consumer.assign(tps)
        ends, starts = await consumer.end_offsets(tps), await consumer.beginning_offsets(tps)
        last: dict[str, LastTrade] = {}
        unread = {tp: (starts[tp], ends[tp]) for tp in tps if ends[tp] > starts[tp]}  # still unread: [first, end)
        window = tail
        while unread:
            for tp, (first, end) in unread.items():
                begin = max(first, end - window)
                await _read(consumer, tp, begin, end, stream_type, last)
                unread[tp] = (first, begin)
            unread = {tp: span for tp, span in unread.items() if span[1] > span[0]}
            if not set(symbols) - last.keys() or window >= max_tail:
                break
            window *= 4
        found = {s: t.trade_id for s, t in last.items()}
        log.info("recovered last trades from %s", topic,
                 extra={"last_ids": found, "not_found": sorted(set(symbols) - found.keys())})  # fmt: skip
        return last
    finally:
        await consumer.stop()


async def _read(
    consumer: AIOKafkaConsumer, tp: TopicPartition, begin: int, end: int, stream_type: str | None,
    last: dict[str, LastTrade],
) -> None:  # fmt: skip
    """Fold the records from offset ``begin`` up to ``end`` of ``tp`` into ``last``: a symbol's highest id wins.

    Whole fetched batches are folded, records past ``end`` included: folding a record twice changes
    nothing, and Tansu reports a partition's end as its last record batch's base offset + 1, so the
    records of that last batch all lie at or past the ``end`` it reports.
    """
    if begin >= end:
        return
    consumer.seek(tp, begin)
    while True:
        batch = await consumer.getmany(tp, timeout_ms=2_000)
        records = batch.get(tp, [])
        if not records:
            log.warning("%s: no records at offset %d although the partition ends at %d", tp, begin, end)
            return
        for r in records:
            try:
                record = orjson.loads(r.value or b"")
                symbol, trade_id, ts = record["symbol"], int(record["trade_id"]), int(record.get("ts_event_ns") or 0)
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                continue
            if stream_type is not None and record.get("stream_type", stream_type) != stream_type:
                continue
            known = last.get(symbol)
            if known is None or trade_id > known.trade_id:
                last[symbol] = LastTrade(trade_id, ts)
        if records[-1].offset + 1 >= end:
            return
