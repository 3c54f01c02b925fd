-- jobqueue-store PostgreSQL schema, version 4: leases, redelivery, deadlines and the stream
-- worker slot.

-- The dispatch and deadline settings of a datasource (orjson text of Datasource.settings_json;
-- NULL: the defaults, a stream datasource).
ALTER TABLE datasources ADD COLUMN settings TEXT;

-- The lease holding the job (NULL: none), the claims so far, when a job given back can be
-- claimed again, its deadline, and its next due time (lease expiry, deadline or the end of its
-- grace): the timers of every process fire rows whose due_at has passed, FOR UPDATE SKIP LOCKED.
ALTER TABLE jobs
    ADD COLUMN lease_id TEXT,
    ADD COLUMN lease_worker TEXT,
    ADD COLUMN lease_expires_at BIGINT,
    ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0,
    ADD COLUMN retry_at BIGINT,
    ADD COLUMN deadline BIGINT,
    ADD COLUMN due_at BIGINT;
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
    since         BIGINT NOT NULL,
    last_seen     BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL,
    resume        BIGINT
);

-- Workers that claimed on a lease datasource: first seen (of their current run) and last seen.
CREATE TABLE lease_workers (
    datasource_id TEXT NOT NULL,
    worker        TEXT NOT NULL,
    since         BIGINT NOT NULL,
    last_seen     BIGINT NOT NULL,
    PRIMARY KEY (datasource_id, worker)
);
