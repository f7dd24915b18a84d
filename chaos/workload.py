"""The callers: onboarding, then the scenarios from many concurrent callers that retry their
own request with the same request_id, as real callers do, and record what they finally saw.

With several replicas, each operation starts at a replica the caller picks at random; a
try the replica did not answer (down, connection cut, deadline) is sent again to another
one, and any other retry or status poll to a replica picked afresh — so one request's
tries meet on different replicas, as behind a load balancer.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
import httpx
from google.rpc import error_details_pb2, status_pb2
from wallet.v1 import (
    account_service_pb2,
    account_service_pb2_grpc,
    common_pb2,
    funding_service_pb2,
    funding_service_pb2_grpc,
    payment_service_pb2,
    payment_service_pb2_grpc,
    transaction_service_pb2,
    transaction_service_pb2_grpc,
)

from chaos import qris
from chaos.plan import CashOut, Customers, Qris, Ride, Scenario, TopUp, Transfer
from chaos.stack import TOKENS

T = TypeVar("T")

RPC_TIMEOUT_SECONDS = 8.0
# How long a caller keeps retrying one operation during the workload before it puts it
# aside for the final pass (an operation whose KasPro outcome stays unknown is answered
# UNAVAILABLE until the reconciler settles it, which may take until the faults are off).
OP_BUDGET_SECONDS = 20.0
ABORTED_BUDGET_SECONDS = 6.0
CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
]
CHANNELS_PER_REPLICA = 4
# How the service's INTERNAL answers begin (wallet_service/api/errors.py).
INCIDENT_PREFIX = "internal error (incident "
# Top-up number prefixes (the service's defaults, wallet_service/domain/funding.py).
VA_PREFIX = {False: "39358", True: "39359"}
RETAIL_PREFIX = {
    ("ALFAMART", False): "7010",
    ("INDOMARET", False): "7020",
    ("ALFAMART", True): "7011",
    ("INDOMARET", True): "7021",
}
PASSENGER_FUNDING_IDR = 400_000
DRIVER_FUNDING_IDR = 100_000

RIDE_STATUS = {
    v: k.removeprefix("RIDE_PAYMENT_STATUS_") for k, v in common_pb2.RidePaymentStatus.items()
}
TX_STATUS = {
    v: k.removeprefix("TRANSACTION_STATUS_") for k, v in common_pb2.TransactionStatus.items()
}


@dataclass
class OpRecord:
    """One money operation as its caller saw it."""

    op_id: str
    kind: str  # authorize capture void tip transfer cash_out qris topup
    caller: str  # app | dispatch | sandbox (a top-up is KasPro's doing)
    method: str
    request_id: str
    phase: str = "workload"  # setup | workload
    ride_id: str = ""
    amount_idr: int = 0
    # ok: an answer with the resource; refused: a definite refusal; unknown: no
    # definite answer within the budget; unexpected: an answer the contract rules out.
    outcome: str = "pending"
    status: str = ""  # the resource's status in the last answer
    reason: str = ""  # refusal reason, or the last retryable error when unknown
    transaction_id: str = ""
    tries: int = 0
    retries: int = 0
    polls: int = 0
    retry_codes: Counter[str] = field(default_factory=Counter)
    first_try_at: float = 0.0
    last_try_at: float = 0.0
    deferred: bool = False
    # Tries sent to another replica because the last one did not answer.
    moved: int = 0
    # The service's INTERNAL answers to tries of this operation (retried, as a caller
    # would; each one a violation of the contract).
    incidents: list[str] = field(default_factory=list)
    # Top-ups: KasPro's ids from the sandbox's answer.
    kaspro_request_id: str = ""
    kaspro_reff_id: str = ""

    def to_json(self) -> dict[str, Any]:
        data = {k: v for k, v in self.__dict__.items() if k != "retry_codes"}
        data["retry_codes"] = dict(self.retry_codes)
        return data


@dataclass
class Failure:
    code: grpc.StatusCode
    reason: str
    message: str
    metadata: dict[str, str]


def failure_of(error: grpc.aio.AioRpcError) -> Failure:
    reason = ""
    metadata: dict[str, str] = {}
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            status = status_pb2.Status.FromString(value)
            for detail in status.details:
                if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                    info = error_details_pb2.ErrorInfo()
                    detail.Unpack(info)
                    reason, metadata = info.reason, dict(info.metadata)
    return Failure(error.code(), reason, error.details() or "", metadata)


def retryable(failure: Failure) -> bool:
    """What a real caller retries with the same request_id."""
    code = failure.code
    if code in (
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.UNKNOWN,
    ):
        return True
    if code is grpc.StatusCode.RESOURCE_EXHAUSTED and failure.reason == "OVERLOADED":
        return True
    # A connection cut mid-call can surface as INTERNAL; so does the service's own
    # (an unexpected error, "internal error (incident …)"), which a caller retries too,
    # and which ``incident`` tells apart for the auditor.
    return code is grpc.StatusCode.INTERNAL and not failure.reason


def incident(failure: Failure) -> bool:
    """The service's INTERNAL answer to an unexpected error: the contract rules it out."""
    return failure.code is grpc.StatusCode.INTERNAL and failure.message.startswith(INCIDENT_PREFIX)


@dataclass(frozen=True)
class Stubs:
    """The services of one channel (to one replica)."""

    payment: payment_service_pb2_grpc.PaymentServiceAsyncStub
    funding: funding_service_pb2_grpc.FundingServiceAsyncStub
    account: account_service_pb2_grpc.AccountServiceAsyncStub
    transactions: transaction_service_pb2_grpc.TransactionServiceAsyncStub

    @classmethod
    def of(cls, channel: grpc.aio.Channel) -> Stubs:
        return cls(
            payment_service_pb2_grpc.PaymentServiceStub(channel),
            funding_service_pb2_grpc.FundingServiceStub(channel),
            account_service_pb2_grpc.AccountServiceStub(channel),
            transaction_service_pb2_grpc.TransactionServiceStub(channel),
        )


# A money RPC: its method on a channel's stubs, e.g. ``lambda s: s.payment.Transfer``.
Send = Callable[[Stubs], Callable[..., Awaitable[Any]]]
# One try: the stubs of the replica to send it to, and its deadline.
Invoke = Callable[[Stubs, float], Awaitable[T]]


def label(failure: Failure) -> str:
    return f"{failure.code.name}/{failure.reason}" if failure.reason else failure.code.name


# The status a ride call passes through before its answer is final.
_PASSING = {"authorize": "AUTHORIZING", "capture": "CAPTURING", "void": "VOIDING"}


def _ride_status(answer: Any) -> tuple[str, str]:
    return RIDE_STATUS[answer.ride_payment.status], ""


def _method_name(request: Any) -> str:
    """The RPC a request message is for: every one is named ``<Method>Request``."""
    return str(type(request).__name__.removesuffix("Request"))


def _transaction_status(answer: Any) -> tuple[str, str]:
    transaction = answer.transaction
    return TX_STATUS[transaction.status], transaction.transaction_id


class Callers:
    """Channels, stubs and the record of every operation."""

    def __init__(self, targets: list[str], sandbox_url: str, seed: int) -> None:
        self.channels = [
            [
                grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)
                for _ in range(CHANNELS_PER_REPLICA)
            ]
            for target in targets
        ]
        self.stubs = [[Stubs.of(channel) for channel in row] for row in self.channels]
        # Tries sent to each replica (index).
        self.tries_at = [0] * len(targets)
        self.control = httpx.AsyncClient(base_url=sandbox_url, timeout=30)
        self.seed = seed
        self.records: list[OpRecord] = []
        self.started = 0  # workload operations begun
        self.finished = 0  # workload operations with an outcome (the killer's clock)
        self.progress = asyncio.Event()
        self.deferred: list[tuple[OpRecord, Invoke[Any], int, Any]] = []

    @property
    def replicas(self) -> int:
        return len(self.channels)

    def _stubs(self, replica: int, worker: int) -> Stubs:
        return self.stubs[replica][worker % CHANNELS_PER_REPLICA]

    def _another(self, replica: int, rng: random.Random) -> int:
        """A replica other than ``replica``."""
        return (replica + 1 + rng.randrange(self.replicas - 1)) % self.replicas

    async def close(self) -> None:
        for row in self.channels:
            for channel in row:
                await channel.close()
        await self.control.aclose()

    @staticmethod
    def metadata(role: str) -> tuple[tuple[str, str]]:
        return (("authorization", f"Bearer {TOKENS[role]}"),)

    def record(self, **fields: Any) -> OpRecord:
        record = OpRecord(**fields)
        self.records.append(record)
        if record.phase == "workload":
            self.started += 1
        return record

    def _finish(self, record: OpRecord) -> None:
        if record.phase == "workload":
            self.finished += 1
            self.progress.set()

    async def call(
        self,
        record: OpRecord,
        invoke: Invoke[T],
        *,
        done: Callable[[T], bool],
        describe: Callable[[T], tuple[str, str]],
        rng: random.Random,
        worker: int,
        budget: float = OP_BUDGET_SECONDS,
        final: bool = True,
    ) -> T | None:
        """Call until a definite answer (retrying with the same request), or give up."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        aborted_since: float | None = None
        delay = 0.05
        if not record.first_try_at:
            record.first_try_at = time.time()
        # One replica: no draw, so its runs use their generators as they always did.
        replica = rng.randrange(self.replicas) if self.replicas > 1 else 0
        while True:
            record.tries += 1
            record.last_try_at = time.time()
            self.tries_at[replica] += 1
            try:
                answer = await invoke(self._stubs(replica, worker), RPC_TIMEOUT_SECONDS)
            except grpc.aio.AioRpcError as error:
                failure = failure_of(error)
                if retryable(failure):
                    record.retries += 1
                    record.retry_codes[label(failure)] += 1
                    if incident(failure):
                        record.incidents.append(failure.message)
                    if self.replicas > 1:
                        if failure.reason:  # the service answered: any replica will do
                            replica = rng.randrange(self.replicas)
                        else:  # no answer from this replica: down, cut or too slow
                            replica = self._another(replica, rng)
                            record.moved += 1
                    now = loop.time()
                    if failure.code is grpc.StatusCode.ABORTED:
                        aborted_since = aborted_since or now
                    else:
                        aborted_since = None
                    stuck = aborted_since is not None and now - aborted_since > min(
                        ABORTED_BUDGET_SECONDS, budget
                    )
                    if now - started > budget or stuck:
                        record.outcome, record.reason = "unknown", label(failure)
                        if final:
                            self._finish(record)
                        return None
                    await asyncio.sleep(delay * (0.5 + rng.random()))
                    delay = min(delay * 2, 2.0)
                    continue
                record.outcome = (
                    "refused"
                    if failure.code is grpc.StatusCode.FAILED_PRECONDITION
                    else "unexpected"
                )
                record.reason = label(failure)
                record.transaction_id = failure.metadata.get("transaction_id", "")
                if final:
                    self._finish(record)
                return None
            record.status, record.transaction_id = describe(answer)
            if done(answer) or loop.time() - started > budget:
                record.outcome, record.reason = "ok", ""
                if final:
                    self._finish(record)
                return answer
            record.polls += 1
            if self.replicas > 1:
                replica = rng.randrange(self.replicas)
            await asyncio.sleep(0.3)

    # Onboarding (set-up: no workload counters).

    async def onboard(self, people: Customers, concurrency: int) -> list[str]:
        """Register and link every customer, then fund them with top-ups; problems."""
        problems: list[str] = []
        queue = list(people.everyone)
        rng = random.Random(f"onboard-{self.seed}")

        async def one(worker: int) -> None:
            while queue:
                number = queue.pop(0)
                if not await self._link(worker, number, rng, worker % self.replicas):
                    problems.append(f"could not onboard {number}")

        await asyncio.gather(*(one(w) for w in range(concurrency)))
        for number in people.everyone:
            driver = number in people.drivers
            amount = DRIVER_FUNDING_IDR if driver else PASSENGER_FUNDING_IDR
            await self.top_up(TopUp(0, number, driver, amount, "VA"), phase="setup")
        return problems

    async def _link(self, worker: int, number: str, rng: random.Random, replica: int) -> bool:
        """Register and link ``number``; every retry goes to the next replica."""
        md = self.metadata("app")
        for _ in range(20):
            stub = self._stubs(replica, worker).account
            replica = (replica + 1) % self.replicas
            try:
                await stub.RegisterCustomer(
                    account_service_pb2.RegisterCustomerRequest(
                        request_id=f"reg-{number}", mobile_number=number, first_name="Chaos"
                    ),
                    metadata=md,
                    timeout=RPC_TIMEOUT_SECONDS,
                )
                break
            except grpc.aio.AioRpcError as error:
                failure = failure_of(error)
                if failure.reason == "CUSTOMER_ALREADY_REGISTERED":
                    break
                if not retryable(failure):
                    return False
                await asyncio.sleep(0.1 + rng.random() * 0.2)
        for _ in range(20):
            stub = self._stubs(replica, worker).account
            replica = (replica + 1) % self.replicas
            try:
                await stub.RequestOtp(
                    account_service_pb2.RequestOtpRequest(mobile_number=number),
                    metadata=md,
                    timeout=RPC_TIMEOUT_SECONDS,
                )
                otp = await self.control.get("/_sandbox/otp", params={"mobileNumber": number})
                if otp.status_code != 200:
                    continue
                await stub.VerifyOtp(
                    account_service_pb2.VerifyOtpRequest(
                        mobile_number=number, otp=otp.json()["otp"]
                    ),
                    metadata=md,
                    timeout=RPC_TIMEOUT_SECONDS,
                )
                return True
            except grpc.aio.AioRpcError:
                # Unknown outcomes and used-up OTPs alike: ask whether it is linked.
                try:
                    account = await stub.GetAccount(
                        account_service_pb2.GetAccountRequest(mobile_number=number),
                        metadata=md,
                        timeout=RPC_TIMEOUT_SECONDS,
                    )
                    if account.account.linked:
                        return True
                except grpc.aio.AioRpcError:
                    pass
                await asyncio.sleep(0.1 + rng.random() * 0.2)
        return False

    async def serves(self, replica: int, number: str) -> bool:
        """Whether ``replica`` answers a read of its database (ListTransactions of
        ``number``: no KasPro call, so no KasPro fault either)."""
        try:
            await self._stubs(replica, 0).transactions.ListTransactions(
                transaction_service_pb2.ListTransactionsRequest(mobile_number=number),
                metadata=self.metadata("app"),
                timeout=RPC_TIMEOUT_SECONDS,
            )
        except grpc.aio.AioRpcError:
            return False
        return True

    # The scenarios.

    async def run(self, scenarios: list[Scenario], concurrency: int, ops: int) -> None:
        """Play the scenarios in order until ``ops`` operations were started (a ride
        whose hold was refused stops early, so the plan holds more than needed)."""
        queue = list(reversed(scenarios))

        async def worker(n: int) -> None:
            rng = random.Random(f"caller-{self.seed}-{n}")
            while queue and self.started < ops:
                await self.play(queue.pop(), n, rng)

        await asyncio.gather(*(worker(n) for n in range(concurrency)))

    async def play(self, scenario: Scenario, worker: int, rng: random.Random) -> None:
        if isinstance(scenario, Ride):
            await self._ride(scenario, worker, rng)
        elif isinstance(scenario, Transfer):
            await self._transfer(scenario, worker, rng)
        elif isinstance(scenario, CashOut):
            await self._cash_out(scenario, worker, rng)
        elif isinstance(scenario, Qris):
            await self._qris(scenario, worker, rng)
        else:
            await self.top_up(scenario)

    async def _ride(self, ride: Ride, worker: int, rng: random.Random) -> None:
        authorize = payment_service_pb2.AuthorizeRidePaymentRequest(
            request_id=f"auth-{ride.ride_id}",
            ride_id=ride.ride_id,
            passenger_mobile_number=ride.passenger,
            amount_idr=ride.held_idr,
        )
        status = await self._ride_step(
            ride, "authorize", lambda s: s.payment.AuthorizeRidePayment, authorize, rng, worker
        )
        if status != "AUTHORIZED" or ride.ending == "abandon":
            return
        if ride.ending == "void":
            void = payment_service_pb2.VoidRidePaymentRequest(
                request_id=f"void-{ride.ride_id}", ride_id=ride.ride_id, reason="cancelled"
            )
            await self._ride_step(
                ride, "void", lambda s: s.payment.VoidRidePayment, void, rng, worker
            )
            return
        capture = payment_service_pb2.CaptureRidePaymentRequest(
            request_id=f"capture-{ride.ride_id}",
            ride_id=ride.ride_id,
            final_fare_idr=ride.fare_idr,
            driver_mobile_number=ride.driver,
            platform_fee_idr=ride.fee_idr,
        )
        status = await self._ride_step(
            ride, "capture", lambda s: s.payment.CaptureRidePayment, capture, rng, worker
        )
        if status != "CAPTURED" or not ride.tip_idr:
            return
        tip = payment_service_pb2.TipDriverRequest(
            request_id=f"tip-{ride.ride_id}", ride_id=ride.ride_id, amount_idr=ride.tip_idr
        )
        await self._money_call(
            "tip",
            ride.n,
            "dispatch",
            lambda s: s.payment.TipDriver,
            tip,
            ride.tip_idr,
            rng,
            worker,
            ride.ride_id,
        )

    async def _ride_step(
        self,
        ride: Ride,
        kind: str,
        send: Send,
        request: Any,
        rng: random.Random,
        worker: int,
    ) -> str | None:
        """One dispatch call on a ride payment, asked again while its answer is in a
        passing status (AUTHORIZING, CAPTURING, VOIDING); the last status seen, or None
        without an answer."""
        passing = _PASSING[kind]
        answer = await self._money_call(
            kind,
            ride.n,
            "dispatch",
            send,
            request,
            ride.fare_idr if kind == "capture" else ride.held_idr,
            rng,
            worker,
            ride.ride_id,
            done=lambda a: RIDE_STATUS[a.ride_payment.status] != passing,
            describe=_ride_status,
        )
        return None if answer is None else RIDE_STATUS[answer.ride_payment.status]

    async def _money_call(
        self,
        kind: str,
        n: int,
        caller: str,
        send: Send,
        request: Any,
        amount_idr: int,
        rng: random.Random,
        worker: int,
        ride_id: str = "",
        *,
        done: Callable[[Any], bool] = lambda answer: True,
        describe: Callable[[Any], tuple[str, str]] = _transaction_status,
    ) -> Any:
        """A money RPC: recorded, sent, retried; put aside for the final pass when its
        outcome stays unknown. The answer, or None without one."""
        record = self.record(
            op_id=f"{n}.{kind}",
            kind=kind,
            caller=caller,
            method=_method_name(request),
            request_id=request.request_id,
            ride_id=ride_id,
            amount_idr=amount_idr,
        )
        md = self.metadata(caller)

        def invoke(stubs: Stubs, timeout: float) -> Awaitable[Any]:
            return send(stubs)(request, metadata=md, timeout=timeout)

        answer = await self.call(
            record, invoke, done=done, describe=describe, rng=rng, worker=worker
        )
        if record.outcome == "unknown":
            record.deferred = True
            self.deferred.append((record, invoke, worker, (done, describe)))
        return answer

    async def _transfer(self, transfer: Transfer, worker: int, rng: random.Random) -> None:
        request = payment_service_pb2.TransferRequest(
            request_id=f"transfer-{self.seed}-{transfer.n}",
            from_mobile_number=transfer.source,
            to_mobile_number=transfer.target,
            amount_idr=transfer.amount_idr,
            note=f"chaos {transfer.n}",
        )
        await self._money_call(
            "transfer",
            transfer.n,
            "app",
            lambda s: s.payment.Transfer,
            request,
            transfer.amount_idr,
            rng,
            worker,
        )

    async def _cash_out(self, cash_out: CashOut, worker: int, rng: random.Random) -> None:
        request = funding_service_pb2.CashOutRequest(
            request_id=f"cash-out-{self.seed}-{cash_out.n}",
            mobile_number=cash_out.mobile,
            amount_idr=cash_out.amount_idr,
        )
        if cash_out.bank_code:
            request.bank_account.CopyFrom(
                common_pb2.BankAccount(
                    bank_code=cash_out.bank_code,
                    account_number=cash_out.account_number,
                    account_name="CHAOS MONKEY",
                )
            )
        else:
            request.retail_outlet = common_pb2.RetailOutlet.Value(
                f"RETAIL_OUTLET_{cash_out.outlet}"
            )
        await self._money_call(
            "cash_out",
            cash_out.n,
            "app",
            lambda s: s.funding.CashOut,
            request,
            cash_out.amount_idr,
            rng,
            worker,
        )

    async def _qris(self, payment: Qris, worker: int, rng: random.Random) -> None:
        request = payment_service_pb2.PayQrisRequest(
            request_id=f"qris-{self.seed}-{payment.n}",
            mobile_number=payment.mobile,
            qris_payload=qris.payload(
                payment.merchant, payment.amount_idr if payment.dynamic else None
            ),
            amount_idr=0 if payment.dynamic else payment.amount_idr,
        )
        await self._money_call(
            "qris",
            payment.n,
            "app",
            lambda s: s.payment.PayQris,
            request,
            payment.amount_idr,
            rng,
            worker,
        )

    async def top_up(self, top_up: TopUp, *, phase: str = "workload") -> None:
        """KasPro credits a wallet (the sandbox's control endpoint) and calls the service
        back. Not retried: the control endpoint is not idempotent."""
        national = top_up.mobile[1:]
        body: dict[str, Any] = {
            "mobileNumber": top_up.mobile,
            "amount": top_up.amount_idr,
            "channel": top_up.channel,
        }
        if top_up.channel == "VA":
            body["vaNumber"] = VA_PREFIX[top_up.driver] + national
        else:
            body["paymentCode"] = RETAIL_PREFIX[(top_up.channel, top_up.driver)] + national
        record = self.record(
            op_id=f"{top_up.n}.topup" if phase == "workload" else f"fund-{top_up.mobile}",
            kind="topup",
            caller="sandbox",
            method="topup",
            request_id="",
            phase=phase,
            amount_idr=top_up.amount_idr,
        )
        record.tries = 1
        record.first_try_at = record.last_try_at = time.time()
        answer = await self.control.post("/_sandbox/topup", json=body)
        if answer.status_code == 200:
            data = answer.json()
            record.outcome, record.status = "ok", "SUCCEEDED"
            record.kaspro_request_id = data["requestId"]
            record.kaspro_reff_id = data["reffId"]
            record.request_id = data["requestId"]
        elif answer.status_code == 409:
            record.outcome, record.reason = "refused", answer.json().get("error", "")
        else:
            record.outcome, record.reason = "unexpected", f"HTTP {answer.status_code}"
        self._finish(record)

    async def final_pass(self, seconds: float) -> None:
        """Ask again about every operation left without a definite answer."""
        if not self.deferred:
            return
        deadline = asyncio.get_running_loop().time() + seconds
        rng = random.Random(f"final-{self.seed}")

        async def again(record: OpRecord, invoke: Invoke[Any], worker: int, how: Any) -> None:
            done, describe = how
            while True:
                left = deadline - asyncio.get_running_loop().time()
                if left <= 0:
                    return
                await self.call(
                    record,
                    invoke,
                    done=done,
                    describe=describe,
                    rng=rng,
                    worker=worker,
                    budget=min(left, 30.0),
                    final=False,
                )
                if record.outcome != "unknown":
                    return
                await asyncio.sleep(min(2.0, max(deadline - asyncio.get_running_loop().time(), 0)))

        await asyncio.gather(*(again(r, i, w, h) for r, i, w, h in self.deferred))
