//! Peer-to-peer reconciliation of the documents two nodes may both hold — the sync protocol.
//!
//! This module owns the protocol end to end, without I/O: the host (the node's TLS transport)
//! moves bytes and applies changes; everything else is here.
//!
//! - [`wire`]: the frames and their compact, limited binary encoding.
//! - [`riblt`]: rateless IBLT set reconciliation over 16-byte document symbols.
//! - [`scope`]: which documents two peers share ([`SharedScope`]), from their authenticated
//!   scopes and roles and each kind's reach.
//! - [`session`]: the sans-IO state machine ([`Session`]) that drives one exchange.
//! - [`mem`]: [`MemStore`], an in-memory [`SyncStore`] over Automerge documents, and
//!   [`mem::run_pair`], which runs two sessions against each other; test and benchmark support.
//!
//! # The store view
//!
//! A session reads the host's documents through [`SyncStore`]. The index methods
//! ([`SyncStore::entries`], [`SyncStore::entries_since`]) must be cheap — a range scan of the
//! key index, no document loads — because they run over the whole shared scope. The per-document
//! methods may load a document; a session calls them only for documents that differ.
//!
//! # Flow (see `session` for the details and round-trip counts)
//!
//! hello (both sides at once) → equal fingerprints: done. Otherwise either both sides hold a
//! watermark for each other and each has already sent a `Summary` of what it changed since, or
//! both exchange RIBLT sketches and decode which documents differ, then send a `Summary` of
//! those → each side answers with `Changes` the other lacks and `Want`s for what it lacks →
//! answers → `Done` with the fingerprint of the shared scope (and the feed position to remember),
//! compared on both sides.

pub mod mem;
pub mod riblt;
pub mod scope;
pub mod session;
pub mod wire;

use automerge::ChangeHash;

use crate::digest::HeadsDigest;
use crate::key::DocKey;

pub use mem::MemStore;
pub use riblt::{Fingerprint, Symbol};
pub use scope::{Reach, SharedScope};
pub use session::{Event, PeerMemory, Session, SessionConfig, SessionError, SessionStats};
pub use wire::{decode, encode, Frame, FrameReader, WireError};

/// A failure of the host's store, as the session reports it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("存储错误：{0} (store error)")]
pub struct StoreError(pub String);

/// One document compared with the heads a peer reported for it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DocCompare {
    /// The local heads, or `None` if the document is not held.
    pub my_heads: Option<Vec<ChangeHash>>,
    /// Raw changes the peer lacks, in causal order (empty if none).
    pub they_lack: Vec<Vec<u8>>,
    /// Whether the peer has changes the local copy lacks (some of its heads are unknown here).
    pub i_lack: bool,
}

/// The host's documents, as a sync session sees them.
///
/// Every digest must be [`crate::digest::heads_digest`] of the document's heads, so that two
/// replicas at the same state produce the same symbol.
pub trait SyncStore {
    /// The current position of the local change feed: it increases whenever any document's
    /// heads change (local edits and applied remote changes alike).
    fn seq(&self) -> u64;

    /// Every held document inside `scope` ([`SharedScope::key_ranges`] says where to look; only
    /// keys for which [`SharedScope::contains`] holds count), with its heads digest, in key
    /// order. Must not load documents.
    fn entries(&self, scope: &SharedScope) -> Result<Vec<(DocKey, HeadsDigest)>, StoreError>;

    /// Documents inside `scope` whose heads changed after feed position `seq`, or `None` if the
    /// store cannot tell (no change feed, or `seq` is older than the feed keeps).
    fn entries_since(
        &self,
        scope: &SharedScope,
        seq: u64,
    ) -> Result<Option<Vec<(DocKey, HeadsDigest)>>, StoreError>;

    /// A document's heads, or `None` if it is not held. May load the document.
    fn heads(&self, key: &DocKey) -> Result<Option<Vec<ChangeHash>>, StoreError>;

    /// What a summary lists for a document, or `None` if it is not held: its heads, then the
    /// dependencies of those heads (their parents) that are not heads themselves. The parents
    /// let a peer that does not know the heads yet (they are new changes) still find what both
    /// hold, instead of sending the whole history. May load the document. The default lists
    /// the heads only.
    fn summary_hashes(&self, key: &DocKey) -> Result<Option<Vec<ChangeHash>>, StoreError> {
        self.heads(key)
    }

    /// Raw changes of `key` that are not in the causal past of `their_heads` (heads the store
    /// does not know are ignored), in causal order — what `Automerge::get_changes` returns.
    /// Empty if the document is not held.
    fn changes_since(
        &self,
        key: &DocKey,
        their_heads: &[ChangeHash],
    ) -> Result<Vec<Vec<u8>>, StoreError>;

    /// Whether the local copy of `key` contains every change in `hashes` (false if the
    /// document is not held and `hashes` is not empty).
    fn has_all(&self, key: &DocKey, hashes: &[ChangeHash]) -> Result<bool, StoreError>;

    /// Compares a document with a peer's heads. The default calls [`SyncStore::heads`],
    /// [`SyncStore::changes_since`] and [`SyncStore::has_all`]; stores that load documents
    /// should override it to load once.
    fn compare(&self, key: &DocKey, their_heads: &[ChangeHash]) -> Result<DocCompare, StoreError> {
        let my_heads = self.heads(key)?;
        let Some(mine) = my_heads else {
            return Ok(DocCompare {
                my_heads: None,
                they_lack: Vec::new(),
                i_lack: !their_heads.is_empty(),
            });
        };
        let they_lack = if their_heads_cover(&mine, their_heads) {
            Vec::new()
        } else {
            self.changes_since(key, their_heads)?
        };
        let i_lack = !self.has_all(key, their_heads)?;
        Ok(DocCompare {
            my_heads: Some(mine),
            they_lack,
            i_lack,
        })
    }
}

/// `heads` followed by the dependencies of each head found by `deps` that are not already
/// listed — what [`SyncStore::summary_hashes`] returns.
pub fn heads_and_parents(
    heads: Vec<ChangeHash>,
    deps: impl Fn(&ChangeHash) -> Option<Vec<ChangeHash>>,
) -> Vec<ChangeHash> {
    let mut out = heads.clone();
    for h in &heads {
        for d in deps(h).unwrap_or_default() {
            if !out.contains(&d) {
                out.push(d);
            }
        }
    }
    out
}

/// Whether every one of `mine` is among `theirs` — then the peer has all local changes.
fn their_heads_cover(mine: &[ChangeHash], theirs: &[ChangeHash]) -> bool {
    mine.iter().all(|h| theirs.contains(h))
}
