-- Schema 3: a client's unfinished jobs per datasource, for the max-unfinished-jobs quota. Partial,
-- so finished jobs (the bulk of the table) cost nothing; queries must repeat the status list.
CREATE INDEX jobs_unfinished ON jobs (datasource_id, client)
    WHERE status IN ('submitted', 'accepted', 'retrying');
