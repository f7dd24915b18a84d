"""WatchEvents across replicas: a watcher on one replica gets every event any replica
writes, in sequence order, with no gap and no duplicate, also across a reconnect with
after_sequence, while two replicas write at once (MONEY-RULES rule 9)."""

from __future__ import annotations

import asyncio
import contextlib

from wallet.v1 import common_pb2

from .harness import PATIENCE, Cluster, Replica, until

FIRST, SECOND = "081234567890", "085712345678"
TRANSFERS_PER_REPLICA = 12


async def read(replica: Replica, after: int, count: int) -> list[common_pb2.Event]:
    """The next ``count`` events after ``after``, then hang up (or fewer, when no more
    come within PATIENCE: the test's comparison then shows what was missing)."""
    found: list[common_pb2.Event] = []
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(PATIENCE):
            async for event in replica.watch(after):
                found.append(event)
                if len(found) == count:
                    break
    return found


async def test_a_watcher_sees_every_replicas_events_in_order(stack: Cluster) -> None:
    a, b = await stack.start_replicas(2)
    await stack.onboard(a, FIRST, 100_000)
    await stack.onboard(b, SECOND, 100_000)

    async def all_numbered() -> bool:
        waiting = await stack.db.fetchval("SELECT count(*) FROM events WHERE sequence IS NULL")
        return bool(waiting == 0)

    # Events are numbered after their commit: the onboarding's last ones may not be yet,
    # and would be numbered after ``start`` (an extra top-up among the transfers).
    await until(all_numbered)
    start = int(await stack.db.fetchval("SELECT COALESCE(MAX(sequence), 0) FROM events"))

    # A watcher on a, connected before the writes; it hangs up halfway through them.
    first_half = asyncio.create_task(read(a, start, TRANSFERS_PER_REPLICA))
    await asyncio.sleep(0.2)  # connected and waiting (a late start would only replay more)
    writes = [
        a.transfer(f"a-{n}", FIRST, SECOND, 1_000 + n) for n in range(TRANSFERS_PER_REPLICA)
    ] + [b.transfer(f"b-{n}", SECOND, FIRST, 2_000 + n) for n in range(TRANSFERS_PER_REPLICA)]
    done = await asyncio.gather(*writes)
    assert {t.status for t in done} == {common_pb2.TRANSACTION_STATUS_SUCCEEDED}
    seen = await first_half
    await until(all_numbered)
    rows = await stack.db.fetch(
        "SELECT sequence, event_id FROM events WHERE sequence > $1 ORDER BY sequence", start
    )
    written = [(row["sequence"], row["event_id"]) for row in rows]
    # Every transfer reported at least its start and its end, from both replicas.
    assert len(written) >= 2 * len(done)

    # Reconnected from the last event it saw, the watcher gets the rest.
    rest = await read(a, seen[-1].sequence, len(written) - len(seen))
    received = [(e.sequence, e.event_id) for e in seen + rest]
    assert received == written
    assert [s for s, _ in received] == list(range(start + 1, start + 1 + len(written)))

    # Each transfer's events, written by whichever replica ran it, end SUCCEEDED.
    last_status = {}
    for event in seen + rest:
        if event.WhichOneof("subject") == "transaction":
            last_status[event.transaction.transaction_id] = event.transaction.status
    assert last_status == {t.transaction_id: t.status for t in done}

    # And a watcher on the other replica, from the same start, reads the same log.
    assert [(e.sequence, e.event_id) for e in await read(b, start, len(written))] == written
