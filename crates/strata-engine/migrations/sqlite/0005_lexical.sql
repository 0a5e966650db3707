-- The lexical index: BM25 over each chunk's document title and text (FTS5, contentless:
-- the text lives once, in `chunks`). Porter stemming for English prose, Unicode case and
-- diacritic folding. Kept in step with `chunks` and document titles by triggers, so every
-- write that changes what a search may match changes it in the same transaction.
CREATE VIRTUAL TABLE chunks_fts USING fts5(
    body,
    content = '',
    contentless_delete = 1,
    tokenize = 'porter unicode61 remove_diacritics 2'
);

CREATE TRIGGER chunks_fts_insert AFTER INSERT ON chunks BEGIN
    INSERT INTO chunks_fts (rowid, body)
        SELECT NEW.id, d.title || char(10) || NEW.text FROM documents d WHERE d.id = NEW.document_id;
END;

CREATE TRIGGER chunks_fts_delete AFTER DELETE ON chunks BEGIN
    DELETE FROM chunks_fts WHERE rowid = OLD.id;
END;

CREATE TRIGGER chunks_fts_title AFTER UPDATE OF title ON documents
WHEN NEW.title IS NOT OLD.title BEGIN
    DELETE FROM chunks_fts WHERE rowid IN (SELECT id FROM chunks WHERE document_id = NEW.id);
    INSERT INTO chunks_fts (rowid, body)
        SELECT id, NEW.title || char(10) || text FROM chunks WHERE document_id = NEW.id;
END;

INSERT INTO chunks_fts (rowid, body)
    SELECT c.id, d.title || char(10) || c.text FROM chunks c JOIN documents d ON d.id = c.document_id;
