-- Several processes on one database. A KasPro call about an attempt (a send or a status
-- inquiry) is claimed in the attempt's row first, so that no two processes call KasPro
-- about one attempt at once: ``flight_holder`` is the calling process's incarnation,
-- ``flight_until`` when its claim lapses (a process killed during the call leaves it;
-- another takes it over then). NULL: no call in flight.
-- An idempotency key's ``holder`` is now one claim, ``<incarnation>:<token>``: the
-- column is unchanged, and a holder written before (an incarnation alone) still reads.
ALTER TABLE attempts ADD COLUMN flight_holder TEXT;
ALTER TABLE attempts ADD COLUMN flight_until REAL;
