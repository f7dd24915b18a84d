-- Money: transactions, KasPro attempts, ride payments, the ledger, the event outbox,
-- and raw callbacks. Times are Unix seconds (REAL); amounts are whole rupiah (INTEGER).

-- A money movement as callers see it. Statuses move forward only (domain/money.py).
CREATE TABLE transactions (
    id                  TEXT PRIMARY KEY,
    type                TEXT NOT NULL,
    status              TEXT NOT NULL,
    amount_idr          INTEGER NOT NULL CHECK (amount_idr > 0),
    fee_idr             INTEGER NOT NULL DEFAULT 0,
    mobile_number       TEXT NOT NULL,
    counterparty        TEXT NOT NULL DEFAULT '',
    ride_id             TEXT NOT NULL DEFAULT '',
    note                TEXT NOT NULL DEFAULT '',
    -- Cash-out destination or QRIS details, as JSON.
    details             TEXT NOT NULL DEFAULT '{}',
    withdrawal_code     TEXT NOT NULL DEFAULT '',
    kaspro_reference    TEXT,
    failure_reason      TEXT NOT NULL DEFAULT '',
    failure_message     TEXT NOT NULL DEFAULT '',
    -- Set when an answer did not match what we asked (rule 6): no more money moves.
    frozen              TEXT NOT NULL DEFAULT '',
    create_time         REAL NOT NULL,
    update_time         REAL NOT NULL
);
CREATE INDEX transactions_by_wallet ON transactions (mobile_number, create_time DESC, id DESC);
CREATE INDEX transactions_by_counterparty ON transactions (counterparty, create_time DESC, id DESC);
-- A credited top-up is recorded once per KasPro reference, however often it is told.
CREATE UNIQUE INDEX transactions_topup_reference ON transactions (kaspro_reference)
    WHERE type IN ('TOP_UP', 'DRIVER_DEPOSIT');

-- One KasPro money call (rule 2): saved with our reference before it is sent.
CREATE TABLE attempts (
    reference       TEXT PRIMARY KEY,
    transaction_id  TEXT NOT NULL REFERENCES transactions (id),
    leg             TEXT NOT NULL,
    -- What to send (endpoint and arguments, JSON), so the same step can be sent again.
    call            TEXT NOT NULL,
    amount_idr      INTEGER NOT NULL,
    -- pending: saved, maybe sent, outcome unknown; processing: KasPro said in process;
    -- succeeded / failed: final.
    status          TEXT NOT NULL CHECK (status IN ('pending', 'processing', 'succeeded', 'failed')),
    kaspro_reff_id  TEXT,
    fee_idr         INTEGER NOT NULL DEFAULT 0,
    checks          INTEGER NOT NULL DEFAULT 0,
    next_check_at   REAL NOT NULL,
    last_detail     TEXT NOT NULL DEFAULT '',
    create_time     REAL NOT NULL,
    update_time     REAL NOT NULL
);
CREATE INDEX attempts_open ON attempts (next_check_at) WHERE status IN ('pending', 'processing');
CREATE INDEX attempts_by_transaction ON attempts (transaction_id);

-- A ride's hold in escrow and how it resolved (rule 7).
CREATE TABLE ride_payments (
    ride_id             TEXT PRIMARY KEY,
    status              TEXT NOT NULL,
    passenger           TEXT NOT NULL,
    driver              TEXT NOT NULL DEFAULT '',
    held_amount_idr     INTEGER NOT NULL CHECK (held_amount_idr > 0),
    final_fare_idr      INTEGER NOT NULL DEFAULT 0,
    platform_fee_idr    INTEGER NOT NULL DEFAULT 0,
    driver_payout_idr   INTEGER NOT NULL DEFAULT 0,
    refund_idr          INTEGER NOT NULL DEFAULT 0,
    expire_time         REAL NOT NULL,
    reason              TEXT NOT NULL DEFAULT '',
    hold_transaction    TEXT NOT NULL,
    settle_transaction  TEXT NOT NULL DEFAULT '',
    create_time         REAL NOT NULL,
    update_time         REAL NOT NULL
);
CREATE INDEX ride_payments_expiring ON ride_payments (expire_time) WHERE status = 'AUTHORIZED';

-- Double-entry ledger (rule 8): the lines of one transaction sum to zero. Never edited.
CREATE TABLE ledger_lines (
    id              INTEGER PRIMARY KEY,
    transaction_id  TEXT NOT NULL REFERENCES transactions (id),
    -- The attempt that moved the money (one per leg): a leg is booked once.
    reference       TEXT NOT NULL,
    account         TEXT NOT NULL,
    amount_idr      INTEGER NOT NULL,
    create_time     REAL NOT NULL,
    UNIQUE (reference, account)
);
CREATE INDEX ledger_by_account ON ledger_lines (account, create_time);

-- The outbox (rule 9): one row per state change, in the same transaction as the change.
CREATE TABLE events (
    sequence     INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id     TEXT NOT NULL UNIQUE,
    type         TEXT NOT NULL,
    subject_id   TEXT NOT NULL,
    -- A full snapshot of the subject (JSON of the row).
    snapshot     TEXT NOT NULL,
    occurred_at  REAL NOT NULL
);

-- Every callback as received, stored before anything else is done with it (rule 5).
CREATE TABLE callbacks (
    id            INTEGER PRIMARY KEY,
    received_at   REAL NOT NULL,
    raw           BLOB NOT NULL,
    timestamp     TEXT NOT NULL DEFAULT '',
    signature     TEXT NOT NULL DEFAULT '',
    -- received, applied, duplicate (same final state again), ignored (contradicts a
    -- final state, or the transaction is frozen), frozen (contradicts what we asked),
    -- parked (reference not known yet), rejected (unverifiable or unusable)
    status        TEXT NOT NULL,
    reference     TEXT NOT NULL DEFAULT '',
    tries         INTEGER NOT NULL DEFAULT 0,
    next_try_at   REAL,
    detail        TEXT NOT NULL DEFAULT ''
);
CREATE INDEX callbacks_parked ON callbacks (next_try_at) WHERE status = 'parked';

-- Idempotency keys of money RPCs point at the operation they created.
ALTER TABLE idempotency_keys ADD COLUMN operation_id TEXT;
