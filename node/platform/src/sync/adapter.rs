//! A [`SyncHost`] as a sync session sees it ([`SyncStore`]), and applying what a session
//! received. Written once over the trait, so the node's sled store and the hub's stores share
//! the privacy boundary (sensitive `hh` profiles withheld above the county, refused there), the
//! tombstone checks and the session's index cache.
//!
//! **Change feed.** The session's watermark path asks for "documents changed since position
//! `seq`": [`SyncHost::seq`] and [`SyncHost::changed_since`] answer it (the node's positions are
//! wall-clock milliseconds, see [`crate::host::node`]). A session's [`IndexCache`] answers it
//! from the listed feed positions instead (`pos >= seq`), which the contract of
//! [`HostEntry::pos`] allows.

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
use crate::host::{HostEntry, HostError, SyncHost};
use crate::store::DocWrite;

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

fn sync_err(e: HostError) -> SyncStoreError {
    SyncStoreError(e.to_string())
}

/// One session's copy of the shared scope's listing: `(key, digest, feed position)` in key order.
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

/// The shared scope's id and its entries `(key, digest, feed position)` in key order.
type CachedIndex = (u64, Vec<(DocKey, HeadsDigest, u64)>);

impl IndexCache {
    /// Notes that `key` now has `digest`, written at feed position `pos`.
    pub fn record(&self, key: &DocKey, digest: HeadsDigest, pos: u64) {
        let Ok(mut guard) = self.entries.lock() else {
            return;
        };
        if let Some((_, list)) = guard.as_mut() {
            match list.binary_search_by(|(k, _, _)| k.cmp(key)) {
                Ok(i) => list[i] = (key.clone(), digest, pos),
                Err(i) => list.insert(i, (key.clone(), digest, pos)),
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

/// A [`SyncHost`] viewed by one sync session.
pub struct HostSyncStore<'a> {
    host: &'a dyn SyncHost,
    cache: Option<&'a IndexCache>,
    /// The peer is above the county: `hh` documents carrying sensitive content are neither
    /// listed nor sent.
    withhold_sensitive: bool,
}

impl<'a> HostSyncStore<'a> {
    /// A view of `host` that asks the host on every read.
    pub fn new(host: &'a dyn SyncHost) -> HostSyncStore<'a> {
        HostSyncStore {
            host,
            cache: None,
            withhold_sensitive: false,
        }
    }

    /// A view of `host` whose listings go through the session's `cache`.
    pub fn with_cache(host: &'a dyn SyncHost, cache: &'a IndexCache) -> HostSyncStore<'a> {
        HostSyncStore {
            host,
            cache: Some(cache),
            withhold_sensitive: false,
        }
    }

    /// This view for a session with a peer above the county (`withhold` true): `hh` documents
    /// that carry sensitive content are left out of every listing and no change of them is
    /// sent, so they never leave the county. Each is logged once per version
    /// (`cunyun::_events::sync_withheld`).
    pub fn withholding_sensitive(mut self, withhold: bool) -> HostSyncStore<'a> {
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

    /// The scope's documents (changed at or after `since`, if given) as the session may see
    /// them, in key order.
    fn scan(
        &self,
        scope: &SharedScope,
        since: Option<u64>,
    ) -> Result<Option<Vec<(DocKey, HeadsDigest)>>, SyncStoreError> {
        let keep = |pos: u64| since.is_none_or(|s| pos >= s);
        let Some(cache) = self.cache else {
            let listed = match since {
                None => Some(self.list(scope, |start, end| self.host.scan_range(start, end))?),
                Some(s) => {
                    self.list_maybe(scope, |start, end| self.host.changed_since(start, end, s))?
                }
            };
            return Ok(listed.map(|l| l.into_iter().map(|(k, d, _)| (k, d)).collect()));
        };
        let mut guard = cache
            .entries
            .lock()
            .map_err(|_| SyncStoreError("index cache poisoned".into()))?;
        if guard.as_ref().is_none_or(|(id, _)| *id != scope.id()) {
            let listed = self.list(scope, |start, end| self.host.scan_range(start, end))?;
            *guard = Some((scope.id(), listed));
        }
        Ok(Some(
            guard
                .as_ref()
                .map(|(_, list)| {
                    list.iter()
                        .filter(|(_, _, pos)| keep(*pos))
                        .map(|(k, d, _)| (k.clone(), *d))
                        .collect()
                })
                .unwrap_or_default(),
        ))
    }

    /// Every shareable document of `scope` that `read` lists over its key ranges, sorted.
    fn list(
        &self,
        scope: &SharedScope,
        read: impl Fn(&[u8], &[u8]) -> Result<Vec<HostEntry>, HostError>,
    ) -> Result<Vec<(DocKey, HeadsDigest, u64)>, SyncStoreError> {
        let listed = self.list_maybe(scope, |start, end| read(start, end).map(Some))?;
        Ok(listed.unwrap_or_default())
    }

    /// Like [`HostSyncStore::list`], but `None` as soon as one range's `read` cannot tell.
    fn list_maybe(
        &self,
        scope: &SharedScope,
        read: impl Fn(&[u8], &[u8]) -> Result<Option<Vec<HostEntry>>, HostError>,
    ) -> Result<Option<Vec<(DocKey, HeadsDigest, u64)>>, SyncStoreError> {
        let mut out = Vec::new();
        for (start, end) in scope.key_ranges() {
            let Some(entries) = read(&start, &end).map_err(sync_err)? else {
                return Ok(None);
            };
            for e in entries {
                if scope.contains(&e.key) && !self.withheld(&e.key, e.digest)? {
                    out.push((e.key, e.digest, e.pos));
                }
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(Some(out))
    }

    fn load(&self, key: &DocKey) -> Result<Option<Automerge>, SyncStoreError> {
        self.host.load(key).map_err(sync_err)
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

impl SyncStore for HostSyncStore<'_> {
    fn seq(&self) -> u64 {
        // Position 0 makes the peer ask for everything next time: bytes, never correctness.
        self.host.seq().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "change-feed position unreadable; the next session is cold");
            0
        })
    }

    fn entries(&self, scope: &SharedScope) -> Result<Vec<(DocKey, HeadsDigest)>, SyncStoreError> {
        Ok(self.scan(scope, None)?.unwrap_or_default())
    }

    fn entries_since(
        &self,
        scope: &SharedScope,
        seq: u64,
    ) -> Result<Option<Vec<(DocKey, HeadsDigest)>>, SyncStoreError> {
        self.scan(scope, Some(seq))
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
    Store(#[from] HostError),
}

/// What applying a batch did.
#[derive(Debug, Default)]
pub struct Applied {
    /// Documents that changed and were committed.
    pub documents: usize,
    /// Each committed document's key, new heads digest and feed position, as the host
    /// committed them.
    pub written: Vec<HostEntry>,
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
    host: &dyn SyncHost,
    key: &DocKey,
    changes: Vec<Vec<u8>>,
    policy: ReceivePolicy,
) -> Result<Option<DocWrite>, ApplyError> {
    let invalid = |e: &dyn std::fmt::Display| ApplyError::Invalid {
        key: key.to_string(),
        reason: e.to_string(),
    };
    let mut doc = host.load(key)?.unwrap_or_default();
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
    host: &dyn SyncHost,
    batch: Vec<(DocKey, Vec<Vec<u8>>)>,
    policy: ReceivePolicy,
) -> Result<Applied, HostError> {
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
            if incoming_tombstones.contains(&t) || host.contains(&t)? {
                applied.failed.push(ApplyError::Deleted {
                    key: key.to_string(),
                });
                continue;
            }
        }
        let result = apply_one(host, &key, changes, policy);
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
        if host.contains(&key)? {
            removed.push(key);
        }
    }
    applied.documents = writes.len();
    if !writes.is_empty() || !removed.is_empty() {
        applied.written = host.commit(writes, removed.clone())?;
    }
    applied.removed = removed;
    Ok(applied)
}

#[cfg(test)]
mod tests {
    //! The adapter over a backend that is not the node's store: a `BTreeMap` with its own feed
    //! counter, as the hub's stores have one.
    use std::collections::{BTreeMap, HashMap};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Mutex;

    use automerge::transaction::Transactable;
    use automerge::ROOT;
    use cunyun_protocol::deletion::DeletionReason;
    use cunyun_protocol::fields::Date;
    use cunyun_protocol::identity::NodeId;
    use cunyun_protocol::sync::PeerMemory;

    use super::*;

    /// Documents as saved bytes with the feed position of their last write.
    struct MapHost {
        docs: Mutex<BTreeMap<DocKey, (Vec<u8>, u64)>>,
        feed: AtomicU64,
        written: tokio::sync::watch::Sender<u64>,
    }

    impl MapHost {
        fn new() -> MapHost {
            MapHost {
                docs: Mutex::new(BTreeMap::new()),
                // Far from any wall-clock value, so a position taken from the clock would show.
                feed: AtomicU64::new(100),
                written: tokio::sync::watch::Sender::new(0),
            }
        }

        fn entry(key: &DocKey, bytes: &[u8], pos: u64) -> HostEntry {
            let doc = Automerge::load(bytes).expect("stored bytes load");
            HostEntry {
                key: key.clone(),
                digest: heads_digest(&doc.get_heads()),
                pos,
            }
        }
    }

    impl SyncHost for MapHost {
        fn seq(&self) -> Result<u64, HostError> {
            // The position the next write gets.
            Ok(self.feed.load(Ordering::SeqCst) + 1)
        }

        fn scan_range(&self, start: &[u8], end: &[u8]) -> Result<Vec<HostEntry>, HostError> {
            let docs = self.docs.lock().expect("lock");
            Ok(docs
                .iter()
                .filter(|(k, _)| {
                    let b = k.to_bytes();
                    b.as_slice() >= start && b.as_slice() < end
                })
                .map(|(k, (bytes, pos))| MapHost::entry(k, bytes, *pos))
                .collect())
        }

        fn changed_since(
            &self,
            start: &[u8],
            end: &[u8],
            since: u64,
        ) -> Result<Option<Vec<HostEntry>>, HostError> {
            let mut all = self.scan_range(start, end)?;
            all.retain(|e| e.pos >= since);
            Ok(Some(all))
        }

        fn load(&self, key: &DocKey) -> Result<Option<Automerge>, HostError> {
            let docs = self.docs.lock().expect("lock");
            docs.get(key)
                .map(|(bytes, _)| Automerge::load(bytes))
                .transpose()
                .map_err(|e| HostError::Backend(e.to_string()))
        }

        fn contains(&self, key: &DocKey) -> Result<bool, HostError> {
            Ok(self.docs.lock().expect("lock").contains_key(key))
        }

        fn commit(
            &self,
            writes: Vec<DocWrite>,
            removes: Vec<DocKey>,
        ) -> Result<Vec<HostEntry>, HostError> {
            let mut docs = self.docs.lock().expect("lock");
            let mut out = Vec::new();
            for w in writes {
                // Merge into what is stored, as a store shared by several writers must.
                let mut bytes = docs.get(&w.key).map(|(b, _)| b.clone()).unwrap_or_default();
                bytes.extend_from_slice(&w.chunk);
                let merged = Automerge::load(&bytes)
                    .map_err(|e| HostError::Backend(e.to_string()))?
                    .save();
                let pos = self.feed.fetch_add(1, Ordering::SeqCst) + 1;
                out.push(MapHost::entry(&w.key, &merged, pos));
                docs.insert(w.key, (merged, pos));
            }
            for k in removes {
                docs.remove(&k);
            }
            self.written.send_modify(|n| *n += 1);
            Ok(out)
        }

        fn watch_writes(&self) -> tokio::sync::watch::Receiver<u64> {
            self.written.subscribe()
        }

        fn load_peer_memory(&self) -> Result<HashMap<NodeId, PeerMemory>, HostError> {
            Ok(HashMap::new())
        }

        fn save_peer_memory(&self, _: NodeId, _: PeerMemory) -> Result<(), HostError> {
            Ok(())
        }
    }

    fn changes(fill: impl FnOnce(&mut automerge::transaction::Transaction<'_>)) -> Vec<Vec<u8>> {
        let mut d = Automerge::new();
        let mut tx = d.transaction();
        fill(&mut tx);
        tx.commit();
        d.get_changes(&[])
            .into_iter()
            .map(|c| c.raw_bytes().to_vec())
            .collect()
    }

    #[test]
    fn a_document_whose_tombstone_another_backend_stores_is_refused() {
        let host = MapHost::new();
        let hh = DocKey::parse("510116108203/hh/h1").expect("key");
        let del = hh.with_kind(Kind::Del);
        let other = DocKey::parse("510116108203/hh/h2").expect("key");
        // The tombstone is stored (it arrived earlier).
        let tombstone = changes(|tx| {
            Tombstone::new(
                *del.area(),
                "h1",
                Date::parse("2026-12-01").expect("date"),
                DeletionReason::Withdrawn,
                "wang",
            )
            .expect("tombstone")
            .write_to(tx)
            .expect("write");
        });
        let first = apply_changes(
            &host,
            vec![(del.clone(), tombstone)],
            ReceivePolicy::default(),
        )
        .expect("apply tombstone");
        assert_eq!(first.documents, 1);
        assert!(host.contains(&del).expect("contains"));
        let seq = host.seq().expect("seq");
        // A stale peer sends the deleted household's profile and another household's.
        let stale = changes(|tx| {
            tx.put(ROOT, "group", 2).expect("put");
        });
        let fresh = changes(|tx| {
            tx.put(ROOT, "group", 3).expect("put");
        });
        let applied = apply_changes(
            &host,
            vec![(hh.clone(), stale), (other.clone(), fresh)],
            ReceivePolicy::default(),
        )
        .expect("apply");
        assert!(
            matches!(&applied.failed[..], [ApplyError::Deleted { key }] if *key == hh.to_string()),
            "{:?}",
            applied.failed
        );
        assert!(
            !host.contains(&hh).expect("contains"),
            "the deleted profile came back"
        );
        // The other document went through the backend's own commit and feed.
        assert_eq!(applied.documents, 1);
        assert_eq!(applied.written.len(), 1);
        assert_eq!(applied.written[0].key, other);
        assert_eq!(applied.written[0].pos, seq);
        let changed = host
            .changed_since(b"510116108203/", b"510116108203:", seq)
            .expect("feed")
            .expect("can tell");
        assert_eq!(changed, applied.written);
    }
}
