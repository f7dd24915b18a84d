"""``make bench``: every scenario against freshly started processes, one table of figures,
then the guards: the figures a change must not push past their limits.

Each scenario starts its own server processes (the echo ceiling, or the KasPro sandbox
and the wallet service as two processes), prepares customers, runs the load generator
in a third process, and reads the servers' CPU time and peak RSS from /proc.

``--store postgres`` runs instead GetAccount, Transfer, the ride cycle and replay on
SQLite and on PostgreSQL with one replica and with two (bench/stores.py).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import procs, stores
from bench.stack import Plan, Stack, load, measured, with_stack

RESULTS = procs.ROOT / "bench" / "results"


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
    parser.add_argument(
        "--quick", action="store_true", help="about 30 s in all (--store postgres: 3 minutes)"
    )
    parser.add_argument("--duration", type=float, help="seconds of load per scenario")
    parser.add_argument("--concurrency", type=int, help="callers in flight (default 32)")
    parser.add_argument("--only", nargs="*", default=[], choices=SCENARIOS)
    parser.add_argument(
        "--results",
        type=Path,
        default=RESULTS,
        help="where latest.json (or postgres.json) goes (bench/results)",
    )
    parser.add_argument(
        "--store",
        choices=("sqlite", "postgres"),
        default="sqlite",
        help="postgres: GetAccount, Transfer, ride cycles and replay on SQLite and on "
        "PostgreSQL (WALLET_BENCH_POSTGRES_URL) with one replica and with two; "
        "results in postgres.json",
    )
    parser.add_argument(
        "--history",
        type=int,
        default=0,
        metavar="ROWS",
        help="with --store postgres: each PostgreSQL database starts with ROWS earlier "
        "transfers and ROWS/2 captured rides (e.g. 200000)",
    )
    parser.add_argument(
        "--leak",
        type=int,
        metavar="WRITES",
        help="instead: RSS after WRITES/10 transfers and after WRITES (e.g. 100000)",
    )
    args = parser.parse_args()
    if args.store == "postgres" and set(args.only) - set(stores.SCENARIOS):
        parser.error(f"--store postgres runs only {', '.join(stores.SCENARIOS)}")
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
    if args.store == "postgres":
        with tempfile.TemporaryDirectory(prefix="wallet-bench-") as tmp:
            results = stores.run_all(plan, args.only, Path(tmp), args.history)
        checks = stores.guards(results)
        print(stores.table(results))
        output = "postgres.json"
    else:
        results = run_all(plan, args.only)
        checks = guards(results, plan)
        print(table(results))
        output = "latest.json"
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
        "store": args.store,
        "history": args.history,
        "wall_seconds": round(time.monotonic() - started, 1),
        "results": results,
        "guards": checks,
    }
    (args.results / output).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
