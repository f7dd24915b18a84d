"""The KasPro partner gateway's money endpoints and the status inquiry (docs/kaspro.md).

`/pil-transaction-payment-to-merchant/` and `/p2p-transaction/` move money at once;
`/bank-transfer/` and `/qris-issuer/` take it from the wallet at once, answer code 1 "In
Process" and settle later (settlement.py). Every money call carries a requestId: the
first answer given to a requestId is the answer to every repeat of it, whatever the
repeat's body, and nothing is executed again. A request refused as malformed (400001)
is not remembered: nothing was executed, so the requestId stays unused.

The paths go through PartnerGateway.endpoint: signed, token-checked, logged, faultable.
Faults that change what is executed are carried out here: `in_process_forever` and the
script steps `in_process`, `success` and `fail` (docs/sandbox.md § Faults). A transfer
accepted while a script still has steps for its requestId gets no completion timer: the
script (or a control call) settles it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from kaspro_sandbox import codes
from kaspro_sandbox.money import (
    EXTERNAL_BANK,
    EXTERNAL_QRIS,
    EXTERNAL_RETAIL,
    FAILING_ACCOUNT_SUFFIX,
    FAILING_MERCHANT_PREFIX,
    RETAIL_CHANNELS,
    MoneyTransaction,
    Status,
    TransactionType,
    is_digits,
    parse_amount,
    withdrawal_code,
)
from kaspro_sandbox.partner import (
    REQUEST_ID_PATTERN,
    InvalidRequest,
    PartnerCall,
    PartnerGateway,
    Reply,
)
from kaspro_sandbox.paths import (
    BANK_TRANSFER_PATH,
    P2P_PATH,
    PAYMENT_PATH,
    QRIS_PATH,
    STATUS_PATH,
)
from kaspro_sandbox.qris import merchant_name
from kaspro_sandbox.settlement import Settlement

# Faults and script steps that keep a transfer PENDING and turn a success into "In Process".
IN_PROCESS_KINDS = frozenset({"in_process", "in_process_forever"})
SETTLING_STEPS: dict[str, Status] = {"success": "SUCCESS", "fail": "FAILED"}

POCKET_ID = "2"
FLOW_TYPE_ASYNC = "Async"

MoneyHandler = Callable[[PartnerCall, dict[str, Any], str], Reply]


@dataclass(frozen=True)
class Posted:
    """A synchronous transfer just made: its ids and both wallets' balances around it."""

    response_id: str
    reference: int
    source_before: int
    source_after: int
    target_before: int
    target_after: int


@dataclass(frozen=True)
class _Order:
    """A checked money call about to be decided: who pays what to whom, and its details."""

    call: PartnerCall
    request_id: str
    kind: TransactionType
    source: str
    destination: str  # a wallet, or the external sink of an async transfer
    amount: int
    details: dict[str, str]
    fee: int = 0

    def transaction(
        self, status: Status, code: int, body: dict[str, Any], planned: Status = "SUCCESS"
    ) -> MoneyTransaction:
        """The order as decided, `body` its answer (given again to a repeated requestId)."""
        now = self.call.received_at
        return MoneyTransaction(
            request_id=self.request_id,
            reff_id=body["responseId"],
            type=self.kind,
            status=status,
            code=code,
            message=codes.MESSAGES[code],
            amount=self.amount,
            service_fee=self.fee,
            mobile_number=self.source,
            destination=self.destination,
            created_at=now,
            answer_body=body,
            settled_at=None if status == "PENDING" else now,
            planned_status=planned,
            details=self.details,
        )


def _string(fields: dict[str, Any], name: str, *, label: str | None = None) -> str:
    """A required non-blank string field (400001 naming `label` or `name` otherwise)."""
    value = fields.get(name)
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequest(label or name)
    return value.strip()


def _amount(fields: dict[str, Any]) -> int:
    amount = parse_amount(fields.get("amount"))
    if amount is None:
        raise InvalidRequest("amount")
    return amount


def _pocket(fields: dict[str, Any], label: str) -> None:
    if fields.get("pocketId") != POCKET_ID:
        raise InvalidRequest(label)


def _distinct(source: str, destination: str) -> None:
    if source == destination:
        raise InvalidRequest("destination")


class MoneyGateway:
    """The money paths, answered for one config and state through `gateway`'s wrapper."""

    def __init__(self, gateway: PartnerGateway, settlement: Settlement) -> None:
        self.gateway = gateway
        self.settlement = settlement
        self.state = settlement.state

    def routes(self) -> list[Route]:
        def endpoint(
            handler: Callable[[PartnerCall], Reply],
        ) -> Callable[[Request], Awaitable[Response]]:
            return self.gateway.endpoint(handler, reference=self.reference)

        return [
            Route(PAYMENT_PATH, endpoint(self._money(self.pay_merchant)), methods=["POST"]),
            Route(P2P_PATH, endpoint(self._money(self.p2p)), methods=["POST"]),
            Route(BANK_TRANSFER_PATH, endpoint(self._money(self.bank_transfer)), methods=["POST"]),
            Route(QRIS_PATH, endpoint(self._money(self.qris)), methods=["POST"]),
            Route(STATUS_PATH, endpoint(self.transaction_status), methods=["GET"]),
        ]

    def reference(self, call: PartnerCall) -> str | None:
        """The requestId a money call or status inquiry is about (for scripted faults)."""
        if call.path == STATUS_PATH:
            request_id = call.query.get("requestId", "").strip()
            if request_id:
                return request_id
            transaction = self.state.transaction_by_reff_id(call.query.get("reffId", "").strip())
            return transaction.request_id if transaction is not None else None
        sent = (call.fields or {}).get("requestId")
        return sent if isinstance(sent, str) else None

    def _money(self, execute: MoneyHandler) -> Callable[[PartnerCall], Reply]:
        """Idempotency by requestId around a money handler, and 400001 in the failure shape."""

        def handler(call: PartnerCall) -> Reply:
            try:
                fields = call.json_object()
                request_id = fields.get("requestId")
                if not isinstance(request_id, str) or not REQUEST_ID_PATTERN.fullmatch(request_id):
                    raise InvalidRequest("requestId")
                first = self.state.transactions.get(request_id)
                if first is not None:
                    reply = Reply(first.answer_status, first.answer_body)
                else:
                    reply = execute(call, fields, request_id)
                return self._apply_injection(call, request_id, reply)
            except InvalidRequest as exc:
                return Reply(
                    400,
                    {
                        "responseId": self.state.new_response_id(call.received_at),
                        "code": codes.INVALID_REQUEST,
                        "message": exc.message,
                    },
                )

        return handler

    def _apply_injection(self, call: PartnerCall, request_id: str, reply: Reply) -> Reply:
        """What in_process_forever and the script steps in_process, success and fail do to
        a money call once it has been carried out (or answered again).
        """
        kind = call.injected
        transaction = self.state.transactions.get(request_id)
        pending = None
        if transaction is not None and transaction.status == "PENDING":
            pending = transaction
        if kind in IN_PROCESS_KINDS:
            if pending is not None:
                self.settlement.hold(pending)
            if reply.code == codes.SUCCESS:
                body = {
                    **reply.body,
                    "code": codes.IN_PROCESS,
                    "message": codes.MESSAGES[codes.IN_PROCESS],
                }
                reply = replace(reply, body=body)
        elif kind in SETTLING_STEPS and pending is not None:
            self.settlement.settle(pending, SETTLING_STEPS[kind])
        return reply

    # checks shared by every money call

    def _refusal(self, source: str, payee: str | None, debit: int, credit: int) -> int | None:
        """Why KasPro would refuse to move `debit` out of `source` and `credit` into the
        wallet `payee` (None: an external sink, which takes anything): 110005, 140001,
        140002; None when it may.
        """
        payer_holder = self.state.holder(source)
        payee_holder = self.state.holder(payee) if payee is not None else None
        if payer_holder is None or (payee is not None and payee_holder is None):
            return codes.CUSTOMER_NOT_FOUND
        if payer_holder.balance < debit:
            return codes.INSUFFICIENT_BALANCE
        if payee_holder is not None and self.state.would_break_cap(payee_holder, credit):
            return codes.LIMIT_EXCEEDED
        return None

    def _reject(self, order: _Order, code: int) -> Reply:
        """A refusal that moved nothing, remembered as a FAILED transaction."""
        response_id = self.state.new_response_id(order.call.received_at)
        body = {"responseId": response_id, "code": code, "message": codes.MESSAGES[code]}
        self.state.add_transaction(order.transaction("FAILED", code, body))
        return Reply(200, body)

    # synchronous transfers

    def pay_merchant(self, call: PartnerCall, fields: dict[str, Any], request_id: str) -> Reply:
        source = _string(fields, "mobileNumber")
        payments = fields.get("payments")
        if not isinstance(payments, dict):
            raise InvalidRequest("payments")
        _pocket(payments, "payments.pocketId")
        amount = _amount(payments)
        reference = _string(payments, "reference", label="payments.reference")
        destination = _string(fields, "destination")
        _distinct(source, destination)

        def answer(posted: Posted) -> dict[str, Any]:
            return {
                "responseId": posted.response_id,
                "code": codes.SUCCESS,
                "message": codes.MESSAGES[codes.SUCCESS],
                "data": {
                    "reffId": posted.response_id,
                    "account": destination,
                    "amount": str(amount),
                    "balanceAfter": str(posted.source_after),
                },
            }

        details = {"reference": reference}
        order = _Order(call, request_id, "PAYMENT", source, destination, amount, details)
        return self._sync_transfer(order, answer)

    def p2p(self, call: PartnerCall, fields: dict[str, Any], request_id: str) -> Reply:
        source = _string(fields, "mobileNumber")
        destination = _string(fields, "destination")
        amount = _amount(fields)
        _pocket(fields, "pocketId")
        note = fields.get("note")
        if note is not None and not isinstance(note, str):
            raise InvalidRequest("note")
        _distinct(source, destination)

        def answer(posted: Posted) -> dict[str, Any]:
            lines = [
                (source, -amount, posted.source_before, posted.source_after),
                (destination, amount, posted.target_before, posted.target_after),
            ]
            return {
                "responseId": posted.response_id,
                "code": codes.SUCCESS,
                "data": {
                    "pocketId": int(POCKET_ID),
                    "walletTransactions": [
                        {
                            "account": account,
                            "amount": change,
                            "reference": posted.reference,
                            "balanceBefore": before,
                            "balanceAfter": after,
                        }
                        for account, change, before, after in lines
                    ],
                },
                "message": codes.MESSAGES[codes.SUCCESS],
            }

        details = {"note": note or ""}
        order = _Order(call, request_id, "P2P", source, destination, amount, details)
        return self._sync_transfer(order, answer)

    def _sync_transfer(self, order: _Order, answer: Callable[[Posted], dict[str, Any]]) -> Reply:
        refusal = self._refusal(order.source, order.destination, order.amount, order.amount)
        if refusal is not None:
            return self._reject(order, refusal)
        payer = self.state.holder(order.source)
        payee = self.state.holder(order.destination)
        if payer is None or payee is None:  # _refusal has answered 110005 for these
            raise LookupError(order.source if payer is None else order.destination)
        now = order.call.received_at
        response_id, reference = self.state.new_reference(now)
        source_before, target_before = payer.balance, payee.balance
        self.state.move(
            now=now,
            request_id=order.request_id,
            kind=order.kind,
            source=order.source,
            destination=order.destination,
            amount=order.amount,
        )
        body = answer(
            Posted(
                response_id=response_id,
                reference=reference,
                source_before=source_before,
                source_after=payer.balance,
                target_before=target_before,
                target_after=payee.balance,
            )
        )
        self.state.add_transaction(order.transaction("SUCCESS", codes.SUCCESS, body))
        return Reply(200, body)

    # asynchronous transfers

    def bank_transfer(self, call: PartnerCall, fields: dict[str, Any], request_id: str) -> Reply:
        source = _string(fields, "mobileNumber")
        fee = self.state.settings.cash_out_fee
        channel = fields.get("channel")
        if channel is not None:
            if channel not in RETAIL_CHANNELS:
                raise InvalidRequest("channel")
            amount = _amount(fields)
            code = withdrawal_code(request_id)
            details = {"channel": str(channel), "withdrawalCode": code}
            order = _Order(
                call, request_id, "RETAIL_WITHDRAWAL", source, EXTERNAL_RETAIL, amount, details, fee
            )
            return self._async_transfer(order, account=str(channel), extra={"withdrawalCode": code})
        bank_code = fields.get("bankCode")
        if not is_digits(bank_code) or len(str(bank_code)) != 3:
            raise InvalidRequest("bankCode")
        account_number = fields.get("accountNumber")
        if not is_digits(account_number):
            raise InvalidRequest("accountNumber")
        account_name = _string(fields, "accountName")
        amount = _amount(fields)
        details = {
            "bankCode": str(bank_code),
            "accountNumber": str(account_number),
            "accountName": account_name,
        }
        order = _Order(
            call, request_id, "BANK_TRANSFER", source, EXTERNAL_BANK, amount, details, fee
        )
        failing = str(account_number).endswith(FAILING_ACCOUNT_SUFFIX)
        return self._async_transfer(
            order, account=str(account_number), extra={}, planned="FAILED" if failing else "SUCCESS"
        )

    def qris(self, call: PartnerCall, fields: dict[str, Any], request_id: str) -> Reply:
        source = _string(fields, "mobileNumber")
        payload = fields.get("qrisPayload")
        name = merchant_name(payload) if isinstance(payload, str) else None
        if name is None:
            raise InvalidRequest("qrisPayload")
        amount = _amount(fields)
        details = {"merchantName": name}
        order = _Order(call, request_id, "QRIS", source, EXTERNAL_QRIS, amount, details)
        failing = name.upper().startswith(FAILING_MERCHANT_PREFIX)
        return self._async_transfer(
            order, account=source, extra=details, planned="FAILED" if failing else "SUCCESS"
        )

    def _async_transfer(
        self, order: _Order, *, account: str, extra: dict[str, str], planned: Status = "SUCCESS"
    ) -> Reply:
        amount, fee = order.amount, order.fee
        refusal = self._refusal(order.source, None, amount + fee, amount)
        if refusal is not None:
            return self._reject(order, refusal)
        call = order.call
        response_id = self.state.new_response_id(call.received_at)
        # The money leaves the wallet now; a failure brings it back (settlement.py).
        self.state.move(
            now=call.received_at,
            request_id=order.request_id,
            kind=order.kind,
            source=order.source,
            destination=order.destination,
            amount=amount,
            fee=fee,
        )
        body = {
            "code": codes.IN_PROCESS,
            "message": codes.MESSAGES[codes.IN_PROCESS],
            "responseId": response_id,
            "data": {
                "account": account,
                "amount": str(amount),
                "price": str(amount),
                "serviceFee": str(fee),
                "reffId": response_id,
                "flowType": FLOW_TYPE_ASYNC,
                **extra,
            },
        }
        transaction = order.transaction("PENDING", codes.IN_PROCESS, body, planned=planned)
        transaction.callback_fault = self.state.faults.decide_callback(call.path)
        self.state.add_transaction(transaction)
        if call.injected in IN_PROCESS_KINDS or self.state.faults.scripted(order.request_id):
            transaction.held = True  # settled by a script step or by hand, never by a timer
        else:
            self.settlement.schedule(transaction)
        callback_fault = transaction.callback_fault
        return Reply(200, body, callback_fault=callback_fault.kind if callback_fault else None)

    # status inquiry

    def transaction_status(self, call: PartnerCall) -> Reply:
        request_id = call.query.get("requestId", "").strip()
        reff_id = call.query.get("reffId", "").strip()
        if request_id:
            transaction = self.state.transactions.get(request_id)
        elif reff_id:
            transaction = self.state.transaction_by_reff_id(reff_id)
        else:
            raise InvalidRequest("requestId")
        if transaction is None:
            code = codes.TRANSACTION_NOT_FOUND
            return Reply(200, {"code": code, "message": codes.MESSAGES[code]})
        step = call.injected
        if step in SETTLING_STEPS and transaction.status == "PENDING":
            self.settlement.settle(transaction, SETTLING_STEPS[step])
        document = transaction.status_document()
        if step == "in_process":
            # A stale view: the inquiry says PENDING whatever the transaction's state.
            document.pop("code", None)
            document.update(status="PENDING", message=codes.MESSAGES[codes.IN_PROCESS])
        return Reply(
            200,
            {
                "code": codes.SUCCESS,
                "message": codes.MESSAGES[codes.SUCCESS],
                "data": document,
            },
        )
