//! Bearer credentials of arbitrary bytes: refused without a panic (none is signed with the
//! secret, so none may be accepted).
#![no_main]
use libfuzzer_sys::fuzz_target;
use strata_server::auth::{AuthSettings, Authenticator, Secret};
use http::{HeaderMap, HeaderValue, header};

fuzz_target!(|data: &[u8]| {
    thread_local! {
        static AUTH: Authenticator = Authenticator::new(&AuthSettings {
            secret: Some(Secret::new("fuzz-secret-fuzz-secret-fuzz-secret")),
            ..AuthSettings::default()
        })
        .expect("an authenticator");
    }
    let mut value = b"Bearer ".to_vec();
    value.extend_from_slice(data);
    let Ok(v) = HeaderValue::from_bytes(&value) else {
        return;
    };
    let mut headers = HeaderMap::new();
    headers.insert(header::AUTHORIZATION, v);
    AUTH.with(|a| assert!(a.resolve(&headers).is_err()));
});
