//! [`SyncHost`]: the narrow store seam the sync service stands on, so one sync service serves a
//! village or county node's sled [`DocStore`] and the hub's province-wide store (sled or
//! PostgreSQL, implemented in `cunyun-hub`) alike.
//!
//! It owns only what sessions, the scheduler and revocation refresh need: key-range listings of
//! digests with feed positions, the change feed, loading a document, committing received
//! changes with the removals a tombstone causes, a wake-up after writes, and the peer
//! watermarks. Everything above (withholding sensitive profiles, tombstone checks, the session
//! index cache) is written once in [`crate::sync::adapter`] over this trait.
//!
//! # Feed positions
//!
//! [`SyncHost::seq`] is this store's change-feed position "now"; every document carries the
//! position of the write that last changed it ([`HostEntry::pos`]). The contract, which the
//! session's watermark path relies on: **a change committed after `seq()` returned is listed by
//! [`SyncHost::changed_since`] with that value** (at least once; repeats are harmless). The node
//! uses wall-clock milliseconds (see [`crate::sync::adapter`]); the hub's stores use their own
//! feed (a snapshot's xmin on PostgreSQL).

use std::collections::HashMap;

use automerge::Automerge;
use cunyun_protocol::digest::HeadsDigest;
use cunyun_protocol::identity::NodeId;
use cunyun_protocol::key::DocKey;
use cunyun_protocol::sync::PeerMemory;

use crate::store::{DocWrite, StoreError};

/// One listed document: key, heads digest and the feed position of its last change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostEntry {
    /// The document.
    pub key: DocKey,
    /// Digest of its heads.
    pub digest: HeadsDigest,
    /// Feed position of the write that last changed it (comparable with [`SyncHost::seq`]).
    pub pos: u64,
}

/// Why a host store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HostError {
    /// The node's sled store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Stored bytes of one document are damaged (that document is skipped, the others go on).
    #[error("文档 {key} 已损坏：{reason}")]
    Corrupt {
        /// The document.
        key: String,
        /// What check failed.
        reason: String,
    },
    /// Another backend failed (the hub's stores); the message is zh-CN.
    #[error("{0}")]
    Backend(String),
}

impl HostError {
    /// Whether this error concerns one damaged document only.
    pub fn is_corrupt(&self) -> bool {
        match self {
            HostError::Store(e) => e.is_corrupt(),
            HostError::Corrupt { .. } => true,
            HostError::Backend(_) => false,
        }
    }
}

/// What the sync service needs from the store it serves (see the module documentation).
/// Methods block; the service calls them on the blocking pool.
pub trait SyncHost: Send + Sync + 'static {
    /// The change-feed position now.
    fn seq(&self) -> Result<u64, HostError>;

    /// Every document with a key in `[start, end)` (bytes), in key order, without loading any.
    /// A damaged index entry may be left out (and logged) rather than fail the listing.
    fn scan_range(&self, start: &[u8], end: &[u8]) -> Result<Vec<HostEntry>, HostError>;

    /// The documents in `[start, end)` changed at or after feed position `since`, in key
    /// order, or `None` if this store cannot tell (then the session compares everything).
    fn changed_since(
        &self,
        start: &[u8],
        end: &[u8],
        since: u64,
    ) -> Result<Option<Vec<HostEntry>>, HostError>;

    /// Loads a document, or `None` if none is stored under `key`.
    fn load(&self, key: &DocKey) -> Result<Option<Automerge>, HostError>;

    /// Whether a document is stored under `key` (without loading it).
    fn contains(&self, key: &DocKey) -> Result<bool, HostError>;

    /// Commits received changes and removes `removes`, in one atomic, durable batch: durable
    /// when it returns. Each write's `chunk` holds the changes the document did not have when
    /// it was loaded (`save()` for a new one, `save_after(before)` otherwise); a store shared
    /// by several writers merges it into what is stored now instead of appending blindly.
    /// Returns the new entry of each written document.
    fn commit(
        &self,
        writes: Vec<DocWrite>,
        removes: Vec<DocKey>,
    ) -> Result<Vec<HostEntry>, HostError>;

    /// A counter that moves after writes (changes between two looks coalesce): the scheduler
    /// makes peers due when it moves.
    fn watch_writes(&self) -> tokio::sync::watch::Receiver<u64>;

    /// The remembered watermarks of every peer (empty when none are; losing them only makes
    /// the next sessions cold).
    fn load_peer_memory(&self) -> Result<HashMap<NodeId, PeerMemory>, HostError>;

    /// Remembers one peer's watermarks after a converged session, durably.
    fn save_peer_memory(&self, peer: NodeId, memory: PeerMemory) -> Result<(), HostError>;
}

/// One peer's watermarks as stored: the one format of every host (`peers.json` on a node, the
/// `sync.peers` metadata value on the hub).
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredMemory {
    peer: NodeId,
    scope_id: u64,
    peer_seq_seen: u64,
    my_seq_seen: u64,
}

/// Peer watermarks as stored: a JSON list ordered by peer.
pub fn encode_peer_memory(memory: &HashMap<NodeId, PeerMemory>) -> Vec<u8> {
    let mut list: Vec<StoredMemory> = memory
        .iter()
        .map(|(peer, m)| StoredMemory {
            peer: *peer,
            scope_id: m.scope_id,
            peer_seq_seen: m.peer_seq_seen,
            my_seq_seen: m.my_seq_seen,
        })
        .collect();
    list.sort_by_key(|m| m.peer);
    // A list of plain numbers and ids always serialises.
    serde_json::to_vec_pretty(&list).unwrap_or_default()
}

/// Reads what [`encode_peer_memory`] wrote.
pub fn decode_peer_memory(bytes: &[u8]) -> Result<HashMap<NodeId, PeerMemory>, serde_json::Error> {
    let list: Vec<StoredMemory> = serde_json::from_slice(bytes)?;
    Ok(list
        .into_iter()
        .map(|m| {
            (
                m.peer,
                PeerMemory {
                    scope_id: m.scope_id,
                    peer_seq_seen: m.peer_seq_seen,
                    my_seq_seen: m.my_seq_seen,
                },
            )
        })
        .collect())
}

pub mod node;

pub use node::NodeHost;
