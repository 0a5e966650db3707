-- Memories: the same table and meanings as SQLite's (0007_memories.sql), with pgvector
-- holding the embeddings.
CREATE TABLE memories (
    num              BIGSERIAL UNIQUE,
    id               TEXT PRIMARY KEY NOT NULL,
    owner            TEXT NOT NULL,
    text             TEXT NOT NULL,
    importance       DOUBLE PRECISION NOT NULL,
    metadata         TEXT NOT NULL DEFAULT '{}',
    session          TEXT,
    key              TEXT,
    occurred_at      BIGINT,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    superseded_by    TEXT,
    access_count     BIGINT NOT NULL DEFAULT 0,
    last_accessed_at BIGINT,
    model            TEXT NOT NULL,
    embedding        vector NOT NULL
);
CREATE INDEX memories_owner_id ON memories (owner, id);
CREATE UNIQUE INDEX memories_owner_key ON memories (owner, key)
    WHERE key IS NOT NULL AND superseded_by IS NULL;
CREATE INDEX memories_owner_session ON memories (owner, session, id) WHERE session IS NOT NULL;
CREATE INDEX memories_superseded_by ON memories (superseded_by) WHERE superseded_by IS NOT NULL;

-- A memory's earlier states, written when it changes in place (a merged near-duplicate, a
-- patch): the state before the change and why it changed. Deleted with the memory.
CREATE TABLE memory_versions (
    memory_id   TEXT NOT NULL,
    owner       TEXT NOT NULL,
    replaced_at BIGINT NOT NULL,
    reason      TEXT NOT NULL,
    text        TEXT NOT NULL,
    importance  DOUBLE PRECISION NOT NULL,
    metadata    TEXT NOT NULL
);
CREATE INDEX memory_versions_memory ON memory_versions (memory_id, replaced_at);
