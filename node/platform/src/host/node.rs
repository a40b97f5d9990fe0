//! [`NodeHost`]: the node's sled [`DocStore`] as a [`SyncHost`], with the peer watermarks in
//! `<data_dir>/sync/peers.json`.
//!
//! **Feed positions.** The node has no change counter that survives restarts; it uses each
//! document's `updated_at_ms` from the store index as its feed position and the wall clock as
//! [`SyncHost::seq`]. Every local write and every applied remote change stamps the document with
//! the current time, so a change committed after `seq()` returned has `updated_at_ms >= seq` and
//! is listed by [`SyncHost::changed_since`] (`>=`, so a change in the same millisecond is listed
//! too). A wall clock that jumps backwards (a Pi without a real-time clock after a power cut) can
//! hide a change from the watermark summary; the session's closing fingerprint comparison then
//! differs and the session falls back to sketches, so the cost is bytes, never correctness.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use automerge::Automerge;
use cunyun_protocol::digest::heads_digest;
use cunyun_protocol::identity::NodeId;
use cunyun_protocol::key::DocKey;
use cunyun_protocol::sync::PeerMemory;

use crate::clock::now_ms;
use crate::host::{decode_peer_memory, encode_peer_memory, HostEntry, HostError, SyncHost};
use crate::store::{DocStore, DocWrite, StoreError};

/// The node's document store as the sync service's host (see the module documentation).
pub struct NodeHost {
    store: DocStore,
    memory_path: PathBuf,
    /// Serialises read-modify-write of the watermark file.
    memory_lock: Mutex<()>,
}

impl NodeHost {
    /// `store` as a host; peer watermarks live in `<data_dir>/sync/peers.json`.
    pub fn new(store: DocStore, data_dir: &Path) -> NodeHost {
        NodeHost {
            store,
            memory_path: data_dir.join("sync").join("peers.json"),
            memory_lock: Mutex::new(()),
        }
    }

    /// The store it serves.
    pub fn store(&self) -> &DocStore {
        &self.store
    }

    /// Where the peer watermarks are kept.
    pub fn memory_path(&self) -> &Path {
        &self.memory_path
    }
}

impl SyncHost for NodeHost {
    fn seq(&self) -> Result<u64, HostError> {
        Ok(now_ms())
    }

    fn scan_range(&self, start: &[u8], end: &[u8]) -> Result<Vec<HostEntry>, HostError> {
        let mut out = Vec::new();
        for item in self.store.scan_range(start, end) {
            match item {
                Ok((key, entry)) => out.push(HostEntry {
                    key,
                    digest: entry.digest,
                    pos: entry.updated_at_ms,
                }),
                // A corrupt index entry is quarantined by the store; leave it out rather than
                // fail the whole listing (the session's fingerprint check catches any mismatch).
                Err(StoreError::Corrupt { key, reason }) => {
                    tracing::warn!(key, reason, "corrupt index entry left out of sync");
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(out)
    }

    fn changed_since(
        &self,
        start: &[u8],
        end: &[u8],
        since: u64,
    ) -> Result<Option<Vec<HostEntry>>, HostError> {
        let mut entries = self.scan_range(start, end)?;
        entries.retain(|e| e.pos >= since);
        Ok(Some(entries))
    }

    fn load(&self, key: &DocKey) -> Result<Option<Automerge>, HostError> {
        Ok(self.store.load(key)?)
    }

    fn contains(&self, key: &DocKey) -> Result<bool, HostError> {
        Ok(self.store.entry(key)?.is_some())
    }

    fn commit(
        &self,
        writes: Vec<DocWrite>,
        removes: Vec<DocKey>,
    ) -> Result<Vec<HostEntry>, HostError> {
        let entries = writes
            .iter()
            .map(|w| HostEntry {
                key: w.key.clone(),
                digest: heads_digest(&w.heads),
                pos: w.updated_at_ms,
            })
            .collect();
        self.store.commit_with_removals(writes, removes)?;
        Ok(entries)
    }

    fn watch_writes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.store.watch_writes()
    }

    fn load_peer_memory(&self) -> Result<HashMap<NodeId, PeerMemory>, HostError> {
        Ok(load_memory(&self.memory_path))
    }

    fn save_peer_memory(&self, peer: NodeId, memory: PeerMemory) -> Result<(), HostError> {
        // A poisoned lock guards nothing but the file, which is replaced atomically.
        let _guard = self.memory_lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut all = load_memory(&self.memory_path);
        all.insert(peer, memory);
        save_memory(&self.memory_path, &all).map_err(|e| {
            HostError::Backend(format!(
                "无法保存同步水位文件 {}：{e}",
                self.memory_path.display()
            ))
        })
    }
}

fn load_memory(path: &Path) -> HashMap<NodeId, PeerMemory> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return HashMap::new(),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "peer watermarks unreadable; starting cold");
            return HashMap::new();
        }
    };
    decode_peer_memory(&bytes).unwrap_or_else(|e| {
        // Losing watermarks only makes the next sessions cold.
        tracing::warn!(path = %path.display(), error = %e, "peer watermarks unreadable; starting cold");
        HashMap::new()
    })
}

/// Replaces `path` with `memory` durably: temporary file, fsync, rename, fsync of the directory.
fn save_memory(path: &Path, memory: &HashMap<NodeId, PeerMemory>) -> std::io::Result<()> {
    use std::io::Write;
    let bytes = encode_peer_memory(memory);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("json.tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use automerge::transaction::Transactable;
    use automerge::ROOT;
    use cunyun_protocol::key::{DocKey, Kind};

    use crate::store::StoreConfig;

    fn key(id: &str) -> DocKey {
        DocKey::new("510116108203".parse().expect("area"), Kind::Hh, id).expect("key")
    }

    fn write(k: &DocKey, value: i64) -> DocWrite {
        let mut doc = Automerge::new();
        let mut tx = doc.transaction();
        tx.put(ROOT, "v", value).expect("put");
        tx.commit();
        DocWrite {
            key: k.clone(),
            chunk: doc.save(),
            heads: doc.get_heads(),
            updated_at_ms: now_ms(),
        }
    }

    #[test]
    fn a_change_committed_after_seq_is_listed_by_changed_since() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store =
            DocStore::open(&dir.path().join("store"), StoreConfig::default()).expect("open");
        let host = NodeHost::new(store, dir.path());
        let (old, new) = (key("h1"), key("h2"));
        host.commit(vec![write(&old, 1)], Vec::new())
            .expect("commit");
        // Make sure the next write lands in a later millisecond than the old one.
        std::thread::sleep(std::time::Duration::from_millis(3));
        let seq = host.seq().expect("seq");
        let committed = host
            .commit(vec![write(&new, 2)], Vec::new())
            .expect("commit");
        assert_eq!(committed.len(), 1);
        assert!(committed[0].pos >= seq);
        let (start, end) = (b"510116108203/".to_vec(), b"510116108203:".to_vec());
        let listed = host
            .changed_since(&start, &end, seq)
            .expect("changed since")
            .expect("the node can tell");
        let keys: Vec<&DocKey> = listed.iter().map(|e| &e.key).collect();
        assert_eq!(keys, vec![&new], "only the change after seq: {listed:?}");
        assert_eq!(listed[0], committed[0]);
        // Everything is listed from 0, and by scan_range.
        let all = host.changed_since(&start, &end, 0).expect("since 0");
        assert_eq!(all.map(|l| l.len()), Some(2));
        assert_eq!(host.scan_range(&start, &end).expect("scan").len(), 2);
        assert!(host.contains(&new).expect("contains"));
        let doc = host.load(&new).expect("load").expect("stored");
        assert_eq!(heads_digest(&doc.get_heads()), committed[0].digest);
    }

    #[test]
    fn peer_memory_survives_a_new_host_and_keeps_other_peers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store =
            DocStore::open(&dir.path().join("store"), StoreConfig::default()).expect("open");
        let host = NodeHost::new(store.clone(), dir.path());
        assert!(host.load_peer_memory().expect("load").is_empty());
        let (a, b) = (NodeId([1; 16]), NodeId([2; 16]));
        let m = |n| PeerMemory {
            scope_id: n,
            peer_seq_seen: n + 1,
            my_seq_seen: n + 2,
        };
        host.save_peer_memory(a, m(10)).expect("save a");
        host.save_peer_memory(b, m(20)).expect("save b");
        host.save_peer_memory(a, m(30)).expect("save a again");
        let again = NodeHost::new(store, dir.path());
        let loaded = again.load_peer_memory().expect("load");
        assert_eq!(loaded.len(), 2);
        assert_eq!(loaded.get(&a), Some(&m(30)));
        assert_eq!(loaded.get(&b), Some(&m(20)));
        assert!(dir.path().join("sync").join("peers.json").is_file());
        assert!(!dir.path().join("sync").join("peers.json.tmp").exists());
    }
}
