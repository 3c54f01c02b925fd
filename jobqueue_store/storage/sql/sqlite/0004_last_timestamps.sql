-- Schema 4: each datasource's last timestamp, saved by a purge before it deletes events, so that
-- a restart after the newest events were purged still never hands out a smaller timestamp.
CREATE TABLE last_timestamps (
    datasource_id TEXT PRIMARY KEY,
    timestamp     INTEGER NOT NULL
) WITHOUT ROWID;
