-- The lexical index moved into the process (`bm25.rs`): an inverted index built from the
-- stored chunks at start and kept current after each write, which prunes to the caller's
-- tenant and scores only the query words' postings. FTS5 scored every match of any query
-- word (17 ms at the 95th percentile at 100k chunks; BENCHMARKS.md), and keeping it beside
-- the new index would cost every write for nothing.
DROP TRIGGER IF EXISTS chunks_fts_embedded;
DROP TRIGGER IF EXISTS chunks_fts_delete;
DROP TRIGGER IF EXISTS chunks_fts_title;
DROP TABLE IF EXISTS chunks_fts;
