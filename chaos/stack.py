"""The processes under test: the KasPro sandbox, and the wallet service's replicas, each
killed with SIGKILL and started again on the same database and the same ports."""

from __future__ import annotations

import json
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import procs
from chaos.router import CallbackRouter
from chaos.store import Store

# The sandbox's waits between a callback's tries in a run: 0.2 s doubling to 3.2 s, then
# every 3.2 s: 15.8 s in all, every gap under the settle phase's quiet window (5 s).
CALLBACK_RETRIES = "0.2,0.4,0.8,1.6,3.2,3.2,3.2,3.2"

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


@dataclass
class Replica:
    """One ``wallet-service serve`` process, on ports it keeps across restarts."""

    name: str
    grpc_port: int = field(default_factory=procs.free_port)
    http_port: int = field(default_factory=procs.free_port)
    process: procs.Proc | None = None
    starts: int = 0
    up: bool = False

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/metrics"


class Stack:
    """A sandbox process and ``replicas`` wallet service processes on one database."""

    def __init__(
        self,
        workdir: Path,
        seed: int,
        faults: list[dict[str, Any]],
        s: Settings,
        store: Store,
        replicas: int = 1,
    ):
        self.workdir = workdir
        self.seed = seed
        self.settings = s
        self.store = store
        self.sandbox_port = procs.free_port()
        # One replica keeps the names of the single-service runs (service-N.log).
        self.replicas = [
            Replica("service" if replicas == 1 else f"replica{n + 1}") for n in range(replicas)
        ]
        self.faults_file = workdir / "faults.json"
        self.faults_file.write_text(json.dumps(faults, indent=1))
        self.sandbox: procs.Proc | None = None
        # Several replicas: the sandbox calls the router, which picks a replica.
        self.router = (
            CallbackRouter([r.http_port for r in self.replicas], seed) if replicas > 1 else None
        )

    @property
    def sandbox_url(self) -> str:
        return f"http://127.0.0.1:{self.sandbox_port}"

    @property
    def targets(self) -> list[str]:
        return [r.target for r in self.replicas]

    def live(self) -> list[Replica]:
        return [r for r in self.replicas if r.up]

    def start_sandbox(self) -> None:
        seed, delay = str(self.seed), str(self.settings.async_delay_seconds)
        # Time runs fast here: a callback to a killed replica is tried again within
        # seconds, as KasPro's hours of retries would reach a restarted one — for longer
        # than the slowest restart (4.6 s seen on a loaded machine outlasted the quick
        # schedule's 3 s: a top-up credited, all its tries refused, never booked), with no
        # gap as long as the quiet the settle phase waits for (CALLBACKS_QUIET_SECONDS).
        options = ("--seed", seed, "--fault-seed", seed, "--async-delay", delay)
        retries = ("--callback-retries", CALLBACK_RETRIES)
        faults = ("--faults", str(self.faults_file))
        # The sandbox's helper builds the callback URL from a port on loopback.
        port = self.router.port if self.router else self.replicas[0].http_port
        self.sandbox = procs.start_sandbox_process(
            self.workdir, self.sandbox_port, port, *options, *retries, *faults
        )

    def service_env(self, replica: Replica) -> dict[str, str]:
        s = self.settings
        tokens = ";".join(f"{name}:{name}:{token}" for name, token in TOKENS.items())
        common = procs.service_env(
            replica.grpc_port,
            replica.http_port,
            self.workdir / "wallet.db",
            self.sandbox_url,
            tokens,
        )
        return {
            **common,
            **self.store.env(),
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

    def start_replica(self, replica: Replica) -> float:
        """Start (or restart) a replica; the seconds until it answered SERVING."""
        replica.starts += 1
        replica.process, seconds = procs.start(
            f"{replica.name}-{replica.starts}",
            ["-m", "wallet_service", "serve"],
            workdir=self.workdir,
            env=self.service_env(replica),
            ready=procs.grpc_serving(replica.grpc_port),
            timeout=60.0,
        )
        replica.up = True
        return seconds

    def kill_replica(self, replica: Replica) -> None:
        """SIGKILL: no shutdown code runs, in-flight calls and transactions are cut."""
        assert replica.process is not None
        replica.up = False
        replica.process.process.send_signal(signal.SIGKILL)
        replica.process.process.wait()

    def stop_replicas(self) -> None:
        for replica in self.replicas:
            if replica.process is not None:
                replica.process.stop()
            replica.up = False

    def stop(self) -> None:
        self.stop_replicas()
        if self.sandbox is not None:
            self.sandbox.stop()
