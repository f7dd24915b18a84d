"""Drifts: an account whose balance somewhere else is not what our ledger says it must be
(migrations/sqlite/0011_drifts.sql). Recorded with both figures and the time; never
corrected by a ledger line of ours. At most one open drift per (account, kind)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from wallet_service.store.database import Row, Source, columns
from wallet_service.store.database import Transaction as DbTx


class DriftKind(enum.StrEnum):
    # KasPro's balance of a wallet against the ledger's.
    BALANCE = "balance"
    # The escrow's ledger balance against the open holds of ride_payments.
    HOLDS = "holds"


class DriftStatus(enum.StrEnum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    CLEARED = "cleared"


@dataclass(frozen=True)
class Drift:
    id: int
    account: str
    kind: DriftKind
    ours_idr: int
    theirs_idr: int
    detected_at: float
    last_seen_at: float
    status: DriftStatus
    closed_at: float | None
    closed_by: str
    reason: str

    @property
    def difference_idr(self) -> int:
        """What the other side holds beyond our books (negative: less)."""
        return self.theirs_idr - self.ours_idr


_COLUMNS = columns(Drift)


def _drift(row: Row) -> Drift:
    return Drift(**{**row, "kind": DriftKind(row["kind"]), "status": DriftStatus(row["status"])})


async def record_drift(
    tx: DbTx, account: str, kind: DriftKind, ours_idr: int, theirs_idr: int, now: float
) -> Drift | None:
    """Record that ``account`` differs now: the open drift, renewed with these figures, or
    a new one. None when the difference is the one an operator acknowledged last for this
    account and kind, and the books have not agreed since (known, and in someone's
    hands): it is not opened again until the difference changes."""
    if ours_idr == theirs_idr:
        raise ValueError("a drift needs two different figures")
    open_row = await tx.fetch_one(
        f"SELECT {_COLUMNS} FROM drifts WHERE account = ? AND kind = ? AND status = 'open'",
        (account, kind.value),
    )
    if open_row is not None:
        await tx.execute(
            "UPDATE drifts SET ours_idr = ?, theirs_idr = ?, last_seen_at = ? WHERE id = ?",
            (ours_idr, theirs_idr, now, open_row["id"]),
        )
        return await load_drift(tx, int(open_row["id"]))
    last = await tx.fetch_one(
        f"SELECT {_COLUMNS} FROM drifts WHERE account = ? AND kind = ? ORDER BY id DESC LIMIT 1",
        (account, kind.value),
    )
    if (
        last is not None
        and last["status"] == DriftStatus.ACKNOWLEDGED
        and last["theirs_idr"] - last["ours_idr"] == theirs_idr - ours_idr
    ):
        return None
    row = await tx.fetch_one(
        """INSERT INTO drifts (account, kind, ours_idr, theirs_idr, detected_at,
               last_seen_at, status) VALUES (?, ?, ?, ?, ?, ?, 'open') RETURNING id""",
        (account, kind.value, ours_idr, theirs_idr, now, now),
    )
    assert row is not None
    return await load_drift(tx, int(row["id"]))


async def clear_drift(tx: DbTx, account: str, kind: DriftKind, now: float) -> Drift | None:
    """The books of ``account`` agree again: its open drift (if any) is cleared. So is an
    acknowledged one, keeping who acknowledged it and why: the difference it stood for
    is gone, and the same difference seen later is a new drift, not the known one."""
    row = await tx.fetch_one(
        "UPDATE drifts SET status = 'cleared', closed_at = COALESCE(closed_at, ?), "
        "closed_by = CASE WHEN status = 'open' THEN 'drift check' ELSE closed_by END, "
        "reason = CASE WHEN status = 'open' THEN 'the figures agree again' ELSE reason END "
        "WHERE account = ? AND kind = ? AND status IN ('open', 'acknowledged') RETURNING id",
        (now, account, kind.value),
    )
    return None if row is None else await load_drift(tx, int(row["id"]))


async def acknowledge_drift(
    tx: DbTx, drift_id: int, by: str, reason: str, now: float
) -> Drift | None:
    """An operator acknowledges open drift ``drift_id``: None when it is not open."""
    changed = await tx.execute(
        "UPDATE drifts SET status = 'acknowledged', closed_at = ?, closed_by = ?, reason = ? "
        "WHERE id = ? AND status = 'open'",
        (now, by, reason, drift_id),
    )
    return await load_drift(tx, drift_id) if changed else None


async def load_drift(source: Source, drift_id: int) -> Drift | None:
    row = await source.fetch_one(f"SELECT {_COLUMNS} FROM drifts WHERE id = ?", (drift_id,))
    return None if row is None else _drift(row)


async def list_drifts(
    source: Source,
    *,
    status: DriftStatus | None = None,
    account: str = "",
    after_id: int = 0,
    limit: int = 100,
) -> list[Drift]:
    """Drifts in the order they were found, after ``after_id`` (a page token)."""
    where = ["id > ?"]
    params: list[object] = [after_id]
    if status is not None:
        where.append("status = ?")
        params.append(status.value)
    if account:
        where.append("account = ?")
        params.append(account)
    rows = await source.fetch_all(
        f"SELECT {_COLUMNS} FROM drifts WHERE {' AND '.join(where)} ORDER BY id LIMIT ?",
        (*params, limit),
    )
    return [_drift(row) for row in rows]


async def open_drifts(source: Source) -> int:
    """How many drifts are open (the metric)."""
    row = await source.fetch_one("SELECT COUNT(*) AS n FROM drifts WHERE status = 'open'")
    return 0 if row is None else int(row["n"])
