"""The README walkthrough, for real: `wallet-service serve` as a process, driven by grpcurl."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
GRPCURL = str(BIN / "grpcurl")
SERVICE = str(BIN / "wallet-service")
TOKEN = "dev-token"
MOBILE = "081298765432"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Running:
    process: subprocess.Popen[str]
    address: str
    sandbox: str
    http: str

    def grpcurl(
        self, *args: str, data: object | None = None, token: str | None = TOKEN
    ) -> dict[str, object]:
        result = self.grpcurl_raw(*args, data=data, token=token)
        assert result.returncode == 0, result.stderr
        parsed: dict[str, object] = json.loads(result.stdout) if result.stdout.strip() else {}
        return parsed

    def grpcurl_raw(
        self, *args: str, data: object | None = None, token: str | None = TOKEN
    ) -> subprocess.CompletedProcess[str]:
        command = [GRPCURL, "-plaintext", "-format-error", "-emit-defaults"]
        if token is not None:
            command += ["-H", f"authorization: Bearer {token}"]
        if data is not None:
            command += ["-d", "@"]
        command += [self.address, *args]
        return subprocess.run(
            command,
            input=json.dumps(data) if data is not None else None,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Running]:
    grpc_port, sandbox_port, http_port = _free_port(), _free_port(), _free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("WALLET_")},
        "WALLET_GRPC_LISTEN": f"127.0.0.1:{grpc_port}",
        "WALLET_HTTP_LISTEN": f"127.0.0.1:{http_port}",
        "WALLET_SANDBOX_LISTEN": f"127.0.0.1:{sandbox_port}",
        "WALLET_DB_PATH": str(tmp_path / "wallet.db"),
    }
    log = (tmp_path / "service.log").open("w")
    process = subprocess.Popen(
        [SERVICE, "serve"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, text=True
    )
    running = Running(
        process,
        f"127.0.0.1:{grpc_port}",
        f"http://127.0.0.1:{sandbox_port}",
        f"http://127.0.0.1:{http_port}",
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            check = running.grpcurl_raw("grpc.health.v1.Health/Check", token=None)
            if check.returncode == 0 and "SERVING" in check.stdout:
                break
            assert process.poll() is None, (tmp_path / "service.log").read_text()
            assert time.monotonic() < deadline, "service did not become SERVING"
            time.sleep(0.1)
        yield running
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
        log.close()


def test_list_and_describe_without_protos(service: Running) -> None:
    listed = service.grpcurl_raw("list", token=None)
    assert listed.returncode == 0, listed.stderr
    services = set(listed.stdout.split())
    assert {
        "wallet.v1.AccountService",
        "wallet.v1.FundingService",
        "wallet.v1.PaymentService",
        "wallet.v1.TransactionService",
        "grpc.health.v1.Health",
    } <= services
    assert any("ServerReflection" in name for name in services)
    described = service.grpcurl_raw("describe", "wallet.v1.AccountService", token=None)
    assert described.returncode == 0, described.stderr
    assert "rpc RegisterCustomer ( .wallet.v1.RegisterCustomerRequest )" in described.stdout
    message = service.grpcurl_raw("describe", "wallet.v1.RegisterCustomerRequest", token=None)
    assert message.returncode == 0, message.stderr
    assert "string mobile_number = 2;" in message.stdout


def test_onboarding_walkthrough(service: Running) -> None:
    registered = service.grpcurl(
        "wallet.v1.AccountService/RegisterCustomer",
        data={
            "request_id": "reg-1",
            "mobile_number": MOBILE,
            "first_name": "Siti",
            "last_name": "Rahayu",
            "email": "siti@example.com",
        },
    )
    account = registered["account"]
    assert isinstance(account, dict)
    assert account["mobile_number"] == "+6281298765432"
    assert account["linked"] is False

    sent = service.grpcurl("wallet.v1.AccountService/RequestOtp", data={"mobile_number": MOBILE})
    assert int(str(sent["expires_in_seconds"])) > 0
    otp = httpx.get(f"{service.sandbox}/_sandbox/otp", params={"mobileNumber": MOBILE}).json()[
        "otp"
    ]

    verified = service.grpcurl(
        "wallet.v1.AccountService/VerifyOtp", data={"mobile_number": "+6281298765432", "otp": otp}
    )
    assert verified["account"]["linked"] is True  # type: ignore[index]

    images = {
        name: base64.b64encode((ROOT / "docs" / "samples" / file).read_bytes()).decode()
        for name, file in (
            ("id_card_image", "ktp.jpg"),
            ("selfie_image", "selfie.jpg"),
            ("selfie_with_id_card_image", "selfie-ktp.jpg"),
        )
    }
    upgraded = service.grpcurl(
        "wallet.v1.AccountService/UpgradeKyc",
        data={"request_id": "kyc-1", "mobile_number": "6281298765432", **images},
    )
    assert upgraded["kyc_status"] == "KYC_STATUS_VERIFIED"
    identity = upgraded["identity"]
    assert isinstance(identity, dict)
    assert identity["id_card_number_valid"] is True
    assert len(identity["id_card_number"]) == 16

    final = service.grpcurl("wallet.v1.AccountService/GetAccount", data={"mobile_number": MOBILE})
    account = final["account"]
    assert isinstance(account, dict)
    assert account["linked"] is True
    assert account["kyc_status"] == "KYC_STATUS_VERIFIED"
    assert account["account_type"] == "ACCOUNT_TYPE_PREMIUM"


def _error(result: subprocess.CompletedProcess[str]) -> tuple[int, list[dict[str, object]]]:
    """(code, details) of the JSON status grpcurl -format-error prints."""
    assert result.returncode != 0
    status = json.loads(result.stderr)
    return int(status["code"]), list(status.get("details", []))


def test_errors_reach_grpcurl_with_reasons(service: Running) -> None:
    code, details = _error(
        service.grpcurl_raw("wallet.v1.AccountService/GetAccount", data={"mobile_number": "12345"})
    )
    assert code == 3  # INVALID_ARGUMENT
    assert details[0]["reason"] == "INVALID_FIELD"
    violations = details[1]["field_violations"]
    assert isinstance(violations, list)
    assert violations[0]["field"] == "mobile_number"

    code, details = _error(
        service.grpcurl_raw(
            "wallet.v1.AccountService/GetAccount", data={"mobile_number": "081200000001"}
        )
    )
    assert code == 5  # NOT_FOUND
    assert details[0]["reason"] == "CUSTOMER_NOT_FOUND"

    code, details = _error(
        service.grpcurl_raw(
            "wallet.v1.AccountService/GetAccount", data={"mobile_number": MOBILE}, token=None
        )
    )
    assert code == 16  # UNAUTHENTICATED


def test_sigterm_stops_cleanly(service: Running) -> None:
    service.process.send_signal(signal.SIGTERM)
    assert service.process.wait(timeout=15) == 0


# The README's shell blocks, by how each begins: onboarding, a ride, an operator's tools.
ONBOARDING, RIDE, OPERATOR = "```sh\ng() {", '```sh\ng -d \'{"request_id":"reg-d"', "```sh\nJ() {"


def run_readme(service: Running, *markers: str) -> str:
    """The README's shell blocks that begin so, run by bash in order (only the ports are
    swapped for free ones); what they printed."""
    readme = (ROOT / "README.md").read_text()
    blocks = []
    for marker in markers:
        start = readme.index(marker)
        blocks.append(readme[start + len("```sh\n") : readme.index("```\n", start + 5)])
    script = "\n".join(blocks).replace("127.0.0.1:50051", service.address)
    script = script.replace("http://127.0.0.1:8090", service.sandbox)
    script = script.replace("http://127.0.0.1:8081", service.http)
    result = subprocess.run(
        ["bash", "-c", "set -euo pipefail\n" + script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_readme_walkthroughs_run_as_written(service: Running) -> None:
    """The README's shell blocks, run by bash (only the ports are swapped for free ones)."""
    out = run_readme(service, ONBOARDING, RIDE)
    assert '"kyc_status": "KYC_STATUS_VERIFIED"' in out
    assert '"linked": true' in out
    assert '"sufficient": false' in out
    assert '"status": "RIDE_PAYMENT_STATUS_CAPTURED"' in out
    assert '"type": "TRANSACTION_TYPE_TIP"' in out
    assert '"type": "TRANSACTION_TYPE_CASH_OUT"' in out
    balances = json.loads(out.strip().splitlines()[-1])
    # Passenger: 150,000 topped up - 42,000 fare - 5,000 tip; driver: 34,000 + 5,000 - 20,000.
    assert balances["subscribers"] == {"081234567890": 103_000, "085712345678": 19_000}
    assert balances["platform"]["corporate"] == 8_000
    assert balances["platform"]["escrow"] == 0


def test_readme_operator_walkthrough_runs_as_written(service: Running) -> None:
    """After the two walkthroughs, the operator's: a cash-out frozen, then resolved."""
    out = run_readme(service, ONBOARDING, RIDE, OPERATOR)
    operator = out[out.index('"auto_complete":false') :]
    assert '"frozen_reason": "KasPro reported 99999 for attempt' in operator
    assert '"kaspro_state": "KASPRO_STATE_SUCCEEDED"' in operator
    assert '"action": "ADMIN_ACTION_TYPE_RESOLVE_FROZEN_OPERATION"' in operator
    assert '"outcome": "ADMIN_ACTION_OUTCOME_DONE"' in operator
    resolved = operator[operator.index('"request_id": "resolve-1"') :]
    assert '"status": "TRANSACTION_STATUS_SUCCEEDED"' in resolved
    balances = json.loads(resolved[resolved.index('{"subscribers"') :].splitlines()[0])
    # The driver's 19,000 after the ride walkthrough, less the 10,000 cash-out.
    assert balances["subscribers"]["085712345678"] == 9_000


@pytest.mark.parametrize(
    "command", [[SERVICE, "sandbox"], [sys.executable, "-m", "kaspro_sandbox"]]
)
def test_sandbox_runs_standalone_on_the_given_port(command: list[str]) -> None:
    port = _free_port()
    process = subprocess.Popen(
        [*command, "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                answer = httpx.get(f"http://127.0.0.1:{port}/_sandbox/customers", timeout=1)
                break
            except httpx.TransportError:
                assert process.poll() is None, process.stdout.read() if process.stdout else ""
                assert time.monotonic() < deadline, "sandbox did not start"
                time.sleep(0.1)
        assert answer.status_code == 200
        # The partner API refuses unsigned calls, as the gateway would.
        refused = httpx.get(
            f"http://127.0.0.1:{port}/customer-account-inquiry/",
            params={"mobileNumber": MOBILE},
        )
        assert refused.status_code == 401
        assert refused.json()["code"] == 401001
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
