"""Registration data of a customer and the rules its fields follow."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from wallet_service.domain.phone import MobileNumber

NAME_MAX = 50
# Letters of any script, combining marks, spaces, apostrophes, dots and hyphens.
_NAME_PUNCTUATION = frozenset(" '.-")
_EMAIL = re.compile(
    r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+"
)
_POSTAL_CODE = re.compile(r"[0-9]{5}")


@dataclass(frozen=True, slots=True)
class NewCustomer:
    mobile_number: MobileNumber
    first_name: str
    middle_name: str
    last_name: str
    email: str
    address: str
    city: str
    province: str
    postal_code: str


def name_problem(value: str, *, required: bool) -> str | None:
    """Why ``value`` is not an acceptable name part, or None."""
    if not value:
        return "is required" if required else None
    if len(value) > NAME_MAX:
        return f"must be at most {NAME_MAX} characters"
    if value != value.strip() or "  " in value:
        return "must not start or end with spaces or contain double spaces"
    for ch in value:
        if ch in _NAME_PUNCTUATION:
            continue
        if unicodedata.category(ch)[0] not in ("L", "M"):
            return "may contain only letters, spaces, apostrophes, dots and hyphens"
    if not any(unicodedata.category(ch)[0] == "L" for ch in value):
        return "must contain a letter"
    return None


def email_problem(value: str) -> str | None:
    """Why ``value`` is not an acceptable email address, or None (empty is fine)."""
    if not value:
        return None
    if len(value) > 254:
        return "must be at most 254 characters"
    if not value.isascii() or not _EMAIL.fullmatch(value):
        return "must be an email address like name@example.com"
    return None


def text_problem(value: str, *, max_length: int) -> str | None:
    """Why free text (address, city, note, …) is not acceptable, or None."""
    if len(value) > max_length:
        return f"must be at most {max_length} characters"
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn") for ch in value):
        return "must not contain control or invisible characters"
    return None


def postal_code_problem(value: str) -> str | None:
    if value and not _POSTAL_CODE.fullmatch(value):
        return "must be 5 digits"
    return None


def account_name_problem(value: str) -> str | None:
    """Why ``value`` is not a bank account holder's name, or None.

    Banks hold company names too (digits, "&", commas), so this is wider than a
    person's name: 1-100 printable characters with at least one letter.
    """
    if not value.strip():
        return "is required"
    problem = text_problem(value, max_length=100)
    if problem is not None:
        return problem
    if not any(unicodedata.category(ch)[0] == "L" for ch in value):
        return "must contain a letter"
    return None
