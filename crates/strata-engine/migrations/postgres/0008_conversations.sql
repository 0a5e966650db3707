-- Conversations: the same tables and meanings as SQLite's (0010_conversations.sql).
CREATE TABLE conversations (
    owner         TEXT NOT NULL,
    id            TEXT NOT NULL,
    title         TEXT NOT NULL,
    model         TEXT,
    system        TEXT,
    metadata      TEXT NOT NULL DEFAULT '{}',
    message_count BIGINT NOT NULL DEFAULT 0,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    PRIMARY KEY (owner, id)
);
CREATE TABLE conversation_messages (
    owner           TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    seq             BIGINT NOT NULL,
    role            TEXT NOT NULL,
    content         TEXT NOT NULL,
    citations       TEXT NOT NULL DEFAULT '[]',
    model           TEXT,
    created_at      BIGINT NOT NULL,
    PRIMARY KEY (owner, conversation_id, seq)
);
