-- Schema 10: each revision's request text is stored once, in the data of the log entry that
-- brought it (the job's 'request' entry, or the 'update' entry of a later revision), where it
-- is the last member. The job's row and every other event of the job point at that entry
-- (request_seq; the entry points at itself) and keep their record without the request; reads
-- put it back. Before, a submit stored the request three times (the job's record, the entry's
-- data, the entry's record) and every status event once more.
--
-- Rows written before this schema are not rewritten: a job row or an event whose request_seq
-- is NULL holds the whole record and is read as before. Such a job's later events keep that
-- form until an update gives it a new revision.
ALTER TABLE events ADD COLUMN request_seq INTEGER;
ALTER TABLE jobs ADD COLUMN request_seq INTEGER;
