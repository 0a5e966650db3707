-- Document summaries: the same table and meaning as SQLite's (0011_summaries.sql).
CREATE TABLE document_summaries (
    owner       TEXT NOT NULL,
    document_id TEXT NOT NULL,
    model       TEXT NOT NULL,
    summary     TEXT NOT NULL,
    parts       BIGINT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (owner, document_id)
);
