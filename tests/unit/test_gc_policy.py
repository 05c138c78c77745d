"""The garbage-collector policy of the feed handlers and the embedded ClickHouse (k2/gc_policy.py), in a
fresh interpreter so that pytest's own collector settings are neither used nor changed."""

from __future__ import annotations

import json
import subprocess
import sys

_PROBE = """
import gc, json
from k2.gc_policy import YOUNG_THRESHOLD, tune_gc

def young():
    return gc.get_stats()[0]["collections"]

tune_gc()
start = young()
below = [[] for _ in range(YOUNG_THRESHOLD - 500)]  # containers kept alive: they count towards the threshold
after_below = young()
above = [[] for _ in range(1_000)]
print(json.dumps({"frozen": gc.get_freeze_count(), "threshold": gc.get_threshold(),
                  "below": after_below - start, "above": young() - after_below}))
"""


def test_tune_gc_freezes_startup_objects_and_collects_young_objects_every_10k_allocations() -> None:
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True)
    probe = json.loads(out.stdout)
    assert probe["threshold"][0] == 10_000
    assert probe["threshold"][1:] == [10, 10]  # CPython's defaults for the older generations, kept
    assert probe["frozen"] > 5_000  # the modules and objects of startup: never scanned again
    assert (probe["below"], probe["above"]) == (0, 1)
