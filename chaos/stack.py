"""The processes under test: the KasPro sandbox, and the wallet service that is killed with
SIGKILL and started again on the same database and the same ports."""

from __future__ import annotations

import json
import shutil
import signal
import sqlite3
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import procs

TOKENS = {
    "app": "chaos-app-token",
    "dispatch": "chaos-dispatch-token",
    "admin": "chaos-admin-token",
}


@dataclass(frozen=True)
class Settings:
    """The service's and the sandbox's timing under chaos."""

    kaspro_timeout_seconds: float = 1.5
    reconcile_interval_seconds: float = 0.2
    # Longer than any KasPro call may take, so an inquiry never overtakes its call.
    reconcile_grace_seconds: float = 3.0
    hold_lifetime_seconds: float = 20.0
    async_delay_seconds: float = 0.3
    cash_out_fee_idr: int = 1000


class Stack:
    """A sandbox process and a wallet service process on a database kept across kills."""

    def __init__(self, workdir: Path, seed: int, faults: list[dict[str, Any]], s: Settings):
        self.workdir = workdir
        self.seed = seed
        self.settings = s
        self.sandbox_port = procs.free_port()
        self.grpc_port = procs.free_port()
        self.http_port = procs.free_port()
        self.db_path = workdir / "wallet.db"
        self.faults_file = workdir / "faults.json"
        self.faults_file.write_text(json.dumps(faults, indent=1))
        self.sandbox: procs.Proc | None = None
        self.service: procs.Proc | None = None
        self.starts = 0
        self.startup_seconds: list[float] = []

    @property
    def sandbox_url(self) -> str:
        return f"http://127.0.0.1:{self.sandbox_port}"

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/metrics"

    def start_sandbox(self) -> None:
        seed, delay = str(self.seed), str(self.settings.async_delay_seconds)
        options = ("--seed", seed, "--fault-seed", seed, "--async-delay", delay)
        faults = ("--faults", str(self.faults_file))
        self.sandbox = procs.start_sandbox_process(
            self.workdir, self.sandbox_port, self.http_port, *options, *faults
        )

    def service_env(self) -> dict[str, str]:
        s = self.settings
        tokens = ";".join(f"{name}:{name}:{token}" for name, token in TOKENS.items())
        common = procs.service_env(
            self.grpc_port, self.http_port, self.db_path, self.sandbox_url, tokens
        )
        return {
            **common,
            "WALLET_KASPRO_TIMEOUT_SECONDS": str(s.kaspro_timeout_seconds),
            "WALLET_RECONCILE_INTERVAL_SECONDS": str(s.reconcile_interval_seconds),
            "WALLET_RECONCILE_GRACE_SECONDS": str(s.reconcile_grace_seconds),
            "WALLET_HOLD_LIFETIME_SECONDS": str(s.hold_lifetime_seconds),
            # Onboarding is set-up here, not the subject: no OTP cooldown to wait out.
            "WALLET_OTP_RESEND_COOLDOWN_SECONDS": "0",
            "WALLET_OTP_HOURLY_CAP": "1000",
            "WALLET_GRACE_PERIOD_SECONDS": "2",
            "WALLET_LOG_LEVEL": "INFO",
        }

    def start_service(self) -> float:
        """Start (or restart) the service; the seconds until it answered SERVING."""
        self.starts += 1
        self.service, seconds = procs.start(
            f"service-{self.starts}",
            ["-m", "wallet_service", "serve"],
            workdir=self.workdir,
            env=self.service_env(),
            ready=procs.grpc_serving(self.grpc_port),
            timeout=60.0,
        )
        self.startup_seconds.append(seconds)
        return seconds

    def kill_service(self) -> None:
        """SIGKILL: no shutdown code runs, in-flight calls and transactions are cut."""
        assert self.service is not None
        self.service.process.send_signal(signal.SIGKILL)
        self.service.process.wait()

    def stop_service(self) -> None:
        if self.service is not None:
            self.service.stop()

    def stop(self) -> None:
        self.stop_service()
        if self.sandbox is not None:
            self.sandbox.stop()

    @contextmanager
    def crash_copy(self) -> Iterator[sqlite3.Connection]:
        """The database as a killed service left it (a copy with its WAL, so opening it
        cannot disturb the file the next process uses)."""
        with tempfile.TemporaryDirectory(prefix="chaos-crash-") as tmp:
            for suffix in ("", "-wal"):
                source = Path(f"{self.db_path}{suffix}")
                if source.exists():
                    shutil.copyfile(source, Path(tmp) / f"wallet.db{suffix}")
            connection = sqlite3.connect(Path(tmp) / "wallet.db")
            connection.row_factory = sqlite3.Row
            try:
                yield connection
            finally:
                connection.close()


@contextmanager
def readonly(path: Path) -> Iterator[sqlite3.Connection]:
    """The service's database, opened read-only (the auditor never writes)."""
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    connection.row_factory = sqlite3.Row
    try:
        yield connection
    finally:
        connection.close()
