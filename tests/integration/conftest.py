"""The integration harness: the real gRPC service on loopback, talking HTTP to the real sandbox.

Nothing of ours is mocked. The service and the KasPro sandbox share one FakeClock, so OTP
expiry, cooldowns, hourly caps and lockouts are tested by moving time, not by sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc
import httpx
import pytest
import pytest_asyncio
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2_grpc
from postgres import ADMIN_URL, SKIP_REASON, fresh_database
from wallet.v1 import (
    account_service_pb2,
    account_service_pb2_grpc,
    common_pb2,
    funding_service_pb2_grpc,
    payment_service_pb2_grpc,
    transaction_service_pb2,
    transaction_service_pb2_grpc,
)

from kaspro_sandbox import RunningSandbox, SandboxConfig, start_sandbox
from kaspro_sandbox.config import QUICK_CALLBACK_RETRY_DELAYS
from wallet_service.config import Caller, Config
from wallet_service.http import CALLBACK_PATH
from wallet_service.server import WalletService, start
from wallet_service.workers.drift import PassReport

APP_TOKEN = "app-token-123"
DISPATCH_TOKEN = "dispatch-token-1"
PRICING_TOKEN = "pricing-token-1"
ADMIN_TOKEN = "admin-token-12"
TOKENS = (APP_TOKEN, DISPATCH_TOKEN, PRICING_TOKEN, ADMIN_TOKEN)

CALLERS: dict[str, Caller] = {
    APP_TOKEN: Caller("backend", frozenset({"app"})),
    DISPATCH_TOKEN: Caller("dispatch", frozenset({"dispatch"})),
    PRICING_TOKEN: Caller("pricing", frozenset({"pricing"})),
    ADMIN_TOKEN: Caller("ops", frozenset({"admin"})),
}

Metadata = tuple[tuple[str, str], ...]
T = TypeVar("T")


def bearer(token: str) -> Metadata:
    return (("authorization", f"Bearer {token}"),)


APP = bearer(APP_TOKEN)
DISPATCH = bearer(DISPATCH_TOKEN)
PRICING = bearer(PRICING_TOKEN)
ADMIN = bearer(ADMIN_TOKEN)

# One customer in its three accepted spellings, and a second one.
LOCAL = "081234567890"
NATIONAL = "81234567890"
CANONICAL = "6281234567890"
E164 = "+6281234567890"
OTHER_LOCAL = "085712345678"
# LOCAL in look-alike digits that str.isdigit() accepts but ASCII does not.
FULL_WIDTH_LOCAL = "".join(chr(0xFF10 + int(d)) for d in LOCAL)
ARABIC_INDIC_LOCAL = "".join(chr(0x0660 + int(d)) for d in LOCAL)
OTHER_E164 = "+6285712345678"

# KasPro's paths (docs/kaspro.md) as the sandbox logs them.
TOKEN_PATH = "/authentication-server/oauth/token"
REGISTER_PATH = "/register-customer/"
GET_OTP_PATH = "/pil-partner-get-otp/"
VALIDATE_OTP_PATH = "/validate-otp/"
EKYC_PATH = "/pil-partner/ekyc-upgrade-premium-inquiry/"
INQUIRY_PATH = "/customer-account-inquiry/"

SAMPLES = Path(__file__).resolve().parents[2] / "docs" / "samples"
ID_CARD_JPEG = (SAMPLES / "ktp.jpg").read_bytes()
SELFIE_JPEG = (SAMPLES / "selfie.jpg").read_bytes()
SELFIE_WITH_ID_CARD_JPEG = (SAMPLES / "selfie-ktp.jpg").read_bytes()
PNG_HEADER = b"\x89PNG\r\n\x1a\n"
GIF_HEADER = b"GIF89a"
MAX_IMAGE_BYTES = 5 * 1024 * 1024

# A caller deadline for ordinary calls: generous, but a hang still fails the test.
DEADLINE = 10.0


class FakeClock:
    """Unix seconds that stand still until a test moves them with ``advance``."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass(frozen=True)
class RpcFailure:
    """A failed call as AIP-193 describes it: code, ErrorInfo, BadRequest, RetryInfo."""

    code: grpc.StatusCode
    message: str
    reason: str | None
    domain: str | None
    error_metadata: Mapping[str, str]
    violations: list[tuple[str, str]]
    retry_delay: float | None

    @property
    def fields(self) -> list[str]:
        """The fields the BadRequest names, in order."""
        return [name for name, _ in self.violations]


def failure_of(error: grpc.aio.AioRpcError) -> RpcFailure:
    """Parse ``grpc-status-details-bin`` of a failed call into its details."""
    raw: bytes | None = None
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            raw = value
    reason: str | None = None
    domain: str | None = None
    metadata: dict[str, str] = {}
    violations: list[tuple[str, str]] = []
    retry_delay: float | None = None
    if raw is not None:
        status = status_pb2.Status.FromString(raw)
        assert status.code == error.code().value[0], "details disagree with the status code"
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                reason, domain, metadata = info.reason, info.domain, dict(info.metadata)
            elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                violations.extend((v.field, v.description) for v in bad.field_violations)
            elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                retry = error_details_pb2.RetryInfo()
                detail.Unpack(retry)
                retry_delay = retry.retry_delay.ToTimedelta().total_seconds()
    return RpcFailure(
        code=error.code(),
        message=error.details() or "",
        reason=reason,
        domain=domain,
        error_metadata=metadata,
        violations=violations,
        retry_delay=retry_delay,
    )


async def expect_failure(call: Awaitable[Any]) -> RpcFailure:
    """Await a call that must fail, and return what it failed with."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return failure_of(caught.value)


def assert_failure(failure: RpcFailure, code: grpc.StatusCode, reason: str, *fields: str) -> None:
    """The code and the wallet.v1 reason; for INVALID_FIELD, exactly the named fields."""
    assert (failure.code, failure.reason) == (code, reason), failure
    assert failure.domain == "wallet.v1"
    if fields:
        assert sorted(set(failure.fields)) == sorted(fields), failure.violations
        for name, description in failure.violations:
            assert description, f"violation of {name} has no description"


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@dataclass
class Harness:
    """The (reset) sandbox, one service on a database file in tmp_path, stubs over one channel."""

    clock: FakeClock
    sandbox: RunningSandbox
    control_client: httpx.AsyncClient
    config: Config
    service: WalletService | None = None
    channel: grpc.aio.Channel | None = None
    channels: list[grpc.aio.Channel] = field(default_factory=list)

    @property
    def sandbox_url(self) -> str:
        return self.sandbox.base_url

    @property
    def db_path(self) -> Path:
        return Path(self.config.db_path)

    @property
    def running(self) -> WalletService:
        assert self.service is not None, "the service is not running"
        return self.service

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.running.port}"

    # Lifecycle.

    async def start(
        self, config: Config | None = None, *, kaspro_base_url: str | None = None
    ) -> None:
        """Start the service (stopping a running one first) on ``config`` and connect."""
        await self.stop_service()
        if config is not None:
            self.config = config
        self.service = await start(
            self.config, clock=self.clock, kaspro_base_url=kaspro_base_url or self.sandbox_url
        )
        self.channel = self.new_channel()
        self._bind_stubs(self.channel)
        # The sandbox tells async results and top-ups to this service's receiver.
        await self.control(
            "POST",
            "/callback-url",
            json={"url": f"http://127.0.0.1:{self.running.http_port}{CALLBACK_PATH}"},
        )

    async def restart(
        self, config: Config | None = None, *, kaspro_base_url: str | None = None
    ) -> None:
        """Stop the service and start a new one on the same database file."""
        await self.start(config, kaspro_base_url=kaspro_base_url)

    def with_config(self, **changes: Any) -> Config:
        return dataclasses.replace(self.config, **changes)

    def new_channel(self) -> grpc.aio.Channel:
        channel = grpc.aio.insecure_channel(self.target)
        self.channels.append(channel)
        return channel

    async def stop_service(self, grace: float | None = 0.5) -> None:
        for channel in self.channels:
            await channel.close()
        self.channels.clear()
        self.channel = None
        if self.service is not None:
            await self.service.stop(grace)
            self.service = None

    def _bind_stubs(self, channel: grpc.aio.Channel) -> None:
        self.accounts = account_service_pb2_grpc.AccountServiceStub(channel)
        self.funding = funding_service_pb2_grpc.FundingServiceStub(channel)
        self.payments = payment_service_pb2_grpc.PaymentServiceStub(channel)
        self.transactions = transaction_service_pb2_grpc.TransactionServiceStub(channel)
        self.health = health_pb2_grpc.HealthStub(channel)

    # The sandbox's control endpoints (docs/sandbox.md).

    async def control(self, method: str, path: str, **kwargs: Any) -> Any:
        """Call one of the sandbox's control endpoints; its JSON answer."""
        response = await self.control_client.request(method, "/_sandbox" + path, **kwargs)
        response.raise_for_status()
        return response.json()

    async def kaspro_requests(self, path: str | None = None) -> list[dict[str, Any]]:
        """The sandbox's request log, optionally only the calls to ``path``."""
        entries: list[dict[str, Any]] = await self.control("GET", "/requests")
        return [e for e in entries if path is None or e["path"] == path]

    async def otp(self, mobile: str) -> str:
        issued = await self.control("GET", "/otp", params={"mobileNumber": mobile})
        code: str = issued["otp"]
        return code

    async def expire_otp_at_kaspro(self, mobile: str) -> None:
        await self.control("POST", "/otp/expire", params={"mobileNumber": mobile})

    async def arm_fault(
        self, path: str, kind: str, *, times: int = 1, delay_seconds: float | None = None
    ) -> None:
        body: dict[str, Any] = {"path": path, "kind": kind, "times": times}
        if delay_seconds is not None:
            body["delaySeconds"] = delay_seconds
        await self.control("POST", "/faults", json=body)

    async def set_balance(self, mobile: str, balance: int) -> None:
        await self.control("POST", f"/customers/{mobile}/balance", json={"balance": balance})

    async def override_ocr(self, mobile: str, id_card_number: str) -> None:
        await self.control(
            "POST", "/ocr-override", json={"mobileNumber": mobile, "idCardNumber": id_card_number}
        )

    async def kaspro_customers(self) -> list[dict[str, Any]]:
        customers: list[dict[str, Any]] = await self.control("GET", "/customers")
        return customers

    async def kaspro_customer(self, mobile: str) -> dict[str, Any] | None:
        response = await self.control_client.get(f"/_sandbox/customers/{mobile}")
        if response.status_code == 404:
            return None
        response.raise_for_status()
        customer: dict[str, Any] = response.json()
        return customer

    # Money: funding wallets the way KasPro does, and reading both sets of books.

    async def sandbox_settings(self, **settings: Any) -> None:
        """Change the sandbox's async behaviour (asyncDelaySeconds, autoComplete, cashOutFee)."""
        await self.control("POST", "/settings", json=settings)

    async def top_up(
        self, mobile: str, amount_idr: int, *, channel: str = "VA", number: str = ""
    ) -> dict[str, Any]:
        """Pay a VA (or outlet code) at the sandbox and wait until the service recorded it."""
        body: dict[str, Any] = {"mobileNumber": mobile, "amount": amount_idr, "channel": channel}
        body["vaNumber" if channel == "VA" else "paymentCode"] = number or (
            ("39358" if channel == "VA" else "7010") + mobile[1:]
        )
        sent: dict[str, Any] = await self.control("POST", "/topup", json=body)

        async def recorded() -> bool:
            row = await self.running.db.fetch_one(
                "SELECT 1 FROM transactions WHERE kaspro_reference = ?", (sent["reffId"],)
            )
            return row is not None

        await wait_for(recorded)
        return sent

    async def onboard(self, mobile: str, balance_idr: int = 0, *, name: str = "Budi") -> None:
        """Register, link, and (when asked) top up a wallet."""
        await self.register(mobile, request_id=f"register-{mobile}", first_name=name)
        await self.link(mobile)
        if balance_idr:
            await self.top_up(mobile, balance_idr)

    async def sandbox_balances(self) -> dict[str, Any]:
        balances: dict[str, Any] = await self.control("GET", "/balances")
        return balances

    async def sandbox_transactions(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = await self.control("GET", "/transactions")
        return found

    async def sandbox_ledger(self) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = await self.control("GET", "/ledger")
        return entries

    async def complete_at_kaspro(self, request_id: str, *, fail: bool = False) -> None:
        await self.control(
            "POST", f"/transactions/{request_id}/{'fail' if fail else 'complete'}", json={}
        )

    async def resend_callback(self, request_id: str) -> None:
        await self.control("POST", f"/transactions/{request_id}/resend-callback", json={})

    async def ledger(self) -> dict[str, int]:
        """The service's ledger balance per account."""
        rows = await self.running.db.fetch_all(
            "SELECT account, SUM(amount_idr) AS total FROM ledger_lines GROUP BY account"
        )
        return {row["account"]: int(row["total"]) for row in rows}

    async def assert_books_agree(self) -> None:
        """Our ledger equals the sandbox's balances, and every transaction sums to zero."""
        ledger = await self.ledger()
        sandbox = await self.sandbox_balances()
        for local, balance in sandbox["subscribers"].items():
            canonical = "62" + local[1:]
            assert ledger.get(f"subscriber:{canonical}", 0) == balance, (local, ledger)
        for name in ("escrow", "corporate"):
            assert ledger.get(name, 0) == sandbox["platform"][name], (name, ledger, sandbox)
        unbalanced = await self.running.db.fetch_all(
            "SELECT transaction_id FROM ledger_lines GROUP BY transaction_id "
            "HAVING SUM(amount_idr) != 0"
        )
        assert [row["transaction_id"] for row in unbalanced] == []

    async def settle(self, *, advance_seconds: float = 60.0) -> int:
        """Move the clock past every backoff and run one reconciler pass."""
        self.clock.advance(advance_seconds)
        return await self.running.reconciler.run_once()

    async def check_drift(self, *, every_wallet: bool = False) -> PassReport:
        """One pass of the drift check, now."""
        return await self.running.drift_check.run_once(every_wallet=every_wallet)

    async def events(self, after: int = 0, *, idle_seconds: float = 0.3) -> list[common_pb2.Event]:
        """Every event after ``after``, read from WatchEvents until it goes quiet."""
        found: list[common_pb2.Event] = []
        call = self.transactions.WatchEvents(
            transaction_service_pb2.WatchEventsRequest(after_sequence=after), metadata=ADMIN
        )
        try:
            while True:
                try:
                    response = await asyncio.wait_for(call.read(), idle_seconds)
                except TimeoutError:
                    break
                if not isinstance(response, transaction_service_pb2.WatchEventsResponse):
                    break  # grpc.aio.EOF: the stream ended
                found.append(response.event)
        finally:
            call.cancel()
        return found

    # Steps of the onboarding walkthrough, for tests about what comes after them.

    async def register(
        self,
        mobile: str = LOCAL,
        *,
        request_id: str = "register-1",
        metadata: Metadata = APP,
        **fields: str,
    ) -> common_pb2.Account:
        values = {"first_name": "Budi", "last_name": "Santoso", "email": "budi@example.com"}
        values.update(fields)
        response = await self.accounts.RegisterCustomer(
            account_service_pb2.RegisterCustomerRequest(
                request_id=request_id, mobile_number=mobile, **values
            ),
            metadata=metadata,
            timeout=DEADLINE,
        )
        return response.account

    async def request_otp(self, mobile: str = LOCAL) -> account_service_pb2.RequestOtpResponse:
        return await self.accounts.RequestOtp(
            account_service_pb2.RequestOtpRequest(mobile_number=mobile),
            metadata=APP,
            timeout=DEADLINE,
        )

    async def verify_otp(self, otp: str, mobile: str = LOCAL) -> common_pb2.Account:
        response = await self.accounts.VerifyOtp(
            account_service_pb2.VerifyOtpRequest(mobile_number=mobile, otp=otp),
            metadata=APP,
            timeout=DEADLINE,
        )
        return response.account

    async def link(self, mobile: str = LOCAL) -> common_pb2.Account:
        """RequestOtp, read the OTP the sandbox 'sent', VerifyOtp."""
        await self.request_otp(mobile)
        return await self.verify_otp(await self.otp(mobile), mobile)

    async def get_account(
        self, mobile: str = LOCAL, metadata: Metadata = APP
    ) -> common_pb2.Account:
        response = await self.accounts.GetAccount(
            account_service_pb2.GetAccountRequest(mobile_number=mobile),
            metadata=metadata,
            timeout=DEADLINE,
        )
        return response.account


def make_config(tmp_path: Path, **changes: Any) -> Config:
    base = Config(
        grpc_listen="127.0.0.1:0",
        http_listen="127.0.0.1:0",
        db_path=str(tmp_path / "wallet.db"),
        callers=CALLERS,
        grace_period_seconds=1.0,
        # Tests drive the reconciler themselves (Harness.settle), one pass at a time,
        # and the drift check (Harness.check_drift).
        reconcile_interval_seconds=3600.0,
        drift_check_enabled=False,
    )
    return dataclasses.replace(base, **changes)


class SandboxThread:
    """The sandbox served by its own event loop on a background thread, for the whole session.

    Starting and stopping uvicorn costs ~0.15 s, so one sandbox serves every test and is
    reset (``POST /_sandbox/reset``) before each; its clock is the session's FakeClock,
    put back to real time before each test.
    """

    def __init__(self, clock: FakeClock) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="kaspro-sandbox", daemon=True
        )
        self._thread.start()
        self.sandbox = self._run(
            start_sandbox(
                # Callbacks a test makes fail are tried again within seconds, not hours.
                SandboxConfig(clock=clock, callback_retry_delays=QUICK_CALLBACK_RETRY_DELAYS),
                host="127.0.0.1",
                port=0,
            )
        )

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=30)

    def close(self) -> None:
        self._run(self.sandbox.stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


@pytest.fixture(scope="session")
def session_clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="session")
def sandbox_thread(session_clock: FakeClock) -> Iterator[SandboxThread]:
    running = SandboxThread(session_clock)
    yield running
    running.close()


@pytest.fixture
def clock(session_clock: FakeClock) -> FakeClock:
    session_clock.now = time.time()
    return session_clock


@pytest_asyncio.fixture
async def control(
    sandbox_thread: SandboxThread, clock: FakeClock
) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for the sandbox's control endpoints, on a freshly reset sandbox."""
    async with httpx.AsyncClient(base_url=sandbox_thread.sandbox.base_url, timeout=10.0) as client:
        (await client.post("/_sandbox/reset")).raise_for_status()
        yield client


# Every integration test runs on both engines: SQLite, and PostgreSQL when
# WALLET_TEST_POSTGRES_URL names a server (each test on a fresh database of its own).
ENGINES = (
    "sqlite",
    pytest.param("postgresql", marks=pytest.mark.skipif(not ADMIN_URL, reason=SKIP_REASON)),
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test marked ``sqlite_only`` (it reads the SQLite file itself) runs on SQLite alone,
    one marked ``postgresql_only`` (it acts on the server) on PostgreSQL alone: the other
    variant is not collected, rather than skipped."""

    def engine(item: pytest.Item) -> object:
        return getattr(getattr(item, "callspec", None), "params", {}).get("harness")

    deselected = [
        item
        for item in items
        if (item.get_closest_marker("sqlite_only") and engine(item) == "postgresql")
        or (item.get_closest_marker("postgresql_only") and engine(item) == "sqlite")
    ]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if item not in deselected]


@pytest_asyncio.fixture(params=ENGINES)
async def harness(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    clock: FakeClock,
    sandbox_thread: SandboxThread,
    control: httpx.AsyncClient,
) -> AsyncIterator[Harness]:
    async with contextlib.AsyncExitStack() as stack:
        config = make_config(tmp_path)
        if request.param == "postgresql":
            url = await stack.enter_async_context(fresh_database(migrated=True))
            config = dataclasses.replace(config, db_url=url, db_pool_size=4)
        h = Harness(
            clock=clock,
            sandbox=sandbox_thread.sandbox,
            control_client=control,
            config=config,
        )
        await h.start()
        try:
            yield h
        finally:
            await h.stop_service()


async def wait_for(
    condition: Callable[[], Awaitable[bool]], *, timeout: float = 5.0, interval: float = 0.01
) -> None:
    """Poll an async predicate until it is true; fail after ``timeout`` real seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await condition():
        if loop.time() > deadline:
            pytest.fail("condition not met in time")
        await asyncio.sleep(interval)


@pytest.fixture
def h(harness: Harness) -> Harness:
    """The harness, under the short name the tests use."""
    return harness
