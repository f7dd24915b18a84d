"""A scenario's processes and its load: the KasPro sandbox and one or more wallet service
replicas on a fresh database, customers prepared, the load generator run against them,
and every server's CPU per call read from /proc (the database's too, on PostgreSQL)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
from wallet.v1 import account_service_pb2, account_service_pb2_grpc

from bench import postgres, procs

TOKEN = "bench-admin-token"


@dataclass(frozen=True)
class Plan:
    duration: float
    concurrency: int
    latency_concurrency: int
    customers: int
    # Seconds of load before the measured `duration` (bench/load.py says why).
    warmup: float = 0.0


class Stack:
    """A sandbox process and ``replicas`` wallet service processes on a fresh database:
    SQLite in ``workdir``, or the PostgreSQL database at ``db_url`` (which every replica
    shares). KasPro calls the first replica back."""

    def __init__(self, workdir: Path, *, replicas: int = 1, db_url: str = "") -> None:
        if replicas > 1 and not db_url:
            raise ValueError("several replicas need a PostgreSQL database")
        self.workdir = workdir
        self.db_url = db_url
        self.sandbox_port = procs.free_port()
        self.grpc_ports = [procs.free_port() for _ in range(replicas)]
        self.http_ports = [procs.free_port() for _ in range(replicas)]
        # KasPro's own logging and memory are not the service's cost: no line per
        # request, and a request log of the last 1,000 (nothing reads it).
        quiet = ("--no-access-log", "--request-log-size", "1000")
        self.sandbox = procs.start_sandbox_process(
            workdir, self.sandbox_port, self.http_ports[0], *quiet
        )
        self.sandbox_url = f"http://127.0.0.1:{self.sandbox_port}"
        self.control = httpx.Client(base_url=self.sandbox_url, timeout=30)
        self.services: list[procs.Proc] = []
        self.startup_seconds = 0.0
        self._start_services()
        self.targets = [f"127.0.0.1:{port}" for port in self.grpc_ports]
        self.target = self.targets[0]

    def _start_services(self) -> None:
        replicas = len(self.grpc_ports)
        try:
            for n, (grpc_port, http_port) in enumerate(
                zip(self.grpc_ports, self.http_ports, strict=True)
            ):
                env = procs.service_env(
                    grpc_port,
                    http_port,
                    self.workdir / "wallet.db",
                    self.sandbox_url,
                    f"bench:admin:{TOKEN}",
                )
                if self.db_url:
                    env["WALLET_DB_URL"] = self.db_url
                # The service defaults unless BENCH_KASPRO_CONNECTIONS or
                # BENCH_DB_POOL_SIZE say otherwise.
                if "BENCH_KASPRO_CONNECTIONS" in os.environ:
                    env["WALLET_KASPRO_MAX_CONNECTIONS"] = os.environ["BENCH_KASPRO_CONNECTIONS"]
                if "BENCH_DB_POOL_SIZE" in os.environ:
                    env["WALLET_DB_POOL_SIZE"] = os.environ["BENCH_DB_POOL_SIZE"]
                service, seconds = procs.start(
                    "service" if replicas == 1 else f"service{n + 1}",
                    ["-m", "wallet_service", "serve"],
                    workdir=self.workdir,
                    env={**env, "WALLET_LOG_LEVEL": "WARNING"},
                    ready=procs.grpc_serving(grpc_port),
                )
                self.services.append(service)
                self.startup_seconds = max(self.startup_seconds, seconds)
        except BaseException:
            self.stop()
            raise

    def restart_services(self, between: Callable[[], None]) -> None:
        """Stop every replica, call ``between``, start them again on the same ports."""
        for service in self.services:
            service.stop()
        self.services = []
        between()
        self._start_services()

    @property
    def service(self) -> procs.Proc:
        return self.services[0]

    def delay_every_call(self, seconds: float) -> None:
        """From now on the sandbox answers every call ``seconds`` late (after onboarding,
        which would otherwise wait out the delay on each of its KasPro calls)."""
        self.control.post(
            "/_sandbox/faults",
            json={"path": "*", "kind": "delay", "delaySeconds": seconds, "times": 10**9},
        ).raise_for_status()

    def onboard(self, count: int) -> list[str]:
        """Register and link ``count`` customers, each with IDR 1,000,000 at the sandbox."""
        numbers = [f"0812{n:08d}" for n in range(count)]
        metadata = (("authorization", f"Bearer {TOKEN}"),)
        with grpc.insecure_channel(self.target) as channel:
            stub = account_service_pb2_grpc.AccountServiceStub(channel)
            for number in numbers:
                stub.RegisterCustomer(
                    account_service_pb2.RegisterCustomerRequest(
                        request_id=f"reg-{number}", mobile_number=number, first_name="Bench"
                    ),
                    metadata=metadata,
                )
                stub.RequestOtp(
                    account_service_pb2.RequestOtpRequest(mobile_number=number), metadata=metadata
                )
                otp = self.control.get("/_sandbox/otp", params={"mobileNumber": number}).json()
                stub.VerifyOtp(
                    account_service_pb2.VerifyOtpRequest(mobile_number=number, otp=otp["otp"]),
                    metadata=metadata,
                )
                self.control.post(
                    f"/_sandbox/customers/{number}/balance", json={"balance": 1_000_000}
                ).raise_for_status()
        return numbers

    def stop(self) -> None:
        self.control.close()
        for service in self.services:
            service.stop()
        self.sandbox.stop()


def load(
    scenario: str, target: str, numbers: list[str], plan: Plan, **extra: Any
) -> dict[str, Any]:
    # Every bench/load.py option; ``extra`` adds or overrides concurrency, sandbox, calls, rate.
    options = {
        "scenario": scenario,
        "target": target,
        "token": TOKEN,
        "numbers": json.dumps(numbers),
        "concurrency": plan.concurrency,
        "duration": plan.duration,
        "warmup": plan.warmup,
        **extra,
    }
    args = [sys.executable, "-m", "bench.load"]
    for name, value in options.items():
        args += [f"--{name}", str(value)]
    done = subprocess.run(args, cwd=procs.ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def calls_made(result: dict[str, Any]) -> int:
    """Every call the generator made, the warm-up's too (the servers' CPU covers them)."""
    made: int = result["calls"] + result.get("warmup_calls", 0)
    return max(made, 1)


def measured(
    result: dict[str, Any], servers: list[procs.Proc], cpu_before: list[float]
) -> dict[str, Any]:
    calls = calls_made(result)
    for proc, before in zip(servers, cpu_before, strict=True):
        result[f"{proc.name}_cpu_s_per_1000"] = round(
            (proc.cpu_seconds() - before) / calls * 1000, 3
        )
        result[f"{proc.name}_peak_rss_mb"] = round(proc.peak_rss_mb(), 1)
    replicas = [p.name for p in servers if p.name.startswith("service") and p.name != "service"]
    if replicas:
        # Several replicas: the service's cost is theirs added up; its memory, the largest.
        result["service_cpu_s_per_1000"] = round(
            sum(result[f"{name}_cpu_s_per_1000"] for name in replicas), 3
        )
        result["service_peak_rss_mb"] = max(result[f"{name}_peak_rss_mb"] for name in replicas)
    return result


def with_stack(
    plan: Plan,
    workdir: Path,
    scenario: str,
    *,
    customers: int,
    sandbox_latency: float = 0.0,
    concurrency: int | None = None,
    direct: bool = False,
    rate: float | None = None,
    replicas: int = 1,
    database: postgres.Server | None = None,
    history: int = 0,
) -> dict[str, Any]:
    """One run of ``scenario`` on a fresh stack; on PostgreSQL (``database``) with the
    database's counts and CPU per call too, and ``history`` earlier transfers in it."""
    stack = Stack(workdir, replicas=replicas, db_url=database.url if database else "")
    counts_before: postgres.Counts | None = None
    backends_before: dict[int, float] | None = None
    backends_after: dict[int, float] | None = None
    try:
        if database and history:
            postgres.fill_history(database.url, history)
        numbers = stack.onboard(customers)
        if database:
            # A busy backend reports its counts at most once a second, an idle one 10 s
            # later: onboarding's would land in the run's. Backends that exit report all.
            stack.restart_services(database.wait_disconnected)
        if sandbox_latency:
            stack.delay_every_call(sandbox_latency)
        servers = [stack.sandbox] if direct else [*stack.services, stack.sandbox]
        before = [p.cpu_seconds() for p in servers]
        extra: dict[str, Any] = {"concurrency": concurrency or plan.concurrency}
        if direct:
            extra["sandbox"] = stack.sandbox_url
        if rate:
            extra["rate"] = rate
        counts_before = database.counts() if database else None
        backends_before = database.backend_cpu() if database else None
        result = load(scenario, ",".join(stack.targets), numbers, plan, **extra)
        result = measured(result, servers, before)
        result["startup_s"] = round(stack.startup_seconds, 3)
        if database:
            backends_after = database.backend_cpu()
            result["db_connections"] = len(database.backends())
    finally:
        stack.stop()
    if database and counts_before is not None:
        # The replicas' connections are closed: every backend has reported its counts.
        database.wait_disconnected()
        result.update(database_figures(result, database, counts_before))
        if scenario == "watch":
            # The watcher reads the sequence index too: the batches cannot be told apart.
            result["db_events_per_numbered_batch"] = None
        result["db_cpu_s_per_1000"] = None
        if backends_before is not None and backends_after is not None:
            busy = sum(cpu - backends_before.get(pid, 0.0) for pid, cpu in backends_after.items())
            result["db_cpu_s_per_1000"] = round(busy / calls_made(result) * 1000, 3)
    return result


def database_figures(
    result: dict[str, Any], database: postgres.Server, before: postgres.Counts
) -> dict[str, Any]:
    """What the server counted during the run, per call made."""
    after = database.counts()
    calls = calls_made(result)
    transactions = after.commits + after.rollbacks - before.commits - before.rollbacks
    steps = after.numbering_steps - before.numbering_steps
    batches = after.numbering_batches - before.numbering_batches
    numbered = after.events_numbered - before.events_numbered
    # Where the statements went: per table, sequential and index scans and rows
    # inserted, updated and deleted, per call made.
    names = ("seq_scan", "idx_scan", "inserted", "updated", "deleted")
    tables = {}
    for table, now in sorted(after.tables.items()):
        then = before.tables.get(table, (0,) * len(names))
        tables[table] = {
            name: round((a - b) / calls, 3) for name, a, b in zip(names, now, then, strict=True)
        }
    statements = None
    if after.statements is not None and before.statements is not None:
        statements = round((after.statements - before.statements) / calls, 2)
    return {
        "db_transactions_per_call": round(transactions / calls, 2),
        "db_rollbacks_per_call": round((after.rollbacks - before.rollbacks) / calls, 3),
        "db_statements_per_call": statements,
        "db_numbering_steps_per_call": round(steps / calls, 3),
        "db_events_per_numbered_batch": round(numbered / batches, 2) if batches else None,
        "db_events_per_call": round(numbered / calls, 2),
        "db_tables_per_call": tables,
    }
