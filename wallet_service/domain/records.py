"""The money records the service keeps: transactions, KasPro attempts, ride payments."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from wallet_service.domain.money import RideStatus, TxStatus, TxType


class AttemptStatus(enum.Enum):
    PENDING = "pending"  # saved; maybe sent; outcome not known
    PROCESSING = "processing"  # KasPro said "in process"
    SUCCEEDED = "succeeded"
    FAILED = "failed"

    @property
    def is_open(self) -> bool:
        """No final answer yet: the reconciler keeps asking about it."""
        return self in (AttemptStatus.PENDING, AttemptStatus.PROCESSING)


@dataclass(frozen=True)
class Transaction:
    id: str
    type: TxType
    status: TxStatus
    amount_idr: int
    mobile_number: str  # canonical 628…
    create_time: float
    update_time: float
    fee_idr: int = 0
    counterparty: str = ""  # canonical 628… of the other subscriber, if any
    ride_id: str = ""
    note: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    withdrawal_code: str = ""
    kaspro_reference: str | None = None
    failure_reason: str = ""
    failure_message: str = ""
    frozen: str = ""


@dataclass(frozen=True)
class Attempt:
    """One KasPro money call; ``call`` says what to send (endpoint and arguments)."""

    reference: str
    transaction_id: str
    leg: str
    call: dict[str, Any]
    amount_idr: int
    status: AttemptStatus
    next_check_at: float
    create_time: float
    update_time: float
    kaspro_reff_id: str | None = None
    fee_idr: int = 0
    checks: int = 0
    last_detail: str = ""
    # When the step was last sent, written before every send (None: never sent, or sent
    # once by an earlier version, which recorded only sends again: create_time stands in).
    last_sent_at: float | None = None
    # The process calling KasPro about the attempt now, and when its claim lapses (None:
    # no call in flight); see Engine._one_flight.
    flight_holder: str | None = None
    flight_until: float | None = None
    # The trace id of the RPC or worker pass that created it: later work on the attempt,
    # on any replica, logs under it ("" for attempts older than the column).
    trace_id: str = ""


@dataclass(frozen=True)
class RidePayment:
    ride_id: str
    status: RideStatus
    passenger: str  # canonical
    held_amount_idr: int
    expire_time: float
    hold_transaction: str
    create_time: float
    update_time: float
    driver: str = ""
    final_fare_idr: int = 0
    platform_fee_idr: int = 0
    driver_payout_idr: int = 0
    refund_idr: int = 0
    reason: str = ""
    settle_transaction: str = ""
