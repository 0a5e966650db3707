-- Document summaries, written by the summarise_document job kind; deleted with their document.
CREATE TABLE document_summaries (
    owner       TEXT NOT NULL,
    document_id TEXT NOT NULL,
    model       TEXT NOT NULL,
    summary     TEXT NOT NULL,
    parts       INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (owner, document_id)
);
