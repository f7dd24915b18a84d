"""The C allocator's settings: what large requests used goes back to the system.

gRPC reads a message into 64 KiB blocks, which glibc's malloc serves from its heap
(below its mmap threshold), where freed blocks stay mapped while anything above them
lives. With every block of 64 KiB or more mapped on its own, freeing it unmaps it
(docs/decisions/0003-grpc-receive-limit.md).
"""

from __future__ import annotations

import ctypes

# mallopt(3) parameters, from glibc's malloc.h.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD_BYTES = 64 * 1024
# glibc's default; set because a large block freed during the imports may have raised it.
TRIM_THRESHOLD_BYTES = 128 * 1024


def return_freed_memory() -> None:
    """Set the thresholds (fixed from now on); nothing where there is no mallopt (not glibc)."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
    mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
