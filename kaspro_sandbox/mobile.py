"""Indonesian mobile numbers: the local `08…` form, its other spellings, masking."""

from __future__ import annotations

import re

_LOCAL_MOBILE = re.compile(r"08[1-35-9][0-9]{7,10}")


def is_local_mobile(value: str) -> bool:
    """Whether `value` is a mobile number in the local `08…` form KasPro expects."""
    return _LOCAL_MOBILE.fullmatch(value) is not None


def to_local(value: str) -> str | None:
    """The `08…` form of a number written as `08…`, `628…` or `+628…`; None if it is none."""
    number = value.strip()
    if number.startswith("+"):
        number = number[1:]
    if number.startswith("62"):
        number = "0" + number[2:]
    return number if is_local_mobile(number) else None


def to_international_number(local: str) -> int:
    """The `628…` form as a number, the way customer-account-inquiry answers it."""
    return int("62" + local[1:])


def mask(value: str) -> str:
    """Hide the middle of a number for logs and printed messages: `0812****7890`."""
    if len(value) > 8:
        return f"{value[:4]}****{value[-4:]}"
    return "*" * len(value)
