"""Idempotency keys (MONEY-RULES rule 1): claim, complete, release, purge."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from wallet_service.store.database import Database


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


async def claim(
    db: Database, key: Key, request_hash: bytes, now: float, lease_seconds: float
) -> Claim:
    """Take the key for this request, or say why not, in one transaction."""
    async with db.transaction() as tx:
        row = await tx.fetch_one(
            """SELECT request_hash, state, response, lease_until FROM idempotency_keys
               WHERE caller = ? AND method = ? AND request_id = ?""",
            (key.caller, key.method, key.request_id),
        )
        if row is None:
            await tx.execute(
                """INSERT INTO idempotency_keys
                       (caller, method, request_id, request_hash, state, lease_until, created_at)
                   VALUES (?, ?, ?, ?, 'running', ?, ?)""",
                (key.caller, key.method, key.request_id, request_hash, now + lease_seconds, now),
            )
            return Claim(ClaimKind.NEW)
        if bytes(row["request_hash"]) != request_hash:
            return Claim(ClaimKind.REUSED)
        if row["state"] == "done":
            return Claim(ClaimKind.REPLAY, bytes(row["response"]))
        if row["lease_until"] > now:
            return Claim(ClaimKind.IN_PROGRESS)
        # The request holding the key died without a decision: take it over.
        await tx.execute(
            """UPDATE idempotency_keys SET lease_until = ?
               WHERE caller = ? AND method = ? AND request_id = ?""",
            (now + lease_seconds, key.caller, key.method, key.request_id),
        )
        return Claim(ClaimKind.NEW)


async def complete(db: Database, key: Key, outcome: bytes) -> None:
    """Store the decided outcome; later claims replay it."""
    async with db.transaction() as tx:
        await tx.execute(
            """UPDATE idempotency_keys SET state = 'done', response = ?
               WHERE caller = ? AND method = ? AND request_id = ?""",
            (outcome, key.caller, key.method, key.request_id),
        )


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
