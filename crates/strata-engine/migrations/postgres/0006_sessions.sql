-- Sessions: the same tables and meanings as SQLite's (0008_sessions.sql).
CREATE TABLE sessions (
    owner        TEXT NOT NULL,
    id           TEXT NOT NULL,
    metadata     TEXT NOT NULL DEFAULT '{}',
    started_at   BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL,
    requests     BIGINT NOT NULL DEFAULT 0,
    timeout_ms   BIGINT NOT NULL,
    ended_at     BIGINT,
    end_reason   TEXT,
    PRIMARY KEY (owner, id)
);
CREATE INDEX sessions_active ON sessions (last_seen_at) WHERE ended_at IS NULL;

CREATE TABLE session_habits (
    owner    TEXT PRIMARY KEY NOT NULL,
    gaps     BIGINT NOT NULL,
    log_mean DOUBLE PRECISION NOT NULL,
    log_var  DOUBLE PRECISION NOT NULL
);
