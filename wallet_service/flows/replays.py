"""Retries of decided money requests, answered from memory.

Callers retry a money request on every timeout, and a retry answers with what the key
decided: the operation's current state, or the stored refusal. Read from the database
that is two reads (the key, the operation) and a row turned into a record each time
(docs/performance.md, fix 17). Both are kept here instead:

- a decided key's request hash and claim never change; only ``idempotency.purge``
  deletes keys (and ``rewrite_outcomes`` rewrites answers, at start), and a commit that
  did either clears them all;
- an operation's answer is kept only in a status where it depends on the operation's
  own row alone (not PENDING or PROCESSING, nor a ride AUTHORIZING, whose answer also
  depends on whether a KasPro answer is missing, nor a ride FAILED, answered with its
  hold transaction's failure), and it is dropped by any database
  transaction that changes that row, when it commits or rolls back
  (``Database.watch_changes``: every UPDATE of a transaction or ride row goes through
  ``store/money.py``, which names the operation).

An entry read before such a transaction ended is never kept: ``mark()`` before the
read, ``keep_*(…, mark)`` after it; nor one read while a transaction is open. Both maps
are bounded (the oldest entry goes first). This holds while this process is the
database's only writer (one replica; docs/performance.md, Scale-out).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from wallet_service.store.database import Database, Transaction
from wallet_service.store.idempotency import Claim, ClaimKind, Key

K = TypeVar("K")
V = TypeVar("V")

KEPT = 4096  # per map; a few MB at most


@dataclass(frozen=True, slots=True)
class Answer:
    """What a retry is answered with: the operation's record, or the failure it ended in
    (``failure_reason``, ``failure_message``) to raise afresh."""

    record: object = None
    failure: tuple[str, str] | None = None


class Replays:
    def __init__(self, db: Database, kept: int = KEPT) -> None:
        if kept < 1:
            raise ValueError(f"kept must be at least 1, not {kept}")
        self._db = db
        self._kept = kept
        self._claims: dict[Key, tuple[bytes, Claim]] = {}
        self._answers: dict[str, Answer] = {}
        self._changes = 0
        db.watch_changes(self._forget)

    def mark(self) -> int:
        """Taken before a read whose result may be kept."""
        return self._changes

    def claim(self, key: Key, request_hash: bytes) -> Claim | None:
        """The decided claim kept for ``key`` (REUSED for another request), or None."""
        kept = self._claims.get(key)
        if kept is None:
            return None
        kept_hash, claim = kept
        return claim if kept_hash == request_hash else Claim(ClaimKind.REUSED)

    def keep_claim(self, key: Key, request_hash: bytes, claim: Claim, mark: int) -> None:
        if claim.kind is ClaimKind.REPLAY and self._unchanged_since(mark):
            _put(self._claims, key, (request_hash, claim), self._kept)

    def answer(self, operation_id: str) -> Answer | None:
        return self._answers.get(operation_id)

    def keep_answer(self, operation_id: str, answer: Answer, mark: int) -> None:
        if self._unchanged_since(mark):
            _put(self._answers, operation_id, answer, self._kept)

    def _unchanged_since(self, mark: int) -> bool:
        # A transaction open now (its coroutine suspended inside it) may have shown the
        # read rows it has not committed, inserted rows included: nothing is kept then.
        return mark == self._changes and not self._db.in_transaction

    def _forget(self, tx: Transaction) -> None:
        self._changes += 1
        if tx.forgot_keys:
            self._claims.clear()
        for operation_id in tx.changed:
            self._answers.pop(operation_id, None)


def _put(entries: dict[K, V], key: K, value: V, kept: int) -> None:
    if key not in entries and len(entries) >= kept:
        del entries[next(iter(entries))]
    entries[key] = value
