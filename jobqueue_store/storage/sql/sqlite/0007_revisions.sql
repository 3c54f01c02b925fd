-- Schema 7: long-running jobs. New request-stream entry types (update, stop, start) and the
-- statuses running and stopped among the unfinished ones. SQLite cannot change a CHECK
-- constraint in place: the events table is rebuilt, keeping every seq and the AUTOINCREMENT
-- counter (the newest events may have been purged: seq values are never handed out twice).
CREATE TABLE events_new (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    datasource_id TEXT NOT NULL,
    type          TEXT NOT NULL
        CHECK (type IN ('request', 'cancel', 'status', 'update', 'stop', 'start')),
    job           TEXT NOT NULL,
    client        TEXT NOT NULL,
    timestamp     INTEGER NOT NULL,
    data          BLOB,             -- orjson bytes of the entry's data (see models.Event)
    record        BLOB NOT NULL     -- orjson bytes of the job's record after the change
);
INSERT INTO events_new (seq, datasource_id, type, job, client, timestamp, data, record)
    SELECT seq, datasource_id, type, job, client, timestamp, data, record FROM events;
INSERT INTO sqlite_sequence (name, seq)
    SELECT 'events_keep', seq FROM sqlite_sequence WHERE name = 'events';
DROP TABLE events;
ALTER TABLE events_new RENAME TO events;
DELETE FROM sqlite_sequence WHERE name = 'events';
INSERT INTO sqlite_sequence (name, seq)
    SELECT 'events', max(seq) FROM sqlite_sequence WHERE name IN ('events_keep', 'events_new')
    HAVING max(seq) IS NOT NULL;
DELETE FROM sqlite_sequence WHERE name IN ('events_keep', 'events_new');
CREATE INDEX events_datasource ON events (datasource_id, seq);
CREATE INDEX events_stream ON events (datasource_id, seq) WHERE type != 'status';
CREATE INDEX events_stream_time ON events (datasource_id, timestamp) WHERE type != 'status';
CREATE INDEX events_client ON events (datasource_id, client, seq);
CREATE INDEX events_job ON events (datasource_id, job);

DROP INDEX jobs_unfinished;
CREATE INDEX jobs_unfinished ON jobs (datasource_id, client)
    WHERE status IN ('submitted', 'accepted', 'retrying', 'running', 'stopped');
