-- Schema 7: each revision's request text is stored once, in the data of the log entry that
-- brought it (the 'request' entry for revision 0, an 'update' entry for a later one), where it is
-- the last member. Every event of the job written since then points at the entry that holds the
-- request of its record's revision (request_seq; the entry points at itself), and keeps its
-- record without "request"; the job row points at its current revision's entry the same way
-- (request NULL, request_seq set).
-- No data migration: rows written before keep their old form (request_seq NULL: the job row's
-- request in jobs.request, full records in its events) and are read as before; such a job's
-- events keep that form until it gets a new revision.
ALTER TABLE events ADD COLUMN request_seq BIGINT;
ALTER TABLE jobs ALTER COLUMN request DROP NOT NULL, ADD COLUMN request_seq BIGINT;
