-- The lexical index: BM25 over each embedded chunk's document title and text (FTS5,
-- contentless: the text lives once, in `chunks`). Porter stemming for English prose, Unicode
-- case and diacritic folding. `scope` holds one token naming the chunk's owner and model
-- ('s' || hex(owner) || 'x' || hex(model)), so a search matches `scope : <token> AND body :
-- (words)` and FTS5 scores only the tenant's chunks, inside the index; `rank` weighs `scope`
-- 0, so the score is BM25 over the body. A chunk enters when its embedding is stored (what
-- semantic search can see, lexical search can see) and leaves when it is deleted; a title
-- change re-indexes the document's chunks. All of it happens in the writing transaction.
CREATE VIRTUAL TABLE chunks_fts USING fts5(
    scope,
    body,
    content = '',
    contentless_delete = 1,
    tokenize = 'porter unicode61 remove_diacritics 2'
);
INSERT INTO chunks_fts (chunks_fts, rank) VALUES ('rank', 'bm25(0.0, 1.0)');

CREATE TRIGGER chunks_fts_embedded AFTER UPDATE OF embedding, model ON chunks BEGIN
    DELETE FROM chunks_fts WHERE rowid = OLD.id AND OLD.embedding IS NOT NULL;
    INSERT INTO chunks_fts (rowid, scope, body)
        SELECT NEW.id, 's' || hex(NEW.owner) || 'x' || hex(NEW.model), d.title || char(10) || NEW.text
        FROM documents d
        WHERE d.id = NEW.document_id AND NEW.embedding IS NOT NULL AND NEW.model IS NOT NULL;
END;

CREATE TRIGGER chunks_fts_delete AFTER DELETE ON chunks WHEN OLD.embedding IS NOT NULL BEGIN
    DELETE FROM chunks_fts WHERE rowid = OLD.id;
END;

CREATE TRIGGER chunks_fts_title AFTER UPDATE OF title ON documents
WHEN NEW.title IS NOT OLD.title BEGIN
    DELETE FROM chunks_fts
        WHERE rowid IN (SELECT id FROM chunks WHERE document_id = NEW.id AND embedding IS NOT NULL);
    INSERT INTO chunks_fts (rowid, scope, body)
        SELECT id, 's' || hex(owner) || 'x' || hex(model), NEW.title || char(10) || text
        FROM chunks WHERE document_id = NEW.id AND embedding IS NOT NULL AND model IS NOT NULL;
END;

INSERT INTO chunks_fts (rowid, scope, body)
    SELECT c.id, 's' || hex(c.owner) || 'x' || hex(c.model), d.title || char(10) || c.text
    FROM chunks c JOIN documents d ON d.id = c.document_id
    WHERE c.embedding IS NOT NULL AND c.model IS NOT NULL;
