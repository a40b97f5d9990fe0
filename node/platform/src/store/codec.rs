//! The on-disk encoding: tree keys and the checksummed envelope around every stored value.
//!
//! Keys:
//! - `docs`: `dockey ++ 0x00 ++ u32 BE seq`. Document keys are ASCII without `0x00`, so a
//!   document's chunks are contiguous, in commit order, and no other document's key falls in
//!   `[dockey ++ 0x00, dockey ++ 0x01)`.
//! - `index` and `quarantine`: the document key bytes ([`DocKey::to_bytes`]).
//! - `meta`: [`META_COUNTERS`], [`META_VACUUM_DUE`].
//!
//! Values are envelopes `version (1 byte) ++ crc32 (4 bytes LE) ++ body`. The CRC covers a tag
//! naming the tree, the version, the key and the body, so a value that is damaged, truncated or
//! found under the wrong key fails its check.
//!
//! [`DocKey::to_bytes`]: cunyun_protocol::key::DocKey::to_bytes

use cunyun_protocol::digest::{HeadsDigest, HEADS_DIGEST_LEN};

use super::types::IndexEntry;

/// Version byte of every envelope written by this code.
pub(crate) const FORMAT_VERSION: u8 = 1;

/// Size of the envelope header.
const HEADER_LEN: usize = 5;

/// The `meta` key of the persisted totals.
pub(crate) const META_COUNTERS: &[u8] = b"counters";

/// Set (to a sealed empty body) by a batch that removed documents; [`DocStore::open`] vacuums
/// the store while it is there, so removed bytes leave sled's files at the next open.
///
/// [`DocStore::open`]: super::DocStore::open
pub(crate) const META_VACUUM_DUE: &[u8] = b"vacuum_due";

/// The first bytes of every automerge chunk (document, change or bundle).
pub(crate) const AUTOMERGE_MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];

/// Which kind of value an envelope holds; mixed into the checksum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tag {
    /// A document chunk.
    Chunk = 1,
    /// An index entry.
    Index = 2,
    /// A quarantine record.
    Quarantine = 3,
    /// Store totals.
    Meta = 4,
}

fn checksum(tag: Tag, version: u8, key: &[u8], body: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&[tag as u8, version]);
    h.update(&(key.len() as u32).to_le_bytes());
    h.update(key);
    h.update(body);
    h.finalize()
}

/// Wraps `body` stored under `key` in an envelope.
pub(crate) fn seal(tag: Tag, key: &[u8], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.push(FORMAT_VERSION);
    out.extend_from_slice(&checksum(tag, FORMAT_VERSION, key, body).to_le_bytes());
    out.extend_from_slice(body);
    out
}

/// Checks an envelope found under `key` and returns its body, or why it is damaged.
pub(crate) fn unseal<'a>(tag: Tag, key: &[u8], value: &'a [u8]) -> Result<&'a [u8], String> {
    let (Some(&version), Some(crc), Some(body)) = (
        value.first(),
        value.get(1..HEADER_LEN),
        value.get(HEADER_LEN..),
    ) else {
        return Err(format!(
            "stored value is {} bytes, shorter than its header",
            value.len()
        ));
    };
    if version != FORMAT_VERSION {
        return Err(format!("unknown format version {version}"));
    }
    let mut stored = [0u8; 4];
    stored.copy_from_slice(crc);
    let stored = u32::from_le_bytes(stored);
    let computed = checksum(tag, version, key, body);
    if stored != computed {
        return Err(format!(
            "checksum mismatch (stored {stored:08x}, computed {computed:08x})"
        ));
    }
    Ok(body)
}

/// The `docs` key of chunk `seq` of the document `doc`.
pub(crate) fn chunk_key(doc: &[u8], seq: u32) -> Vec<u8> {
    let mut k = Vec::with_capacity(doc.len() + 5);
    k.extend_from_slice(doc);
    k.push(0);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// The half-open `docs` key range holding every chunk of `doc`.
pub(crate) fn chunk_range(doc: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let mut start = doc.to_vec();
    start.push(0);
    let mut end = doc.to_vec();
    end.push(1);
    (start, end)
}

/// The sequence number of a chunk key of `doc`, if `key` is one.
pub(crate) fn chunk_seq(doc: &[u8], key: &[u8]) -> Option<u32> {
    let rest = key.strip_prefix(doc)?.strip_prefix(&[0])?;
    let bytes: [u8; 4] = rest.try_into().ok()?;
    Some(u32::from_be_bytes(bytes))
}

/// Splits a `docs` key into document key bytes and sequence number.
pub(crate) fn split_chunk_key(key: &[u8]) -> Option<(&[u8], u32)> {
    let split = key.len().checked_sub(5)?;
    let (doc, tail) = key.split_at(split);
    let (sep, seq) = tail.split_first()?;
    if *sep != 0 {
        return None;
    }
    let bytes: [u8; 4] = seq.try_into().ok()?;
    Some((doc, u32::from_be_bytes(bytes)))
}

/// What the index stores per document: the public [`IndexEntry`] plus bookkeeping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StoredEntry {
    /// The public part.
    pub(crate) entry: IndexEntry,
    /// Sequence number the next chunk gets.
    pub(crate) next_seq: u32,
    /// Bumped by every batch that touches the document; readers compare it before and after
    /// reading chunks to detect a concurrent commit or compaction.
    pub(crate) generation: u64,
}

impl StoredEntry {
    /// The entry of a document that has no chunks yet.
    pub(crate) fn empty() -> StoredEntry {
        StoredEntry {
            entry: IndexEntry {
                digest: HeadsDigest::empty(),
                updated_at_ms: 0,
                chunks: 0,
                bytes: 0,
            },
            next_seq: 0,
            generation: 0,
        }
    }
}

const ENTRY_BODY_LEN: usize = HEADS_DIGEST_LEN + 8 + 4 + 8 + 4 + 8;

/// Fixed-width little-endian reader over a body.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        if let Some((head, tail)) = self.0.split_at_checked(N) {
            out.copy_from_slice(head);
            self.0 = tail;
        }
        out
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take())
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take())
    }
}

/// Encodes the index value of `doc`.
pub(crate) fn encode_entry(doc: &[u8], e: &StoredEntry) -> Vec<u8> {
    let mut body = Vec::with_capacity(ENTRY_BODY_LEN);
    body.extend_from_slice(&e.entry.digest.0);
    body.extend_from_slice(&e.entry.updated_at_ms.to_le_bytes());
    body.extend_from_slice(&e.entry.chunks.to_le_bytes());
    body.extend_from_slice(&e.entry.bytes.to_le_bytes());
    body.extend_from_slice(&e.next_seq.to_le_bytes());
    body.extend_from_slice(&e.generation.to_le_bytes());
    seal(Tag::Index, doc, &body)
}

/// Decodes the index value of `doc`.
pub(crate) fn decode_entry(doc: &[u8], value: &[u8]) -> Result<StoredEntry, String> {
    let body = unseal(Tag::Index, doc, value).map_err(|r| format!("index entry: {r}"))?;
    if body.len() != ENTRY_BODY_LEN {
        return Err(format!(
            "index entry body is {} bytes, expected {ENTRY_BODY_LEN}",
            body.len()
        ));
    }
    let mut r = Reader(body);
    let digest = HeadsDigest(r.take());
    let updated_at_ms = r.u64();
    let chunks = r.u32();
    let bytes = r.u64();
    let next_seq = r.u32();
    let generation = r.u64();
    Ok(StoredEntry {
        entry: IndexEntry {
            digest,
            updated_at_ms,
            chunks,
            bytes,
        },
        next_seq,
        generation,
    })
}

/// Store-wide totals kept in `meta`, updated in the same batch as the documents.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Totals {
    /// Documents in the index.
    pub(crate) docs: u64,
    /// Chunks in `docs`.
    pub(crate) chunks: u64,
    /// Payload bytes of those chunks.
    pub(crate) bytes: u64,
    /// Group commits ever applied.
    pub(crate) commit_seq: u64,
}

/// Encodes the totals.
pub(crate) fn encode_totals(t: &Totals) -> Vec<u8> {
    let mut body = Vec::with_capacity(32);
    for v in [t.docs, t.chunks, t.bytes, t.commit_seq] {
        body.extend_from_slice(&v.to_le_bytes());
    }
    seal(Tag::Meta, META_COUNTERS, &body)
}

/// Decodes the totals.
pub(crate) fn decode_totals(value: &[u8]) -> Result<Totals, String> {
    let body = unseal(Tag::Meta, META_COUNTERS, value).map_err(|r| format!("store totals: {r}"))?;
    if body.len() != 32 {
        return Err(format!(
            "store totals body is {} bytes, expected 32",
            body.len()
        ));
    }
    let mut r = Reader(body);
    Ok(Totals {
        docs: r.u64(),
        chunks: r.u64(),
        bytes: r.u64(),
        commit_seq: r.u64(),
    })
}

/// Encodes a quarantine record stored under `key`: `when_ms u64, from_backend u8, reason`.
pub(crate) fn encode_quarantine(
    key: &[u8],
    when_ms: u64,
    from_backend: bool,
    reason: &str,
) -> Vec<u8> {
    let mut body = Vec::with_capacity(9 + reason.len());
    body.extend_from_slice(&when_ms.to_le_bytes());
    body.push(u8::from(from_backend));
    body.extend_from_slice(reason.as_bytes());
    seal(Tag::Quarantine, key, &body)
}

/// Decodes a quarantine record: `(when_ms, from_backend, reason)`.
pub(crate) fn decode_quarantine(key: &[u8], value: &[u8]) -> Result<(u64, bool, String), String> {
    let body = unseal(Tag::Quarantine, key, value)?;
    if body.len() < 9 {
        return Err("quarantine record too short".to_string());
    }
    let mut r = Reader(body);
    let when = r.u64();
    let [flag] = r.take::<1>();
    Ok((when, flag != 0, String::from_utf8_lossy(r.0).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn chunk_keys_are_contiguous_and_exact() {
        let a = b"510122104201/hh/x".as_slice();
        let b = b"510122104201/hh/x1".as_slice();
        let (start, end) = chunk_range(a);
        for seq in [0, 1, 255, u32::MAX] {
            let k = chunk_key(a, seq);
            assert!(k >= start && k < end);
            assert_eq!(chunk_seq(a, &k), Some(seq));
            assert_eq!(split_chunk_key(&k), Some((a, seq)));
            let other = chunk_key(b, seq);
            assert!(
                !(other >= start && other < end),
                "x1 must not fall in x's range"
            );
            assert_eq!(chunk_seq(a, &other), None);
        }
        assert!(chunk_key(a, 1) < chunk_key(a, 2) && chunk_key(a, 255) < chunk_key(a, 256));
    }

    #[test]
    fn envelope_detects_damage_and_misplacement() {
        let v = seal(Tag::Chunk, b"k", b"hello");
        assert_eq!(unseal(Tag::Chunk, b"k", &v), Ok(&b"hello"[..]));
        assert!(unseal(Tag::Chunk, b"other", &v).is_err());
        assert!(unseal(Tag::Index, b"k", &v).is_err());
        assert!(unseal(Tag::Chunk, b"k", &v[..3]).is_err());
        let mut bad = v.clone();
        bad[0] = 9;
        assert!(unseal(Tag::Chunk, b"k", &bad)
            .expect_err("bad version")
            .contains("version"));
    }

    #[test]
    fn entry_and_totals_round_trip() {
        let e = StoredEntry {
            entry: IndexEntry {
                digest: HeadsDigest([7; HEADS_DIGEST_LEN]),
                updated_at_ms: 1_700_000_000_000,
                chunks: 3,
                bytes: 12345,
            },
            next_seq: 9,
            generation: 42,
        };
        assert_eq!(decode_entry(b"k", &encode_entry(b"k", &e)), Ok(e));
        let t = Totals {
            docs: 1,
            chunks: 2,
            bytes: 3,
            commit_seq: 4,
        };
        assert_eq!(decode_totals(&encode_totals(&t)), Ok(t));
        let q = encode_quarantine(b"k", 5, true, "bad crc");
        assert_eq!(
            decode_quarantine(b"k", &q),
            Ok((5, true, "bad crc".to_string()))
        );
    }

    proptest! {
        #[test]
        fn any_single_bit_flip_is_detected(body in proptest::collection::vec(any::<u8>(), 0..200), pos in any::<usize>(), bit in 0u8..8) {
            let mut v = seal(Tag::Chunk, b"510122104201/hh/a", &body);
            let i = pos % v.len();
            v[i] ^= 1 << bit;
            prop_assert!(unseal(Tag::Chunk, b"510122104201/hh/a", &v).is_err());
        }

        #[test]
        fn decoders_never_panic(v in proptest::collection::vec(any::<u8>(), 0..100)) {
            let _ = decode_entry(b"k", &v);
            let _ = decode_totals(&v);
            let _ = decode_quarantine(b"k", &v);
            let _ = split_chunk_key(&v);
        }
    }
}
