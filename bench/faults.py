"""Fault injection, long variants of tests/reliability: the broker frozen (SIGSTOP) for ``--broker-pause-s``
seconds (default 30, longer than the producer's request timeout) while three handlers publish and the
embedded ClickHouse consumes, then thawed. Prints the measured figures per exchange and exits non-zero when
a trade was lost or duplicated in silver.

    PYTHONPATH=. .venv/bin/python bench/faults.py --broker-pause-s 30
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

from tests.reliability.test_broker_pause import REPLAYS, pause_broker
from tests.support import running_stack


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--broker-pause-s", type=float, default=30.0)
    parser.add_argument("--max-buffered", type=int, default=300, help="handler publish buffer (messages)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="k2-faults-") as scratch, running_stack(Path(scratch) / "data") as stack:
        outcome = pause_broker(stack, args.broker_pause_s, max_buffered=args.max_buffered)
    failed = False
    for exchange, f in outcome.figures.items():
        print(
            f"broker SIGSTOP {args.broker_pause_s:.0f}s: {exchange}: {f.line()} published_twice={f.published_twice} "
            f"backpressure={outcome.backpressure[exchange]}"
        )
        bad = f.duplicated or f.duplicated_final or (REPLAYS[exchange] and f.lost) or not f.lost_keys <= f.unseen_keys
        failed |= bool(bad) or f.missing_counted != f.unseen
    print(f"silver caught up {outcome.recovered_s:.1f}s after SIGCONT; total {time.monotonic() - started:.1f}s")
    print("FAILED: loss, duplicates or uncounted gaps" if failed else "ok: zero loss, zero duplicates")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
