"""The feed handler's garbage-collector policy.

A handler allocates a few container objects per trade (the parsed frame, the record, its messages) and
keeps up to ``max_buffered`` messages alive while the broker is slow. CPython's default policy runs a
young collection every 700 container allocations and, every 100 of those, a full one over every object
in the process: measured on the Binance bench (``bench/handlers.py``), that was 15 % of the handler's
time. Almost nothing a handler allocates is cyclic garbage (refcounting frees it), so collecting rarely
loses no memory worth having, and the objects that exist after startup (modules, config, clients)
never need scanning again.
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
