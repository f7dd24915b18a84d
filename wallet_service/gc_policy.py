"""The garbage collector's settings for a long-running process under load.

A full collection scans every tracked object and pauses every call in flight meanwhile.
What exists once the process is up (modules, protobuf descriptors, configuration,
pools) lives as long as the process, so it is frozen out of the collector's sight, and
full collections are spaced out: cyclic garbage that old waits a little longer
(docs/decisions/0009-garbage-collector-and-malloc.md).
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
