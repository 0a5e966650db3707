//! HTML extraction of arbitrary bytes: never panics; what it keeps is clean.
#![no_main]
use libfuzzer_sys::fuzz_target;
use strata_engine::extract::{MediaType, extract};

fuzz_target!(|data: &[u8]| check(MediaType::Html, data));

include!("check.rs");
