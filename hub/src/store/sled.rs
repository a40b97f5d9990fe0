//! [`SledHubStore`]: the [`HubStore`] seam over the embedded sled
//! [`DocStore`](cunyun_platform::store::DocStore) the hub has always used (one process).
//!
//! # Feed positions
//!
//! A document's feed position is its index entry's `updated_at_ms`, which this wrapper assigns
//! (the caller's clock plays no part): each [`HubStore::apply`] takes the next position,
//! `max(now_ms, last + 1)`, marks it *in flight*, commits, and only then clears the mark.
//! [`HubStore::changes_since`] first takes its watermark — the lowest position in flight, or
//! the next one to be handed out — and only then scans. Every position below the watermark
//! belongs to a commit that had returned (durable and visible) before the scan started, so the
//! scan sees it; anything at or above is listed again next time. So a slow commit with a lower
//! position than a fast one is never skipped.
//!
//! At open the highest stored position is read from the index (no document is loaded), so
//! positions keep increasing across restarts even if the clock went back.
//!
//! # Metadata
//!
//! [`HubStore::meta_put`] values are files in a directory beside the sled store
//! (`<data>/store.meta/<name>`, not inside it: a vacuum swaps the store's directory), each
//! written to a temporary file, synced and renamed into place, then the directory synced — so
//! a value is either the old or the new one after a crash.
//!
//! Limits: only writes made through this wrapper are stamped this way. Writes made directly on
//! the `DocStore` (the hub makes none: its engine, API and sync sessions all write through
//! [`HubStore::apply`]) would carry their caller's clock and be listed only when that time is
//! at or after the watermark. The feed is a
//! scan of the whole index (one process, an embedded store): fine for the demo and small hubs,
//! not at province scale (that is the PostgreSQL backend's job).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use automerge::Automerge;
use cunyun_platform::store::{DocStore, DocWrite, IndexEntry, StoreConfig};
use cunyun_protocol::area::AreaScope;
use cunyun_protocol::key::{DocKey, Kind};

use super::merge::{self, Limits};
use super::{
    check_meta_name, Applied, BackendName, FeedPage, FeedPos, FeedRow, HubEntry, HubStats,
    HubStore, HubStoreError, HubWrite, MAX_META_BYTES,
};

/// The hub's documents in sled (see the module documentation).
pub struct SledHubStore {
    store: DocStore,
    limits: Limits,
    /// Keys being merged now; an apply waits until none of its keys is here.
    locked: Mutex<BTreeSet<DocKey>>,
    unlocked: Condvar,
    feed: Mutex<Positions>,
    /// Where [`HubStore::meta_put`] values live.
    meta_dir: PathBuf,
    /// Serialises metadata writes (they share temporary file names).
    meta_lock: Mutex<()>,
}

/// Positions handed out and not yet committed.
#[derive(Debug, Default)]
struct Positions {
    /// The last position handed out.
    last: u64,
    /// Positions whose commit has not returned yet.
    in_flight: BTreeSet<u64>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn hub_entry(e: &IndexEntry) -> HubEntry {
    HubEntry {
        digest: e.digest,
        pos: FeedPos(e.updated_at_ms),
        updated_at_ms: e.updated_at_ms,
        chunks: e.chunks,
        bytes: e.bytes,
    }
}

impl SledHubStore {
    /// Opens (creating) the sled store in `dir`. Reads the whole index once for the highest
    /// feed position (no document is loaded).
    pub fn open(dir: &Path, cfg: StoreConfig) -> Result<SledHubStore, HubStoreError> {
        let limits = Limits::from(&cfg);
        let store = DocStore::open(dir, cfg)?;
        Ok(SledHubStore::over(store, limits, &meta_dir_of(dir)))
    }

    /// The seam over an already open store (the hub's, or a test's), with its metadata in
    /// `meta_dir` (for a store in `dir`: [`meta_dir_of`]).
    pub fn over(store: DocStore, limits: Limits, meta_dir: &Path) -> SledHubStore {
        let last = store
            .scan_range(b"", b"\xff")
            .flatten()
            .map(|(_, e)| e.updated_at_ms)
            .max()
            .unwrap_or(0);
        SledHubStore {
            store,
            limits,
            locked: Mutex::new(BTreeSet::new()),
            unlocked: Condvar::new(),
            feed: Mutex::new(Positions {
                last,
                in_flight: BTreeSet::new(),
            }),
            meta_dir: meta_dir.to_path_buf(),
            meta_lock: Mutex::new(()),
        }
    }

    /// The underlying store (for the parts of the hub not on the seam yet).
    pub fn doc_store(&self) -> &DocStore {
        &self.store
    }

    /// Waits until no key of `keys` is being merged, then takes them all (all or none, so two
    /// applies never wait for each other in a cycle).
    fn lock_keys(&self, keys: &BTreeSet<DocKey>) -> KeyGuard<'_> {
        let mut held = lock(&self.locked);
        while keys.iter().any(|k| held.contains(k)) {
            held = self.unlocked.wait(held).unwrap_or_else(|p| p.into_inner());
        }
        held.extend(keys.iter().cloned());
        KeyGuard {
            store: self,
            keys: keys.clone(),
        }
    }

    fn take_position(&self) -> u64 {
        let mut f = lock(&self.feed);
        let pos = now_ms().max(f.last + 1);
        f.last = pos;
        f.in_flight.insert(pos);
        pos
    }

    /// The lowest position in flight, or the next one to be handed out.
    fn next_safe(&self) -> u64 {
        let f = lock(&self.feed);
        f.in_flight.first().copied().unwrap_or(f.last + 1)
    }

    fn release_position(&self, pos: u64) {
        lock(&self.feed).in_flight.remove(&pos);
    }
}

/// The metadata directory of the sled store in `dir`: `<dir>.meta` beside it.
pub fn meta_dir_of(dir: &Path) -> PathBuf {
    let mut name = dir.as_os_str().to_owned();
    name.push(".meta");
    PathBuf::from(name)
}

/// Writes `value` to `dir/name` atomically and durably (temporary file, sync, rename, sync the
/// directory).
fn write_file_durably(dir: &Path, name: &str, value: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{name}.tmp"));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(value)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, dir.join(name))?;
    std::fs::File::open(dir)?.sync_all()
}

/// Releases an apply's keys.
struct KeyGuard<'a> {
    store: &'a SledHubStore,
    keys: BTreeSet<DocKey>,
}

impl Drop for KeyGuard<'_> {
    fn drop(&mut self) {
        let mut held = lock(&self.store.locked);
        for k in &self.keys {
            held.remove(k);
        }
        drop(held);
        self.store.unlocked.notify_all();
    }
}

impl HubStore for SledHubStore {
    fn backend(&self) -> BackendName {
        BackendName::Sled
    }

    fn apply(
        &self,
        writes: Vec<HubWrite>,
        removes: Vec<DocKey>,
    ) -> Result<Vec<Applied>, HubStoreError> {
        let mut by_key: BTreeMap<DocKey, Vec<Vec<u8>>> = BTreeMap::new();
        for w in writes {
            merge::check_chunk(&w.key, &w.chunk, &self.limits)?;
            by_key.entry(w.key).or_default().push(w.chunk);
        }
        let keys: BTreeSet<DocKey> = by_key.keys().chain(removes.iter()).cloned().collect();
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let _guard = self.lock_keys(&keys);
        let mut merged = Vec::with_capacity(by_key.len());
        let mut applied = Vec::with_capacity(by_key.len());
        for (key, chunks) in &by_key {
            let stored = self.store.load(key)?;
            let old_bytes = self.store.entry(key)?.map_or(0, |e| e.bytes);
            let parts: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
            let m = merge::merge(key, stored, &parts)?;
            if let Some(bytes) = &m.append {
                merge::check_doc_size(key, old_bytes + bytes.len() as u64, &self.limits)?;
            }
            applied.push(Applied {
                key: key.clone(),
                digest: m.digest,
                changed: m.append.is_some(),
            });
            merged.push((key.clone(), m));
        }
        let removes: Vec<DocKey> = removes
            .into_iter()
            .filter(|k| !by_key.contains_key(k))
            .collect();
        if merged.iter().all(|(_, m)| m.append.is_none()) && removes.is_empty() {
            return Ok(applied);
        }
        let pos = self.take_position();
        let doc_writes = merged
            .into_iter()
            .filter_map(|(key, m)| {
                let heads = m.doc.get_heads();
                m.append.map(|chunk| DocWrite {
                    key,
                    chunk,
                    heads,
                    updated_at_ms: pos,
                })
            })
            .collect();
        let result = self.store.commit_with_removals(doc_writes, removes);
        self.release_position(pos);
        result?;
        tracing::debug!(pos, documents = applied.len(), "sled hub store: applied");
        Ok(applied)
    }

    fn get(&self, key: &DocKey) -> Result<Option<Automerge>, HubStoreError> {
        Ok(self.store.load(key)?)
    }

    fn entry(&self, key: &DocKey) -> Result<Option<HubEntry>, HubStoreError> {
        Ok(self.store.entry(key)?.as_ref().map(hub_entry))
    }

    fn entries(
        &self,
        scope: &AreaScope,
        kind: Option<Kind>,
    ) -> Result<Vec<(DocKey, HubEntry)>, HubStoreError> {
        let mut out = Vec::new();
        for item in self.store.scan(scope) {
            let (key, e) = item?;
            if kind.is_none_or(|k| key.kind() == k) {
                out.push((key, hub_entry(&e)));
            }
        }
        Ok(out)
    }

    fn entries_range(
        &self,
        start: &[u8],
        end: &[u8],
    ) -> Result<Vec<(DocKey, HubEntry)>, HubStoreError> {
        let mut out = Vec::new();
        for item in self.store.scan_range(start, end) {
            let (key, e) = item?;
            out.push((key, hub_entry(&e)));
        }
        Ok(out)
    }

    fn changes_in_range(
        &self,
        since: FeedPos,
        start: &[u8],
        end: &[u8],
    ) -> Result<Vec<FeedRow>, HubStoreError> {
        let mut rows = Vec::new();
        for item in self.store.scan_range(start, end) {
            let (key, e) = item?;
            if e.updated_at_ms >= since.0 {
                rows.push(FeedRow {
                    key,
                    digest: e.digest,
                    pos: FeedPos(e.updated_at_ms),
                });
            }
        }
        Ok(rows)
    }

    fn watermark(&self) -> Result<FeedPos, HubStoreError> {
        Ok(FeedPos(self.next_safe()))
    }

    fn changes_since(&self, since: FeedPos) -> Result<FeedPage, HubStoreError> {
        let next = self.next_safe();
        let mut rows = Vec::new();
        for item in self.store.scan_range(b"", b"\xff") {
            let (key, e) = item?;
            if e.updated_at_ms >= since.0 {
                rows.push(FeedRow {
                    key,
                    digest: e.digest,
                    pos: FeedPos(e.updated_at_ms),
                });
            }
        }
        Ok(FeedPage {
            rows,
            next: FeedPos(next.max(since.0)),
        })
    }

    fn watch_writes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.store.watch_writes()
    }

    fn writes(&self) -> u64 {
        self.store.writes()
    }

    fn stats(&self) -> Result<HubStats, HubStoreError> {
        let s = self.store.stats();
        Ok(HubStats {
            documents: s.documents,
            chunks: s.chunks,
            bytes: s.bytes,
            writes: s.writes,
            quarantined: s.quarantined,
            disk_bytes: s.disk_bytes,
        })
    }

    fn meta_get(&self, name: &str) -> Result<Option<Vec<u8>>, HubStoreError> {
        check_meta_name(name)?;
        match std::fs::read(self.meta_dir.join(name)) {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(HubStoreError::Meta {
                name: name.to_string(),
                source,
            }),
        }
    }

    fn meta_put(&self, name: &str, value: &[u8]) -> Result<(), HubStoreError> {
        check_meta_name(name)?;
        if value.len() > MAX_META_BYTES {
            return Err(HubStoreError::TooLarge {
                key: format!("meta/{name}"),
                what: "单次写入",
                size: value.len() as u64,
                limit: MAX_META_BYTES as u64,
            });
        }
        let _serial = lock(&self.meta_lock);
        write_file_durably(&self.meta_dir, name, value).map_err(|source| HubStoreError::Meta {
            name: name.to_string(),
            source,
        })
    }
}
