"""Refused large requests leave no memory behind: `wallet-service serve` as a process, its
RSS read from /proc before and after bursts of 20 concurrent multi-MiB UpgradeKyc calls.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from wallet.v1 import account_service_pb2, account_service_pb2_grpc

from wallet_service.config import Config

pytestmark = pytest.mark.e2e

SERVICE = str(Path(sys.executable).parent / "wallet-service")
AUTH = (("authorization", "Bearer dev-token"),)
BURST = 20
MIB = 1024 * 1024
LIMIT = Config().max_message_bytes  # the default: three 5 MiB images and 64 KiB
# A burst carries 300-400 MiB of requests. Measured after one: 1-2 MB above the
# baseline; before the fix 100-600 MB above it, for good.
SETTLED_MB = 50.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS line")


@dataclass
class Running:
    process: subprocess.Popen[bytes]
    address: str


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Running]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("WALLET_")},
        "WALLET_GRPC_LISTEN": f"127.0.0.1:{_free_port()}",
        "WALLET_SANDBOX_LISTEN": f"127.0.0.1:{_free_port()}",
        "WALLET_HTTP_LISTEN": f"127.0.0.1:{_free_port()}",
        "WALLET_DB_PATH": str(tmp_path / "wallet.db"),
        "WALLET_LOG_LEVEL": "WARNING",
    }
    log = (tmp_path / "service.log").open("wb")
    process = subprocess.Popen([SERVICE, "serve"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield Running(process, env["WALLET_GRPC_LISTEN"])
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def kyc_request(total_bytes: int) -> account_service_pb2.UpgradeKycRequest:
    """An UpgradeKyc of ``total_bytes`` whose images are GIFs: refused by validation."""
    request = account_service_pb2.UpgradeKycRequest(
        request_id="kyc-large", mobile_number="081234567890"
    )
    third = (total_bytes - 64) // 3
    for name in ("id_card_image", "selfie_image", "selfie_with_id_card_image"):
        setattr(request, name, b"GIF89a" + b"\x00" * (third - 6))
    while (missing := total_bytes - request.ByteSize()) != 0:
        image = request.id_card_image
        request.id_card_image = image + b"\x00" * missing if missing > 0 else image[:missing]
    return request


async def burst(
    stub: account_service_pb2_grpc.AccountServiceAsyncStub, total_bytes: int
) -> list[grpc.StatusCode]:
    request = kyc_request(total_bytes)

    async def one() -> grpc.StatusCode:
        try:
            await stub.UpgradeKyc(request, metadata=AUTH, timeout=60)
        except grpc.aio.AioRpcError as exc:
            return exc.code()
        return grpc.StatusCode.OK

    return await asyncio.gather(*(one() for _ in range(BURST)))


async def settled(pid: int, ceiling_mb: float, *, timeout: float = 15.0) -> float:
    """RSS once it is under ``ceiling_mb`` (or, after ``timeout``, as it is)."""
    deadline = time.monotonic() + timeout
    while True:
        rss = rss_mb(pid)
        if rss <= ceiling_mb or time.monotonic() > deadline:
            return rss
        await asyncio.sleep(0.2)


async def test_refused_large_requests_leave_rss_near_its_baseline(service: Running) -> None:
    channel = grpc.aio.insecure_channel(
        service.address, options=[("grpc.max_send_message_length", -1)]
    )
    try:
        await asyncio.wait_for(channel.channel_ready(), 30)
        health = health_pb2_grpc.HealthStub(channel)
        check = await health.Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert check.status == health_pb2.HealthCheckResponse.SERVING
        stub = account_service_pb2_grpc.AccountServiceStub(channel)
        # One small refused call first, so that the baseline includes what any call sets up.
        assert await burst(stub, 64 * 1024) == [grpc.StatusCode.INVALID_ARGUMENT] * BURST
        baseline = rss_mb(service.process.pid)

        # Over the receive limit: gRPC refuses each from its length prefix.
        assert await burst(stub, 20 * MIB) == [grpc.StatusCode.RESOURCE_EXHAUSTED] * BURST
        after_oversized = await settled(service.process.pid, baseline + SETTLED_MB)
        # Just under it: each is received whole, then refused by validation.
        assert await burst(stub, LIMIT - 1024) == [grpc.StatusCode.INVALID_ARGUMENT] * BURST
        after_invalid = await settled(service.process.pid, baseline + SETTLED_MB)
    finally:
        await channel.close()

    assert after_oversized <= baseline + SETTLED_MB, (baseline, after_oversized)
    assert after_invalid <= baseline + SETTLED_MB, (baseline, after_invalid)
