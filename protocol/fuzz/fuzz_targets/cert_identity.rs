//! Fuzzes the certificate readers: arbitrary bytes as a DER certificate (the subjectAltName
//! extension and the identity URI inside it, validity, CA flag) and as an identity URI must
//! never panic or over-allocate; whatever parses must round-trip through its URI form, and the
//! chain policy must give an answer for any identities it is handed.
#![no_main]

use cunyun_protocol::cert::{check_chain, parse_cert};
use cunyun_protocol::identity::NodeIdentity;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut seen = Vec::new();
    if let Ok(info) = parse_cert(data) {
        let uri = info.identity.to_uri();
        assert_eq!(NodeIdentity::from_uri(&uri), Ok(info.identity));
        assert!(info.serial.len() <= data.len());
        seen.push(info.identity);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        for line in text.lines().take(3) {
            if let Ok(id) = NodeIdentity::from_uri(line) {
                // Spellings may differ (hex case, full-code scopes); the identity may not.
                assert_eq!(NodeIdentity::from_uri(&id.to_uri()), Ok(id));
                seen.push(id);
            }
        }
    }
    // The policy over whatever identities were found: root, intermediates, leaf.
    if let Some((leaf, rest)) = seen.split_last() {
        if let Some((root, inter)) = rest.split_first() {
            let _ = check_chain(root, inter, leaf);
        }
        let _ = check_chain(leaf, &[], leaf);
    }
});
