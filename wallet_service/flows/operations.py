"""The idempotent money operation every money use case is built on.

Every money RPC has the same recovery points (docs/money.md):
1. claim the idempotency key (``flows/idempotency.py``);
2. check what can be checked before KasPro (linked wallet, limits) — a refusal here is
   a decision and is stored under the key;
3. create the operation — transaction, ride payment, attempts with their references,
   events — and attach it to the key, in one database transaction;
4. send the attempts and apply each answer through ``Engine.apply``;
5. answer with the operation's current state. A retry with the same key skips to 5.
``Operations.run`` does 1-4; a use case gives it its checks and how to create its
operation, then answers (5).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from wallet_service.domain import money
from wallet_service.domain.account import AccountType
from wallet_service.domain.errors import Reason, WalletError
from wallet_service.domain.money import Limits, TxStatus, TxType
from wallet_service.domain.phone import MobileNumber
from wallet_service.domain.records import Attempt, Transaction
from wallet_service.flows.engine import Engine
from wallet_service.flows.idempotency import Decision, Held, Idempotency, Request
from wallet_service.flows.onboarding import Onboarding
from wallet_service.store import onboarding as customer_rows
from wallet_service.store.attempts import has_unanswered_attempt, insert_attempt
from wallet_service.store.database import Transaction as DbTx
from wallet_service.store.ledger import volume_since
from wallet_service.store.transactions import insert_transaction, load_transaction, new_id


@dataclass(frozen=True)
class PlatformAccounts:
    """KasPro account numbers of the platform's own wallets."""

    escrow: str = "888000000000001"
    corporate: str = "888000000000003"


# A new operation's id (a transaction's, or ``ride:<ride id>``) and its attempts to send.
Created = tuple[str, list[Attempt]]
# How to create an operation, once the checks passed: inside the creating transaction.
Create = Callable[[DbTx, float], Awaitable[Created]]


class Operations:
    def __init__(
        self,
        engine: Engine,
        onboarding: Onboarding,
        idempotency: Idempotency,
        accounts: PlatformAccounts,
        limits: Limits,
    ) -> None:
        self.engine = engine
        self.db = engine.db
        self.accounts = accounts
        self.limits = limits
        self._onboarding = onboarding
        self._idempotency = idempotency

    async def run(
        self, request: Request, prepare: Callable[[], Awaitable[Create]], *, timeout: float | None
    ) -> str:
        """Steps 1-4 of a money request: the operation's id. ``prepare`` makes the
        checks (a refusal is stored under the key) and says how to create the operation."""

        async def work(held: Held) -> str:
            create = await prepare()

            async def create_attached(tx: DbTx) -> Created:
                operation_id, attempts = await create(tx, self.engine.now())
                await self._idempotency.attach(tx, held, operation_id)
                return operation_id, attempts

            # A key taken over meanwhile (its lease ended: another request runs it now)
            # refuses the attach: KeyTaken rolls the creation back, before any KasPro call.
            operation_id, attempts = await self.db.run(create_attached)
            await self.send_all(attempts, timeout=timeout)
            return operation_id

        return await self._idempotency.run(request, work, keep=_nothing, replay=_operation)

    async def send_all(self, attempts: list[Attempt], *, timeout: float | None) -> None:
        # Legs go one after the other: each is booked before the next is sent, so a
        # crash leaves a clear point to resume from (the reconciler sends the rest).
        for attempt in attempts:
            await self.engine.send(attempt, timeout=timeout)

    def new_transaction(
        self, type_: TxType, mobile: MobileNumber, amount_idr: int, now: float, **fields: Any
    ) -> Transaction:
        return Transaction(
            id=new_id("txn"),
            type=type_,
            status=TxStatus.PENDING,
            amount_idr=amount_idr,
            mobile_number=mobile.canonical,
            create_time=now,
            update_time=now,
            **fields,
        )

    async def insert(
        self, tx: DbTx, transaction: Transaction, attempts: list[Attempt], now: float
    ) -> Created:
        await insert_transaction(tx, transaction)
        for attempt in attempts:
            await insert_attempt(tx, attempt)
        await self.engine.event(tx, transaction, now)
        return transaction.id, attempts

    async def transaction(self, transaction_id: str) -> Transaction:
        found = await load_transaction(self.db, transaction_id)
        if found is None:
            raise WalletError(Reason.TRANSACTION_NOT_FOUND, "no transaction with this id")
        return found

    async def answer_transaction(self, transaction_id: str) -> Transaction:
        """The operation's current state, or the refusal it ended in (step 5)."""
        transaction = await self.transaction(transaction_id)
        if transaction.status in (TxStatus.PENDING, TxStatus.PROCESSING):
            if await has_unanswered_attempt(self.db, transaction.id):
                raise unknown_outcome(transaction.id)
        elif transaction.status is TxStatus.FAILED:
            raise failure(transaction.failure_reason)
        return transaction

    async def require_linked(self, mobile: MobileNumber, *, role: str = "paying") -> None:
        if await customer_rows.linked_at(self.db, mobile) is None:
            raise WalletError(
                Reason.WALLET_NOT_LINKED,
                f"the {role} wallet is not linked: verify it with an OTP",
                metadata={"wallet": role},
            )

    async def require_room(
        self, receiver: MobileNumber, amount_idr: int, *, timeout: float | None
    ) -> None:
        """The receiver exists and the credit keeps it under its KYC tier's balance cap."""
        wallet = await self._onboarding.account(receiver, timeout=timeout)
        assert wallet.account is not None
        cap = (
            self.limits.premium_balance_cap_idr
            if wallet.account.account_type is AccountType.PREMIUM
            else self.limits.basic_balance_cap_idr
        )
        if wallet.account.balance.available_idr + amount_idr > cap:
            raise WalletError(
                Reason.LIMIT_EXCEEDED, f"the receiving wallet may hold at most {cap} IDR"
            )

    async def require_monthly_room(self, mobile: MobileNumber, amount_idr: int) -> None:
        since = self.engine.now() - 30 * 86400
        volume = await volume_since(self.db, money.subscriber(mobile), since)
        if volume + amount_idr > self.limits.monthly_volume_cap_idr:
            raise WalletError(
                Reason.LIMIT_EXCEEDED,
                f"at most {self.limits.monthly_volume_cap_idr} IDR may move in 30 days",
            )


def _nothing(operation_id: str) -> None:
    """A money request keeps no answer: the operation attached to its key is the answer."""


def _operation(decision: Decision) -> str:
    return decision.operation_id


_FAILURE_MESSAGES = {
    Reason.INSUFFICIENT_FUNDS: "the paying wallet's balance is too low",
    Reason.LIMIT_EXCEEDED: "KasPro refused: a limit would be exceeded",
    Reason.CUSTOMER_NOT_FOUND: "KasPro has no customer with this number",
}


def failure(reason_text: str) -> WalletError:
    """The refusal of an operation that failed for ``reason_text`` (its failure_reason)."""
    reason = Reason(reason_text) if reason_text else Reason.PROVIDER_REJECTED
    return WalletError(reason, _FAILURE_MESSAGES.get(reason, "KasPro refused the payment"))


def unknown_outcome(transaction_id: str) -> WalletError:
    return WalletError(
        Reason.PROVIDER_UNAVAILABLE,
        "KasPro's answer is not known yet; the service keeps asking. "
        "Retry with the same request_id to see the result",
        retry_after_seconds=2.0,
        metadata={"transaction_id": transaction_id},
    )
