//! The built-in PDF parser on arbitrary bytes. In the server it runs in a child process whose
//! panics, crashes and runaways fail only their own job; here a panic is caught (pdf-extract
//! panics on malformed files, a known and contained failure), so what the fuzzer reports are
//! the rest: aborts, stack overflows, hangs and memory blow-ups.
#![no_main]
use libfuzzer_sys::fuzz_target;
use strata_engine::extract::{MediaType, extract};

fuzz_target!(|data: &[u8]| {
    let _ = std::panic::catch_unwind(|| check(MediaType::Pdf, data));
});

include!("check.rs");
