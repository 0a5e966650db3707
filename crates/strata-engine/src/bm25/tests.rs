//! The BM25 index's unit and property tests.

use super::*;

fn t(s: &str) -> TenantId {
    TenantId::parse(s).unwrap()
}

fn q(text: &str) -> Vec<String> {
    analyze(text).collect()
}

/// BM25 as the module documents it, over texts given as their term lists.
fn bm25(doc: &[String], corpus: &[Vec<String>], terms: &[String]) -> f32 {
    let n = corpus.len() as f64;
    let avgdl = corpus.iter().map(Vec::len).sum::<usize>() as f64 / n;
    terms
        .iter()
        .map(|w| {
            let df = corpus.iter().filter(|d| d.contains(w)).count() as f64;
            let idf = ((n - df + 0.5) / (df + 0.5)).ln().max(1e-6);
            let tf = doc.iter().filter(|x| *x == w).count() as f64;
            idf * tf * 2.2 / (tf + 1.2 * (0.25 + 0.75 * doc.len() as f64 / avgdl))
        })
        .sum::<f64>() as f32
}

#[test]
fn analysis_folds_case_and_diacritics_stems_and_drops_stop_words() {
    assert_eq!(
        q("The Cafés of Zürich, running ... e\u{301}cole"),
        ["cafe", "zurich", "run", "ecol"]
    );
    assert_eq!(q("IL-6 and 東京"), ["il", "6", "東京"]);
    assert!(term(&"x".repeat(65)).is_none());
}

#[test]
fn scores_are_the_formula_and_tenants_are_separate() {
    let texts = [
        "apple banana apple cherry",
        "banana cherry",
        "cherry cherry cherry date elderberry fig grape",
        "zucchini",
    ];
    let index = Bm25Index::new();
    let mut rows: Vec<(u64, TenantId, String)> = texts
        .iter()
        .enumerate()
        .map(|(i, s)| (i as u64 + 1, t("alice"), s.to_string()))
        .collect();
    rows.push((9, t("bob"), "apple banana cherry".into()));
    index.add(&rows).unwrap();
    let corpus: Vec<Vec<String>> = rows.iter().map(|r| q(&r.2)).collect();
    let terms = q("apples and cherries");
    let got = index.search(&t("alice"), &terms, 10, None);
    assert_eq!(got.iter().map(|h| h.0).collect::<Vec<_>>(), [1, 3, 2]);
    for (id, score) in &got {
        let want = bm25(&corpus[*id as usize - 1], &corpus, &terms);
        assert!((score - want).abs() < 1e-4, "{id}: {score} vs {want}");
    }
    assert_eq!(index.search(&t("bob"), &terms, 10, None)[0].0, 9);
    assert!(index.search(&t("carol"), &terms, 10, None).is_empty());
    assert_eq!(index.search(&t("alice"), &terms, 1, None).len(), 1);
    let only: HashSet<u64> = [2, 9].into();
    let gated = index.search(&t("alice"), &terms, 10, Some(&only));
    assert_eq!(gated.iter().map(|h| h.0).collect::<Vec<_>>(), [2]);
}

#[test]
fn removal_and_replacement_leave_exact_statistics_after_compaction() {
    let index = Bm25Index::new();
    let a = t("a");
    index
        .add(&[
            (1, a.clone(), "red fox".into()),
            (2, a.clone(), "red hen".into()),
            (3, a.clone(), "blue jay".into()),
        ])
        .unwrap();
    index.remove(&[1]);
    assert!(!index.contains(1));
    // Replacing an id re-indexes it.
    index.add(&[(2, a.clone(), "green hen".into())]).unwrap();
    assert!(index.search(&a, &q("red"), 10, None).is_empty());
    let fresh = Bm25Index::new();
    fresh
        .add(&[
            (2, a.clone(), "green hen".into()),
            (3, a.clone(), "blue jay".into()),
        ])
        .unwrap();
    assert_eq!(
        index.search(&a, &q("hen jay"), 10, None),
        fresh.search(&a, &q("hen jay"), 10, None)
    );
    assert_eq!(index.stats().postings, fresh.stats().postings);
    // Compaction renumbered the slots: ids still find theirs.
    let only: HashSet<u64> = [3].into();
    let gated = index.search(&a, &q("hen jay"), 10, Some(&only));
    assert_eq!(gated.iter().map(|h| h.0).collect::<Vec<_>>(), [3]);
    index.remove(&[2, 3, 99]);
    assert!(index.is_empty());
    assert_eq!(index.stats().postings, 0);
}

#[test]
fn words_no_text_holds_leave_the_dictionary_and_their_ids_are_reused() {
    let index = Bm25Index::new();
    let (a, b) = (t("a"), t("b"));
    index
        .add(&[(0, b.clone(), "kept words stay".into())])
        .unwrap();
    // 20 live texts, each with a word of its own, replaced 5,000 times over: the
    // dictionary must hold what the live texts hold, not every word ever seen.
    for i in 1..=5_000u64 {
        index
            .add(&[(i, a.clone(), format!("common word{i}"))])
            .unwrap();
        if i > 20 {
            index.remove(&[i - 20]);
        }
    }
    let stats = index.stats();
    assert_eq!(stats.texts, 21);
    assert!(stats.terms <= 21 + 2 + 2 * 64, "{stats:?}");
    let df_len = index.read().df.len();
    assert!(df_len <= 21 + 2 + 2 * 64 + 64, "ids reused: {df_len}");
    // Reused ids never carry an old word's postings or statistics.
    let fresh = Bm25Index::new();
    fresh
        .add(&[(0, b.clone(), "kept words stay".into())])
        .unwrap();
    for i in 4_981..=5_000u64 {
        fresh
            .add(&[(i, a.clone(), format!("common word{i}"))])
            .unwrap();
    }
    // (Scores are compared where no dead posting counts: "common"'s n includes the removed
    // texts until their shard is compacted, as the module says.)
    for query in ["common", "word4990", "word10", "word5000 common"] {
        let got = index.search(&a, &q(query), 10, None);
        let want = fresh.search(&a, &q(query), 10, None);
        let ids = |hits: &[(u64, f32)]| hits.iter().map(|h| h.0).collect::<Vec<_>>();
        assert_eq!(ids(&got), ids(&want), "{query}");
        if !query.contains("common") {
            assert_eq!(got, want, "{query}");
        }
    }
    assert_eq!(
        index.search(&b, &q("kept"), 10, None),
        fresh.search(&b, &q("kept"), 10, None)
    );
}

proptest::proptest! {
    /// Any sequence of adds, replacements and removals finds what an index built from the
    /// survivors finds, with the same scores once the dead postings are compacted away.
    #[test]
    fn changes_match_a_fresh_build(ops in proptest::collection::vec(
        (0u64..24, 0usize..3, proptest::collection::vec(0usize..6, 0..5), proptest::bool::ANY),
        1..60,
    )) {
        const WORDS: [&str; 6] = ["alpha", "beta", "gamma", "delta", "omega", "kappa"];
        let tenants = [t("a"), t("b"), t("c")];
        let index = Bm25Index::new();
        let mut state: HashMap<u64, (TenantId, String)> = HashMap::new();
        for (id, tenant, words, remove) in ops {
            if remove {
                index.remove(&[id]);
                state.remove(&id);
            } else {
                let text: Vec<&str> = words.iter().map(|w| WORDS[*w]).collect();
                let row = (id, tenants[tenant].clone(), text.join(" "));
                index.add(std::slice::from_ref(&row)).unwrap();
                state.insert(id, (row.1, row.2));
            }
        }
        let fresh = Bm25Index::new();
        let rows: Vec<(u64, TenantId, String)> =
            state.iter().map(|(id, (o, x))| (*id, o.clone(), x.clone())).collect();
        fresh.add(&rows).unwrap();
        proptest::prop_assert_eq!(index.len(), fresh.len());
        let compacted = index.stats().postings == fresh.stats().postings;
        for owner in &tenants {
            for query in ["alpha", "beta gamma", "omega kappa delta alpha"] {
                let got = index.search(owner, &q(query), 100, None);
                let want = fresh.search(owner, &q(query), 100, None);
                let mut got_ids: Vec<u64> = got.iter().map(|h| h.0).collect();
                let mut want_ids: Vec<u64> = want.iter().map(|h| h.0).collect();
                got_ids.sort_unstable();
                want_ids.sort_unstable();
                proptest::prop_assert_eq!(got_ids, want_ids);
                if compacted {
                    for ((gi, gs), (wi, ws)) in got.iter().zip(&want) {
                        proptest::prop_assert_eq!(gi, wi);
                        proptest::prop_assert!((gs - ws).abs() < 1e-5);
                    }
                }
            }
        }
    }
}
