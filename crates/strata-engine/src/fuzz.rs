//! Property-based fuzzing of the engine's parsers of untrusted input: text, Markdown and HTML
//! extraction, chunking, cursor decoding and the search cache key. Inputs are generated at
//! random and by mutating valid seeds (bytes flipped, inserted, deleted, repeated, cut), so
//! the cases stay close to the shapes the parsers branch on.
//!
//! Each property runs proptest's default 256 cases in CI; run longer by hand with
//! `PROPTEST_CASES=100000 cargo nextest run -p strata-engine -E 'test(fuzz::)'`. A failure
//! is shrunk and saved under `proptest-regressions/`, which is committed, so it is replayed
//! first on every later run.
//!
//! The same parsers have coverage-guided targets (libFuzzer through cargo-fuzz, `fuzz/`,
//! run by hand with `scripts/fuzz-coverage`): their first build compiles the dependency tree
//! again with instrumentation (about 15 minutes on two cores), which CI does not pay on every
//! run; these properties are what CI runs.

use proptest::prelude::*;

use crate::chunk::{ChunkConfig, WordTokenizer, chunk};
use crate::extract::{ExtractError, Extracted, MediaType, extract};

/// One edit of a seed.
#[derive(Debug, Clone)]
enum Edit {
    Flip(usize, u8),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    Repeat(usize, usize, u8),
    Cut(usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Flip(i, b)),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(i, b)| Edit::Insert(i, b)),
        (any::<usize>(), 1usize..64).prop_map(|(i, n)| Edit::Delete(i, n)),
        (any::<usize>(), 1usize..32, 1u8..64).prop_map(|(i, n, k)| Edit::Repeat(i, n, k)),
        any::<usize>().prop_map(Edit::Cut),
    ]
}

/// `seed` with up to eight edits applied.
pub(crate) fn mutated(seed: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(edit(), 0..8).prop_map(move |edits| {
        let mut b = seed.clone();
        for e in edits {
            let at = |i: usize, len: usize| if len == 0 { 0 } else { i % len };
            match e {
                Edit::Flip(i, v) if !b.is_empty() => {
                    let i = at(i, b.len());
                    b[i] ^= v;
                }
                Edit::Insert(i, bytes) => {
                    let i = at(i, b.len() + 1);
                    b.splice(i..i, bytes);
                }
                Edit::Delete(i, n) if !b.is_empty() => {
                    let i = at(i, b.len());
                    let end = (i + n).min(b.len());
                    b.drain(i..end);
                }
                Edit::Repeat(i, n, k) if !b.is_empty() => {
                    let i = at(i, b.len());
                    let end = (i + n).min(b.len());
                    let piece = b[i..end].repeat(usize::from(k));
                    b.splice(end..end, piece);
                }
                Edit::Cut(i) => {
                    let i = at(i, b.len() + 1);
                    b.truncate(i);
                }
                _ => {}
            }
        }
        b
    })
}

const HTML_SEED: &str = "<!DOCTYPE html><html><head><title>T</title><style>p{color:red}</style>\
    <script>var x = '<p>';</script></head><body><h1>Heading</h1><p>First <b>bold</b> and \
    <a href=\"#\">link</a>.</p><div hidden>secret</div><table><tr><td>a</td><td>b</td></tr>\
    </table><ul><li>one<li>two</ul><p style=\"display:none\">gone</p><pre>  code\n  here</pre>\
    <svg><text>no</text></svg>&amp;&lt;&#x1F600;</body></html>";

const MARKDOWN_SEED: &str = "# Title\n\nSome *emphasis* and `code`.\n\n## Section\n\n> quoted\n> text\n\n\
    - item one\n- item [link](http://x)\n\n```rust\nfn main() {}\n```\n\n<div>raw html</div>\n\n\
    | a | b |\n|---|---|\n| 1 | 2 |\n\nLast paragraph.\n";

const TEXT_SEED: &str = "First paragraph\nspans two lines.\n\n\nSecond\u{00A0}one with \u{FEFF}odd \
    spaces\tand tabs.\r\n\r\nThird: \u{FFFD}\u{FFFF}\u{E000} end.\n";

/// What every successful extraction must look like, whatever the input.
fn well_formed(x: &Extracted) -> Result<(), TestCaseError> {
    prop_assert!(!x.blocks.is_empty());
    for b in &x.blocks {
        prop_assert!(!b.text.is_empty());
        prop_assert_eq!(b.text.trim(), b.text.as_str());
        prop_assert!(
            !b.text
                .chars()
                .any(|c| (c.is_control() && !c.is_whitespace()) || c == '\u{FFFF}'),
            "control characters or noncharacters kept: {:?}",
            b.text
        );
    }
    Ok(())
}

fn check(media: MediaType, bytes: &[u8]) -> Result<(), TestCaseError> {
    match extract(media, bytes) {
        Ok(x) => well_formed(&x),
        // Text formats never fail for any other reason.
        Err(ExtractError::NoText | ExtractError::Unreadable(_)) => Ok(()),
        Err(e) => Err(TestCaseError::fail(format!("{media:?}: {e}"))),
    }
}

proptest! {
    #[test]
    fn html_extraction_of_mutated_pages(bytes in mutated(HTML_SEED.as_bytes().to_vec())) {
        check(MediaType::Html, &bytes)?;
    }

    #[test]
    fn html_extraction_of_arbitrary_text(s in "(<[a-z/!]{0,6}[^<>]{0,12}>?|[^<]{0,20}){0,40}") {
        check(MediaType::Html, s.as_bytes())?;
    }

    #[test]
    fn markdown_extraction_of_mutated_documents(
        bytes in mutated(MARKDOWN_SEED.as_bytes().to_vec())
    ) {
        check(MediaType::Markdown, &bytes)?;
    }

    #[test]
    fn markdown_extraction_of_arbitrary_text(s in "([#>*`_\\-\\[\\]()|!<]{0,3}[^\\n]{0,20}\\n{0,2}){0,40}") {
        check(MediaType::Markdown, s.as_bytes())?;
    }

    #[test]
    fn text_extraction_of_mutated_and_arbitrary_bytes(
        bytes in prop_oneof![
            mutated(TEXT_SEED.as_bytes().to_vec()),
            prop::collection::vec(any::<u8>(), 0..512),
        ]
    ) {
        check(MediaType::Text, &bytes)?;
    }

    #[test]
    fn chunking_any_extracted_unicode_stays_within_limits(
        blocks in prop::collection::vec((".{0,120}", any::<bool>()), 0..20),
        max in 16usize..64,
    ) {
        let mut x = Extracted::default();
        for (t, h) in &blocks {
            x.push(t, *h);
        }
        let cfg = ChunkConfig::new(max, max / 4).expect("valid chunk config");
        for c in chunk(&x, cfg, &WordTokenizer) {
            prop_assert!(c.token_count as usize <= max);
            prop_assert!(c.token_count > 0);
            prop_assert!(!c.text.is_empty());
        }
    }

    #[test]
    fn mutated_cursors_are_refused_or_read_as_a_cursor_this_server_issues(
        (id, cursor) in "[0-9a-f]{8}-[0-9a-f]{4}".prop_flat_map(|id| {
            let valid = crate::cursor::encode(&id, &crate::cursor::fingerprint(&["tags", "a"]));
            (Just(id), mutated(valid.into_bytes()))
        })
    ) {
        let fp = crate::cursor::fingerprint(&["tags", "a"]);
        let cursor = String::from_utf8_lossy(&cursor).into_owned();
        // Cursors are positions, not credentials (every page query is scoped to its
        // owner): a mutated one may name another position, but only as a well-formed cursor.
        let _ = id;
        if let Ok(decoded) = crate::cursor::decode(&cursor, &fp) {
            let again = crate::cursor::encode(&decoded, &fp);
            prop_assert_eq!(crate::cursor::decode(&again, &fp).ok(), Some(decoded));
        }
    }

    #[test]
    fn equivalent_searches_share_a_cache_key_and_different_ones_never_do(
        query in "[a-z]{1,12}( [a-z]{1,12}){0,3}",
        pad in "[ \t\n]{0,3}",
        tags in prop::collection::vec("[a-z]{1,6}", 0..5),
        k in 1usize..100,
        seed in any::<u64>(),
    ) {
        use crate::search::SearchRequest;
        let req = |query: String, tags: Vec<String>, k: usize| -> SearchRequest {
            serde_json::from_value(serde_json::json!({
                "query": query, "k": k, "filter": { "tags": tags },
            }))
            .expect("a valid search request")
        };
        let mut shuffled = tags.clone();
        let n = shuffled.len().max(1);
        shuffled.rotate_left((seed as usize) % n);
        shuffled.extend(tags.first().cloned());
        let a = crate::policy::search_material(&req(query.clone(), tags.clone(), k), "e");
        let b = crate::policy::search_material(
            &req(format!("{pad}{query}{pad}"), shuffled, k),
            "e",
        );
        prop_assert_eq!(&a, &b, "the same search, written differently");
        let other_k = if k == 1 { 2 } else { k - 1 };
        let c = crate::policy::search_material(&req(query.clone(), tags.clone(), other_k), "e");
        prop_assert_ne!(&a, &c, "another k");
        let d = crate::policy::search_material(&req(format!("{query}x"), tags, k), "e");
        prop_assert_ne!(&a, &d, "another query");
    }
}
