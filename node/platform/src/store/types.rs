//! The store's public value types: what callers write ([`DocWrite`]) and what they read back
//! about documents ([`IndexEntry`]), quarantine ([`QuarantineRecord`]), compaction
//! ([`CompactStats`]), health ([`VerifyReport`]) and the store as a whole ([`StoreStats`]).

use automerge::ChangeHash;
use cunyun_protocol::digest::HeadsDigest;
use cunyun_protocol::key::DocKey;

/// One document change to store durably.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocWrite {
    /// The document.
    pub key: DocKey,
    /// Automerge bytes to append: the output of `save()`, `save_incremental()` or
    /// `save_after(..)`. Loading concatenates a document's chunks in commit order.
    pub chunk: Vec<u8>,
    /// The document's heads after this change; their digest becomes the index entry's digest.
    pub heads: Vec<ChangeHash>,
    /// When the change was made, in milliseconds since the Unix epoch (the caller's clock).
    pub updated_at_ms: u64,
}

/// What the index records about one document. Kept in step with the document's chunks: both
/// are written in the same atomic batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    /// Digest of the document's heads after its last committed change.
    pub digest: HeadsDigest,
    /// `updated_at_ms` of the last committed change.
    pub updated_at_ms: u64,
    /// Number of stored chunks (1 after compaction).
    pub chunks: u32,
    /// Total bytes of the stored chunks' automerge payloads.
    pub bytes: u64,
}

/// A document (or a damaged range) found corrupt, kept in the quarantine tree across restarts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuarantineRecord {
    /// The document key (`<area>/<kind>/<id>`), or a description of the damaged range when the
    /// damage could not be tied to one document.
    pub key: String,
    /// What check failed.
    pub reason: String,
    /// When the damage was first seen, in milliseconds since the Unix epoch.
    pub when_ms: u64,
    /// The backend reported the damage for a whole storage page (so this document may only be
    /// a neighbour of the damaged bytes). Such records are released automatically when the
    /// backend has repaired its log at the next open; the store's own checksums then judge
    /// the document again.
    pub from_backend: bool,
}

/// The outcome of [`DocStore::compact_all`](super::DocStore::compact_all).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompactStats {
    /// Documents rewritten as one snapshot.
    pub docs_compacted: u64,
    /// Chunks those documents had before.
    pub chunks_before: u64,
    /// Chunks they have now (one each).
    pub chunks_after: u64,
    /// Payload bytes before.
    pub bytes_before: u64,
    /// Payload bytes after.
    pub bytes_after: u64,
    /// Documents skipped because they are corrupt (now quarantined).
    pub corrupt: u64,
}

/// Counters for `/metrics`. Document, chunk and byte totals are persisted; the rest count since
/// the store was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Documents in the index.
    pub documents: u64,
    /// Chunks stored.
    pub chunks: u64,
    /// Payload bytes of all chunks.
    pub bytes: u64,
    /// `commit` calls acknowledged as durable since open.
    pub commits: u64,
    /// Document writes acknowledged as durable since open.
    pub writes: u64,
    /// Group commits (atomic batches followed by one sync) since open.
    pub commit_groups: u64,
    /// Durability barriers (backend flush + fsync) since open.
    pub fsyncs: u64,
    /// Documents compacted since open.
    pub compactions: u64,
    /// Quarantine records (corrupt documents or damaged ranges), persisted.
    pub quarantined: u64,
    /// Loads whose heads did not match the index digest (a caller passed wrong heads) since open.
    pub digest_mismatches: u64,
    /// Bytes on disk, as reported by the backend (0 if it could not tell).
    pub disk_bytes: u64,
    /// Whether the store stopped accepting writes after a failed sync.
    pub failed: bool,
}

/// The result of [`DocStore::verify`](super::DocStore::verify): structural consistency of the
/// index, the chunks and the persisted totals. Automerge bytes are not decoded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Index entries read.
    pub docs: u64,
    /// Chunks read.
    pub chunks: u64,
    /// Payload bytes of the chunks read.
    pub bytes: u64,
    /// Everything found wrong, one line each. Empty means consistent.
    pub problems: Vec<String>,
}

impl VerifyReport {
    /// Whether no problem was found.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}
