"""Running the sandbox: in the caller's event loop on a free port, and standalone."""

from __future__ import annotations

import signal

import httpx
import pytest

from kaspro_sandbox import SandboxConfig, start_sandbox
from kaspro_sandbox.__main__ import build_parser, config_from_args
from kaspro_sandbox.runner import bind_socket

from .partner_client import FakeClock, Partner


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
