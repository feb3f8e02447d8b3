-- The runner's record of each periodic job (prune, mail flush, reconcile, ...): one row
-- per job, made on its first run. `doctor` and the metrics read it; `admin run-jobs`
-- writes it. Times are Unix seconds.
CREATE TABLE jobs (
    name TEXT PRIMARY KEY,
    last_start INTEGER,
    last_end INTEGER,
    -- When the job last ended without an error.
    last_success INTEGER,
    -- The last run's error; NULL when it succeeded (or is running for the first time).
    last_error TEXT,
    last_duration_ms INTEGER,
    runs INTEGER NOT NULL DEFAULT 0,
    -- Failures since the last success.
    consecutive_failures INTEGER NOT NULL DEFAULT 0
) STRICT;
