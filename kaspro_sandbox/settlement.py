"""Finishing money: completing or failing async transfers, crediting top-ups, callbacks.

An async transfer (bank-transfer, qris-issuer) is PENDING from its answer until it settles:
by itself after `async_delay_seconds` (when `auto_complete` was on at acceptance), or by
hand through the control endpoints. SUCCESS adds nothing to the journal (the money left
when the transfer was accepted); FAILED journals a REFUND of `amount + serviceFee` back
to the wallet. Either way the final callback is built, stored on the transaction and,
when a callback URL is set, delivered in the background — late, several times, followed
by a stale one, unsigned, badly signed or not at all when the transaction drew a callback
fault (docs/sandbox.md § Faults).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import replace
from typing import Any

from kaspro_sandbox import codes
from kaspro_sandbox.callbacks import Delivery, Signing, deliver
from kaspro_sandbox.config import SandboxConfig
from kaspro_sandbox.faults import CallbackFault
from kaspro_sandbox.mobile import mask
from kaspro_sandbox.money import REFUND, CallbackAttempt, MoneyTransaction, Status
from kaspro_sandbox.paths import TOPUP_CONTROL_PATH
from kaspro_sandbox.state import SandboxState

logger = logging.getLogger("kaspro_sandbox")


class NotPending(Exception):
    """The transaction is already final (or not async): it cannot be settled again."""


class Settlement:
    """Completion timers, settlement and callback delivery, bound to one config and state."""

    def __init__(self, config: SandboxConfig, state: SandboxState) -> None:
        self.config = config
        self.state = state

    def schedule(self, transaction: MoneyTransaction) -> None:
        """Start the completion timer of a just-accepted transfer, if auto_complete is on."""
        settings = self.state.settings
        if not settings.auto_complete:
            return
        transaction.completion = self.state.spawn(
            self._complete_later(transaction, settings.async_delay_seconds),
            name=f"kaspro-sandbox:complete:{transaction.request_id}",
        )

    def hold(self, transaction: MoneyTransaction) -> None:
        """Keep a PENDING transfer pending until it is settled by hand or by a script step."""
        transaction.held = True
        completion = transaction.completion
        transaction.completion = None
        if completion is not None and completion is not asyncio.current_task():
            completion.cancel()

    async def _complete_later(self, transaction: MoneyTransaction, delay: float) -> None:
        await asyncio.sleep(delay)
        with contextlib.suppress(NotPending):  # settled by hand, or forgotten by a reset
            self.settle(transaction, transaction.planned_status)

    def settle(
        self, transaction: MoneyTransaction, status: Status, message: str | None = None
    ) -> MoneyTransaction:
        """Make a PENDING transfer final; NotPending when it is not pending (any more)."""
        state = self.state
        if (
            transaction.status != "PENDING"
            or state.transactions.get(transaction.request_id) is not transaction
        ):
            raise NotPending(transaction.request_id)
        completion = transaction.completion
        transaction.completion = None
        if completion is not None and completion is not asyncio.current_task():
            completion.cancel()

        now = self.config.clock()
        if status == "FAILED":
            state.move(
                now=now,
                request_id=transaction.request_id,
                kind=REFUND,
                source=transaction.destination,
                destination=transaction.mobile_number,
                amount=transaction.amount,
                fee=transaction.service_fee,
            )
            transaction.code = codes.TRANSACTION_FAILED
            transaction.message = message or codes.MESSAGES[codes.TRANSACTION_FAILED]
        else:
            transaction.code = codes.SUCCESS
            transaction.message = message or codes.MESSAGES[codes.SUCCESS]
        transaction.status = status
        transaction.settled_at = now
        transaction.callback_body = self.callback_body(transaction, now)
        logger.info(
            "settled %s %s for %s: %s",
            transaction.type,
            transaction.request_id,
            mask(transaction.mobile_number),
            status,
        )
        self.send_callback(transaction)
        return transaction

    @staticmethod
    def callback_body(transaction: MoneyTransaction, now: float) -> dict[str, Any]:
        """The callback of a final status (docs/kaspro.md § Callbacks); top-ups add their
        channel and vaNumber or paymentCode (kept in `details`).
        """
        body: dict[str, Any] = {
            "reffId": transaction.reff_id,
            "requestId": transaction.request_id,
            "status": transaction.status,
            "code": transaction.code,
            "message": transaction.message,
            "amount": str(transaction.amount),
            "serviceFee": str(transaction.service_fee),
            "mobileNumber": transaction.mobile_number,
            "type": transaction.type,
            "timestamp": int(now),
        }
        if transaction.type == "TOPUP":
            body.update(transaction.details)
        return body

    def send_callback(self, transaction: MoneyTransaction, *, with_fault: bool = True) -> bool:
        """Deliver the transaction's final callback in the background; False without a URL.

        The transaction's callback fault applies unless `with_fault` is False (a resend).
        """
        url = self.state.settings.callback_url
        body = transaction.callback_body
        if url is None or body is None:
            return False
        fault = transaction.callback_fault if with_fault else None
        signing: Signing = "valid"
        if fault is not None and fault.kind == "callback_unsigned":
            signing = "none"
        elif fault is not None and fault.kind == "callback_bad_signature":
            signing = "bad"
        delivery = Delivery(
            url=url,
            request_id=transaction.request_id,
            body=body,
            secret=self.config.callback_secret,
            retry_delays=self.config.callback_retry_delays,
            timeout_seconds=self.config.callback_timeout_seconds,
            signing=signing,
            fault=fault.kind if fault is not None else None,
        )
        coroutine = (
            self._deliver(delivery)
            if fault is None
            else self._deliver_faulted(delivery, fault, self._stale_body(transaction))
        )
        self.state.spawn(coroutine, name=f"kaspro-sandbox:callback:{transaction.request_id}")
        return True

    @staticmethod
    def _stale_body(transaction: MoneyTransaction) -> dict[str, Any] | None:
        """The callback of the transfer's earlier state (PENDING, at acceptance), for
        callback_reorder; None for a top-up, which has no earlier state.
        """
        body = transaction.callback_body
        if body is None or not transaction.is_async:
            return None
        return {
            **body,
            "status": "PENDING",
            "code": codes.IN_PROCESS,
            "message": codes.MESSAGES[codes.IN_PROCESS],
            "timestamp": int(transaction.created_at),
        }

    async def _deliver(self, delivery: Delivery) -> None:
        delivered = await deliver(delivery, self.config.clock, self.state.callbacks.append)
        if not delivered:
            logger.warning(
                "gave up delivering the callback of %s to %s", delivery.request_id, delivery.url
            )

    async def _deliver_faulted(
        self, delivery: Delivery, fault: CallbackFault, stale_body: dict[str, Any] | None
    ) -> None:
        """Deliver under a callback fault (docs/sandbox.md § Faults)."""
        kind = fault.kind
        if kind == "callback_drop":
            self.state.callbacks.append(
                CallbackAttempt(
                    time=self.config.clock(),
                    url=delivery.url,
                    request_id=delivery.request_id,
                    attempt=0,
                    status_code=None,
                    error="not sent: callback_drop",
                    body=delivery.body,
                    fault=kind,
                )
            )
            logger.info("dropped the callback of %s (fault)", delivery.request_id)
            return
        if kind == "callback_late":
            await asyncio.sleep(fault.wait_seconds)
        copies = fault.copies if kind == "callback_duplicate" else 1
        for copy in range(copies):
            if copy:
                await asyncio.sleep(fault.wait_seconds)
            await self._deliver(delivery)
        if kind == "callback_reorder" and stale_body is not None:
            await asyncio.sleep(fault.wait_seconds)
            await self._deliver(replace(delivery, body=stale_body))

    def credit_topup(
        self, mobile_number: str, amount: int, source: str, details: dict[str, str]
    ) -> MoneyTransaction:
        """Credit a top-up the caller has checked (customer known, cap kept) and call back."""
        state = self.state
        now = self.config.clock()
        request_id = state.new_topup_request_id()
        reff_id = state.new_response_id(now)
        state.move(
            now=now,
            request_id=request_id,
            kind="TOPUP",
            source=source,
            destination=mobile_number,
            amount=amount,
        )
        transaction = MoneyTransaction(
            request_id=request_id,
            reff_id=reff_id,
            type="TOPUP",
            status="SUCCESS",
            code=codes.SUCCESS,
            message=codes.MESSAGES[codes.SUCCESS],
            amount=amount,
            service_fee=0,
            mobile_number=mobile_number,
            destination=mobile_number,
            created_at=now,
            settled_at=now,
            details=details,
        )
        transaction.callback_body = self.callback_body(transaction, now)
        transaction.answer_body = transaction.callback_body
        transaction.callback_fault = state.faults.decide_callback(TOPUP_CONTROL_PATH)
        state.add_transaction(transaction)
        self.send_callback(transaction)
        return transaction
