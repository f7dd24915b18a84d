"""Top-ups and driver deposits: credits KasPro tells us of (a callback, or a status
inquiry confirming an unverified one), recorded once per KasPro reference."""

from __future__ import annotations

from wallet_service.domain import money
from wallet_service.domain.money import TxStatus, TxType
from wallet_service.domain.phone import MobileNumber
from wallet_service.domain.records import Transaction
from wallet_service.flows.engine import Engine
from wallet_service.store.database import Transaction as DbTx
from wallet_service.store.ledger import book
from wallet_service.store.transactions import insert_transaction, new_id, topup_exists


class TopUps:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    async def record(
        self,
        kaspro_reference: str,
        mobile: MobileNumber,
        amount_idr: int,
        *,
        driver: bool,
        channel: str,
    ) -> bool:
        """Record a credited top-up; whether this call recorded it (False: it was before)."""

        async def record_once(tx: DbTx) -> Transaction | None:
            if await topup_exists(tx, kaspro_reference) is not None:
                return None
            now = self._engine.now()
            source = money.EXTERNAL_VA if channel == "VA" else money.EXTERNAL_RETAIL
            t = Transaction(
                id=new_id("txn"),
                type=TxType.DRIVER_DEPOSIT if driver else TxType.TOP_UP,
                status=TxStatus.SUCCEEDED,
                amount_idr=amount_idr,
                mobile_number=mobile.canonical,
                details={"channel": channel},
                kaspro_reference=kaspro_reference,
                create_time=now,
                update_time=now,
            )
            await insert_transaction(tx, t)
            await book(
                tx,
                t.id,
                f"topup:{kaspro_reference}",
                money.movement(source, money.subscriber(mobile), amount_idr),
                now,
            )
            await self._engine.event(tx, t, now)
            return t

        recorded = await self._engine.db.run(record_once)
        if recorded is None:
            return False
        self._engine.operation_ended(recorded)
        return True
