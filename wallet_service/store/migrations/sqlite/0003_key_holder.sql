-- Which process holds a running idempotency key: a key held by a process that is gone
-- (killed, restarted) is taken over at once instead of after its lease.
ALTER TABLE idempotency_keys ADD COLUMN holder TEXT NOT NULL DEFAULT '';

-- Callbacks to try again: 'parked' (reference not known yet) and 'verify' (a top-up
-- whose callback failed verification, to be confirmed by a KasPro status inquiry).
CREATE INDEX callbacks_to_retry ON callbacks (next_try_at) WHERE status IN ('parked', 'verify');
