-- Documents, their tags and chunks, and the durable job queue.
-- Ids are hyphenated UUIDv7 text: lexical order is creation order.
-- Times are Unix milliseconds (INTEGER).

CREATE TABLE documents (
    id          TEXT PRIMARY KEY NOT NULL,
    owner       TEXT NOT NULL,
    title       TEXT NOT NULL,
    filename    TEXT,
    media_type  TEXT NOT NULL,
    byte_size   INTEGER NOT NULL,
    sha256      TEXT NOT NULL,
    metadata    TEXT NOT NULL DEFAULT '{}',
    status      TEXT NOT NULL,
    error       TEXT,
    chunk_count INTEGER NOT NULL DEFAULT 0,
    job_id      TEXT,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
CREATE UNIQUE INDEX documents_owner_sha256 ON documents (owner, sha256);
CREATE INDEX documents_owner_id ON documents (owner, id);
CREATE INDEX documents_owner_status_id ON documents (owner, status, id);
CREATE INDEX documents_sha256 ON documents (sha256);

CREATE TABLE document_tags (
    document_id TEXT NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    owner       TEXT NOT NULL,
    tag         TEXT NOT NULL,
    PRIMARY KEY (document_id, tag)
);
CREATE INDEX document_tags_owner_tag ON document_tags (owner, tag, document_id);

CREATE TABLE chunks (
    document_id TEXT NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    ordinal     INTEGER NOT NULL,
    owner       TEXT NOT NULL,
    text        TEXT NOT NULL,
    token_count INTEGER NOT NULL,
    PRIMARY KEY (document_id, ordinal)
);

CREATE TABLE jobs (
    id               TEXT PRIMARY KEY NOT NULL,
    owner            TEXT NOT NULL,
    kind             TEXT NOT NULL,
    document_id      TEXT NOT NULL,
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
CREATE INDEX jobs_runnable ON jobs (status, run_after);
CREATE INDEX jobs_owner_id ON jobs (owner, id);
CREATE INDEX jobs_owner_status_id ON jobs (owner, status, id);
CREATE INDEX jobs_document ON jobs (document_id);
