"""KasPro response codes: the one table that says what each code means to us."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final


class Outcome(enum.Enum):
    """What a KasPro answer tells us about the operation we asked for."""

    SUCCEEDED = "succeeded"
    IN_PROCESS = "in_process"
    REJECTED = "rejected"
    UNKNOWN = "unknown"


class Rejection(enum.Enum):
    """Why KasPro definitely refused an operation."""

    CUSTOMER_NOT_FOUND = "customer_not_found"
    CUSTOMER_ALREADY_REGISTERED = "customer_already_registered"
    OTP_INVALID = "otp_invalid"
    OTP_EXPIRED = "otp_expired"
    IMAGE_REJECTED = "image_rejected"
    INSUFFICIENT_FUNDS = "insufficient_funds"
    LIMIT_EXCEEDED = "limit_exceeded"
    INVALID_REQUEST = "invalid_request"
    TRANSACTION_NOT_FOUND = "transaction_not_found"


# The gateway's own refusals (docs/kaspro.md, "Authentication"); all assumed codes.
INVALID_SIGNATURE: Final = 401001
INVALID_TOKEN: Final = 401002
DATE_OUT_OF_RANGE: Final = 401003
GATEWAY_REFUSALS: Final = frozenset({INVALID_SIGNATURE, INVALID_TOKEN, DATE_OUT_OF_RANGE})

_UNKNOWN: Final = (Outcome.UNKNOWN, None)

CODES: Final[Mapping[int, tuple[Outcome, Rejection | None]]] = MappingProxyType(
    {
        0: (Outcome.SUCCEEDED, None),
        1: (Outcome.IN_PROCESS, None),
        110005: (Outcome.REJECTED, Rejection.CUSTOMER_NOT_FOUND),
        110006: (Outcome.REJECTED, Rejection.CUSTOMER_ALREADY_REGISTERED),
        120001: (Outcome.REJECTED, Rejection.OTP_INVALID),
        120002: (Outcome.REJECTED, Rejection.OTP_EXPIRED),
        130001: (Outcome.REJECTED, Rejection.IMAGE_REJECTED),
        140001: (Outcome.REJECTED, Rejection.INSUFFICIENT_FUNDS),
        140002: (Outcome.REJECTED, Rejection.LIMIT_EXCEEDED),
        # Only a status inquiry may answer it: KasPro never executed that requestId.
        150001: (Outcome.REJECTED, Rejection.TRANSACTION_NOT_FOUND),
        400001: (Outcome.REJECTED, Rejection.INVALID_REQUEST),
        # The gateway refused before KasPro looked at the request, but these are our
        # credentials' or clock's fault, not the customer's: no flow may present them
        # as a refusal, so they stay unknown (the client raises KasProAuthError).
        INVALID_SIGNATURE: _UNKNOWN,
        INVALID_TOKEN: _UNKNOWN,
        DATE_OUT_OF_RANGE: _UNKNOWN,
    }
)


# The refusals a money call may get (docs/kaspro.md, "Money endpoints"): nothing moved.
# Any other rejection code on a money call makes no sense there, so it is unknown.
MONEY_REJECTIONS: Final = frozenset(
    {
        Rejection.CUSTOMER_NOT_FOUND,
        Rejection.INSUFFICIENT_FUNDS,
        Rejection.LIMIT_EXCEEDED,
        Rejection.INVALID_REQUEST,
    }
)


def classify(code: int) -> tuple[Outcome, Rejection | None]:
    """The outcome a KasPro code stands for; a code we do not know is never a success."""
    return CODES.get(code, _UNKNOWN)
