"""The errors flows raise, named by the reasons of the wallet.v1 contract.

The edge (wallet_service/api/errors.py) maps each reason to its gRPC code; code below
the edge only says *what* went wrong.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field


class Reason(enum.Enum):
    INVALID_FIELD = "INVALID_FIELD"
    CUSTOMER_NOT_FOUND = "CUSTOMER_NOT_FOUND"
    RIDE_PAYMENT_NOT_FOUND = "RIDE_PAYMENT_NOT_FOUND"
    TRANSACTION_NOT_FOUND = "TRANSACTION_NOT_FOUND"
    CUSTOMER_ALREADY_REGISTERED = "CUSTOMER_ALREADY_REGISTERED"
    IDEMPOTENCY_KEY_REUSED = "IDEMPOTENCY_KEY_REUSED"
    REQUEST_IN_PROGRESS = "REQUEST_IN_PROGRESS"
    WALLET_NOT_LINKED = "WALLET_NOT_LINKED"
    KYC_REQUIRED = "KYC_REQUIRED"
    INSUFFICIENT_FUNDS = "INSUFFICIENT_FUNDS"
    LIMIT_EXCEEDED = "LIMIT_EXCEEDED"
    INVALID_STATE = "INVALID_STATE"
    OTP_EXPIRED = "OTP_EXPIRED"
    OTP_INVALID = "OTP_INVALID"
    OTP_RATE_LIMITED = "OTP_RATE_LIMITED"
    OTP_LOCKED = "OTP_LOCKED"
    PROVIDER_UNAVAILABLE = "PROVIDER_UNAVAILABLE"
    PROVIDER_REJECTED = "PROVIDER_REJECTED"
    IMAGE_REJECTED = "IMAGE_REJECTED"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    OVERLOADED = "OVERLOADED"
    DATABASE_BUSY = "DATABASE_BUSY"
    ATTEMPT_NOT_FOUND = "ATTEMPT_NOT_FOUND"
    CALLBACK_NOT_FOUND = "CALLBACK_NOT_FOUND"
    DRIFT_NOT_FOUND = "DRIFT_NOT_FOUND"


@dataclass(frozen=True, slots=True)
class FieldViolation:
    field: str
    description: str


@dataclass(eq=False)
class WalletError(Exception):
    """A refusal the caller should see. ``message`` must hold no personal data."""

    reason: Reason
    message: str
    violations: Sequence[FieldViolation] = ()
    retry_after_seconds: float | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__(self.message)


class DatabaseBusy(Exception):
    """The database could not take a transaction in time (another process held SQLite's
    lock, or PostgreSQL was unreachable or kept refusing it for conflicts); nothing was
    written. Not a refusal (flows let it pass, nothing is stored under the request_id):
    the edge answers UNAVAILABLE / DATABASE_BUSY and a retry may succeed."""

    def __init__(
        self, message: str = "the wallet database is locked by another process: retry shortly"
    ) -> None:
        super().__init__(message)


class CommitUnknown(DatabaseBusy):
    """The connection was lost while a COMMIT was on its way: the transaction may or may
    not have been written. Nothing acts on it as if either were true; what comes next
    reads the database again first (a retried request finds its key, the reconciler its
    attempt), like any unknown outcome (MONEY-RULES rule 3)."""

    def __init__(self) -> None:
        super().__init__(
            "the wallet database connection was lost while committing: the outcome is "
            "re-read on retry"
        )


def invalid(violations: Sequence[FieldViolation]) -> WalletError:
    """An INVALID_FIELD error listing every bad field."""
    names = ", ".join(v.field for v in violations)
    return WalletError(Reason.INVALID_FIELD, f"invalid fields: {names}", violations)
