"""Review of issue 15 (task F): defects found in the replica change, each shown by a test
that fails on the reviewed code. Nothing of ours is mocked; "replicas" are the service's
flows on Databases of their own, as in test_replicas.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import asyncpg
import pytest
from postgres import ADMIN_URL, SKIP_REASON, fresh_database

from wallet_service.domain.phone import parse_mobile_number
from wallet_service.domain.records import Attempt
from wallet_service.flows.engine import State, Timing
from wallet_service.store.database import Database
from wallet_service.store.database import Transaction as DbTx
from wallet_service.store.events import append_event
from wallet_service.store.postgres import NUMBERING_LOCK
from wallet_service.store.sqlite import SqliteDatabase

from . import conftest as harness_module
from .conftest import DEADLINE, LOCAL, OTHER_LOCAL, Harness, wait_for
from .helpers import P2P_PATH, p2p_calls
from .test_replicas import replica, transfer_of

STATUS_PATH = "/transaction-status/"


@pytest.fixture(autouse=True)
def several_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(SqliteDatabase, "sole_process", False)


@pytest.fixture(autouse=True)
def databases_named_after_this_checkout(monkeypatch: pytest.MonkeyPatch) -> None:
    fresh: Callable[[], AbstractAsyncContextManager[str]] = lambda: fresh_database("wt_f")  # noqa: E731
    monkeypatch.setattr(harness_module, "fresh_database", fresh)


async def test_a_leg_sent_late_is_not_sent_again_within_the_grace_after_its_send(
    h: Harness,
) -> None:
    """docs/kaspro.md, "When a step is sent again", rule 4: the last send must be older
    than the grace. A later leg goes out well after its attempt was created; only its
    creation time is on record, so "not found" shortly after its send sends it again."""
    await h.onboard(LOCAL, 100_000)
    await h.onboard(OTHER_LOCAL, name="Siti")
    source, target = parse_mobile_number(LOCAL), parse_mobile_number(OTHER_LOCAL)
    grace = h.config.reconcile_grace_seconds
    async with replica(h) as a:

        async def create(tx: DbTx) -> list[Attempt]:
            return (await transfer_of(a, tx, h.clock(), source, target))[1]

        [attempt] = await a.db.run(create)
        # The leg goes out 25 s after it was created (the legs before it took that long),
        # and is lost on its way: KasPro never executes it.
        h.clock.advance(grace - 5)
        await h.arm_fault(P2P_PATH, "timeout_before", delay_seconds=0.1)
        assert (await a.engine.send(attempt, timeout=DEADLINE)).state is State.UNKNOWN
    assert len(await p2p_calls(h)) == 1

    # 6 s after the send, the inquiry its UNKNOWN answer scheduled: "not found". The send
    # may still be on its way; the step must wait until the grace after the send is over.
    h.clock.advance(6)
    await h.running.reconciler.run_once()
    assert len(await p2p_calls(h)) == 1


async def test_no_replica_calls_kaspro_about_an_attempt_while_another_replica_sends_it(
    h: Harness,
) -> None:
    """docs/money.md, "Flights": one KasPro call about an attempt at a time, across
    replicas. The claim made at creation is not renewed for the first send, so a send
    that starts late runs past its claim, and another replica's inquiry (and, when
    KasPro says "not found", its resend) goes out beside it."""
    await h.onboard(LOCAL, 100_000)
    await h.onboard(OTHER_LOCAL, name="Siti")
    source, target = parse_mobile_number(LOCAL), parse_mobile_number(OTHER_LOCAL)
    lease = Timing(unanswered_grace_seconds=h.config.reconcile_grace_seconds).flight_lease_seconds
    async with replica(h) as a:

        async def create(tx: DbTx) -> list[Attempt]:
            return (await transfer_of(a, tx, h.clock(), source, target))[1]

        [attempt] = await a.db.run(create)
        # Replica A sends the leg 39 s after creating it (the legs before it, or a
        # failover's database retries); its call takes 2 s.
        h.clock.advance(lease - 1)
        await h.arm_fault(P2P_PATH, "latency", delay_seconds=2.0)
        sending = asyncio.create_task(a.engine.send(attempt, timeout=DEADLINE))

        async def arrived() -> bool:
            return len(await p2p_calls(h)) == 1

        await wait_for(arrived)
        h.clock.advance(2)  # while A's call is in flight
        before = len(await h.kaspro_requests(STATUS_PATH))
        await h.running.reconciler.run_once()
        meanwhile = len(await h.kaspro_requests(STATUS_PATH)) - before
        await sending
    assert meanwhile == 0, "another replica asked KasPro about the attempt during A's send"


postgres_only = pytest.mark.skipif(not ADMIN_URL, reason=SKIP_REASON)


@postgres_only
async def test_a_committed_transaction_does_not_wait_for_another_sessions_numbering() -> None:
    """Database.run numbers events after its commit, under the cluster-wide numbering
    lock, before returning: a session that holds that lock (a replica paused, partitioned
    or slow between its numbering UPDATE and COMMIT) holds every replica's committed
    writers, with a pool connection each; a caller's deadline then reports a failure for
    a transaction that committed (DatabaseBusy says "nothing was written")."""
    async with fresh_database("wt_f") as url:
        db = await Database.open(url, pool_size=3)
        holder = await asyncpg.connect(url)
        try:
            async with holder.transaction():
                await holder.execute("SELECT pg_advisory_xact_lock($1)", NUMBERING_LOCK)

                async def body(tx: DbTx) -> str:
                    await append_event(tx, "TEST", "subject-1", {}, 1.0)
                    return "committed"

                run = asyncio.create_task(db.run(body))

                async def settled() -> bool:
                    waiting = await holder.fetchval(
                        "SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                    )
                    return run.done() or waiting > 0

                await wait_for(settled)
                committed = await holder.fetchval(
                    "SELECT COUNT(*) FROM events WHERE subject_id = 'subject-1'"
                )
                finished = run.done()
            assert await run == "committed"
            assert committed == 1
            assert finished, "run() committed, then waited on another session's numbering"
        finally:
            await holder.close()
            await db.close()


@postgres_only
async def test_a_programming_error_is_not_taken_for_a_lost_connection() -> None:
    """asyncpg.InterfaceError is in the "lost connection" set: a statement with a wrong
    number of arguments is retried for 10 s and answered DATABASE_BUSY (UNAVAILABLE, a
    status clients retry) instead of surfacing as the bug it is."""
    async with fresh_database("wt_f") as url:
        db = await Database.open(url, pool_size=2)
        try:
            with pytest.raises(asyncpg.InterfaceError):
                await db.run(
                    lambda tx: tx.execute(
                        "INSERT INTO otp_sends (mobile_number, sent_at) VALUES (?, ?)", ("x",)
                    )
                )
        finally:
            await db.close()


@postgres_only
async def test_event_numbering_does_not_depend_on_the_servers_default_isolation() -> None:
    """number_events opens its transaction at the server's default isolation and relies on
    READ COMMITTED (its UPDATE must see the previous step's numbers). A database set to
    ``default_transaction_isolation = serializable`` (a common hardening) makes concurrent
    steps fail with 40001, which number_events does not retry: run() then raises for
    transactions that committed."""
    async with fresh_database("wt_f") as url:
        admin = await asyncpg.connect(url)
        try:
            name = await admin.fetchval("SELECT current_database()")
            await admin.execute(
                f"ALTER DATABASE \"{name}\" SET default_transaction_isolation = 'serializable'"
            )
        finally:
            await admin.close()
        replicas = [await Database.open(url, pool_size=5) for _ in range(2)]
        try:

            async def write(n: int) -> str:
                async def body(tx: DbTx) -> None:
                    await append_event(tx, "TEST", f"subject-{n}", {}, 1.0)

                try:
                    await replicas[n % 2].run(body)
                except Exception as exc:
                    return type(exc).__name__
                return "ok"

            outcomes = await asyncio.gather(*(write(n) for n in range(200)))
            row = await replicas[0].fetch_one("SELECT COUNT(*) AS n FROM events")
            assert row is not None
            assert row["n"] == 200  # every transaction committed
            assert set(outcomes) == {"ok"}, sorted(set(outcomes))
        finally:
            for db in replicas:
                await db.close()
