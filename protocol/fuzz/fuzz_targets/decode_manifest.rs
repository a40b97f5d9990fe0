//! Fuzzes the content manifest decoder: arbitrary bytes must never panic or over-allocate, and
//! whatever decodes must re-encode to exactly the bytes it came from (one encoding per manifest).
#![no_main]

use cunyun_protocol::manifest::{ContentManifest, TrustedKeys};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = ContentManifest::decode(data) {
        assert_eq!(m.encode().as_slice(), data, "canonical encoding");
        // No key is trusted, so nothing may verify.
        assert!(m.verify(&TrustedKeys::new()).is_err());
    }
});
