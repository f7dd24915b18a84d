"""Transactions: money movements as callers see them.

A status change is a conditional UPDATE (``… WHERE status IN (<allowed sources>)``): one
that would move a status backwards or out of a terminal state changes nothing (rule 4).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from wallet_service.domain.money import TxStatus, TxType, tx_sources
from wallet_service.domain.records import Transaction
from wallet_service.store.database import Database, Row, Source, columns, insert, move
from wallet_service.store.database import Transaction as DbTx

_TX_COLUMNS = columns(Transaction)


def _transaction(row: Row) -> Transaction:
    return Transaction(
        **{
            **row,
            "type": TxType(row["type"]),
            "status": TxStatus(row["status"]),
            "details": json.loads(row["details"]),
        }
    )


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


async def insert_transaction(tx: DbTx, t: Transaction) -> None:
    await insert(tx, "transactions", t)


async def load_transaction(source: Source, transaction_id: str) -> Transaction | None:
    row = await source.fetch_one(
        f"SELECT {_TX_COLUMNS} FROM transactions WHERE id = ?", (transaction_id,)
    )
    return None if row is None else _transaction(row)


async def lock_operation(tx: DbTx, reference: str) -> Transaction | None:
    """The operation that attempt ``reference`` is a leg of, locked until ``tx`` ends:
    every transaction that changes an operation's attempts or its row takes this lock
    first (``Engine.apply``; docs/money.md, "Isolation on PostgreSQL"). None: no such
    attempt."""
    row = await tx.lock(
        f"SELECT {_TX_COLUMNS} FROM transactions "
        "WHERE id = (SELECT transaction_id FROM attempts WHERE reference = ?)",
        (reference,),
    )
    return None if row is None else _transaction(row)


async def lock_transaction(tx: DbTx, transaction_id: str) -> Transaction | None:
    """Transaction ``transaction_id``, locked as ``lock_operation`` locks it (an operator's
    resolution of a frozen operation names it by id)."""
    row = await tx.lock(f"SELECT {_TX_COLUMNS} FROM transactions WHERE id = ?", (transaction_id,))
    return None if row is None else _transaction(row)


async def move_transaction(
    tx: DbTx, transaction_id: str, to: TxStatus, now: float, **fields: Any
) -> Transaction | None:
    """Move to ``to`` if the table allows it from the current status; the new row or None."""
    row = await move(
        tx, "transactions", ("id", transaction_id), to, tx_sources(to), now, fields, _TX_COLUMNS
    )
    return None if row is None else _transaction(row)


async def set_transaction_fields(tx: DbTx, transaction_id: str, now: float, **fields: Any) -> None:
    """Fields that are not the status (e.g. the KasPro reference once known)."""
    assignments = ", ".join(f"{name} = ?" for name in fields)
    await tx.execute(
        f"UPDATE transactions SET {assignments}, update_time = ? WHERE id = ?",
        (*fields.values(), now, transaction_id),
    )


async def list_transactions(
    db: Database,
    mobile_number: str,
    *,
    type_: TxType | None,
    status: TxStatus | None,
    before: tuple[float, str] | None,
    limit: int,
) -> list[Transaction]:
    """A wallet's transactions (as payer or counterparty), newest first, after a cursor."""
    clauses = ["(mobile_number = ? OR counterparty = ?)"]
    params: list[Any] = [mobile_number, mobile_number]
    if type_ is not None:
        clauses.append("type = ?")
        params.append(type_.value)
    if status is not None:
        clauses.append("status = ?")
        params.append(status.value)
    if before is not None:
        clauses.append("(create_time < ? OR (create_time = ? AND id < ?))")
        params += [before[0], before[0], before[1]]
    rows = await db.fetch_all(
        f"SELECT {_TX_COLUMNS} FROM transactions WHERE {' AND '.join(clauses)} "
        "ORDER BY create_time DESC, id DESC LIMIT ?",
        (*params, limit),
    )
    return [_transaction(row) for row in rows]


async def topup_exists(tx: DbTx, kaspro_reference: str) -> Transaction | None:
    row = await tx.fetch_one(
        f"SELECT {_TX_COLUMNS} FROM transactions "
        "WHERE kaspro_reference = ? AND type IN ('TOP_UP', 'DRIVER_DEPOSIT')",
        (kaspro_reference,),
    )
    return None if row is None else _transaction(row)


async def frozen_count(db: Database) -> int:
    """How many operations are frozen for review (an alert: each needs a person)."""
    row = await db.fetch_one(FROZEN_COUNT_SQL)
    assert row is not None
    return int(row["n"])


# Read from the partial index transactions_frozen alone (migration 0006).
FROZEN_COUNT_SQL = "SELECT COUNT(*) AS n FROM transactions WHERE frozen != ''"


async def list_frozen(
    db: Database, *, type_: TxType | None, after: tuple[float, str] | None, limit: int
) -> list[Transaction]:
    """Operations frozen for review, oldest first, after the cursor ``after``
    (create_time, id); only those of ``type_`` when given (the operators' list)."""
    clauses = ["frozen != ''"]
    params: list[Any] = []
    if type_ is not None:
        clauses.append("type = ?")
        params.append(type_.value)
    if after is not None:
        clauses.append("(create_time > ? OR (create_time = ? AND id > ?))")
        params += [after[0], after[0], after[1]]
    rows = await db.fetch_all(
        f"SELECT {_TX_COLUMNS} FROM transactions WHERE {' AND '.join(clauses)} "
        "ORDER BY create_time, id LIMIT ?",
        (*params, limit),
    )
    return [_transaction(row) for row in rows]
