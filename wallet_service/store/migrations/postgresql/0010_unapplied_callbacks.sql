-- Callbacks stored but never applied are found by the reconciler's pass from this
-- partial index; attempts.last_sent_at is now written before every send
-- (migrations/sqlite/0010_unapplied_callbacks.sql says more).
CREATE INDEX callbacks_unapplied ON callbacks (received_at) WHERE status = 'received';
