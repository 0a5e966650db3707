-- Conversations: a tenant's chat threads and their messages (citations as JSON text).
-- Times are Unix milliseconds.
CREATE TABLE conversations (
    owner         TEXT NOT NULL,
    id            TEXT NOT NULL,
    title         TEXT NOT NULL,
    model         TEXT,
    system        TEXT,
    metadata      TEXT NOT NULL DEFAULT '{}',
    message_count INTEGER NOT NULL DEFAULT 0,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    PRIMARY KEY (owner, id)
);
CREATE TABLE conversation_messages (
    owner           TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    seq             INTEGER NOT NULL,
    role            TEXT NOT NULL,
    content         TEXT NOT NULL,
    citations       TEXT NOT NULL DEFAULT '[]',
    model           TEXT,
    created_at      INTEGER NOT NULL,
    PRIMARY KEY (owner, conversation_id, seq)
);
