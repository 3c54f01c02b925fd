-- jobqueue-store PostgreSQL schema, version 5: schedules and their runs.

-- A schedule's record (JSON text of ScheduleRecord.to_wire()); the columns are for indexes and
-- locks. next_run_at is the schedule's due time: the timer rounds of every process lock due rows
-- FOR UPDATE SKIP LOCKED under the log lock. A deleted schedule keeps its row (id never reused).
CREATE TABLE schedules (
    id            BIGSERIAL PRIMARY KEY,
    datasource_id TEXT NOT NULL REFERENCES datasources (id),
    schedule      TEXT NOT NULL,
    client        TEXT NOT NULL,
    state         TEXT NOT NULL,
    next_run_at   BIGINT,
    record        TEXT NOT NULL,
    UNIQUE (datasource_id, schedule)
);
CREATE INDEX schedules_client ON schedules (datasource_id, client, id);
CREATE INDEX schedules_due ON schedules (next_run_at) WHERE next_run_at IS NOT NULL;

-- Each change of a schedule: an entry of the store-wide log, its seq taken from log_counter
-- under the log lock like every event.
CREATE TABLE schedule_events (
    seq           BIGINT PRIMARY KEY,
    datasource_id TEXT NOT NULL,
    schedule      TEXT NOT NULL,
    client        TEXT NOT NULL,
    ts            BIGINT NOT NULL,
    record        TEXT NOT NULL
);
CREATE INDEX schedule_events_client ON schedule_events (datasource_id, client, seq);
-- Retention deletes the schedule events older than its period, oldest first.
CREATE INDEX schedule_events_time ON schedule_events (ts);

-- Runs: the schedule and fire time of a job created by a schedule (NULL: not a run).
ALTER TABLE jobs ADD COLUMN schedule TEXT, ADD COLUMN scheduled_for BIGINT;
CREATE INDEX jobs_schedule ON jobs (datasource_id, schedule, id) WHERE schedule IS NOT NULL;
