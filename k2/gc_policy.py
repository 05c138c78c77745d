"""The garbage-collector policy of K2's long-running processes that allocate per message.

A feed handler allocates a few container objects per trade (the parsed frame, the record, its messages)
and keeps up to ``max_buffered`` messages alive while the broker is slow; the embedded ClickHouse's
Kafka consumer gets a record object per fetched message from aiokafka's decoder, thousands per fetch.
CPython's default policy runs a young collection every 700 container allocations and, every 100 of those,
a full one over every object in the process: 15 % of the handler's time on the Binance bench
(``bench/handlers.py``), and a third of the consumer's CPU per fetched message. Almost nothing either
allocates is cyclic garbage (refcounting frees it), so collecting rarely loses no memory worth having,
and the objects that exist after startup (modules, config, clients) never need scanning again.
"""

from __future__ import annotations

import gc

__all__ = ["YOUNG_THRESHOLD", "tune_gc"]

#: Container allocations (net of frees) between young collections; CPython's default is 700.
YOUNG_THRESHOLD = 10_000


def tune_gc() -> None:
    """Collect once, freeze what survived startup out of every later collection, collect young objects rarely.

    Call once, after startup and before the feed starts.
    """
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
