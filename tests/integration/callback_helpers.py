"""Helpers of the callback tests: KasPro's signed callbacks, and a cash-out waiting for one."""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

import httpx
from wallet.v1 import common_pb2, funding_service_pb2, transaction_service_pb2

from .conftest import APP, DEADLINE, LOCAL, Harness, wait_for

DEV_SECRET = "wallet-dev-callback-secret"  # the sandbox signs with it
PROCESSING = common_pb2.TRANSACTION_STATUS_PROCESSING
AMOUNT = 50_000


def sign(secret: str, timestamp: str, raw: bytes) -> str:
    return hmac.new(secret.encode(), timestamp.encode() + b"." + raw, hashlib.sha256).hexdigest()


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


@dataclass(frozen=True)
class CashOut:
    transaction_id: str
    reference: str  # our requestId, the attempt's
    reff_id: str  # KasPro's


async def pending_cash_out(h: Harness, amount_idr: int = AMOUNT) -> CashOut:
    """A bank cash-out KasPro accepted and has not settled (autoComplete off)."""
    await h.sandbox_settings(auto_complete=False)
    await h.onboard(LOCAL, 200_000)
    response = await h.funding.CashOut(
        funding_service_pb2.CashOutRequest(
            request_id="cash-out-1",
            mobile_number=LOCAL,
            amount_idr=amount_idr,
            bank_account=common_pb2.BankAccount(
                bank_code="014", account_number="1234567890", account_name="SITI RAHAYU"
            ),
        ),
        metadata=APP,
        timeout=DEADLINE,
    )
    t = response.transaction
    assert t.status == PROCESSING, t
    row = await h.running.db.fetch_one(
        "SELECT reference FROM attempts WHERE transaction_id = ?", (t.transaction_id,)
    )
    assert row is not None
    at_kaspro = await h._control("GET", f"/transactions/{row['reference']}")
    assert at_kaspro["status"] == "PENDING"
    return CashOut(t.transaction_id, str(row["reference"]), str(at_kaspro["reffId"]))


async def get_transaction(h: Harness, transaction_id: str) -> common_pb2.Transaction:
    response = await h.transactions.GetTransaction(
        transaction_service_pb2.GetTransactionRequest(transaction_id=transaction_id),
        metadata=APP,
        timeout=DEADLINE,
    )
    return response.transaction


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


async def until_status(h: Harness, transaction_id: str, status: int) -> None:
    async def reached() -> bool:
        return (await get_transaction(h, transaction_id)).status == status

    await wait_for(reached)
