-- Drifts: a wallet whose balance at KasPro is not what our ledger says it must be, or an
-- escrow that is not the sum of the open holds (docs/operations.md, "Drift"). Found by
-- the drift check on every replica (workers/drift.py); recorded with both figures, never
-- "fixed" by a ledger line of ours. One open row per (account, kind) at most: seen again,
-- the open row's figures and last_seen_at are renewed. An operator acknowledges it with a
-- reason (AdminService); a drift whose books agree again is cleared by the check.
CREATE TABLE drifts (
    id               INTEGER PRIMARY KEY,
    -- The ledger account: subscriber:<mobile number>, escrow, corporate, merchant.
    account          TEXT NOT NULL,
    -- balance: KasPro's balance against the ledger's; holds: the escrow's ledger balance
    -- against the open holds of ride_payments.
    kind             TEXT NOT NULL CHECK (kind IN ('balance', 'holds')),
    -- What our books say, and what the other side says (KasPro, or the open holds).
    ours_idr         INTEGER NOT NULL,
    theirs_idr       INTEGER NOT NULL,
    detected_at      REAL NOT NULL,
    last_seen_at     REAL NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('open', 'acknowledged', 'cleared')),
    -- Set when the status leaves 'open': who acknowledged it and why, or the check that
    -- found the books agreeing again.
    closed_at        REAL,
    closed_by        TEXT NOT NULL DEFAULT '',
    reason           TEXT NOT NULL DEFAULT ''
);
CREATE UNIQUE INDEX drifts_open ON drifts (account, kind) WHERE status = 'open';
CREATE INDEX drifts_by_account ON drifts (account, kind, id);
