"""Event numbering on PostgreSQL, alone (``python -m bench.numbering``): what numbering
costs the database, and how it batches, with one and with two writer processes
(replicas) on one database.

Each writer process opens the service's own ``PostgresDatabase`` (a pool of 10) and runs
``--writers`` tasks in a closed loop, each writing one event per transaction through
``Database.run``, which asks the process's numbering task to number after the commit, as
every flow does; the table holds ``--history`` numbered events first, analyzed. The same
again with the events left to the once-a-second sweep of each process, which numbers
them in large batches. The difference is the numbering's share.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from typing import Any

import asyncpg

from bench import postgres, procs
from wallet_service.store import events
from wallet_service.store.database import Transaction
from wallet_service.store.postgres import PostgresDatabase


async def write(url: str, writers: int, seconds: float, number: bool) -> dict[str, Any]:
    db = await PostgresDatabase.connect(url, pool_size=10)
    latencies: list[float] = []

    async def body(tx: Transaction) -> None:
        await events.append_event(tx, "bench.numbering", "bench", {}, time.time())
        tx.wrote_events = number  # False: the numbering task is not asked; the sweep numbers

    async def writer(deadline: float) -> None:
        while (started := time.perf_counter()) < deadline:
            await db.run(body)
            latencies.append(time.perf_counter() - started)

    cpu = time.process_time()
    began = time.perf_counter()
    await asyncio.gather(*(writer(began + seconds) for _ in range(writers)))
    elapsed = time.perf_counter() - began
    cpu = time.process_time() - cpu
    await db.close()
    latencies.sort()
    return {
        "transactions": len(latencies),
        "seconds": elapsed,
        "cpu_s": cpu,
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
    }


def run(processes: int, writers: int, seconds: float, number: bool, history: int) -> dict[str, Any]:
    admin = postgres.admin_url()
    with postgres.fresh_database(admin) as (name, url):
        server = postgres.Server(admin, name)
        # Migrate once, before the writers start together; then the earlier events.
        asyncio.run(_migrate(url, history))
        before = server.counts()
        args = ["--writer", url, "--writers", str(writers), "--seconds", str(seconds)]
        children = [
            subprocess.Popen(
                [sys.executable, "-m", "bench.numbering", *args, *([] if number else ["--left"])],
                cwd=procs.ROOT,
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(processes)
        ]
        # The writers' backends start with them: their CPU is the last seen of each.
        backends: dict[int, float] = {}
        while any(child.poll() is None for child in children):
            backends.update(server.backend_cpu() or {})
            time.sleep(0.2)
        said = [json.loads(child.communicate()[0].strip().splitlines()[-1]) for child in children]
        server.wait_disconnected()
        after = server.counts()
    done = sum(s["transactions"] for s in said)
    seconds_ = max(s["seconds"] for s in said)
    steps = after.numbering_steps - before.numbering_steps
    batches = after.numbering_batches - before.numbering_batches
    numbered = after.events_numbered - before.events_numbered
    return {
        "processes": processes,
        "writers": writers,
        "numbered_by_writers": number,
        "transactions_per_s": round(done / seconds_, 1),
        "p50_ms": round(max(s["p50_ms"] for s in said), 2),
        "p99_ms": round(max(s["p99_ms"] for s in said), 2),
        "writer_cpu_ms_per_tx": round(sum(s["cpu_s"] for s in said) / done * 1000, 3),
        "db_cpu_ms_per_tx": round(sum(backends.values()) / done * 1000, 3),
        "db_transactions_per_tx": round(
            (after.commits + after.rollbacks - before.commits - before.rollbacks) / done, 2
        ),
        "numbering_steps_per_tx": round(steps / done, 3),
        "events_per_batch": round(numbered / batches, 1) if batches else None,
    }


async def _migrate(url: str, history: int) -> None:
    """The service's schema, and ``history`` numbered events in it, analyzed: the
    planner then numbers through the indexes, as on a database in service (on an empty
    table it would scan the whole table at each step)."""
    db = await PostgresDatabase.connect(url, pool_size=1)
    await db.close()
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            """INSERT INTO events (sequence, event_id, type, subject_id, snapshot, occurred_at)
               SELECT g, md5(g::text), 'bench.history', 'bench', '{}', 0
               FROM generate_series(1, $1::bigint) AS g""",
            history,
        )
        await conn.execute("ANALYZE events")
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.numbering", description=__doc__)
    parser.add_argument("--writers", type=int, default=16, help="tasks per process")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument(
        "--history", type=int, default=100_000, help="numbered events in the table first"
    )
    parser.add_argument("--writer", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--left", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.writer:
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            result = runner.run(write(args.writer, args.writers, args.seconds, not args.left))
        print(json.dumps(result))
        return
    print(
        f"{'processes':>9} {'numbered by':>11} {'tx/s':>8} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'cpu ms/tx':>9} {'db cpu ms/tx':>12} {'db tx/tx':>8} {'steps/tx':>8} "
        f"{'events/batch':>12}"
    )
    for processes in (1, 2):
        for number in (True, False):
            r = run(processes, args.writers, args.seconds, number, args.history)
            print(
                f"{processes:>9} {'task' if number else 'sweep':>11} "
                f"{r['transactions_per_s']:>8.1f} {r['p50_ms']:>7.2f} {r['p99_ms']:>7.2f} "
                f"{r['writer_cpu_ms_per_tx']:>9.3f} {r['db_cpu_ms_per_tx']:>12.3f} "
                f"{r['db_transactions_per_tx']:>8.2f} "
                f"{r['numbering_steps_per_tx']:>8.3f} {r['events_per_batch'] or 0:>12.1f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
