//! Content files on a node: the chunk store and the transfer of content between nodes.
//!
//! This module owns the **files** of content items; their metadata lives in the manifest's
//! opaque JSON (the content library's business).
//!
//! # Store layout (`<data_dir>/blobs/`, [`store::BlobStore`])
//!
//! ```text
//! chunks/ab/<64 hex>   one file per chunk, named by its BLAKE3 hash (first two hex digits
//!                      as a fan-out directory); shared by every item that contains it
//! manifests/<id>.cm    the hub-signed manifest of each item held, as received
//! partial/<64 hex>     the received start of a chunk whose transfer was cut
//! wanted.json          when each item was last named in a wanted (recommended) list
//! tmp/                 temp files; cleared on open
//! ```
//! Plain files rather than a sled tree: chunks are large immutable values that are written
//! once and read sequentially, which sled (log-structured, values copied through its page
//! cache, files that never shrink) handles poorly, while the file system gives atomic rename
//! and cheap deletion on eviction. Every file is written to `tmp/`, fsynced, and renamed into
//! place (manifests also fsync the directory), so a crash leaves either the whole file or
//! none. Opening the store re-hashes every chunk and re-verifies every manifest against the
//! trusted hub keys, and drops whatever fails; reading a chunk re-checks its hash too, so a
//! corrupt chunk is never served or assembled into a file.
//!
//! # Chunk size
//!
//! [`DEFAULT_CHUNK_SIZE`] is 256 KiB: about 2 s of a 1 Mbit/s village link. Smaller chunks
//! would make manifests larger (32 bytes of hash per chunk: 3.8 KB for a 30 MB video at 256
//! KiB) and put more small files on a Pi's SD card; larger ones cost more memory per chunk in
//! flight (a chunk is held whole while it is verified) and dedupe less. What a cut costs does
//! not depend on the chunk size: the received start of a cut chunk is kept and only the rest
//! is asked for again (see `cunyun_protocol::blob`).
//!
//! # Quota and eviction
//!
//! The store holds at most `quota_mb` of chunks. Before fetching an item, room is made for
//! what it still lacks by removing items that are not in the current wanted list, least
//! recently wanted first ([`store::BlobStore::make_room`]); wanted items are never evicted,
//! and an item that does not fit is not fetched.
//!
//! # Transfer ([`transfer`])
//!
//! A node fetches from its upstream (county node or hub) over the same mutual-TLS listener as
//! sync, selected by the ALPN id [`crate::certs::tls::BLOB_ALPN`]: [`transfer::fetch_wanted`]. A
//! node that holds content (the hub; a county node for its villages) serves it with
//! [`transfer::serve_over`], which the sync service runs for connections asking for that ALPN
//! when it has a blob store ([`crate::sync::SyncService::set_blob_store`]).

pub mod store;
pub mod transfer;

use std::path::PathBuf;

use serde::Deserialize;

pub use store::{BlobError, BlobStore, VerifyReport};
pub use transfer::{
    fetch_keeping, fetch_over, fetch_wanted, serve_over, FetchReport, TransferError, TransferLimits,
};

/// Chunk size of files put into the store (see the module doc).
pub const DEFAULT_CHUNK_SIZE: u32 = 256 * 1024;

/// Content file settings (the `[content]` table of the node config).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct ContentConfig {
    /// Directory of the blob store; default `<data_dir>/blobs`.
    pub dir: Option<PathBuf>,
    /// Disk quota for content chunks, in MiB.
    pub quota_mb: u64,
    /// Hub public keys (Ed25519, 64 hex digits each, as the hub prints them) whose signed
    /// manifests this node accepts. Empty: no content is accepted.
    pub trusted_hub_keys: Vec<String>,
    /// Seconds between push-down runs (besides the run after each sync session that brought
    /// changes); see `cunyun_node::pushdown`.
    pub pushdown_interval_s: u64,
}

impl Default for ContentConfig {
    fn default() -> Self {
        ContentConfig {
            dir: None,
            quota_mb: 4096,
            trusted_hub_keys: Vec::new(),
            pushdown_interval_s: 60,
        }
    }
}

#[cfg(test)]
mod tests;
