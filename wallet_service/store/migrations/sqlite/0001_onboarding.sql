-- Customers we registered or linked, OTP state, and idempotency keys.
-- Times are Unix seconds (REAL). Mobile numbers are canonical (628…).

CREATE TABLE customers (
    mobile_number     TEXT PRIMARY KEY,
    -- The requestId we registered the customer with at KasPro; NULL when the
    -- customer was registered elsewhere and only linked here.
    kaspro_request_id TEXT,
    registered_at     REAL,
    linked_at         REAL,
    kyc_verified_at   REAL
);

CREATE TABLE otp_state (
    mobile_number   TEXT PRIMARY KEY,
    -- Expiry of the OTP that can still be verified; NULL once used, expired or
    -- when none was sent.
    expires_at      REAL,
    last_sent_at    REAL,
    failed_attempts INTEGER NOT NULL DEFAULT 0,
    locked_until    REAL,
    -- Verifications sent to KasPro and not answered yet (they count against the
    -- wrong-OTP limit), and when the last one began (stale ones stop counting).
    attempts_in_flight INTEGER NOT NULL DEFAULT 0,
    attempt_started_at REAL
);

-- One row per OTP send (or send in flight), for the hourly cap.
CREATE TABLE otp_sends (
    mobile_number TEXT NOT NULL,
    sent_at       REAL NOT NULL
);
CREATE INDEX otp_sends_by_number ON otp_sends (mobile_number, sent_at);

-- MONEY-RULES rule 1: (caller, method, request_id) → request hash, state, response.
CREATE TABLE idempotency_keys (
    caller       TEXT NOT NULL,
    method       TEXT NOT NULL,
    request_id   TEXT NOT NULL,
    request_hash BLOB NOT NULL,
    state        TEXT NOT NULL CHECK (state IN ('running', 'done')),
    -- The serialized outcome (response or error) once state = 'done'.
    response     BLOB,
    -- A 'running' key whose lease passed belongs to a request that died; the
    -- next retry may take it over.
    lease_until  REAL NOT NULL,
    created_at   REAL NOT NULL,
    PRIMARY KEY (caller, method, request_id)
);
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);
