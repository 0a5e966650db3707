-- Sessions: a tenant's visits, each ended by the caller or by an idle timeout learned from
-- the tenant's pace (`session_habits`: the weighted mean and variance of ln(gap seconds)).
-- Times are Unix milliseconds.
CREATE TABLE sessions (
    owner        TEXT NOT NULL,
    id           TEXT NOT NULL,
    metadata     TEXT NOT NULL DEFAULT '{}',
    started_at   INTEGER NOT NULL,
    last_seen_at INTEGER NOT NULL,
    requests     INTEGER NOT NULL DEFAULT 0,
    timeout_ms   INTEGER NOT NULL,
    ended_at     INTEGER,
    end_reason   TEXT,
    PRIMARY KEY (owner, id)
);
-- The sweep reads active sessions only.
CREATE INDEX sessions_active ON sessions (last_seen_at) WHERE ended_at IS NULL;

CREATE TABLE session_habits (
    owner    TEXT PRIMARY KEY NOT NULL,
    gaps     INTEGER NOT NULL,
    log_mean REAL NOT NULL,
    log_var  REAL NOT NULL
);
