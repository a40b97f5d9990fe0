//! [`KvBackend`]: the small ordered key-value interface the document store is written against,
//! so that sled (see [`super::sled_backend`]) can be replaced by another engine later.
//!
//! The store needs only: named trees (keyspaces), point reads, ordered range scans, one atomic
//! batch spanning several trees, an explicit durability barrier and the size on disk. Anything
//! else (checksums, layout, counters) lives above this trait.

/// The keyspaces the store uses. A backend keeps each in its own ordered tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TreeId {
    /// Document chunks: `dockey ++ 0x00 ++ u32 BE seq` → chunk envelope.
    Docs,
    /// The index: `dockey` → index entry envelope, ordered by key.
    Index,
    /// Quarantined documents: `dockey` → quarantine record envelope.
    Quarantine,
    /// Store-wide counters.
    Meta,
}

impl TreeId {
    /// Every tree, in a fixed order (a backend may use the position as an index).
    pub const ALL: [TreeId; 4] = [
        TreeId::Docs,
        TreeId::Index,
        TreeId::Quarantine,
        TreeId::Meta,
    ];

    /// The tree's stable on-disk name.
    pub fn name(self) -> &'static str {
        match self {
            TreeId::Docs => "docs",
            TreeId::Index => "index",
            TreeId::Quarantine => "quarantine",
            TreeId::Meta => "meta",
        }
    }

    /// The tree's position in [`TreeId::ALL`].
    pub fn position(self) -> usize {
        match self {
            TreeId::Docs => 0,
            TreeId::Index => 1,
            TreeId::Quarantine => 2,
            TreeId::Meta => 3,
        }
    }
}

/// One write of a [`WriteBatch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchOp {
    /// Set `key` in `tree` to `value`.
    Put {
        /// The tree written.
        tree: TreeId,
        /// The key.
        key: Vec<u8>,
        /// The new value.
        value: Vec<u8>,
    },
    /// Remove `key` from `tree` (no error if absent).
    Delete {
        /// The tree written.
        tree: TreeId,
        /// The key.
        key: Vec<u8>,
    },
}

/// Writes applied all together or not at all by [`KvBackend::apply`]. When several ops touch
/// the same key, the last one wins.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteBatch {
    ops: Vec<BatchOp>,
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> WriteBatch {
        WriteBatch::default()
    }

    /// Adds a put.
    pub fn put(&mut self, tree: TreeId, key: Vec<u8>, value: Vec<u8>) {
        self.ops.push(BatchOp::Put { tree, key, value });
    }

    /// Adds a delete.
    pub fn delete(&mut self, tree: TreeId, key: Vec<u8>) {
        self.ops.push(BatchOp::Delete { tree, key });
    }

    /// Appends every op of `other`, keeping their order after this batch's ops.
    pub fn extend(&mut self, other: WriteBatch) {
        self.ops.extend(other.ops);
    }

    /// The ops, in order.
    pub fn ops(&self) -> &[BatchOp] {
        &self.ops
    }

    /// Number of ops.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether the batch has no ops.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// Why a backend operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// The backend found damaged bytes (its own checksum failed, or it refused a structure).
    #[error("corruption: {0}")]
    Corruption(String),
    /// The backend panicked; the panic was caught. Treated like corruption of what was read.
    #[error("panic inside the backend: {0}")]
    Panicked(String),
    /// A file-system error.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The backend has been closed.
    #[error("closed")]
    Closed,
    /// Anything else the backend reports.
    #[error("{0}")]
    Other(String),
}

/// A key and its value.
pub type KvPair = (Vec<u8>, Vec<u8>);

/// An owned, ordered iterator over a key range. After yielding an error it yields nothing more.
pub type KvIter = Box<dyn Iterator<Item = Result<KvPair, BackendError>> + Send>;

/// An ordered key-value store with several trees, atomic multi-tree batches and an explicit
/// durability barrier.
///
/// Implementations must be safe to call from many reader threads while one writer thread
/// applies batches, and must not panic on damaged files: they return
/// [`BackendError::Corruption`] (or catch their engine's panics and return
/// [`BackendError::Panicked`]).
pub trait KvBackend: Send + Sync {
    /// The value of `key` in `tree`, if any.
    fn get(&self, tree: TreeId, key: &[u8]) -> Result<Option<Vec<u8>>, BackendError>;

    /// The pairs of `tree` with `start <= key < end` (no upper bound when `end` is `None`), in
    /// ascending key order. Errors are yielded as items.
    fn range(&self, tree: TreeId, start: &[u8], end: Option<&[u8]>) -> KvIter;

    /// Applies every op of `batch` atomically: after a crash, either all of them or none are
    /// visible. Not necessarily durable until [`KvBackend::sync`] returns.
    fn apply(&self, batch: &WriteBatch) -> Result<(), BackendError>;

    /// Makes every batch applied before this call durable (survives power loss).
    fn sync(&self) -> Result<(), BackendError>;

    /// Bytes the store occupies on disk.
    fn size_on_disk(&self) -> Result<u64, BackendError>;
}

/// Turns a caught panic payload into a message.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}
