-- Schema 1 of the SQLite store. Applied by SQLiteStore.migrate() inside one transaction.

CREATE TABLE datasources (
    id             TEXT PRIMARY KEY,
    description    TEXT NOT NULL DEFAULT '',
    request_schema BLOB              -- orjson bytes, or NULL
) WITHOUT ROWID;

-- The integer key is time-ordered (rowid): inserts append to the b-tree. The client's job id
-- (often a random GUID) has its own unique index instead.
CREATE TABLE jobs (
    id            INTEGER PRIMARY KEY,
    datasource_id TEXT NOT NULL REFERENCES datasources (id),
    job           TEXT NOT NULL,
    client        TEXT NOT NULL,
    status        TEXT NOT NULL,
    record        BLOB NOT NULL     -- orjson bytes of JobRecord.to_wire()
);
CREATE UNIQUE INDEX jobs_job ON jobs (datasource_id, job);
CREATE INDEX jobs_client ON jobs (datasource_id, client, id);
CREATE INDEX jobs_datasource ON jobs (datasource_id, id);

-- The store-wide log. AUTOINCREMENT: a seq is never handed out twice.
CREATE TABLE events (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    datasource_id TEXT NOT NULL,
    type          TEXT NOT NULL CHECK (type IN ('request', 'cancel', 'status')),
    job           TEXT NOT NULL,
    client        TEXT NOT NULL,
    timestamp     INTEGER NOT NULL,
    data          BLOB,             -- orjson bytes of the request-stream data, NULL for 'status'
    record        BLOB NOT NULL     -- orjson bytes of the job's record after the change
);
-- Every event of a datasource by seq (admin replay, timestamp seeding at open).
CREATE INDEX events_datasource ON events (datasource_id, seq);
-- The request stream (a driver's replay, latest, since pages): partial, so status events cost
-- nothing to skip. Queries must repeat "type != 'status'" for the planner to use them.
CREATE INDEX events_stream ON events (datasource_id, seq) WHERE type != 'status';
CREATE INDEX events_stream_time ON events (datasource_id, timestamp) WHERE type != 'status';
-- A client's events by seq (a client subscription's replay).
CREATE INDEX events_client ON events (datasource_id, client, seq);
