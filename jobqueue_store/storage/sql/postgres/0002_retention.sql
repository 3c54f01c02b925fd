-- jobqueue-store PostgreSQL schema, version 2: retention. Terminal jobs older than the retention
-- period are purged with their events (PostgresStore.purge, under the log lock).

-- Partial: only terminal jobs can be purged; the purge query repeats the status list.
CREATE INDEX jobs_terminal_by_updated ON jobs (updated_at)
    WHERE status IN ('complete', 'cancelled', 'forbidden', 'failed');

-- A purged job's events are deleted by (datasource_id, job).
CREATE INDEX events_by_job ON events (datasource_id, job);

-- The largest seq the purge has deleted: a resume from below it has lost events.
ALTER TABLE log_counter ADD COLUMN purged_through BIGINT NOT NULL DEFAULT 0;
