-- jobqueue-store PostgreSQL schema, version 1.
-- Runs with search_path set to the store's schema, inside the migration transaction.
-- JSON values are kept as orjson text (TEXT, not JSONB) so they come back exactly as sent,
-- including key order and "\u0000" escapes that JSONB rejects.

CREATE TABLE datasources (
    id             TEXT PRIMARY KEY,
    description    TEXT NOT NULL DEFAULT '',
    request_schema TEXT,
    -- The largest timestamp handed out on this datasource: timestamps never decrease.
    last_ts        BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE jobs (
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    datasource_id    TEXT NOT NULL REFERENCES datasources (id),
    job              TEXT NOT NULL,
    client           TEXT NOT NULL,
    status           TEXT NOT NULL,
    request          TEXT NOT NULL,
    response         TEXT,            -- NULL: no response; JSON null is the text 'null'
    error            TEXT,
    progress         DOUBLE PRECISION,
    cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
    version          INTEGER NOT NULL,
    submitted_at     BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    UNIQUE (datasource_id, job)
);

CREATE INDEX jobs_by_datasource ON jobs (datasource_id, id DESC);
CREATE INDEX jobs_by_client ON jobs (datasource_id, client, id DESC);

-- The store-wide append-only log. seq is assigned under the log lock from log_counter, so
-- seq order is commit order and a reader never sees a seq before a smaller one.
CREATE TABLE events (
    seq           BIGINT PRIMARY KEY,
    datasource_id TEXT NOT NULL,
    type          TEXT NOT NULL CHECK (type IN ('request', 'cancel', 'status')),
    job           TEXT NOT NULL,
    client        TEXT NOT NULL,
    ts            BIGINT NOT NULL,
    record        TEXT NOT NULL,      -- the job's status record after the change (wire form)
    data          TEXT                -- the request-stream entry's data; NULL for 'status'
);

CREATE INDEX events_by_datasource ON events (datasource_id, seq);
CREATE INDEX events_stream_by_ts ON events (datasource_id, ts, seq) WHERE type <> 'status';

CREATE TABLE log_counter (
    only_row BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (only_row),
    seq      BIGINT NOT NULL
);

INSERT INTO log_counter (only_row, seq) VALUES (TRUE, 0);
