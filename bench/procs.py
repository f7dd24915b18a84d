"""Processes under measurement: start, wait until ready, read CPU time and peak RSS, stop;
the sandbox and the wallet service set up alike for bench and chaos; and, inside a bench
server, wait for the stop signal."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from kaspro_sandbox import config as sandbox

ROOT = Path(__file__).resolve().parents[1]
_TICKS = os.sysconf("SC_CLK_TCK")


async def until_stopped() -> None:
    """Return when SIGTERM (``Proc.stop``) or SIGINT arrives: a bench server's lifetime."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Proc:
    name: str
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def cpu_seconds(self) -> float:
        """User + system CPU time so far (threads included)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICKS

    def peak_rss_mb(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start(
    name: str,
    args: list[str],
    *,
    workdir: Path,
    env: Mapping[str, str] | None = None,
    ready: Callable[[], bool],
    timeout: float = 30.0,
) -> tuple[Proc, float]:
    """Start a process and wait until ``ready()``; returns it and the start-up seconds."""
    log = workdir / f"{name}.log"
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    proc = Proc(name, process, log)
    while not ready():
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited while starting:\n{log.read_text()[-2000:]}")
        if time.monotonic() - started > timeout:
            proc.stop()
            raise RuntimeError(f"{name} did not become ready in {timeout} s")
        time.sleep(0.02)
    return proc, time.monotonic() - started


def grpc_serving(port: int) -> Callable[[], bool]:
    """Ready when the gRPC health service on ``port`` answers SERVING."""

    def check() -> bool:
        try:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                answer = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=""), timeout=0.5
                )
                return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)
        except grpc.RpcError:
            return False

    return check


def port_open(port: int) -> Callable[[], bool]:
    def check() -> bool:
        with socket.socket() as sock:
            sock.settimeout(0.2)
            return sock.connect_ex(("127.0.0.1", port)) == 0

    return check


def start_sandbox_process(workdir: Path, port: int, http_port: int, *options: str) -> Proc:
    """The KasPro sandbox on ``port``, calling back the service's HTTP port ``http_port``."""
    callback_url = f"http://127.0.0.1:{http_port}/callbacks/kaspro"
    proc, _ = start(
        "sandbox",
        ["-m", "kaspro_sandbox", "--port", str(port), "--callback-url", callback_url, *options],
        workdir=workdir,
        ready=port_open(port),
    )
    return proc


def service_env(
    grpc_port: int, http_port: int, db_path: Path, sandbox_url: str, caller_tokens: str
) -> dict[str, str]:
    """The wallet service's environment against that sandbox (its dev credentials)."""
    return {
        "WALLET_GRPC_LISTEN": f"127.0.0.1:{grpc_port}",
        "WALLET_HTTP_LISTEN": f"127.0.0.1:{http_port}",
        "WALLET_DB_PATH": str(db_path),
        **sandbox.service_environment(sandbox_url),
        "WALLET_CALLER_TOKENS": caller_tokens,
        "WALLET_MAX_CONCURRENT_RPCS": "5000",
    }
