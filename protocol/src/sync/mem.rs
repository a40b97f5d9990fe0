//! Test and benchmark support for the sync protocol: an in-memory [`SyncStore`] over Automerge
//! documents ([`MemStore`]) and a lock-step driver that runs two [`Session`]s against each
//! other through the real wire encoding ([`run_pair`]).
//!
//! Nothing here does I/O or reads a clock: a "flight" of [`run_pair`] is one one-way trip of
//! every frame both sides had queued, so two flights make one round trip. `MemStore` scans all
//! of its documents for [`SyncStore::entries`] (a real store scans
//! [`SharedScope::key_ranges`]); it keeps each document's heads digest and last feed position,
//! so the index methods never touch a document.

use std::collections::BTreeMap;

use automerge::transaction::Transaction;
use automerge::{ActorId, Automerge, Change, ChangeHash, ReadDoc};

use crate::digest::{heads_digest, HeadsDigest};
use crate::key::DocKey;

use super::session::{Event, Outcome, Session, SessionConfig, SessionStats};
use super::wire::{self, FrameReader};
use super::{DocCompare, SharedScope, StoreError, SyncStore};

struct Entry {
    doc: Automerge,
    digest: HeadsDigest,
    seq: u64,
}

/// Why changes could not be applied to a [`MemStore`] document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MemError {
    /// A chunk is not an Automerge change.
    #[error("不是有效的Automerge变更：{0} (not an Automerge change)")]
    BadChange(String),
    /// Automerge refused the changes.
    #[error("Automerge拒绝了变更：{0} (Automerge refused the changes)")]
    Refused(String),
}

/// An in-memory document store with a change feed.
pub struct MemStore {
    actor: ActorId,
    docs: BTreeMap<DocKey, Entry>,
    seq: u64,
}

impl std::fmt::Debug for MemStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemStore")
            .field("actor", &self.actor)
            .field("docs", &self.docs.len())
            .field("seq", &self.seq)
            .finish()
    }
}

impl MemStore {
    /// An empty store whose local edits are made by `actor` (give every node its own).
    pub fn new(actor: &[u8]) -> MemStore {
        MemStore {
            actor: ActorId::from(actor),
            docs: BTreeMap::new(),
            seq: 0,
        }
    }

    /// Number of documents held.
    pub fn len(&self) -> usize {
        self.docs.len()
    }

    /// Whether no document is held.
    pub fn is_empty(&self) -> bool {
        self.docs.is_empty()
    }

    /// Keys of every document held, in order.
    pub fn keys(&self) -> impl Iterator<Item = &DocKey> {
        self.docs.keys()
    }

    /// A document, if held.
    pub fn doc(&self, key: &DocKey) -> Option<&Automerge> {
        self.docs.get(key).map(|e| &e.doc)
    }

    /// A document's heads, if held.
    pub fn heads_of(&self, key: &DocKey) -> Option<Vec<ChangeHash>> {
        self.docs.get(key).map(|e| e.doc.get_heads())
    }

    /// A document's heads digest, if held.
    pub fn digest(&self, key: &DocKey) -> Option<HeadsDigest> {
        self.docs.get(key).map(|e| e.digest)
    }

    fn touched(&mut self, key: &DocKey) {
        let Some(e) = self.docs.get_mut(key) else {
            return;
        };
        if e.doc.get_heads().is_empty() {
            // An empty document is no document.
            self.docs.remove(key);
            return;
        }
        let digest = heads_digest(&e.doc.get_heads());
        if digest != e.digest {
            self.seq += 1;
            e.digest = digest;
            e.seq = self.seq;
        }
    }

    /// Edits (or creates) a document in one local transaction. If `f` fails nothing changes.
    pub fn edit<E>(
        &mut self,
        key: &DocKey,
        f: impl FnOnce(&mut Transaction<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        let actor = self.actor.clone();
        let e = self.docs.entry(key.clone()).or_insert_with(|| Entry {
            doc: Automerge::new(),
            digest: heads_digest(&[]),
            seq: 0,
        });
        e.doc.set_actor(actor);
        let mut tx = e.doc.transaction();
        let result = f(&mut tx);
        match result {
            Ok(()) => {
                tx.commit();
            }
            Err(_) => {
                tx.rollback();
            }
        }
        self.touched(key);
        result
    }

    /// Applies raw changes to a document (creating it if needed), atomically: either all of
    /// them are applied or none. Returns whether the heads changed.
    pub fn apply(&mut self, key: &DocKey, changes: &[Vec<u8>]) -> Result<bool, MemError> {
        let parsed = changes
            .iter()
            .map(|c| Change::try_from(c.as_slice()).map_err(|e| MemError::BadChange(e.to_string())))
            .collect::<Result<Vec<Change>, MemError>>()?;
        let mut doc = match self.docs.get(key) {
            Some(e) => e.doc.clone(),
            None => Automerge::new(),
        };
        doc.apply_changes(parsed)
            .map_err(|e| MemError::Refused(e.to_string()))?;
        if doc.get_heads().is_empty() {
            return Ok(false);
        }
        let before = self.digest(key);
        let e = self.docs.entry(key.clone()).or_insert_with(|| Entry {
            doc: Automerge::new(),
            digest: heads_digest(&[]),
            seq: 0,
        });
        e.doc = doc;
        self.touched(key);
        Ok(before != self.digest(key))
    }

    /// Applies an [`Event::Apply`]; other events are ignored. Returns whether heads changed.
    pub fn apply_event(&mut self, event: &Event) -> Result<bool, MemError> {
        match event {
            Event::Apply { key, changes } => self.apply(key, changes),
            _ => Ok(false),
        }
    }
}

impl SyncStore for MemStore {
    fn seq(&self) -> u64 {
        self.seq
    }

    fn entries(&self, scope: &SharedScope) -> Result<Vec<(DocKey, HeadsDigest)>, StoreError> {
        Ok(self
            .docs
            .iter()
            .filter(|(k, _)| scope.contains(k))
            .map(|(k, e)| (k.clone(), e.digest))
            .collect())
    }

    fn entries_since(
        &self,
        scope: &SharedScope,
        seq: u64,
    ) -> Result<Option<Vec<(DocKey, HeadsDigest)>>, StoreError> {
        Ok(Some(
            self.docs
                .iter()
                .filter(|(k, e)| e.seq > seq && scope.contains(k))
                .map(|(k, e)| (k.clone(), e.digest))
                .collect(),
        ))
    }

    fn heads(&self, key: &DocKey) -> Result<Option<Vec<ChangeHash>>, StoreError> {
        Ok(self.heads_of(key))
    }

    fn summary_hashes(&self, key: &DocKey) -> Result<Option<Vec<ChangeHash>>, StoreError> {
        Ok(self.docs.get(key).map(|e| {
            super::heads_and_parents(e.doc.get_heads(), |h| {
                e.doc.get_change_by_hash(h).map(|c| c.deps().to_vec())
            })
        }))
    }

    fn changes_since(
        &self,
        key: &DocKey,
        their_heads: &[ChangeHash],
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        Ok(self
            .docs
            .get(key)
            .map(|e| {
                e.doc
                    .get_changes(their_heads)
                    .into_iter()
                    .map(|mut c| c.bytes().into_owned())
                    .collect()
            })
            .unwrap_or_default())
    }

    fn has_all(&self, key: &DocKey, hashes: &[ChangeHash]) -> Result<bool, StoreError> {
        Ok(match self.docs.get(key) {
            Some(e) => hashes
                .iter()
                .all(|h| e.doc.get_change_meta_by_hash(h).is_some()),
            None => hashes.is_empty(),
        })
    }

    fn compare(&self, key: &DocKey, their_heads: &[ChangeHash]) -> Result<DocCompare, StoreError> {
        let Some(e) = self.docs.get(key) else {
            return Ok(DocCompare {
                my_heads: None,
                they_lack: Vec::new(),
                i_lack: !their_heads.is_empty(),
            });
        };
        let mine = e.doc.get_heads();
        let they_lack = if mine.iter().all(|h| their_heads.contains(h)) {
            Vec::new()
        } else {
            e.doc
                .get_changes(their_heads)
                .into_iter()
                .map(|mut c| c.bytes().into_owned())
                .collect()
        };
        let i_lack = their_heads
            .iter()
            .any(|h| e.doc.get_change_meta_by_hash(h).is_none());
        Ok(DocCompare {
            my_heads: Some(mine),
            they_lack,
            i_lack,
        })
    }
}

/// Most flights [`run_pair`] runs before giving up.
pub const MAX_FLIGHTS: u32 = 200;

/// What happened when two sessions ran against each other.
#[derive(Debug, Clone)]
pub struct PairReport {
    /// One-way trips until neither side had anything left to send.
    pub flights: u32,
    /// The flight after which each side had finished (`None`: never).
    pub finished_after: [Option<u32>; 2],
    /// The last flight that delivered changes to either side (0: none did).
    pub last_apply_flight: u32,
    /// Encoded bytes sent by each side.
    pub bytes: [u64; 2],
    /// Frames sent by each side.
    pub frames: [u64; 2],
    /// How each side ended.
    pub outcome: [Option<Outcome>; 2],
    /// Each side's counters.
    pub stats: [SessionStats; 2],
    /// Every event other than `Apply`, per side.
    pub events: [Vec<Event>; 2],
    /// Documents whose heads changed by applying the peer's changes, per side.
    pub applied: [usize; 2],
    /// Apply failures, per side.
    pub apply_errors: [Vec<(DocKey, MemError)>; 2],
    /// Frames a side produced that could not be encoded (always 0 unless there is a bug).
    pub unencodable: [u64; 2],
}

impl PairReport {
    /// Whether both sides converged.
    pub fn converged(&self) -> bool {
        self.outcome
            .iter()
            .all(|o| matches!(o, Some(Outcome::Converged(_))))
    }

    /// Total bytes both ways.
    pub fn total_bytes(&self) -> u64 {
        self.bytes[0] + self.bytes[1]
    }
}

/// Runs a session between `a` and `b` to the end, passing every frame through
/// [`wire::encode`] and a [`FrameReader`], in lock-step flights, and applying changes as the
/// host would. `Err` only if a session could not start (store failure).
pub fn run_pair(
    a: &mut MemStore,
    a_config: SessionConfig,
    b: &mut MemStore,
    b_config: SessionConfig,
) -> Result<PairReport, super::SessionError> {
    let mut sessions = [Session::new(a_config, a)?, Session::new(b_config, b)?];
    let stores = [a, b];
    let mut readers = [FrameReader::new(), FrameReader::new()];
    let mut report = PairReport {
        flights: 0,
        finished_after: [None, None],
        last_apply_flight: 0,
        bytes: [0, 0],
        frames: [0, 0],
        outcome: [None, None],
        stats: [SessionStats::default(); 2],
        events: [Vec::new(), Vec::new()],
        applied: [0, 0],
        apply_errors: [Vec::new(), Vec::new()],
        unencodable: [0, 0],
    };
    while report.flights < MAX_FLIGHTS {
        // Everything each side has queued goes out in this flight.
        let mut in_flight: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
        for (i, s) in sessions.iter_mut().enumerate() {
            while let Some(f) = s.poll_outgoing() {
                report.frames[i] += 1;
                // The session only produces frames within the limits.
                if wire::encode_into(&f, &mut in_flight[i]).is_err() {
                    report.unencodable[i] += 1;
                }
            }
            report.bytes[i] += in_flight[i].len() as u64;
        }
        if in_flight.iter().all(Vec::is_empty) {
            break;
        }
        report.flights += 1;
        for (from, bytes) in in_flight.iter().enumerate() {
            let to = 1 - from;
            readers[to].push(bytes);
            loop {
                let frame = match readers[to].next_frame() {
                    Ok(Some(f)) => f,
                    Ok(None) => break,
                    Err(_) => {
                        // Cannot happen with frames we encoded ourselves; stop reading.
                        break;
                    }
                };
                let _ = sessions[to].handle(&*stores[to], frame);
                while let Some(ev) = sessions[to].poll_event() {
                    if let Event::Apply { key, .. } = &ev {
                        report.last_apply_flight = report.flights;
                        match stores[to].apply_event(&ev) {
                            Ok(true) => report.applied[to] += 1,
                            Ok(false) => {}
                            Err(e) => report.apply_errors[to].push((key.clone(), e)),
                        }
                    } else {
                        report.events[to].push(ev);
                    }
                }
            }
        }
        for (i, s) in sessions.iter().enumerate() {
            if s.is_finished() && report.finished_after[i].is_none() {
                report.finished_after[i] = Some(report.flights);
            }
        }
    }
    for (i, s) in sessions.iter_mut().enumerate() {
        // Events queued by `Session::new` (none today) or after the last flight.
        while let Some(ev) = s.poll_event() {
            report.events[i].push(ev);
        }
        report.outcome[i] = s.outcome().cloned();
        report.stats[i] = s.stats();
    }
    Ok(report)
}
