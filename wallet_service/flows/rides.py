"""Ride payments (MONEY-RULES rule 7): the fare held in escrow, then captured, voided, or
expired by the sweeper. Each step is KasPro legs with references ``ride/<id>/<leg>``:

- authorize: ``hold``, passenger → escrow (AUTHORIZING → AUTHORIZED, or FAILED);
- capture: ``payout`` escrow → driver, ``fee`` → corporate, ``refund`` → passenger, zero
  legs skipped (AUTHORIZED → CAPTURING → CAPTURED);
- void: ``void``, escrow → passenger (AUTHORIZED → VOIDING → VOIDED);
- expiry: the same ``void`` leg (AUTHORIZED → VOIDING → EXPIRED), so a void and an
  expiry cannot both happen.

Legs go one after another, so a crash resumes the missing ones and never repeats a done
one; ``Engine.apply`` moves the ride as each leg's answer comes."""

from __future__ import annotations

import logging

from wallet_service.domain import money
from wallet_service.domain.errors import Reason, WalletError
from wallet_service.domain.money import RideStatus, TxType
from wallet_service.domain.phone import MobileNumber, parse_mobile_number
from wallet_service.domain.records import RidePayment
from wallet_service.flows.engine import (
    EXPIRED_REASON,
    FEE,
    HOLD,
    PAYOUT,
    REFUND,
    RIDE_PAYMENT_UPDATED,
    VOID,
    account_party,
    subscriber_party,
)
from wallet_service.flows.idempotency import Request
from wallet_service.flows.operations import Create, Created, Operations, failure, unknown_outcome
from wallet_service.kaspro import kaspro_request_id
from wallet_service.store.attempts import has_unanswered_attempt
from wallet_service.store.database import Transaction as DbTx
from wallet_service.store.events import append_event, snapshot
from wallet_service.store.rides import expired_holds, insert_ride, load_ride, ride_operation
from wallet_service.store.transactions import load_transaction

log = logging.getLogger(__name__)


class RidePayments:
    def __init__(self, operations: Operations) -> None:
        self._ops = operations
        self._engine = operations.engine

    async def authorize(
        self,
        request: Request,
        ride_id: str,
        passenger: MobileNumber,
        amount_idr: int,
        *,
        timeout: float | None,
    ) -> RidePayment:
        async def prepare() -> Create:
            await self._ops.require_linked(passenger)
            await self._ops.require_monthly_room(passenger, amount_idr)
            return create

        async def create(tx: DbTx, now: float) -> Created:
            if await load_ride(tx, ride_id) is not None:
                raise WalletError(
                    Reason.IDEMPOTENCY_KEY_REUSED,
                    "this ride already has a payment, authorized by another request",
                )
            hold = self._ops.new_transaction(
                TxType.RIDE_HOLD, passenger, amount_idr, now, ride_id=ride_id
            )
            ride = RidePayment(
                ride_id=ride_id,
                status=RideStatus.AUTHORIZING,
                passenger=passenger.canonical,
                held_amount_idr=amount_idr,
                expire_time=now + self._ops.limits.hold_lifetime_seconds,
                hold_transaction=hold.id,
                create_time=now,
                update_time=now,
            )
            attempt = self._engine.new_attempt(
                kaspro_request_id("ride", ride_id, HOLD),
                hold,
                HOLD,
                "payment",
                {
                    "payer": passenger.canonical,
                    "amount": amount_idr,
                    "reference": hold.id,
                    "destination": self._ops.accounts.escrow,
                },
                money.movement(money.subscriber(passenger), money.ESCROW, amount_idr),
            )
            await self._ops.insert(tx, hold, [attempt], now)
            await insert_ride(tx, ride)
            await append_event(tx, RIDE_PAYMENT_UPDATED, ride_id, snapshot(ride), now)
            return ride_operation(ride_id), [attempt]

        return await self._answer(await self._ops.run(request, prepare, timeout=timeout))

    async def capture(
        self,
        request: Request,
        ride_id: str,
        final_fare_idr: int,
        driver: MobileNumber,
        platform_fee_idr: int,
        *,
        timeout: float | None,
    ) -> RidePayment:
        async def prepare() -> Create:
            ride = await self._ride_in(ride_id, RideStatus.AUTHORIZED, "captured")
            try:
                split = money.split_capture(ride.held_amount_idr, final_fare_idr, platform_fee_idr)
            except ValueError as exc:
                raise WalletError(Reason.INVALID_STATE, str(exc)) from None
            if split.driver_payout_idr:
                await self._ops.require_room(driver, split.driver_payout_idr, timeout=timeout)
            # Payouts go to drivers who proved their number, like every money receiver
            # (checked after KasPro's NOT_FOUND, which says more about a stranger).
            await self._ops.require_linked(driver, role="driver")
            return lambda tx, now: self._start_capture(tx, now, ride, driver, split)

        return await self._answer(await self._ops.run(request, prepare, timeout=timeout))

    async def _start_capture(
        self, tx: DbTx, now: float, ride: RidePayment, driver: MobileNumber, split: money.Capture
    ) -> Created:
        await _refuse_frozen_hold(tx, ride)
        ride_id = ride.ride_id
        passenger = parse_mobile_number(ride.passenger)
        capture = self._ops.new_transaction(
            TxType.RIDE_CAPTURE,
            passenger,
            ride.held_amount_idr,
            now,
            counterparty=driver.canonical,
            ride_id=ride_id,
        )
        legs = [
            (PAYOUT, split.driver_payout_idr, subscriber_party(driver), money.subscriber(driver)),
            (
                FEE,
                split.platform_fee_idr,
                account_party(self._ops.accounts.corporate),
                money.CORPORATE,
            ),
            (REFUND, split.refund_idr, subscriber_party(passenger), money.subscriber(passenger)),
        ]
        attempts = [
            self._engine.new_attempt(
                kaspro_request_id("ride", ride_id, leg),
                capture,
                leg,
                "p2p",
                {
                    "source": account_party(self._ops.accounts.escrow),
                    "destination": target,
                    "amount": amount,
                    "note": f"ride {ride_id} {leg}",
                },
                money.movement(money.ESCROW, account, amount),
            )
            for leg, amount, target, account in legs
            if amount > 0
        ]
        moved = await self._engine.move_ride(
            tx,
            ride,
            RideStatus.CAPTURING,
            now,
            driver=driver.canonical,
            final_fare_idr=split.driver_payout_idr + split.platform_fee_idr,
            platform_fee_idr=split.platform_fee_idr,
            driver_payout_idr=split.driver_payout_idr,
            refund_idr=split.refund_idr,
            settle_transaction=capture.id,
        )
        if moved is None:  # a concurrent capture or void got there first
            raise WalletError(Reason.INVALID_STATE, "the ride payment changed meanwhile")
        await self._ops.insert(tx, capture, attempts, now)
        return ride_operation(ride_id), attempts

    async def void(
        self, request: Request, ride_id: str, reason: str, *, timeout: float | None
    ) -> RidePayment:
        async def prepare() -> Create:
            ride = await self._ride_in(ride_id, RideStatus.AUTHORIZED, "voided")

            async def create(tx: DbTx, now: float) -> Created:
                await _refuse_frozen_hold(tx, ride)
                created = await self._start_void(tx, now, ride, reason)
                if created is None:  # a concurrent capture or void got there first
                    raise WalletError(Reason.INVALID_STATE, "the ride payment changed meanwhile")
                return created

            return create

        return await self._answer(await self._ops.run(request, prepare, timeout=timeout))

    async def expire_holds(self, *, batch: int = 50) -> int:
        """Void holds past their lifetime (the sweeper); how many were started."""
        started = 0
        for ride in await expired_holds(self._ops.db, self._engine.now(), batch):
            created = await self._expire(ride)
            if created is not None:
                started += 1
                log.info("ride %s: hold expired, returning it", ride.ride_id)
                await self._ops.send_all(created[1], timeout=None)
        return started

    async def _expire(self, ride: RidePayment) -> Created | None:
        async def start(tx: DbTx) -> Created | None:
            if await _hold_frozen(tx, ride):
                return None  # left AUTHORIZED until an operator resolves its hold
            return await self._start_void(tx, self._engine.now(), ride, EXPIRED_REASON)

        return await self._ops.db.run(start)

    async def _start_void(
        self, tx: DbTx, now: float, ride: RidePayment, reason: str
    ) -> Created | None:
        """Move ``ride`` to VOIDING with the leg that returns its hold (None: it moved)."""
        passenger = parse_mobile_number(ride.passenger)
        void = self._ops.new_transaction(
            TxType.RIDE_VOID, passenger, ride.held_amount_idr, now, ride_id=ride.ride_id
        )
        moved = await self._engine.move_ride(
            tx,
            ride,
            RideStatus.VOIDING,
            now,
            reason=reason[:200],
            refund_idr=ride.held_amount_idr,
            settle_transaction=void.id,
        )
        if moved is None:
            return None
        attempt = self._engine.new_attempt(
            kaspro_request_id("ride", ride.ride_id, VOID),
            void,
            VOID,
            "p2p",
            {
                "source": account_party(self._ops.accounts.escrow),
                "destination": subscriber_party(passenger),
                "amount": ride.held_amount_idr,
                "note": f"ride {ride.ride_id} void",
            },
            money.movement(money.ESCROW, money.subscriber(passenger), ride.held_amount_idr),
        )
        await self._ops.insert(tx, void, [attempt], now)
        return ride_operation(ride.ride_id), [attempt]

    async def ride(self, ride_id: str) -> RidePayment:
        found = await load_ride(self._ops.db, ride_id)
        if found is None:
            raise WalletError(Reason.RIDE_PAYMENT_NOT_FOUND, "no ride payment for this ride_id")
        return found

    async def _answer(self, operation_id: str) -> RidePayment:
        """The ride's current state, or the refusal its hold ended in."""
        ride = await self.ride(operation_id.removeprefix("ride:"))
        if ride.status is RideStatus.FAILED:
            hold = await self._ops.transaction(ride.hold_transaction)
            raise failure(hold.failure_reason)
        if ride.status is RideStatus.AUTHORIZING and await has_unanswered_attempt(
            self._ops.db, ride.hold_transaction
        ):
            raise unknown_outcome(ride.hold_transaction)
        return ride

    async def _ride_in(self, ride_id: str, status: RideStatus, verb: str) -> RidePayment:
        ride = await self.ride(ride_id)
        if ride.status is not status:
            raise WalletError(
                Reason.INVALID_STATE,
                f"a ride payment can be {verb} only when {status.value}; it is {ride.status.value}",
            )
        return ride


async def _hold_frozen(tx: DbTx, ride: RidePayment) -> bool:
    """Whether KasPro's answers about the ride's hold disagree (frozen for review): money
    KasPro may never have moved into escrow must not be paid out of it."""
    hold = await load_transaction(tx, ride.hold_transaction)
    return hold is not None and bool(hold.frozen)


async def _refuse_frozen_hold(tx: DbTx, ride: RidePayment) -> None:
    if await _hold_frozen(tx, ride):
        raise WalletError(
            Reason.INVALID_STATE,
            "the ride's hold is frozen for review (KasPro's answers about it disagree): "
            "it can be captured or voided once an operator resolved it",
        )
