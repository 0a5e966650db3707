// Shared by the extraction targets: a successful extraction has blocks, each non-empty,
// trimmed, without control characters or U+FFFF; a text format fails only for lack of text.
fn check(media: MediaType, data: &[u8]) {
    match extract(media, data) {
        Ok(x) => {
            assert!(!x.blocks.is_empty());
            for b in &x.blocks {
                assert!(!b.text.is_empty());
                assert_eq!(b.text.trim(), b.text);
                assert!(
                    !b.text
                        .chars()
                        .any(|c| (c.is_control() && !c.is_whitespace()) || c == '\u{FFFF}'),
                    "{:?}",
                    b.text
                );
            }
        }
        Err(
            strata_engine::extract::ExtractError::NoText
            | strata_engine::extract::ExtractError::Unreadable(_),
        ) => {}
        Err(e) if media == MediaType::Pdf => drop(e),
        Err(e) => panic!("{media:?}: {e}"),
    }
}
