"""Everything the sandbox remembers: customers, OTPs, tokens, OCR overrides, faults, request log.

All of it lives in memory and disappears with the process or on `reset()`.
"""

from __future__ import annotations

import random
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from kaspro_sandbox.faults import FaultTable

# KasPro's reference ids carry a Jakarta (WIB, UTC+7) millisecond timestamp.
_WIB = timezone(timedelta(hours=7))
RESPONSE_ID_PREFIX = "OLSFQ"


def iso_utc(when: float) -> str:
    """ISO-8601 UTC with milliseconds and a `Z`, for JSON the control endpoints show."""
    stamp = datetime.fromtimestamp(when, tz=UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


@dataclass
class Customer:
    """A registered KasPro subscriber, keyed by its local `08…` number."""

    mobile_number: str
    first_name: str
    middle_name: str
    last_name: str
    email: str
    address: str
    city: str
    province: str
    country: str
    postal_code: str
    register_request_id: str
    register_response_id: str
    registered_at: float
    account_type: str = "Basic"
    account_status: str = "Active"
    customer_type: str = "Subscriber"
    kyc_status: str = "Unverified"
    balance: int = 0
    pocket_id: str = "2"
    id_card_number: str | None = None

    @property
    def full_name(self) -> str:
        names = (self.first_name, self.middle_name, self.last_name)
        return " ".join(name for name in names if name)

    def to_json(self) -> dict[str, Any]:
        """The sandbox's own view of the customer (control endpoints), not a KasPro shape."""
        return {
            "mobileNumber": self.mobile_number,
            "firstName": self.first_name,
            "middleName": self.middle_name,
            "lastName": self.last_name,
            "fullName": self.full_name,
            "email": self.email,
            "address": self.address,
            "city": self.city,
            "province": self.province,
            "country": self.country,
            "postalCode": self.postal_code,
            "accountType": self.account_type,
            "accountStatus": self.account_status,
            "customerType": self.customer_type,
            "kycStatus": self.kyc_status,
            "balance": self.balance,
            "pocketId": self.pocket_id,
            "idCardNumber": self.id_card_number,
            "registerRequestId": self.register_request_id,
            "registerResponseId": self.register_response_id,
            "registeredAt": iso_utc(self.registered_at),
        }


@dataclass
class IssuedOtp:
    """The one live OTP of a number and the message that 'delivered' it."""

    mobile_number: str
    code: str
    expires_at: float
    message: str
    channel: str

    def to_json(self) -> dict[str, Any]:
        return {
            "mobileNumber": self.mobile_number,
            "otp": self.code,
            "message": self.message,
            "channel": self.channel,
            "expiresAt": iso_utc(self.expires_at),
        }


@dataclass(frozen=True)
class LoggedRequest:
    """One request the gateway answered; the mobile number is already masked."""

    time: float
    method: str
    path: str
    mobile_number: str | None
    request_id: str | None
    code: int | None
    http_status: int
    fault: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "time": iso_utc(self.time),
            "method": self.method,
            "path": self.path,
            "mobileNumber": self.mobile_number,
            "requestId": self.request_id,
            "code": self.code,
            "httpStatus": self.http_status,
            "fault": self.fault,
        }


@dataclass(eq=False)
class SandboxState:
    """The gateway's memory. `seed` makes OTPs (and nothing else) reproducible."""

    seed: int | None = None
    customers: dict[str, Customer] = field(default_factory=dict)
    otps: dict[str, IssuedOtp] = field(default_factory=dict)
    tokens: dict[str, float] = field(default_factory=dict)
    ocr_overrides: dict[str, str] = field(default_factory=dict)
    faults: FaultTable = field(default_factory=FaultTable)
    requests: list[LoggedRequest] = field(default_factory=list)
    rng: random.Random = field(init=False)
    _last_response_ms: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def reset(self) -> None:
        """Forget everything, as a freshly started sandbox with the same seed."""
        self.customers.clear()
        self.otps.clear()
        self.tokens.clear()
        self.ocr_overrides.clear()
        self.faults.clear()
        self.requests.clear()
        self.rng = random.Random(self.seed)
        self._last_response_ms = 0

    def issue_token(self, now: float, ttl_seconds: int) -> str:
        token = secrets.token_urlsafe(32)
        self.tokens[token] = now + ttl_seconds
        return token

    def token_is_live(self, token: str, now: float) -> bool:
        expires_at = self.tokens.get(token)
        return expires_at is not None and now < expires_at

    def new_otp_code(self) -> str:
        return f"{self.rng.randrange(1_000_000):06d}"

    def new_response_id(self, now: float) -> str:
        """`OLSFQ` + WIB timestamp to the millisecond, unique within this sandbox."""
        millis = max(int(now * 1000), self._last_response_ms + 1)
        self._last_response_ms = millis
        stamp = datetime.fromtimestamp(millis // 1000, tz=_WIB)
        return f"{RESPONSE_ID_PREFIX}{stamp:%Y%m%d%H%M%S}{millis % 1000:03d}"
