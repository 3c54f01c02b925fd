-- Schema 11: jobs_claimable holds only the jobs of lease datasources. A submit on a stream
-- datasource, whose jobs no worker claims, wrote an entry into it all the same (one of a
-- submit's ten index entries).
--
-- leased is 1 on the rows of a lease datasource's jobs, NULL on the others; re-declaring a
-- datasource with the other dispatch sets it on the datasource's rows.
ALTER TABLE jobs ADD COLUMN leased INTEGER;
UPDATE jobs SET leased = 1
    WHERE EXISTS (SELECT 1 FROM datasources d
                  WHERE d.id = jobs.datasource_id
                    AND CAST(d.settings AS TEXT) ->> '$.dispatch' = 'lease');
DROP INDEX jobs_claimable;
CREATE INDEX jobs_claimable ON jobs (datasource_id, id)
    WHERE leased = 1 AND (status = 'submitted' OR status = 'retrying') AND lease_id IS NULL;
