//! The sans-IO sync session: one exchange between two authenticated peers, driven by the host.
//!
//! This module owns the protocol's state machine. The host creates a [`Session`] with both
//! identities (the peer's from the transport's certificate check, never from the peer's words)
//! and its store view, sends every frame [`Session::poll_outgoing`] yields, passes every frame
//! it receives to [`Session::handle`], and acts on [`Session::poll_event`]:
//! [`Event::Apply`] (apply these changes to this document, atomically, **before the next call to
//! `handle`**), [`Event::Refused`], [`Event::DocError`], and finally [`Event::Converged`] (persist
//! its [`PeerMemory`] for next time) or [`Event::Failed`].
//!
//! # Flow and round trips
//!
//! Both sides send at once; a *flight* is one one-way trip, so two flights are one round trip.
//!
//! 1. **Flight 1.** `Hello` (identity, change-feed position, shared-scope fingerprint, and the
//!    watermark it holds for the peer). A side that met this peer before (it has a
//!    [`PeerMemory`]) also sends a `Summary` (basis `Watermark`) of every shared document it
//!    changed since the position the peer saw last, then `End(WatermarkSummary)`. A side
//!    without one sends a first batch of sketch cells if the host gave an estimate.
//! 2. **Flight 1 arrives.** Equal fingerprints: [`Event::Converged`] — the no-change case costs
//!    one flight each way and two hellos (about 60 B each).
//!    *Warm* (both hellos carry a watermark, and each side's summary started no later than
//!    the other's watermark for it): both summaries are already here, so each side answers at
//!    once (step 4). Otherwise *cold*: each side sends RIBLT cells (first batch
//!    `max(64, 1.5·e + 32)`, with `e` the larger of both estimates and the difference of the
//!    document counts; without any estimate `e` is at least 400 — 632 cells — or the sum of
//!    the document counts if smaller).
//! 3. **Cold only.** Each side subtracts the peer's cells from its own and peels. On success
//!    it sends a `Summary` (basis `Decoded`) of *its* differing documents with their full heads
//!    (and the heads' parents, so a peer that lacks the heads still finds what both hold);
//!    on failure it asks for more (`MoreCells`, doubling) and, when the peer cannot have
//!    decoded either, sends its own next batch unasked.
//! 4. **Response.** With both summaries complete each side sends `Changes` for every listed
//!    document the peer lacks changes of (computed from the peer's heads and their parents; in
//!    the cold case a document only it listed is one the peer lacks entirely; in a warm round
//!    a document only the peer listed is one the peer has all of), then — warm rounds only —
//!    `Want` (with its own heads) for documents the peer changed that it did not list itself
//!    (it has them unchanged since the watermark, or not at all), then `End(Response)`.
//! 5. **Answers.** `Changes` for each `Want`, then `End(Answers)`.
//! 6. **Done.** When a side has every change it will get, it sends `Done` with the fingerprint
//!    of its shared set and its feed position now (the start position if anything changed
//!    during the session other than what the fingerprint covers); both compare the two `Done`
//!    fingerprints. Equal: converged, and each side remembers the positions of the `Done`s, so
//!    the next warm summary does not list what this session delivered. Different
//!    (a missed document, an edit during the session): another round of sketches, up to
//!    [`SessionConfig::max_rounds`].
//!
//! | case | changes applied after | converged (both `Done`s seen) after |
//! |---|---|---|
//! | no change | — | 1 flight |
//! | warm, edits on both sides of a document | 2 flights | 3 flights |
//! | warm, one-sided edit | 3 flights | 4 flights |
//! | cold, estimate given (eager sketch) | 3 flights | 4 flights |
//! | cold, no estimate | 4 flights | 5 flights |
//!
//! A first sketch batch that is too small costs one more flight per extra batch (both sides
//! failed on the same cells, so each sends its next batch unasked, sized from an estimate of
//! the difference made from the failed cells) — two when only one side failed.
//! The `Done` exchange is a check: changes are applied a flight before convergence is known.
//!
//! # Scope
//!
//! Only documents in the [`SharedScope`] are listed, sent or accepted. A document the peer
//! lists, wants or sends outside it — or of a kind that may not reach this node's role, like
//! `hp` to a hub — is refused for that document alone (a `Refused` frame and an
//! [`Event::Refused`]); the session continues. (A peer whose own set keeps such a document will
//! not reach equal fingerprints, so such a session ends `NotConverged` and leaves no memory.)

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use automerge::ChangeHash;

use crate::digest::{heads_digest, HeadsDigest};
use crate::identity::NodeIdentity;
use crate::key::DocKey;

use super::riblt::{self, Cell, DecodeError, Encoder, Fingerprint, Symbol};
use super::scope::{Reach, SharedScope};
use super::wire::{
    self, DocChanges, DocHeads, ErrorCode, Frame, Hello, Phase, RefuseReason, SummaryBasis,
    HEADER_LEN, MAX_DOCS_PER_FRAME, MAX_FRAME_LEN, MAX_HEADS_PER_DOC, PROTOCOL_VERSION,
};
use super::{StoreError, SyncStore};

/// Sketch cells per `Sketch` frame (about 450 KB).
const CELLS_PER_FRAME: usize = 16_384;

/// Frames are filled up to about this size before a new one is started.
const SOFT_FRAME_LEN: usize = 1 << 20;

/// Most sketch cells a session will ever hold from a peer or send to it.
pub const MAX_SESSION_CELLS: u64 = 1 << 20;

/// Most distinct documents a peer may list, want or send in one round, whatever the document
/// counts in the hellos say. Below it the bound is `2·(both counts) + 4096`.
pub const MAX_SESSION_DOCS: usize = 1 << 20;

/// The difference a cold round's first sketch batch is sized for when neither side gave an
/// estimate: 400 symbols (200 documents changed on one side), a first batch of 632 cells
/// (about 17 KB). 512 cells do not reliably decode 420 differences (a typical day's edits),
/// and one more batch costs a round trip and 512 more cells.
const COLD_DEFAULT_ESTIMATE: u64 = 400;

/// Most refusals before the session gives up on the peer.
pub const MAX_REFUSALS: usize = 4096;

/// What a node remembers about a peer after a converged session, to make the next one warm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeerMemory {
    /// [`SharedScope::id`] of the scope the session covered; memory for another scope is
    /// ignored.
    pub scope_id: u64,
    /// The peer's change-feed position this node has seen everything up to (the peer's
    /// `my_seq`); sent as `watermark_for_you`.
    pub peer_seq_seen: u64,
    /// This node's change-feed position the peer has seen everything up to; the next warm
    /// summary lists what changed after it.
    pub my_seq_seen: u64,
}

/// How a session is set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    /// This node.
    pub local: NodeIdentity,
    /// The peer, as the transport authenticated it.
    pub peer: NodeIdentity,
    /// What this node remembers about the peer from the last converged session, if anything.
    pub memory: Option<PeerMemory>,
    /// The host's estimate of how many documents differ. When the session is cold and this is
    /// given, the first sketch batch goes out with the hello (saving a flight).
    pub estimate: Option<u64>,
    /// Reconciliation rounds before giving up (the first round plus retries after a fingerprint
    /// mismatch). At least 1.
    pub max_rounds: u8,
}

impl SessionConfig {
    /// A configuration with no memory, no estimate and three rounds.
    pub fn new(local: NodeIdentity, peer: NodeIdentity) -> SessionConfig {
        SessionConfig {
            local,
            peer,
            memory: None,
            estimate: None,
            max_rounds: 3,
        }
    }
}

/// Which reconciliation a round uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Mode {
    /// Waiting for the peer's hello.
    #[default]
    Hello,
    /// Summaries of changes since per-peer watermarks.
    Watermark,
    /// RIBLT sketches.
    Sketch,
}

/// Counters of one session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SessionStats {
    /// Reconciliation rounds started.
    pub rounds: u8,
    /// The mode of the last round.
    pub mode: Mode,
    /// Frames queued for the peer.
    pub frames_sent: u64,
    /// Their encoded size.
    pub bytes_sent: u64,
    /// Frames handled.
    pub frames_received: u64,
    /// Their encoded size.
    pub bytes_received: u64,
    /// Sketch cells sent.
    pub cells_sent: u64,
    /// Sketch cells received.
    pub cells_received: u64,
    /// Differing documents found by the last successful decode (both sides' together).
    pub differences: u64,
    /// Documents listed in this side's summaries.
    pub summarized: u64,
    /// Documents this side sent changes for (per frame entry).
    pub docs_sent: u64,
    /// Change chunks sent.
    pub changes_sent: u64,
    /// Documents received with changes (per frame entry).
    pub docs_received: u64,
    /// Change chunks received.
    pub changes_received: u64,
    /// Documents this side refused.
    pub refused: u64,
    /// The highest protocol version the peer's hello announced (0 until it arrived).
    pub peer_version: u8,
    /// Documents the peer said it holds in the shared scope (from its hello).
    pub peer_documents: u64,
}

/// Why a session failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The peer sent something the protocol does not allow here.
    #[error("对端违反同步协议：{0} (protocol violation)")]
    Protocol(String),
    /// The peer's hello claims another identity than its certificate.
    #[error("对端自称的身份与证书不符 (hello identity differs from the authenticated one)")]
    Identity,
    /// The peer speaks no version we do.
    #[error("对端协议版本{0}不受支持 (unsupported peer version {0})")]
    Version(u8),
    /// A session limit was exceeded.
    #[error("超出同步会话上限：{0} (limit exceeded)")]
    Limit(String),
    /// The fingerprints still differed after the last round.
    #[error("{rounds}轮后仍未一致 (not converged after {rounds} rounds)")]
    NotConverged {
        /// Rounds run.
        rounds: u8,
    },
    /// The local store failed on the index.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The peer gave up and said why.
    #[error("对端报告错误（{code:?}）：{message}")]
    Peer {
        /// Its code.
        code: ErrorCode,
        /// Its message.
        message: String,
    },
}

impl SessionError {
    fn code(&self) -> ErrorCode {
        match self {
            SessionError::Protocol(_) | SessionError::Peer { .. } => ErrorCode::Protocol,
            SessionError::Identity => ErrorCode::Identity,
            SessionError::Version(_) => ErrorCode::Version,
            SessionError::Limit(_) => ErrorCode::Limit,
            SessionError::NotConverged { .. } => ErrorCode::NotConverged,
            SessionError::Store(_) => ErrorCode::Store,
        }
    }
}

/// Who refused a document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefusedBy {
    /// This node refused what the peer listed, wanted or sent.
    Us,
    /// The peer refused what this node sent.
    Peer,
}

/// What the host must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Apply these raw changes to this document, atomically, before the next call to
    /// [`Session::handle`].
    Apply {
        /// The document (always inside the shared scope).
        key: DocKey,
        /// Raw change chunks in causal order.
        changes: Vec<Vec<u8>>,
    },
    /// A document was refused; worth a log line.
    Refused {
        /// The document.
        key: DocKey,
        /// Why.
        reason: RefuseReason,
        /// By whom.
        by: RefusedBy,
    },
    /// The store failed on one document; it was skipped.
    DocError {
        /// The document.
        key: DocKey,
        /// What went wrong.
        message: String,
    },
    /// Both sides hold the same shared set. Persist `memory` for this peer.
    Converged {
        /// The watermarks to keep.
        memory: PeerMemory,
        /// Counters.
        stats: SessionStats,
    },
    /// The session failed; nothing should be persisted about the peer.
    Failed {
        /// Why.
        error: SessionError,
        /// Counters.
        stats: SessionStats,
    },
}

/// The local shared-scope set at the start of a round.
struct Snapshot {
    entries: Vec<(DocKey, HeadsDigest)>,
    symbols: Vec<Symbol>,
    fingerprint: Fingerprint,
}

impl Snapshot {
    fn take(store: &dyn SyncStore, shared: &SharedScope) -> Result<Snapshot, StoreError> {
        let mut entries = store.entries(shared)?;
        entries.retain(|(k, _)| shared.contains(k));
        if !entries.windows(2).all(|w| w[0].0 < w[1].0) {
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            entries.dedup_by(|a, b| a.0 == b.0);
        }
        let symbols: Vec<Symbol> = entries.iter().map(|(k, d)| Symbol::of(k, d)).collect();
        let fingerprint = Fingerprint::of(&symbols);
        Ok(Snapshot {
            entries,
            symbols,
            fingerprint,
        })
    }

    fn digest_of(&self, key: &DocKey) -> Option<HeadsDigest> {
        self.entries
            .binary_search_by(|(k, _)| k.cmp(key))
            .ok()
            .map(|i| self.entries[i].1)
    }
}

/// Sketch exchange state of a round.
struct SketchState {
    encoder: Encoder,
    sent: u64,
    peer: Vec<Cell>,
    requested: u64,
}

/// State of one reconciliation round.
#[derive(Default)]
struct Round {
    number: u8,
    mode: Mode,
    sketch: Option<SketchState>,
    decoded: bool,
    my_summary: BTreeSet<DocKey>,
    my_summary_done: bool,
    peer_summary: BTreeMap<DocKey, Vec<ChangeHash>>,
    peer_summary_done: bool,
    response_sent: bool,
    my_wants: usize,
    peer_response_done: bool,
    peer_answers_done: bool,
    done_sent: Option<Fingerprint>,
    /// The feed position sent with this side's `Done`.
    done_seq: u64,
    peer_done: Option<Fingerprint>,
    /// The feed position the peer sent with its `Done`.
    peer_done_seq: u64,
    touched: BTreeSet<DocKey>,
}

/// How a finished session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Converged; the memory to persist.
    Converged(PeerMemory),
    /// Failed.
    Failed(SessionError),
}

/// One sync exchange with one peer. See the module documentation.
pub struct Session {
    config: SessionConfig,
    shared: SharedScope,
    local_reach: Reach,
    my_hello: Hello,
    peer_hello: Option<Hello>,
    /// Keys of the warm summary sent with the hello, if one was.
    warm_summary: Option<BTreeSet<DocKey>>,
    snapshot: Snapshot,
    round: Round,
    cap: u64,
    out: VecDeque<Frame>,
    events: VecDeque<Event>,
    stats: SessionStats,
    outcome: Option<Outcome>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("local", &self.config.local)
            .field("peer", &self.config.peer)
            .field("round", &self.round.number)
            .field("mode", &self.round.mode)
            .field("outcome", &self.outcome)
            .finish()
    }
}

/// First sketch batch for an estimated difference `e`.
fn first_batch(e: u64, cap: u64) -> u64 {
    e.saturating_mul(3)
        .div_ceil(2)
        .saturating_add(32)
        .max(64)
        .min(cap)
}

fn heads_for_wire(mut heads: Vec<ChangeHash>) -> Vec<ChangeHash> {
    // Listing a subset of heads only makes the peer send more than needed; never less.
    heads.truncate(MAX_HEADS_PER_DOC);
    heads
}

/// Splits `DocHeads` entries into frames.
fn heads_frames(entries: Vec<DocHeads>, make: impl Fn(Vec<DocHeads>) -> Frame) -> Vec<Frame> {
    let mut frames = Vec::new();
    let mut cur = Vec::new();
    let mut bytes = HEADER_LEN + 8;
    for e in entries {
        let len = wire::doc_heads_len(&e.key, e.heads.len());
        if !cur.is_empty() && (cur.len() >= MAX_DOCS_PER_FRAME || bytes + len > SOFT_FRAME_LEN) {
            frames.push(make(std::mem::take(&mut cur)));
            bytes = HEADER_LEN + 8;
        }
        bytes += len;
        cur.push(e);
    }
    if !cur.is_empty() {
        frames.push(make(cur));
    }
    frames
}

/// Packs documents' changes into `Changes` frames within every limit.
struct ChangesBatch {
    frames: Vec<Frame>,
    docs: Vec<DocChanges>,
    bytes: usize,
    changes: usize,
    too_large: Vec<DocKey>,
    docs_sent: u64,
    changes_sent: u64,
}

impl ChangesBatch {
    /// Conservative size of an empty `Changes` frame (header and a 3-byte doc count).
    const EMPTY: usize = HEADER_LEN + 3;
    /// Largest single change that fits in a frame with its key.
    const MAX_CHANGE: usize = MAX_FRAME_LEN - 4 - Self::EMPTY - 128;

    fn new() -> ChangesBatch {
        ChangesBatch {
            frames: Vec::new(),
            docs: Vec::new(),
            bytes: Self::EMPTY,
            changes: 0,
            too_large: Vec::new(),
            docs_sent: 0,
            changes_sent: 0,
        }
    }

    fn flush(&mut self) {
        if !self.docs.is_empty() {
            self.frames.push(Frame::Changes {
                docs: std::mem::take(&mut self.docs),
            });
        }
        self.bytes = Self::EMPTY;
        self.changes = 0;
    }

    fn add(&mut self, key: &DocKey, changes: Vec<Vec<u8>>) {
        if changes.is_empty() {
            return;
        }
        if changes.iter().any(|c| c.len() > Self::MAX_CHANGE) {
            self.too_large.push(key.clone());
            return;
        }
        let doc_overhead = wire::doc_changes_len(key, &[]) + 4;
        let mut open = false;
        for c in changes {
            let len = c.len() + 5;
            let extra = len + if open { 0 } else { doc_overhead };
            let full = self.docs.len() >= MAX_DOCS_PER_FRAME
                || self.changes >= wire::MAX_CHANGES_PER_FRAME
                || self.bytes + extra > SOFT_FRAME_LEN;
            if full && !self.docs.is_empty() {
                self.flush();
                open = false;
            }
            if !open {
                self.docs.push(DocChanges {
                    key: key.clone(),
                    changes: Vec::new(),
                });
                self.bytes += doc_overhead;
                self.docs_sent += 1;
                open = true;
            }
            self.bytes += len;
            self.changes += 1;
            self.changes_sent += 1;
            if let Some(d) = self.docs.last_mut() {
                d.changes.push(c);
            }
        }
    }
}

impl Session {
    /// Starts a session: takes the snapshot of the shared scope and queues the first flight.
    pub fn new(config: SessionConfig, store: &dyn SyncStore) -> Result<Session, SessionError> {
        let shared = SharedScope::between(&config.local, &config.peer);
        let local_reach = Reach::from(&config.local);
        let memory = config.memory.filter(|m| m.scope_id == shared.id());
        // The feed position is read before the index, so nothing after it is missed.
        let my_seq = store.seq();
        let snapshot = Snapshot::take(store, &shared)?;
        let count = snapshot.entries.len() as u64;
        let cap = (2 * count + 1024).min(MAX_SESSION_CELLS);

        let mut session = Session {
            my_hello: Hello {
                version: PROTOCOL_VERSION,
                identity: config.local,
                watermark_for_you: memory.map(|m| m.peer_seq_seen),
                summary_since: None,
                my_seq,
                doc_count: count,
                estimate: config.estimate.unwrap_or(0),
                fingerprint: snapshot.fingerprint,
                eager_cells: 0,
            },
            config,
            shared,
            local_reach,
            peer_hello: None,
            warm_summary: None,
            snapshot,
            round: Round {
                number: 1,
                ..Round::default()
            },
            cap,
            out: VecDeque::new(),
            events: VecDeque::new(),
            stats: SessionStats {
                rounds: 1,
                ..SessionStats::default()
            },
            outcome: None,
        };

        // Warm: summarise what changed since the peer last saw us.
        let mut warm_frames = Vec::new();
        if let Some(m) = memory {
            if let Some(changed) = store.entries_since(&session.shared, m.my_seq_seen)? {
                let keys: BTreeSet<DocKey> = changed
                    .into_iter()
                    .map(|(k, _)| k)
                    .filter(|k| session.shared.contains(k))
                    .collect();
                let entries = session.summary_entries(store, &keys);
                session.stats.summarized += entries.len() as u64;
                session.warm_summary = Some(entries.iter().map(|e| e.key.clone()).collect());
                session.my_hello.summary_since = Some(m.my_seq_seen);
                warm_frames = heads_frames(entries, |entries| Frame::Summary {
                    basis: SummaryBasis::Watermark,
                    entries,
                });
                warm_frames.push(Frame::End {
                    phase: Phase::WatermarkSummary,
                });
            }
        }
        // Cold with an estimate: the first sketch batch goes with the hello.
        let eager = match (memory, session.config.estimate) {
            (None, Some(e)) => first_batch(e, cap),
            _ => 0,
        };
        session.my_hello.eager_cells = eager as u32;
        let hello = Frame::Hello(session.my_hello.clone());
        session.send(hello);
        for f in warm_frames {
            session.send(f);
        }
        if eager > 0 {
            session.round.sketch = Some(session.new_sketch());
            session.send_cells_upto(eager);
        }
        Ok(session)
    }

    /// The next frame to send, if any.
    pub fn poll_outgoing(&mut self) -> Option<Frame> {
        self.out.pop_front()
    }

    /// The next event for the host, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Whether the session has ended (converged or failed). Frames handled afterwards are
    /// ignored; queued frames should still be sent.
    pub fn is_finished(&self) -> bool {
        self.outcome.is_some()
    }

    /// How the session ended, once it has.
    pub fn outcome(&self) -> Option<&Outcome> {
        self.outcome.as_ref()
    }

    /// Counters so far.
    pub fn stats(&self) -> SessionStats {
        self.stats
    }

    /// The scope this session reconciles.
    pub fn shared_scope(&self) -> &SharedScope {
        &self.shared
    }

    /// Handles one frame from the peer. Errors end the session (an `Error` frame is queued for
    /// the peer and [`Event::Failed`] emitted); they are returned too for convenience.
    pub fn handle(&mut self, store: &dyn SyncStore, frame: Frame) -> Result<(), SessionError> {
        if self.outcome.is_some() {
            return Ok(());
        }
        self.stats.frames_received += 1;
        self.stats.bytes_received += wire::encoded_len(&frame) as u64;
        let peer_error = matches!(frame, Frame::Error { .. });
        match self.dispatch(store, frame) {
            Ok(()) => Ok(()),
            Err(e) => {
                if !peer_error {
                    let mut message = e.to_string();
                    if message.len() > wire::MAX_ERROR_MESSAGE_LEN {
                        let mut cut = wire::MAX_ERROR_MESSAGE_LEN;
                        while !message.is_char_boundary(cut) {
                            cut -= 1;
                        }
                        message.truncate(cut);
                    }
                    self.send(Frame::Error {
                        code: e.code(),
                        message,
                    });
                }
                self.finish(Outcome::Failed(e.clone()));
                Err(e)
            }
        }
    }

    fn dispatch(&mut self, store: &dyn SyncStore, frame: Frame) -> Result<(), SessionError> {
        if let Frame::Error { code, message } = frame {
            return Err(SessionError::Peer { code, message });
        }
        if let Frame::Hello(h) = frame {
            return self.on_hello(store, h);
        }
        if self.peer_hello.is_none() {
            return Err(SessionError::Protocol(format!(
                "{:?} before hello",
                frame.frame_type()
            )));
        }
        match frame {
            Frame::Sketch { start, cells } => self.on_sketch(store, start, cells),
            Frame::MoreCells { total } => self.on_more_cells(total),
            Frame::Summary { basis, entries } => self.on_summary(basis, entries),
            Frame::Want { entries } => self.on_want(store, entries),
            Frame::Changes { docs } => self.on_changes(docs),
            Frame::Refused { key, reason } => {
                self.events.push_back(Event::Refused {
                    key,
                    reason,
                    by: RefusedBy::Peer,
                });
                Ok(())
            }
            Frame::End { phase } => self.on_end(store, phase),
            Frame::Done { fingerprint, seq } => self.on_done(store, fingerprint, seq),
            Frame::Hello(_) | Frame::Error { .. } => Ok(()),
        }
    }

    // -----------------------------------------------------------------------------------------
    // Sending

    fn send(&mut self, frame: Frame) {
        self.stats.frames_sent += 1;
        self.stats.bytes_sent += wire::encoded_len(&frame) as u64;
        if let Frame::Sketch { cells, .. } = &frame {
            self.stats.cells_sent += cells.len() as u64;
        }
        self.out.push_back(frame);
    }

    fn finish(&mut self, outcome: Outcome) {
        let event = match &outcome {
            Outcome::Converged(memory) => Event::Converged {
                memory: *memory,
                stats: self.stats,
            },
            Outcome::Failed(error) => Event::Failed {
                error: error.clone(),
                stats: self.stats,
            },
        };
        self.events.push_back(event);
        self.outcome = Some(outcome);
    }

    fn converge(&mut self) {
        let (peer_seq_seen, my_seq_seen) = match (self.round.done_sent, self.round.peer_done) {
            // Converged by `Done`s: each side's position after its own applies.
            (Some(_), Some(_)) => (self.round.peer_done_seq, self.round.done_seq),
            // Converged on the hellos' fingerprints.
            _ => (
                self.peer_hello.as_ref().map_or(0, |h| h.my_seq),
                self.my_hello.my_seq,
            ),
        };
        let memory = PeerMemory {
            scope_id: self.shared.id(),
            peer_seq_seen,
            my_seq_seen,
        };
        self.finish(Outcome::Converged(memory));
    }

    fn refuse(&mut self, key: DocKey) -> Result<(), SessionError> {
        let reason = if !key.kind().may_be_held_by(self.local_reach.role)
            || !key.kind().may_be_held_by(self.config.peer.role)
        {
            RefuseReason::NotForRole
        } else {
            RefuseReason::OutOfScope
        };
        self.stats.refused += 1;
        if self.stats.refused as usize > MAX_REFUSALS {
            return Err(SessionError::Limit(format!(
                "more than {MAX_REFUSALS} refused documents"
            )));
        }
        self.send(Frame::Refused {
            key: key.clone(),
            reason,
        });
        self.events.push_back(Event::Refused {
            key,
            reason,
            by: RefusedBy::Us,
        });
        Ok(())
    }

    /// Records that this round may change `key`, within the round's document bound.
    fn touch(&mut self, key: &DocKey) -> Result<(), SessionError> {
        if self.round.touched.insert(key.clone()) {
            let counts =
                self.my_hello.doc_count + self.peer_hello.as_ref().map_or(0, |h| h.doc_count);
            let limit = (2 * counts + 4096).min(MAX_SESSION_DOCS as u64) as usize;
            if self.round.touched.len() > limit {
                return Err(SessionError::Limit(format!(
                    "more than {limit} documents in one round"
                )));
            }
        }
        Ok(())
    }

    fn doc_error(&mut self, key: &DocKey, e: &StoreError) {
        self.events.push_back(Event::DocError {
            key: key.clone(),
            message: e.0.clone(),
        });
    }

    /// Summary entries (key + full heads, then their parents) for `keys`, skipping documents
    /// that vanished.
    fn summary_entries(&mut self, store: &dyn SyncStore, keys: &BTreeSet<DocKey>) -> Vec<DocHeads> {
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            match store.summary_hashes(k) {
                Ok(Some(heads)) => out.push(DocHeads {
                    key: k.clone(),
                    heads: heads_for_wire(heads),
                }),
                Ok(None) => {}
                Err(e) => self.doc_error(k, &e),
            }
        }
        out
    }

    fn send_changes(&mut self, batch: ChangesBatch) {
        let ChangesBatch {
            mut frames,
            docs,
            too_large,
            docs_sent,
            changes_sent,
            ..
        } = batch;
        if !docs.is_empty() {
            frames.push(Frame::Changes { docs });
        }
        self.stats.docs_sent += docs_sent;
        self.stats.changes_sent += changes_sent;
        for f in frames {
            self.send(f);
        }
        for key in too_large {
            self.events.push_back(Event::DocError {
                key: key.clone(),
                message: "a single change exceeds the frame limit".into(),
            });
            self.send(Frame::Refused {
                key,
                reason: RefuseReason::TooLarge,
            });
        }
    }

    // -----------------------------------------------------------------------------------------
    // Hello

    fn on_hello(&mut self, store: &dyn SyncStore, h: Hello) -> Result<(), SessionError> {
        if self.peer_hello.is_some() {
            return Err(SessionError::Protocol("second hello".into()));
        }
        if h.identity != self.config.peer {
            return Err(SessionError::Identity);
        }
        // Recorded before the version check, so a peer that is too old shows what it speaks.
        self.stats.peer_version = h.version;
        self.stats.peer_documents = h.doc_count;
        if h.version < PROTOCOL_VERSION {
            return Err(SessionError::Version(h.version));
        }
        let mine = self.my_hello.clone();
        self.peer_hello = Some(h.clone());
        self.cap = (2 * (mine.doc_count.saturating_add(h.doc_count)) + 1024).min(MAX_SESSION_CELLS);
        if h.fingerprint == mine.fingerprint {
            self.converge();
            return Ok(());
        }
        // Warm only if each side's summary covers everything the other has not seen.
        let covers = |since: Option<u64>, seen: Option<u64>| match (since, seen) {
            (Some(since), Some(seen)) => since <= seen,
            _ => false,
        };
        let warm = covers(mine.summary_since, h.watermark_for_you)
            && covers(h.summary_since, mine.watermark_for_you);
        if warm {
            self.round.mode = Mode::Watermark;
            self.stats.mode = Mode::Watermark;
            self.round.my_summary = self.warm_summary.take().unwrap_or_default();
            self.round.my_summary_done = true;
            self.maybe_respond(store)
        } else {
            self.round.mode = Mode::Sketch;
            self.stats.mode = Mode::Sketch;
            if self.round.sketch.is_none() {
                self.round.sketch = Some(self.new_sketch());
            }
            let mut e = mine
                .doc_count
                .abs_diff(h.doc_count)
                .max(mine.estimate)
                .max(h.estimate);
            if mine.estimate == 0 && h.estimate == 0 {
                // No estimate: a batch large enough for a typical gap between syncs, never
                // more than both sets could differ by.
                e = e.max(COLD_DEFAULT_ESTIMATE.min(mine.doc_count.saturating_add(h.doc_count)));
            }
            let m = first_batch(e, self.cap);
            self.send_cells_upto(m);
            Ok(())
        }
    }

    // -----------------------------------------------------------------------------------------
    // Sketches

    fn new_sketch(&self) -> SketchState {
        SketchState {
            encoder: Encoder::from_symbols(self.snapshot.symbols.iter().copied()),
            sent: 0,
            peer: Vec::new(),
            requested: 0,
        }
    }

    /// Sends this side's cells up to index `total` (no-op if already sent).
    fn send_cells_upto(&mut self, total: u64) {
        let total = total.min(self.cap);
        let Some(st) = self.round.sketch.as_mut() else {
            return;
        };
        if total <= st.sent {
            return;
        }
        st.encoder.extend_to(total as usize);
        let mut frames = Vec::new();
        let mut start = st.sent as usize;
        let end = total as usize;
        while start < end {
            let stop = (start + CELLS_PER_FRAME).min(end);
            frames.push(Frame::Sketch {
                start: start as u64,
                cells: st.encoder.cells()[start..stop].to_vec(),
            });
            start = stop;
        }
        st.sent = total;
        for f in frames {
            self.send(f);
        }
    }

    fn on_sketch(
        &mut self,
        store: &dyn SyncStore,
        start: u64,
        cells: Vec<Cell>,
    ) -> Result<(), SessionError> {
        if self.round.mode != Mode::Sketch {
            return Err(SessionError::Protocol(
                "sketch outside a sketch round".into(),
            ));
        }
        let cap = self.cap;
        let Some(st) = self.round.sketch.as_mut() else {
            return Err(SessionError::Protocol("sketch without state".into()));
        };
        if start != st.peer.len() as u64 {
            return Err(SessionError::Protocol(format!(
                "sketch cells start at {start}, expected {}",
                st.peer.len()
            )));
        }
        if st.peer.len() as u64 + cells.len() as u64 > cap {
            return Err(SessionError::Limit(format!("more than {cap} sketch cells")));
        }
        self.stats.cells_received += cells.len() as u64;
        st.peer.extend(cells);
        if self.round.decoded {
            return Ok(());
        }
        self.try_decode(store)
    }

    fn try_decode(&mut self, store: &dyn SyncStore) -> Result<(), SessionError> {
        let cap = self.cap;
        let Some(st) = self.round.sketch.as_mut() else {
            return Ok(());
        };
        let n = st.peer.len();
        if n == 0 {
            return Ok(());
        }
        st.encoder.extend_to(n);
        let diff = riblt::subtract(&st.encoder.cells()[..n], &st.peer);
        let result = riblt::decode(&diff);
        let local_only = match &result {
            Ok(d) => {
                let mut index: HashMap<Symbol, usize> = HashMap::with_capacity(d.local_only.len());
                for s in &d.local_only {
                    index.insert(*s, usize::MAX);
                }
                for (i, s) in self.snapshot.symbols.iter().enumerate() {
                    if let Some(slot) = index.get_mut(s) {
                        *slot = i;
                    }
                }
                if index.values().all(|&i| i != usize::MAX) {
                    self.stats.differences = d.len() as u64;
                    Some(
                        index
                            .values()
                            .map(|&i| self.snapshot.entries[i].0.clone())
                            .collect::<BTreeSet<DocKey>>(),
                    )
                } else {
                    // A "local" symbol we do not hold: a false decode. Ask for more cells.
                    None
                }
            }
            Err(DecodeError::NeedMore { .. }) => None,
            Err(DecodeError::Inconsistent) => {
                return Err(SessionError::Protocol("inconsistent sketch cells".into()))
            }
        };
        if let Some(keys) = local_only {
            self.round.decoded = true;
            let entries = self.summary_entries(store, &keys);
            self.stats.summarized += entries.len() as u64;
            self.round.my_summary = entries.iter().map(|e| e.key.clone()).collect();
            for f in heads_frames(entries, |entries| Frame::Summary {
                basis: SummaryBasis::Decoded,
                entries,
            }) {
                self.send(f);
            }
            self.send(Frame::End {
                phase: Phase::DecodedSummary,
            });
            self.round.my_summary_done = true;
            return self.maybe_respond(store);
        }
        // Need more: ask for the peer's next batch, and send ours if the peer cannot have
        // decoded with fewer of our cells than we had of its.
        let peeled = match result {
            Err(DecodeError::NeedMore { peeled, .. }) => peeled as u64,
            _ => 0,
        };
        let n = n as u64;
        if n >= cap {
            return Err(SessionError::Limit(format!(
                "difference not decoded with {n} sketch cells"
            )));
        }
        let (mine, theirs) = (
            self.my_hello.doc_count,
            self.peer_hello.as_ref().map_or(0, |h| h.doc_count),
        );
        let estimate = riblt::estimate_difference(&diff);
        // Without a single empty cell the estimate is only a lower bound: aim higher.
        let estimate = if diff.iter().any(Cell::is_empty) {
            estimate
        } else {
            estimate.saturating_mul(2)
        };
        let target = (2 * n)
            .max(first_batch(
                peeled.max(mine.abs_diff(theirs)).max(estimate),
                cap,
            ))
            .min(cap);
        let (sent, requested) = (st.sent, st.requested);
        if target > requested {
            if let Some(st) = self.round.sketch.as_mut() {
                st.requested = target;
            }
            self.send(Frame::MoreCells { total: target });
        }
        if sent <= n {
            self.send_cells_upto(target);
        }
        Ok(())
    }

    fn on_more_cells(&mut self, total: u64) -> Result<(), SessionError> {
        if self.round.mode != Mode::Sketch {
            return Err(SessionError::Protocol(
                "cells requested outside a sketch round".into(),
            ));
        }
        self.send_cells_upto(total.min(self.cap));
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // Summaries, wants and changes

    fn stale_warm(&self, basis: SummaryBasis) -> bool {
        // A warm summary sent with the peer's hello, in a session that turned out cold.
        self.round.number == 1
            && self.round.mode == Mode::Sketch
            && basis == SummaryBasis::Watermark
    }

    fn on_summary(
        &mut self,
        basis: SummaryBasis,
        entries: Vec<DocHeads>,
    ) -> Result<(), SessionError> {
        if self.stale_warm(basis) {
            return Ok(());
        }
        let expected = match self.round.mode {
            Mode::Watermark => SummaryBasis::Watermark,
            Mode::Sketch => SummaryBasis::Decoded,
            Mode::Hello => return Err(SessionError::Protocol("summary before hello".into())),
        };
        if basis != expected || self.round.peer_summary_done {
            return Err(SessionError::Protocol(format!(
                "unexpected {basis:?} summary"
            )));
        }
        for e in entries {
            if !self.shared.contains(&e.key) {
                self.refuse(e.key)?;
                continue;
            }
            self.touch(&e.key)?;
            self.round.peer_summary.insert(e.key, e.heads);
        }
        Ok(())
    }

    fn maybe_respond(&mut self, store: &dyn SyncStore) -> Result<(), SessionError> {
        let r = &self.round;
        if !(r.my_summary_done && r.peer_summary_done) || r.response_sent {
            return Ok(());
        }
        self.round.response_sent = true;
        let mut batch = ChangesBatch::new();
        let mut wants = Vec::new();
        let peer_summary = std::mem::take(&mut self.round.peer_summary);
        for (key, their_heads) in &peer_summary {
            match store.compare(key, their_heads) {
                Ok(cmp) => {
                    // In a watermark round a document the peer listed and this side did not
                    // is unchanged here since the peer last saw it: the peer has all of it.
                    // (Were the memory wrong, the `Done` fingerprints would differ and a
                    // sketch round would repair it.)
                    if self.round.mode == Mode::Sketch || self.round.my_summary.contains(key) {
                        batch.add(key, cmp.they_lack);
                    }
                    // In a sketch round the peer sends everything for a document this side
                    // did not list (it infers this side lacks it), so only watermark rounds
                    // need wants.
                    if cmp.i_lack
                        && self.round.mode == Mode::Watermark
                        && !self.round.my_summary.contains(key)
                    {
                        wants.push(DocHeads {
                            key: key.clone(),
                            heads: heads_for_wire(cmp.my_heads.unwrap_or_default()),
                        });
                    }
                }
                Err(e) => self.doc_error(key, &e),
            }
        }
        if self.round.mode == Mode::Sketch {
            // Cold: a document only this side listed is one the peer does not hold at all.
            let mine: Vec<DocKey> = self
                .round
                .my_summary
                .iter()
                .filter(|k| !peer_summary.contains_key(*k))
                .cloned()
                .collect();
            for key in mine {
                match store.changes_since(&key, &[]) {
                    Ok(changes) => batch.add(&key, changes),
                    Err(e) => self.doc_error(&key, &e),
                }
            }
        }
        self.round.peer_summary = peer_summary;
        for k in &self.round.my_summary {
            self.round.touched.insert(k.clone());
        }
        self.send_changes(batch);
        self.round.my_wants = wants.len();
        for w in &wants {
            self.round.touched.insert(w.key.clone());
        }
        for f in heads_frames(wants, |entries| Frame::Want { entries }) {
            self.send(f);
        }
        self.send(Frame::End {
            phase: Phase::Response,
        });
        self.check_final(store)
    }

    fn on_want(
        &mut self,
        store: &dyn SyncStore,
        entries: Vec<DocHeads>,
    ) -> Result<(), SessionError> {
        // The peer wants only after it has this side's whole summary.
        if !self.round.my_summary_done {
            return Err(SessionError::Protocol("want before summaries".into()));
        }
        let mut batch = ChangesBatch::new();
        for e in entries {
            if !self.shared.contains(&e.key) {
                self.refuse(e.key)?;
                continue;
            }
            self.touch(&e.key)?;
            match store.changes_since(&e.key, &e.heads) {
                Ok(changes) => batch.add(&e.key, changes),
                Err(err) => {
                    self.doc_error(&e.key, &err);
                    self.send(Frame::Refused {
                        key: e.key.clone(),
                        reason: RefuseReason::Unavailable,
                    });
                }
            }
        }
        self.send_changes(batch);
        Ok(())
    }

    fn on_changes(&mut self, docs: Vec<DocChanges>) -> Result<(), SessionError> {
        for d in docs {
            if !self.shared.contains(&d.key) {
                self.refuse(d.key)?;
                continue;
            }
            self.touch(&d.key)?;
            self.stats.docs_received += 1;
            self.stats.changes_received += d.changes.len() as u64;
            self.events.push_back(Event::Apply {
                key: d.key,
                changes: d.changes,
            });
        }
        Ok(())
    }

    fn on_end(&mut self, store: &dyn SyncStore, phase: Phase) -> Result<(), SessionError> {
        match phase {
            Phase::WatermarkSummary if self.stale_warm(SummaryBasis::Watermark) => Ok(()),
            Phase::WatermarkSummary | Phase::DecodedSummary => {
                let expected = match self.round.mode {
                    Mode::Watermark => Phase::WatermarkSummary,
                    _ => Phase::DecodedSummary,
                };
                if phase != expected || self.round.peer_summary_done {
                    return Err(SessionError::Protocol(format!(
                        "unexpected end of {phase:?}"
                    )));
                }
                self.round.peer_summary_done = true;
                self.maybe_respond(store)
            }
            Phase::Response => {
                if !self.round.peer_summary_done
                    || !self.round.my_summary_done
                    || self.round.peer_response_done
                {
                    return Err(SessionError::Protocol("unexpected end of response".into()));
                }
                self.round.peer_response_done = true;
                // Every want of the peer came before its End(Response) and was answered on
                // arrival.
                self.send(Frame::End {
                    phase: Phase::Answers,
                });
                self.check_final(store)
            }
            Phase::Answers => {
                if !self.round.response_sent || self.round.peer_answers_done {
                    return Err(SessionError::Protocol("unexpected end of answers".into()));
                }
                self.round.peer_answers_done = true;
                self.check_final(store)
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // Done

    /// The fingerprint of the shared set now: the snapshot, with every document this round
    /// touched re-read from the store. Also returns the digests it re-read.
    fn current_fingerprint(
        &mut self,
        store: &dyn SyncStore,
    ) -> (Fingerprint, HashMap<DocKey, Option<HeadsDigest>>) {
        let mut fp = self.snapshot.fingerprint;
        let touched = std::mem::take(&mut self.round.touched);
        let mut digests = HashMap::with_capacity(touched.len());
        for key in &touched {
            let old = self.snapshot.digest_of(key);
            let new = match store.heads(key) {
                Ok(h) => h.map(|h| heads_digest(&h)),
                Err(e) => {
                    self.doc_error(key, &e);
                    old
                }
            };
            if old != new {
                if let Some(d) = old {
                    fp.remove(&Symbol::of(key, &d));
                }
                if let Some(d) = new {
                    fp.add(&Symbol::of(key, &d));
                }
            }
            digests.insert(key.clone(), new);
        }
        self.round.touched = touched;
        (fp, digests)
    }

    /// The feed position to send with `Done`: `end` (read before the fingerprint) if every
    /// shared document that changed since the session started is in the state the `Done`
    /// fingerprint describes — then, if the fingerprints agree, the peer holds all of it (it
    /// came from the peer, or went to it). Otherwise (a local edit during the session, or a
    /// store without a usable feed) the session's start position, as before.
    fn done_seq(
        &self,
        store: &dyn SyncStore,
        end: u64,
        digests: &HashMap<DocKey, Option<HeadsDigest>>,
    ) -> u64 {
        let start = self.my_hello.my_seq;
        if end <= start {
            return start;
        }
        let Ok(Some(changed)) = store.entries_since(&self.shared, start) else {
            return start;
        };
        let agreed = changed.iter().all(|(key, digest)| {
            !self.shared.contains(key)
                || match digests.get(key) {
                    Some(d) => *d == Some(*digest),
                    None => self.snapshot.digest_of(key) == Some(*digest),
                }
        });
        if agreed {
            end
        } else {
            start
        }
    }

    fn check_final(&mut self, store: &dyn SyncStore) -> Result<(), SessionError> {
        let r = &self.round;
        if r.done_sent.is_some()
            || !r.response_sent
            || !r.peer_response_done
            || (r.my_wants > 0 && !r.peer_answers_done)
        {
            return Ok(());
        }
        // The feed position is read before the store, so a later edit is after it.
        let end = store.seq();
        let (fp, digests) = self.current_fingerprint(store);
        let seq = self.done_seq(store, end, &digests);
        self.round.done_sent = Some(fp);
        self.round.done_seq = seq;
        self.send(Frame::Done {
            fingerprint: fp,
            seq,
        });
        self.compare_done(store)
    }

    fn on_done(
        &mut self,
        store: &dyn SyncStore,
        fp: Fingerprint,
        seq: u64,
    ) -> Result<(), SessionError> {
        if self.round.peer_done.is_some() || !self.round.my_summary_done {
            return Err(SessionError::Protocol("unexpected done".into()));
        }
        self.round.peer_done = Some(fp);
        self.round.peer_done_seq = seq;
        self.compare_done(store)
    }

    fn compare_done(&mut self, store: &dyn SyncStore) -> Result<(), SessionError> {
        let (Some(mine), Some(theirs)) = (self.round.done_sent, self.round.peer_done) else {
            return Ok(());
        };
        if mine == theirs {
            self.converge();
            return Ok(());
        }
        if self.round.number >= self.config.max_rounds.max(1) {
            return Err(SessionError::NotConverged {
                rounds: self.round.number,
            });
        }
        // Another round, by sketch, over a fresh snapshot.
        self.snapshot = Snapshot::take(store, &self.shared)?;
        self.round = Round {
            number: self.round.number + 1,
            mode: Mode::Sketch,
            ..Round::default()
        };
        self.stats.rounds = self.round.number;
        self.stats.mode = Mode::Sketch;
        self.round.sketch = Some(self.new_sketch());
        let m = first_batch(mine.count.abs_diff(theirs.count), self.cap);
        self.send_cells_upto(m);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
