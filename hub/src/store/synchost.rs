//! [`HubSyncHost`]: the sync service's store seam ([`SyncHost`]) over the hub's
//! [`HubStore`], so sync sessions run on either backend and on any hub process.
//!
//! - `seq()` is the feed's safe watermark now ([`HubStore::watermark`]: on PostgreSQL
//!   `pg_snapshot_xmin(pg_current_snapshot())`), so a change committed after it is listed by
//!   `changed_since` with that value, whichever process commits it.
//! - `scan_range` and `changed_since` are one index range each ([`HubStore::entries_range`],
//!   [`HubStore::changes_in_range`]): a county's session never reads the province's feed.
//! - `commit` merges ([`HubStore::apply`]): what a session received is merged into what is
//!   stored now, also when another session or process changed the document meanwhile; a
//!   tombstone's removals go in the same transaction.
//! - Peer watermarks are one metadata value ([`PEERS_META`]) in the format every host uses
//!   ([`encode_peer_memory`]), read-modified-written under a lock in this
//!   process. Two processes saving at once may lose one peer's update; that only makes that
//!   peer's next session cold (the contract of [`SyncHost::save_peer_memory`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use automerge::Automerge;
use cunyun_platform::host::{
    decode_peer_memory, encode_peer_memory, HostEntry, HostError, SyncHost,
};
use cunyun_platform::store::DocWrite;
use cunyun_protocol::identity::NodeId;
use cunyun_protocol::key::DocKey;
use cunyun_protocol::sync::PeerMemory;

use super::{FeedPos, HubStore, HubStoreError, HubWrite};

/// The metadata name of the peer watermarks.
pub const PEERS_META: &str = "sync.peers";

/// The sync service's view of a hub store (see the module documentation).
pub struct HubSyncHost {
    store: Arc<dyn HubStore>,
    /// Serialises this process's read-modify-write of [`PEERS_META`].
    peers: Mutex<()>,
}

impl HubSyncHost {
    /// The seam over `store`.
    pub fn new(store: Arc<dyn HubStore>) -> HubSyncHost {
        HubSyncHost {
            store,
            peers: Mutex::new(()),
        }
    }

    /// The store underneath.
    pub fn store(&self) -> &Arc<dyn HubStore> {
        &self.store
    }

    fn read_peers(&self) -> Result<HashMap<NodeId, PeerMemory>, HostError> {
        match self.store.meta_get(PEERS_META).map_err(host_err)? {
            None => Ok(HashMap::new()),
            Some(bytes) => Ok(decode_peer_memory(&bytes).unwrap_or_else(|e| {
                // Losing them only makes the next sessions cold.
                tracing::warn!(error = %e, "peer watermarks unreadable; starting cold");
                HashMap::new()
            })),
        }
    }
}

fn host_err(e: HubStoreError) -> HostError {
    match e {
        HubStoreError::Corrupt { key, reason } => HostError::Corrupt { key, reason },
        HubStoreError::Sled(s) => HostError::Store(s),
        other => HostError::Backend(other.to_string()),
    }
}

impl SyncHost for HubSyncHost {
    fn seq(&self) -> Result<u64, HostError> {
        Ok(self.store.watermark().map_err(host_err)?.0)
    }

    fn scan_range(&self, start: &[u8], end: &[u8]) -> Result<Vec<HostEntry>, HostError> {
        Ok(self
            .store
            .entries_range(start, end)
            .map_err(host_err)?
            .into_iter()
            .map(|(key, e)| HostEntry {
                key,
                digest: e.digest,
                pos: e.pos.0,
            })
            .collect())
    }

    fn changed_since(
        &self,
        start: &[u8],
        end: &[u8],
        since: u64,
    ) -> Result<Option<Vec<HostEntry>>, HostError> {
        let rows = self
            .store
            .changes_in_range(FeedPos(since), start, end)
            .map_err(host_err)?;
        Ok(Some(
            rows.into_iter()
                .map(|r| HostEntry {
                    key: r.key,
                    digest: r.digest,
                    pos: r.pos.0,
                })
                .collect(),
        ))
    }

    fn load(&self, key: &DocKey) -> Result<Option<Automerge>, HostError> {
        self.store.get(key).map_err(host_err)
    }

    fn contains(&self, key: &DocKey) -> Result<bool, HostError> {
        Ok(self.store.entry(key).map_err(host_err)?.is_some())
    }

    fn commit(
        &self,
        writes: Vec<DocWrite>,
        removes: Vec<DocKey>,
    ) -> Result<Vec<HostEntry>, HostError> {
        let writes: Vec<HubWrite> = writes
            .into_iter()
            .map(|w| HubWrite {
                key: w.key,
                chunk: w.chunk,
            })
            .collect();
        let applied = self.store.apply(writes, removes).map_err(host_err)?;
        let mut out = Vec::with_capacity(applied.len());
        for a in applied {
            // The feed position of the merged document (another writer may have moved it).
            let pos = self
                .store
                .entry(&a.key)
                .map_err(host_err)?
                .map_or(0, |e| e.pos.0);
            out.push(HostEntry {
                key: a.key,
                digest: a.digest,
                pos,
            });
        }
        Ok(out)
    }

    fn watch_writes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.store.watch_writes()
    }

    fn load_peer_memory(&self) -> Result<HashMap<NodeId, PeerMemory>, HostError> {
        self.read_peers()
    }

    fn save_peer_memory(&self, peer: NodeId, memory: PeerMemory) -> Result<(), HostError> {
        let _serial = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        let mut all = self.read_peers()?;
        all.insert(peer, memory);
        self.store
            .meta_put(PEERS_META, &encode_peer_memory(&all))
            .map_err(host_err)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::store::sled::SledHubStore;
    use automerge::transaction::Transactable;
    use cunyun_platform::store::StoreConfig;
    use cunyun_protocol::area::AreaScope;
    use cunyun_protocol::digest::heads_digest;

    fn doc(v: &str) -> Automerge {
        let mut d = Automerge::new();
        let mut tx = d.transaction();
        tx.put(automerge::ROOT, "v", v).unwrap();
        tx.commit();
        d
    }

    fn write(key: &DocKey, d: &Automerge) -> DocWrite {
        DocWrite {
            key: key.clone(),
            chunk: d.save(),
            heads: d.get_heads(),
            updated_at_ms: 1,
        }
    }

    #[test]
    fn sync_host_over_a_hub_store() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn HubStore> = Arc::new(
            SledHubStore::open(&dir.path().join("store"), StoreConfig::default()).unwrap(),
        );
        let host = HubSyncHost::new(Arc::clone(&store));
        let here: DocKey = "511424104201/hh/h1".parse().unwrap();
        let there: DocKey = "511425001001/hh/h2".parse().unwrap();
        let d1 = doc("一");
        let seq0 = host.seq().unwrap();
        let entries = host
            .commit(vec![write(&here, &d1), write(&there, &doc("二"))], vec![])
            .unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].digest, heads_digest(&d1.get_heads()));
        assert!(entries.iter().all(|e| e.pos >= seq0), "{entries:?}");
        assert!(host.contains(&here).unwrap());
        assert_eq!(
            host.load(&here).unwrap().unwrap().get_heads(),
            d1.get_heads()
        );

        // One county's ranges: its documents only, in the listing and in the feed.
        let (start, end) = AreaScope::parse("511424").unwrap().key_range();
        let listed: Vec<DocKey> = host
            .scan_range(&start, &end)
            .unwrap()
            .into_iter()
            .map(|e| e.key)
            .collect();
        assert_eq!(listed, vec![here.clone()]);
        let changed = host.changed_since(&start, &end, seq0).unwrap().unwrap();
        assert_eq!(changed.len(), 1);
        let seq1 = host.seq().unwrap();
        assert!(host
            .changed_since(&start, &end, seq1)
            .unwrap()
            .unwrap()
            .is_empty());

        // A commit merges into what is stored now: a concurrent writer's change survives.
        let mut other = d1.fork();
        let before = other.get_heads();
        {
            let mut tx = other.transaction();
            tx.put(automerge::ROOT, "b", "乙").unwrap();
            tx.commit();
        }
        store
            .apply(
                vec![HubWrite {
                    key: here.clone(),
                    chunk: other.save_after(&before),
                }],
                vec![],
            )
            .unwrap();
        let mut mine = d1.fork();
        let before = mine.get_heads();
        {
            let mut tx = mine.transaction();
            tx.put(automerge::ROOT, "c", "丙").unwrap();
            tx.commit();
        }
        let w = DocWrite {
            key: here.clone(),
            chunk: mine.save_after(&before),
            heads: mine.get_heads(),
            updated_at_ms: 2,
        };
        let e = host.commit(vec![w], vec![there.clone()]).unwrap();
        let merged = host.load(&here).unwrap().unwrap();
        assert_eq!(e[0].digest, heads_digest(&merged.get_heads()));
        use automerge::ReadDoc;
        assert!(merged.get(automerge::ROOT, "b").unwrap().is_some());
        assert!(merged.get(automerge::ROOT, "c").unwrap().is_some());
        assert!(
            !host.contains(&there).unwrap(),
            "removed in the same commit"
        );
        let changed = host.changed_since(&start, &end, seq1).unwrap().unwrap();
        assert_eq!(changed.len(), 1);

        // Peer memory survives a new host over the same store.
        assert!(host.load_peer_memory().unwrap().is_empty());
        let a = NodeId([1; 16]);
        let b = NodeId([2; 16]);
        let m = |n| PeerMemory {
            scope_id: n,
            peer_seq_seen: n + 1,
            my_seq_seen: n + 2,
        };
        host.save_peer_memory(a, m(10)).unwrap();
        host.save_peer_memory(b, m(20)).unwrap();
        host.save_peer_memory(a, m(30)).unwrap();
        let again = HubSyncHost::new(Arc::clone(&store));
        let mem = again.load_peer_memory().unwrap();
        assert_eq!(mem.len(), 2);
        assert_eq!(mem[&a], m(30));
        assert_eq!(mem[&b], m(20));
        // Damaged memory is only a cold start.
        store.meta_put(PEERS_META, b"not json").unwrap();
        assert!(again.load_peer_memory().unwrap().is_empty());
    }
}
