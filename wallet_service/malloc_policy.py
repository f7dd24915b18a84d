"""The C allocator's settings: what large requests used goes back to the system.

gRPC reads a message into 64 KiB blocks, and glibc's malloc serves blocks that size
from its heap (its mmap threshold starts at 128 KiB and rises to 32 MiB as large
blocks are freed), where freed blocks stay mapped until the heap's top is free. After
20 concurrent 15 MiB UpgradeKyc calls that kept 110-400 MB; with every block of
64 KiB or more mapped on its own, and unmapped when freed, RSS is back within ~10 MB
of where it was (docs/decisions/0003-grpc-receive-limit.md).
"""

from __future__ import annotations

import ctypes

# mallopt(3) parameters, from glibc's malloc.h.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD_BYTES = 64 * 1024
# glibc's default; set because a large block freed during the imports may have raised it.
TRIM_THRESHOLD_BYTES = 128 * 1024


def return_freed_memory() -> bool:
    """Set the thresholds (fixed from now on); False where there is no mallopt (not glibc)."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    mapped: int = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
    trimmed: int = mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    return mapped == 1 and trimmed == 1
