//! [`StoreError`]: everything the document store can fail with, each variant with enough context
//! (the document key, the operation, the limit) to act on it without reading logs.

use std::path::PathBuf;

use super::backend::BackendError;

/// Why a document-store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store could not be opened (missing permissions, locked by another process, files
    /// the backend refuses to read).
    #[error("could not open the document store at {path}: {reason}")]
    Open {
        /// The store directory.
        path: PathBuf,
        /// What went wrong, in words.
        reason: String,
    },
    /// A file-system operation failed.
    #[error("I/O error while {context}: {source}")]
    Io {
        /// What the store was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The key-value backend failed in a way that is neither corruption nor plain I/O.
    #[error("storage backend error while {context}: {detail}")]
    Backend {
        /// What the store was doing.
        context: String,
        /// The backend's description.
        detail: String,
    },
    /// A document's stored bytes are damaged: a checksum failed, the backend reported
    /// corruption, or automerge refused the bytes. The document is quarantined (see
    /// [`DocStore::quarantined`](super::DocStore::quarantined)); its raw bytes are kept.
    #[error("document {key} is corrupt: {reason}")]
    Corrupt {
        /// The document key, or a description of the damaged range when no single key is known.
        key: String,
        /// What check failed.
        reason: String,
    },
    /// A chunk or a document would exceed a configured size limit; nothing was stored.
    #[error("{what} for document {key} would be {size} bytes, over the limit of {limit} bytes; nothing was stored")]
    TooLarge {
        /// The document key.
        key: String,
        /// `"chunk"` or `"document"`.
        what: &'static str,
        /// The size the write would have produced.
        size: u64,
        /// The configured limit.
        limit: u64,
    },
    /// A write was malformed (empty chunk, bytes that are not automerge, no heads); nothing was
    /// stored.
    #[error("invalid write for document {key}: {reason}; nothing was stored")]
    InvalidWrite {
        /// The document key.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A document changed on every one of several read attempts; the read can be retried.
    #[error("document {key} kept changing while it was being read; try again")]
    Contended {
        /// The document key.
        key: String,
    },
    /// The store's writer has stopped (the store is shutting down).
    #[error("the document store is closed")]
    Closed,
    /// An fsync failed earlier; the store refuses further writes because it can no longer know
    /// what is on disk. Reopen the store to recover.
    #[error("the document store stopped accepting writes after a failed sync: {reason}")]
    Failed {
        /// The error that stopped it.
        reason: String,
    },
}

impl StoreError {
    /// Maps a backend error met while doing `context` to a store error. Corruption becomes
    /// [`StoreError::Corrupt`] naming `key`.
    pub(crate) fn from_backend(err: BackendError, key: &str, context: &str) -> StoreError {
        match err {
            BackendError::Corruption(detail) => StoreError::Corrupt {
                key: key.to_string(),
                reason: format!(
                    "the storage backend reported corruption while {context}: {detail}"
                ),
            },
            BackendError::Panicked(detail) => StoreError::Corrupt {
                key: key.to_string(),
                reason: format!("the storage backend panicked while {context}: {detail}"),
            },
            BackendError::Io(source) => StoreError::Io {
                context: format!("{context} ({key})"),
                source,
            },
            BackendError::Closed => StoreError::Closed,
            BackendError::Other(detail) => StoreError::Backend {
                context: format!("{context} ({key})"),
                detail,
            },
        }
    }

    /// Whether this error means stored bytes are damaged.
    pub fn is_corrupt(&self) -> bool {
        matches!(self, StoreError::Corrupt { .. })
    }
}
