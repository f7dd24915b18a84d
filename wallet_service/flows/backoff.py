"""When to try again: the one backoff of the reconciler, parked callbacks and top-up checks."""

from __future__ import annotations

import random
from collections.abc import Callable

# Past this many doublings every delay has long reached its cap (and 2.0**n stays finite).
_MAX_DOUBLINGS = 32


def backoff_seconds(
    tries: int,
    first_seconds: float,
    max_seconds: float,
    fraction: Callable[[], float] = random.random,
) -> float:
    """The wait after ``tries`` earlier tries: a step of ``first_seconds`` doubling per try
    up to ``max_seconds``, of which ``fraction()`` (in [0, 1)) picks the point."""
    step = min(first_seconds * 2.0 ** min(tries, _MAX_DOUBLINGS), max_seconds)
    # Equal jitter: items that failed together spread out, and none waits under half its step.
    return step / 2 * (1 + fraction())
