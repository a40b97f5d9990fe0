//! The node's document store as a sync session sees it ([`SyncStore`]), and applying what a
//! session received.
//!
//! **Change feed.** The session's watermark path asks for "documents changed since position
//! `seq`". The node uses each document's `updated_at_ms` from the store index as its feed
//! position, and the current time as `seq()` (read at the session's start, and again when it
//! closes): every local write and every applied remote change stamps the document with the
//! current time, so anything changed after a position was read is listed by the next session
//! (`updated_at_ms >= seq`, so a change in the same millisecond is listed too). A wall clock that jumps backwards (a Pi without a real-time
//! clock after a power cut) can hide a change from the watermark summary; the session's closing
//! fingerprint comparison then differs and the session falls back to sketches, so the cost is
//! bytes, never correctness.

use std::collections::BTreeSet;

use automerge::{Automerge, Change, ChangeHash, ReadDoc};
use cunyun_protocol::deletion::{tombstone_for, Tombstone};
use cunyun_protocol::digest::{heads_digest, HeadsDigest};
use cunyun_protocol::household::sensitive_in_profile;
use cunyun_protocol::key::{DocKey, Kind};
use cunyun_protocol::sync::{
    heads_and_parents, DocCompare, SharedScope, StoreError as SyncStoreError, SyncStore,
};

use crate::clock::now_ms;
use crate::store::{DocStore, DocWrite, StoreError};

/// Verdicts of the sensitive-content check per document version. A heads digest names one
/// document state exactly, so a verdict holds for every store in the process; kept so that a
/// session with the hub loads only the `hh` documents that changed since the last check.
mod verdicts {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};

    use cunyun_protocol::digest::HeadsDigest;
    use cunyun_protocol::key::DocKey;

    /// Most verdicts kept; the map is cleared when it is full (they are recomputed).
    const MAX: usize = 200_000;

    type Map = HashMap<(DocKey, HeadsDigest), bool>;

    fn map() -> &'static Mutex<Map> {
        static MAP: OnceLock<Mutex<Map>> = OnceLock::new();
        MAP.get_or_init(|| Mutex::new(HashMap::new()))
    }

    pub(super) fn get(key: &DocKey, digest: HeadsDigest) -> Option<bool> {
        let m = map().lock().ok()?;
        m.get(&(key.clone(), digest)).copied()
    }

    pub(super) fn put(key: &DocKey, digest: HeadsDigest, withheld: bool) {
        if let Ok(mut m) = map().lock() {
            if m.len() >= MAX {
                m.clear();
            }
            m.insert((key.clone(), digest), withheld);
        }
    }
}

fn sync_err(e: StoreError) -> SyncStoreError {
    SyncStoreError(e.to_string())
}

/// One session's copy of the shared scope's index: `(key, digest, updated_at_ms)` in key order.
///
/// A session reads the index several times (its starting snapshot, the watermark summary, the
/// check before `Done`); scanning 50,000 entries from disk each time is most of a session's CPU.
/// The cache is filled by the first scan and kept in step with what the session itself applies
/// ([`IndexCache::record`]). Writes made by others during the session (a cadre's edit) are not in
/// it; the closing fingerprint comparison, or the next session's, catches those.
#[derive(Default)]
pub struct IndexCache {
    entries: std::sync::Mutex<Option<CachedIndex>>,
}

/// The shared scope's id and its entries `(key, digest, updated_at_ms)` in key order.
type CachedIndex = (u64, Vec<(DocKey, HeadsDigest, u64)>);

impl IndexCache {
    /// Notes that `key` now has `digest`, written at `updated_at_ms`.
    pub fn record(&self, key: &DocKey, digest: HeadsDigest, updated_at_ms: u64) {
        let Ok(mut guard) = self.entries.lock() else {
            return;
        };
        if let Some((_, list)) = guard.as_mut() {
            match list.binary_search_by(|(k, _, _)| k.cmp(key)) {
                Ok(i) => list[i] = (key.clone(), digest, updated_at_ms),
                Err(i) => list.insert(i, (key.clone(), digest, updated_at_ms)),
            }
        }
    }

    /// Notes that `key` was removed.
    pub fn forget(&self, key: &DocKey) {
        let Ok(mut guard) = self.entries.lock() else {
            return;
        };
        if let Some((_, list)) = guard.as_mut() {
            if let Ok(i) = list.binary_search_by(|(k, _, _)| k.cmp(key)) {
                list.remove(i);
            }
        }
    }

    /// Forgets everything (the next read scans again).
    pub fn clear(&self) {
        if let Ok(mut guard) = self.entries.lock() {
            *guard = None;
        }
    }
}

/// A [`DocStore`] viewed by one sync session.
pub struct NodeSyncStore<'a> {
    store: &'a DocStore,
    cache: Option<&'a IndexCache>,
    /// The peer is above the county: `hh` documents carrying sensitive content are neither
    /// listed nor sent.
    withhold_sensitive: bool,
}

impl<'a> NodeSyncStore<'a> {
    /// A view of `store` that scans the index on every read.
    pub fn new(store: &'a DocStore) -> NodeSyncStore<'a> {
        NodeSyncStore {
            store,
            cache: None,
            withhold_sensitive: false,
        }
    }

    /// A view of `store` whose index reads go through the session's `cache`.
    pub fn with_cache(store: &'a DocStore, cache: &'a IndexCache) -> NodeSyncStore<'a> {
        NodeSyncStore {
            store,
            cache: Some(cache),
            withhold_sensitive: false,
        }
    }

    /// This view for a session with a peer above the county (`withhold` true): `hh` documents
    /// that carry sensitive content are left out of every listing and no change of them is
    /// sent, so they never leave the county. Each is logged once per version
    /// (`cunyun::_events::sync_withheld`).
    pub fn withholding_sensitive(mut self, withhold: bool) -> NodeSyncStore<'a> {
        self.withhold_sensitive = withhold;
        self
    }

    /// Whether `key` (at `digest`) is an `hh` document this view must not send.
    fn withheld(&self, key: &DocKey, digest: HeadsDigest) -> Result<bool, SyncStoreError> {
        if !self.withhold_sensitive || key.kind() != Kind::Hh {
            return Ok(false);
        }
        if let Some(v) = verdicts::get(key, digest) {
            return Ok(v);
        }
        let Some(doc) = self.load(key)? else {
            return Ok(false);
        };
        let found = sensitive_in_profile(&doc).unwrap_or_else(|e| vec![format!("unreadable: {e}")]);
        let withheld = !found.is_empty();
        if withheld {
            tracing::warn!(
                target: "cunyun::_events::sync_withheld",
                key = %key,
                fields = ?found,
                "a household profile with sensitive content is not sent above the county"
            );
        }
        verdicts::put(key, digest, withheld);
        Ok(withheld)
    }

    /// Whether the loaded `doc` of `key` must not be sent.
    fn withheld_doc(&self, key: &DocKey, doc: &Automerge) -> Result<bool, SyncStoreError> {
        if !self.withhold_sensitive || key.kind() != Kind::Hh {
            return Ok(false);
        }
        self.withheld(key, heads_digest(&doc.get_heads()))
    }

    fn scan(
        &self,
        scope: &SharedScope,
        since: Option<u64>,
    ) -> Result<Vec<(DocKey, HeadsDigest)>, SyncStoreError> {
        let keep = |updated: u64| since.is_none_or(|s| updated >= s);
        let Some(cache) = self.cache else {
            return Ok(self
                .scan_store(scope)?
                .into_iter()
                .filter(|(_, _, u)| keep(*u))
                .map(|(k, d, _)| (k, d))
                .collect());
        };
        let mut guard = cache
            .entries
            .lock()
            .map_err(|_| SyncStoreError("index cache poisoned".into()))?;
        if guard.as_ref().is_none_or(|(id, _)| *id != scope.id()) {
            *guard = Some((scope.id(), self.scan_store(scope)?));
        }
        Ok(guard
            .as_ref()
            .map(|(_, list)| {
                list.iter()
                    .filter(|(_, _, u)| keep(*u))
                    .map(|(k, d, _)| (k.clone(), *d))
                    .collect()
            })
            .unwrap_or_default())
    }

    fn scan_store(
        &self,
        scope: &SharedScope,
    ) -> Result<Vec<(DocKey, HeadsDigest, u64)>, SyncStoreError> {
        let mut out = Vec::new();
        for (start, end) in scope.key_ranges() {
            for item in self.store.scan_range(&start, &end) {
                match item {
                    Ok((key, entry)) => {
                        if scope.contains(&key) && !self.withheld(&key, entry.digest)? {
                            out.push((key, entry.digest, entry.updated_at_ms));
                        }
                    }
                    // A corrupt index entry is quarantined by the store; leave it out rather
                    // than fail the whole session (the fingerprint check catches any mismatch).
                    Err(StoreError::Corrupt { key, reason }) => {
                        tracing::warn!(key, reason, "corrupt index entry left out of sync");
                    }
                    Err(e) => return Err(sync_err(e)),
                }
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    fn load(&self, key: &DocKey) -> Result<Option<Automerge>, SyncStoreError> {
        self.store.load(key).map_err(sync_err)
    }

    /// The document as the session may see it: a withheld one reads as absent.
    fn load_shareable(&self, key: &DocKey) -> Result<Option<Automerge>, SyncStoreError> {
        match self.load(key)? {
            Some(doc) if self.withheld_doc(key, &doc)? => Ok(None),
            other => Ok(other),
        }
    }
}

fn changes_not_covered(doc: &Automerge, their_heads: &[ChangeHash]) -> Vec<Vec<u8>> {
    let known: Vec<ChangeHash> = their_heads
        .iter()
        .copied()
        .filter(|h| doc.get_change_by_hash(h).is_some())
        .collect();
    doc.get_changes(&known)
        .into_iter()
        .map(|c| c.raw_bytes().to_vec())
        .collect()
}

impl SyncStore for NodeSyncStore<'_> {
    fn seq(&self) -> u64 {
        now_ms()
    }

    fn entries(&self, scope: &SharedScope) -> Result<Vec<(DocKey, HeadsDigest)>, SyncStoreError> {
        self.scan(scope, None)
    }

    fn entries_since(
        &self,
        scope: &SharedScope,
        seq: u64,
    ) -> Result<Option<Vec<(DocKey, HeadsDigest)>>, SyncStoreError> {
        self.scan(scope, Some(seq)).map(Some)
    }

    fn heads(&self, key: &DocKey) -> Result<Option<Vec<ChangeHash>>, SyncStoreError> {
        Ok(self.load_shareable(key)?.map(|d| d.get_heads()))
    }

    fn summary_hashes(&self, key: &DocKey) -> Result<Option<Vec<ChangeHash>>, SyncStoreError> {
        Ok(self.load_shareable(key)?.map(|d| {
            heads_and_parents(d.get_heads(), |h| {
                d.get_change_by_hash(h).map(|c| c.deps().to_vec())
            })
        }))
    }

    fn changes_since(
        &self,
        key: &DocKey,
        their_heads: &[ChangeHash],
    ) -> Result<Vec<Vec<u8>>, SyncStoreError> {
        Ok(self
            .load_shareable(key)?
            .map(|d| changes_not_covered(&d, their_heads))
            .unwrap_or_default())
    }

    fn has_all(&self, key: &DocKey, hashes: &[ChangeHash]) -> Result<bool, SyncStoreError> {
        Ok(match self.load_shareable(key)? {
            Some(d) => hashes.iter().all(|h| d.get_change_by_hash(h).is_some()),
            None => hashes.is_empty(),
        })
    }

    fn compare(
        &self,
        key: &DocKey,
        their_heads: &[ChangeHash],
    ) -> Result<DocCompare, SyncStoreError> {
        let Some(doc) = self.load_shareable(key)? else {
            return Ok(DocCompare {
                my_heads: None,
                they_lack: Vec::new(),
                i_lack: !their_heads.is_empty(),
            });
        };
        let mine = doc.get_heads();
        let they_lack = if mine.iter().all(|h| their_heads.contains(h)) {
            Vec::new()
        } else {
            changes_not_covered(&doc, their_heads)
        };
        let i_lack = !their_heads
            .iter()
            .all(|h| doc.get_change_by_hash(h).is_some());
        Ok(DocCompare {
            my_heads: Some(mine),
            they_lack,
            i_lack,
        })
    }
}

/// Why received changes could not be applied.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApplyError {
    /// The bytes are not automerge changes, or automerge refused them.
    #[error("收到的变更无法应用到 {key}: {reason}")]
    Invalid {
        /// The document.
        key: String,
        /// What automerge said.
        reason: String,
    },
    /// The household was deleted here (its tombstone is in the store or in the same batch);
    /// its documents are never stored again.
    #[error("农户已删除，拒收 {key}")]
    Deleted {
        /// The document.
        key: String,
    },
    /// This node is above the county and the profile carries sensitive content.
    #[error("{key} 含敏感内容（{fields}），县级以上节点拒收")]
    Sensitive {
        /// The document.
        key: String,
        /// What was found (JSON paths).
        fields: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What applying a batch did.
#[derive(Debug, Default)]
pub struct Applied {
    /// Documents that changed and were committed.
    pub documents: usize,
    /// Each committed document's key, new heads digest and update time.
    pub written: Vec<(DocKey, HeadsDigest, u64)>,
    /// Documents removed because a tombstone for their household arrived in the batch.
    pub removed: Vec<DocKey>,
    /// Documents skipped because their changes were refused (nothing of them was written).
    pub failed: Vec<ApplyError>,
}

/// What the receiving node enforces on a batch beyond the shared scope.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReceivePolicy {
    /// This node is above the county: a profile carrying sensitive content is refused.
    pub refuse_sensitive: bool,
}

fn apply_one(
    store: &DocStore,
    key: &DocKey,
    changes: Vec<Vec<u8>>,
    policy: ReceivePolicy,
) -> Result<Option<DocWrite>, ApplyError> {
    let invalid = |e: &dyn std::fmt::Display| ApplyError::Invalid {
        key: key.to_string(),
        reason: e.to_string(),
    };
    let mut doc = store.load(key)?.unwrap_or_default();
    let before = doc.get_heads();
    let parsed = changes
        .into_iter()
        .map(|raw| Change::from_bytes(raw).map_err(|e| invalid(&e)))
        .collect::<Result<Vec<_>, _>>()?;
    doc.apply_changes(parsed).map_err(|e| invalid(&e))?;
    let after = doc.get_heads();
    if after == before {
        return Ok(None);
    }
    if key.kind() == Kind::Del {
        // A tombstone removes documents: only a well-formed one for its own key counts.
        Tombstone::read_from(&doc, key).map_err(|e| invalid(&e))?;
    }
    if policy.refuse_sensitive && key.kind() == Kind::Hh {
        let found = sensitive_in_profile(&doc).map_err(|e| invalid(&e))?;
        if !found.is_empty() {
            return Err(ApplyError::Sensitive {
                key: key.to_string(),
                fields: found.join(", "),
            });
        }
    }
    // Changes whose dependencies are still missing wait in the document's queue and are not part
    // of the saved state; the next session delivers the rest.
    Ok(Some(DocWrite {
        key: key.clone(),
        chunk: if before.is_empty() {
            doc.save()
        } else {
            doc.save_after(&before)
        },
        heads: after,
        updated_at_ms: now_ms(),
    }))
}

/// Applies received changes to several documents and commits them in one durable batch: each
/// document is written whole or not at all, and nothing is acknowledged before the flush. A
/// document whose changes are refused is skipped (and reported); the others are still written.
///
/// Deletion: a tombstone (`del`) in the batch removes its household's documents in the same
/// batch; a document of a household whose tombstone is here (stored or in the batch) is
/// refused, so a stale peer cannot bring it back. Refusals are logged as
/// `cunyun::_events::sync_refused`.
pub fn apply_changes(
    store: &DocStore,
    batch: Vec<(DocKey, Vec<Vec<u8>>)>,
    policy: ReceivePolicy,
) -> Result<Applied, StoreError> {
    let mut writes = Vec::with_capacity(batch.len());
    let mut applied = Applied::default();
    let incoming_tombstones: BTreeSet<DocKey> = batch
        .iter()
        .filter(|(k, _)| k.kind() == Kind::Del)
        .map(|(k, _)| k.clone())
        .collect();
    let mut removes = BTreeSet::new();
    for (key, changes) in batch {
        if let Some(t) = tombstone_for(&key) {
            if incoming_tombstones.contains(&t) || store.entry(&t)?.is_some() {
                applied.failed.push(ApplyError::Deleted {
                    key: key.to_string(),
                });
                continue;
            }
        }
        let result = apply_one(store, &key, changes, policy);
        if key.kind() == Kind::Del && result.is_ok() {
            // Also when the tombstone was known: whatever of the household is still here goes.
            removes.extend(cunyun_protocol::deletion::removed_by(&key));
        }
        match result {
            Ok(Some(w)) => {
                if key.kind() == Kind::Del {
                    tracing::info!(
                        target: "cunyun::_events::household_deleted",
                        key = %key,
                        origin = "sync"
                    );
                }
                writes.push(w);
            }
            Ok(None) => {}
            Err(ApplyError::Store(e)) if !e.is_corrupt() => return Err(e),
            Err(e) => applied.failed.push(e),
        }
    }
    for e in &applied.failed {
        if matches!(e, ApplyError::Deleted { .. } | ApplyError::Sensitive { .. }) {
            tracing::warn!(target: "cunyun::_events::sync_refused", error = %e, "received document refused");
        }
    }
    // Only documents the store holds are reported as removed.
    let mut removed = Vec::new();
    for key in removes {
        if store.entry(&key)?.is_some() {
            removed.push(key);
        }
    }
    applied.documents = writes.len();
    applied.written = writes
        .iter()
        .map(|w| (w.key.clone(), heads_digest(&w.heads), w.updated_at_ms))
        .collect();
    if !writes.is_empty() || !removed.is_empty() {
        store.commit_with_removals(writes, removed.clone())?;
    }
    applied.removed = removed;
    Ok(applied)
}
