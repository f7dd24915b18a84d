"""Money use cases: transfers, tips, ride payments (hold, capture, void, expiry), cash-out,
QRIS, and top-ups told by KasPro.

Every use case has the same recovery points (see docs/money.md):
1. look up the idempotency key, and hold it in this process while the request runs;
2. check what can be checked before KasPro (linked wallet, limits) — a refusal here is
   a decision and is stored under the key;
3. create the operation: transaction, ride payment, attempts with their references,
   events, and the key (decided: it names the operation) — one database transaction;
4. send the attempts and apply each answer through ``Engine.apply``;
5. answer with the operation's current state. A retry with the same key skips to 5.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

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
from wallet_service.flows.onboarding import Onboarding
from wallet_service.kaspro import kaspro_request_id
from wallet_service.store import idempotency
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
class Request:
    """Who asked for what: the idempotency key and the request's fingerprint."""

    caller: str
    method: str
    request_id: str
    request_hash: bytes

    @property
    def key(self) -> idempotency.Key:
        return idempotency.Key(self.caller, self.method, self.request_id)


@dataclass(frozen=True)
class BankAccount:
    bank_code: str
    account_number: str
    account_name: str


# A new operation's transaction and the attempts to send for it.
Created = tuple[Transaction, list[Attempt]]
T = TypeVar("T")


class _KeyTaken(Exception):
    """The key was decided by another writer of the database after ``look`` (one process
    holds its running keys in memory, so only a second process could): the creation
    rolls back, and the request answers with what the key says. A safety net."""

    def __init__(self, claim: idempotency.Claim) -> None:
        super().__init__(claim.kind.value)
        self.claim = claim


class Payments:
    def __init__(
        self,
        engine: Engine,
        onboarding: Onboarding,
        accounts: PlatformAccounts,
        limits: Limits,
    ) -> None:
        self._engine = engine
        self._db = engine.db
        self._onboarding = onboarding
        self._accounts = accounts
        self._limits = limits
        # Idempotency keys of the money requests running in this process, with their
        # request hashes (see _keyed).
        self._running: dict[idempotency.Key, bytes] = {}

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
        async def checks() -> None:
            await self._require_linked(source)
            await self._require_room(target, amount_idr, timeout=timeout)
            await self._require_linked(target, role="receiving")
            await self._require_monthly_room(source, amount_idr)

        create = self._subscriber_p2p(
            TxType.TRANSFER, "transfer", source, target, amount_idr, note=note, kaspro_note=note
        )
        return await self._run_transaction(request, checks, create, timeout=timeout)

    async def tip(
        self, request: Request, ride_id: str, amount_idr: int, *, timeout: float | None
    ) -> Transaction:
        ride = await rows.load_ride(self._db, ride_id)
        if ride is None:
            raise WalletError(Reason.RIDE_PAYMENT_NOT_FOUND, "no ride payment for this ride_id")
        passenger = _number(ride.passenger)
        # A captured ride always has its driver; before capture there is no one to tip.
        driver = _number(ride.driver) if ride.driver else passenger

        async def checks() -> None:
            if ride.status is not RideStatus.CAPTURED:
                raise WalletError(Reason.INVALID_STATE, "tips are paid on captured rides only")
            if amount_idr > self._limits.tip_cap_idr:
                raise WalletError(
                    Reason.LIMIT_EXCEEDED, f"a tip may be at most {self._limits.tip_cap_idr} IDR"
                )
            await self._require_linked(passenger)
            await self._require_room(driver, amount_idr, timeout=timeout)

        create = self._subscriber_p2p(
            TxType.TIP,
            "tip",
            passenger,
            driver,
            amount_idr,
            ride_id=ride_id,
            kaspro_note=f"tip {ride_id}",
        )
        return await self._run_transaction(request, checks, create, timeout=timeout)

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
        async def checks() -> None:
            if not self._limits.min_cash_out_idr <= amount_idr <= self._limits.max_cash_out_idr:
                raise WalletError(
                    Reason.LIMIT_EXCEEDED,
                    f"a cash-out must be {self._limits.min_cash_out_idr}-"
                    f"{self._limits.max_cash_out_idr} IDR",
                )
            await self._require_linked(mobile)
            await self._require_monthly_room(mobile, amount_idr)

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
            return await self._insert(
                tx,
                t,
                [
                    self._engine.new_attempt(
                        kaspro_request_id("cash-out", t.id),
                        t,
                        "cash-out",
                        endpoint,
                        {**args, "amount": amount_idr},
                        money.movement(money.subscriber(mobile), sink, amount_idr),
                    )
                ],
                now,
            )

        return await self._run_transaction(request, checks, create, timeout=timeout)

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
        async def checks() -> None:
            await self._require_linked(mobile)
            await self._require_monthly_room(mobile, amount_idr)

        async def create(tx: DbTx, now: float) -> Created:
            t = self._transaction(
                TxType.QRIS_PAYMENT,
                mobile,
                amount_idr,
                now,
                details={"merchant_name": merchant_name},
            )
            return await self._insert(
                tx,
                t,
                [
                    self._engine.new_attempt(
                        kaspro_request_id("qris", t.id),
                        t,
                        "qris",
                        "qris",
                        {"mobile": mobile.canonical, "payload": payload, "amount": amount_idr},
                        money.movement(money.subscriber(mobile), money.EXTERNAL_QRIS, amount_idr),
                    )
                ],
                now,
            )

        return await self._run_transaction(request, checks, create, timeout=timeout)

    async def authorize_ride(
        self,
        request: Request,
        ride_id: str,
        passenger: MobileNumber,
        amount_idr: int,
        *,
        timeout: float | None,
    ) -> RidePayment:
        async def run() -> idempotency.Claim:
            try:
                await self._require_linked(passenger)
                await self._require_monthly_room(passenger, amount_idr)
            except WalletError as exc:
                return await self._refuse(request, exc)
            try:
                attempt = await self._create_hold(request, ride_id, passenger, amount_idr)
            except WalletError as exc:
                return await self._refuse(request, exc)
            except _KeyTaken as taken:
                return taken.claim
            await self._send_all([attempt], timeout=timeout)
            return _made(rows.ride_operation(ride_id))

        return await self._keyed(request, run, self._replay_ride)

    async def _create_hold(
        self, request: Request, ride_id: str, passenger: MobileNumber, amount_idr: int
    ) -> Attempt:
        async with self._db.transaction() as tx:
            if await rows.load_ride(tx, ride_id) is not None:
                raise WalletError(
                    Reason.IDEMPOTENCY_KEY_REUSED,
                    "this ride already has a payment, authorized by another request",
                )
            now = self._engine.now()
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
            await self._record(tx, request, rows.ride_operation(ride_id))
            return attempt

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
        async def run() -> idempotency.Claim:
            try:
                ride = await self._ride_in(ride_id, RideStatus.AUTHORIZED, "captured")
                try:
                    split = money.split_capture(
                        ride.held_amount_idr, final_fare_idr, platform_fee_idr
                    )
                except ValueError as exc:
                    raise WalletError(Reason.INVALID_STATE, str(exc)) from None
                if split.driver_payout_idr:
                    await self._require_room(driver, split.driver_payout_idr, timeout=timeout)
                # Payouts go to drivers who proved their number, like every money receiver
                # (checked after KasPro's NOT_FOUND, which says more about a stranger).
                await self._require_linked(driver, role="driver")
            except WalletError as exc:
                return await self._refuse(request, exc)
            try:
                attempts = await self._create_capture(request, ride, driver, split)
            except WalletError as exc:  # a concurrent capture or void got there first
                return await self._refuse(request, exc)
            except _KeyTaken as taken:
                return taken.claim
            await self._send_all(attempts, timeout=timeout)
            return _made(rows.ride_operation(ride_id))

        return await self._keyed(request, run, self._replay_ride)

    async def _create_capture(
        self, request: Request, ride: RidePayment, driver: MobileNumber, split: money.Capture
    ) -> list[Attempt]:
        ride_id = ride.ride_id
        passenger = _number(ride.passenger)
        escrow = account_party(self._accounts.escrow)
        async with self._db.transaction() as tx:
            now = self._engine.now()
            capture = self._transaction(
                TxType.RIDE_CAPTURE,
                passenger,
                ride.held_amount_idr,
                now,
                counterparty=driver.canonical,
                ride_id=ride_id,
            )
            legs = [
                (
                    PAYOUT,
                    split.driver_payout_idr,
                    subscriber_party(driver),
                    money.subscriber(driver),
                ),
                (
                    FEE,
                    split.platform_fee_idr,
                    account_party(self._accounts.corporate),
                    money.CORPORATE,
                ),
                (
                    REFUND,
                    split.refund_idr,
                    subscriber_party(passenger),
                    money.subscriber(passenger),
                ),
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
            await self._record(tx, request, rows.ride_operation(ride_id))
            return attempts

    async def void_ride(
        self, request: Request, ride_id: str, reason: str, *, timeout: float | None
    ) -> RidePayment:
        async def run() -> idempotency.Claim:
            try:
                ride = await self._ride_in(ride_id, RideStatus.AUTHORIZED, "voided")
            except WalletError as exc:
                return await self._refuse(request, exc)
            try:
                attempt = await self._start_void(ride, reason, request)
            except _KeyTaken as taken:
                return taken.claim
            if attempt is None:
                return await self._refuse(
                    request,
                    WalletError(Reason.INVALID_STATE, "the ride payment changed meanwhile"),
                )
            await self._send_all([attempt], timeout=timeout)
            return _made(rows.ride_operation(ride_id))

        return await self._keyed(request, run, self._replay_ride)

    async def expire_holds(self, *, batch: int = 50) -> int:
        """Void holds past their lifetime (the sweeper); how many were started."""
        started = 0
        for ride in await rows.expired_holds(self._db, self._engine.now(), batch):
            attempt = await self._start_void(ride, EXPIRED_REASON, None)
            if attempt is not None:
                started += 1
                log.info("ride %s: hold expired, returning it", ride.ride_id)
                await self._send_all([attempt], timeout=None)
        return started

    async def _start_void(
        self, ride: RidePayment, reason: str, request: Request | None
    ) -> Attempt | None:
        passenger = _number(ride.passenger)
        async with self._db.transaction() as tx:
            now = self._engine.now()
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
            if request is not None:
                await self._record(tx, request, rows.ride_operation(ride.ride_id))
            return attempt

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
    ) -> Callable[[DbTx, float], Awaitable[Created]]:
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
        return transaction, attempts

    async def _run_transaction(
        self,
        request: Request,
        checks: Callable[[], Awaitable[None]],
        create: Callable[[DbTx, float], Awaitable[Created]],
        *,
        timeout: float | None,
    ) -> Transaction:
        async def run() -> idempotency.Claim:
            try:
                await checks()
            except WalletError as exc:
                return await self._refuse(request, exc)
            try:
                async with self._db.transaction() as tx:
                    transaction, attempts = await create(tx, self._engine.now())
                    await self._record(tx, request, transaction.id)
            except _KeyTaken as taken:
                return taken.claim
            await self._send_all(attempts, timeout=timeout)
            return _made(transaction.id)

        return await self._keyed(request, run, self._replay_transaction)

    async def _send_all(self, attempts: list[Attempt], *, timeout: float | None) -> None:
        # Legs go one after the other: each is booked before the next is sent, so a
        # crash leaves a clear point to resume from (the reconciler sends the rest).
        for attempt in attempts:
            await self._engine.send(attempt, timeout=timeout)

    async def _keyed(
        self,
        request: Request,
        run: Callable[[], Awaitable[idempotency.Claim]],
        answer: Callable[[idempotency.Claim], Awaitable[T]],
    ) -> T:
        """Run a money request once per idempotency key (rule 1) and answer as a retry
        would be answered: with the operation's current state, or the stored refusal.

        While the request runs its key is held in this process's memory, so a duplicate
        meanwhile is REQUEST_IN_PROGRESS (IDEMPOTENCY_KEY_REUSED for another request)
        and makes no KasPro call. The key's row is written once, already decided, in the
        database transaction that creates the operation (``_record``) or with the
        refusal (``_refuse``): a crash before leaves nothing, so a retry runs afresh; a
        crash after leaves the operation, which the workers finish and a retry reports.
        """
        key = request.key
        held = self._running.get(key)
        if held is not None:
            raise _reused() if held != request.request_hash else _in_progress()
        self._running[key] = request.request_hash
        try:
            claim = await idempotency.look(self._db, key, request.request_hash, self._engine.now())
            if claim is None:
                claim = await run()
        finally:
            del self._running[key]
        if claim.kind is idempotency.ClaimKind.REUSED:
            raise _reused()
        if claim.kind is idempotency.ClaimKind.IN_PROGRESS:
            raise _in_progress()
        return await answer(claim)

    async def _record(self, tx: DbTx, request: Request, operation_id: str) -> None:
        """Store the key with the operation it created, in the transaction creating it."""
        claim = await self._decide(tx, request, operation_id=operation_id, response=None)
        if claim.kind is not idempotency.ClaimKind.NEW:
            raise _KeyTaken(claim)

    async def _decide(
        self, tx: DbTx, request: Request, *, operation_id: str | None, response: bytes | None
    ) -> idempotency.Claim:
        return await idempotency.record_in(
            tx,
            request.key,
            request.request_hash,
            self._engine.now(),
            operation_id=operation_id,
            response=response,
        )

    async def _refuse(self, request: Request, error: WalletError) -> idempotency.Claim:
        """Store a refusal under the key and raise it; KasPro being unavailable is not a
        decision, so nothing is stored (a retry runs again). Returns only when the key
        turned out decided already: the claim to answer with instead."""
        if error.reason is Reason.PROVIDER_UNAVAILABLE:
            raise error
        async with self._db.transaction() as tx:
            claim = await self._decide(
                tx, request, operation_id=None, response=_encode_refusal(error)
            )
        if claim.kind is idempotency.ClaimKind.NEW:
            raise error
        return claim

    async def _replay_transaction(self, claim: idempotency.Claim) -> Transaction:
        if claim.operation_id is None:
            raise _stored_refusal(claim.stored)
        return await self._render_transaction(claim.operation_id)

    async def _replay_ride(self, claim: idempotency.Claim) -> RidePayment:
        if claim.operation_id is None:
            raise _stored_refusal(claim.stored)
        return await self._render_ride(claim.operation_id.removeprefix("ride:"))

    async def _render_transaction(self, transaction_id: str) -> Transaction:
        """The operation's current state, or the refusal it ended in."""
        transaction = await self.transaction(transaction_id)
        if transaction.status in (TxStatus.PENDING, TxStatus.PROCESSING):
            if await self._outcome_unknown(transaction.id):
                raise _unknown(transaction.id)
        elif transaction.status is TxStatus.FAILED:
            raise _failure(transaction.failure_reason, transaction.failure_message)
        return transaction

    async def _render_ride(self, ride_id: str) -> RidePayment:
        ride = await self.ride(ride_id)
        if ride.status is RideStatus.FAILED:
            hold = await self.transaction(ride.hold_transaction)
            raise _failure(hold.failure_reason, hold.failure_message)
        if ride.status is RideStatus.AUTHORIZING and await self._outcome_unknown(
            ride.hold_transaction
        ):
            raise _unknown(ride.hold_transaction)
        return ride

    async def _outcome_unknown(self, transaction_id: str) -> bool:
        return await rows.has_unanswered_attempt(self._db, transaction_id)

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


def _made(operation_id: str) -> idempotency.Claim:
    """What a retry finds under the key of a request that created ``operation_id``."""
    return idempotency.Claim(idempotency.ClaimKind.REPLAY, None, operation_id)


def _reused() -> WalletError:
    return WalletError(
        Reason.IDEMPOTENCY_KEY_REUSED,
        "this request_id was used for a different request: use a new request_id",
    )


def _in_progress() -> WalletError:
    return WalletError(
        Reason.REQUEST_IN_PROGRESS,
        "a request with this request_id is still running: retry shortly",
        retry_after_seconds=1.0,
    )


def _number(canonical: str) -> MobileNumber:
    return MobileNumber(canonical[2:])


_FAILURE_MESSAGES = {
    Reason.INSUFFICIENT_FUNDS: "the paying wallet's balance is too low",
    Reason.LIMIT_EXCEEDED: "KasPro refused: a limit would be exceeded",
    Reason.CUSTOMER_NOT_FOUND: "KasPro has no customer with this number",
}


def _failure(reason_text: str, message: str) -> WalletError:
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


def _encode_refusal(error: WalletError) -> bytes:
    return f"{error.reason.value}\n{error.message}".encode()


def _stored_refusal(stored: bytes | None) -> WalletError:
    if not stored:
        return WalletError(Reason.INVALID_STATE, "this request was refused before")
    reason, _, message = stored.decode().partition("\n")
    return WalletError(Reason(reason), message)
