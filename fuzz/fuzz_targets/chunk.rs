//! Chunking of any extracted text: every chunk within the token limit, none empty.
#![no_main]
use libfuzzer_sys::fuzz_target;
use strata_engine::chunk::{ChunkConfig, WordTokenizer, chunk};
use strata_engine::extract::{MediaType, extract};

fuzz_target!(|data: &[u8]| {
    let Some((&size, text)) = data.split_first() else {
        return;
    };
    let Ok(doc) = extract(MediaType::Markdown, text) else {
        return;
    };
    let max = 16 + usize::from(size) % 200;
    let cfg = ChunkConfig::new(max, max / 5).expect("a valid configuration");
    for c in chunk(&doc, cfg, &WordTokenizer) {
        assert!(c.token_count as usize <= max && c.token_count > 0);
        assert!(!c.text.is_empty());
    }
});
