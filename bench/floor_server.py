"""The floor of a money RPC: what any service keeping the money rules must do, and no more.

A bench-only gRPC server (not the product) that answers Transfer, AuthorizeRidePayment and
CaptureRidePayment with the work the rules cannot do without, on the product's own parts:
the same gRPC server options, the same SQLite schema and settings (``Database``), the same
KasPro client (signed calls over ``Http1Transport``), uvloop and the same collector
settings. Per Transfer:

1. read the idempotency key (a retry must be answered from it);
2. the receiver's account inquiry at KasPro (the KYC balance cap, rule 10) and the
   sender's 30-day volume from the ledger index;
3. one commit: the transaction, the attempt with its reference, the event and the key
   (rule 1: key with operation; rule 2: the attempt is durable before the call);
4. the P2P call;
5. one commit: the attempt's outcome, two ledger lines, the transaction's new status and
   its event (rules 4, 8, 9);
6. the answer, built from what it wrote.

A ride is the same with the payment-to-merchant call (authorize), then the ride read, the
driver's account inquiry, one commit creating the capture's three legs, the three P2P
calls and one commit booking all three (the service books each leg as it lands).

Left out, because a caller could be served without them: authentication and admission
(the edge), field validation beyond parsing, logs, metrics, the checks that need no I/O
(linked wallets are remembered in the service too), one KasPro call per attempt in
flight, re-reading what was written, and every error path. Everything is assumed to
succeed: a floor, not a service. ``python -m bench`` runs it as the ``*_floor``
scenarios, so that the service's figures can be read against the least that the same
machine, language and parts allow.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import time
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from wallet.v1 import common_pb2, payment_service_pb2, payment_service_pb2_grpc

from bench import procs
from wallet_service.domain.phone import MobileNumber, parse_mobile_number
from wallet_service.gc_policy import settle_collector
from wallet_service.kaspro import KasProClient, KasProSettings, Outcome, kaspro_request_id
from wallet_service.store.database import Database
from wallet_service.store.money import VOLUME_SQL

ServicerContext = grpc.aio.ServicerContext[Any, Any]
CALLER = "bench"
ESCROW = "888000000000001"
CORPORATE = "888000000000003"
MONTH_SECONDS = 30 * 86400

_KEY_SQL = (
    "SELECT request_hash, state, operation_id FROM idempotency_keys "
    "WHERE caller = ? AND method = ? AND request_id = ?"
)
_INSERT_KEY = (
    "INSERT INTO idempotency_keys (caller, method, request_id, request_hash, state, "
    "response, lease_until, created_at, operation_id, holder) "
    "VALUES (?, ?, ?, ?, 'done', NULL, ?, ?, ?, ?)"
)
_INSERT_TX = (
    "INSERT INTO transactions (id, type, status, amount_idr, fee_idr, mobile_number, "
    "counterparty, ride_id, note, details, withdrawal_code, kaspro_reference, failure_reason, "
    "failure_message, frozen, create_time, update_time) "
    "VALUES (?, ?, 'PENDING', ?, 0, ?, ?, ?, ?, '{}', '', NULL, '', '', '', ?, ?)"
)
_INSERT_ATTEMPT = (
    "INSERT INTO attempts (reference, transaction_id, leg, call, amount_idr, status, "
    "kaspro_reff_id, fee_idr, checks, next_check_at, last_detail, create_time, update_time) "
    "VALUES (?, ?, ?, ?, ?, 'pending', NULL, 0, 0, ?, '', ?, ?)"
)
_INSERT_EVENT = (
    "INSERT INTO events (event_id, type, subject_id, snapshot, occurred_at) VALUES (?, ?, ?, ?, ?)"
)
_ATTEMPT_DONE = (
    "UPDATE attempts SET status = 'succeeded', kaspro_reff_id = ?, update_time = ? "
    "WHERE reference = ? AND status IN ('pending', 'processing')"
)
_INSERT_LINE = (
    "INSERT INTO ledger_lines (transaction_id, reference, account, amount_idr, create_time) "
    "VALUES (?, ?, ?, ?, ?)"
)
_TX_DONE = (
    "UPDATE transactions SET status = 'SUCCEEDED', kaspro_reference = ?, update_time = ? "
    "WHERE id = ? AND status IN ('PENDING', 'PROCESSING')"
)
_INSERT_RIDE = (
    "INSERT INTO ride_payments (ride_id, status, passenger, held_amount_idr, expire_time, "
    "hold_transaction, create_time, update_time) VALUES (?, 'AUTHORIZING', ?, ?, ?, ?, ?, ?)"
)
_RIDE_SQL = "SELECT status, passenger, held_amount_idr FROM ride_payments WHERE ride_id = ?"
_MOVE_RIDE = "UPDATE ride_payments SET status = ?, update_time = ? WHERE ride_id = ? AND status = ?"
_CAPTURING = (
    "UPDATE ride_payments SET status = 'CAPTURING', driver = ?, final_fare_idr = ?, "
    "platform_fee_idr = ?, driver_payout_idr = ?, refund_idr = ?, settle_transaction = ?, "
    "update_time = ? WHERE ride_id = ? AND status = 'AUTHORIZED'"
)


def _timestamp(seconds: float) -> Timestamp:
    stamp = Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


def _tx_snapshot(
    id_: str, type_: str, status: str, amount: int, mobile: str, counterparty: str, now: float
) -> str:
    """An event's full snapshot of a transaction, as large as the service's."""
    return json.dumps(
        {
            "id": id_,
            "type": type_,
            "status": status,
            "amount_idr": amount,
            "mobile_number": mobile,
            "create_time": now,
            "update_time": now,
            "fee_idr": 0,
            "counterparty": counterparty,
            "ride_id": "",
            "note": "",
            "details": {},
            "withdrawal_code": "",
            "kaspro_reference": None,
            "failure_reason": "",
            "failure_message": "",
            "frozen": "",
        }
    )


def _ride_snapshot(ride_id: str, status: str, passenger: str, held: int, now: float) -> str:
    return json.dumps(
        {
            "ride_id": ride_id,
            "status": status,
            "passenger": passenger,
            "held_amount_idr": held,
            "expire_time": now + 86400,
            "hold_transaction": "",
            "create_time": now,
            "update_time": now,
            "driver": "",
            "final_fare_idr": 0,
            "platform_fee_idr": 0,
            "driver_payout_idr": 0,
            "refund_idr": 0,
            "reason": "",
            "settle_transaction": "",
        }
    )


class Floor(payment_service_pb2_grpc.PaymentServiceServicer):
    def __init__(self, db: Database, kaspro: KasProClient) -> None:
        self._db = db
        self._kaspro = kaspro

    async def _key(self, method: str, request_id: str, request: Any) -> bytes:
        digest = hashlib.sha256(request.SerializeToString(deterministic=True)).digest()
        row = await self._db.fetch_one(_KEY_SQL, (CALLER, method, request_id))
        if row is not None:
            raise RuntimeError("the floor answers new requests only")
        return digest

    async def _record_key(
        self, tx: Any, method: str, request_id: str, digest: bytes, operation: str, now: float
    ) -> None:
        await tx.execute(
            _INSERT_KEY,
            (CALLER, method, request_id, digest, now, now, operation, self._db.incarnation),
        )

    async def _event(self, tx: Any, type_: str, subject: str, snapshot: str, now: float) -> None:
        await tx.execute(_INSERT_EVENT, (os.urandom(16).hex(), type_, subject, snapshot, now))
        tx.wrote_events = True

    async def Transfer(
        self, request: payment_service_pb2.TransferRequest, context: ServicerContext
    ) -> payment_service_pb2.TransferResponse:
        digest = await self._key("Transfer", request.request_id, request)
        source = parse_mobile_number(request.from_mobile_number)
        target = parse_mobile_number(request.to_mobile_number)
        amount = request.amount_idr
        await self._kaspro.account_inquiry(target)
        now = time.time()
        await self._db.fetch_one(
            VOLUME_SQL, (f"subscriber:{source.canonical}", now - MONTH_SECONDS)
        )
        txn = f"txn_{os.urandom(16).hex()}"
        reference = kaspro_request_id("transfer", txn)
        call = {
            "endpoint": "p2p",
            "args": {"source": source.canonical, "destination": target.canonical, "amount": amount},
            "lines": [
                [f"subscriber:{source.canonical}", -amount],
                [f"subscriber:{target.canonical}", amount],
            ],
        }
        async with self._db.transaction() as tx:
            await tx.execute(
                _INSERT_TX,
                (txn, "TRANSFER", amount, source.canonical, target.canonical, "", "", now, now),
            )
            await tx.execute(
                _INSERT_ATTEMPT,
                (reference, txn, "transfer", json.dumps(call), amount, now + 30, now, now),
            )
            snapshot = _tx_snapshot(
                txn, "TRANSFER", "PENDING", amount, source.canonical, target.canonical, now
            )
            await self._event(tx, "TRANSACTION_UPDATED", txn, snapshot, now)
            await self._record_key(tx, "Transfer", request.request_id, digest, txn, now)
        reply = await self._kaspro.p2p_transfer(reference, source, target, amount, request.note)
        if reply.outcome is not Outcome.SUCCEEDED:
            raise RuntimeError(f"KasPro answered {reply.outcome}")
        now = time.time()
        async with self._db.transaction() as tx:
            await tx.execute(_ATTEMPT_DONE, (reply.reff_id, now, reference))
            await self._book(tx, txn, reference, source, f"subscriber:{target.canonical}", amount)
            await tx.execute(_TX_DONE, (reply.reff_id, now, txn))
            snapshot = _tx_snapshot(
                txn, "TRANSFER", "SUCCEEDED", amount, source.canonical, target.canonical, now
            )
            await self._event(tx, "TRANSACTION_UPDATED", txn, snapshot, now)
        return payment_service_pb2.TransferResponse(
            transaction=common_pb2.Transaction(
                transaction_id=txn,
                type=common_pb2.TRANSACTION_TYPE_TRANSFER,
                status=common_pb2.TRANSACTION_STATUS_SUCCEEDED,
                amount_idr=amount,
                mobile_number=f"+{source.canonical}",
                counterparty_mobile_number=f"+{target.canonical}",
                note=request.note,
                kaspro_reference=reply.reff_id or "",
                create_time=_timestamp(now),
                update_time=_timestamp(now),
            )
        )

    async def _book(
        self, tx: Any, txn: str, reference: str, payer: MobileNumber | str, to: str, amount: int
    ) -> None:
        source = payer if isinstance(payer, str) else f"subscriber:{payer.canonical}"
        now = time.time()
        await tx.execute(_INSERT_LINE, (txn, reference, source, -amount, now))
        await tx.execute(_INSERT_LINE, (txn, reference, to, amount, now))

    async def AuthorizeRidePayment(
        self, request: payment_service_pb2.AuthorizeRidePaymentRequest, context: ServicerContext
    ) -> payment_service_pb2.AuthorizeRidePaymentResponse:
        digest = await self._key("AuthorizeRidePayment", request.request_id, request)
        passenger = parse_mobile_number(request.passenger_mobile_number)
        ride_id, amount = request.ride_id, request.amount_idr
        now = time.time()
        await self._db.fetch_one(
            VOLUME_SQL, (f"subscriber:{passenger.canonical}", now - MONTH_SECONDS)
        )
        hold = f"txn_{os.urandom(16).hex()}"
        reference = kaspro_request_id("ride", ride_id, "hold")
        call = {
            "endpoint": "payment",
            "args": {"payer": passenger.canonical, "amount": amount, "reference": hold},
            "lines": [[f"subscriber:{passenger.canonical}", -amount], ["escrow", amount]],
        }
        async with self._db.transaction() as tx:
            await tx.execute(
                _INSERT_TX,
                (hold, "RIDE_HOLD", amount, passenger.canonical, "", ride_id, "", now, now),
            )
            await tx.execute(
                _INSERT_ATTEMPT,
                (reference, hold, "hold", json.dumps(call), amount, now + 30, now, now),
            )
            await tx.execute(
                _INSERT_RIDE, (ride_id, passenger.canonical, amount, now + 86400, hold, now, now)
            )
            snapshot = _tx_snapshot(
                hold, "RIDE_HOLD", "PENDING", amount, passenger.canonical, "", now
            )
            await self._event(tx, "TRANSACTION_UPDATED", hold, snapshot, now)
            ride = _ride_snapshot(ride_id, "AUTHORIZING", passenger.canonical, amount, now)
            await self._event(tx, "RIDE_PAYMENT_UPDATED", ride_id, ride, now)
            operation = f"ride:{ride_id}"
            await self._record_key(
                tx, "AuthorizeRidePayment", request.request_id, digest, operation, now
            )
        reply = await self._kaspro.pay_to_merchant(reference, passenger, amount, hold, ESCROW)
        if reply.outcome is not Outcome.SUCCEEDED:
            raise RuntimeError(f"KasPro answered {reply.outcome}")
        now = time.time()
        async with self._db.transaction() as tx:
            await tx.execute(_ATTEMPT_DONE, (reply.reff_id, now, reference))
            await self._book(tx, hold, reference, passenger, "escrow", amount)
            await tx.execute(_TX_DONE, (reply.reff_id, now, hold))
            snapshot = _tx_snapshot(
                hold, "RIDE_HOLD", "SUCCEEDED", amount, passenger.canonical, "", now
            )
            await self._event(tx, "TRANSACTION_UPDATED", hold, snapshot, now)
            await tx.execute(_MOVE_RIDE, ("AUTHORIZED", now, ride_id, "AUTHORIZING"))
            ride = _ride_snapshot(ride_id, "AUTHORIZED", passenger.canonical, amount, now)
            await self._event(tx, "RIDE_PAYMENT_UPDATED", ride_id, ride, now)
        return payment_service_pb2.AuthorizeRidePaymentResponse(
            ride_payment=common_pb2.RidePayment(
                ride_id=ride_id,
                status=common_pb2.RIDE_PAYMENT_STATUS_AUTHORIZED,
                passenger_mobile_number=f"+{passenger.canonical}",
                held_amount_idr=amount,
                expire_time=_timestamp(now + 86400),
                create_time=_timestamp(now),
                update_time=_timestamp(now),
            )
        )

    async def CaptureRidePayment(
        self, request: payment_service_pb2.CaptureRidePaymentRequest, context: ServicerContext
    ) -> payment_service_pb2.CaptureRidePaymentResponse:
        digest = await self._key("CaptureRidePayment", request.request_id, request)
        ride_id = request.ride_id
        driver = parse_mobile_number(request.driver_mobile_number)
        row = await self._db.fetch_one(_RIDE_SQL, (ride_id,))
        assert row is not None
        assert row["status"] == "AUTHORIZED"
        passenger = MobileNumber(row["passenger"][2:])
        held, fare, fee = row["held_amount_idr"], request.final_fare_idr, request.platform_fee_idr
        payout, refund = fare - fee, held - fare
        await self._kaspro.account_inquiry(driver)
        now = time.time()
        capture = f"txn_{os.urandom(16).hex()}"
        legs = [
            (leg, amount, party, account)
            for leg, amount, party, account in (
                ("payout", payout, driver, f"subscriber:{driver.canonical}"),
                ("fee", fee, CORPORATE, "corporate"),
                ("refund", refund, passenger, f"subscriber:{passenger.canonical}"),
            )
            if amount > 0
        ]
        references = [kaspro_request_id("ride", ride_id, leg) for leg, *_ in legs]
        async with self._db.transaction() as tx:
            await tx.execute(
                _CAPTURING, (driver.canonical, fare, fee, payout, refund, capture, now, ride_id)
            )
            await tx.execute(
                _INSERT_TX,
                (
                    capture,
                    "RIDE_CAPTURE",
                    held,
                    passenger.canonical,
                    driver.canonical,
                    ride_id,
                    "",
                    now,
                    now,
                ),
            )
            for reference, (leg, amount, _, account) in zip(references, legs, strict=True):
                call = {
                    "endpoint": "p2p",
                    "args": {"source": f"account:{ESCROW}", "destination": account},
                    "lines": [["escrow", -amount], [account, amount]],
                }
                await tx.execute(
                    _INSERT_ATTEMPT,
                    (reference, capture, leg, json.dumps(call), amount, now + 30, now, now),
                )
            snapshot = _tx_snapshot(
                capture, "RIDE_CAPTURE", "PENDING", held, passenger.canonical, driver.canonical, now
            )
            await self._event(tx, "TRANSACTION_UPDATED", capture, snapshot, now)
            ride = _ride_snapshot(ride_id, "CAPTURING", passenger.canonical, held, now)
            await self._event(tx, "RIDE_PAYMENT_UPDATED", ride_id, ride, now)
            operation = f"ride:{ride_id}"
            await self._record_key(
                tx, "CaptureRidePayment", request.request_id, digest, operation, now
            )
        replies = []
        for reference, (leg, amount, party, _) in zip(references, legs, strict=True):
            reply = await self._kaspro.p2p_transfer(
                reference, ESCROW, party, amount, f"ride {ride_id} {leg}"
            )
            if reply.outcome is not Outcome.SUCCEEDED:
                raise RuntimeError(f"KasPro answered {reply.outcome}")
            replies.append(reply)
        now = time.time()
        async with self._db.transaction() as tx:
            for reference, reply, (_, amount, _, account) in zip(
                references, replies, legs, strict=True
            ):
                await tx.execute(_ATTEMPT_DONE, (reply.reff_id, now, reference))
                await self._book(tx, capture, reference, "escrow", account, amount)
            await tx.execute(_TX_DONE, (replies[0].reff_id, now, capture))
            snapshot = _tx_snapshot(
                capture,
                "RIDE_CAPTURE",
                "SUCCEEDED",
                held,
                passenger.canonical,
                driver.canonical,
                now,
            )
            await self._event(tx, "TRANSACTION_UPDATED", capture, snapshot, now)
            await tx.execute(_MOVE_RIDE, ("CAPTURED", now, ride_id, "CAPTURING"))
            ride = _ride_snapshot(ride_id, "CAPTURED", passenger.canonical, held, now)
            await self._event(tx, "RIDE_PAYMENT_UPDATED", ride_id, ride, now)
        return payment_service_pb2.CaptureRidePaymentResponse(
            ride_payment=common_pb2.RidePayment(
                ride_id=ride_id,
                status=common_pb2.RIDE_PAYMENT_STATUS_CAPTURED,
                passenger_mobile_number=f"+{passenger.canonical}",
                driver_mobile_number=f"+{driver.canonical}",
                held_amount_idr=held,
                final_fare_idr=fare,
                platform_fee_idr=fee,
                driver_payout_idr=payout,
                refund_idr=refund,
                expire_time=_timestamp(now + 86400),
                create_time=_timestamp(now),
                update_time=_timestamp(now),
            )
        )


async def serve(port: int, db_path: str, kaspro_url: str) -> None:
    db = await Database.open(db_path)
    kaspro = KasProClient(
        KasProSettings(
            base_url=kaspro_url,
            client_id="wallet-dev",
            client_secret="wallet-dev-secret",
            hmac_key="wallet-dev-key",
            hmac_secret="wallet-dev-hmac-secret",
            timeout_seconds=30,
            ekyc_timeout_seconds=30,
            max_connections=1024,  # the service's default
        )
    )
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", 21 * 1024 * 1024),
            ("grpc.max_send_message_length", 21 * 1024 * 1024),
            ("grpc.so_reuseport", 0),
        ]
    )
    # The RPCs the floor does not serve answer UNIMPLEMENTED (the generated base class).
    floor = Floor(db, kaspro)  # type: ignore[abstract]
    payment_service_pb2_grpc.add_PaymentServiceServicer_to_server(floor, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    settle_collector()
    await procs.until_stopped()
    await server.stop(1)
    await kaspro.aclose()
    await db.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--db", required=True)
    parser.add_argument("--kaspro", required=True, help="the sandbox's base URL")
    args = parser.parse_args()
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(serve(args.port, args.db, args.kaspro))


if __name__ == "__main__":
    main()
