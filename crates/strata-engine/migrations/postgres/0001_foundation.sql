-- The PostgreSQL schema: the same tables and meanings as the SQLite one (ids are hyphenated
-- UUIDv7 text, times Unix milliseconds), with pgvector holding the embeddings.

CREATE EXTENSION IF NOT EXISTS vector;

CREATE TABLE documents (
    id          TEXT PRIMARY KEY NOT NULL,
    owner       TEXT NOT NULL,
    title       TEXT NOT NULL,
    filename    TEXT,
    media_type  TEXT NOT NULL,
    byte_size   BIGINT NOT NULL,
    sha256      TEXT NOT NULL,
    metadata    TEXT NOT NULL DEFAULT '{}',
    status      TEXT NOT NULL,
    error       TEXT,
    chunk_count BIGINT NOT NULL DEFAULT 0,
    job_id      TEXT,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
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
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    document_id TEXT NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    ordinal     BIGINT NOT NULL,
    owner       TEXT NOT NULL,
    text        TEXT NOT NULL,
    token_count BIGINT NOT NULL,
    text_sha256 TEXT NOT NULL DEFAULT '',
    model       TEXT,
    embedding   vector,
    UNIQUE (document_id, ordinal)
);
CREATE INDEX chunks_text_model ON chunks (text_sha256, model) WHERE embedding IS NOT NULL;
CREATE INDEX chunks_owner_model ON chunks (owner, model) WHERE embedding IS NOT NULL;

CREATE TABLE jobs (
    id               TEXT PRIMARY KEY NOT NULL,
    owner            TEXT NOT NULL,
    kind             TEXT NOT NULL,
    document_id      TEXT NOT NULL,
    status           TEXT NOT NULL,
    stage            TEXT,
    stages           TEXT NOT NULL DEFAULT '[]',
    attempts         BIGINT NOT NULL DEFAULT 0,
    max_attempts     BIGINT NOT NULL,
    run_after        BIGINT NOT NULL,
    lease_token      TEXT,
    lease_expires_at BIGINT,
    error            TEXT,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    finished_at      BIGINT
);
CREATE INDEX jobs_runnable ON jobs (status, run_after);
CREATE INDEX jobs_owner_id ON jobs (owner, id);
CREATE INDEX jobs_owner_status_id ON jobs (owner, status, id);
CREATE INDEX jobs_document ON jobs (document_id);

CREATE TABLE strata_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
