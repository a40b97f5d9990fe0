//! The writer thread: the only code that writes to the backend.
//!
//! **Group commit.** Callers send a [`Request::Commit`] with an [`Ack`]. The writer takes the
//! first queued request, drains whatever else is queued (up to
//! [`StoreConfig::max_group_writes`](super::StoreConfig::max_group_writes) writes), stages every
//! request against the index, applies all of them as one atomic batch, makes it durable with
//! one [`KvBackend::sync`], and only then acknowledges each caller. A request is atomic on its
//! own: if one of its writes is refused (too large, quarantined document), none of its writes
//! are stored and the other requests of the group are unaffected. If the group's batch fails,
//! the requests are retried one by one so that a damaged page only fails the requests that
//! touch it.
//!
//! **Compaction.** After a group is durable, documents with at least
//! [`compact_after_chunks`](super::StoreConfig::compact_after_chunks) chunks are queued. When
//! no request is waiting (or after 16 groups served back to back, so that a steady stream of
//! commits cannot starve it), the writer compacts one queued document at a time: it loads the
//! chunks, saves one snapshot, and in a single atomic batch deletes the old chunks and writes
//! the snapshot plus the new index entry. A crash before the batch leaves the old chunks; after it,
//! the snapshot. Compactions are not synced on their own: the next group commit's sync (or the
//! one at shutdown, or at the end of `compact_all`) covers them, and losing one to a crash only
//! loses the rewrite, never data.
//!
//! **Failure.** If a sync fails, the writer stops accepting writes ([`StoreError::Failed`]):
//! after a failed fsync the kernel may have dropped the dirty pages, so a later successful
//! fsync would not prove anything.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, Sender, TryRecvError};
use std::sync::Arc;

use cunyun_protocol::digest::heads_digest;
use cunyun_protocol::key::DocKey;

use super::backend::{panic_message, BackendError, TreeId, WriteBatch};
use super::codec::{
    chunk_key, chunk_range, decode_entry, encode_entry, encode_quarantine, encode_totals, seal,
    StoredEntry, Tag, Totals, META_COUNTERS, META_VACUUM_DUE,
};
use super::error::StoreError;
use super::read::{decode_doc, read_consistent, read_entry, Damage, ReadError};
use super::request::{Ack, Request};
use super::shared::{Found, Shared};
use super::types::{CompactStats, DocWrite, IndexEntry, QuarantineRecord};
use super::validate_write;
use super::verify::verify;

/// Group commits served back to back before one background step (compaction) runs even
/// though requests are waiting.
const STARVATION_LIMIT: u32 = 16;

/// A document's entry as staged in a group: the state before the group and after it.
#[derive(Clone, Copy)]
struct Staged {
    before: Option<StoredEntry>,
    after: StoredEntry,
    /// The group removes the document (`after` is then empty).
    removed: bool,
}

/// One commit request's operations: writes, then removals.
pub(crate) struct Ops {
    writes: Vec<DocWrite>,
    removes: Vec<DocKey>,
}

impl Ops {
    /// How many documents the request touches.
    fn len(&self) -> usize {
        self.writes.len() + self.removes.len()
    }

    /// Every key the request touches.
    fn keys(&self) -> impl Iterator<Item = &DocKey> {
        self.writes
            .iter()
            .map(|w| &w.key)
            .chain(self.removes.iter())
    }
}

/// Writes staged for one atomic batch.
#[derive(Default)]
struct Group {
    batch: WriteBatch,
    entries: HashMap<Vec<u8>, Staged>,
}

impl Group {
    fn merge(&mut self, other: Group) {
        self.batch.extend(other.batch);
        self.entries.extend(other.entries);
    }
}

/// A `compact_all` in progress.
struct CompactJob {
    /// Documents still to compact; `None` until the index has been scanned.
    queue: Option<VecDeque<Vec<u8>>>,
    stats: CompactStats,
    ack: Sender<Result<CompactStats, StoreError>>,
}

/// What compacting one document did.
struct Compacted {
    chunks_before: u32,
    bytes_before: u64,
    bytes_after: u64,
}

/// The writer's state; lives on its own thread.
pub(crate) struct Writer {
    shared: Arc<Shared>,
    rx: Receiver<Request>,
    /// Persisted totals as of the last applied batch.
    totals: Totals,
    /// Documents due for compaction.
    pending: BTreeSet<Vec<u8>>,
    /// `compact_all` calls, oldest first.
    jobs: VecDeque<CompactJob>,
    /// Quarantine records noted but not yet written.
    unsaved_quarantine: Vec<QuarantineRecord>,
    /// Whether a batch was applied since the last sync.
    dirty: bool,
    /// Set when a sync failed; no more writes after that.
    failed: Option<String>,
}

impl Writer {
    /// A writer starting from the persisted `totals`.
    pub(crate) fn new(shared: Arc<Shared>, rx: Receiver<Request>, totals: Totals) -> Writer {
        shared.counters.publish(&totals);
        Writer {
            shared,
            rx,
            totals,
            pending: BTreeSet::new(),
            jobs: VecDeque::new(),
            unsaved_quarantine: Vec::new(),
            dirty: false,
            failed: None,
        }
    }

    /// Serves requests until every sender is gone, then syncs and returns.
    pub(crate) fn run(mut self) {
        // Groups served since the last background step: under a steady stream of commits the
        // queue is never empty, so every `STARVATION_LIMIT` groups one step runs anyway.
        let mut busy_groups = 0u32;
        loop {
            let has_background_work = !self.pending.is_empty() || !self.jobs.is_empty();
            if has_background_work && busy_groups >= STARVATION_LIMIT {
                busy_groups = 0;
                self.background_step();
                continue;
            }
            let first = if has_background_work {
                match self.rx.try_recv() {
                    Ok(req) => req,
                    Err(TryRecvError::Empty) => {
                        busy_groups = 0;
                        self.background_step();
                        continue;
                    }
                    Err(TryRecvError::Disconnected) => break,
                }
            } else {
                match self.rx.recv() {
                    Ok(req) => req,
                    Err(_) => break,
                }
            };
            busy_groups += 1;
            self.handle_group(first);
        }
        self.shutdown();
    }

    fn handle_group(&mut self, first: Request) {
        let mut commits = Vec::new();
        let mut writes = 0usize;
        let mut verifies = Vec::new();
        let mut next = Some(first);
        while let Some(req) = next.take() {
            match req {
                Request::Commit {
                    writes: w,
                    removes,
                    ack,
                } => {
                    let ops = Ops { writes: w, removes };
                    writes += ops.len();
                    commits.push((ops, ack));
                }
                Request::Quarantine(record) => self.unsaved_quarantine.push(record),
                Request::CompactAll(ack) => self.jobs.push_back(CompactJob {
                    queue: None,
                    stats: CompactStats::default(),
                    ack,
                }),
                Request::Verify(ack) => verifies.push(ack),
            }
            if writes < self.shared.cfg.max_group_writes {
                next = self.rx.try_recv().ok();
            }
        }
        self.commit_group(commits);
        for ack in verifies {
            let _ = ack.send(verify(self.shared.backend.as_ref()));
        }
    }

    fn quarantine(&mut self, key: &str, damage: &Damage, found: Found) {
        if let Some(record) = self.shared.note_corrupt(key, damage, found) {
            self.unsaved_quarantine.push(record);
        }
    }

    fn corrupt(&mut self, key: &str, damage: Damage, found: Found) -> StoreError {
        self.quarantine(key, &damage, found);
        StoreError::Corrupt {
            key: key.to_string(),
            reason: damage.reason,
        }
    }

    /// Stages one request's writes on top of `group`, or refuses the whole request.
    fn stage_request(&mut self, ops: &Ops, group: &Group) -> Result<Group, StoreError> {
        let mut local = Group::default();
        for w in &ops.writes {
            validate_write(w, &self.shared.cfg)?;
            let doc = w.key.to_bytes();
            let key = w.key.to_string();
            if let Some(rec) = self.shared.quarantine_record(&key) {
                return Err(StoreError::Corrupt {
                    key,
                    reason: format!(
                        "the document is quarantined ({}); writes are refused until it is repaired",
                        rec.reason
                    ),
                });
            }
            let staged = match local.entries.get(&doc).or_else(|| group.entries.get(&doc)) {
                Some(s) => *s,
                None => {
                    let before = match read_entry(self.shared.backend.as_ref(), &doc, &key) {
                        Ok(e) => e,
                        Err(ReadError::Corrupt(damage)) => {
                            return Err(self.corrupt(&key, damage, Found::Commit))
                        }
                        Err(ReadError::Store(e)) => return Err(e),
                    };
                    Staged {
                        before,
                        after: before.unwrap_or_else(StoredEntry::empty),
                        removed: false,
                    }
                }
            };
            let mut after = staged.after;
            let size = after.entry.bytes + w.chunk.len() as u64;
            if size > self.shared.cfg.max_doc_bytes {
                return Err(StoreError::TooLarge {
                    key,
                    what: "document",
                    size,
                    limit: self.shared.cfg.max_doc_bytes,
                });
            }
            if after.next_seq == u32::MAX {
                return Err(StoreError::InvalidWrite {
                    key,
                    reason: "the document has used every chunk number; compaction must be failing"
                        .to_string(),
                });
            }
            let ck = chunk_key(&doc, after.next_seq);
            let value = seal(Tag::Chunk, &ck, &w.chunk);
            local.batch.put(TreeId::Docs, ck, value);
            after.next_seq += 1;
            after.generation += 1;
            after.entry = IndexEntry {
                digest: heads_digest(&w.heads),
                updated_at_ms: w.updated_at_ms,
                chunks: after.entry.chunks + 1,
                bytes: size,
            };
            local
                .batch
                .put(TreeId::Index, doc.clone(), encode_entry(&doc, &after));
            local.entries.insert(
                doc,
                Staged {
                    before: staged.before,
                    after,
                    removed: false,
                },
            );
        }
        for key in &ops.removes {
            self.stage_removal(key, ops, group, &mut local)?;
        }
        Ok(local)
    }

    /// Stages the removal of `key`: every chunk (stored, or staged earlier in this group) and
    /// the index entry. Removing a document that does not exist is not an error.
    fn stage_removal(
        &mut self,
        key: &DocKey,
        ops: &Ops,
        group: &Group,
        local: &mut Group,
    ) -> Result<(), StoreError> {
        let doc = key.to_bytes();
        let name = key.to_string();
        if ops.writes.iter().any(|w| &w.key == key) {
            return Err(StoreError::InvalidWrite {
                key: name,
                reason: "one commit both writes and removes the document".to_string(),
            });
        }
        let staged = match local.entries.get(&doc).or_else(|| group.entries.get(&doc)) {
            Some(s) => *s,
            None => {
                // A damaged entry does not stop a removal: the document goes either way.
                let before = read_entry(self.shared.backend.as_ref(), &doc, &name)
                    .ok()
                    .flatten();
                Staged {
                    before,
                    after: before.unwrap_or_else(StoredEntry::empty),
                    removed: false,
                }
            }
        };
        let (start, end) = chunk_range(&doc);
        for item in self.shared.backend.range(TreeId::Docs, &start, Some(&end)) {
            match item {
                Ok((k, _)) => local.batch.delete(TreeId::Docs, k),
                Err(e) => return Err(StoreError::from_backend(e, &name, "removing")),
            }
        }
        // Chunks staged earlier in this group are not in the backend yet.
        let first_staged = staged.before.map_or(0, |b| b.next_seq);
        for seq in first_staged..staged.after.next_seq {
            local.batch.delete(TreeId::Docs, chunk_key(&doc, seq));
        }
        local.batch.delete(TreeId::Index, doc.clone());
        local.batch.put(
            TreeId::Meta,
            META_VACUUM_DUE.to_vec(),
            seal(Tag::Meta, META_VACUUM_DUE, &[]),
        );
        let mut after = StoredEntry::empty();
        after.generation = staged.after.generation + 1;
        local.entries.insert(
            doc,
            Staged {
                before: staged.before,
                after,
                removed: true,
            },
        );
        Ok(())
    }

    /// The totals once `group` is applied.
    fn totals_after(&self, group: &Group) -> Totals {
        let mut t = self.totals;
        t.commit_seq += 1;
        for s in group.entries.values() {
            let before = s.before.unwrap_or_else(StoredEntry::empty);
            match (s.before.is_some(), s.removed) {
                (false, false) => t.docs += 1,
                (true, true) => t.docs = t.docs.saturating_sub(1),
                _ => {}
            }
            t.chunks = (t.chunks + u64::from(s.after.entry.chunks))
                .saturating_sub(u64::from(before.entry.chunks));
            t.bytes = (t.bytes + s.after.entry.bytes).saturating_sub(before.entry.bytes);
        }
        t
    }

    /// Records that a batch with `totals` was applied.
    fn applied(&mut self, totals: Totals) {
        self.totals = totals;
        self.shared.counters.publish(&totals);
        self.dirty = true;
    }

    fn schedule_compaction(&mut self, group: &Group) {
        let threshold = self.shared.cfg.compact_threshold();
        for (doc, s) in &group.entries {
            if s.removed {
                self.pending.remove(doc);
            } else if s.after.entry.chunks >= threshold {
                self.pending.insert(doc.clone());
            }
        }
    }

    fn stage_quarantine(&mut self, batch: &mut WriteBatch) -> Vec<QuarantineRecord> {
        let records = std::mem::take(&mut self.unsaved_quarantine);
        for r in &records {
            let key = r.key.as_bytes().to_vec();
            let value = encode_quarantine(&key, r.when_ms, r.from_backend, &r.reason);
            batch.put(TreeId::Quarantine, key, value);
        }
        records
    }

    fn commit_group(&mut self, commits: Vec<(Ops, Ack)>) {
        if let Some(reason) = &self.failed {
            for (_, ack) in commits {
                ack.send(Err(StoreError::Failed {
                    reason: reason.clone(),
                }));
            }
            return;
        }
        let mut group = Group::default();
        let mut accepted = Vec::with_capacity(commits.len());
        for (writes, ack) in commits {
            match self.stage_request(&writes, &group) {
                Ok(stage) => {
                    group.merge(stage);
                    accepted.push((writes, ack));
                }
                Err(e) => ack.send(Err(e)),
            }
        }
        let quarantine = self.stage_quarantine(&mut group.batch);
        if group.batch.is_empty() {
            return;
        }
        let totals = self.totals_after(&group);
        group
            .batch
            .put(TreeId::Meta, META_COUNTERS.to_vec(), encode_totals(&totals));
        match self.shared.backend.apply(&group.batch) {
            Ok(()) => {
                self.applied(totals);
                self.schedule_compaction(&group);
                let done = accepted
                    .into_iter()
                    .map(|(w, ack)| (w.len(), ack))
                    .collect();
                self.finish(done);
            }
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    requests = accepted.len(),
                    "group commit failed; retrying its requests one by one"
                );
                self.unsaved_quarantine = quarantine;
                self.commit_one_by_one(accepted);
            }
        }
    }

    /// Applies each request in its own batch, so only requests that touch damaged pages fail.
    fn commit_one_by_one(&mut self, accepted: Vec<(Ops, Ack)>) {
        let mut done = Vec::with_capacity(accepted.len());
        for (writes, ack) in accepted {
            let mut group = match self.stage_request(&writes, &Group::default()) {
                Ok(g) => g,
                Err(e) => {
                    ack.send(Err(e));
                    continue;
                }
            };
            let totals = self.totals_after(&group);
            group
                .batch
                .put(TreeId::Meta, META_COUNTERS.to_vec(), encode_totals(&totals));
            match self.shared.backend.apply(&group.batch) {
                Ok(()) => {
                    self.applied(totals);
                    self.schedule_compaction(&group);
                    done.push((writes.len(), ack));
                }
                Err(e) => {
                    let mut keys: Vec<String> = writes.keys().map(|k| k.to_string()).collect();
                    keys.sort();
                    keys.dedup();
                    let err = match (&e, keys.as_slice()) {
                        (BackendError::Corruption(_) | BackendError::Panicked(_), [only]) => {
                            let reason =
                                format!("the storage backend failed writing the document: {e}");
                            self.corrupt(only, Damage::backend(reason), Found::Commit)
                        }
                        _ => StoreError::from_backend(e, &keys.join(", "), "committing"),
                    };
                    ack.send(Err(err));
                }
            }
        }
        self.flush_quarantine();
        self.finish(done);
    }

    /// Syncs and acknowledges `done` (request sizes and acks) as durable.
    fn finish(&mut self, done: Vec<(usize, Ack)>) {
        match self.sync() {
            Ok(()) => {
                let c = &self.shared.counters;
                c.groups.fetch_add(1, Ordering::Relaxed);
                for (writes, _) in &done {
                    c.commits.fetch_add(1, Ordering::Relaxed);
                    c.writes.fetch_add(*writes as u64, Ordering::Relaxed);
                }
                // Wake watchers before acknowledging: a writer that looks at `watch_writes`
                // right after its commit returned must see it moved.
                self.shared
                    .written
                    .send_replace(c.writes.load(Ordering::Relaxed));
                for (_, ack) in done {
                    ack.send(Ok(()));
                }
            }
            Err(reason) => {
                for (_, ack) in done {
                    ack.send(Err(StoreError::Failed {
                        reason: reason.clone(),
                    }));
                }
            }
        }
    }

    /// Makes applied batches durable; on failure the store stops accepting writes.
    fn sync(&mut self) -> Result<(), String> {
        if let Some(reason) = &self.failed {
            return Err(reason.clone());
        }
        match self.shared.backend.sync() {
            Ok(()) => {
                self.dirty = false;
                self.shared.counters.fsyncs.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                let reason = format!("sync failed: {e}");
                tracing::error!(error = %e, "store sync failed; refusing further writes until reopened");
                self.failed = Some(reason.clone());
                self.shared.counters.failed.store(true, Ordering::Relaxed);
                Err(reason)
            }
        }
    }

    /// Writes noted quarantine records (not synced; the next sync covers them).
    fn flush_quarantine(&mut self) {
        if self.unsaved_quarantine.is_empty() || self.failed.is_some() {
            return;
        }
        let mut batch = WriteBatch::new();
        let records = self.stage_quarantine(&mut batch);
        match self.shared.backend.apply(&batch) {
            Ok(()) => self.dirty = true,
            Err(e) => tracing::error!(
                error = %e,
                records = records.len(),
                "could not persist quarantine records; they are kept in memory only"
            ),
        }
    }

    /// One unit of background work: part of a `compact_all`, or one queued compaction.
    fn background_step(&mut self) {
        if let Some(job) = self.jobs.front_mut() {
            match job.queue.as_mut() {
                None => {
                    let queue = self.docs_to_compact();
                    if let Some(job) = self.jobs.front_mut() {
                        job.queue = Some(queue);
                    }
                }
                Some(queue) => match queue.pop_front() {
                    Some(doc) => {
                        self.pending.remove(&doc);
                        let outcome = self.compact_doc(&doc);
                        if let Some(job) = self.jobs.front_mut() {
                            match outcome {
                                Ok(Some(c)) => {
                                    job.stats.docs_compacted += 1;
                                    job.stats.chunks_before += u64::from(c.chunks_before);
                                    job.stats.chunks_after += 1;
                                    job.stats.bytes_before += c.bytes_before;
                                    job.stats.bytes_after += c.bytes_after;
                                }
                                Ok(None) => {}
                                Err(StoreError::Corrupt { .. }) => job.stats.corrupt += 1,
                                Err(e) => {
                                    tracing::warn!(doc = %String::from_utf8_lossy(&doc), error = %e, "compaction failed")
                                }
                            }
                        }
                    }
                    None => {
                        self.flush_quarantine();
                        let synced = self.sync();
                        if let Some(job) = self.jobs.pop_front() {
                            let result = synced
                                .map(|()| job.stats)
                                .map_err(|reason| StoreError::Failed { reason });
                            let _ = job.ack.send(result);
                        }
                    }
                },
            }
            return;
        }
        if let Some(doc) = self.pending.pop_first() {
            if let Err(e) = self.compact_doc(&doc) {
                if !e.is_corrupt() {
                    tracing::warn!(doc = %String::from_utf8_lossy(&doc), error = %e, "compaction failed");
                }
            }
            self.flush_quarantine();
        }
    }

    /// Every document with more than one chunk, from an index scan.
    fn docs_to_compact(&mut self) -> VecDeque<Vec<u8>> {
        let mut out = VecDeque::new();
        let mut damaged = Vec::new();
        for item in self.shared.backend.range(TreeId::Index, &[], None) {
            match item {
                Ok((doc, value)) => match decode_entry(&doc, &value) {
                    Ok(e) if e.entry.chunks >= 2 => out.push_back(doc),
                    Ok(_) => {}
                    Err(reason) => damaged.push((
                        String::from_utf8_lossy(&doc).into_owned(),
                        Damage::data(reason),
                    )),
                },
                Err(e) => damaged.push((
                    "index (range after the last readable entry)".to_string(),
                    Damage::backend(e.to_string()),
                )),
            }
        }
        for (key, damage) in damaged {
            self.quarantine(&key, &damage, Found::Compaction);
        }
        out
    }

    /// Rewrites `doc` as one snapshot. `Ok(None)` if there was nothing to do.
    fn compact_doc(&mut self, doc: &[u8]) -> Result<Option<Compacted>, StoreError> {
        if let Some(reason) = &self.failed {
            return Err(StoreError::Failed {
                reason: reason.clone(),
            });
        }
        let key = String::from_utf8_lossy(doc).into_owned();
        if self.shared.quarantine_record(&key).is_some() {
            return Ok(None);
        }
        let (entry, chunks) = match read_consistent(self.shared.backend.as_ref(), doc, &key) {
            Ok(Some(found)) => found,
            Ok(None) => return Ok(None),
            Err(ReadError::Corrupt(damage)) => {
                return Err(self.corrupt(&key, damage, Found::Compaction))
            }
            Err(ReadError::Store(e)) => return Err(e),
        };
        if entry.entry.chunks < 2 {
            return Ok(None);
        }
        let am = match decode_doc(&chunks) {
            Ok(d) => d,
            Err(ReadError::Corrupt(damage)) => {
                return Err(self.corrupt(&key, damage, Found::Compaction))
            }
            Err(ReadError::Store(e)) => return Err(e),
        };
        let snapshot = match catch_unwind(AssertUnwindSafe(|| am.save())) {
            Ok(s) => s,
            Err(p) => {
                let reason = format!(
                    "automerge panicked saving the document: {}",
                    panic_message(p.as_ref())
                );
                return Err(self.corrupt(&key, Damage::data(reason), Found::Compaction));
            }
        };
        let digest = heads_digest(&am.get_heads());
        if digest != entry.entry.digest {
            self.shared
                .counters
                .digest_mismatches
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                doc = %key,
                indexed = %entry.entry.digest.to_hex(),
                actual = %digest.to_hex(),
                "index digest differs from the document's heads; the compacted entry follows the document"
            );
        }
        let after = StoredEntry {
            entry: IndexEntry {
                digest,
                updated_at_ms: entry.entry.updated_at_ms,
                chunks: 1,
                bytes: snapshot.len() as u64,
            },
            next_seq: 1,
            generation: entry.generation + 1,
        };
        let mut batch = WriteBatch::new();
        for (seq, _) in &chunks {
            if *seq != 0 {
                batch.delete(TreeId::Docs, chunk_key(doc, *seq));
            }
        }
        let ck = chunk_key(doc, 0);
        let value = seal(Tag::Chunk, &ck, &snapshot);
        batch.put(TreeId::Docs, ck, value);
        batch.put(TreeId::Index, doc.to_vec(), encode_entry(doc, &after));
        let mut totals = self.totals;
        totals.chunks = totals
            .chunks
            .saturating_sub(u64::from(entry.entry.chunks) - 1);
        totals.bytes = (totals.bytes + after.entry.bytes).saturating_sub(entry.entry.bytes);
        batch.put(TreeId::Meta, META_COUNTERS.to_vec(), encode_totals(&totals));
        match self.shared.backend.apply(&batch) {
            Ok(()) => {
                self.applied(totals);
                self.shared
                    .counters
                    .compactions
                    .fetch_add(1, Ordering::Relaxed);
                tracing::debug!(doc = %key, chunks = entry.entry.chunks, bytes_before = entry.entry.bytes, bytes_after = after.entry.bytes, "compacted");
                Ok(Some(Compacted {
                    chunks_before: entry.entry.chunks,
                    bytes_before: entry.entry.bytes,
                    bytes_after: after.entry.bytes,
                }))
            }
            Err(e @ (BackendError::Corruption(_) | BackendError::Panicked(_))) => {
                let reason = format!("the storage backend failed rewriting the document: {e}");
                Err(self.corrupt(&key, Damage::backend(reason), Found::Compaction))
            }
            Err(e) => Err(StoreError::from_backend(e, &key, "compacting")),
        }
    }

    fn shutdown(&mut self) {
        self.flush_quarantine();
        if self.dirty && self.failed.is_none() {
            let _ = self.sync();
        }
        for job in self.jobs.drain(..) {
            let _ = job.ack.send(Err(StoreError::Closed));
        }
        tracing::debug!(commit_seq = self.totals.commit_seq, "store writer stopped");
    }
}
