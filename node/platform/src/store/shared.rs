//! [`Shared`]: the state every store handle, reader and the writer thread see: the backend, the
//! request channel, the in-memory quarantine list and the metric counters.

use crate::clock::now_ms;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, MutexGuard};

use super::backend::KvBackend;
use super::codec::Totals;
use super::config::StoreConfig;
use super::read::Damage;
use super::request::Request;
use super::types::QuarantineRecord;

/// Where corruption was found, for logs.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Found {
    /// While loading a document.
    Load,
    /// While reading an index entry.
    Entry,
    /// While scanning the index.
    Scan,
    /// On the writer thread, committing.
    Commit,
    /// On the writer thread, compacting.
    Compaction,
}

/// Counters for [`StoreStats`](super::StoreStats).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Persisted totals, published by the writer after every applied batch.
    pub(crate) docs: AtomicU64,
    /// See [`Totals::chunks`].
    pub(crate) chunks: AtomicU64,
    /// See [`Totals::bytes`].
    pub(crate) bytes: AtomicU64,
    /// Acknowledged `commit` calls.
    pub(crate) commits: AtomicU64,
    /// Acknowledged document writes.
    pub(crate) writes: AtomicU64,
    /// Group commits.
    pub(crate) groups: AtomicU64,
    /// Backend syncs.
    pub(crate) fsyncs: AtomicU64,
    /// Documents compacted.
    pub(crate) compactions: AtomicU64,
    /// Loads whose heads differed from the index digest.
    pub(crate) digest_mismatches: AtomicU64,
    /// Set once a sync failed.
    pub(crate) failed: AtomicBool,
}

impl Counters {
    /// Publishes the persisted totals.
    pub(crate) fn publish(&self, t: &Totals) {
        self.docs.store(t.docs, Ordering::Relaxed);
        self.chunks.store(t.chunks, Ordering::Relaxed);
        self.bytes.store(t.bytes, Ordering::Relaxed);
    }
}

/// State shared by handles, iterators and the writer.
pub(crate) struct Shared {
    /// The configuration the store was opened with.
    pub(crate) cfg: StoreConfig,
    /// The key-value backend. Dropped (and, for sled, sealed) with the last `Shared`.
    pub(crate) backend: Arc<dyn KvBackend>,
    /// Sends requests to the writer thread; `None` once the store is shutting down.
    pub(crate) tx: Mutex<Option<Sender<Request>>>,
    /// Quarantined documents by key, loaded at open and added to as damage is found.
    quarantine: Mutex<BTreeMap<String, QuarantineRecord>>,
    /// Metric counters.
    pub(crate) counters: Counters,
    /// The `writes` counter, published after every acknowledged group commit (for
    /// [`crate::store::DocStore::watch_writes`]).
    pub(crate) written: tokio::sync::watch::Sender<u64>,
}

impl Shared {
    /// Builds the shared state.
    pub(crate) fn new(
        cfg: StoreConfig,
        backend: Arc<dyn KvBackend>,
        tx: Sender<Request>,
        quarantine: BTreeMap<String, QuarantineRecord>,
    ) -> Shared {
        Shared {
            cfg,
            backend,
            tx: Mutex::new(Some(tx)),
            quarantine: Mutex::new(quarantine),
            counters: Counters::default(),
            written: tokio::sync::watch::channel(0).0,
        }
    }

    fn quarantine_map(&self) -> MutexGuard<'_, BTreeMap<String, QuarantineRecord>> {
        // A panic while holding this lock cannot leave the map inconsistent (single inserts).
        self.quarantine.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The quarantine record of `key`, if it is quarantined.
    pub(crate) fn quarantine_record(&self, key: &str) -> Option<QuarantineRecord> {
        self.quarantine_map().get(key).cloned()
    }

    /// Every quarantine record, ordered by key.
    pub(crate) fn quarantine_list(&self) -> Vec<QuarantineRecord> {
        self.quarantine_map().values().cloned().collect()
    }

    /// Number of quarantine records.
    pub(crate) fn quarantine_len(&self) -> usize {
        self.quarantine_map().len()
    }

    /// Records damage to `key` in memory and logs it, once per key. Returns the record to
    /// persist if this is the first report.
    pub(crate) fn note_corrupt(
        &self,
        key: &str,
        damage: &Damage,
        found: Found,
    ) -> Option<QuarantineRecord> {
        let mut map = self.quarantine_map();
        if map.contains_key(key) {
            return None;
        }
        let record = QuarantineRecord {
            key: key.to_string(),
            reason: damage.reason.clone(),
            when_ms: now_ms(),
            from_backend: damage.backend,
        };
        tracing::error!(
            target: "cunyun_platform::store",
            key = %key,
            reason = %damage.reason,
            from_backend = damage.backend,
            found = ?found,
            "document quarantined: stored bytes are damaged; raw bytes kept"
        );
        map.insert(key.to_string(), record.clone());
        Some(record)
    }

    /// Records damage found outside the writer thread and asks the writer to persist it.
    pub(crate) fn report_corrupt(&self, key: &str, damage: &Damage, found: Found) {
        if let Some(record) = self.note_corrupt(key, damage, found) {
            let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(tx) = tx.as_ref() {
                // If the writer is gone the record stays in memory only; it will be found
                // again next time.
                let _ = tx.send(Request::Quarantine(record));
            }
        }
    }
}
