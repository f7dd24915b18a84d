"""A customer's wallet account as the service sees it, and the eKYC identity."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from wallet_service.domain.phone import MobileNumber


class AccountType(enum.Enum):
    UNKNOWN = "unknown"
    BASIC = "basic"
    PREMIUM = "premium"


class AccountStatus(enum.Enum):
    UNKNOWN = "unknown"
    ACTIVE = "active"
    INACTIVE = "inactive"
    BLOCKED = "blocked"


class CustomerType(enum.Enum):
    UNKNOWN = "unknown"
    SUBSCRIBER = "subscriber"
    MERCHANT = "merchant"
    CORPORATE = "corporate"


class KycStatus(enum.Enum):
    UNKNOWN = "unknown"
    UNVERIFIED = "unverified"
    PENDING = "pending"
    VERIFIED = "verified"
    REJECTED = "rejected"


@dataclass(frozen=True, slots=True)
class Balance:
    pocket_id: str
    available_idr: int


@dataclass(frozen=True, slots=True)
class Account:
    """What KasPro's account inquiry says of a customer (``linked`` is ours, not KasPro's)."""

    mobile_number: MobileNumber
    first_name: str
    middle_name: str
    last_name: str
    full_name: str
    email: str
    account_type: AccountType
    account_status: AccountStatus
    customer_type: CustomerType
    kyc_status: KycStatus
    balance: Balance


@dataclass(frozen=True, slots=True)
class KycIdentity:
    """The identity KasPro's OCR read off a KTP. Values are KasPro's text, unchanged."""

    id_card_number: str
    name: str
    birth_place: str
    birth_date: str
    gender: str
    blood_type: str
    address: str
    rt_rw: str
    village_district: str
    sub_district: str
    district: str
    province: str
    religion: str
    marital_status: str
    occupation: str
    nationality: str
    id_expiry_date: str


@dataclass(frozen=True, slots=True)
class WalletAccount:
    """A KasPro account together with our link state (OTP-verified or not).

    ``account`` is None when KasPro could not be read right after a change it accepted.
    """

    mobile_number: MobileNumber
    account: Account | None
    linked_at: float | None

    @property
    def linked(self) -> bool:
        return self.linked_at is not None
