"""Idempotency keys (MONEY-RULES rule 1).

Two ways to use them:
- money RPCs (``flows/payments.py``) ``look`` at the key, run their checks while the key
  is held in the process's memory, and write it once, already decided, in the database
  transaction that creates their operation (``record_in``) or with their refusal;
- the other mutating RPCs (``api/idempotent.py``) ``claim`` the key (a ``running`` row
  with a lease and the holder's incarnation), then ``complete`` or ``release`` it.
``purge`` forgets decided keys past their retention; ``rewrite_outcomes`` reduces what
older versions stored.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from wallet_service.store.database import Database, Row, Transaction


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


async def look(db: Database, key: Key, request_hash: bytes, now: float) -> Claim | None:
    """What a money request must answer instead of running, or None when it may run.

    A read, no write: a money request writes its key only with the operation it creates
    (``record_in``), or with its refusal. A retry of a decided request, the common case
    under load (callers retry on every timeout), costs one indexed read. While a
    transaction is open on the shared connection (its coroutine suspended inside it) a
    plain read could see its uncommitted rows, so the read then waits for the writer.
    """
    if db.in_transaction:
        async with db.transaction() as tx:
            row = await _key_row(tx, key)
    else:
        row = await _key_row(db, key)
    return None if row is None else _decided(row, request_hash, now, db.incarnation)


async def record_in(
    tx: Transaction,
    key: Key,
    request_hash: bytes,
    now: float,
    *,
    operation_id: str | None,
    response: bytes | None,
) -> Claim:
    """Store a money request's decision (the operation it created, or its refusal) in the
    caller's transaction (rule 1): NEW when the key is now this request's; otherwise the
    claim the key already had, and nothing is written."""
    row = await _key_row(tx, key)
    if row is None:
        await tx.execute(
            """INSERT INTO idempotency_keys (caller, method, request_id, request_hash, state,
                                             response, lease_until, created_at,
                                             operation_id, holder)
               VALUES (?, ?, ?, ?, 'done', ?, ?, ?, ?, ?)""",
            (
                key.caller,
                key.method,
                key.request_id,
                request_hash,
                response,
                now,
                now,
                operation_id,
                tx.incarnation,
            ),
        )
        return Claim(ClaimKind.NEW)
    claim = _decided(row, request_hash, now, tx.incarnation)
    if claim is not None:
        return claim
    # Left running by a process that died before creating anything: decided here, and
    # kept for the full retention from now (purge counts from created_at).
    await tx.execute(
        """UPDATE idempotency_keys SET state = 'done', response = ?, operation_id = ?,
                                       holder = ?, created_at = ?
           WHERE caller = ? AND method = ? AND request_id = ?""",
        (response, operation_id, tx.incarnation, now, key.caller, key.method, key.request_id),
    )
    return Claim(ClaimKind.NEW)


async def claim_in(
    tx: Transaction, key: Key, request_hash: bytes, now: float, lease_seconds: float
) -> Claim:
    """``claim`` inside the caller's transaction."""
    row = await _key_row(tx, key)
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
    claim = _decided(row, request_hash, now, tx.incarnation)
    if claim is not None:
        return claim
    # The request holding the key died before doing anything: take it over.
    await tx.execute(
        """UPDATE idempotency_keys SET lease_until = ?, holder = ?
           WHERE caller = ? AND method = ? AND request_id = ?""",
        (now + lease_seconds, tx.incarnation, key.caller, key.method, key.request_id),
    )
    return Claim(ClaimKind.NEW)


async def _key_row(source: Database | Transaction, key: Key) -> Row | None:
    return await source.fetch_one(
        """SELECT request_hash, state, response, lease_until, operation_id, holder
           FROM idempotency_keys WHERE caller = ? AND method = ? AND request_id = ?""",
        (key.caller, key.method, key.request_id),
    )


def _decided(row: Row, request_hash: bytes, now: float, incarnation: str) -> Claim | None:
    """What an existing key answers, or None when the request may take it over."""
    if bytes(row["request_hash"]) != request_hash:
        return Claim(ClaimKind.REUSED)
    operation = row["operation_id"]
    stored = None if row["response"] is None else bytes(row["response"])
    if row["state"] == "done":
        return Claim(ClaimKind.REPLAY, stored, operation)
    # Running in this process and within its lease: a true duplicate in flight. A key
    # held by another incarnation belongs to a process that died (we are the only one).
    if row["lease_until"] > now and row["holder"] == incarnation:
        return Claim(ClaimKind.IN_PROGRESS)
    if operation is not None:
        # The request died after creating its operation: the workers finish that
        # operation; a retry reports on it and never starts a second one.
        return Claim(ClaimKind.REPLAY, stored, operation)
    return None


async def complete(db: Database, key: Key, outcome: bytes | None) -> None:
    """Store the decided outcome; later claims replay it."""
    async with db.transaction() as tx:
        await tx.execute(
            """UPDATE idempotency_keys SET state = 'done', response = ?
               WHERE caller = ? AND method = ? AND request_id = ?""",
            (outcome, key.caller, key.method, key.request_id),
        )


async def rewrite_outcomes(db: Database, method: str, rewrite: Callable[[bytes], bytes]) -> int:
    """Replace each decided outcome of ``method`` by ``rewrite`` of it; return how many
    changed. The old bytes leave the files too: the connection zeroes what it frees
    (``secure_delete``), and the WAL, which may hold old pages, is emptied."""
    changed = 0
    async with db.transaction() as tx:
        rows = await tx.fetch_all(
            """SELECT caller, request_id, response FROM idempotency_keys
               WHERE method = ? AND state = 'done' AND response IS NOT NULL""",
            (method,),
        )
        for row in rows:
            old = bytes(row["response"])
            new = rewrite(old)
            if new != old:
                changed += await tx.execute(
                    """UPDATE idempotency_keys SET response = ?
                       WHERE caller = ? AND method = ? AND request_id = ?""",
                    (new, row["caller"], method, row["request_id"]),
                )
    if changed:
        await db.fetch_one("PRAGMA wal_checkpoint(TRUNCATE)")
    return changed


async def release(db: Database, key: Key) -> None:
    """Give a running key back (no decision was reached); a retry runs afresh."""
    async with db.transaction() as tx:
        await tx.execute(
            """DELETE FROM idempotency_keys
               WHERE caller = ? AND method = ? AND request_id = ? AND state = 'running'""",
            (key.caller, key.method, key.request_id),
        )


async def purge(db: Database, older_than: float) -> int:
    """Forget keys created before ``older_than``; return how many. A key still ``running``
    goes too once its lease ended before then: its request is long gone (a dead
    process's key that no retry came back for)."""
    async with db.transaction() as tx:
        return await tx.execute(
            """DELETE FROM idempotency_keys
               WHERE created_at < ? AND (state = 'done' OR lease_until < ?)""",
            (older_than, older_than),
        )
