-- The trace id of the RPC (or worker pass) that created an attempt: the reconciler, a
-- callback and a send again log under it, on whichever replica, so one grep of the id
-- follows an operation through every replica's log (docs/operations.md, "Logs and
-- traces"). Empty for attempts created before this version.
ALTER TABLE attempts ADD COLUMN trace_id TEXT NOT NULL DEFAULT '';
