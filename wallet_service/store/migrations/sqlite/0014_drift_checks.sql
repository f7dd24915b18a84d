-- The drift check's own state (workers/drift.py; docs/operations.md, "Drift"): which
-- wallets are due a comparison, which replica is comparing one now, and a difference
-- seen once that must be seen again before it is recorded in drifts.

-- One row per ledger account the check has met: a customer's wallet
-- (subscriber:<number>), or escrow (its holds check).
CREATE TABLE drift_checks (
    account        TEXT PRIMARY KEY,
    -- Ledger activity seen since the last comparison: due a comparison (NULL: not due).
    due_since      REAL,
    -- When the last comparison ended (NULL: never compared).
    checked_at     REAL,
    -- The claim of the replica comparing it now (one pass's token) and when it lapses:
    -- no two replicas inquire one wallet at once.
    claimed_by     TEXT,
    claimed_until  REAL,
    -- A difference seen and not yet recorded (or recorded, and still seen): our figure,
    -- KasPro's, and since when this same difference stands. NULL: the books agreed.
    differs_since  REAL,
    ours_idr       INTEGER,
    theirs_idr     INTEGER
);
CREATE INDEX drift_checks_due ON drift_checks (due_since) WHERE due_since IS NOT NULL;
CREATE INDEX drift_checks_differing ON drift_checks (differs_since)
    WHERE differs_since IS NOT NULL;

-- How far the check has read the ledger for activity (one row): each pass reads the lines
-- written since, less a margin for transactions that committed late.
CREATE TABLE drift_scan (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    scanned_to  REAL NOT NULL
);

-- The lines written since a time, and their accounts, from the index alone.
CREATE INDEX ledger_by_time ON ledger_lines (create_time, account);
-- The holds open now (few), without reading every ride: what the check skips and what
-- escrow must hold.
CREATE INDEX ride_payments_open ON ride_payments (passenger)
    WHERE status IN ('AUTHORIZING', 'AUTHORIZED', 'CAPTURING', 'VOIDING');
