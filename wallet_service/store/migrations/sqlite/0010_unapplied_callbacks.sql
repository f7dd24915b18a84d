-- A verified callback still 'received' a while after it was stored was never applied:
-- its receiver failed after storing it (the database away, the process gone). The
-- reconciler's pass applies it then (flows/callbacks.py, UNAPPLIED_AFTER_SECONDS); the
-- partial index holds only such rows, so the pass never reads the whole table.
-- attempts.last_sent_at (0007) is, since this version, written before every send, the
-- first included: NULL only for an attempt never sent (or sent by an older version).
CREATE INDEX callbacks_unapplied ON callbacks (received_at) WHERE status = 'received';
