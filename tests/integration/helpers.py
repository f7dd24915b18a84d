"""Helpers the integration tests share: reading transactions and both sets of books,
transfers, and KasPro's signed callbacks with a cash-out waiting for one."""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

import grpc
import httpx
from wallet.v1 import common_pb2, funding_service_pb2, payment_service_pb2, transaction_service_pb2

from wallet_service.store.callbacks import store_callback

from .conftest import APP, DEADLINE, LOCAL, OTHER_LOCAL, Harness, wait_for

INVALID = grpc.StatusCode.INVALID_ARGUMENT
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION

PENDING = common_pb2.TRANSACTION_STATUS_PENDING
PROCESSING = common_pb2.TRANSACTION_STATUS_PROCESSING
SUCCEEDED = common_pb2.TRANSACTION_STATUS_SUCCEEDED
FAILED = common_pb2.TRANSACTION_STATUS_FAILED

P2P_PATH = "/p2p-transaction/"
# Every KasPro path that moves money (docs/kaspro.md § Money endpoints).
MONEY_PATHS = frozenset(
    {P2P_PATH, "/pil-transaction-payment-to-merchant/", "/bank-transfer/", "/qris-issuer/"}
)


# Transactions and events.


async def get_transaction(h: Harness, transaction_id: str) -> common_pb2.Transaction:
    response = await h.transactions.GetTransaction(
        transaction_service_pb2.GetTransactionRequest(transaction_id=transaction_id),
        metadata=APP,
        timeout=DEADLINE,
    )
    return response.transaction


async def until_status(h: Harness, transaction_id: str, status: int) -> None:
    async def reached() -> bool:
        return (await get_transaction(h, transaction_id)).status == status

    await wait_for(reached)


async def settled(h: Harness, transaction_id: str) -> common_pb2.Transaction:
    """Wait (bounded) until the transaction is final, and return it."""

    async def final() -> bool:
        t = await get_transaction(h, transaction_id)
        return t.status in (SUCCEEDED, FAILED)

    await wait_for(final)
    return await get_transaction(h, transaction_id)


async def transaction_statuses(h: Harness, transaction_id: str, after: int = 0) -> list[int]:
    """The statuses the events after ``after`` reported for one transaction, in order."""
    return [
        e.transaction.status
        for e in await h.events(after)
        if e.WhichOneof("subject") == "transaction"
        and e.transaction.transaction_id == transaction_id
    ]


async def last_sequence(h: Harness) -> int:
    """Where the event log is now (a lower answer only makes later reads longer)."""
    events = await h.events(idle_seconds=0.1)
    return events[-1].sequence if events else 0


# The books.


async def money_calls(h: Harness) -> list[dict[str, Any]]:
    """The money calls in the sandbox's request log (refused and faulted ones included)."""
    return [r for r in await h.kaspro_requests() if r["path"] in MONEY_PATHS]


@dataclass(frozen=True)
class Books:
    """Both sets of books and the money calls so far, to show later that nothing moved."""

    sandbox: dict[str, Any]
    ledger: dict[str, int]
    money_calls: int

    @classmethod
    async def take(cls, h: Harness) -> Books:
        await h.assert_books_agree()
        return cls(await h.sandbox_balances(), await h.ledger(), len(await money_calls(h)))

    async def assert_unchanged(self, h: Harness, *, reached_kaspro: bool = False) -> None:
        """No money moved on either side; unless ``reached_kaspro``, no money call was made."""
        assert await h.sandbox_balances() == self.sandbox
        assert await h.ledger() == self.ledger
        await h.assert_books_agree()
        if not reached_kaspro:
            assert len(await money_calls(h)) == self.money_calls, await money_calls(h)


async def ledger_lines(h: Harness, transaction_id: str) -> list[tuple[str, int]]:
    rows = await h.running.db.fetch_all(
        "SELECT account, amount_idr FROM ledger_lines WHERE transaction_id = ? ORDER BY account",
        (transaction_id,),
    )
    return [(row["account"], row["amount_idr"]) for row in rows]


async def attempt_row(h: Harness, reference: str) -> dict[str, Any]:
    row = await h.running.db.fetch_one(
        "SELECT status, next_check_at, checks, update_time FROM attempts WHERE reference = ?",
        (reference,),
    )
    assert row is not None
    return dict(row)


async def frozen(h: Harness, transaction_id: str) -> str | None:
    row = await h.running.db.fetch_one(
        "SELECT frozen FROM transactions WHERE id = ?", (transaction_id,)
    )
    assert row is not None
    value = row["frozen"]
    return None if value is None else str(value)


# Transfers.


def transfer(
    amount_idr: int = 25_000, request_id: str = "transfer-1", **fields: str
) -> payment_service_pb2.TransferRequest:
    values = {"from_mobile_number": LOCAL, "to_mobile_number": OTHER_LOCAL, "note": "makan"}
    values.update(fields)
    return payment_service_pb2.TransferRequest(
        request_id=request_id, amount_idr=amount_idr, **values
    )


async def send(
    h: Harness, request: payment_service_pb2.TransferRequest, metadata: Any = APP
) -> common_pb2.Transaction:
    response = await h.payments.Transfer(request, metadata=metadata, timeout=DEADLINE)
    return response.transaction


async def p2p_calls(h: Harness) -> list[dict[str, Any]]:
    return await h.kaspro_requests(P2P_PATH)


# Cash-outs.


def bank(
    bank_code: str = "014", account_number: str = "1234567890", account_name: str = "SITI RAHAYU"
) -> common_pb2.BankAccount:
    return common_pb2.BankAccount(
        bank_code=bank_code, account_number=account_number, account_name=account_name
    )


def cash_out(
    amount_idr: int = 50_000,
    request_id: str = "cash-out-1",
    *,
    to: common_pb2.BankAccount | None = None,
    outlet: common_pb2.RetailOutlet.ValueType | None = None,
    mobile: str = LOCAL,
) -> funding_service_pb2.CashOutRequest:
    request = funding_service_pb2.CashOutRequest(
        request_id=request_id, mobile_number=mobile, amount_idr=amount_idr
    )
    if outlet is not None:
        request.retail_outlet = outlet
    else:
        request.bank_account.CopyFrom(to if to is not None else bank())
    return request


# KasPro's callbacks.

DEV_SECRET = "wallet-dev-callback-secret"  # the service's dev secret; the sandbox signs with it
AMOUNT = 50_000


def sign(secret: str, timestamp: str, raw: bytes) -> str:
    """KasPro's callback signature, written here independently of the service's verifier."""
    return hmac.new(secret.encode(), timestamp.encode() + b"." + raw, hashlib.sha256).hexdigest()


async def callback_tries(h: Harness, request_id: str) -> list[dict[str, Any]]:
    """The sandbox's callback tries for one of its transactions."""
    tries: list[dict[str, Any]] = await h.control("GET", "/callbacks")
    return [t for t in tries if t["requestId"] == request_id]


async def callback_answers(h: Harness, request_id: str, count: int = 1) -> list[int]:
    """The HTTP statuses of the first ``count`` callback tries the sandbox logged for one of
    its transactions. It logs a try once our answer reached it, which may be a little after
    the callback's effect is visible (the receiver answers after its commit)."""

    async def logged() -> bool:
        return len(await callback_tries(h, request_id)) >= count

    await wait_for(logged)
    return [t["statusCode"] for t in await callback_tries(h, request_id)]


def callback_url(h: Harness) -> str:
    return f"http://127.0.0.1:{h.running.http_port}/callbacks/kaspro"


async def post(
    h: Harness,
    raw: bytes,
    *,
    secret: str = DEV_SECRET,
    offset_seconds: int = 0,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """POST ``raw`` as KasPro would: timestamped (now + offset) and signed with ``secret``;
    ``headers`` replaces the signing headers entirely."""
    timestamp = str(int(h.clock()) + offset_seconds)
    sent = {
        "Content-Type": "application/json",
        "KasPro-Callback-Timestamp": timestamp,
        "KasPro-Callback-Signature": sign(secret, timestamp, raw),
    }
    if headers is not None:
        sent = {"Content-Type": "application/json", **headers}
    async with httpx.AsyncClient(timeout=10.0) as client:
        return await client.post(callback_url(h), content=raw, headers=sent)


def body(
    reference: str,
    reff_id: str,
    status: str = "SUCCESS",
    *,
    amount: str = str(AMOUNT),
    mobile: str = LOCAL,
    **extra: Any,
) -> bytes:
    """A BANK_TRANSFER callback as docs/kaspro.md ("Callbacks") shows it, compact JSON."""
    fields: dict[str, Any] = {
        "reffId": reff_id,
        "requestId": reference,
        "status": status,
        "code": 0 if status == "SUCCESS" else 150002,
        "message": "Berhasil" if status == "SUCCESS" else "Transaction failed",
        "amount": amount,
        "serviceFee": "0",
        "mobileNumber": mobile,
        "type": "BANK_TRANSFER",
        "timestamp": 1_795_931_290,
    }
    fields.update(extra)
    return json.dumps(fields, separators=(",", ":")).encode()


async def lost_top_up(h: Harness, amount_idr: int) -> tuple[dict[str, Any], int]:
    """A VA top-up KasPro credited, whose verified callback our receiver stored and then
    failed to apply (the database went away: answered 500), and which KasPro stopped
    resending: the sandbox's answer, and the stored callback's id."""
    await h.control("POST", "/callback-url", json={"url": None})
    va = "39358" + LOCAL[1:]
    sent: dict[str, Any] = await h.control(
        "POST",
        "/topup",
        json={"mobileNumber": LOCAL, "amount": amount_idr, "channel": "VA", "vaNumber": va},
    )
    raw = body(
        sent["requestId"],
        sent["reffId"],
        amount=str(amount_idr),
        type="TOPUP",
        channel="VA",
        vaNumber=va,
    )
    timestamp = str(int(h.clock()))
    # What the receiver does once a delivery is verified, before it applies it.
    callback_id = await store_callback(
        h.running.db, raw, timestamp, sign(DEV_SECRET, timestamp, raw), h.clock()
    )
    return sent, callback_id


@dataclass(frozen=True)
class CashOut:
    transaction_id: str
    reference: str  # our requestId, the attempt's
    reff_id: str  # KasPro's


async def pending_cash_out(h: Harness, amount_idr: int = AMOUNT) -> CashOut:
    """A bank cash-out KasPro accepted and has not settled (autoComplete off)."""
    await h.sandbox_settings(auto_complete=False)
    await h.onboard(LOCAL, 200_000)
    response = await h.funding.CashOut(cash_out(amount_idr), metadata=APP, timeout=DEADLINE)
    t = response.transaction
    assert t.status == PROCESSING, t
    row = await h.running.db.fetch_one(
        "SELECT reference FROM attempts WHERE transaction_id = ?", (t.transaction_id,)
    )
    assert row is not None
    at_kaspro = await h.control("GET", f"/transactions/{row['reference']}")
    assert at_kaspro["status"] == "PENDING"
    return CashOut(t.transaction_id, str(row["reference"]), str(at_kaspro["reffId"]))
