//! The heads digest: one fixed-size value that names a document's exact state.
//!
//! Two replicas of a document hold the same changes exactly when their sets of heads are equal,
//! so a digest of the sorted heads is what the store indexes per key and what set reconciliation
//! compares. It is BLAKE3 over the sorted 32-byte change hashes, domain-separated.

use std::fmt;

use automerge::ChangeHash;
use serde::{Deserialize, Serialize};

/// Size of a heads digest, in bytes.
pub const HEADS_DIGEST_LEN: usize = 16;

/// A digest of a document's heads. Equal digests mean equal heads (up to BLAKE3 collisions).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct HeadsDigest(pub [u8; HEADS_DIGEST_LEN]);

impl HeadsDigest {
    /// The digest of an empty document (no heads).
    pub fn empty() -> HeadsDigest {
        heads_digest(&[])
    }

    /// Lower-case hex form.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Debug for HeadsDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HeadsDigest({})", self.to_hex())
    }
}

/// Digests a set of heads; the order of `heads` does not matter.
pub fn heads_digest(heads: &[ChangeHash]) -> HeadsDigest {
    let mut sorted: Vec<&ChangeHash> = heads.iter().collect();
    sorted.sort();
    sorted.dedup();
    let mut h = blake3::Hasher::new_derive_key("cunyun heads digest v1");
    for head in sorted {
        h.update(&head.0);
    }
    let mut out = [0u8; HEADS_DIGEST_LEN];
    out.copy_from_slice(&h.finalize().as_bytes()[..HEADS_DIGEST_LEN]);
    HeadsDigest(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_independent_and_distinct() {
        let a = ChangeHash([1; 32]);
        let b = ChangeHash([2; 32]);
        assert_eq!(heads_digest(&[a, b]), heads_digest(&[b, a]));
        assert_ne!(heads_digest(&[a]), heads_digest(&[b]));
        assert_ne!(heads_digest(&[a]), HeadsDigest::empty());
    }
}
