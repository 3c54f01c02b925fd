-- Schema 6: long-running jobs. New request-stream entry types (update, stop, start), the
-- statuses running and stopped among the unfinished ones, and the job's revision fields
-- (revision, desired_state, rollback, rollback_of) as one JSON text, NULL while all are at
-- their defaults.
ALTER TABLE events DROP CONSTRAINT IF EXISTS events_type_check;
ALTER TABLE events ADD CONSTRAINT events_type_check
    CHECK (type IN ('request', 'cancel', 'status', 'update', 'stop', 'start'));
ALTER TABLE jobs ADD COLUMN pipeline TEXT;
DROP INDEX jobs_unfinished;
CREATE INDEX jobs_unfinished ON jobs (datasource_id, client)
    WHERE status IN ('submitted', 'accepted', 'retrying', 'running', 'stopped');
