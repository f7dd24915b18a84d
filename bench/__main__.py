"""``make bench``: every scenario against freshly started processes, one table of figures,
then the guards: the figures a change must not push past their limits.

Each scenario starts its own server processes (the echo ceiling, or the KasPro sandbox
and the wallet service as two processes), prepares customers, runs the load generator
in a third process, and reads the servers' CPU time and peak RSS from /proc.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
from wallet.v1 import account_service_pb2, account_service_pb2_grpc

from bench import procs

TOKEN = "bench-admin-token"
RESULTS = procs.ROOT / "bench" / "results"


@dataclass(frozen=True)
class Plan:
    duration: float
    concurrency: int
    latency_concurrency: int
    customers: int
    # Seconds of load before the measured `duration` (bench/load.py says why).
    warmup: float = 0.0


class Stack:
    """A sandbox process and a wallet service process on a fresh database."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.sandbox_port = procs.free_port()
        self.grpc_port = procs.free_port()
        self.http_port = procs.free_port()
        # KasPro's own logging and memory are not the service's cost: no line per
        # request, and a request log of the last 1,000 (nothing reads it).
        quiet = ("--no-access-log", "--request-log-size", "1000")
        self.sandbox = procs.start_sandbox_process(
            workdir, self.sandbox_port, self.http_port, *quiet
        )
        self.sandbox_url = f"http://127.0.0.1:{self.sandbox_port}"
        self.control = httpx.Client(base_url=self.sandbox_url, timeout=30)
        db_path, tokens = workdir / "wallet.db", f"bench:admin:{TOKEN}"
        env = procs.service_env(self.grpc_port, self.http_port, db_path, self.sandbox_url, tokens)
        # The service default unless BENCH_KASPRO_CONNECTIONS says otherwise.
        if "BENCH_KASPRO_CONNECTIONS" in os.environ:
            env["WALLET_KASPRO_MAX_CONNECTIONS"] = os.environ["BENCH_KASPRO_CONNECTIONS"]
        self.service, self.startup_seconds = procs.start(
            "service",
            ["-m", "wallet_service", "serve"],
            workdir=workdir,
            env={**env, "WALLET_LOG_LEVEL": "WARNING"},
            ready=procs.grpc_serving(self.grpc_port),
        )
        self.target = f"127.0.0.1:{self.grpc_port}"

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
        self.service.stop()
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


def measured(
    result: dict[str, Any], servers: list[procs.Proc], cpu_before: list[float]
) -> dict[str, Any]:
    # The servers' CPU time covers every call made, the warm-up's too.
    calls = max(result["calls"] + result.get("warmup_calls", 0), 1)
    for proc, before in zip(servers, cpu_before, strict=True):
        result[f"{proc.name}_cpu_s_per_1000"] = round(
            (proc.cpu_seconds() - before) / calls * 1000, 3
        )
        result[f"{proc.name}_peak_rss_mb"] = round(proc.peak_rss_mb(), 1)
    return result


def ceiling(plan: Plan, workdir: Path) -> dict[str, Any]:
    port = procs.free_port()
    echo, _ = procs.start(
        "echo",
        ["-m", "bench.echo_server", "--port", str(port), "--uvloop"],
        workdir=workdir,
        ready=procs.port_open(port),
    )
    try:
        before = [echo.cpu_seconds()]
        result = load("echo", f"127.0.0.1:{port}", [], plan)
        return measured(result, [echo], before)
    finally:
        echo.stop()


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
) -> dict[str, Any]:
    stack = Stack(workdir)
    try:
        numbers = stack.onboard(customers)
        if sandbox_latency:
            stack.delay_every_call(sandbox_latency)
        servers = [stack.sandbox] if direct else [stack.service, stack.sandbox]
        before = [p.cpu_seconds() for p in servers]
        extra: dict[str, Any] = {"concurrency": concurrency or plan.concurrency}
        if direct:
            extra["sandbox"] = stack.sandbox_url
        if rate:
            extra["rate"] = rate
        result = load(scenario, stack.target, numbers, plan, **extra)
        result = measured(result, servers, before)
        result["startup_s"] = round(stack.startup_seconds, 3)
        return result
    finally:
        stack.stop()


def leak(plan: Plan, workdir: Path, first: int, total: int) -> dict[str, Any]:
    """RSS after ``first`` transfers and after ``total``: the two should be close."""
    stack = Stack(workdir)
    try:
        numbers = stack.onboard(plan.customers)
        long_plan = Plan(3600.0, plan.concurrency, plan.latency_concurrency, plan.customers)
        load("transfer", stack.target, numbers, long_plan, calls=first)
        early = stack.service.rss_mb()
        done = load("transfer", stack.target, numbers, long_plan, calls=total - first)
        late = stack.service.rss_mb()
        return {
            **done,
            "writes": total,
            "rss_mb_after_first": round(early, 1),
            "rss_mb_after_all": round(late, 1),
            "rss_growth_pct": round((late - early) / early * 100, 1),
            "first": first,
        }
    finally:
        stack.stop()


SCENARIOS = (
    "ceiling",
    "kaspro_direct",
    "get_account",
    "check_funds",
    "transfer",
    "ride",
    "replay",
    "latency_bound",
    "watch",
    "added_latency",
)


def run_all(plan: Plan, only: list[str]) -> dict[str, dict[str, Any]]:
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="wallet-bench-") as tmp:
        for name in SCENARIOS:
            if only and name not in only:
                continue
            workdir = Path(tmp) / name
            workdir.mkdir()
            print(f"running {name} …", file=sys.stderr, flush=True)
            if name == "ceiling":
                results[name] = ceiling(plan, workdir)
            elif name == "kaspro_direct":
                results[name] = with_stack(plan, workdir, name, customers=4, direct=True)
            elif name == "added_latency":
                # Half of the measured write throughput, open loop: the service's p99
                # against the same KasPro work done straight to the sandbox.
                rate = max((results.get("transfer", {}).get("calls_per_s") or 300.0) / 2, 10.0)
                (workdir / "direct").mkdir()
                (workdir / "service").mkdir()
                direct = with_stack(
                    plan,
                    workdir / "direct",
                    "transfer_direct",
                    customers=plan.customers,
                    direct=True,
                    rate=rate,
                )
                through = with_stack(
                    plan, workdir / "service", "transfer", customers=plan.customers, rate=rate
                )
                through["rate"] = rate
                through["direct_p99_ms"] = direct["p99_ms"]
                through["added_p99_ms"] = round(through["p99_ms"] - direct["p99_ms"], 2)
                results[name] = through
            elif name == "latency_bound":
                results[name] = with_stack(
                    plan,
                    workdir,
                    "get_account",
                    customers=4,
                    sandbox_latency=0.2,
                    concurrency=plan.latency_concurrency,
                )
            else:
                scenario = name
                results[name] = with_stack(plan, workdir, scenario, customers=plan.customers)
    return results


def cores_busy(result: dict[str, Any]) -> float:
    """How many cores the run's processes kept busy: every CPU second per call, times calls/s."""
    per_call = sum(
        result.get(f"{name}_cpu_s_per_1000", 0.0)
        for name in ("echo", "service", "sandbox", "generator")
    )
    busy: float = per_call / 1000 * result["calls_per_s"]
    return round(busy, 2)


def guards(results: dict[str, dict[str, Any]], plan: Plan) -> list[dict[str, Any]]:
    """The figures a change must keep on the right side of their limits, each with its
    value and whether it is met (None: not measured in this run)."""

    def get(scenario: str, key: str) -> float | None:
        value: float | None = results.get(scenario, {}).get(key)
        return value

    def per_ceiling(scenario: str) -> float | None:
        ceiling, calls = get("ceiling", "calls_per_s"), get(scenario, "calls_per_s")
        return calls / ceiling if ceiling and calls is not None else None

    def largest(key: str) -> float | None:
        return max((r[key] for r in results.values() if key in r), default=None)

    # The latency-bound guards are for 1,000 callers in flight; a quick run has fewer.
    full = plan.latency_concurrency >= 1000
    # GetAccount and latency-bound were lowered when aiohttp became the only KasPro client
    # (docs/performance.md, "Before and after issue 14": the arithmetic).
    rows = [
        ("GetAccount / ceiling", "≥", 0.20, per_ceiling("get_account")),
        ("replay / ceiling", "≥", 0.40, per_ceiling("replay")),
        ("latency-bound calls/s", "≥", 900, get("latency_bound", "calls_per_s") if full else None),
        ("latency-bound p99 ms", "≤", 1200, get("latency_bound", "p99_ms") if full else None),
        ("added p99 ms at half the write rate", "≤", 10, get("added_latency", "added_p99_ms")),
        ("WatchEvents lag p99 ms", "≤", 50, get("watch", "lag_p99_ms")),
        ("service peak RSS MB", "≤", 250, largest("service_peak_rss_mb")),
        ("start-up to SERVING s", "≤", 1.5, largest("startup_s")),
    ]
    checks = []
    for what, sign, limit, value in rows:
        met = None if value is None else (value >= limit if sign == "≥" else value <= limit)
        checks.append({"guard": f"{what} {sign} {limit:g}", "value": value, "met": met})
    return checks


def guard_lines(checks: list[dict[str, Any]]) -> str:
    lines = []
    for c in checks:
        verdict = {True: "met", False: "NOT MET", None: "not measured"}[c["met"]]
        value = "" if c["value"] is None else f": {c['value']:.2f}"
        lines.append(f"guard {c['guard']}{value} {verdict}")
    return "\n".join(lines)


def table(results: dict[str, dict[str, Any]]) -> str:
    ceiling = results.get("ceiling", {}).get("calls_per_s") or 0.0
    direct = results.get("kaspro_direct", {}).get("calls_per_s") or 0.0
    rows = [
        f"{'scenario':<14} {'calls/s':>9} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'errors':>7} "
        f"{'svc cpu s/1k':>12} {'svc MB':>7} {'sbx cpu s/1k':>12} {'gen cpu s/1k':>12} "
        f"{'cores busy':>10} {'/ceiling':>8} {'/direct':>8}"
    ]
    for name, r in results.items():
        errors = sum(r["errors"].values())
        cps = r["calls_per_s"]
        # The server measured: the service or the echo (none for direct KasPro).
        server = next((n for n in ("service", "echo") if f"{n}_cpu_s_per_1000" in r), "")
        server_cpu = r.get(f"{server}_cpu_s_per_1000", 0)
        rows.append(
            f"{name:<14} {cps:>9.1f} {r['p50_ms']:>8.1f} {r['p90_ms']:>8.1f} {r['p99_ms']:>8.1f} "
            f"{errors:>7} {server_cpu:>12.3f} "
            f"{r.get(f'{server}_peak_rss_mb', 0):>7.1f} "
            f"{r.get('sandbox_cpu_s_per_1000', 0):>12.3f} "
            f"{r.get('generator_cpu_s_per_1000', 0):>12.3f} {cores_busy(r):>10.2f} "
            f"{(cps / ceiling if ceiling else 0):>8.2f} {(cps / direct if direct else 0):>8.2f}"
        )
    if results.get("latency_bound", {}).get("warmup_calls"):
        lb = results["latency_bound"]
        rows.append(
            f"latency_bound warm-up, not in the row (each caller's first calls, the KasPro "
            f"connections opening): {lb['warmup_calls']} calls, p99 {lb['warmup_p99_ms']} ms"
        )
    if "watch" in results:
        w = results["watch"]
        rows.append(
            f"WatchEvents lag: p50 {w['lag_p50_ms']} ms, p99 {w['lag_p99_ms']} ms "
            f"over {w['lag_events']} events"
        )
    if "added_latency" in results:
        a = results["added_latency"]
        rows.append(
            f"added p99 at {a['rate']:.0f} transfers/s (open loop): {a['added_p99_ms']} ms "
            f"(service {a['p99_ms']} ms, the same KasPro calls direct {a['direct_p99_ms']} ms)"
        )
    startups = [r["startup_s"] for r in results.values() if "startup_s" in r]
    if startups:
        rows.append(f"start-up to SERVING: max {max(startups):.2f} s over {len(startups)} starts")
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="about 30 s in all")
    parser.add_argument("--duration", type=float, help="seconds of load per scenario")
    parser.add_argument("--concurrency", type=int, help="callers in flight (default 32)")
    parser.add_argument("--only", nargs="*", default=[], choices=SCENARIOS)
    parser.add_argument(
        "--results", type=Path, default=RESULTS, help="where latest.json goes (bench/results)"
    )
    parser.add_argument(
        "--leak",
        type=int,
        metavar="WRITES",
        help="instead: RSS after WRITES/10 transfers and after WRITES (e.g. 100000)",
    )
    args = parser.parse_args()
    plan = Plan(
        duration=args.duration or (1.0 if args.quick else 10.0),
        concurrency=args.concurrency or 32,
        latency_concurrency=200 if args.quick else 1000,
        customers=16 if args.quick else 64,
        warmup=0.5 if args.quick else 1.0,
    )
    started = time.monotonic()
    if args.leak:
        with tempfile.TemporaryDirectory(prefix="wallet-bench-") as tmp:
            result = leak(plan, Path(tmp), args.leak // 10, args.leak)
        print(
            f"RSS after {result['first']} transfers: {result['rss_mb_after_first']} MB; "
            f"after {result['writes']}: {result['rss_mb_after_all']} MB "
            f"({result['rss_growth_pct']:+.1f} %)"
        )
        args.results.mkdir(parents=True, exist_ok=True)
        (args.results / "leak.json").write_text(json.dumps(result, indent=2))
        return 0
    results = run_all(plan, args.only)
    checks = guards(results, plan)
    print(table(results))
    print(guard_lines(checks))
    args.results.mkdir(parents=True, exist_ok=True)
    report = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "plan": plan.__dict__,
        "wall_seconds": round(time.monotonic() - started, 1),
        "results": results,
        "guards": checks,
    }
    (args.results / "latest.json").write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
