"""Transfers between subscribers, and tips from a ride's passenger to its driver: one P2P
leg each, subscriber to subscriber."""

from __future__ import annotations

from typing import Any

from wallet_service.domain import money
from wallet_service.domain.errors import Reason, WalletError
from wallet_service.domain.money import RideStatus, TxType
from wallet_service.domain.phone import MobileNumber, parse_mobile_number
from wallet_service.domain.records import Transaction
from wallet_service.flows.engine import subscriber_party
from wallet_service.flows.idempotency import Request
from wallet_service.flows.operations import Create, Created, Operations
from wallet_service.kaspro import kaspro_request_id
from wallet_service.store.database import Transaction as DbTx
from wallet_service.store.rides import load_ride


class Transfers:
    def __init__(self, operations: Operations) -> None:
        self._ops = operations

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
            await self._ops.require_linked(source)
            await self._ops.require_room(target, amount_idr, timeout=timeout)
            await self._ops.require_linked(target, role="receiving")
            await self._ops.require_monthly_room(source, amount_idr)
            return self._p2p(
                TxType.TRANSFER, "transfer", source, target, amount_idr, note=note, kaspro_note=note
            )

        operation_id = await self._ops.run(request, prepare, timeout=timeout)
        return await self._ops.answer_transaction(operation_id)

    async def tip(
        self, request: Request, ride_id: str, amount_idr: int, *, timeout: float | None
    ) -> Transaction:
        ride = await load_ride(self._ops.db, ride_id)
        if ride is None:
            raise WalletError(Reason.RIDE_PAYMENT_NOT_FOUND, "no ride payment for this ride_id")
        passenger = parse_mobile_number(ride.passenger)
        # A captured ride always has its driver; before capture there is no one to tip.
        driver = parse_mobile_number(ride.driver) if ride.driver else passenger
        cap = self._ops.limits.tip_cap_idr

        async def prepare() -> Create:
            if ride.status is not RideStatus.CAPTURED:
                raise WalletError(Reason.INVALID_STATE, "tips are paid on captured rides only")
            if amount_idr > cap:
                raise WalletError(Reason.LIMIT_EXCEEDED, f"a tip may be at most {cap} IDR")
            await self._ops.require_linked(passenger)
            await self._ops.require_room(driver, amount_idr, timeout=timeout)
            return self._p2p(
                TxType.TIP,
                "tip",
                passenger,
                driver,
                amount_idr,
                ride_id=ride_id,
                kaspro_note=f"tip {ride_id}",
            )

        operation_id = await self._ops.run(request, prepare, timeout=timeout)
        return await self._ops.answer_transaction(operation_id)

    def _p2p(
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
            t = self._ops.new_transaction(
                type_, source, amount_idr, now, counterparty=target.canonical, **fields
            )
            attempt = self._ops.engine.new_attempt(
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
            return await self._ops.insert(tx, t, [attempt], now)

        return create
