"""Several `wallet-service serve` processes on one PostgreSQL database and one standalone
sandbox process, and what the tests read from them: answers over gRPC, the sandbox's
request log and books, and the service's tables."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import httpx
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from wallet.v1 import (
    account_service_pb2,
    account_service_pb2_grpc,
    common_pb2,
    funding_service_pb2_grpc,
    payment_service_pb2,
    payment_service_pb2_grpc,
    transaction_service_pb2,
    transaction_service_pb2_grpc,
)

from wallet_service import cluster
from wallet_service.cluster import Process, ReplicaPorts

ROOT = Path(__file__).resolve().parents[2]
# Each test's database is named after the checkout's folder, so that two checkouts
# sharing one server never meet.
_CHECKOUT = re.sub(r"[^a-z0-9]+", "_", ROOT.name.lower()).strip("_")[:30] or "wallet"
DATABASE_PREFIX = f"{_CHECKOUT}_replicas"

APP_TOKEN = "replicas-app-token"
DISPATCH_TOKEN = "replicas-dispatch-token"
ADMIN_TOKEN = "replicas-admin-token"
CALLERS = f"app:app:{APP_TOKEN};dispatch:dispatch:{DISPATCH_TOKEN};ops:admin:{ADMIN_TOKEN}"
APP = (("authorization", f"Bearer {APP_TOKEN}"),)
DISPATCH = (("authorization", f"Bearer {DISPATCH_TOKEN}"),)
ADMIN = (("authorization", f"Bearer {ADMIN_TOKEN}"),)

# A caller's deadline for ordinary calls: generous, but a hang still fails the test.
DEADLINE = 10.0
# How long a condition may take to hold before the test fails.
PATIENCE = 30.0

# Every replica's settings in these tests, unless a test says otherwise: few database
# connections (several replicas, and other tests, share one server), a quick reconciler,
# a short stop.
SETTINGS = {
    "WALLET_DB_POOL_SIZE": "3",
    "WALLET_RECONCILE_INTERVAL_SECONDS": "0.2",
    "WALLET_GRACE_PERIOD_SECONDS": "1",
    "WALLET_LOG_LEVEL": "INFO",
}

P2P_PATH = "/p2p-transaction/"
VALIDATE_OTP_PATH = "/validate-otp/"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class Failure:
    """A failed call: its status code and the wallet.v1 reason of its ErrorInfo."""

    code: grpc.StatusCode
    reason: str


def failure_of(error: grpc.aio.AioRpcError) -> Failure:
    reason = ""
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            for detail in status_pb2.Status.FromString(value).details:
                if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                    info = error_details_pb2.ErrorInfo()
                    detail.Unpack(info)
                    reason = info.reason
    return Failure(error.code(), reason)


async def outcome(call: Awaitable[Any]) -> Any:
    """The call's answer, or its Failure."""
    try:
        return await call
    except grpc.aio.AioRpcError as error:
        return failure_of(error)


@dataclass
class Replica:
    """One `wallet-service serve` process and a channel to it."""

    name: str
    ports: ReplicaPorts
    process: Process
    channel: grpc.aio.Channel

    def __post_init__(self) -> None:
        self.accounts = account_service_pb2_grpc.AccountServiceStub(self.channel)
        self.funding = funding_service_pb2_grpc.FundingServiceStub(self.channel)
        self.payments = payment_service_pb2_grpc.PaymentServiceStub(self.channel)
        self.transactions = transaction_service_pb2_grpc.TransactionServiceStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)

    def log(self) -> str:
        return self.process.log.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs; its calls and transactions are cut."""
        self.process.kill()

    async def until_serving(self) -> None:
        """Wait until the gRPC health check answers SERVING; fail if the process exits."""
        deadline = asyncio.get_running_loop().time() + cluster.START_SECONDS
        while True:
            code = self.process.exited()
            assert code is None, f"{self.name} exited ({code}) while starting:\n{self.log()}"
            try:
                answer = await self.health.Check(health_pb2.HealthCheckRequest(), timeout=0.5)
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            assert asyncio.get_running_loop().time() < deadline, f"{self.name} is not SERVING"
            await asyncio.sleep(0.05)

    # The calls the tests make, on this replica.

    async def register(self, mobile: str, name: str = "Budi") -> common_pb2.Account:
        response = await self.accounts.RegisterCustomer(
            account_service_pb2.RegisterCustomerRequest(
                request_id=f"register-{mobile}",
                mobile_number=mobile,
                first_name=name,
                last_name="Santoso",
                email="budi@example.com",
            ),
            metadata=APP,
            timeout=DEADLINE,
        )
        return response.account

    async def request_otp(self, mobile: str) -> None:
        await self.accounts.RequestOtp(
            account_service_pb2.RequestOtpRequest(mobile_number=mobile),
            metadata=APP,
            timeout=DEADLINE,
        )

    async def verify_otp(self, mobile: str, otp: str) -> common_pb2.Account:
        response = await self.accounts.VerifyOtp(
            account_service_pb2.VerifyOtpRequest(mobile_number=mobile, otp=otp),
            metadata=APP,
            timeout=DEADLINE,
        )
        return response.account

    async def get_account(self, mobile: str) -> common_pb2.Account:
        response = await self.accounts.GetAccount(
            account_service_pb2.GetAccountRequest(mobile_number=mobile),
            metadata=APP,
            timeout=DEADLINE,
        )
        return response.account

    async def transfer(
        self, request_id: str, sender: str, receiver: str, amount_idr: int
    ) -> common_pb2.Transaction:
        response = await self.payments.Transfer(
            payment_service_pb2.TransferRequest(
                request_id=request_id,
                from_mobile_number=sender,
                to_mobile_number=receiver,
                amount_idr=amount_idr,
                note="replicas",
            ),
            metadata=APP,
            timeout=DEADLINE,
        )
        return response.transaction

    async def ride(self, ride_id: str) -> common_pb2.RidePayment:
        response = await self.payments.GetRidePayment(
            payment_service_pb2.GetRidePaymentRequest(ride_id=ride_id),
            metadata=DISPATCH,
            timeout=DEADLINE,
        )
        return response.ride_payment

    async def watch(self, after: int) -> AsyncIterator[common_pb2.Event]:
        """WatchEvents from ``after``, event by event, until the caller stops reading."""
        call = self.transactions.WatchEvents(
            transaction_service_pb2.WatchEventsRequest(after_sequence=after), metadata=ADMIN
        )
        try:
            async for response in call:
                yield response.event
        finally:
            call.cancel()


@dataclass
class Cluster:
    """A standalone sandbox on a fresh database; replicas are started by the test."""

    db_url: str
    workdir: Path
    db: asyncpg.Connection
    control_client: httpx.AsyncClient
    sandbox: Process
    sandbox_port: int
    # The sandbox calls back the first replica's HTTP port; its ports are chosen first.
    first_ports: ReplicaPorts
    replicas: list[Replica] = field(default_factory=list)
    _started: int = 0

    @property
    def sandbox_url(self) -> str:
        return f"http://127.0.0.1:{self.sandbox_port}"

    async def start_replicas(self, count: int, **settings: str) -> list[Replica]:
        """``count`` more replicas started together, once each answers SERVING."""
        started = [self.spawn_replica(**settings) for _ in range(count)]
        await asyncio.gather(*(r.until_serving() for r in started))
        return started

    def spawn_replica(self, **settings: str) -> Replica:
        """Start one more replica (not waiting for it): ``settings`` are WALLET_* values."""
        self._started += 1
        ports = self.first_ports if self._started == 1 else ReplicaPorts(free_port(), free_port())
        base = {**cluster.without_wallet_settings(os.environ), **SETTINGS, **settings}
        env = cluster.replica_env(base, self.db_url, ports, self.sandbox_url, CALLERS)
        name = f"replica-{self._started}"
        process = cluster.spawn(
            name, ["-m", "wallet_service", "serve"], env, self.workdir / f"{name}.log"
        )
        replica = Replica(name, ports, process, grpc.aio.insecure_channel(ports.target))
        self.replicas.append(replica)
        return replica

    async def stop(self) -> None:
        for replica in self.replicas:
            await replica.channel.close()
        for process in (*(r.process for r in self.replicas), self.sandbox):
            if process.exited() is None:
                process.popen.send_signal(signal.SIGTERM)
        for process in (*(r.process for r in self.replicas), self.sandbox):
            await asyncio.to_thread(process.stop)

    # The sandbox (docs/sandbox.md).

    async def control(self, method: str, path: str, **kwargs: Any) -> Any:
        response = await self.control_client.request(method, "/_sandbox" + path, **kwargs)
        response.raise_for_status()
        return response.json()

    async def kaspro_requests(self, path: str) -> list[dict[str, Any]]:
        """The calls to ``path`` in the sandbox's request log."""
        entries: list[dict[str, Any]] = await self.control("GET", "/requests")
        return [e for e in entries if e["path"] == path]

    async def otp(self, mobile: str) -> str:
        issued = await self.control("GET", "/otp", params={"mobileNumber": mobile})
        code: str = issued["otp"]
        return code

    async def onboard(self, replica: Replica, mobile: str, balance_idr: int = 0) -> None:
        """Register and link a wallet through ``replica``; a top-up when asked."""
        await replica.register(mobile)
        await replica.request_otp(mobile)
        await replica.verify_otp(mobile, await self.otp(mobile))
        if balance_idr:
            await self.top_up(mobile, balance_idr)

    async def top_up(self, mobile: str, amount_idr: int) -> None:
        """Pay the wallet's VA at the sandbox; wait until a replica booked the callback."""
        sent = await self.control(
            "POST",
            "/topup",
            json={
                "mobileNumber": mobile,
                "amount": amount_idr,
                "channel": "VA",
                "vaNumber": "39358" + mobile[1:],
            },
        )

        async def booked() -> bool:
            found = await self.db.fetchval(
                "SELECT count(*) FROM transactions WHERE kaspro_reference = $1", sent["reffId"]
            )
            return bool(found)

        await until(booked)

    # The books.

    async def ledger(self) -> dict[str, int]:
        """The service's ledger balance per account."""
        rows = await self.db.fetch(
            "SELECT account, SUM(amount_idr) AS total FROM ledger_lines GROUP BY account"
        )
        return {row["account"]: int(row["total"]) for row in rows}

    async def assert_books_agree(self) -> None:
        """Our ledger equals the sandbox's balances, and every transaction sums to zero."""
        ledger = await self.ledger()
        sandbox = await self.control("GET", "/balances")
        for local, balance in sandbox["subscribers"].items():
            assert ledger.get(f"subscriber:62{local[1:]}", 0) == balance, (local, ledger)
        for name in ("escrow", "corporate"):
            assert ledger.get(name, 0) == sandbox["platform"][name], (name, ledger, sandbox)
        unbalanced = await self.db.fetch(
            "SELECT transaction_id FROM ledger_lines GROUP BY transaction_id "
            "HAVING SUM(amount_idr) != 0"
        )
        assert unbalanced == []


async def until(condition: Callable[[], Awaitable[bool]], timeout: float = PATIENCE) -> None:
    """Poll ``condition`` until it holds; fail after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await condition():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


def log_records(replica: Replica) -> list[dict[str, Any]]:
    """The replica's JSON log lines (its other output left out)."""
    records = []
    for line in replica.log().splitlines():
        if line.startswith("{"):
            records.append(json.loads(line))
    return records
