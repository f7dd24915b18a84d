"""Idempotency keys (MONEY-RULES rule 1): the rows behind ``flows/idempotency.py``.

A request ``claim``s its key: a ``running`` row with the request's hash, a lease and
its holder, ``<incarnation>:<token>``, one claim's own (several requests of one process,
and of several processes, are told apart). A money request ``attach``es the operation
it creates, in the transaction creating it. The request then ``complete``s the key with
its outcome, or ``release``s it when it decided nothing; each of these is refused once
the key is no longer its claim's (its lease ended and another request took it over).
``purge`` forgets keys past their retention; ``rewrite_outcomes`` rewrites what older
versions stored.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from wallet_service.store.database import Database, Isolation, Row, Transaction


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
    # The operation (transaction or ride) a money request created: a replay answers
    # with its current state.
    operation_id: str | None = None
    # NEW: the key's holder, this claim's; what it attaches, completes or releases with.
    holder: str = ""


_WHERE_KEY = "caller = ? AND method = ? AND request_id = ?"


def new_holder(db: Database) -> str:
    """A claim's own holder, ``<incarnation>:<token>``."""
    return f"{db.incarnation}:{uuid.uuid4().hex}"


async def claim(
    db: Database,
    key: Key,
    request_hash: bytes,
    now: float,
    lease_seconds: float,
    *,
    holder: str | None = None,
) -> Claim:
    """Take the key for this request as ``holder`` (a new one by default), or say why
    not. A decided key is only read: a retry of a decided request, the common case under
    load, writes nothing. A caller that names the holder can give the key back when the
    claim's outcome is unknown (``CommitUnknown``).

    READ COMMITTED on PostgreSQL, by the key's row: the INSERT, which a unique key lets
    only one replica make (the other waits for it, then inserts nothing), or the lock of
    the row that is there (``FOR UPDATE``) before deciding on it. At SERIALIZABLE, two
    claims of unrelated keys refused each other for the index page their reads share
    (docs/money.md, "Isolation on PostgreSQL"). Every other write of a key is a
    compare-and-set on its holder, which the lock makes wait."""
    decided = await look(db, key, request_hash, now)
    if decided is not None:
        return decided
    holder = holder or new_holder(db)

    async def take(tx: Transaction) -> Claim:
        # A key deleted (released, purged) between the two statements: insert again.
        for _ in range(3):
            inserted = await tx.execute(
                """INSERT INTO idempotency_keys (caller, method, request_id, request_hash,
                                                 state, lease_until, created_at, holder)
                   VALUES (?, ?, ?, ?, 'running', ?, ?, ?)
                   ON CONFLICT (caller, method, request_id) DO NOTHING""",
                (*_params(key), request_hash, now + lease_seconds, now, holder),
            )
            if inserted:
                return Claim(ClaimKind.NEW, holder=holder)
            row = await tx.lock(_KEY_ROW_SQL, _params(key))
            if row is not None:
                break
        else:
            raise RuntimeError(f"idempotency key {key} kept vanishing while claimed")
        decided = _decided(db, row, request_hash, now)
        if decided is not None:
            return decided
        # The request holding the key is gone (its lease ended, or its process is)
        # before deciding anything: take it over, and keep it for the full retention
        # from now (purge counts from created_at).
        await tx.execute(
            f"""UPDATE idempotency_keys SET lease_until = ?, holder = ?, created_at = ?
                WHERE {_WHERE_KEY}""",
            (now + lease_seconds, holder, now, *_params(key)),
        )
        return Claim(ClaimKind.NEW, holder=holder)

    return await db.run(take, Isolation.READ_COMMITTED)


async def look(db: Database, key: Key, request_hash: bytes, now: float) -> Claim | None:
    """What the key answers this request with, or None when the request may take it.

    While a transaction is open on the shared connection (its coroutine suspended inside
    it) a plain read could see its uncommitted rows, so the read then waits for it."""
    if db.in_transaction:
        row = await db.run(lambda tx: _key_row(tx, key))
    else:
        row = await _key_row(db, key)
    return None if row is None else _decided(db, row, request_hash, now)


async def attach(tx: Transaction, key: Key, holder: str, operation_id: str) -> bool:
    """Name the operation the request holding the key as ``holder`` created, in the
    transaction creating it; False when the key is no longer ``holder``'s."""
    attached = await tx.execute(
        f"""UPDATE idempotency_keys SET operation_id = ?
            WHERE {_WHERE_KEY} AND state = 'running' AND holder = ?
              AND operation_id IS NULL""",
        (operation_id, *_params(key), holder),
    )
    return attached == 1


async def complete(db: Database, key: Key, holder: str, outcome: bytes | None) -> None:
    """Store the outcome of the request holding the key as ``holder``; later claims replay
    it. Nothing is written when the key is no longer ``holder``'s."""

    async def store(tx: Transaction) -> None:
        await tx.execute(
            f"""UPDATE idempotency_keys SET state = 'done', response = ?
                WHERE {_WHERE_KEY} AND state = 'running' AND holder = ?""",
            (outcome, *_params(key), holder),
        )

    await db.run(store)


async def release(db: Database, key: Key, holder: str) -> None:
    """End the request holding the key as ``holder`` without an outcome: a key that names
    an operation is decided by it (a retry reports on it); any other is deleted, and a
    retry runs afresh. Nothing changes when the key is no longer ``holder``'s."""

    async def give_back(tx: Transaction) -> None:
        params = (*_params(key), holder)
        await tx.execute(
            f"""DELETE FROM idempotency_keys WHERE {_WHERE_KEY} AND state = 'running'
                AND holder = ? AND operation_id IS NULL""",
            params,
        )
        await tx.execute(
            f"""UPDATE idempotency_keys SET state = 'done'
                WHERE {_WHERE_KEY} AND state = 'running' AND holder = ?""",
            params,
        )

    await db.run(give_back)


def _params(key: Key) -> tuple[str, str, str]:
    return key.caller, key.method, key.request_id


_KEY_ROW_SQL = (
    "SELECT request_hash, state, response, lease_until, operation_id, holder "
    f"FROM idempotency_keys WHERE {_WHERE_KEY}"
)


async def _key_row(source: Database | Transaction, key: Key) -> Row | None:
    return await source.fetch_one(_KEY_ROW_SQL, _params(key))


def _decided(db: Database, row: Row, request_hash: bytes, now: float) -> Claim | None:
    """What an existing key answers, or None when the request may take it over."""
    if bytes(row["request_hash"]) != request_hash:
        return Claim(ClaimKind.REUSED)
    operation = row["operation_id"]
    stored = None if row["response"] is None else bytes(row["response"])
    if row["state"] == "done":
        return Claim(ClaimKind.REPLAY, stored, operation)
    # Running and within its lease: a true duplicate in flight, in this process or in
    # another — unless the database has one process (SQLite): then a key held by
    # another incarnation belongs to a process that died.
    holder_incarnation = str(row["holder"]).partition(":")[0]
    gone = db.sole_process and holder_incarnation != db.incarnation
    if row["lease_until"] > now and not gone:
        return Claim(ClaimKind.IN_PROGRESS)
    if operation is not None:
        # The request died after creating its operation: the workers finish that
        # operation; a retry reports on it and never starts a second one.
        return Claim(ClaimKind.REPLAY, stored, operation)
    return None


async def rewrite_outcomes(db: Database, method: str, rewrite: Callable[[bytes], bytes]) -> int:
    """Replace each decided outcome of ``method`` by ``rewrite`` of it; return how many
    changed. The old bytes leave the files too: the connection zeroes what it frees
    (``secure_delete``), and ``after_rewrite`` empties what may still hold old pages
    (SQLite's WAL)."""

    async def rewrite_all(tx: Transaction) -> int:
        changed = 0
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
                    f"UPDATE idempotency_keys SET response = ? WHERE {_WHERE_KEY}",
                    (new, row["caller"], method, row["request_id"]),
                )
        return changed

    changed = await db.run(rewrite_all)
    if changed:
        await db.after_rewrite()
    return changed


async def purge(db: Database, older_than: float) -> int:
    """Forget keys created before ``older_than``; return how many. A key still ``running``
    goes too once its lease ended before then: its request is long gone (a dead
    process's key that no retry came back for)."""
    return await db.run(
        lambda tx: tx.execute(
            """DELETE FROM idempotency_keys
               WHERE created_at < ? AND (state = 'done' OR lease_until < ?)""",
            (older_than, older_than),
        )
    )
