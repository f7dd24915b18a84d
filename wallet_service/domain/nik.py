"""NIK (the 16-digit KTP number): structural validation."""

from __future__ import annotations

import re

_NIK = re.compile(r"[0-9]{16}")


def nik_problem(nik: str) -> str | None:
    """Why ``nik`` is not a well-formed NIK, or None when it is.

    Layout: province (2) + regency (2) + district (2) + birth day (01-31, +40 for
    women) + birth month (01-12) + birth year (2) + serial (4, not 0000).
    """
    if not _NIK.fullmatch(nik):
        return "must be exactly 16 digits"
    if nik[0:2] == "00" or nik[2:4] == "00" or nik[4:6] == "00":
        return "region code must not be 00"
    day = int(nik[6:8])
    if not (1 <= day <= 31 or 41 <= day <= 71):
        return "birth day must be 01-31 (or 41-71 for women)"
    month = int(nik[8:10])
    if not 1 <= month <= 12:
        return "birth month must be 01-12"
    if nik[12:16] == "0000":
        return "serial must not be 0000"
    return None


def mask_nik(nik: str) -> str:
    """A form safe for logs: the region code and the last two digits."""
    if len(nik) < 8:
        return "*" * len(nik)
    return nik[:4] + "*" * (len(nik) - 6) + nik[-2:]
