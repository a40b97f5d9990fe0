//! [`SledBackend`]: the [`KvBackend`] on sled 0.34, with the durability and robustness gaps of
//! sled 0.34 closed where this layer can close them.
//!
//! What sled 0.34 does, read from its source (`sled-0.34.7`), and what this file adds:
//!
//! - **Durability.** `Db::flush` writes sled's IO buffers with `pwrite` and then, on Linux,
//!   calls `sync_file_range(WAIT_BEFORE | WRITE | WAIT_AFTER)` (`pagecache/iobuf.rs`), not
//!   `fsync`. That survives a killed process but not a power cut: it neither persists file
//!   metadata (the file grows as segments are added) nor flushes the device's write cache.
//!   Large pages (over a quarter of the 512 KiB segment) go to files under `blobs/`, which sled
//!   writes without any sync. So [`KvBackend::sync`] calls `Db::flush`, then `fdatasync` on the
//!   `db` file, then `fsync` on every blob file it has not synced yet and on the `blobs/`
//!   directory.
//! - **Background thread.** sled's periodic flusher (`flush_every_ms`) is also the only caller of
//!   its segment cleaner, so it stays on ([`StoreConfig::sled_background_ms`]); it never
//!   acknowledges anything, so it does not weaken the writer's guarantee.
//! - **Atomicity.** A [`WriteBatch`] is applied as one sled transaction over all trees; sled
//!   writes a batch manifest so recovery never shows part of it.
//! - **Compression.** sled 0.34 only compresses with its `compression` feature, which we do not
//!   enable, so stored bytes are findable in the files (the corruption test relies on this).
//! - **Panics.** sled asserts on some impossible states (for example `assert_eq!` on page
//!   headers in `pagecache::pull`, `expect` in its integer decoding). Every call into sled runs
//!   under `catch_unwind`; a panic becomes [`BackendError::Panicked`].
//! - **Damaged log records.** At open sled treats the first bad record of its recent log as a
//!   torn write, zeroes what follows and may then refuse to open. [`super::sled_repair`] checks
//!   that part of the log first and repairs or refuses; see there. Records in older segments
//!   are checked by sled when their page is read; that fails the whole page (up to 16 keys),
//!   and leaves a marker so that the next open checks and repairs every segment.
//! - **Recovery snapshots.** sled writes its page-table snapshot only while opening. With
//!   `seal_on_close`, dropping the backend reopens the database once, so the snapshot covers
//!   everything written: the next open has nothing to replay (fast), and the whole log is below
//!   the snapshot, where damage can be told apart from a torn write.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::File;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use sled::Transactional;

use super::backend::{panic_message, BackendError, BatchOp, KvBackend, KvIter, TreeId, WriteBatch};
use super::config::StoreConfig;
use super::sled_repair::{
    check_and_heal, keep_snapshot_copy, RepairError, FULL_CHECK_MARKER, REPAIRED_MARKER,
};

/// A sled 0.34 database holding the store's trees.
///
/// What it adds to sled (details in `sled_backend.rs` and `sled_repair.rs`): [`KvBackend::sync`]
/// is `Db::flush` *plus* `fdatasync` of the data file and `fsync` of new blob files (sled alone
/// only does `sync_file_range`, which does not survive power loss); every call runs under
/// `catch_unwind`; the log is checked before sled opens it so that a damaged record cannot make
/// sled discard the rest of its log; a copy of sled's snapshot is kept so a damaged snapshot can
/// be restored; and dropping the last handle reopens the database once so its snapshot covers
/// everything written.
pub struct SledBackend {
    /// The database directory.
    path: PathBuf,
    /// Reopen once on drop so sled snapshots everything (see the module docs).
    seal_on_close: bool,
    /// The open database; `None` only while dropping.
    open: Option<Open>,
}

/// The live sled handles.
struct Open {
    /// The database.
    db: sled::Db,
    /// One tree per [`TreeId`], at [`TreeId::position`].
    trees: Vec<sled::Tree>,
    /// sled's data file, opened separately so we can `fdatasync` it.
    db_file: File,
    /// Blob files already fsynced (sled never rewrites a blob file in place).
    synced_blobs: Mutex<HashSet<OsString>>,
}

/// Runs `f`, turning a panic into [`BackendError::Panicked`].
fn guarded<T>(what: &str, f: impl FnOnce() -> Result<T, BackendError>) -> Result<T, BackendError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => Err(BackendError::Panicked(format!(
            "{what}: {}",
            panic_message(payload.as_ref())
        ))),
    }
}

/// Maps a sled error.
fn from_sled(e: sled::Error) -> BackendError {
    match e {
        sled::Error::Corruption { at, .. } => BackendError::Corruption(match at {
            Some(ptr) => format!("sled found a damaged record at {ptr}"),
            None => "sled found a damaged record".to_string(),
        }),
        sled::Error::Io(e) => BackendError::Io(e),
        sled::Error::CollectionNotFound(name) => BackendError::Other(format!(
            "sled tree {:?} not found",
            String::from_utf8_lossy(&name)
        )),
        sled::Error::Unsupported(s) => BackendError::Other(format!("sled: unsupported: {s}")),
        sled::Error::ReportableBug(s) => BackendError::Other(format!("sled bug: {s}")),
    }
}

/// Checks the log, then opens sled. `background_ms` is sled's background flush and
/// segment-cleaning interval (`None` disables both; see [`StoreConfig::sled_background_ms`]).
fn open_db(
    dir: &Path,
    cache_capacity: u64,
    background_ms: Option<u64>,
) -> Result<sled::Db, BackendError> {
    let marker = dir.join(FULL_CHECK_MARKER);
    let full = marker.exists();
    match check_and_heal(dir, full) {
        Ok(report) if !report.healed_records.is_empty() || !report.healed_blobs.is_empty() => {
            tracing::error!(
                path = %dir.display(),
                records = report.healed_records.len(),
                blobs = report.healed_blobs.len(),
                "repaired damaged sled log records before opening; damaged documents will be quarantined when read"
            );
        }
        Ok(_) => {}
        Err(RepairError::Refuse(reason)) => return Err(BackendError::Corruption(reason)),
        Err(RepairError::Busy(reason)) => return Err(BackendError::Other(reason)),
        Err(RepairError::Io(e)) => return Err(BackendError::Io(e)),
    }
    let db = guarded("opening sled", || {
        sled::Config::new()
            .path(dir)
            .cache_capacity(cache_capacity)
            .mode(sled::Mode::LowSpace)
            .use_compression(false)
            .flush_every_ms(background_ms)
            .open()
            .map_err(from_sled)
    })?;
    if let Err(e) = keep_snapshot_copy(dir) {
        tracing::warn!(error = %e, "could not keep a copy of sled's snapshot");
    }
    if full {
        if let Err(e) = std::fs::remove_file(&marker) {
            tracing::warn!(error = %e, "could not remove the full log check marker");
        }
    }
    Ok(db)
}

/// Leaves the marker asking the next open to check every log segment, if `e` means damage.
fn note_damage<T>(path: &Path, r: Result<T, BackendError>) -> Result<T, BackendError> {
    if let Err(BackendError::Corruption(_) | BackendError::Panicked(_)) = &r {
        if let Err(e) = File::create(path.join(FULL_CHECK_MARKER)) {
            tracing::warn!(error = %e, "could not leave the full log check marker");
        }
    }
    r
}

/// Fsyncs a directory so that entries created in it survive power loss.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

impl SledBackend {
    /// Opens (creating if needed) a sled database in `dir`, after checking (and where possible
    /// repairing) the part of its log that sled re-reads at open (see `sled_repair.rs`).
    pub fn open(dir: &Path, cfg: &StoreConfig) -> Result<SledBackend, BackendError> {
        let created = !dir.join("db").exists();
        std::fs::create_dir_all(dir)?;
        let background = (cfg.sled_background_ms > 0).then_some(cfg.sled_background_ms);
        let db = open_db(dir, cfg.cache_capacity_bytes, background)?;
        let open = guarded("opening sled trees", || {
            let mut trees = Vec::with_capacity(TreeId::ALL.len());
            for id in TreeId::ALL {
                trees.push(db.open_tree(id.name()).map_err(from_sled)?);
            }
            let db_file = File::open(dir.join("db"))?;
            Ok(Open {
                db,
                trees,
                db_file,
                synced_blobs: Mutex::new(HashSet::new()),
            })
        })?;
        if created {
            // Make the new files' directory entries durable.
            sync_dir(dir)?;
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                sync_dir(parent)?;
            }
        }
        Ok(SledBackend {
            path: dir.to_path_buf(),
            seal_on_close: cfg.seal_on_close,
            open: Some(open),
        })
    }

    /// The database directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the log was repaired (at this open or an earlier one) since
    /// [`SledBackend::clear_log_repaired`] was last called.
    pub fn log_repaired(&self) -> bool {
        self.path.join(REPAIRED_MARKER).exists()
    }

    /// Forgets that the log was repaired.
    pub fn clear_log_repaired(&self) {
        if let Err(e) = std::fs::remove_file(self.path.join(REPAIRED_MARKER)) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(error = %e, "could not remove the log repair marker");
            }
        }
    }

    /// Whether sled replayed an existing log when opening.
    pub fn was_recovered(&self) -> bool {
        self.open.as_ref().is_some_and(|o| o.db.was_recovered())
    }

    fn live(&self) -> Result<&Open, BackendError> {
        self.open.as_ref().ok_or(BackendError::Closed)
    }

    fn tree(&self, id: TreeId) -> Result<&sled::Tree, BackendError> {
        self.live()?
            .trees
            .get(id.position())
            .ok_or_else(|| BackendError::Other(format!("tree {} missing", id.name())))
    }

    /// Fsyncs blob files written since the last sync, and the blob directory if any were new.
    fn sync_blobs(&self, open: &Open) -> Result<(), BackendError> {
        let blob_dir = self.path.join("blobs");
        let entries = match std::fs::read_dir(&blob_dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let mut synced = open
            .synced_blobs
            .lock()
            .map_err(|_| BackendError::Other("blob sync set poisoned".to_string()))?;
        let mut present = HashSet::new();
        let mut new_files = false;
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            if !synced.contains(&name) {
                match File::open(entry.path()) {
                    Ok(f) => f.sync_all()?,
                    // sled may have garbage-collected it meanwhile.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e.into()),
                }
                new_files = true;
            }
            present.insert(name);
        }
        if new_files {
            sync_dir(&blob_dir)?;
        }
        *synced = present;
        Ok(())
    }
}

impl KvBackend for SledBackend {
    fn get(&self, tree: TreeId, key: &[u8]) -> Result<Option<Vec<u8>>, BackendError> {
        let t = self.tree(tree)?;
        note_damage(
            &self.path,
            guarded("sled get", || {
                Ok(t.get(key).map_err(from_sled)?.map(|v| v.to_vec()))
            }),
        )
    }

    fn range(&self, tree: TreeId, start: &[u8], end: Option<&[u8]>) -> KvIter {
        let t = match self.tree(tree) {
            Ok(t) => t,
            Err(e) => return Box::new(std::iter::once(Err(e))),
        };
        let iter = guarded("sled range", || {
            Ok(match end {
                Some(end) => t.range(start.to_vec()..end.to_vec()),
                None => t.range(start.to_vec()..),
            })
        });
        match iter {
            Ok(inner) => Box::new(SledIter {
                inner,
                done: false,
                dir: self.path.clone(),
            }),
            Err(e) => Box::new(std::iter::once(Err(e))),
        }
    }

    fn apply(&self, batch: &WriteBatch) -> Result<(), BackendError> {
        let open = self.live()?;
        let trees = open.trees.as_slice();
        note_damage(
            &self.path,
            guarded("sled transaction", || {
                let result: Result<(), TransactionError<()>> =
                    trees.transaction(|views: &Vec<TransactionalTree>| {
                        for op in batch.ops() {
                            let (tree, key) = match op {
                                BatchOp::Put { tree, key, .. } | BatchOp::Delete { tree, key } => {
                                    (tree, key)
                                }
                            };
                            let Some(view) = views.get(tree.position()) else {
                                return Err(ConflictableTransactionError::Abort(()));
                            };
                            match op {
                                BatchOp::Put { value, .. } => {
                                    view.insert(key.as_slice(), value.as_slice())?;
                                }
                                BatchOp::Delete { .. } => {
                                    view.remove(key.as_slice())?;
                                }
                            }
                        }
                        Ok(())
                    });
                match result {
                    Ok(()) => Ok(()),
                    Err(TransactionError::Storage(e)) => Err(from_sled(e)),
                    Err(TransactionError::Abort(())) => Err(BackendError::Other(
                        "batch names a tree the backend does not have".to_string(),
                    )),
                }
            }),
        )
    }

    fn sync(&self) -> Result<(), BackendError> {
        let open = self.live()?;
        note_damage(
            &self.path,
            guarded("sled flush", || open.db.flush().map_err(from_sled)),
        )?;
        open.db_file.sync_data()?;
        self.sync_blobs(open)
    }

    fn size_on_disk(&self) -> Result<u64, BackendError> {
        let open = self.live()?;
        guarded("sled size_on_disk", || {
            open.db.size_on_disk().map_err(from_sled)
        })
    }
}

impl Drop for SledBackend {
    fn drop(&mut self) {
        let Some(open) = self.open.take() else {
            return;
        };
        drop(open);
        if !self.seal_on_close {
            return;
        }
        // Reopen once so sled's recovery writes a snapshot covering the whole log. sled may
        // still be releasing its file lock from a helper thread, so retry briefly.
        let mut last_err = None;
        for _ in 0..50 {
            let reopened = open_db(&self.path, 1024 * 1024, None);
            match reopened {
                Ok(db) => {
                    drop(db);
                    tracing::debug!(path = %self.path.display(), "sled snapshot sealed on close");
                    return;
                }
                Err(e) => {
                    last_err = Some(e);
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
        if let Some(e) = last_err {
            tracing::warn!(path = %self.path.display(), error = %e, "could not seal the sled snapshot on close");
        }
    }
}

/// A sled range iterator that catches panics and stops after the first error.
struct SledIter {
    inner: sled::Iter,
    done: bool,
    /// The database directory, for the damage marker.
    dir: PathBuf,
}

impl Iterator for SledIter {
    type Item = Result<(Vec<u8>, Vec<u8>), BackendError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let inner = &mut self.inner;
        let item = match catch_unwind(AssertUnwindSafe(|| inner.next())) {
            Ok(None) => None,
            Ok(Some(Ok((k, v)))) => Some(Ok((k.to_vec(), v.to_vec()))),
            Ok(Some(Err(e))) => Some(Err(from_sled(e))),
            Err(payload) => Some(Err(BackendError::Panicked(format!(
                "sled iterator: {}",
                panic_message(payload.as_ref())
            )))),
        };
        match item {
            Some(Ok(kv)) => Some(Ok(kv)),
            Some(Err(e)) => {
                self.done = true;
                Some(note_damage(&self.dir, Err(e)))
            }
            None => {
                self.done = true;
                None
            }
        }
    }
}
