"""Indonesian mobile numbers: parsing the accepted forms into one canonical value."""

from __future__ import annotations

import re
from dataclasses import dataclass

# After the country code a mobile number is 8, then 1-3 or 5-9, then 7 to 10 digits.
_NATIONAL = re.compile(r"8[1-35-9][0-9]{7,10}")


class InvalidMobileNumber(ValueError):
    """The text is not an Indonesian mobile number in an accepted form."""


@dataclass(frozen=True, slots=True)
class MobileNumber:
    """A mobile number, held as its national significant digits (``81234567890``)."""

    national: str

    def __post_init__(self) -> None:
        if not _NATIONAL.fullmatch(self.national):
            raise InvalidMobileNumber("not an Indonesian mobile number")

    @property
    def canonical(self) -> str:
        """The stored form: E.164 without the plus, ``6281234567890``."""
        return "62" + self.national

    @property
    def local(self) -> str:
        """The form KasPro is sent: ``081234567890``."""
        return "0" + self.national

    @property
    def masked(self) -> str:
        """A form safe for logs: ``0812****7890``."""
        local = self.local
        return local[:4] + "*" * (len(local) - 8) + local[-4:]

    def __str__(self) -> str:
        return self.masked

    def __repr__(self) -> str:
        return f"MobileNumber({self.masked})"


def parse_mobile_number(text: str) -> MobileNumber:
    """Parse ``08…``, ``628…`` or ``+628…``; anything else raises InvalidMobileNumber.

    Only ASCII digits are accepted (no spaces, dashes or look-alike digits), so one
    number has exactly one accepted spelling per form.
    """
    if not text.isascii():
        raise InvalidMobileNumber("must contain ASCII digits only")
    if text.startswith("+62"):
        national = text[3:]
    elif text.startswith("62"):
        national = text[2:]
    elif text.startswith("0"):
        national = text[1:]
    else:
        raise InvalidMobileNumber("must start with 08, 628 or +628")
    if not national.isdigit():
        raise InvalidMobileNumber("must contain digits only after the prefix")
    return MobileNumber(national)


def mask_mobile_numbers(text: str) -> str:
    """Mask every Indonesian mobile number found inside free text (for log lines)."""
    return _ANY_NUMBER.sub(_mask_match, text)


_ANY_NUMBER = re.compile(r"(?:\+?62|0)8[1-35-9][0-9]{7,10}(?![0-9])")


def _mask_match(match: re.Match[str]) -> str:
    digits = match.group(0)
    return digits[:4] + "*" * (len(digits) - 8) + digits[-4:]
