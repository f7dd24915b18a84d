"""The garbage collector's settings for a long-running process under load.

A full collection scans every tracked object, so with 1,000 calls in flight each one
pauses everything for 20-60 ms; CPython runs one per 10 middle-generation passes. Here:
what exists once the process is up (modules, protobuf descriptors, configuration,
pools) lives as long as the process, so it is frozen out of the collector's sight, and
a full collection runs once per 100 middle passes — cyclic garbage that old waits a
few seconds longer (docs/performance.md, fix 11).
"""

from __future__ import annotations

import gc

FULL_COLLECTION_EVERY = 100


def settle_collector() -> None:
    """Call once the process is up: freeze what exists, space out full collections."""
    gc.collect()
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_COLLECTION_EVERY)
