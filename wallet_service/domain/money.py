"""Money rules: statuses and their forward-only transitions, ledger accounts and lines, limits.

Invariants (MONEY-RULES.md):
- a terminal status never changes; every other change follows a table below;
- the ledger lines of one transaction sum to zero, and each KasPro leg is booked once;
- the escrow account equals the sum of what open holds still hold.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

from wallet_service.domain.phone import MobileNumber


class TxType(enum.Enum):
    TOP_UP = "TOP_UP"
    DRIVER_DEPOSIT = "DRIVER_DEPOSIT"
    CASH_OUT = "CASH_OUT"
    RIDE_HOLD = "RIDE_HOLD"
    RIDE_CAPTURE = "RIDE_CAPTURE"
    RIDE_VOID = "RIDE_VOID"
    TIP = "TIP"
    TRANSFER = "TRANSFER"
    QRIS_PAYMENT = "QRIS_PAYMENT"


class TxStatus(enum.Enum):
    PENDING = "PENDING"
    PROCESSING = "PROCESSING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    REVERSED = "REVERSED"


class RideStatus(enum.Enum):
    AUTHORIZING = "AUTHORIZING"
    AUTHORIZED = "AUTHORIZED"
    CAPTURING = "CAPTURING"
    CAPTURED = "CAPTURED"
    VOIDING = "VOIDING"
    VOIDED = "VOIDED"
    EXPIRED = "EXPIRED"
    FAILED = "FAILED"


TX_TRANSITIONS: dict[TxStatus, frozenset[TxStatus]] = {
    TxStatus.PENDING: frozenset({TxStatus.PROCESSING, TxStatus.SUCCEEDED, TxStatus.FAILED}),
    TxStatus.PROCESSING: frozenset({TxStatus.SUCCEEDED, TxStatus.FAILED}),
    TxStatus.SUCCEEDED: frozenset({TxStatus.REVERSED}),
    TxStatus.FAILED: frozenset(),
    TxStatus.REVERSED: frozenset(),
}

# The sweeper voids an expired hold through VOIDING and ends it EXPIRED, so a void and
# an expiry share one path (and one KasPro leg) and cannot both happen.
RIDE_TRANSITIONS: dict[RideStatus, frozenset[RideStatus]] = {
    RideStatus.AUTHORIZING: frozenset({RideStatus.AUTHORIZED, RideStatus.FAILED}),
    RideStatus.AUTHORIZED: frozenset({RideStatus.CAPTURING, RideStatus.VOIDING}),
    RideStatus.CAPTURING: frozenset({RideStatus.CAPTURED}),
    RideStatus.VOIDING: frozenset({RideStatus.VOIDED, RideStatus.EXPIRED}),
    RideStatus.CAPTURED: frozenset(),
    RideStatus.VOIDED: frozenset(),
    RideStatus.EXPIRED: frozenset(),
    RideStatus.FAILED: frozenset(),
}


def tx_sources(target: TxStatus) -> frozenset[TxStatus]:
    """The statuses a transaction may move to ``target`` from."""
    return frozenset(s for s, targets in TX_TRANSITIONS.items() if target in targets)


def ride_sources(target: RideStatus) -> frozenset[RideStatus]:
    """The statuses a ride payment may move to ``target`` from."""
    return frozenset(s for s, targets in RIDE_TRANSITIONS.items() if target in targets)


# Ledger accounts.
ESCROW = "escrow"
MERCHANT = "merchant"
CORPORATE = "corporate"
EXTERNAL_BANK = "external:bank"
EXTERNAL_RETAIL = "external:retail"
EXTERNAL_VA = "external:va"
EXTERNAL_QRIS = "external:qris"
KASPRO_FEES = "kaspro:fees"


def subscriber(mobile: MobileNumber) -> str:
    return f"subscriber:{mobile.canonical}"


@dataclass(frozen=True, slots=True)
class Line:
    account: str
    amount_idr: int


def movement(source: str, target: str, amount_idr: int, *, fee_idr: int = 0) -> list[Line]:
    """Balanced lines for ``amount`` from ``source`` to ``target`` (plus KasPro's fee)."""
    lines = [Line(source, -(amount_idr + fee_idr)), Line(target, amount_idr)]
    if fee_idr:
        lines.append(Line(KASPRO_FEES, fee_idr))
    return lines


def balanced(lines: Iterable[Line]) -> bool:
    return sum(line.amount_idr for line in lines) == 0


@dataclass(frozen=True, slots=True)
class Capture:
    """How a hold splits at capture."""

    driver_payout_idr: int
    platform_fee_idr: int
    refund_idr: int


def split_capture(held_idr: int, final_fare_idr: int, platform_fee_idr: int) -> Capture:
    """The capture legs; raises ValueError when the fare does not fit the hold."""
    if not 0 < final_fare_idr <= held_idr:
        raise ValueError("the final fare must be between 1 and the held amount")
    if not 0 <= platform_fee_idr <= final_fare_idr:
        raise ValueError("the platform fee must be between 0 and the final fare")
    return Capture(
        driver_payout_idr=final_fare_idr - platform_fee_idr,
        platform_fee_idr=platform_fee_idr,
        refund_idr=held_idr - final_fare_idr,
    )


@dataclass(frozen=True)
class Limits:
    """Caps (Bank Indonesia e-money rules, configurable)."""

    basic_balance_cap_idr: int = 2_000_000
    premium_balance_cap_idr: int = 20_000_000
    monthly_volume_cap_idr: int = 40_000_000
    tip_cap_idr: int = 100_000
    min_cash_out_idr: int = 10_000
    max_cash_out_idr: int = 10_000_000
    hold_lifetime_seconds: float = 24 * 3600.0
