-- The lexical index: each chunk's document title and text as a tsvector (English
-- Snowball stemming and stop words, accents folded by unaccent) under a GIN index, with its
-- token count and the corpus totals BM25 needs (chunk count and total tokens, kept in 16
-- shards by document so concurrent ingestions rarely touch the same row). Triggers keep
-- all of it in step with chunks and document titles, in the writing transaction.
CREATE EXTENSION IF NOT EXISTS unaccent;

CREATE TEXT SEARCH CONFIGURATION strata_english (COPY = english);
ALTER TEXT SEARCH CONFIGURATION strata_english
    ALTER MAPPING FOR hword, hword_part, word WITH unaccent, english_stem;

CREATE FUNCTION strata_lexemes(title TEXT, body TEXT) RETURNS tsvector
    LANGUAGE sql STABLE AS
$$ SELECT to_tsvector('strata_english'::regconfig, title || E'\n' || body) $$;

-- Tokens kept (positions), the BM25 document length.
CREATE FUNCTION strata_token_count(v tsvector) RETURNS INTEGER
    LANGUAGE sql IMMUTABLE AS
$$ SELECT COALESCE(sum(array_length(positions, 1)), 0)::INTEGER FROM unnest(v) $$;

ALTER TABLE chunks ADD COLUMN lexemes tsvector;
ALTER TABLE chunks ADD COLUMN lexeme_count INTEGER NOT NULL DEFAULT 0;
UPDATE chunks c SET lexemes = strata_lexemes(d.title, c.text)
    FROM documents d WHERE d.id = c.document_id;
UPDATE chunks SET lexeme_count = strata_token_count(lexemes);
CREATE INDEX chunks_lexemes ON chunks USING gin (lexemes);

CREATE TABLE lexical_stats (
    shard  SMALLINT PRIMARY KEY,
    chunks BIGINT NOT NULL DEFAULT 0,
    tokens BIGINT NOT NULL DEFAULT 0
);
INSERT INTO lexical_stats (shard) SELECT generate_series(0, 15);
UPDATE lexical_stats s SET chunks = t.chunks, tokens = t.tokens
    FROM (SELECT hashtext(document_id) & 15 AS shard, count(*) AS chunks,
                 sum(lexeme_count) AS tokens
          FROM chunks GROUP BY 1) t
    WHERE s.shard = t.shard;

CREATE FUNCTION strata_chunk_lexemes() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.lexemes := strata_lexemes(
        (SELECT title FROM documents WHERE id = NEW.document_id), NEW.text);
    NEW.lexeme_count := strata_token_count(NEW.lexemes);
    RETURN NEW;
END $$;
CREATE TRIGGER chunks_lexemes BEFORE INSERT ON chunks
    FOR EACH ROW EXECUTE FUNCTION strata_chunk_lexemes();

CREATE FUNCTION strata_lexical_stats() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        UPDATE lexical_stats SET chunks = chunks + 1, tokens = tokens + NEW.lexeme_count
            WHERE shard = hashtext(NEW.document_id) & 15;
    ELSIF TG_OP = 'DELETE' THEN
        UPDATE lexical_stats SET chunks = chunks - 1, tokens = tokens - OLD.lexeme_count
            WHERE shard = hashtext(OLD.document_id) & 15;
    ELSIF NEW.lexeme_count IS DISTINCT FROM OLD.lexeme_count THEN
        UPDATE lexical_stats SET tokens = tokens + NEW.lexeme_count - OLD.lexeme_count
            WHERE shard = hashtext(NEW.document_id) & 15;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER chunks_lexical_stats AFTER INSERT OR DELETE OR UPDATE OF lexeme_count ON chunks
    FOR EACH ROW EXECUTE FUNCTION strata_lexical_stats();

CREATE FUNCTION strata_title_lexemes() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE chunks SET lexemes = strata_lexemes(NEW.title, text),
                      lexeme_count = strata_token_count(strata_lexemes(NEW.title, text))
        WHERE document_id = NEW.id;
    RETURN NULL;
END $$;
CREATE TRIGGER documents_title_lexemes AFTER UPDATE OF title ON documents
    FOR EACH ROW WHEN (OLD.title IS DISTINCT FROM NEW.title)
    EXECUTE FUNCTION strata_title_lexemes();
