//! Cursor decoding of arbitrary text: refused, or read as a cursor this server could issue.
#![no_main]
use libfuzzer_sys::fuzz_target;
use strata_engine::cursor::{decode, encode, fingerprint};

fuzz_target!(|data: &[u8]| {
    let fp = fingerprint(&["documents", "tag"]);
    let text = String::from_utf8_lossy(data);
    if let Ok(id) = decode(&text, &fp) {
        assert_eq!(decode(&encode(&id, &fp), &fp).ok(), Some(id));
    }
});
