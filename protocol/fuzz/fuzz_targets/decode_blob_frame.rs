//! Fuzzes the blob transfer frame decoder: arbitrary bytes must never panic or over-allocate,
//! and whatever decodes must re-encode to exactly the bytes it came from.
#![no_main]

use cunyun_protocol::blob::wire::{decode, encode, BlobWireError};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while !rest.is_empty() {
        match decode(rest) {
            Ok((frame, used)) => {
                assert!(used > 0 && used <= rest.len());
                let again = encode(&frame).expect("a decoded frame re-encodes");
                assert_eq!(again.as_slice(), &rest[..used], "canonical encoding");
                rest = &rest[used..];
            }
            Err(BlobWireError::Incomplete { needed }) => {
                assert!(needed > rest.len());
                break;
            }
            Err(_) => break,
        }
    }
});
