"""Money leaving a wallet for the outside: cash-out to a bank account or a retail outlet,
and QRIS payments to merchants. One KasPro leg each, settled asynchronously."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from wallet_service.domain import money
from wallet_service.domain.errors import Reason, WalletError
from wallet_service.domain.money import TxType
from wallet_service.domain.phone import MobileNumber
from wallet_service.domain.records import Transaction
from wallet_service.flows.idempotency import Request
from wallet_service.flows.operations import Create, Created, Operations
from wallet_service.kaspro import kaspro_request_id
from wallet_service.store.database import Transaction as DbTx


@dataclass(frozen=True)
class BankAccount:
    bank_code: str
    account_number: str
    account_name: str


class ExternalPayments:
    def __init__(self, operations: Operations) -> None:
        self._ops = operations

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
        limits = self._ops.limits

        async def prepare() -> Create:
            if not limits.min_cash_out_idr <= amount_idr <= limits.max_cash_out_idr:
                raise WalletError(
                    Reason.LIMIT_EXCEEDED,
                    f"a cash-out must be {limits.min_cash_out_idr}-{limits.max_cash_out_idr} IDR",
                )
            await self._ops.require_linked(mobile)
            await self._ops.require_monthly_room(mobile, amount_idr)
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
            t = self._ops.new_transaction(TxType.CASH_OUT, mobile, amount_idr, now, details=details)
            attempt = self._ops.engine.new_attempt(
                kaspro_request_id("cash-out", t.id),
                t,
                "cash-out",
                endpoint,
                {**args, "amount": amount_idr},
                money.movement(money.subscriber(mobile), sink, amount_idr),
            )
            return await self._ops.insert(tx, t, [attempt], now)

        operation_id = await self._ops.run(request, prepare, timeout=timeout)
        return await self._ops.answer_transaction(operation_id)

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
            await self._ops.require_linked(mobile)
            await self._ops.require_monthly_room(mobile, amount_idr)
            return create

        async def create(tx: DbTx, now: float) -> Created:
            t = self._ops.new_transaction(
                TxType.QRIS_PAYMENT,
                mobile,
                amount_idr,
                now,
                details={"merchant_name": merchant_name},
            )
            attempt = self._ops.engine.new_attempt(
                kaspro_request_id("qris", t.id),
                t,
                "qris",
                "qris",
                {"mobile": mobile.canonical, "payload": payload, "amount": amount_idr},
                money.movement(money.subscriber(mobile), money.EXTERNAL_QRIS, amount_idr),
            )
            return await self._ops.insert(tx, t, [attempt], now)

        operation_id = await self._ops.run(request, prepare, timeout=timeout)
        return await self._ops.answer_transaction(operation_id)
