"""Money use cases: transfers, tips, ride payments (hold, capture, void, expiry), cash-out,
QRIS, and top-ups told by KasPro.

Every use case has the same recovery points (see docs/money.md):
1. claim the idempotency key (``flows/idempotency.py``);
2. check what can be checked before KasPro (linked wallet, limits) — a refusal here is
   a decision and is stored under the key;
3. create the operation — transaction, ride payment, attempts with their references,
   events — and attach it to the key, in one database transaction;
4. send the attempts and apply each answer through ``Engine.apply``;
5. answer with the operation's current state. A retry with the same key skips to 5.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from wallet_service.domain import money
from wallet_service.domain.account import AccountType
from wallet_service.domain.errors import Reason, WalletError
from wallet_service.domain.money import Limits, RideStatus, TxStatus, TxType
from wallet_service.domain.phone import MobileNumber
from wallet_service.domain.records import Attempt, RidePayment, Transaction
from wallet_service.flows.engine import (
    EXPIRED_REASON,
    FEE,
    HOLD,
    PAYOUT,
    REFUND,
    RIDE_PAYMENT_UPDATED,
    VOID,
    Engine,
    account_party,
    subscriber_party,
)
from wallet_service.flows.idempotency import Decision, Idempotency, Request
from wallet_service.flows.onboarding import Onboarding
from wallet_service.kaspro import kaspro_request_id
from wallet_service.store import money as rows
from wallet_service.store import onboarding as customer_rows
from wallet_service.store.database import Transaction as DbTx

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PlatformAccounts:
    """KasPro account numbers of the platform's own wallets."""

    escrow: str = "888000000000001"
    corporate: str = "888000000000003"


@dataclass(frozen=True)
class BankAccount:
    bank_code: str
    account_number: str
    account_name: str


# A new operation's id (a transaction's, or ``ride:<ride id>``) and its attempts to send.
Created = tuple[str, list[Attempt]]
# How to create an operation, once the checks passed: inside the creating transaction.
Create = Callable[[DbTx, float], Awaitable[Created]]


class Payments:
    def __init__(
        self,
        engine: Engine,
        onboarding: Onboarding,
        idempotency: Idempotency,
        accounts: PlatformAccounts,
        limits: Limits,
    ) -> None:
        self._engine = engine
        self._db = engine.db
        self._onboarding = onboarding
        self._idempotency = idempotency
        self._accounts = accounts
        self._limits = limits

    # Use cases.

    async def transfer(
        self,
        request: Request,
        source: MobileNumber,
        target: MobileNumber,
        amount_idr: int,
        note: str,
        *,
        timeout: float | None,
    ) -> Transaction:
        async def prepare() -> Create:
            await self._require_linked(source)
            await self._require_room(target, amount_idr, timeout=timeout)
            await self._require_linked(target, role="receiving")
            await self._require_monthly_room(source, amount_idr)
            return self._subscriber_p2p(
                TxType.TRANSFER, "transfer", source, target, amount_idr, note=note, kaspro_note=note
            )

        return await self._answer_transaction(await self._run(request, prepare, timeout=timeout))

    async def tip(
        self, request: Request, ride_id: str, amount_idr: int, *, timeout: float | None
    ) -> Transaction:
        ride = await self.ride(ride_id)
        passenger = _number(ride.passenger)
        # A captured ride always has its driver; before capture there is no one to tip.
        driver = _number(ride.driver) if ride.driver else passenger

        async def prepare() -> Create:
            if ride.status is not RideStatus.CAPTURED:
                raise WalletError(Reason.INVALID_STATE, "tips are paid on captured rides only")
            if amount_idr > self._limits.tip_cap_idr:
                raise WalletError(
                    Reason.LIMIT_EXCEEDED, f"a tip may be at most {self._limits.tip_cap_idr} IDR"
                )
            await self._require_linked(passenger)
            await self._require_room(driver, amount_idr, timeout=timeout)
            return self._subscriber_p2p(
                TxType.TIP,
                "tip",
                passenger,
                driver,
                amount_idr,
                ride_id=ride_id,
                kaspro_note=f"tip {ride_id}",
            )

        return await self._answer_transaction(await self._run(request, prepare, timeout=timeout))

    async def cash_out(
        self,
        request: Request,
        mobile: MobileNumber,
        amount_idr: int,
        *,
        bank: BankAccount | None,
        outlet: str | None,
        timeout: float | None,
    ) -> Transaction:
        async def prepare() -> Create:
            if not self._limits.min_cash_out_idr <= amount_idr <= self._limits.max_cash_out_idr:
                raise WalletError(
                    Reason.LIMIT_EXCEEDED,
                    f"a cash-out must be {self._limits.min_cash_out_idr}-"
                    f"{self._limits.max_cash_out_idr} IDR",
                )
            await self._require_linked(mobile)
            await self._require_monthly_room(mobile, amount_idr)
            return create

        async def create(tx: DbTx, now: float) -> Created:
            if bank is not None:
                details: dict[str, Any] = {
                    "bank_code": bank.bank_code,
                    "account_number": bank.account_number,
                    "account_name": bank.account_name,
                }
                endpoint, sink = "bank", money.EXTERNAL_BANK
                args: dict[str, Any] = {"mobile": mobile.canonical, **details}
            else:
                assert outlet is not None
                details = {"outlet": outlet}
                endpoint, sink = "retail", money.EXTERNAL_RETAIL
                args = {"mobile": mobile.canonical, "channel": outlet}
            t = self._transaction(TxType.CASH_OUT, mobile, amount_idr, now, details=details)
            attempt = self._engine.new_attempt(
                kaspro_request_id("cash-out", t.id),
                t,
                "cash-out",
                endpoint,
                {**args, "amount": amount_idr},
                money.movement(money.subscriber(mobile), sink, amount_idr),
            )
            return await self._insert(tx, t, [attempt], now)

        return await self._answer_transaction(await self._run(request, prepare, timeout=timeout))

    async def pay_qris(
        self,
        request: Request,
        mobile: MobileNumber,
        payload: str,
        merchant_name: str,
        amount_idr: int,
        *,
        timeout: float | None,
    ) -> Transaction:
        async def prepare() -> Create:
            await self._require_linked(mobile)
            await self._require_monthly_room(mobile, amount_idr)
            return create

        async def create(tx: DbTx, now: float) -> Created:
            t = self._transaction(
                TxType.QRIS_PAYMENT,
                mobile,
                amount_idr,
                now,
                details={"merchant_name": merchant_name},
            )
            attempt = self._engine.new_attempt(
                kaspro_request_id("qris", t.id),
                t,
                "qris",
                "qris",
                {"mobile": mobile.canonical, "payload": payload, "amount": amount_idr},
                money.movement(money.subscriber(mobile), money.EXTERNAL_QRIS, amount_idr),
            )
            return await self._insert(tx, t, [attempt], now)

        return await self._answer_transaction(await self._run(request, prepare, timeout=timeout))

    async def authorize_ride(
        self,
        request: Request,
        ride_id: str,
        passenger: MobileNumber,
        amount_idr: int,
        *,
        timeout: float | None,
    ) -> RidePayment:
        async def prepare() -> Create:
            await self._require_linked(passenger)
            await self._require_monthly_room(passenger, amount_idr)
            return create

        async def create(tx: DbTx, now: float) -> Created:
            if await rows.load_ride(tx, ride_id) is not None:
                raise WalletError(
                    Reason.IDEMPOTENCY_KEY_REUSED,
                    "this ride already has a payment, authorized by another request",
                )
            hold = self._transaction(TxType.RIDE_HOLD, passenger, amount_idr, now, ride_id=ride_id)
            ride = RidePayment(
                ride_id=ride_id,
                status=RideStatus.AUTHORIZING,
                passenger=passenger.canonical,
                held_amount_idr=amount_idr,
                expire_time=now + self._limits.hold_lifetime_seconds,
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
                    "destination": self._accounts.escrow,
                },
                money.movement(money.subscriber(passenger), money.ESCROW, amount_idr),
            )
            await self._insert(tx, hold, [attempt], now)
            await rows.insert_ride(tx, ride)
            await rows.append_event(tx, RIDE_PAYMENT_UPDATED, ride_id, rows.snapshot(ride), now)
            return rows.ride_operation(ride_id), [attempt]

        return await self._answer_ride(await self._run(request, prepare, timeout=timeout))

    async def capture_ride(
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
                await self._require_room(driver, split.driver_payout_idr, timeout=timeout)
            # Payouts go to drivers who proved their number, like every money receiver
            # (checked after KasPro's NOT_FOUND, which says more about a stranger).
            await self._require_linked(driver, role="driver")
            return lambda tx, now: self._create_capture(tx, now, ride, driver, split)

        return await self._answer_ride(await self._run(request, prepare, timeout=timeout))

    async def _create_capture(
        self, tx: DbTx, now: float, ride: RidePayment, driver: MobileNumber, split: money.Capture
    ) -> Created:
        ride_id = ride.ride_id
        passenger = _number(ride.passenger)
        escrow = account_party(self._accounts.escrow)
        capture = self._transaction(
            TxType.RIDE_CAPTURE,
            passenger,
            ride.held_amount_idr,
            now,
            counterparty=driver.canonical,
            ride_id=ride_id,
        )
        legs = [
            (PAYOUT, split.driver_payout_idr, subscriber_party(driver), money.subscriber(driver)),
            (FEE, split.platform_fee_idr, account_party(self._accounts.corporate), money.CORPORATE),
            (REFUND, split.refund_idr, subscriber_party(passenger), money.subscriber(passenger)),
        ]
        attempts = [
            self._engine.new_attempt(
                kaspro_request_id("ride", ride_id, leg),
                capture,
                leg,
                "p2p",
                {
                    "source": escrow,
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
        await self._insert(tx, capture, attempts, now)
        return rows.ride_operation(ride_id), attempts

    async def void_ride(
        self, request: Request, ride_id: str, reason: str, *, timeout: float | None
    ) -> RidePayment:
        async def prepare() -> Create:
            ride = await self._ride_in(ride_id, RideStatus.AUTHORIZED, "voided")

            async def create(tx: DbTx, now: float) -> Created:
                created = await self._start_void(tx, now, ride, reason)
                if created is None:  # a concurrent capture or void got there first
                    raise WalletError(Reason.INVALID_STATE, "the ride payment changed meanwhile")
                return created

            return create

        return await self._answer_ride(await self._run(request, prepare, timeout=timeout))

    async def expire_holds(self, *, batch: int = 50) -> int:
        """Void holds past their lifetime (the sweeper); how many were started."""
        started = 0
        for ride in await rows.expired_holds(self._db, self._engine.now(), batch):
            async with self._db.transaction() as tx:
                created = await self._start_void(tx, self._engine.now(), ride, EXPIRED_REASON)
            if created is not None:
                started += 1
                log.info("ride %s: hold expired, returning it", ride.ride_id)
                await self._send_all(created[1], timeout=None)
        return started

    async def _start_void(
        self, tx: DbTx, now: float, ride: RidePayment, reason: str
    ) -> Created | None:
        """Move ``ride`` to VOIDING with the leg that returns its hold; None if it moved."""
        passenger = _number(ride.passenger)
        void = self._transaction(
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
                "source": account_party(self._accounts.escrow),
                "destination": subscriber_party(passenger),
                "amount": ride.held_amount_idr,
                "note": f"ride {ride.ride_id} void",
            },
            money.movement(money.ESCROW, money.subscriber(passenger), ride.held_amount_idr),
        )
        await self._insert(tx, void, [attempt], now)
        return rows.ride_operation(ride.ride_id), [attempt]

    async def record_top_up(
        self,
        kaspro_reference: str,
        mobile: MobileNumber,
        amount_idr: int,
        *,
        driver: bool,
        channel: str,
    ) -> bool:
        """A credited top-up told by KasPro, recorded once per KasPro reference; whether
        this call recorded it (False: it was recorded before)."""
        async with self._db.transaction() as tx:
            if await rows.topup_exists(tx, kaspro_reference) is not None:
                return False
            now = self._engine.now()
            type_ = TxType.DRIVER_DEPOSIT if driver else TxType.TOP_UP
            source = money.EXTERNAL_VA if channel == "VA" else money.EXTERNAL_RETAIL
            t = Transaction(
                id=rows.new_id("txn"),
                type=type_,
                status=TxStatus.SUCCEEDED,
                amount_idr=amount_idr,
                mobile_number=mobile.canonical,
                details={"channel": channel},
                kaspro_reference=kaspro_reference,
                create_time=now,
                update_time=now,
            )
            await rows.insert_transaction(tx, t)
            await rows.book(
                tx,
                t.id,
                f"topup:{kaspro_reference}",
                money.movement(source, money.subscriber(mobile), amount_idr),
                now,
            )
            await self._engine.event(tx, t, now)
            return True

    # Reads.

    async def transaction(self, transaction_id: str) -> Transaction:
        found = await rows.load_transaction(self._db, transaction_id)
        if found is None:
            raise WalletError(Reason.TRANSACTION_NOT_FOUND, "no transaction with this id")
        return found

    async def ride(self, ride_id: str) -> RidePayment:
        found = await rows.load_ride(self._db, ride_id)
        if found is None:
            raise WalletError(Reason.RIDE_PAYMENT_NOT_FOUND, "no ride payment for this ride_id")
        return found

    # Plumbing.

    def _subscriber_p2p(
        self,
        type_: TxType,
        leg: str,
        source: MobileNumber,
        target: MobileNumber,
        amount_idr: int,
        *,
        kaspro_note: str,
        **fields: Any,
    ) -> Create:
        """How to create a one-leg P2P transaction between two subscribers."""

        async def create(tx: DbTx, now: float) -> Created:
            t = self._transaction(
                type_, source, amount_idr, now, counterparty=target.canonical, **fields
            )
            attempt = self._engine.new_attempt(
                kaspro_request_id(leg, t.id),
                t,
                leg,
                "p2p",
                {
                    "source": subscriber_party(source),
                    "destination": subscriber_party(target),
                    "amount": amount_idr,
                    "note": kaspro_note,
                },
                money.movement(money.subscriber(source), money.subscriber(target), amount_idr),
            )
            return await self._insert(tx, t, [attempt], now)

        return create

    def _transaction(
        self, type_: TxType, mobile: MobileNumber, amount_idr: int, now: float, **fields: Any
    ) -> Transaction:
        return Transaction(
            id=rows.new_id("txn"),
            type=type_,
            status=TxStatus.PENDING,
            amount_idr=amount_idr,
            mobile_number=mobile.canonical,
            create_time=now,
            update_time=now,
            **fields,
        )

    async def _insert(
        self, tx: DbTx, transaction: Transaction, attempts: list[Attempt], now: float
    ) -> Created:
        await rows.insert_transaction(tx, transaction)
        for attempt in attempts:
            await rows.insert_attempt(tx, attempt)
        await self._engine.event(tx, transaction, now)
        return transaction.id, attempts

    async def _run(
        self, request: Request, prepare: Callable[[], Awaitable[Create]], *, timeout: float | None
    ) -> str:
        """Steps 1-4 of a money request (see the module's docstring): the operation's id.
        ``prepare`` makes the checks (a refusal is stored under the key) and says how to
        create the operation."""

        async def work() -> str:
            create = await prepare()
            async with self._db.transaction() as tx:
                operation_id, attempts = await create(tx, self._engine.now())
                await self._idempotency.attach(tx, request, operation_id)
            await self._send_all(attempts, timeout=timeout)
            return operation_id

        return await self._idempotency.run(request, work, keep=_nothing, replay=_operation)

    async def _send_all(self, attempts: list[Attempt], *, timeout: float | None) -> None:
        # Legs go one after the other: each is booked before the next is sent, so a
        # crash leaves a clear point to resume from (the reconciler sends the rest).
        for attempt in attempts:
            await self._engine.send(attempt, timeout=timeout)

    async def _answer_transaction(self, transaction_id: str) -> Transaction:
        """The operation's current state, or the refusal it ended in."""
        transaction = await self.transaction(transaction_id)
        if transaction.status in (TxStatus.PENDING, TxStatus.PROCESSING):
            if await rows.has_unanswered_attempt(self._db, transaction.id):
                raise _unknown(transaction.id)
        elif transaction.status is TxStatus.FAILED:
            raise _failure(transaction.failure_reason)
        return transaction

    async def _answer_ride(self, operation_id: str) -> RidePayment:
        ride = await self.ride(operation_id.removeprefix("ride:"))
        if ride.status is RideStatus.FAILED:
            hold = await self.transaction(ride.hold_transaction)
            raise _failure(hold.failure_reason)
        if ride.status is RideStatus.AUTHORIZING and await rows.has_unanswered_attempt(
            self._db, ride.hold_transaction
        ):
            raise _unknown(ride.hold_transaction)
        return ride

    async def _ride_in(self, ride_id: str, status: RideStatus, verb: str) -> RidePayment:
        ride = await self.ride(ride_id)
        if ride.status is not status:
            raise WalletError(
                Reason.INVALID_STATE,
                f"a ride payment can be {verb} only when {status.value}; it is {ride.status.value}",
            )
        return ride

    async def _require_linked(self, mobile: MobileNumber, *, role: str = "paying") -> None:
        if await customer_rows.linked_at(self._db, mobile) is None:
            raise WalletError(
                Reason.WALLET_NOT_LINKED,
                f"the {role} wallet is not linked: verify it with an OTP",
                metadata={"wallet": role},
            )

    async def _require_room(
        self, receiver: MobileNumber, amount_idr: int, *, timeout: float | None
    ) -> None:
        """The receiver exists and the credit keeps it under its KYC tier's balance cap."""
        wallet = await self._onboarding.account(receiver, timeout=timeout)
        assert wallet.account is not None
        cap = (
            self._limits.premium_balance_cap_idr
            if wallet.account.account_type is AccountType.PREMIUM
            else self._limits.basic_balance_cap_idr
        )
        if wallet.account.balance.available_idr + amount_idr > cap:
            raise WalletError(
                Reason.LIMIT_EXCEEDED,
                f"the receiving wallet may hold at most {cap} IDR",
            )

    async def _require_monthly_room(self, mobile: MobileNumber, amount_idr: int) -> None:
        since = self._engine.now() - 30 * 86400
        volume = await rows.volume_since(self._db, money.subscriber(mobile), since)
        if volume + amount_idr > self._limits.monthly_volume_cap_idr:
            raise WalletError(
                Reason.LIMIT_EXCEEDED,
                f"at most {self._limits.monthly_volume_cap_idr} IDR may move in 30 days",
            )


def _nothing(operation_id: str) -> None:
    """A money request keeps no answer: the operation attached to its key is the answer."""


def _operation(decision: Decision) -> str:
    return decision.operation_id


def _number(canonical: str) -> MobileNumber:
    return MobileNumber(canonical[2:])


_FAILURE_MESSAGES = {
    Reason.INSUFFICIENT_FUNDS: "the paying wallet's balance is too low",
    Reason.LIMIT_EXCEEDED: "KasPro refused: a limit would be exceeded",
    Reason.CUSTOMER_NOT_FOUND: "KasPro has no customer with this number",
}


def _failure(reason_text: str) -> WalletError:
    """The refusal of an operation that failed with ``reason_text`` (failure_reason)."""
    reason = Reason(reason_text) if reason_text else Reason.PROVIDER_REJECTED
    return WalletError(reason, _FAILURE_MESSAGES.get(reason, "KasPro refused the payment"))


def _unknown(transaction_id: str) -> WalletError:
    return WalletError(
        Reason.PROVIDER_UNAVAILABLE,
        "KasPro's answer is not known yet; the service keeps asking. "
        "Retry with the same request_id to see the result",
        retry_after_seconds=2.0,
        metadata={"transaction_id": transaction_id},
    )
