-- Several processes on one database: a KasPro call about an attempt is claimed in its
-- row first (migrations/sqlite/0009_replicas.sql says how).
ALTER TABLE attempts ADD COLUMN flight_holder TEXT;
ALTER TABLE attempts ADD COLUMN flight_until DOUBLE PRECISION;
