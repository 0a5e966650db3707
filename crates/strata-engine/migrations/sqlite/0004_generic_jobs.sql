-- The job queue becomes generic: a job is a kind, an owner, an optional subject (an opaque
-- key by which the aggregate it works on cancels it) and a JSON payload. The queue's table
-- no longer names documents: ingestion jobs carry their document in the payload and
-- `document:{id}` as their subject. Queued, running and finished jobs are carried over as
-- they are (leases included), so an upgrade in the middle of an ingestion resumes it.
CREATE TABLE jobs_v2 (
    id               TEXT PRIMARY KEY NOT NULL,
    owner            TEXT NOT NULL,
    kind             TEXT NOT NULL,
    subject          TEXT,
    payload          TEXT NOT NULL DEFAULT '{}',
    status           TEXT NOT NULL,
    stage            TEXT,
    stages           TEXT NOT NULL DEFAULT '[]',
    attempts         INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL,
    run_after        INTEGER NOT NULL,
    lease_token      TEXT,
    lease_expires_at INTEGER,
    error            TEXT,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    finished_at      INTEGER
);
INSERT INTO jobs_v2 (id, owner, kind, subject, payload, status, stage, stages, attempts,
                     max_attempts, run_after, lease_token, lease_expires_at, error, created_at,
                     updated_at, finished_at)
    SELECT id, owner, kind, 'document:' || document_id, json_object('document_id', document_id),
           status, stage, stages, attempts, max_attempts, run_after, lease_token,
           lease_expires_at, error, created_at, updated_at, finished_at
    FROM jobs;
DROP TABLE jobs;
ALTER TABLE jobs_v2 RENAME TO jobs;
CREATE INDEX jobs_runnable ON jobs (status, run_after);
CREATE INDEX jobs_owner_id ON jobs (owner, id);
CREATE INDEX jobs_owner_status_id ON jobs (owner, status, id);
CREATE INDEX jobs_subject ON jobs (subject);
