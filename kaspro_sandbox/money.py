"""Money in the sandbox: platform wallets, the journal, money transactions, callback tries.

Pure data and small pure helpers; the moves themselves are `SandboxState.move`, the
endpoints `payments.py`, completion and callbacks `settlement.py`.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, Final, Literal

from kaspro_sandbox.config import SandboxConfig
from kaspro_sandbox.faults import CallbackFault

TransactionType = Literal["PAYMENT", "P2P", "BANK_TRANSFER", "RETAIL_WITHDRAWAL", "QRIS", "TOPUP"]
Status = Literal["PENDING", "SUCCESS", "FAILED"]
ASYNC_TYPES: Final = frozenset({"BANK_TRANSFER", "RETAIL_WITHDRAWAL", "QRIS"})
# Journal types are the transaction types plus the refund of a failed async transfer.
REFUND: Final = "REFUND"

EXTERNAL_PREFIX: Final = "external:"
EXTERNAL_PARTIES: Final = ("bank", "qris", "va", "retail")
EXTERNAL_BANK: Final = "external:bank"
EXTERNAL_QRIS: Final = "external:qris"
EXTERNAL_VA: Final = "external:va"
EXTERNAL_RETAIL: Final = "external:retail"

RETAIL_CHANNELS: Final = ("ALFAMART", "INDOMARET")
TOPUP_CHANNELS: Final = ("VA", *RETAIL_CHANNELS)
# A bank account number ending like this makes the transfer fail (deterministic failures).
FAILING_ACCOUNT_SUFFIX: Final = "0000"
# A QRIS merchant name starting like this makes the payment fail.
FAILING_MERCHANT_PREFIX: Final = "FAIL"

_AMOUNT = re.compile(r"[1-9][0-9]{0,17}")
_DIGITS = re.compile(r"[0-9]+")
WITHDRAWAL_CODE_DIGITS: Final = 12


def iso_utc(when: float) -> str:
    """ISO-8601 UTC with milliseconds and a `Z`, for JSON the control endpoints show."""
    stamp = datetime.fromtimestamp(when, tz=UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


def parse_amount(value: object) -> int | None:
    """Whole rupiah from a KasPro amount: a string of ASCII digits, no leading zero, > 0."""
    if not isinstance(value, str) or _AMOUNT.fullmatch(value) is None:
        return None
    return int(value)


def is_digits(value: object) -> bool:
    return isinstance(value, str) and _DIGITS.fullmatch(value) is not None


def withdrawal_code(request_id: str) -> str:
    """The 12-digit code shown at the till for a retail cash-out, derived from the requestId."""
    digest = hashlib.sha256(f"withdrawal:{request_id}".encode()).digest()
    return f"{int.from_bytes(digest[:8], 'big') % 10**WITHDRAWAL_CODE_DIGITS:012d}"


@dataclass
class PlatformWallet:
    """A platform wallet (escrow, merchant, corporate): a KasPro account with no balance cap."""

    account: str
    name: str
    balance: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def platform_wallets(config: SandboxConfig) -> dict[str, PlatformWallet]:
    """Fresh platform wallets, keyed by account number, balances 0."""
    named = (
        ("escrow", config.escrow_account),
        ("merchant", config.merchant_account),
        ("corporate", config.corporate_account),
    )
    return {account: PlatformWallet(account, name) for name, account in named}


@dataclass(frozen=True)
class JournalEntry:
    """One movement of `amount + fee` from `source` to `destination`."""

    seq: int
    time: float
    request_id: str
    type: str
    source: str
    destination: str
    amount: int
    fee: int

    @property
    def total(self) -> int:
        return self.amount + self.fee

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "time": iso_utc(self.time),
            "requestId": self.request_id,
            "type": self.type,
            "from": self.source,
            "to": self.destination,
            "amount": self.amount,
            "fee": self.fee,
        }


@dataclass
class MoneyTransaction:
    """A money request the sandbox decided, keyed by its requestId.

    `answer_status`/`answer_body` is the first answer, given again to a repeated requestId.
    A rejected request (110005, 140001, 140002) is a FAILED transaction that moved nothing.
    `held`: a fault or script keeps it PENDING (no completion timer); `callback_fault`:
    how its callbacks misbehave.
    """

    request_id: str
    reff_id: str
    type: TransactionType
    status: Status
    code: int
    message: str
    amount: int
    service_fee: int
    mobile_number: str
    destination: str
    created_at: float
    answer_status: int = 200
    answer_body: dict[str, Any] = field(default_factory=dict)
    settled_at: float | None = None
    planned_status: Status = "SUCCESS"
    details: dict[str, str] = field(default_factory=dict)
    callback_body: dict[str, Any] | None = None
    completion: asyncio.Task[None] | None = field(default=None, repr=False)
    held: bool = False
    callback_fault: CallbackFault | None = None

    @property
    def is_async(self) -> bool:
        return self.type in ASYNC_TYPES

    def status_document(self) -> dict[str, Any]:
        """`data` of a transaction-status answer (docs/kaspro.md)."""
        document: dict[str, Any] = {
            "requestId": self.request_id,
            "reffId": self.reff_id,
            "status": self.status,
            "amount": str(self.amount),
            "serviceFee": str(self.service_fee),
            "mobileNumber": self.mobile_number,
            "type": self.type,
            "message": self.message,
        }
        if self.status == "FAILED":
            document["code"] = self.code  # why it failed: the refusal's own code
        return document

    def to_json(self) -> dict[str, Any]:
        """The sandbox's own view (control endpoints), not a KasPro shape."""
        return {
            "requestId": self.request_id,
            "reffId": self.reff_id,
            "type": self.type,
            "status": self.status,
            "code": self.code,
            "message": self.message,
            "amount": self.amount,
            "serviceFee": self.service_fee,
            "mobileNumber": self.mobile_number,
            "destination": self.destination,
            "createdAt": iso_utc(self.created_at),
            "settledAt": iso_utc(self.settled_at) if self.settled_at is not None else None,
            "plannedStatus": (
                self.planned_status if self.status == "PENDING" and not self.held else None
            ),
            "details": dict(self.details),
            "answer": self.answer_body,
            "callback": self.callback_body,
            "held": self.held,
            "callbackFault": self.callback_fault.kind if self.callback_fault else None,
        }


@dataclass(frozen=True)
class CallbackAttempt:
    """One try to deliver a callback: the HTTP status answered, or the transport error."""

    time: float
    url: str
    request_id: str
    attempt: int
    status_code: int | None
    error: str | None
    body: dict[str, Any]
    fault: str | None = None  # the callback fault this try was part of

    def to_json(self) -> dict[str, Any]:
        return {
            "time": iso_utc(self.time),
            "url": self.url,
            "requestId": self.request_id,
            "attempt": self.attempt,
            "statusCode": self.status_code,
            "error": self.error,
            "body": self.body,
            "fault": self.fault,
        }


@dataclass
class MoneySettings:
    """What `POST /_sandbox/settings` and `/_sandbox/callback-url` change at runtime."""

    async_delay_seconds: float
    auto_complete: bool
    cash_out_fee: int
    callback_url: str | None

    @classmethod
    def from_config(cls, config: SandboxConfig) -> MoneySettings:
        """The starting values: SandboxConfig's fields of the same names."""
        return cls(**{f.name: getattr(config, f.name) for f in fields(cls)})

    def to_json(self) -> dict[str, Any]:
        return asdict(self)
