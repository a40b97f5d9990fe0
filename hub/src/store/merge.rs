//! The backend-independent half of [`HubStore::apply`](super::HubStore::apply): checking a
//! write's bytes and merging them into the stored document, so both backends accept and refuse
//! exactly the same writes and store exactly the same new bytes.

use automerge::{Automerge, ReadDoc};
use cunyun_platform::store::StoreConfig;
use cunyun_protocol::digest::{heads_digest, HeadsDigest};
use cunyun_protocol::key::DocKey;

use super::HubStoreError;

/// The first bytes of every Automerge document or change chunk.
const AUTOMERGE_MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];

/// Size limits and compaction threshold shared by both backends (from `[store]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest bytes of one write.
    pub max_chunk_bytes: u64,
    /// Largest stored bytes of one document.
    pub max_doc_bytes: u64,
    /// A document with this many stored chunks is rewritten as one snapshot (at least 2).
    pub compact_after_chunks: u32,
}

impl From<&StoreConfig> for Limits {
    fn from(c: &StoreConfig) -> Limits {
        Limits {
            max_chunk_bytes: c.max_chunk_bytes,
            max_doc_bytes: c.max_doc_bytes,
            compact_after_chunks: c.compact_after_chunks.max(2),
        }
    }
}

impl Default for Limits {
    fn default() -> Limits {
        Limits::from(&StoreConfig::default())
    }
}

/// Checks one write's bytes before anything is loaded.
pub(crate) fn check_chunk(
    key: &DocKey,
    chunk: &[u8],
    limits: &Limits,
) -> Result<(), HubStoreError> {
    let invalid = |reason: &str| HubStoreError::InvalidWrite {
        key: key.to_string(),
        reason: reason.to_string(),
    };
    if chunk.is_empty() {
        return Err(invalid("数据为空"));
    }
    if chunk.len() as u64 > limits.max_chunk_bytes {
        return Err(HubStoreError::TooLarge {
            key: key.to_string(),
            what: "单次写入",
            size: chunk.len() as u64,
            limit: limits.max_chunk_bytes,
        });
    }
    if !chunk.starts_with(&AUTOMERGE_MAGIC) {
        return Err(invalid("不是 Automerge 数据（缺少 Automerge 标识字节）"));
    }
    Ok(())
}

/// Loads a stored document from its chunks (snapshot first, then incremental chunks).
pub(crate) fn load_stored(key: &DocKey, chunks: &[Vec<u8>]) -> Result<Automerge, HubStoreError> {
    Automerge::load(&chunks.concat()).map_err(|e| HubStoreError::Corrupt {
        key: key.to_string(),
        reason: format!("Automerge 无法读取已存储的数据: {e}"),
    })
}

/// The outcome of merging writes into one document.
pub(crate) struct Merged {
    /// The document with the writes merged in.
    pub(crate) doc: Automerge,
    /// Digest of its heads.
    pub(crate) digest: HeadsDigest,
    /// The bytes to append (the changes the writes added), or `None` if they added nothing.
    pub(crate) append: Option<Vec<u8>>,
}

/// Merges `chunks` (already checked with [`check_chunk`]) into `stored` (`None`: a new
/// document). Refuses changes whose dependencies the document lacks (they could not be saved)
/// and bytes automerge refuses.
pub(crate) fn merge(
    key: &DocKey,
    stored: Option<Automerge>,
    chunks: &[&[u8]],
) -> Result<Merged, HubStoreError> {
    let is_new = stored.is_none();
    let mut doc = stored.unwrap_or_default();
    let before = doc.get_heads();
    let before_digest = heads_digest(&before);
    for chunk in chunks {
        doc.load_incremental(chunk)
            .map_err(|e| HubStoreError::InvalidWrite {
                key: key.to_string(),
                reason: format!("Automerge 无法读取: {e}"),
            })?;
    }
    let missing = doc.get_missing_deps(&[]);
    if !missing.is_empty() {
        return Err(HubStoreError::InvalidWrite {
            key: key.to_string(),
            reason: format!("缺少 {} 个依赖的变更（应先发送更早的变更）", missing.len()),
        });
    }
    let after = doc.get_heads();
    let digest = heads_digest(&after);
    let append = if digest == before_digest {
        None
    } else if is_new {
        Some(doc.save())
    } else {
        Some(doc.save_after(&before))
    };
    Ok(Merged {
        doc,
        digest,
        append,
    })
}

/// Refuses a document whose stored bytes would exceed the limit.
pub(crate) fn check_doc_size(
    key: &DocKey,
    bytes: u64,
    limits: &Limits,
) -> Result<(), HubStoreError> {
    if bytes > limits.max_doc_bytes {
        return Err(HubStoreError::TooLarge {
            key: key.to_string(),
            what: "文档",
            size: bytes,
            limit: limits.max_doc_bytes,
        });
    }
    Ok(())
}
