-- Original files live in the database when strata runs on PostgreSQL, so every instance
-- serves every file and no instance keeps state of its own. A file is stored in parts of
-- 1 MiB (streamed back part by part), content-addressed like the embedded blob directory.
CREATE TABLE blobs (
    sha256 TEXT NOT NULL,
    part   INTEGER NOT NULL,
    data   BYTEA NOT NULL,
    PRIMARY KEY (sha256, part)
);
