"""``python -m chaos --seed N --ops M [--kills K] [--concurrency C] [--store postgres]``.

Starts the KasPro sandbox (faults armed at start-up, seeded with N) and the wallet service
as separate processes, onboards and funds customers, runs M money operations from C
concurrent retrying callers while a killer SIGKILLs the service K times and restarts it
on the same database, then turns the faults off, waits for everything to settle, and
audits. Prints a table; exits 1 naming the seed when an invariant is violated.

``--store postgres --replicas R``: R replicas on a PostgreSQL database created for the
run; the callers spread over them, each kill takes a random replica, and a few times the
database connections of a live replica are terminated (``--terminations``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import platform
import random
import shutil
import signal
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from chaos import audit, faults, plan
from chaos import drift as chaos_drift
from chaos.stack import Replica, Settings, Stack
from chaos.store import DEFAULT_POSTGRES_URL, PostgresStore, SqliteStore, Store
from chaos.watch import Watcher
from chaos.workload import Callers

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "chaos" / "results"
MONEY_PATHS = set(faults.MONEY_PATHS)
# Callbacks may arrive this long after settlement (late + retries): the books are read
# only after the sandbox's callback log has been quiet for this long.
CALLBACKS_QUIET_SECONDS = 5.0
# How long a replica whose database connections were terminated may take to serve again.
RECONNECT_SECONDS = 60.0
STORE_NAMES = {"sqlite": "SQLite", "postgres": "PostgreSQL"}


@dataclass
class Termination:
    """One ``pg_terminate_backend`` of a live replica's connections."""

    at_ops: int
    replica: str
    ended: dict[str, int]  # backends ended, by application_name
    serving_after: float | None  # seconds until it answered a read again; None: never
    # A kill of the same replica came in between: its connections were gone anyway.
    overtaken: bool = False


@dataclass
class Run:
    seed: int
    ops: int
    kills_planned: int
    concurrency: int
    fault_rate: float
    hold_lifetime: float
    final_wait: float
    dropped_faults: list[str]
    store: str = "sqlite"
    replicas: int = 1
    terminations_planned: int = 0
    database: str = ""
    keep: bool = False
    kills: int = 0
    kill_at_ops: list[int] = field(default_factory=list)
    kill_targets: list[str] = field(default_factory=list)
    terminations: list[Termination] = field(default_factory=list)
    restart_seconds: list[float] = field(default_factory=list)
    crash_findings: list[list[str]] = field(default_factory=list)
    onboarding_problems: list[str] = field(default_factory=list)
    workload_seconds: float = 0.0
    final_pass_seconds: float = 0.0
    settle_seconds: float | None = None
    quiescent_seconds: float | None = None
    held_settled_by_hand: int = 0
    watcher_connections: list[int] = field(default_factory=list)
    wall_seconds: float = 0.0


@dataclass
class Outcome:
    checks: list[audit.Check]
    sandbox: audit.Sandbox
    duplicates: dict[str, int]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m chaos", description=__doc__)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--ops", type=int, default=2000, help="money operations (default 2000)")
    parser.add_argument(
        "--kills",
        type=int,
        help="SIGKILLs of the service, each of a random replica (default 5 per 2000 ops,"
        " at least 1)",
    )
    parser.add_argument(
        "--store",
        choices=("sqlite", "postgres"),
        default="sqlite",
        help="the service's database: one SQLite file (one replica), or a PostgreSQL"
        " database created for the run on the server of --postgres-url",
    )
    parser.add_argument(
        "--replicas",
        type=int,
        help="service processes on the database (sqlite: 1; postgres: default 3)",
    )
    parser.add_argument(
        "--terminations",
        type=int,
        help="times the database connections of a live replica are terminated"
        " (postgres only; default 3 per 2000 ops, at least 1)",
    )
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("WALLET_CHAOS_POSTGRES_URL", DEFAULT_POSTGRES_URL),
        help="an administrator's URL of the PostgreSQL server (env WALLET_CHAOS_POSTGRES_URL,"
        f" default {DEFAULT_POSTGRES_URL}); the run creates its own database there",
    )
    parser.add_argument(
        "--database-prefix",
        default=os.environ.get("WALLET_CHAOS_DATABASE_PREFIX", "chaos"),
        help="the run's database is <prefix>_<seed>_<random> (env"
        " WALLET_CHAOS_DATABASE_PREFIX, default chaos)",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the run's PostgreSQL database (dropped at the end otherwise)",
    )
    parser.add_argument("--concurrency", type=int, default=16, help="concurrent callers")
    parser.add_argument(
        "--fault-rate", type=float, default=1.0, help="scales every fault probability"
    )
    parser.add_argument(
        "--hold-lifetime",
        type=float,
        default=20.0,
        help="seconds before an uncaptured hold expires",
    )
    parser.add_argument(
        "--final-wait",
        type=float,
        default=150.0,
        help="seconds to ask again about operations left without an answer at the end of"
        " the workload (their KasPro outcome is settled once the faults are off)",
    )
    parser.add_argument(
        "--drop-fault",
        action="append",
        default=[],
        metavar="KIND[@PATH]",
        help="leave out the fault rules of this kind (on this path), e.g. to bisect a"
        " violation: --drop-fault callback_unsigned@/_sandbox/topup; may be repeated",
    )
    parser.add_argument("--settle-timeout", type=float, default=600.0)
    parser.add_argument(
        "--results",
        type=Path,
        default=RESULTS,
        help="where the JSON result and the work directory (logs, database) go",
    )
    args = parser.parse_args(argv)
    if args.kills is None:
        args.kills = max(1, -(-args.ops * 5 // 2000))
    if args.ops < 1 or args.concurrency < 1 or args.kills < 0:
        parser.error("--ops and --concurrency must be at least 1, --kills at least 0")
    postgres = args.store == "postgres"
    if args.replicas is None:
        args.replicas = 3 if postgres else 1
    if args.terminations is None:
        args.terminations = max(1, -(-args.ops * 3 // 2000)) if postgres else 0
    if args.replicas < 1 or args.terminations < 0:
        parser.error("--replicas must be at least 1, --terminations at least 0")
    if not postgres and (args.replicas != 1 or args.terminations):
        parser.error("SQLite serves one replica and has no connections to terminate")
    return args


def results_name(args: argparse.Namespace) -> str:
    """``seed<N>-ops<M>``; on PostgreSQL ``postgres-r<R>-seed<N>-ops<M>``."""
    name = f"seed{args.seed}-ops{args.ops}"
    return name if args.store == "sqlite" else f"postgres-r{args.replicas}-{name}"


async def main_async(args: argparse.Namespace) -> int:
    started = time.monotonic()
    run = Run(
        args.seed,
        args.ops,
        args.kills,
        args.concurrency,
        args.fault_rate,
        args.hold_lifetime,
        args.final_wait,
        args.drop_fault,
        args.store,
        args.replicas,
        args.terminations,
        keep=args.keep,
    )
    results: Path = args.results
    workdir = results / f"work-{results_name(args)}"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    settings = Settings(hold_lifetime_seconds=args.hold_lifetime)
    rules = faults.without(
        faults.profile(settings.kaspro_timeout_seconds, args.fault_rate), args.drop_fault
    )
    store: Store
    if args.store == "postgres":
        store = PostgresStore(args.postgres_url, args.database_prefix, args.seed)
        run.database = store.name
        await store.create()
    else:
        store = SqliteStore(workdir / "wallet.db")
    stack = Stack(workdir, args.seed, rules, settings, store, args.replicas)
    try:
        if stack.router is not None:
            await stack.router.start()
        await asyncio.to_thread(stack.start_sandbox)
        async with httpx.AsyncClient(base_url=stack.sandbox_url, timeout=60) as control:
            (
                await control.post(
                    "/_sandbox/settings", json={"cash_out_fee": settings.cash_out_fee_idr}
                )
            ).raise_for_status()
            # Together: on an empty database, one replica migrates and the others wait.
            await asyncio.gather(
                *(asyncio.to_thread(stack.start_replica, r) for r in stack.replicas)
            )
            callers = Callers(stack.targets, stack.sandbox_url, args.seed)
            try:
                outcome = await exercise(args, run, stack, callers, control)
            finally:
                await callers.close()
    finally:
        await asyncio.to_thread(stack.stop)
        if stack.router is not None:
            await stack.router.close()
        if isinstance(store, PostgresStore) and not args.keep:
            await store.drop()
    run.wall_seconds = time.monotonic() - started
    return report(run, callers, outcome, results, workdir, stack)


async def exercise(
    args: argparse.Namespace, run: Run, stack: Stack, callers: Callers, control: httpx.AsyncClient
) -> Outcome:
    people = plan.customers(args.seed, args.ops)
    print(
        f"chaos: seed {args.seed}, onboarding {len(people.everyone)} customers …",
        file=sys.stderr,
        flush=True,
    )
    run.onboarding_problems = await callers.onboard(people, min(args.concurrency, 8))
    watcher = Watcher(stack.targets)
    stop_watching = asyncio.Event()
    watching = asyncio.create_task(watcher.run(stop_watching))
    scenarios = plan.scenarios(args.seed, 3 * args.ops, people)
    points = plan.kill_points(args.seed, args.ops, args.kills)
    termination_points = plan.termination_points(args.seed, args.ops, args.terminations)
    workload_done = asyncio.Event()
    print(
        f"chaos: {args.ops} operations, {len(points)} kills"
        + (f", {len(termination_points)} terminations" if termination_points else "")
        + " …",
        file=sys.stderr,
        flush=True,
    )

    async def reach(point: int) -> bool:
        """Wait until ``point`` operations finished; False if the workload ended first."""
        while callers.finished < point and not workload_done.is_set():
            callers.progress.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(callers.progress.wait(), 0.5)
        return not workload_done.is_set()

    async def killer() -> None:
        rng = random.Random(f"kill-timing-{args.seed}")
        targets = random.Random(f"kill-target-{args.seed}")
        for point in points:
            if not await reach(point):
                return
            await asyncio.sleep(rng.uniform(0.0, 0.4))
            # One replica down at a time: the next kill waits for this one's restart.
            replica = stack.replicas[targets.randrange(len(stack.replicas))]
            stack.kill_replica(replica)
            run.kills += 1
            run.kill_at_ops.append(callers.finished)
            run.kill_targets.append(replica.name)
            tables = await stack.store.crash_tables()
            run.crash_findings.append(audit.database_checks(audit.Books(tables)))
            down = time.monotonic()
            await asyncio.sleep(rng.uniform(0.2, 1.0))
            await asyncio.to_thread(stack.start_replica, replica)
            run.restart_seconds.append(time.monotonic() - down)
            print(
                f"chaos: kill {run.kills} ({replica.name}) after {run.kill_at_ops[-1]}"
                f" operations, back in {run.restart_seconds[-1]:.1f} s",
                file=sys.stderr,
                flush=True,
            )

    async def terminator() -> None:
        assert isinstance(stack.store, PostgresStore) or not termination_points
        rng = random.Random(f"termination-{args.seed}")
        for point in termination_points:
            if not await reach(point):
                return
            await asyncio.sleep(rng.uniform(0.0, 0.4))
            live = stack.live()
            if not live:
                continue
            replica = rng.choice(live)
            run.terminations.append(
                await terminate(replica, stack, callers, callers.finished, people)
            )
            t = run.terminations[-1]
            print(
                f"chaos: terminated {sum(t.ended.values())} database connection(s) of"
                f" {t.replica} after {t.at_ops} operations; serving again after"
                f" {'never' if t.serving_after is None else f'{t.serving_after:.1f} s'}",
                file=sys.stderr,
                flush=True,
            )

    killing = asyncio.create_task(killer())
    terminating = asyncio.create_task(terminator())
    t0 = time.monotonic()
    working = asyncio.create_task(callers.run(scenarios, args.concurrency, args.ops))
    try:
        # A service that does not come back after a kill fails the run at once: the
        # callers would otherwise retry against nothing for ever.
        await asyncio.wait({working, killing, terminating}, return_when=asyncio.FIRST_EXCEPTION)
        for task in (killing, terminating):
            if task.done() and task.exception() is not None:
                working.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await working
                task.result()  # raises why the service did not come back
        await working
    finally:
        workload_done.set()
        await killing
        await terminating
    run.workload_seconds = time.monotonic() - t0

    print("chaos: faults off, settling …", file=sys.stderr, flush=True)
    (await control.delete("/_sandbox/faults")).raise_for_status()
    if callers.deferred:
        print(
            f"chaos: asking again about {len(callers.deferred)} operation(s) left without"
            " an answer …",
            file=sys.stderr,
            flush=True,
        )

    async def final_pass() -> None:
        t0 = time.monotonic()
        await callers.final_pass(args.final_wait)
        run.final_pass_seconds = time.monotonic() - t0

    asking = asyncio.create_task(final_pass())
    try:
        await settle(args, run, stack, control, asking)
    finally:
        asking.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asking

    # The stream must have caught up with the outbox before the service stops.
    last = await stack.store.count("SELECT COALESCE(MAX(sequence), 0) FROM events")
    for _ in range(300):  # at most 30 s
        if watcher.last >= last:
            break
        await asyncio.sleep(0.1)
    stop_watching.set()
    watching.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await watching
    run.watcher_connections = watcher.followed
    await asyncio.to_thread(stack.stop_replicas)
    # The drift check over every wallet, while the sandbox still answers.
    drift = await chaos_drift.sweep(stack.service_env(stack.replicas[0]), stack.sandbox_url)

    async def get(path: str) -> Any:
        answer = await control.get(path)
        answer.raise_for_status()
        return answer.json()

    async def request_log() -> Any:
        answer = await control.get("/_sandbox/requests")
        answer.raise_for_status()
        # Counting resends needs every money call the sandbox saw.
        dropped = int(answer.headers.get("x-sandbox-requests-dropped", "0"))
        if dropped:
            raise RuntimeError(
                f"the sandbox's request log dropped {dropped} entries: raise --request-log-size"
            )
        return answer.json()

    sandbox = audit.Sandbox(
        transactions=await get("/_sandbox/transactions"),
        journal=await get("/_sandbox/ledger"),
        balances=await get("/_sandbox/balances"),
        callbacks=await get("/_sandbox/callbacks"),
        requests=await request_log(),
        stats=await get("/_sandbox/faults/stats"),
    )
    books = audit.Books(await stack.store.tables())
    checks = audit.audit(books, sandbox, callers.records, watcher, run.crash_findings)
    checks.append(drift)
    if args.terminations:
        checks.append(reconnects(run))
    if run.onboarding_problems:
        checks.append(
            audit.Check(
                "setup",
                "every customer was onboarded",
                len(plan.customers(args.seed, args.ops).everyone),
                run.onboarding_problems,
            )
        )
    return Outcome(checks, sandbox, duplicates(books, sandbox, callers))


async def settle(
    args: argparse.Namespace,
    run: Run,
    stack: Stack,
    control: httpx.AsyncClient,
    asking: asyncio.Task[None],
) -> None:
    """Wait until nothing is unresolved at the service or PENDING at the sandbox (the
    settle time), then until holds expired, unverified top-ups were confirmed, callbacks
    went quiet and the callers' final pass ended (quiescent)."""
    rng = random.Random(f"settle-{args.seed}")
    started = time.monotonic()
    callbacks_seen = -1
    quiet_since = time.monotonic()
    async with httpx.AsyncClient(timeout=5) as http:
        while time.monotonic() - started < args.settle_timeout:
            transactions = (await control.get("/_sandbox/transactions")).json()
            pending = [t for t in transactions if t["status"] == "PENDING"]
            for transfer in sorted(
                (t for t in pending if t["held"]), key=lambda t: str(t["requestId"])
            ):
                # in_process_forever: KasPro finishes it after all, one way or the other.
                verb = "complete" if rng.random() < 0.8 else "fail"
                answer = await control.post(
                    f"/_sandbox/transactions/{transfer['requestId']}/{verb}"
                )
                if answer.status_code == 200:
                    run.held_settled_by_hand += 1
            # The backlog is the database's: any replica tells it.
            unresolved = await unresolved_attempts(http, stack.replicas[0].metrics_url)
            open_rides = await stack.store.count(
                "SELECT COUNT(*) FROM ride_payments WHERE status IN "
                "('AUTHORIZING', 'AUTHORIZED', 'CAPTURING', 'VOIDING')"
            )
            # Top-ups told by unverified callbacks that the service will still confirm
            # with KasPro (at most once per inquiry period: up to a minute away).
            open_checks = await stack.store.count(
                "SELECT COUNT(*) FROM top_up_checks WHERE status = 'waiting'"
            )
            callbacks = len((await control.get("/_sandbox/callbacks")).json())
            if callbacks != callbacks_seen:
                callbacks_seen, quiet_since = callbacks, time.monotonic()
            now = time.monotonic()
            if unresolved == 0 and not pending and run.settle_seconds is None:
                run.settle_seconds = now - started
            if (
                run.settle_seconds is not None
                and unresolved == 0
                and not pending
                and open_rides == 0
                and open_checks == 0
                and now - quiet_since >= CALLBACKS_QUIET_SECONDS
                and asking.done()
            ):
                run.quiescent_seconds = now - started
                return
            await asyncio.sleep(0.5)
    print(f"chaos: not settled within {args.settle_timeout:.0f} s", file=sys.stderr, flush=True)


async def terminate(
    replica: Replica, stack: Stack, callers: Callers, at_ops: int, people: plan.Customers
) -> Termination:
    """End the replica's database connections, then ask it for an account until it
    answers (its pool must reconnect)."""
    assert isinstance(stack.store, PostgresStore)
    assert replica.process is not None
    starts = replica.starts
    ended = await stack.store.terminate(replica.process.pid)
    overtaken = replica.starts != starts or not replica.up
    started = time.monotonic()
    index = stack.replicas.index(replica)
    serving_after = None
    while time.monotonic() - started < RECONNECT_SECONDS:
        if await callers.serves(index, people.passengers[0]):
            serving_after = time.monotonic() - started
            break
        await asyncio.sleep(0.1)
    return Termination(at_ops, replica.name, ended, serving_after, overtaken)


def reconnects(run: Run) -> audit.Check:
    check = audit.Check(
        "reconnect", "a replica whose database connections were terminated served again"
    )
    check.checked = len(run.terminations)
    for n, t in enumerate(run.terminations, 1):
        if not t.ended and not t.overtaken:
            check.fail(f"termination {n} ({t.replica}): no connection of it was found to end")
        if t.serving_after is None:
            check.fail(f"termination {n} ({t.replica}): no answer within {RECONNECT_SECONDS:.0f} s")
    return check


async def unresolved_attempts(http: httpx.AsyncClient, url: str) -> int:
    """``wallet_unresolved_attempts`` from the service's /metrics (-1 if unreadable)."""
    try:
        text = (await http.get(url)).text
    except httpx.HTTPError:
        return -1
    for line in text.splitlines():
        if line.startswith("wallet_unresolved_attempts "):
            return int(float(line.split()[1]))
    return -1


def duplicates(books: audit.Books, sandbox: audit.Sandbox, callers: Callers) -> dict[str, int]:
    """Repeats the system absorbed: retried RPCs answered from an existing operation,
    money calls sent to KasPro again with the same requestId, repeated callbacks."""
    answered_again = 0
    for record in callers.records:
        if record.retries == 0 or record.outcome not in ("ok", "refused"):
            continue
        key = books.keys.get((record.caller, record.method, record.request_id))
        if key is not None and key["created_at"] < record.last_try_at - 0.001:
            answered_again += 1
    sent: Counter[str] = Counter(
        r["requestId"] for r in sandbox.requests if r["path"] in MONEY_PATHS and r["requestId"]
    )
    resends = sum(n - 1 for n in sent.values())
    repeated_callbacks = books.callbacks.get("duplicate", 0) + books.callbacks.get("ignored", 0)
    return {
        "rpc_answered_again": answered_again,
        "kaspro_resends": resends,
        "callbacks": repeated_callbacks,
        "total": answered_again + resends + repeated_callbacks,
    }


def _counts(counter: dict[str, int]) -> str:
    ordered = sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))
    return ", ".join(f"{k} {v}" for k, v in ordered)


def table(run: Run, callers: Callers, outcome: Outcome, stack: Stack) -> list[str]:
    """The run's table: what was done, what went wrong on purpose, what held."""
    records = callers.records
    workload = [r for r in records if r.phase == "workload"]
    kinds = Counter(r.kind for r in workload)
    seen = Counter(r.outcome for r in workload)
    late = sum(1 for r in workload if r.deferred and r.outcome != "unknown")
    codes: Counter[str] = Counter()
    for r in records:
        codes.update(r.retry_codes)
    injected = {k: v for k, v in outcome.sandbox.stats.get("byKind", {}).items() if v}
    dup = outcome.duplicates
    restarts = run.restart_seconds
    restart = (
        f"down {statistics.median(restarts):.1f} s median, {max(restarts):.1f} s max"
        if restarts
        else "none"
    )
    settle = "NOT SETTLED" if run.settle_seconds is None else f"{run.settle_seconds:.1f} s"
    quiet = "never" if run.quiescent_seconds is None else f"{run.quiescent_seconds:.1f} s"
    rows = [
        (
            "seed",
            f"{run.seed} ({run.concurrency} callers, fault rate {run.fault_rate}"
            + "".join(f", without {d}" for d in run.dropped_faults)
            + ")",
        ),
        (
            "operations",
            f"{len(workload)} in {run.workload_seconds:.1f} s: {_counts(dict(kinds))}"
            f" (+ {len(records) - len(workload)} funding top-ups)",
        ),
        (
            "outcomes",
            f"ok {seen['ok']}, refused {seen['refused']}, unknown {seen['unknown']},"
            f" unexpected {seen['unexpected']}; {late} answered in the final pass"
            f" ({run.final_pass_seconds:.1f} s)",
        ),
        ("faults", f"{sum(injected.values())} injected: {_counts(injected)}"),
        (
            "kills",
            f"{run.kills} SIGKILLs after operations {run.kill_at_ops}; {restart}"
            + (f"; {_counts(Counter(run.kill_targets))}" if run.replicas > 1 else ""),
        ),
        (
            "retries",
            f"{sum(r.retries for r in records)} same-request_id retries"
            f" ({_counts(dict(codes))}); {sum(r.polls for r in records)} status polls",
        ),
        (
            "duplicates",
            f"{dup['total']} absorbed: {dup['rpc_answered_again']} retried RPCs answered from the"
            f" stored operation, {dup['kaspro_resends']} KasPro calls repeating a requestId,"
            f" {dup['callbacks']} repeated or stale callbacks",
        ),
        (
            "settle",
            f"{settle} from faults off to 0 unresolved attempts and nothing PENDING at the"
            f" sandbox ({run.held_settled_by_hand} held transfers finished by hand);"
            f" quiescent after {quiet}",
        ),
    ]
    if run.replicas > 1:
        rows.insert(1, ("replicas", replicas_row(run, callers, stack)))
    if run.terminations_planned:
        at = [name for name, _ in rows].index("kills") + 1
        rows.insert(at, ("terminated", terminations_row(run)))
    lines = [f"{name:<11} {text}" for name, text in rows]
    lines += ["", f"{'invariant':<9} {'result':<6} {'checked':>7}  description"]
    for check in outcome.checks:
        result = "OK" if check.ok else "FAIL"
        lines.append(f"{check.key:<9} {result:<6} {check.checked:>7}  {check.title}")
    for check in outcome.checks:
        lines += [f"  {check.key}: {v}" for v in check.violations[:10]]
        if len(check.violations) > 10:
            lines.append(f"  {check.key}: … {len(check.violations) - 10} more")
    return lines


def replicas_row(run: Run, callers: Callers, stack: Stack) -> str:
    """Where the calls, the callbacks and the watcher went."""
    names = [r.name for r in stack.replicas]
    tries = ", ".join(f"{n} {t}" for n, t in zip(names, callers.tries_at, strict=True))
    moved = sum(r.moved for r in callers.records)
    text = (
        f"{run.replicas} on {STORE_NAMES[run.store]} ({run.database});"
        f" tries {tries}, {moved} sent to another replica after no answer"
    )
    if stack.router is not None:
        delivered = ", ".join(f"{n} {stack.router.delivered[i]}" for i, n in enumerate(names))
        text += (
            f"; callbacks {delivered} ({stack.router.refused} found a replica down,"
            f" {stack.router.failed} answered 502)"
        )
    followed = ", ".join(f"{n} {c}" for n, c in zip(names, run.watcher_connections, strict=False))
    return text + (f"; watcher connections {followed}" if followed else "")


def terminations_row(run: Run) -> str:
    if not run.terminations:
        return "none (the workload ended first)"
    parts = []
    for t in run.terminations:
        ended = sum(t.ended.values())
        back = "never" if t.serving_after is None else f"{t.serving_after:.1f} s"
        parts.append(
            f"{t.replica} after {t.at_ops} ops: {ended} ended"
            f" ({_counts(t.ended) or 'none'}), serving again after {back}"
            + (" (killed meanwhile)" if t.overtaken else "")
        )
    return f"{len(run.terminations)} pg_terminate_backend: " + "; ".join(parts)


def report(
    run: Run, callers: Callers, outcome: Outcome, results: Path, workdir: Path, stack: Stack
) -> int:
    ok = all(c.ok for c in outcome.checks)
    replay = (
        f"python -m chaos --seed {run.seed} --ops {run.ops} --kills {run.kills_planned}"
        f" --concurrency {run.concurrency}"
    )
    if run.store != "sqlite":
        replay += (
            f" --store {run.store} --replicas {run.replicas}"
            f" --terminations {run.terminations_planned}"
        )
    for option, value, default in (
        ("--fault-rate", run.fault_rate, 1.0),
        ("--hold-lifetime", run.hold_lifetime, 20.0),
        ("--final-wait", run.final_wait, 150.0),
    ):
        if value != default:
            replay += f" {option} {value:g}"
    for dropped in run.dropped_faults:
        replay += f" --drop-fault {dropped}"
    lines = table(run, callers, outcome, stack)
    lines.append("")
    if ok:
        lines.append(f"RESULT OK: every invariant held (seed {run.seed}; replay: {replay})")
    else:
        failed = [c.key for c in outcome.checks if not c.ok]
        lines.append(
            f"RESULT FAIL: {len(failed)} invariant(s) violated ({', '.join(failed)})"
            f" with seed {run.seed}; replay: {replay}"
        )
        lines.append(f"logs and database: {workdir}")
        if run.database:
            kept = "kept" if run.keep else "dropped: rerun with --keep to keep it"
            lines.append(f"PostgreSQL database {run.database} ({kept})")
    print("\n".join(lines), flush=True)

    results.mkdir(parents=True, exist_ok=True)
    document = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "ok": ok,
        "replay": replay,
        "run": dataclasses.asdict(run),
        "faults": outcome.sandbox.stats,
        "duplicates": outcome.duplicates,
        "checks": [c.to_json() for c in outcome.checks],
        "table": lines,
        "records": [r.to_json() for r in callers.records],
    }
    text = json.dumps(document, indent=1, default=str)
    (results / f"{workdir.name.removeprefix('work-')}.json").write_text(text)
    (results / "latest.json").write_text(text)
    return 0 if ok else 1


async def guarded(args: argparse.Namespace) -> int:
    """``main_async``, cancelled by SIGTERM or SIGINT so the processes it started are
    stopped on the way out (a background job ignores SIGINT; SIGTERM still works)."""
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    try:
        return await main_async(args)
    except asyncio.CancelledError:
        print("chaos: interrupted", file=sys.stderr, flush=True)
        return 130


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return asyncio.run(guarded(args))


if __name__ == "__main__":
    raise SystemExit(main())
