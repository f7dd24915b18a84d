"""Idempotency keys (MONEY-RULES rule 1): claim, complete, release, purge."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from wallet_service.store.database import Database, Transaction


class ClaimKind(enum.Enum):
    NEW = "new"  # this request runs
    REPLAY = "replay"  # decided before: answer with the stored outcome
    IN_PROGRESS = "in_progress"  # the same request is running right now
    REUSED = "reused"  # the key was used for a different request


@dataclass(frozen=True, slots=True)
class Key:
    caller: str
    method: str
    request_id: str


@dataclass(frozen=True, slots=True)
class Claim:
    kind: ClaimKind
    stored: bytes | None = None
    # The operation (transaction or ride) the key created, for money RPCs: a replay
    # answers with its current state.
    operation_id: str | None = None


async def claim(
    db: Database, key: Key, request_hash: bytes, now: float, lease_seconds: float
) -> Claim:
    """Take the key for this request, or say why not, in one transaction."""
    async with db.transaction() as tx:
        return await claim_in(tx, key, request_hash, now, lease_seconds)


async def peek(db: Database, key: Key, request_hash: bytes) -> Claim | None:
    """The claim of a key whose answer is settled (decided, or used for another request),
    read without taking the writer lock; None when only ``claim_in`` can tell.

    A retry of a decided request is the common case under load (callers retry on every
    timeout), and it needs no write. It reads only when no transaction is open on the
    (shared) connection, so what it sees is committed.
    """
    if db.in_transaction:
        return None
    row = await db.fetch_one(
        """SELECT request_hash, state, response, operation_id
           FROM idempotency_keys WHERE caller = ? AND method = ? AND request_id = ?""",
        (key.caller, key.method, key.request_id),
    )
    if row is None:
        return None
    if bytes(row["request_hash"]) != request_hash:
        return Claim(ClaimKind.REUSED)
    if row["state"] != "done":
        return None
    stored = None if row["response"] is None else bytes(row["response"])
    return Claim(ClaimKind.REPLAY, stored, row["operation_id"])


async def claim_in(
    tx: Transaction, key: Key, request_hash: bytes, now: float, lease_seconds: float
) -> Claim:
    """``claim`` inside the caller's transaction, which creates the operation (rule 1)."""
    row = await tx.fetch_one(
        """SELECT request_hash, state, response, lease_until, operation_id, holder
           FROM idempotency_keys WHERE caller = ? AND method = ? AND request_id = ?""",
        (key.caller, key.method, key.request_id),
    )
    if row is None:
        await tx.execute(
            """INSERT INTO idempotency_keys (caller, method, request_id, request_hash, state,
                                             lease_until, created_at, holder)
               VALUES (?, ?, ?, ?, 'running', ?, ?, ?)""",
            (
                key.caller,
                key.method,
                key.request_id,
                request_hash,
                now + lease_seconds,
                now,
                tx.incarnation,
            ),
        )
        return Claim(ClaimKind.NEW)
    if bytes(row["request_hash"]) != request_hash:
        return Claim(ClaimKind.REUSED)
    operation = row["operation_id"]
    stored = None if row["response"] is None else bytes(row["response"])
    if row["state"] == "done":
        return Claim(ClaimKind.REPLAY, stored, operation)
    # Running in this process and within its lease: a true duplicate in flight. A key
    # held by another incarnation belongs to a process that died (we are the only one).
    if row["lease_until"] > now and row["holder"] == tx.incarnation:
        return Claim(ClaimKind.IN_PROGRESS)
    if operation is not None:
        # The request died after creating its operation: the workers finish that
        # operation; a retry reports on it and never starts a second one.
        return Claim(ClaimKind.REPLAY, stored, operation)
    # The request holding the key died before doing anything: take it over.
    await tx.execute(
        """UPDATE idempotency_keys SET lease_until = ?, holder = ?
           WHERE caller = ? AND method = ? AND request_id = ?""",
        (now + lease_seconds, tx.incarnation, key.caller, key.method, key.request_id),
    )
    return Claim(ClaimKind.NEW)


async def attach_operation(tx: Transaction, key: Key, operation_id: str) -> None:
    await tx.execute(
        """UPDATE idempotency_keys SET operation_id = ?
           WHERE caller = ? AND method = ? AND request_id = ?""",
        (operation_id, key.caller, key.method, key.request_id),
    )


async def complete_in(tx: Transaction, key: Key, outcome: bytes | None) -> None:
    await tx.execute(
        """UPDATE idempotency_keys SET state = 'done', response = ?
           WHERE caller = ? AND method = ? AND request_id = ?""",
        (outcome, key.caller, key.method, key.request_id),
    )


async def complete(db: Database, key: Key, outcome: bytes | None) -> None:
    """Store the decided outcome; later claims replay it."""
    async with db.transaction() as tx:
        await complete_in(tx, key, outcome)


async def release(db: Database, key: Key) -> None:
    """Give a running key back (no decision was reached); a retry runs afresh."""
    async with db.transaction() as tx:
        await tx.execute(
            """DELETE FROM idempotency_keys
               WHERE caller = ? AND method = ? AND request_id = ? AND state = 'running'""",
            (key.caller, key.method, key.request_id),
        )


async def purge(db: Database, older_than: float) -> int:
    """Forget keys created before ``older_than``; return how many."""
    async with db.transaction() as tx:
        return await tx.execute(
            "DELETE FROM idempotency_keys WHERE created_at < ? AND state = 'done'", (older_than,)
        )
