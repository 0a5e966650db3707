-- Chunks get a stable integer id (the key of their vector in the ANN index), the sha256 of
-- their text (so identical text is embedded once per model), and their embedding.
CREATE TABLE chunks_v2 (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    document_id TEXT NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    ordinal     INTEGER NOT NULL,
    owner       TEXT NOT NULL,
    text        TEXT NOT NULL,
    token_count INTEGER NOT NULL,
    text_sha256 TEXT NOT NULL DEFAULT '',
    model       TEXT,
    embedding   BLOB,
    UNIQUE (document_id, ordinal)
);
INSERT INTO chunks_v2 (document_id, ordinal, owner, text, token_count)
    SELECT document_id, ordinal, owner, text, token_count FROM chunks ORDER BY document_id, ordinal;
DROP TABLE chunks;
ALTER TABLE chunks_v2 RENAME TO chunks;
CREATE INDEX chunks_text_model ON chunks (text_sha256, model) WHERE embedding IS NOT NULL;
CREATE INDEX chunks_owner_model ON chunks (owner, model) WHERE embedding IS NOT NULL;
-- Documents whose chunks predate embeddings are ingested again.
UPDATE jobs SET status = 'queued', attempts = 0, run_after = 0, finished_at = NULL
    WHERE status = 'succeeded' AND document_id IN (SELECT id FROM documents WHERE chunk_count > 0);
UPDATE documents SET status = 'queued' WHERE status = 'ready' AND chunk_count > 0;
