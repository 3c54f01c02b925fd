-- Schema 5: leases, redelivery, deadlines and the stream worker slot.

-- The dispatch and deadline settings of a datasource (orjson bytes of Datasource.settings_json;
-- NULL: the defaults, a stream datasource).
ALTER TABLE datasources ADD COLUMN settings BLOB;

-- The lease holding the job (NULL: none), when a job given back can be claimed again, and the
-- job's next due time (lease expiry, deadline or the end of its grace): the timers fire rows
-- whose due_at has passed. The record blob holds the same values; the columns are for indexes.
ALTER TABLE jobs ADD COLUMN lease_id TEXT;
ALTER TABLE jobs ADD COLUMN retry_at INTEGER;
ALTER TABLE jobs ADD COLUMN due_at INTEGER;
CREATE INDEX jobs_due ON jobs (due_at) WHERE due_at IS NOT NULL;
-- Claims take the oldest claimable jobs of a datasource; queries repeat the predicate.
CREATE INDEX jobs_claimable ON jobs (datasource_id, id)
    WHERE status IN ('submitted', 'retrying') AND lease_id IS NULL;

-- The worker slot of each stream datasource. The row stays when the slot is freed or lapses:
-- it keeps the resume point for the next holder.
CREATE TABLE worker_slots (
    datasource_id TEXT PRIMARY KEY,
    lease_id      TEXT NOT NULL,
    worker        TEXT NOT NULL,
    since         INTEGER NOT NULL,
    last_seen     INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    resume        INTEGER
) WITHOUT ROWID;

-- Workers that claimed on a lease datasource: first seen (of their current run) and last seen.
CREATE TABLE lease_workers (
    datasource_id TEXT NOT NULL,
    worker        TEXT NOT NULL,
    since         INTEGER NOT NULL,
    last_seen     INTEGER NOT NULL,
    PRIMARY KEY (datasource_id, worker)
) WITHOUT ROWID;
