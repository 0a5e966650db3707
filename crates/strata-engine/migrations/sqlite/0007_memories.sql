-- Memories: a tenant's facts for agents, each with its embedding. `num` is a memory's
-- integer key in the in-process indexes; `id` its public UUIDv7. A superseded memory keeps its
-- row as history, `superseded_by` naming the memory that replaced it; at most one current
-- memory per owner holds a given `key`. Times are Unix milliseconds.
CREATE TABLE memories (
    num              INTEGER PRIMARY KEY AUTOINCREMENT,
    id               TEXT NOT NULL UNIQUE,
    owner            TEXT NOT NULL,
    text             TEXT NOT NULL,
    importance       REAL NOT NULL,
    metadata         TEXT NOT NULL DEFAULT '{}',
    session          TEXT,
    key              TEXT,
    occurred_at      INTEGER,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    superseded_by    TEXT,
    access_count     INTEGER NOT NULL DEFAULT 0,
    last_accessed_at INTEGER,
    model            TEXT NOT NULL,
    embedding        BLOB NOT NULL
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
    replaced_at INTEGER NOT NULL,
    reason      TEXT NOT NULL,
    text        TEXT NOT NULL,
    importance  REAL NOT NULL,
    metadata    TEXT NOT NULL
);
CREATE INDEX memory_versions_memory ON memory_versions (memory_id, replaced_at);
