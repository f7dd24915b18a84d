-- Unverified callbacks are no longer stored in callbacks (that table now holds verified
-- ones only, raw, before they are applied). Of the unverified, the service keeps a sample
-- of the newest (WALLET_UNVERIFIED_CALLBACK_SAMPLE), and the KasPro references that
-- unverified top-ups named, to confirm by status inquiry (docs/operations.md, "The
-- callback port").

-- The newest unverified callbacks; older ones are deleted as new ones come.
CREATE TABLE unverified_callbacks (
    id           INTEGER PRIMARY KEY,
    received_at  REAL NOT NULL,
    -- The body's length, and its first bytes (MAX_SAMPLE_BYTES in http.py).
    size         INTEGER NOT NULL,
    head         BLOB NOT NULL,
    -- unsigned (a header missing) or bad signature (wrong, stale or not over this body)
    reason       TEXT NOT NULL
);

-- One row per KasPro requestId named by an unverified top-up: asked about once, then
-- again only with backoff while KasPro says it is pending. A settled row is kept for
-- WALLET_UNVERIFIED_INQUIRY_PERIOD_SECONDS, and at most WALLET_UNVERIFIED_TOP_UP_CHECKS
-- rows exist at once.
CREATE TABLE top_up_checks (
    reference     TEXT PRIMARY KEY,
    -- What the unverified body said, only to label the credit (VA or outlet, driver or not).
    channel       TEXT NOT NULL,
    va_number     TEXT NOT NULL DEFAULT '',
    payment_code  TEXT NOT NULL DEFAULT '',
    -- waiting, or settled: applied, duplicate (credited already), rejected (not confirmed)
    status        TEXT NOT NULL,
    tries         INTEGER NOT NULL DEFAULT 0,
    next_try_at   REAL NOT NULL,
    detail        TEXT NOT NULL DEFAULT '',
    create_time   REAL NOT NULL,
    update_time   REAL NOT NULL
);
CREATE INDEX top_up_checks_due ON top_up_checks (next_try_at) WHERE status = 'waiting';

-- Top-ups still waiting in callbacks for their check move over. Their bodies were read as
-- top-up callbacks when they came, so they are JSON; json_valid guards the rest.
INSERT OR IGNORE INTO top_up_checks
    (reference, channel, va_number, payment_code, status, tries, next_try_at, detail,
     create_time, update_time)
SELECT
    reference,
    COALESCE(CASE WHEN json_valid(CAST(raw AS TEXT))
                  THEN json_extract(CAST(raw AS TEXT), '$.channel') END, 'VA'),
    COALESCE(CASE WHEN json_valid(CAST(raw AS TEXT))
                  THEN json_extract(CAST(raw AS TEXT), '$.vaNumber') END, ''),
    COALESCE(CASE WHEN json_valid(CAST(raw AS TEXT))
                  THEN json_extract(CAST(raw AS TEXT), '$.paymentCode') END, ''),
    'waiting', tries, COALESCE(next_try_at, received_at), detail, received_at, received_at
FROM callbacks WHERE status = 'verify' AND reference <> '';
UPDATE callbacks SET status = 'rejected', next_try_at = NULL,
    detail = 'failed verification: confirmed through top_up_checks'
WHERE status = 'verify';
DROP INDEX callbacks_to_retry;
