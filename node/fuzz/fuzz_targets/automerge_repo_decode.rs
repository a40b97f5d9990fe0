//! Fuzzes the automerge-repo message decoder: arbitrary bytes must never panic or
//! over-allocate, and whatever decodes must re-encode to bytes that decode to the same message.
#![no_main]

use cunyun_node::automerge_repo::wire::{decode, encode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = decode(data) {
        let again = encode(&message).expect("a decoded message re-encodes");
        assert_eq!(decode(&again).expect("re-encoded bytes decode"), message);
    }
});
