-- Schema 3: retention. Terminal jobs older than the retention period are purged with their events
-- (SQLiteStore.purge, through the writer).

-- The record's updated_at as a column, so the purge finds old terminal jobs through an index
-- instead of decoding every record. Set by every write from now on; existing rows are filled in.
ALTER TABLE jobs ADD COLUMN updated_at INTEGER NOT NULL DEFAULT 0;
UPDATE jobs SET updated_at = coalesce(json_extract(CAST(record AS TEXT), '$.updated_at'), 0);
-- Partial: only terminal jobs can be purged, and queries must repeat the status list.
CREATE INDEX jobs_terminal_updated ON jobs (updated_at)
    WHERE status IN ('complete', 'cancelled', 'forbidden', 'failed');

-- A purged job's events are deleted by (datasource_id, job).
CREATE INDEX events_job ON events (datasource_id, job);

-- The largest seq the purge has deleted: a resume from below it has lost events.
CREATE TABLE retention (
    only_row       INTEGER PRIMARY KEY CHECK (only_row = 1),
    purged_through INTEGER NOT NULL
);
INSERT INTO retention (only_row, purged_through) VALUES (1, 0);
