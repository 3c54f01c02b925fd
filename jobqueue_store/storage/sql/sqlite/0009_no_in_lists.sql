-- Schema 9: no IN list of constants in a CHECK constraint or a partial index's WHERE. SQLite
-- evaluates those on every insert (and a partial index's WHERE on every update of a column it
-- names), and it builds a temporary b-tree for an IN list of more than two constants each
-- time: that cost a status change about 50 µs, a job insert 3 µs and an event insert 2 µs.
-- The same conditions are written as OR-ed equalities. Queries that want the partial indexes
-- repeat the expressions as written here (storage/sqlite.py: UNFINISHED_SQL, TERMINAL_SQL;
-- storage/sqlite_leases.py: SQL_CLAIMABLE).
--
-- SQLite cannot change a CHECK constraint in place: the events table is rebuilt as in schema 7,
-- keeping every seq and the AUTOINCREMENT counter.
CREATE TABLE events_new (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    datasource_id TEXT NOT NULL,
    type          TEXT NOT NULL
        CHECK (type = 'request' OR type = 'cancel' OR type = 'status' OR type = 'update'
               OR type = 'stop' OR type = 'start'),
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
    WHERE (status = 'submitted' OR status = 'accepted' OR status = 'retrying'
           OR status = 'running' OR status = 'stopped');
DROP INDEX jobs_claimable;
CREATE INDEX jobs_claimable ON jobs (datasource_id, id)
    WHERE (status = 'submitted' OR status = 'retrying') AND lease_id IS NULL;
DROP INDEX jobs_terminal_updated;
CREATE INDEX jobs_terminal_updated ON jobs (updated_at)
    WHERE (status = 'complete' OR status = 'cancelled' OR status = 'forbidden'
           OR status = 'failed');
