-- Schema 8: status reads serve the stored record text as it is, so every stored record must
-- carry the fields the current version always sends. Records written before schema 7 lack
-- "revision" and "desired_state": they get their defaults (SQLite keeps the rest of the text).
UPDATE jobs
SET record = CAST(json_set(CAST(record AS TEXT), '$.revision', 0, '$.desired_state', 'running')
                  AS BLOB)
WHERE json_type(CAST(record AS TEXT), '$.revision') IS NULL;
