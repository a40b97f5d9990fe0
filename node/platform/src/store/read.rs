//! Reading documents back: index entries, chunk ranges, decoding with automerge, and the
//! optimistic consistency check that lets readers run without locks beside the writer.
//!
//! A reader reads the index entry, then the chunk range, then the entry again. Every batch that
//! touches a document bumps the entry's generation, so equal entries mean the chunks read
//! belong to that entry; otherwise the read is retried.

use std::panic::{catch_unwind, AssertUnwindSafe};

use automerge::{Automerge, ReadDoc};

use super::backend::{panic_message, BackendError, KvBackend, TreeId};
use super::codec::{chunk_range, chunk_seq, decode_entry, unseal, StoredEntry, Tag};
use super::error::StoreError;

/// Damage found while reading: what is wrong, and whether the backend reported it (for a whole
/// page) or the store's own checks found it (for this document's bytes).
#[derive(Debug, Clone)]
pub(crate) struct Damage {
    /// What check failed.
    pub(crate) reason: String,
    /// Reported by the backend rather than found by the store's own checks.
    pub(crate) backend: bool,
}

impl Damage {
    /// Damage found by the store's own checks.
    pub(crate) fn data(reason: String) -> Damage {
        Damage {
            reason,
            backend: false,
        }
    }

    /// Damage reported by the backend.
    pub(crate) fn backend(reason: String) -> Damage {
        Damage {
            reason,
            backend: true,
        }
    }
}

/// How often a read is retried when the document changes underneath it.
const READ_ATTEMPTS: usize = 16;

/// A document's chunks as `(seq, payload)`, in order.
pub(crate) type Chunks = Vec<(u32, Vec<u8>)>;

/// Why a read failed.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// The stored bytes are damaged.
    Corrupt(Damage),
    /// Any other failure.
    Store(StoreError),
}

impl ReadError {
    /// Classifies a backend error met while doing `context` on `key`.
    pub(crate) fn from_backend(err: BackendError, key: &str, context: &str) -> ReadError {
        match err {
            BackendError::Corruption(d) => ReadError::Corrupt(Damage::backend(format!(
                "the storage backend reported corruption while {context}: {d}"
            ))),
            BackendError::Panicked(d) => ReadError::Corrupt(Damage::backend(format!(
                "the storage backend panicked while {context}: {d}"
            ))),
            other => ReadError::Store(StoreError::from_backend(other, key, context)),
        }
    }
}

/// The stored index entry of `doc`.
pub(crate) fn read_entry(
    backend: &dyn KvBackend,
    doc: &[u8],
    key: &str,
) -> Result<Option<StoredEntry>, ReadError> {
    match backend.get(TreeId::Index, doc) {
        Ok(None) => Ok(None),
        Ok(Some(v)) => decode_entry(doc, &v)
            .map(Some)
            .map_err(|r| ReadError::Corrupt(Damage::data(r))),
        Err(e) => Err(ReadError::from_backend(e, key, "reading the index entry")),
    }
}

/// Every chunk of `doc` as `(seq, payload)`, in order, each checksum verified.
pub(crate) fn read_chunks(
    backend: &dyn KvBackend,
    doc: &[u8],
    key: &str,
) -> Result<Chunks, ReadError> {
    let (start, end) = chunk_range(doc);
    let mut out = Vec::new();
    for item in backend.range(TreeId::Docs, &start, Some(&end)) {
        let (k, v) = item.map_err(|e| ReadError::from_backend(e, key, "reading chunks"))?;
        let Some(seq) = chunk_seq(doc, &k) else {
            return Err(ReadError::Corrupt(Damage::data(format!(
                "unexpected key {:?} in the document's chunk range",
                String::from_utf8_lossy(&k)
            ))));
        };
        let payload = unseal(Tag::Chunk, &k, &v)
            .map_err(|r| ReadError::Corrupt(Damage::data(format!("chunk {seq}: {r}"))))?;
        out.push((seq, payload.to_vec()));
    }
    Ok(out)
}

/// Checks that `chunks` are exactly what `entry` describes.
pub(crate) fn check_chunks(
    entry: &StoredEntry,
    chunks: &[(u32, Vec<u8>)],
) -> Result<(), ReadError> {
    let bytes: u64 = chunks.iter().map(|(_, p)| p.len() as u64).sum();
    if chunks.len() as u64 != u64::from(entry.entry.chunks) || bytes != entry.entry.bytes {
        return Err(ReadError::Corrupt(Damage::data(format!(
            "index says {} chunks of {} bytes, found {} chunks of {} bytes",
            entry.entry.chunks,
            entry.entry.bytes,
            chunks.len(),
            bytes
        ))));
    }
    if let Some((seq, _)) = chunks.iter().find(|(seq, _)| *seq >= entry.next_seq) {
        return Err(ReadError::Corrupt(Damage::data(format!(
            "chunk {seq} is beyond the index's next sequence number {}",
            entry.next_seq
        ))));
    }
    Ok(())
}

/// Decodes concatenated chunks with automerge, refusing documents with lost changes.
pub(crate) fn decode_doc(chunks: &[(u32, Vec<u8>)]) -> Result<Automerge, ReadError> {
    let total: usize = chunks.iter().map(|(_, p)| p.len()).sum();
    let mut bytes = Vec::with_capacity(total);
    for (_, p) in chunks {
        bytes.extend_from_slice(p);
    }
    let doc = match catch_unwind(AssertUnwindSafe(|| Automerge::load(&bytes))) {
        Ok(Ok(doc)) => doc,
        Ok(Err(e)) => {
            return Err(ReadError::Corrupt(Damage::data(format!(
                "automerge refused the document: {e}"
            ))))
        }
        Err(p) => {
            return Err(ReadError::Corrupt(Damage::data(format!(
                "automerge panicked loading the document: {}",
                panic_message(p.as_ref())
            ))))
        }
    };
    let missing = doc.get_missing_deps(&[]);
    if !missing.is_empty() {
        return Err(ReadError::Corrupt(Damage::data(format!(
            "{} changes wait on missing dependencies (a chunk is missing)",
            missing.len()
        ))));
    }
    Ok(doc)
}

/// Reads `doc`'s entry and chunks consistently, retrying if a batch changes it meanwhile.
pub(crate) fn read_consistent(
    backend: &dyn KvBackend,
    doc: &[u8],
    key: &str,
) -> Result<Option<(StoredEntry, Chunks)>, ReadError> {
    for _ in 0..READ_ATTEMPTS {
        let Some(before) = read_entry(backend, doc, key)? else {
            return Ok(None);
        };
        let chunks = read_chunks(backend, doc, key)?;
        let after = read_entry(backend, doc, key)?;
        if after != Some(before) {
            std::thread::yield_now();
            continue;
        }
        check_chunks(&before, &chunks)?;
        return Ok(Some((before, chunks)));
    }
    Err(ReadError::Store(StoreError::Contended {
        key: key.to_string(),
    }))
}
