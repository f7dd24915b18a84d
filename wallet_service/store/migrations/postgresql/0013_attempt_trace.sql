-- The same column as migrations/sqlite/0013_attempt_trace.sql: the trace id of the RPC
-- (or worker pass) that created an attempt, logged under by all later work on it.
ALTER TABLE attempts ADD COLUMN trace_id TEXT NOT NULL DEFAULT '';
