"""Running the sandbox: in the caller's event loop on a free port, and standalone."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from kaspro_sandbox import SandboxConfig, start_sandbox
from kaspro_sandbox.__main__ import build_parser, config_from_args
from kaspro_sandbox.config import QUICK_CALLBACK_RETRY_DELAYS, REALISTIC_CALLBACK_RETRY_DELAYS
from kaspro_sandbox.paths import ACCOUNT_INQUIRY_PATH as INQUIRY
from kaspro_sandbox.runner import bind_socket
from kaspro_sandbox.transport import WATCH_LONGER_WAITS_THAN_SECONDS, hold

from .partner_client import FakeClock, MoneyPartner, Partner, request_id


async def test_port_zero_serves_on_a_real_port_until_stopped() -> None:
    sandbox = await start_sandbox()
    assert sandbox.port > 0
    assert sandbox.base_url == f"http://127.0.0.1:{sandbox.port}"
    async with httpx.AsyncClient(base_url=sandbox.base_url) as client:
        assert (await client.get("/_sandbox/customers")).json() == []
    await sandbox.stop()
    async with httpx.AsyncClient(base_url=sandbox.base_url) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get("/_sandbox/customers")


@contextlib.asynccontextmanager
async def control_client(config: SandboxConfig | None = None) -> AsyncIterator[httpx.AsyncClient]:
    """A client of a sandbox started for the test (stopped after it)."""
    async with (
        await start_sandbox(config) as sandbox,
        httpx.AsyncClient(base_url=sandbox.base_url) as http,
    ):
        yield http


async def test_request_log_keeps_the_newest_entries_and_counts_the_dropped() -> None:
    clock = FakeClock()
    config = SandboxConfig(clock=clock, request_log_size=2)
    async with control_client(config) as http:
        partner = Partner(http, clock)
        for number in ("081200000001", "081200000002", "081200000003"):
            await partner.get(INQUIRY, number)  # after the token request: 4 entries

        log = await http.get("/_sandbox/requests")
        assert [entry["mobileNumber"] for entry in log.json()] == [
            "0812****0002",
            "0812****0003",
        ]
        assert log.headers["X-Sandbox-Requests-Dropped"] == "2"

        assert (await http.delete("/_sandbox/requests")).json() == {"cleared": 2}
        emptied = await http.get("/_sandbox/requests")
        assert emptied.json() == []
        assert emptied.headers["X-Sandbox-Requests-Dropped"] == "0"


async def test_gateway_paths_keep_the_routers_answers_to_other_methods_and_paths() -> None:
    async with control_client() as http:
        assert (await http.post(INQUIRY)).status_code == 405  # a GET path
        assert (await http.get(INQUIRY.rstrip("/"))).status_code == 404  # no slash redirect
        assert (await http.get(INQUIRY + "x")).status_code == 404
        # A gateway path still answers as the gateway: unsigned, so refused.
        refused = await http.get(INQUIRY, params={"mobileNumber": "081200000001"})
        assert refused.status_code == 401
        assert [entry["path"] for entry in (await http.get("/_sandbox/requests")).json()] == [
            INQUIRY
        ]


async def test_a_request_log_of_size_zero_keeps_nothing() -> None:
    clock = FakeClock()
    config = SandboxConfig(clock=clock, request_log_size=0)
    async with control_client(config) as http:
        await Partner(http, clock).get(INQUIRY, "081200000001")
        log = await http.get("/_sandbox/requests")
        assert log.json() == []
        assert log.headers["X-Sandbox-Requests-Dropped"] == "2"


async def test_given_port_and_config_are_used() -> None:
    probe = bind_socket("127.0.0.1", 0)
    port = probe.getsockname()[1]
    probe.close()
    config = SandboxConfig(client_id="other-client", token_ttl_seconds=60)
    async with await start_sandbox(config, port=port) as sandbox:
        assert sandbox.port == port
        async with httpx.AsyncClient(base_url=sandbox.base_url) as client:
            response = await client.post(
                "/authentication-server/oauth/token",
                data={
                    "grant_type": "client_credentials",
                    "client_id": "other-client",
                    "client_secret": "wallet-dev-secret",
                },
            )
        assert response.json()["expires_in"] == 60
        assert len(sandbox.state.tokens) == 1


async def test_host_signal_handlers_are_left_alone() -> None:
    def handler(signum: int, frame: object) -> None:
        raise AssertionError("not expected to be called")

    previous = signal.signal(signal.SIGTERM, handler)
    sigint = signal.getsignal(signal.SIGINT)
    try:
        sandbox = await start_sandbox()
        assert signal.getsignal(signal.SIGTERM) is handler
        assert signal.getsignal(signal.SIGINT) is sigint
        await sandbox.stop()
        assert signal.getsignal(signal.SIGTERM) is handler
        assert signal.getsignal(signal.SIGINT) is sigint
    finally:
        signal.signal(signal.SIGTERM, previous)


async def test_stop_twice_is_harmless() -> None:
    sandbox = await start_sandbox()
    await sandbox.stop()
    await sandbox.stop()


async def test_seeded_sandboxes_send_the_same_otps() -> None:
    otps = []
    for _ in range(2):
        async with await start_sandbox(SandboxConfig(seed=42)) as sandbox:
            partner = Partner(httpx.AsyncClient(base_url=sandbox.base_url), FakeClock())
            async with partner.http:
                await partner.register("081234567890")
                for _ in range(3):
                    await partner.get("/pil-partner-get-otp/", "081234567890")
                    otps.append(sandbox.state.otps["081234567890"].code)
    assert otps[:3] == otps[3:]


async def _client_gone() -> dict[str, str]:
    return {"type": "http.disconnect"}


async def test_a_long_hold_ends_when_the_client_goes_away() -> None:
    # An hour's hold: without watching the connection this would outlast the guard.
    async with asyncio.timeout(30):
        assert await hold(_client_gone, 3600.0) is True


async def test_a_short_hold_is_only_slept() -> None:
    assert await hold(_client_gone, WATCH_LONGER_WAITS_THAN_SECONDS / 100) is False
    assert await hold(_client_gone, 0.0) is False


def test_command_line_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "WALLET_KASPRO_CLIENT_ID",
        "WALLET_KASPRO_CLIENT_SECRET",
        "WALLET_KASPRO_HMAC_KEY",
        "WALLET_KASPRO_HMAC_SECRET",
    ):
        monkeypatch.delenv(name, raising=False)
    args = build_parser().parse_args([])
    assert (args.host, args.port) == ("127.0.0.1", 8090)
    assert config_from_args(args) == SandboxConfig()


def test_command_line_reads_credentials_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WALLET_KASPRO_CLIENT_ID", "env-id")
    monkeypatch.setenv("WALLET_KASPRO_CLIENT_SECRET", "env-secret")
    monkeypatch.setenv("WALLET_KASPRO_HMAC_KEY", "env-key")
    monkeypatch.setenv("WALLET_KASPRO_HMAC_SECRET", "env-hmac")
    args = build_parser().parse_args(["--otp-ttl", "60", "--seed", "5", "--hmac-key", "cli-key"])
    config = config_from_args(args)
    assert config.client_id == "env-id"
    assert config.client_secret == "env-secret"
    assert config.hmac_key == "cli-key"
    assert config.hmac_secret == "env-hmac"
    assert config.otp_ttl_seconds == 60
    assert config.seed == 5


def test_command_line_money_options() -> None:
    args = build_parser().parse_args(
        ["--callback-url", "http://127.0.0.1:9/callbacks/kaspro", "--async-delay", "0.25"]
    )
    config = config_from_args(args)
    assert config.callback_url == "http://127.0.0.1:9/callbacks/kaspro"
    assert config.async_delay_seconds == 0.25
    defaults = config_from_args(build_parser().parse_args([]))
    assert defaults.callback_url is None
    assert defaults.async_delay_seconds == 0.5


def test_command_line_request_log_size() -> None:
    assert config_from_args(build_parser().parse_args([])).request_log_size == 100_000
    args = build_parser().parse_args(["--request-log-size", "1000", "--no-access-log"])
    assert config_from_args(args).request_log_size == 1000
    assert args.no_access_log


@pytest.mark.parametrize("value", ["-1", "many", "1.5"])
def test_command_line_refuses_a_bad_request_log_size(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--request-log-size", value])
    assert "--request-log-size" in capsys.readouterr().err


def test_command_line_refuses_a_negative_delay(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--async-delay", "-1"])
    assert "--async-delay" in capsys.readouterr().err


def test_command_line_callback_retries() -> None:
    def parsed(*argv: str) -> tuple[float, ...]:
        return config_from_args(build_parser().parse_args(list(argv))).callback_retry_delays

    assert parsed() == REALISTIC_CALLBACK_RETRY_DELAYS
    assert parsed("--callback-retries", "quick") == QUICK_CALLBACK_RETRY_DELAYS
    assert parsed("--callback-retries", "1,2.5,60") == (1.0, 2.5, 60.0)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--callback-retries", "1,-2"])


async def test_stop_with_pending_completions_and_callbacks_does_not_hang() -> None:
    probe = bind_socket("127.0.0.1", 0)
    dead_url = f"http://127.0.0.1:{probe.getsockname()[1]}/callbacks/kaspro"
    probe.close()
    config = SandboxConfig(
        async_delay_seconds=30, callback_url=dead_url, callback_retry_delays=(10, 20)
    )
    sandbox = await start_sandbox(config)
    async with MoneyPartner.connect(sandbox.base_url) as partner:
        await partner.customer("081234567890", balance=150_000)
        await partner.bank_transfer(request_id(1), "081234567890", "50000")
        await partner.control(
            "POST",
            "/topup",
            {"mobileNumber": "081234567890", "amount": 1, "channel": "VA", "vaNumber": "1"},
        )
        # the top-up callback failed once and now waits 10 s before its next try
        deadline = time.monotonic() + 3
        while not sandbox.state.callbacks:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
    assert len(sandbox.state.tasks) == 2
    tasks = set(sandbox.state.tasks)
    started = time.perf_counter()
    await sandbox.stop()
    assert time.perf_counter() - started < 2
    assert sandbox.state.tasks == set()
    assert all(task.cancelled() for task in tasks)
    assert sandbox.state.transactions[request_id(1)].status == "PENDING"
