-- The job queue becomes generic: a job is a kind, an owner, an optional subject (an opaque
-- key by which the aggregate it works on cancels it) and a JSON payload. The queue's table
-- no longer names documents: ingestion jobs carry their document in the payload and
-- `document:{id}` as their subject. Queued, running and finished jobs are carried over as
-- they are (leases included), so an upgrade in the middle of an ingestion resumes it.
ALTER TABLE jobs ADD COLUMN subject TEXT;
ALTER TABLE jobs ADD COLUMN payload TEXT NOT NULL DEFAULT '{}';
UPDATE jobs SET subject = 'document:' || document_id,
                payload = json_build_object('document_id', document_id)::text;
DROP INDEX jobs_document;
ALTER TABLE jobs DROP COLUMN document_id;
CREATE INDEX jobs_subject ON jobs (subject);
