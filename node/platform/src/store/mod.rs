//! The durable document store: Automerge documents as chunk sequences in an ordered key-value
//! backend (sled 0.34 behind [`KvBackend`]), with an index kept in step, group commit, compaction
//! and corruption quarantine.
//!
//! # Layout
//!
//! Four trees (see `codec.rs` for the byte formats):
//! - `docs`: `dockey ++ 0x00 ++ u32 BE seq` → checksummed chunk. A document is the
//!   concatenation of its chunks in key order: maybe a `save()` snapshot first, then
//!   `save_incremental`/`save_after` chunks. [`DocStore::load`] passes the concatenation to
//!   `Automerge::load`.
//! - `index`: `dockey` → checksummed `(heads digest, updated_at_ms, chunks, bytes, next seq,
//!   generation)`, ordered by key, so an [`AreaScope`] is one range scan ([`DocStore::scan`]).
//! - `quarantine`: `dockey` → `(when, reason)` for documents found damaged.
//! - `meta`: document, chunk and byte totals, so [`DocStore::open`] reads no documents.
//!
//! A commit writes the chunk, the index entry and the totals in one atomic batch, so the index
//! and the documents never disagree, even across crashes.
//!
//! # Durability
//!
//! One writer thread (`writer.rs`) owns all writes. [`DocStore::commit`] queues its writes and
//! blocks; the writer drains everything queued, applies it as one batch, calls
//! [`KvBackend::sync`] once and then acknowledges every caller in the group. So `commit`
//! returns only after the sync that covers its writes. For sled that sync is `Db::flush` (which
//! on Linux only does `sync_file_range`) followed by our own `fdatasync` of sled's data file and
//! `fsync` of new blob files; see [`SledBackend`] for what sled does and does not guarantee.
//! What the store relies on: sled's log recovery returns a prefix of the applied batches, whole
//! batches only, and everything before a completed flush+fdatasync is in that prefix.
//!
//! # Corruption
//!
//! Every value carries a version byte and a CRC32 over tree, key and body. A document whose
//! chunks fail the check, whose index entry fails it, that the backend reports as corrupt (or
//! panics on), or that automerge refuses, yields [`StoreError::Corrupt`] naming its key, is
//! recorded in the `quarantine` tree and logged with `tracing::error!`. Its bytes are left in
//! place. Other documents and new writes keep working; writes to a quarantined document are
//! refused.
//!
//! sled checks its own log records, and at open treats a bad recent record as a torn write
//! (discarding what follows and then refusing to open). Before sled opens, `sled_repair.rs`
//! checks the records sled will re-read: damage below sled's last snapshot is repaired so that
//! the store's checksums above judge it per document, or, if it cannot be, the open is refused
//! with the files untouched. Damage sled finds in an older page while running fails that whole
//! page (up to 16 keys, quarantined as `from_backend`); the next open checks every segment,
//! repairs the record and releases those page-level quarantines, so only the document whose
//! bytes were hit stays quarantined.
//!
//! # Space
//!
//! Compaction rewrites a document as one `save()` snapshot once it has
//! [`StoreConfig::compact_after_chunks`] chunks. sled 0.34 never shrinks its file, so
//! [`DocStore::vacuum`] rewrites a closed store compactly, and [`DocStore::open`] does so when
//! the files have grown to several times the data.
//!
//! [`DocStore::commit_with_removals`] removes documents whole (a household deleted on request);
//! it sets a `vacuum_due` flag in `meta`, and the next open vacuums, so the removed bytes leave
//! sled's files as well.
//!
//! [`AreaScope`]: cunyun_protocol::area::AreaScope

mod backend;
mod codec;
mod config;
mod error;
mod read;
mod request;
mod shared;
mod sled_backend;
mod sled_repair;
mod types;
mod vacuum;
mod verify;
mod writer;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use automerge::Automerge;
use cunyun_protocol::area::AreaScope;
use cunyun_protocol::digest::heads_digest;
use cunyun_protocol::key::DocKey;

pub use backend::{BackendError, BatchOp, KvBackend, KvIter, KvPair, TreeId, WriteBatch};
pub use config::StoreConfig;
pub use error::StoreError;
pub use sled_backend::SledBackend;
pub use types::{CompactStats, DocWrite, IndexEntry, QuarantineRecord, StoreStats, VerifyReport};
pub use vacuum::VacuumStats;

use codec::{
    decode_entry, decode_quarantine, decode_totals, Totals, AUTOMERGE_MAGIC, META_COUNTERS,
    META_VACUUM_DUE,
};
use read::Damage;
use read::{decode_doc, read_consistent, read_entry, ReadError};
use request::{Ack, Request};
use shared::{Found, Shared};
use writer::Writer;

/// A handle to an open document store. Cheap to clone; every clone shares one writer thread.
/// The store closes (final sync, writer stopped, backend sealed) when the last clone and the
/// last [`ScanIter`] are dropped; dropping the last clone blocks until the writer has synced
/// and stopped.
#[derive(Clone)]
pub struct DocStore {
    inner: Arc<Inner>,
}

/// Owns the writer thread; stopping it on drop.
struct Inner {
    shared: Arc<Shared>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the channel lets the writer finish what is queued, sync and exit.
        self.shared
            .tx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let handle = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(handle) = handle {
            if handle.join().is_err() {
                tracing::error!("the store writer thread panicked");
            }
        }
    }
}

/// Checks a write before it is queued: size limit, automerge magic bytes, heads.
pub(crate) fn validate_write(w: &DocWrite, cfg: &StoreConfig) -> Result<(), StoreError> {
    let key = || w.key.to_string();
    if w.chunk.len() as u64 > cfg.max_chunk_bytes {
        return Err(StoreError::TooLarge {
            key: key(),
            what: "chunk",
            size: w.chunk.len() as u64,
            limit: cfg.max_chunk_bytes,
        });
    }
    if w.chunk.is_empty() {
        return Err(StoreError::InvalidWrite {
            key: key(),
            reason: "the chunk is empty".to_string(),
        });
    }
    if !w.chunk.starts_with(&AUTOMERGE_MAGIC) {
        return Err(StoreError::InvalidWrite {
            key: key(),
            reason: "the chunk is not automerge bytes (no automerge magic number)".to_string(),
        });
    }
    if w.heads.is_empty() {
        return Err(StoreError::InvalidWrite {
            key: key(),
            reason: "no heads given for the document after the change".to_string(),
        });
    }
    Ok(())
}

impl DocStore {
    /// Opens (creating if needed) the store in `dir` on sled. Reads only the store totals and
    /// the quarantine list; no document is loaded.
    pub fn open(dir: &Path, cfg: StoreConfig) -> Result<DocStore, StoreError> {
        vacuum::finish_interrupted(dir)?;
        let open_sled = || {
            SledBackend::open(dir, &cfg).map_err(|e| StoreError::Open {
                path: dir.to_path_buf(),
                reason: e.to_string(),
            })
        };
        let mut backend = Arc::new(open_sled()?);
        let removed = vacuum_due(backend.as_ref());
        if removed || bloated(backend.as_ref(), &cfg)? {
            drop(backend);
            DocStore::vacuum(dir, &cfg)?;
            backend = Arc::new(open_sled()?);
        }
        tracing::info!(path = %dir.display(), recovered = backend.was_recovered(), "document store opened");
        let repaired = backend.log_repaired();
        let store = DocStore::start(backend.clone(), cfg, repaired)?;
        if repaired {
            backend.clear_log_repaired();
        }
        Ok(store)
    }

    /// Rewrites the closed store in `dir` compactly: copies every key into a fresh store next to
    /// it and swaps the directories, crash-safely (see the `vacuum` module). sled 0.34's file
    /// never shrinks by itself; [`DocStore::open`] does this when the files are much larger than
    /// the data ([`StoreConfig::vacuum_at_open_ratio`]). Fails, changing nothing, if the store
    /// is open.
    pub fn vacuum(dir: &Path, cfg: &StoreConfig) -> Result<VacuumStats, StoreError> {
        vacuum::vacuum(dir, cfg)
    }

    /// Opens the store on any [`KvBackend`].
    pub fn open_with_backend(
        backend: Arc<dyn KvBackend>,
        cfg: StoreConfig,
    ) -> Result<DocStore, StoreError> {
        DocStore::start(backend, cfg, false)
    }

    /// Opens the store; `release` drops quarantine records the backend made for whole pages,
    /// because its log has been repaired since.
    fn start(
        backend: Arc<dyn KvBackend>,
        cfg: StoreConfig,
        release: bool,
    ) -> Result<DocStore, StoreError> {
        let totals = load_totals(backend.as_ref())?;
        let mut quarantine = load_quarantine(backend.as_ref());
        if release {
            release_backend_quarantine(backend.as_ref(), &mut quarantine)?;
        }
        let (tx, rx) = mpsc::channel();
        let shared = Arc::new(Shared::new(cfg, backend, tx, quarantine));
        let writer = Writer::new(Arc::clone(&shared), rx, totals);
        let handle = std::thread::Builder::new()
            .name("cunyun-store-writer".to_string())
            .spawn(move || writer.run())
            .map_err(|e| StoreError::Io {
                context: "starting the store writer thread".to_string(),
                source: e,
            })?;
        Ok(DocStore {
            inner: Arc::new(Inner {
                shared,
                writer: Mutex::new(Some(handle)),
            }),
        })
    }

    fn shared(&self) -> &Shared {
        &self.inner.shared
    }

    fn send(&self, req: Request) -> Result<(), StoreError> {
        let tx = self.shared().tx.lock().unwrap_or_else(|p| p.into_inner());
        tx.as_ref()
            .ok_or(StoreError::Closed)?
            .send(req)
            .map_err(|_| StoreError::Closed)
    }

    fn validate(&self, writes: &[DocWrite]) -> Result<(), StoreError> {
        writes
            .iter()
            .try_for_each(|w| validate_write(w, &self.shared().cfg))
    }

    /// Stores `writes` atomically (all or none) and returns once they are durable. Blocks the
    /// calling thread; from async code use [`DocStore::commit_async`].
    pub fn commit(&self, writes: Vec<DocWrite>) -> Result<(), StoreError> {
        self.commit_with_removals(writes, Vec::new())
    }

    /// Stores `writes` and removes the documents `removes` whole (every chunk and the index
    /// entry; removing a missing document is a no-op) in one atomic, durable batch. This is how
    /// a household deletion drops its documents while writing the tombstone. The removed bytes
    /// leave sled's files once its log segments are rewritten: [`DocStore::vacuum`] (run at
    /// open when the store has grown, or by the operator) guarantees it.
    pub fn commit_with_removals(
        &self,
        writes: Vec<DocWrite>,
        removes: Vec<DocKey>,
    ) -> Result<(), StoreError> {
        if writes.is_empty() && removes.is_empty() {
            return Ok(());
        }
        self.validate(&writes)?;
        let (tx, rx) = mpsc::sync_channel(1);
        self.send(Request::Commit {
            writes,
            removes,
            ack: Ack::Blocking(tx),
        })?;
        rx.recv().map_err(|_| StoreError::Closed)?
    }

    /// [`DocStore::commit`] for async callers: awaits the acknowledgement without blocking the
    /// runtime.
    pub async fn commit_async(&self, writes: Vec<DocWrite>) -> Result<(), StoreError> {
        if writes.is_empty() {
            return Ok(());
        }
        self.validate(&writes)?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send(Request::Commit {
            writes,
            removes: Vec::new(),
            ack: Ack::Async(tx),
        })?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    fn corrupt(&self, key: &str, damage: Damage, found: Found) -> StoreError {
        self.shared().report_corrupt(key, &damage, found);
        StoreError::Corrupt {
            key: key.to_string(),
            reason: damage.reason,
        }
    }

    /// Loads a document, or `None` if the store has none under `key`.
    pub fn load(&self, key: &DocKey) -> Result<Option<Automerge>, StoreError> {
        let name = key.to_string();
        if let Some(rec) = self.shared().quarantine_record(&name) {
            return Err(StoreError::Corrupt {
                key: name,
                reason: format!("quarantined: {}", rec.reason),
            });
        }
        let doc = key.to_bytes();
        let backend = self.shared().backend.as_ref();
        let (entry, chunks) = match read_consistent(backend, &doc, &name) {
            Ok(Some(found)) => found,
            Ok(None) => return Ok(None),
            Err(ReadError::Corrupt(damage)) => {
                return Err(self.corrupt(&name, damage, Found::Load))
            }
            Err(ReadError::Store(e)) => return Err(e),
        };
        let am = match decode_doc(&chunks) {
            Ok(am) => am,
            Err(ReadError::Corrupt(damage)) => {
                return Err(self.corrupt(&name, damage, Found::Load))
            }
            Err(ReadError::Store(e)) => return Err(e),
        };
        if heads_digest(&am.get_heads()) != entry.entry.digest {
            self.shared()
                .counters
                .digest_mismatches
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(doc = %name, "loaded document's heads differ from the index digest (wrong heads committed?)");
        }
        Ok(Some(am))
    }

    /// The index entry of a document, without loading it.
    pub fn entry(&self, key: &DocKey) -> Result<Option<IndexEntry>, StoreError> {
        let name = key.to_string();
        match read_entry(self.shared().backend.as_ref(), &key.to_bytes(), &name) {
            Ok(e) => Ok(e.map(|e| e.entry)),
            Err(ReadError::Corrupt(damage)) => Err(self.corrupt(&name, damage, Found::Entry)),
            Err(ReadError::Store(e)) => Err(e),
        }
    }

    /// Whether `key` belongs to a household this store holds a tombstone for (whose documents
    /// are refused from then on, see `cunyun_protocol::deletion`).
    pub fn deleted(&self, key: &DocKey) -> Result<bool, StoreError> {
        match cunyun_protocol::deletion::tombstone_for(key) {
            Some(t) => Ok(self.entry(&t)?.is_some()),
            None => Ok(false),
        }
    }

    /// Every document inside `scope` with its index entry, in key order. Damaged entries are
    /// yielded as errors (and quarantined); the scan then continues. A backend error ends it.
    pub fn scan(&self, scope: &AreaScope) -> ScanIter {
        let (start, end) = scope.key_range();
        self.scan_range(&start, &end)
    }

    /// Index entries with keys in `[start, end)`, in key order (the sync engine scans the key
    /// ranges of a shared scope this way). Same errors as [`DocStore::scan`].
    pub fn scan_range(&self, start: &[u8], end: &[u8]) -> ScanIter {
        let (start, end) = (start.to_vec(), end.to_vec());
        let inner = self
            .shared()
            .backend
            .range(TreeId::Index, &start, Some(&end));
        ScanIter {
            inner,
            shared: Arc::clone(&self.inner.shared),
            range: format!(
                "index range {}..{}",
                String::from_utf8_lossy(&start),
                String::from_utf8_lossy(&end)
            ),
        }
    }

    /// Compacts every document with more than one chunk into one snapshot, then syncs.
    /// Commits keep being served in between (they take priority).
    pub fn compact_all(&self) -> Result<CompactStats, StoreError> {
        let (tx, rx) = mpsc::channel();
        self.send(Request::CompactAll(tx))?;
        rx.recv().map_err(|_| StoreError::Closed)?
    }

    /// Every quarantined document (or damaged range) found so far, ordered by key; persisted
    /// across restarts.
    pub fn quarantined(&self) -> Vec<QuarantineRecord> {
        self.shared().quarantine_list()
    }

    /// How many document writes have been committed since the store opened (the `writes`
    /// counter of [`DocStore::stats`], without its other, costlier figures): a cheap way to
    /// notice that something changed.
    pub fn writes(&self) -> u64 {
        self.shared().counters.writes.load(Ordering::Relaxed)
    }

    /// Watches [`DocStore::writes`]: the receiver sees a new value after every acknowledged
    /// group commit that wrote documents (changes within one wake-up are coalesced).
    pub fn watch_writes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.shared().written.subscribe()
    }

    /// Counters for metrics.
    pub fn stats(&self) -> StoreStats {
        let s = self.shared();
        let c = &s.counters;
        StoreStats {
            documents: c.docs.load(Ordering::Relaxed),
            chunks: c.chunks.load(Ordering::Relaxed),
            bytes: c.bytes.load(Ordering::Relaxed),
            commits: c.commits.load(Ordering::Relaxed),
            writes: c.writes.load(Ordering::Relaxed),
            commit_groups: c.groups.load(Ordering::Relaxed),
            fsyncs: c.fsyncs.load(Ordering::Relaxed),
            compactions: c.compactions.load(Ordering::Relaxed),
            quarantined: s.quarantine_len() as u64,
            digest_mismatches: c.digest_mismatches.load(Ordering::Relaxed),
            disk_bytes: s.backend.size_on_disk().unwrap_or(0),
            failed: c.failed.load(Ordering::Relaxed),
        }
    }

    /// Walks the whole index and every chunk and checks that they agree with each other and
    /// with the persisted totals (checksums included, automerge not decoded). Runs on the writer
    /// thread, so it sees a consistent state, and delays commits while it runs: a maintenance
    /// and test tool, not for the hot path.
    pub fn verify(&self) -> Result<VerifyReport, StoreError> {
        let (tx, rx) = mpsc::channel();
        self.send(Request::Verify(tx))?;
        rx.recv().map_err(|_| StoreError::Closed)?
    }
}

/// Smallest store that [`DocStore::open`] vacuums.
const VACUUM_MIN_BYTES: u64 = 64 * 1024 * 1024;

/// Whether the store's files are so much larger than its data that opening should vacuum it.
/// Whether documents were removed since the last vacuum (their bytes may still be in sled's
/// log segments).
fn vacuum_due(backend: &SledBackend) -> bool {
    matches!(backend.get(TreeId::Meta, META_VACUUM_DUE), Ok(Some(_)))
}

fn bloated(backend: &SledBackend, cfg: &StoreConfig) -> Result<bool, StoreError> {
    if cfg.vacuum_at_open_ratio == 0 {
        return Ok(false);
    }
    let on_disk = vacuum::dir_size(backend.path());
    if on_disk < VACUUM_MIN_BYTES {
        return Ok(false);
    }
    let totals = load_totals(backend)?;
    let live = totals.bytes + 256 * totals.docs;
    let bloated = on_disk > u64::from(cfg.vacuum_at_open_ratio).saturating_mul(live);
    if bloated {
        tracing::warn!(
            on_disk,
            live,
            "the store's files are much larger than its data; vacuuming before opening"
        );
    }
    Ok(bloated)
}

/// Reads the persisted totals; recounts from the index if they are damaged.
pub(crate) fn load_totals(backend: &dyn KvBackend) -> Result<Totals, StoreError> {
    let reason = match backend.get(TreeId::Meta, META_COUNTERS) {
        Ok(None) => return Ok(Totals::default()),
        Ok(Some(v)) => match decode_totals(&v) {
            Ok(t) => return Ok(t),
            Err(reason) => reason,
        },
        Err(e @ (BackendError::Corruption(_) | BackendError::Panicked(_))) => e.to_string(),
        Err(e) => {
            return Err(StoreError::from_backend(
                e,
                "<store totals>",
                "reading the store totals",
            ))
        }
    };
    tracing::error!(reason = %reason, "store totals are damaged; recounting from the index");
    let mut t = Totals::default();
    for (doc, value) in backend.range(TreeId::Index, &[], None).flatten() {
        if let Ok(e) = decode_entry(&doc, &value) {
            t.docs += 1;
            t.chunks += u64::from(e.entry.chunks);
            t.bytes += e.entry.bytes;
        }
    }
    Ok(t)
}

/// Drops the quarantine records the backend made for whole pages (after a log repair the pages
/// read again, and the store's own checksums find the documents that really are damaged).
fn release_backend_quarantine(
    backend: &dyn KvBackend,
    quarantine: &mut BTreeMap<String, QuarantineRecord>,
) -> Result<(), StoreError> {
    let keys: Vec<String> = quarantine
        .values()
        .filter(|r| r.from_backend)
        .map(|r| r.key.clone())
        .collect();
    if keys.is_empty() {
        return Ok(());
    }
    let mut batch = WriteBatch::new();
    for k in &keys {
        batch.delete(TreeId::Quarantine, k.as_bytes().to_vec());
    }
    let context = "releasing page-level quarantine after a log repair";
    backend
        .apply(&batch)
        .and_then(|()| backend.sync())
        .map_err(|e| StoreError::from_backend(e, "<quarantine>", context))?;
    for k in &keys {
        quarantine.remove(k);
    }
    tracing::warn!(
        released = keys.len(),
        "the storage log was repaired; released documents quarantined for a damaged page, they will be checked again when read"
    );
    Ok(())
}

/// Reads the quarantine tree. Damaged records are kept as records saying so.
fn load_quarantine(backend: &dyn KvBackend) -> BTreeMap<String, QuarantineRecord> {
    let mut out = BTreeMap::new();
    for item in backend.range(TreeId::Quarantine, &[], None) {
        match item {
            Ok((k, v)) => {
                let key = String::from_utf8_lossy(&k).into_owned();
                let (when_ms, from_backend, reason) =
                    decode_quarantine(&k, &v).unwrap_or_else(|r| {
                        (
                            0,
                            false,
                            format!("quarantined; the quarantine record itself is damaged: {r}"),
                        )
                    });
                out.insert(
                    key.clone(),
                    QuarantineRecord {
                        key,
                        reason,
                        when_ms,
                        from_backend,
                    },
                );
            }
            Err(e) => {
                tracing::error!(error = %e, "could not read the whole quarantine list");
                let key = "quarantine list".to_string();
                out.insert(
                    key.clone(),
                    QuarantineRecord {
                        key,
                        reason: format!("the quarantine list could not be read completely: {e}"),
                        when_ms: crate::clock::now_ms(),
                        from_backend: true,
                    },
                );
            }
        }
    }
    out
}

/// Iterator over a scope's index entries, returned by [`DocStore::scan`]. Keeps the backend
/// open while it lives.
pub struct ScanIter {
    inner: KvIter,
    shared: Arc<Shared>,
    range: String,
}

impl Iterator for ScanIter {
    type Item = Result<(DocKey, IndexEntry), StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        let item = self.inner.next()?;
        let corrupt = |key: String, damage: Damage| {
            self.shared.report_corrupt(&key, &damage, Found::Scan);
            Some(Err(StoreError::Corrupt {
                key,
                reason: damage.reason,
            }))
        };
        match item {
            Ok((k, v)) => {
                let name = String::from_utf8_lossy(&k).into_owned();
                let key = match DocKey::from_bytes(&k) {
                    Ok(key) => key,
                    Err(e) => {
                        return corrupt(
                            name,
                            Damage::data(format!("index key is not a document key: {e}")),
                        )
                    }
                };
                match decode_entry(&k, &v) {
                    Ok(e) => Some(Ok((key, e.entry))),
                    Err(reason) => corrupt(name, Damage::data(reason)),
                }
            }
            Err(e @ (BackendError::Corruption(_) | BackendError::Panicked(_))) => corrupt(
                self.range.clone(),
                Damage::backend(format!("the rest of the scan is unreadable: {e}")),
            ),
            Err(e) => Some(Err(StoreError::from_backend(
                e,
                &self.range,
                "scanning the index",
            ))),
        }
    }
}
