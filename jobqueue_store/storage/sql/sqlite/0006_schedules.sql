-- Schema 6: schedules and their runs.

-- A schedule's record (orjson bytes of ScheduleRecord.to_wire()); the columns are for indexes.
-- next_run_at is the schedule's due time: the timer rounds fire rows whose time has passed.
-- A deleted schedule keeps its row (state 'deleted'): its id is never reused.
CREATE TABLE schedules (
    id            INTEGER PRIMARY KEY,
    datasource_id TEXT NOT NULL REFERENCES datasources (id),
    schedule      TEXT NOT NULL,
    client        TEXT NOT NULL,
    state         TEXT NOT NULL,
    next_run_at   INTEGER,
    record        BLOB NOT NULL
);
CREATE UNIQUE INDEX schedules_schedule ON schedules (datasource_id, schedule);
CREATE INDEX schedules_client ON schedules (datasource_id, client, id);
CREATE INDEX schedules_due ON schedules (next_run_at) WHERE next_run_at IS NOT NULL;

-- Each change of a schedule: an entry of the store-wide log. Its seq is taken from the events
-- table's AUTOINCREMENT counter (sqlite_sequence), so seqs stay unique and ordered across both.
CREATE TABLE schedule_events (
    seq           INTEGER PRIMARY KEY,
    datasource_id TEXT NOT NULL,
    schedule      TEXT NOT NULL,
    client        TEXT NOT NULL,
    timestamp     INTEGER NOT NULL,
    record        BLOB NOT NULL
);
CREATE INDEX schedule_events_client ON schedule_events (datasource_id, client, seq);
-- Retention deletes the schedule events older than its period, oldest first.
CREATE INDEX schedule_events_time ON schedule_events (timestamp);

-- The schedule a run belongs to (NULL: not a run), for a schedule's runs newest first.
ALTER TABLE jobs ADD COLUMN schedule TEXT;
CREATE INDEX jobs_schedule ON jobs (datasource_id, schedule, id) WHERE schedule IS NOT NULL;
