//! Any bytes through the request parser and path decoder, as a connection would feed them:
//! requests parsed back to back until the buffer runs out or a parse error ends it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use servers::http::{self, MAX_HEAD};
use servers::io::decode_target;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while !rest.is_empty() {
        match http::parse(rest) {
            Ok(Some(req)) => {
                assert!(req.len > 0 && req.len <= rest.len());
                assert!(req.target.starts_with(b"/"));
                if let Ok(path) = decode_target(req.target) {
                    // Nothing the decoder lets through may climb out of the root.
                    assert!(!path.split(|&b| b == b'/').any(|s| s == b".." || s.is_empty()));
                    assert!(!path.contains(&0));
                }
                rest = &rest[req.len..];
            }
            Ok(None) => {
                // Incomplete input is only ever buffered up to the limits.
                assert!(rest.len() <= MAX_HEAD + 1 + http::MAX_BODY);
                break;
            }
            Err(e) => {
                assert!((400..600).contains(&e.status()));
                break;
            }
        }
    }
});
