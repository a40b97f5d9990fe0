//! Benchmark `sync`: two village nodes reconcile 50,000 household documents over an emulated
//! mountain link (200 ms RTT, 1 Mbit/s each way), against per-document Automerge sync.
//!
//! # Scenario
//!
//! Both nodes hold the same 50,000 household profiles (`hh`) of one village and have the same
//! village scope. The documents are made the way the node makes them ([`sample_village`],
//! [`HouseholdProfile::write_to`]; every second one also has a revisit by [`sample_edit`]),
//! generated once and copied to both sides as raw changes. Then 100 documents are edited only
//! on A, 100 only on B and 10 on both (concurrently), again with `sample_edit` + `write_to`.
//! The link is [`LinkEmulator`] with [`LinkConfig::village`]; the TCP connection is
//! established before anything is timed. Two real [`Session`]s run as tokio tasks, one per
//! side, each writing frames encoded with [`wire`] and reading them with a [`FrameReader`];
//! the driver ([`run_session`]) is generic over [`SyncHost`]. By default each side is the
//! node's own durable store (`SledHost`: sled on disk, the platform's `HostSyncStore` view over `NodeHost`, received
//! changes committed durably); `CUNYUN_BENCH_SYNC_STORE=mem` uses the protocol's in-memory
//! [`MemStore`] instead, to see what the session alone costs.
//!
//! # Metrics
//!
//! - `round_trips`: **counted**, not inferred from time. Every frame carries (out of band) its
//!   *flight*: frames a side queues when it starts are flight 1; frames it queues while handling
//!   a frame of flight `f` are flight `f + 1` (frames from one peer arrive in order, so `f` is
//!   the highest flight the side has seen). A side's session ends while handling some frame;
//!   `flights` is the larger of those two frames' flights — the length, in one-way trips, of
//!   the causal chain the link had to carry before both sides knew they had converged — and
//!   `round_trips = flights / 2`. Both sides start at once on the warm connection (the
//!   protocol's model: "both sides send at once").
//! - `initiated_round_trips`, `initiated_wall_ms`, `initiated_bytes_total`: the same, but only A
//!   starts; B starts its session when A's first frame arrives (what a node does when a sync
//!   is triggered on one side of a warm connection). Measured on the same stores with a second,
//!   disjoint set of 100/100/10 edits.
//! - `wall_ms`: from the first byte either side handed to its socket to the moment the second
//!   side's session ended converged. `setup_ms` adds the sessions' start (`Session::new`, a
//!   snapshot of the 50,000-entry index) before the first byte.
//! - `bytes_total`: bytes the emulator delivered in both directions during the session.
//! - `change_bytes`: the raw Automerge change bytes that had to move: every change made on A
//!   that B lacked plus every change made on B that A lacked (each side's edits since the last
//!   sync), as `Change::bytes` (the form the session sends).
//! - `flights`: the `flights` above; `change_payload_sent`: raw change bytes inside the
//!   `Changes` frames both sides sent (compare with `change_bytes`).
//! - `nochange_round_trips`, `nochange_bytes` (and `nochange_wall_ms`, `nochange_cpu_ms`): a
//!   warm session right after convergence. `nochange_steady_*`: the next one after that.
//!   `nochange_initiated_round_trips`: with one side starting.
//!
//!   A session that ends on the peer's hello (equal fingerprints) never reads what the peer
//!   queued behind its hello (its warm summary and that summary's `End`, or eager sketch
//!   cells). On a connection that carries further sessions those frames would be read as the
//!   start of the next one, so the driver reads and drops them ([`SideRun::discarded`]); their
//!   bytes count in `bytes` because they cross the link.
//! - `cold_bytes` (and `cold_round_trips`, `cold_wall_ms`, `cold_reconcile_cpu_ms`): the very
//!   same documents and edits on fresh stores whose peers never met (no [`PeerMemory`], no
//!   estimate), so the session falls back to RIBLT sketches.
//! - `reconcile_cpu_ms`: CPU time of one side's whole part in the warm session — starting the
//!   session (snapshot of the index), decoding and handling frames, applying the received
//!   changes, encoding frames — as thread CPU time of exactly those synchronous steps
//!   (`CLOCK_THREAD_CPUTIME_ID`), so waits on the link do not count. The larger of the two
//!   sides. Over the sled store this includes scanning the 50,000-entry index from disk, loading
//!   the documents that differ and committing received changes durably; it must not load every
//!   document.
//! - Baseline in the same run, what automerge-repo does: every one of the 50,000 documents is
//!   synced on its own with `automerge::sync` and a fresh `sync::State` on both sides, all
//!   pipelined over one connection through an identical emulated link. Each sync message
//!   travels in an envelope like automerge-repo's: a 4-byte length and a CBOR map of `type`,
//!   `senderId`, `targetId`, `documentId` (the document key) and `data` — about 120 B of
//!   envelope. `baseline_bytes`, `baseline_wall_ms` (first byte to the moment no message is
//!   in flight and none will be generated), `baseline_cpu_ms` (larger side);
//!   `bytes_ratio = baseline_bytes / bytes_total`, `time_ratio = baseline_wall_ms / wall_ms`.
//!
//! Targets (checked in the progress output, not enforced): round trips ≤ 3, wall ≤ 1.5 s,
//! bytes ≤ 2 × change_bytes + 16 KB, no-change 1 round trip and ≤ 512 B, cold ≤ the warm
//! bytes bound + 32 KB, reconcile CPU ≤ 200 ms.
//!
//! `CUNYUN_BENCH_SYNC_DOCS` scales the 50,000 down for quick runs;
//! `CUNYUN_BENCH_SYNC_SKIP_BASELINE=1` skips the (minutes-long) baseline.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{anyhow, bail, ensure, Context, Result};
use automerge::sync::{self as am_sync, SyncDoc};
use automerge::{ActorId, AutoCommit, Automerge, Change, ChangeHash};
use cunyun_node::sample::{sample_edit, sample_village, SampleHousehold};
use cunyun_protocol::area::{AreaCode, AreaScope};
use cunyun_protocol::household::HouseholdProfile;
use cunyun_protocol::identity::{NodeId, NodeIdentity};
use cunyun_protocol::key::{DocKey, Role};
use cunyun_protocol::sync::session::{Mode, Outcome};
use cunyun_protocol::sync::wire::{FrameType, Phase};
use cunyun_protocol::sync::{
    wire, Event, Frame, FrameReader, MemStore, PeerMemory, Session, SessionConfig, SessionStats,
    SyncStore,
};
use rand::rngs::StdRng;
use rand::SeedableRng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinHandle;
use tokio::time::{timeout, Instant};

use super::{emit, progress, rss_mb};
use crate::link::{LinkConfig, LinkEmulator};

const BENCH: &str = "sync";
const VILLAGE: &str = "510122104201";
const HOUSEHOLDS: usize = 50_000;
const ONLY_A: usize = 100;
const ONLY_B: usize = 100;
const BOTH: usize = 10;
/// Longest a single session may take before the benchmark gives up.
const SESSION_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest the baseline may take.
const BASELINE_TIMEOUT: Duration = Duration::from_secs(900);
/// Tries of `sample_edit` until an edit changes the document.
const EDIT_TRIES: usize = 8;
/// Bytes read from a socket at once.
const READ_BUF: usize = 64 * 1024;
/// Baseline messages are batched into writes of about this size.
const BASELINE_BATCH: usize = 64 * 1024;

// ---------------------------------------------------------------------------------------------
// CPU time

/// CPU time consumed by the calling thread.
#[allow(unsafe_code)]
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable `timespec`, and `CLOCK_THREAD_CPUTIME_ID` is a clock
    // every Linux has; `clock_gettime` writes nothing else.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(
        u64::try_from(ts.tv_sec).unwrap_or(0),
        u32::try_from(ts.tv_nsec).unwrap_or(0),
    )
}

/// Runs `f` and adds the CPU time it took on this thread to `total`. `f` must not await, so
/// it runs on one thread from start to end.
fn on_cpu<T>(total: &mut Duration, f: impl FnOnce() -> T) -> T {
    let start = thread_cpu();
    let out = f();
    *total += thread_cpu().saturating_sub(start);
    out
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

// ---------------------------------------------------------------------------------------------
// The store a host drives

/// What a sync host needs from a node's store: the session's read view ([`SyncStore`]) and a
/// way to apply the changes an [`Event::Apply`] carries. Implemented for [`MemStore`]; the
/// node's sled-backed store only needs this one method more.
pub trait SyncHost: SyncStore + Send + 'static {
    /// Applies raw changes to a document atomically (creating it if needed); returns whether
    /// its heads changed.
    fn apply_changes(&mut self, key: &DocKey, changes: &[Vec<u8>]) -> Result<bool>;

    /// Called before each session starts (a node starts every session with a fresh view).
    fn session_start(&mut self) {}
}

impl SyncHost for MemStore {
    fn apply_changes(&mut self, key: &DocKey, changes: &[Vec<u8>]) -> Result<bool> {
        self.apply(key, changes)
            .map_err(|e| anyhow!("apply to {key}: {e}"))
    }
}

/// A host the benchmark can fill with the generated households.
trait BuildHost: SyncHost + Sized {
    /// A store holding every household, for the node named `actor`.
    fn build(actor: &[u8], households: &[Household]) -> Result<Self>;
    /// Documents held.
    fn doc_count(&self) -> usize;
}

impl BuildHost for MemStore {
    fn build(actor: &[u8], households: &[Household]) -> Result<Self> {
        let mut store = MemStore::new(actor);
        for h in households {
            store.apply_changes(&h.key, &h.changes)?;
        }
        Ok(store)
    }

    fn doc_count(&self) -> usize {
        self.len()
    }
}

/// The node's own durable store (sled, on disk in a temporary directory) as the host: index
/// scans, document loads and durable commits are all real.
struct SledHost {
    host: cunyun_platform::host::NodeHost,
    /// The session's index cache, as the node's runner keeps one per session.
    cache: cunyun_platform::sync::adapter::IndexCache,
    _dir: tempfile::TempDir,
}

impl SledHost {
    fn view(&self) -> cunyun_platform::sync::adapter::HostSyncStore<'_> {
        cunyun_platform::sync::adapter::HostSyncStore::with_cache(&self.host, &self.cache)
    }
}

impl SyncStore for SledHost {
    fn seq(&self) -> u64 {
        self.view().seq()
    }
    fn entries(
        &self,
        scope: &cunyun_protocol::sync::SharedScope,
    ) -> Result<
        Vec<(DocKey, cunyun_protocol::digest::HeadsDigest)>,
        cunyun_protocol::sync::StoreError,
    > {
        self.view().entries(scope)
    }
    fn entries_since(
        &self,
        scope: &cunyun_protocol::sync::SharedScope,
        seq: u64,
    ) -> Result<
        Option<Vec<(DocKey, cunyun_protocol::digest::HeadsDigest)>>,
        cunyun_protocol::sync::StoreError,
    > {
        self.view().entries_since(scope, seq)
    }
    fn heads(
        &self,
        key: &DocKey,
    ) -> Result<Option<Vec<ChangeHash>>, cunyun_protocol::sync::StoreError> {
        self.view().heads(key)
    }
    fn summary_hashes(
        &self,
        key: &DocKey,
    ) -> Result<Option<Vec<ChangeHash>>, cunyun_protocol::sync::StoreError> {
        self.view().summary_hashes(key)
    }
    fn changes_since(
        &self,
        key: &DocKey,
        their_heads: &[ChangeHash],
    ) -> Result<Vec<Vec<u8>>, cunyun_protocol::sync::StoreError> {
        self.view().changes_since(key, their_heads)
    }
    fn has_all(
        &self,
        key: &DocKey,
        hashes: &[ChangeHash],
    ) -> Result<bool, cunyun_protocol::sync::StoreError> {
        self.view().has_all(key, hashes)
    }
    fn compare(
        &self,
        key: &DocKey,
        their_heads: &[ChangeHash],
    ) -> Result<cunyun_protocol::sync::DocCompare, cunyun_protocol::sync::StoreError> {
        self.view().compare(key, their_heads)
    }
}

impl SyncHost for SledHost {
    fn apply_changes(&mut self, key: &DocKey, changes: &[Vec<u8>]) -> Result<bool> {
        let applied = cunyun_platform::sync::adapter::apply_changes(
            &self.host,
            vec![(key.clone(), changes.to_vec())],
            cunyun_platform::sync::adapter::ReceivePolicy::default(),
        )?;
        if let Some(e) = applied.failed.first() {
            return Err(anyhow!("apply to {key}: {e}"));
        }
        for e in &applied.written {
            self.cache.record(&e.key, e.digest, e.pos);
        }
        Ok(applied.documents > 0)
    }

    fn session_start(&mut self) {
        self.cache.clear();
    }
}

impl BuildHost for SledHost {
    fn build(_actor: &[u8], households: &[Household]) -> Result<Self> {
        use cunyun_platform::store::{DocStore, DocWrite, StoreConfig};
        let dir = tempfile::tempdir()?;
        let store = DocStore::open(&dir.path().join("store"), StoreConfig::default())?;
        let now = cunyun_platform::clock::now_ms();
        for batch in households.chunks(1000) {
            let mut writes = Vec::with_capacity(batch.len());
            for h in batch {
                let mut doc = automerge::Automerge::new();
                doc.apply_changes(parse_changes(&h.changes)?)?;
                writes.push(DocWrite {
                    key: h.key.clone(),
                    chunk: doc.save(),
                    heads: doc.get_heads(),
                    updated_at_ms: now,
                });
            }
            store.commit(writes)?;
        }
        Ok(SledHost {
            host: cunyun_platform::host::NodeHost::new(store, dir.path()),
            cache: Default::default(),
            _dir: dir,
        })
    }

    fn doc_count(&self) -> usize {
        self.host.store().stats().documents as usize
    }
}

// ---------------------------------------------------------------------------------------------
// A warm connection carrying sessions

/// Per direction: the cumulative stream offset at which each batch of frames ended, and its
/// flight. Written by the sender before the bytes go out, read by the receiver.
type FlightLog = Arc<Mutex<VecDeque<(u64, u32)>>>;

/// One end of a warm connection: reads frames, writes through a writer task (so a side never
/// blocks on its own writes while the peer is writing too), and tracks flights.
pub struct Endpoint {
    rd: OwnedReadHalf,
    out: mpsc::UnboundedSender<Vec<u8>>,
    writer: JoinHandle<std::io::Result<()>>,
    reader: FrameReader,
    /// Bytes read from the stream so far.
    received: u64,
    /// Bytes handed to the writer so far.
    sent: u64,
    flights_out: FlightLog,
    flights_in: FlightLog,
}

impl Endpoint {
    fn new(stream: TcpStream, flights_out: FlightLog, flights_in: FlightLog) -> Endpoint {
        let (rd, mut wr) = stream.into_split();
        let (out, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
        let writer = tokio::spawn(async move {
            // Ends when the endpoint is dropped.
            while let Some(buf) = rx.recv().await {
                wr.write_all(&buf).await?;
            }
            Ok(())
        });
        Endpoint {
            rd,
            out,
            writer,
            reader: FrameReader::new(),
            received: 0,
            sent: 0,
            flights_out,
            flights_in,
        }
    }

    /// Queues `bytes` (one batch of frames of `flight`) for the peer.
    fn send(&mut self, bytes: Vec<u8>, flight: u32) -> Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.sent += bytes.len() as u64;
        self.flights_out
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push_back((self.sent, flight));
        self.out
            .send(bytes)
            .map_err(|_| anyhow!("the connection's writer has stopped"))
    }

    /// Reads what has arrived (waiting for at least one byte).
    async fn read_more(&mut self, buf: &mut [u8]) -> Result<()> {
        let n = self.rd.read(buf).await.context("read from peer")?;
        if n == 0 {
            bail!("the peer closed the connection");
        }
        self.reader.push(&buf[..n]);
        self.received += n as u64;
        Ok(())
    }

    /// The flight of the frame that ends at stream offset `end`.
    fn flight_of(&self, end: u64) -> u32 {
        let mut log = self
            .flights_in
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        while log.front().is_some_and(|&(e, _)| e < end) {
            log.pop_front();
        }
        log.front().map_or(0, |&(_, f)| f)
    }

    /// Stops the writer task.
    fn close(self) {
        self.writer.abort();
    }
}

/// Connects A to B through a new emulated link; returns the link and both warm endpoints.
async fn warm_connection(config: LinkConfig) -> Result<(LinkEmulator, Endpoint, Endpoint)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let link = LinkEmulator::start(listener.local_addr()?, config)?;
    let a = TcpStream::connect(link.addr()).await?;
    let (b, _) = timeout(Duration::from_secs(10), listener.accept())
        .await
        .context("accept through the link")??;
    a.set_nodelay(true)?;
    b.set_nodelay(true)?;
    let ab: FlightLog = Arc::default();
    let ba: FlightLog = Arc::default();
    let a = Endpoint::new(a, Arc::clone(&ab), Arc::clone(&ba));
    let b = Endpoint::new(b, ba, ab);
    Ok((link, a, b))
}

// ---------------------------------------------------------------------------------------------
// Running one session on each side

/// When a side starts its session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// At once, together with the peer.
    Now,
    /// When the peer's first frame arrives (the peer initiated the sync).
    OnFirstFrame,
}

/// One side of a node pair: its connection end and its store.
pub struct Side<S> {
    /// The connection end.
    pub ep: Endpoint,
    /// The store.
    pub store: S,
}

/// What one side saw of a session.
#[derive(Debug, Clone)]
pub struct SideRun {
    /// How the session ended.
    pub outcome: Outcome,
    /// The session's counters.
    pub stats: SessionStats,
    /// CPU time of this side's synchronous work (see the module documentation).
    pub cpu: Duration,
    /// When the session was created.
    pub started: Instant,
    /// When this side first handed bytes to its socket.
    pub first_send: Option<Instant>,
    /// When the session ended.
    pub ended: Instant,
    /// Flight of the frame whose handling ended the session (0 if it ended on start).
    pub end_flight: u32,
    /// Highest flight this side sent.
    pub max_flight_sent: u32,
    /// Documents whose heads changed by applying the peer's changes.
    pub applied: usize,
    /// Events other than `Apply` and `Converged` (refusals, document errors, failures).
    pub other_events: Vec<Event>,
    /// Bytes of the peer's first flight that arrived after the session had already ended on
    /// the peer's hello (a warm summary or eager sketch cells nobody reads), discarded so the
    /// connection can carry the next session.
    pub discarded: u64,
    /// What this side sent, per flight and frame type.
    pub sent: Sent,
}

/// Both sides of a session, measured.
#[derive(Debug, Clone)]
pub struct SessionRun {
    /// Side A, then side B.
    pub sides: [SideRun; 2],
    /// Bytes the link delivered A→B and B→A during the session.
    pub link_bytes: [u64; 2],
}

impl SessionRun {
    /// Flights until both sides had ended (see the module documentation).
    pub fn flights(&self) -> u32 {
        self.sides[0].end_flight.max(self.sides[1].end_flight)
    }

    /// `flights / 2`.
    pub fn round_trips(&self) -> f64 {
        f64::from(self.flights()) / 2.0
    }

    /// Bytes on the link, both ways.
    pub fn bytes(&self) -> u64 {
        self.link_bytes[0] + self.link_bytes[1]
    }

    /// First byte sent to both sides ended.
    pub fn wall(&self) -> Duration {
        let first = self
            .sides
            .iter()
            .filter_map(|s| s.first_send)
            .min()
            .unwrap_or(self.sides[0].started);
        self.end().saturating_duration_since(first)
    }

    /// First session start to both sides ended.
    pub fn wall_with_setup(&self) -> Duration {
        let first = self.sides[0].started.min(self.sides[1].started);
        self.end().saturating_duration_since(first)
    }

    fn end(&self) -> Instant {
        self.sides[0].ended.max(self.sides[1].ended)
    }

    /// The larger CPU time of the two sides.
    pub fn cpu(&self) -> Duration {
        self.sides[0].cpu.max(self.sides[1].cpu)
    }

    /// Both sides' memories, if both converged.
    pub fn memories(&self) -> Option<[PeerMemory; 2]> {
        match (&self.sides[0].outcome, &self.sides[1].outcome) {
            (Outcome::Converged(a), Outcome::Converged(b)) => Some([*a, *b]),
            _ => None,
        }
    }
}

/// What one side sent in one flight, per frame type.
#[derive(Debug, Clone, Default)]
pub struct Sent {
    /// `(flight, frame type, frames, bytes)`, in the order first sent.
    pub frames: Vec<(u32, FrameType, u32, u64)>,
    /// Raw Automerge change bytes inside `Changes` frames.
    pub change_payload: u64,
}

impl Sent {
    fn add(&mut self, flight: u32, ty: FrameType, bytes: u64) {
        match self
            .frames
            .iter_mut()
            .find(|(f, t, _, _)| *f == flight && *t == ty)
        {
            Some(e) => {
                e.2 += 1;
                e.3 += bytes;
            }
            None => self.frames.push((flight, ty, 1, bytes)),
        }
    }

    /// Bytes of frames of `ty`, all flights.
    pub fn bytes_of(&self, ty: FrameType) -> u64 {
        self.frames.iter().filter(|e| e.1 == ty).map(|e| e.3).sum()
    }

    fn describe(&self) -> String {
        let mut out = String::new();
        let mut last = 0;
        for &(flight, ty, n, bytes) in &self.frames {
            if flight != last {
                out.push_str(&format!(" | flight {flight}:"));
                last = flight;
            }
            out.push_str(&format!(" {ty:?}×{n} {bytes} B"));
        }
        out
    }
}

/// Encodes everything the session has queued as flight `flight`; returns the bytes.
fn drain_outgoing(session: &mut Session, flight: u32, sent: &mut Sent) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    while let Some(frame) = session.poll_outgoing() {
        let before = buf.len();
        wire::encode_into(&frame, &mut buf)
            .map_err(|e| anyhow!("session produced an unencodable frame: {e}"))?;
        sent.add(flight, frame.frame_type(), (buf.len() - before) as u64);
        if let Frame::Changes { docs } = &frame {
            sent.change_payload += docs
                .iter()
                .flat_map(|d| d.changes.iter())
                .map(|c| c.len() as u64)
                .sum::<u64>();
        }
    }
    Ok(buf)
}

/// Applies the session's events to the store; returns how many documents changed.
fn drain_events<S: SyncHost>(
    session: &mut Session,
    store: &mut S,
    other: &mut Vec<Event>,
) -> Result<usize> {
    let mut applied = 0;
    while let Some(ev) = session.poll_event() {
        match ev {
            Event::Apply { key, changes } => {
                if store.apply_changes(&key, &changes)? {
                    applied += 1;
                }
            }
            Event::Converged { .. } => {}
            other_event => other.push(other_event),
        }
    }
    Ok(applied)
}

/// Runs one session on one side until it ends.
async fn run_side<S: SyncHost>(
    side: &mut Side<S>,
    config: SessionConfig,
    start: Start,
) -> Result<SideRun> {
    let mut cpu = Duration::ZERO;
    let mut buf = vec![0u8; READ_BUF];
    let mut session: Option<Session> = None;
    let mut started = Instant::now();
    let mut first_send = None;
    let mut max_flight_sent = 0;
    let mut applied = 0;
    let mut other_events = Vec::new();
    let mut sent = Sent::default();
    let mut end_flight = None;
    let mut ended = Instant::now();
    // What the peer's hello said follows it in its first flight: a warm summary (up to its
    // `End`), and eager sketch cells.
    let mut trailing = (false, 0u64);
    let mut ended_on_hello = false;

    if start == Start::Now {
        started = Instant::now();
        side.store.session_start();
        let mut s = on_cpu(&mut cpu, || Session::new(config.clone(), &side.store))?;
        let bytes = on_cpu(&mut cpu, || drain_outgoing(&mut s, 1, &mut sent))?;
        if !bytes.is_empty() {
            first_send = Some(Instant::now());
            max_flight_sent = 1;
            side.ep.send(bytes, 1)?;
        }
        if s.is_finished() {
            end_flight = Some(0);
            ended = Instant::now();
        }
        session = Some(s);
    }
    // Each pass handles every complete frame, then waits for more bytes; the caller's timeout
    // bounds it in time.
    while end_flight.is_none() {
        loop {
            let frame = {
                let reader = &mut side.ep.reader;
                on_cpu(&mut cpu, || reader.next_frame())
                    .map_err(|e| anyhow!("bad frame from peer: {e}"))?
            };
            let Some(frame) = frame else { break };
            let end = side.ep.received - side.ep.reader.buffered() as u64;
            let flight = side.ep.flight_of(end);
            if session.is_none() {
                started = Instant::now();
                side.store.session_start();
                session = Some(on_cpu(&mut cpu, || {
                    Session::new(config.clone(), &side.store)
                })?);
            }
            let Some(s) = session.as_mut() else { break };
            let is_hello = if let Frame::Hello(h) = &frame {
                trailing = (h.summary_since.is_some(), u64::from(h.eager_cells));
                true
            } else {
                false
            };
            let store = &mut side.store;
            let bytes = on_cpu(&mut cpu, || -> Result<Vec<u8>> {
                // A failure is reported as an event and an outcome; the frames still go out.
                let _ = s.handle(&*store, frame);
                applied += drain_events(s, store, &mut other_events)?;
                drain_outgoing(s, flight + 1, &mut sent)
            })?;
            if !bytes.is_empty() {
                first_send.get_or_insert_with(Instant::now);
                max_flight_sent = max_flight_sent.max(flight + 1);
                side.ep.send(bytes, flight + 1)?;
            }
            if s.is_finished() {
                end_flight = Some(flight);
                ended = Instant::now();
                ended_on_hello = is_hello;
                break;
            }
        }
        if end_flight.is_none() {
            side.ep.read_more(&mut buf).await?;
        }
    }
    let Some(mut s) = session else {
        bail!("the session never started");
    };
    let discarded = if ended_on_hello {
        discard_first_flight(&mut side.ep, trailing, &mut buf).await?
    } else {
        0
    };
    applied += on_cpu(&mut cpu, || {
        drain_events(&mut s, &mut side.store, &mut other_events)
    })?;
    let outcome = s
        .outcome()
        .cloned()
        .ok_or_else(|| anyhow!("session ended without an outcome"))?;
    Ok(SideRun {
        outcome,
        stats: s.stats(),
        cpu,
        started,
        first_send,
        ended,
        end_flight: end_flight.unwrap_or(0),
        max_flight_sent,
        applied,
        other_events,
        discarded,
        sent,
    })
}

/// Reads and drops the rest of the peer's first flight (see [`SideRun::discarded`]); returns
/// its size.
async fn discard_first_flight(
    ep: &mut Endpoint,
    (mut summary, mut cells): (bool, u64),
    buf: &mut [u8],
) -> Result<u64> {
    let start = ep.received - ep.reader.buffered() as u64;
    // Each pass drops a frame or reads more; the caller's timeout bounds it in time.
    while summary || cells > 0 {
        match ep
            .reader
            .next_frame()
            .map_err(|e| anyhow!("bad frame from peer: {e}"))?
        {
            Some(Frame::End {
                phase: Phase::WatermarkSummary,
            }) => summary = false,
            Some(Frame::Sketch { cells: c, .. }) => cells = cells.saturating_sub(c.len() as u64),
            Some(Frame::Summary { .. }) => {}
            Some(other) => bail!(
                "unexpected {:?} after the session ended",
                other.frame_type()
            ),
            None => ep.read_more(buf).await?,
        }
    }
    Ok(ep.received - ep.reader.buffered() as u64 - start)
}

/// Runs one session between the two sides over their warm connection, each side in its own
/// task, and measures it. `starts` says when each side starts.
pub async fn run_session<S: SyncHost>(
    link: &LinkEmulator,
    sides: [Side<S>; 2],
    configs: [SessionConfig; 2],
    starts: [Start; 2],
) -> Result<([Side<S>; 2], SessionRun)> {
    let before = [link.bytes_a_to_b(), link.bytes_b_to_a()];
    let [a, b] = sides;
    let [ca, cb] = configs;
    let spawn = |mut side: Side<S>, config: SessionConfig, start: Start| {
        tokio::spawn(async move {
            let r = timeout(SESSION_TIMEOUT, run_side(&mut side, config, start)).await;
            (side, r)
        })
    };
    let ta = spawn(a, ca, starts[0]);
    let tb = spawn(b, cb, starts[1]);
    let (a, ra) = ta.await.context("side A panicked")?;
    let (b, rb) = tb.await.context("side B panicked")?;
    let ra = ra.context("side A timed out")??;
    let rb = rb.context("side B timed out")??;
    for (name, side) in [("A", &a), ("B", &b)] {
        ensure!(
            side.ep.reader.buffered() == 0,
            "side {name} has {} bytes left over after the session",
            side.ep.reader.buffered()
        );
    }
    let after = [link.bytes_a_to_b(), link.bytes_b_to_a()];
    let run = SessionRun {
        sides: [ra, rb],
        link_bytes: [after[0] - before[0], after[1] - before[1]],
    };
    Ok(([a, b], run))
}

// ---------------------------------------------------------------------------------------------
// Documents and edits

/// One household document as generated once: key, profile and raw changes.
struct Household {
    key: DocKey,
    profile: HouseholdProfile,
    changes: Vec<Vec<u8>>,
    heads: Vec<ChangeHash>,
}

fn parse_changes(raw: &[Vec<u8>]) -> Result<Vec<Change>> {
    raw.iter()
        .map(|c| Change::try_from(c.as_slice()).map_err(|e| anyhow!("bad change: {e}")))
        .collect()
}

fn raw_changes(doc: &mut AutoCommit, since: &[ChangeHash]) -> Vec<Vec<u8>> {
    doc.get_changes(since)
        .into_iter()
        .map(|mut c| c.bytes().into_owned())
        .collect()
}

/// Applies a `sample_edit` that changes the document (trying a few times) and commits it.
fn edit_household(
    doc: &mut AutoCommit,
    profile: &mut HouseholdProfile,
    rng: &mut StdRng,
) -> Result<()> {
    for _ in 0..EDIT_TRIES {
        sample_edit(profile, rng);
        profile.write_to(doc)?;
        if doc.commit().is_some() {
            return Ok(());
        }
    }
    bail!("{EDIT_TRIES} sample edits changed nothing")
}

/// Makes household `i` from its sample: the creating write, and a revisit for every second one.
fn make_household(i: usize, sample: &SampleHousehold, origin: &ActorId) -> Result<Household> {
    let mut rng = StdRng::seed_from_u64(0x5eed_0000 + i as u64);
    let key = sample.profile.key(&sample.id)?;
    let mut profile = sample.profile.clone();
    let mut doc = AutoCommit::new().with_actor(origin.clone());
    profile.write_to(&mut doc)?;
    doc.commit();
    if i.is_multiple_of(2) {
        edit_household(&mut doc, &mut profile, &mut rng)?;
    }
    Ok(Household {
        key,
        profile,
        changes: raw_changes(&mut doc, &[]),
        heads: doc.get_heads(),
    })
}

/// Runs `f` on two threads at once (the benchmark's set-up is CPU-bound).
fn both<A: Send, B: Send>(
    fa: impl FnOnce() -> Result<A> + Send,
    fb: impl FnOnce() -> Result<B> + Send,
) -> Result<(A, B)> {
    std::thread::scope(|scope| {
        let ha = scope.spawn(fa);
        let b = fb();
        let a = ha.join().map_err(|_| anyhow!("a set-up thread panicked"))?;
        Ok((a?, b?))
    })
}

fn generate_households(n: usize) -> Result<Vec<Household>> {
    let village = AreaCode::parse(VILLAGE)?;
    let origin = ActorId::from(b"village-tablet-01".as_slice());
    let samples = sample_village(village, n, 42);
    let half = samples.len().div_ceil(2);
    let (first, second) = samples.split_at(half);
    let make = |offset: usize, part: &[SampleHousehold]| -> Result<Vec<Household>> {
        let mut out = Vec::with_capacity(part.len());
        for (j, sample) in part.iter().enumerate() {
            out.push(make_household(offset + j, sample, &origin)?);
            if offset == 0 && (j + 1) % 5_000 == 0 {
                progress(BENCH, &format!("  generated {} households", 2 * (j + 1)));
            }
        }
        Ok(out)
    };
    let (mut a, b) = both(|| make(0, first), || make(half, second))?;
    a.extend(b);
    Ok(a)
}

/// One set of edits: per side, the documents it edits and the raw changes of each edit.
struct EditSet {
    on: [Vec<(usize, Vec<Vec<u8>>)>; 2],
}

impl EditSet {
    /// Raw bytes of every change either side must receive.
    fn change_bytes(&self) -> u64 {
        self.on
            .iter()
            .flatten()
            .flat_map(|(_, cs)| cs.iter())
            .map(|c| c.len() as u64)
            .sum()
    }

    fn docs(&self) -> impl Iterator<Item = usize> + '_ {
        self.on.iter().flatten().map(|(i, _)| *i)
    }
}

/// Makes `edit_sets` disjoint sets of edits (100 only on A, 100 only on B, 10 on both), each
/// on documents in their generated state.
fn generate_edits(households: &[Household], edit_sets: usize) -> Result<Vec<EditSet>> {
    let per_set = ONLY_A + ONLY_B + BOTH;
    ensure!(
        households.len() >= per_set * edit_sets,
        "need at least {} households",
        per_set * edit_sets
    );
    let mut rng = StdRng::seed_from_u64(23);
    let picked = rand::seq::index::sample(&mut rng, households.len(), per_set * edit_sets);
    let picked: Vec<usize> = picked.into_iter().collect();
    let actors = [
        ActorId::from(b"node-a".as_slice()),
        ActorId::from(b"node-b".as_slice()),
    ];
    let mut sets = Vec::with_capacity(edit_sets);
    for chunk in picked.chunks(per_set) {
        let mut set = EditSet {
            on: [Vec::new(), Vec::new()],
        };
        for (j, &i) in chunk.iter().enumerate() {
            let sides: &[usize] = if j < ONLY_A {
                &[0]
            } else if j < ONLY_A + ONLY_B {
                &[1]
            } else {
                &[0, 1]
            };
            let h = &households[i];
            for &side in sides {
                let mut doc = AutoCommit::new().with_actor(actors[side].clone());
                doc.apply_changes(parse_changes(&h.changes)?)?;
                let mut profile = h.profile.clone();
                edit_household(&mut doc, &mut profile, &mut rng)?;
                set.on[side].push((i, raw_changes(&mut doc, &h.heads)));
            }
        }
        sets.push(set);
    }
    Ok(sets)
}

/// A store holding every generated household.
fn build_store<H: BuildHost>(actor: &[u8], households: &[Household]) -> Result<H> {
    H::build(actor, households)
}

/// Makes one side's edits of `set` in `store`.
fn make_edits<S: SyncHost>(
    store: &mut S,
    households: &[Household],
    set: &EditSet,
    side: usize,
) -> Result<()> {
    for (i, changes) in &set.on[side] {
        ensure!(
            store.apply_changes(&households[*i].key, changes)?,
            "an edit did not change the document"
        );
    }
    Ok(())
}

/// Checks that both stores agree on every document `set` touched.
fn check_converged<S: SyncHost>(
    sides: &[Side<S>; 2],
    households: &[Household],
    set: &EditSet,
) -> Result<()> {
    for i in set.docs() {
        let key = &households[i].key;
        let a = sides[0].store.heads(key)?;
        let b = sides[1].store.heads(key)?;
        ensure!(a.is_some() && a == b, "{key} differs after the session");
    }
    Ok(())
}

fn identities() -> Result<[NodeIdentity; 2]> {
    let scope = AreaScope::parse(VILLAGE)?;
    let id = |n: u8| NodeIdentity {
        node_id: NodeId([n; 16]),
        role: Role::Village,
        scope,
    };
    Ok([id(0xa1), id(0xb2)])
}

fn configs(ids: &[NodeIdentity; 2], memory: Option<[PeerMemory; 2]>) -> [SessionConfig; 2] {
    let mut a = SessionConfig::new(ids[0], ids[1]);
    let mut b = SessionConfig::new(ids[1], ids[0]);
    a.memory = memory.map(|m| m[0]);
    b.memory = memory.map(|m| m[1]);
    [a, b]
}

fn describe(name: &str, run: &SessionRun) {
    let s = &run.sides;
    progress(
        BENCH,
        &format!(
            "{name}: {:?} mode, {} flights ({} RT), {} B on the link (A→B {}, B→A {}; sessions \
             say {} + {}), wall {:.1} ms ({:.1} ms with setup), CPU A {:.1} ms / B {:.1} ms, \
             applied A {} / B {}, changes sent A {} / B {}, summarized A {} / B {}, unread \
             trailing bytes A {} / B {}",
            s[0].stats.mode,
            run.flights(),
            run.round_trips(),
            run.bytes(),
            run.link_bytes[0],
            run.link_bytes[1],
            s[0].stats.bytes_sent,
            s[1].stats.bytes_sent,
            ms(run.wall()),
            ms(run.wall_with_setup()),
            ms(s[0].cpu),
            ms(s[1].cpu),
            s[0].applied,
            s[1].applied,
            s[0].stats.changes_sent,
            s[1].stats.changes_sent,
            s[0].stats.summarized,
            s[1].stats.summarized,
            s[0].discarded,
            s[1].discarded,
        ),
    );
    for (n, side) in ["A", "B"].iter().zip(s) {
        progress(
            BENCH,
            &format!(
                "  {n} sent{} (change payload {} B)",
                side.sent.describe(),
                side.sent.change_payload
            ),
        );
        if !side.other_events.is_empty() {
            progress(
                BENCH,
                &format!("  side {n} events: {:?}", side.other_events),
            );
        }
    }
}

fn ensure_converged(name: &str, run: &SessionRun) -> Result<[PeerMemory; 2]> {
    run.memories().ok_or_else(|| {
        anyhow!(
            "{name} did not converge: A {:?}, B {:?}",
            run.sides[0].outcome,
            run.sides[1].outcome
        )
    })
}

// ---------------------------------------------------------------------------------------------
// The scenarios

struct WarmResults {
    warm: SessionRun,
    nochange: SessionRun,
    nochange_steady: SessionRun,
    initiated: SessionRun,
    nochange_initiated: SessionRun,
}

async fn warm_scenario<H: BuildHost>(
    households: &[Household],
    sets: &[EditSet],
    ids: &[NodeIdentity; 2],
) -> Result<WarmResults> {
    progress(BENCH, "warm: building both stores");
    let t = Instant::now();
    let (a, b) = both(
        || build_store::<H>(b"node-a", households),
        || build_store::<H>(b"node-b", households),
    )?;
    progress(
        BENCH,
        &format!(
            "  built 2 × {} documents in {:.1} s; RSS {:.0} MiB",
            a.doc_count(),
            t.elapsed().as_secs_f64(),
            rss_mb()
        ),
    );
    let (link, ea, eb) = warm_connection(LinkConfig::village()).await?;
    let mut sides = [Side { ep: ea, store: a }, Side { ep: eb, store: b }];

    // The pair has met before: a first sync of the identical stores leaves watermarks.
    let (s, first) = run_session(&link, sides, configs(ids, None), [Start::Now; 2]).await?;
    sides = s;
    describe("first meeting (identical stores)", &first);
    let mut memory = ensure_converged("first meeting", &first)?;

    for (side, s) in sides.iter_mut().enumerate() {
        make_edits(&mut s.store, households, &sets[0], side)?;
    }
    let (s, warm) = run_session(&link, sides, configs(ids, Some(memory)), [Start::Now; 2]).await?;
    sides = s;
    describe("warm", &warm);
    memory = ensure_converged("warm", &warm)?;
    check_converged(&sides, households, &sets[0])?;

    let (s, nochange) =
        run_session(&link, sides, configs(ids, Some(memory)), [Start::Now; 2]).await?;
    sides = s;
    describe("no change", &nochange);
    memory = ensure_converged("no change", &nochange)?;

    let (s, nochange_steady) =
        run_session(&link, sides, configs(ids, Some(memory)), [Start::Now; 2]).await?;
    sides = s;
    describe("no change again", &nochange_steady);
    memory = ensure_converged("no change again", &nochange_steady)?;

    for (side, s) in sides.iter_mut().enumerate() {
        make_edits(&mut s.store, households, &sets[1], side)?;
    }
    let initiated_starts = [Start::Now, Start::OnFirstFrame];
    let (s, initiated) =
        run_session(&link, sides, configs(ids, Some(memory)), initiated_starts).await?;
    sides = s;
    describe("warm, A initiates", &initiated);
    memory = ensure_converged("warm, A initiates", &initiated)?;
    check_converged(&sides, households, &sets[1])?;

    let (s, nochange_initiated) =
        run_session(&link, sides, configs(ids, Some(memory)), initiated_starts).await?;
    sides = s;
    describe("no change, A initiates", &nochange_initiated);
    ensure_converged("no change, A initiates", &nochange_initiated)?;

    for s in sides {
        s.ep.close();
    }
    Ok(WarmResults {
        warm,
        nochange,
        nochange_steady,
        initiated,
        nochange_initiated,
    })
}

async fn cold_scenario<H: BuildHost>(
    households: &[Household],
    set: &EditSet,
    ids: &[NodeIdentity; 2],
) -> Result<SessionRun> {
    progress(BENCH, "cold: building both stores again");
    let (mut a, mut b) = both(
        || build_store::<H>(b"node-a", households),
        || build_store::<H>(b"node-b", households),
    )?;
    make_edits(&mut a, households, set, 0)?;
    make_edits(&mut b, households, set, 1)?;
    let (link, ea, eb) = warm_connection(LinkConfig::village()).await?;
    let sides = [Side { ep: ea, store: a }, Side { ep: eb, store: b }];
    let (sides, cold) = run_session(&link, sides, configs(ids, None), [Start::Now; 2]).await?;
    describe("cold (never met)", &cold);
    ensure_converged("cold", &cold)?;
    ensure!(
        cold.sides[0].stats.mode == Mode::Sketch,
        "the cold session did not use sketches"
    );
    check_converged(&sides, households, set)?;
    for s in sides {
        s.ep.close();
    }
    Ok(cold)
}

// ---------------------------------------------------------------------------------------------
// Baseline: per-document Automerge sync, automerge-repo style

/// Appends a CBOR head (major type, length).
fn cbor_head(out: &mut Vec<u8>, major: u8, len: usize) {
    let m = major << 5;
    match len {
        0..=23 => out.push(m | len as u8),
        24..=0xff => out.extend_from_slice(&[m | 24, len as u8]),
        0x100..=0xffff => {
            out.push(m | 25);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(m | 26);
            out.extend_from_slice(&(len as u32).to_be_bytes());
        }
    }
}

fn cbor_text(out: &mut Vec<u8>, s: &str) {
    cbor_head(out, 3, s.len());
    out.extend_from_slice(s.as_bytes());
}

/// Appends one automerge-repo-style sync envelope: a 4-byte length, then a CBOR map.
fn envelope(out: &mut Vec<u8>, sender: &str, target: &str, doc_id: &str, data: &[u8]) {
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    cbor_head(out, 5, 5);
    cbor_text(out, "type");
    cbor_text(out, "sync");
    cbor_text(out, "senderId");
    cbor_text(out, sender);
    cbor_text(out, "targetId");
    cbor_text(out, target);
    cbor_text(out, "documentId");
    cbor_text(out, doc_id);
    cbor_text(out, "data");
    cbor_head(out, 2, data.len());
    out.extend_from_slice(data);
    let len = (out.len() - at - 4) as u32;
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

/// Reads a CBOR head at `*pos`: (major type, length).
fn cbor_read_head(buf: &[u8], pos: &mut usize) -> Result<(u8, usize)> {
    let b = *buf.get(*pos).ok_or_else(|| anyhow!("short envelope"))?;
    *pos += 1;
    let (major, info) = (b >> 5, b & 0x1f);
    let width = match info {
        0..=23 => return Ok((major, usize::from(info))),
        24 => 1,
        25 => 2,
        26 => 4,
        _ => bail!("unsupported CBOR length"),
    };
    let bytes = buf
        .get(*pos..*pos + width)
        .ok_or_else(|| anyhow!("short envelope"))?;
    *pos += width;
    Ok((
        major,
        bytes.iter().fold(0usize, |n, &b| (n << 8) | usize::from(b)),
    ))
}

fn cbor_read_str<'a>(buf: &'a [u8], pos: &mut usize) -> Result<(u8, &'a [u8])> {
    let (major, len) = cbor_read_head(buf, pos)?;
    ensure!(major == 2 || major == 3, "expected a string");
    let s = buf
        .get(*pos..*pos + len)
        .ok_or_else(|| anyhow!("short envelope"))?;
    *pos += len;
    Ok((major, s))
}

/// The document id and sync message of an envelope body.
fn open_envelope(body: &[u8]) -> Result<(&[u8], &[u8])> {
    let mut pos = 0;
    let (major, pairs) = cbor_read_head(body, &mut pos)?;
    ensure!(major == 5, "envelope is not a map");
    let (mut doc, mut data) = (None, None);
    for _ in 0..pairs {
        let (_, k) = cbor_read_str(body, &mut pos)?;
        let (_, v) = cbor_read_str(body, &mut pos)?;
        match k {
            b"documentId" => doc = Some(v),
            b"data" => data = Some(v),
            _ => {}
        }
    }
    Ok((
        doc.ok_or_else(|| anyhow!("no documentId"))?,
        data.ok_or_else(|| anyhow!("no data"))?,
    ))
}

/// automerge-repo-style peer ids of the two sides.
const PEER_A: &str = "peer-a13f5c0e9b2d4788";
const PEER_B: &str = "peer-b27e6d1f0c3a5999";

/// One side of the baseline: every document with its own sync state for the peer.
struct BaselineSide {
    me: String,
    peer: String,
    ids: Vec<String>,
    index: HashMap<String, usize>,
    docs: Vec<Automerge>,
    states: Vec<am_sync::State>,
}

fn build_baseline_side(
    me: &str,
    peer: &str,
    households: &[Household],
    set: &EditSet,
    side: usize,
) -> Result<BaselineSide> {
    let mut docs = Vec::with_capacity(households.len());
    for h in households {
        let mut doc = Automerge::new();
        doc.apply_changes(parse_changes(&h.changes)?)?;
        docs.push(doc);
    }
    for (i, changes) in &set.on[side] {
        docs[*i].apply_changes(parse_changes(changes)?)?;
    }
    let ids: Vec<String> = households.iter().map(|h| h.key.to_string()).collect();
    let index = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.clone(), i))
        .collect();
    Ok(BaselineSide {
        me: me.into(),
        peer: peer.into(),
        states: (0..docs.len()).map(|_| am_sync::State::new()).collect(),
        ids,
        index,
        docs,
    })
}

/// Shared bookkeeping of the baseline: messages sent and not yet fully handled, and how many
/// sides have sent their opening messages.
struct Quiescence {
    in_flight: AtomicI64,
    opened: AtomicUsize,
    notify: Notify,
}

impl Quiescence {
    fn check(&self) {
        if self.opened.load(Ordering::SeqCst) == 2 && self.in_flight.load(Ordering::SeqCst) == 0 {
            self.notify.notify_one();
        }
    }
}

struct BaselineRun {
    cpu: Duration,
    first_send: Option<Instant>,
    messages_sent: u64,
}

/// Resolves once `stop` is set (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

async fn baseline_side(
    side: &mut BaselineSide,
    ep: &mut Endpoint,
    q: &Quiescence,
    mut stop: watch::Receiver<bool>,
) -> Result<BaselineRun> {
    let mut cpu = Duration::ZERO;
    let mut first_send = None;
    let mut sent = 0u64;
    // Opening messages for every document, pipelined in batches.
    let mut batch = Vec::with_capacity(BASELINE_BATCH + 1024);
    for i in 0..side.docs.len() {
        let msg = on_cpu(&mut cpu, || {
            side.docs[i]
                .generate_sync_message(&mut side.states[i])
                .map(|m| m.encode())
        });
        if let Some(data) = msg {
            on_cpu(&mut cpu, || {
                envelope(&mut batch, &side.me, &side.peer, &side.ids[i], &data);
            });
            q.in_flight.fetch_add(1, Ordering::SeqCst);
            sent += 1;
        }
        if batch.len() >= BASELINE_BATCH {
            first_send.get_or_insert_with(Instant::now);
            ep.send(std::mem::take(&mut batch), 1)?;
        }
    }
    if !batch.is_empty() {
        first_send.get_or_insert_with(Instant::now);
        ep.send(std::mem::take(&mut batch), 1)?;
    }
    q.opened.fetch_add(1, Ordering::SeqCst);
    q.check();

    let mut buf = vec![0u8; READ_BUF];
    let mut pending: Vec<u8> = Vec::new();
    // Ends when told to stop; the caller's timeout bounds it in time.
    loop {
        let n = tokio::select! {
            biased;
            _ = stopped(&mut stop) => break,
            r = ep.rd.read(&mut buf) => r.context("baseline read")?,
        };
        if n == 0 {
            bail!("the peer closed the baseline connection");
        }
        pending.extend_from_slice(&buf[..n]);
        let mut pos = 0;
        let mut out = Vec::new();
        let mut handled = 0i64;
        let t = thread_cpu();
        while pending.len() - pos >= 4 {
            let mut len = [0u8; 4];
            len.copy_from_slice(&pending[pos..pos + 4]);
            let len = u32::from_be_bytes(len) as usize;
            if pending.len() - pos - 4 < len {
                break;
            }
            let body = &pending[pos + 4..pos + 4 + len];
            pos += 4 + len;
            let (doc_id, data) = open_envelope(body)?;
            let doc_id = std::str::from_utf8(doc_id)?;
            let &i = side
                .index
                .get(doc_id)
                .ok_or_else(|| anyhow!("unknown document {doc_id}"))?;
            let msg = am_sync::Message::decode(data).map_err(|e| anyhow!("sync message: {e}"))?;
            side.docs[i].receive_sync_message(&mut side.states[i], msg)?;
            if let Some(reply) = side.docs[i].generate_sync_message(&mut side.states[i]) {
                envelope(
                    &mut out,
                    &side.me,
                    &side.peer,
                    &side.ids[i],
                    &reply.encode(),
                );
                q.in_flight.fetch_add(1, Ordering::SeqCst);
                sent += 1;
            }
            handled += 1;
        }
        pending.drain(..pos);
        cpu += thread_cpu().saturating_sub(t);
        if !out.is_empty() {
            ep.send(out, 1)?;
        }
        if handled > 0 {
            q.in_flight.fetch_sub(handled, Ordering::SeqCst);
            q.check();
        }
    }
    ensure!(pending.is_empty(), "baseline bytes left over");
    Ok(BaselineRun {
        cpu,
        first_send,
        messages_sent: sent,
    })
}

struct BaselineResult {
    bytes: u64,
    wall: Duration,
    cpu: Duration,
    messages: u64,
}

async fn baseline_scenario(households: &[Household], set: &EditSet) -> Result<BaselineResult> {
    progress(BENCH, "baseline: building both sides' documents");
    let (a, b) = both(
        || build_baseline_side(PEER_A, PEER_B, households, set, 0),
        || build_baseline_side(PEER_B, PEER_A, households, set, 1),
    )?;
    let (link, ea, eb) = warm_connection(LinkConfig::village()).await?;
    let q = Arc::new(Quiescence {
        in_flight: AtomicI64::new(0),
        opened: AtomicUsize::new(0),
        notify: Notify::new(),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    progress(
        BENCH,
        &format!(
            "baseline: syncing {} documents one by one (this takes minutes at 1 Mbit/s)",
            households.len()
        ),
    );
    let spawn = |mut side: BaselineSide, mut ep: Endpoint| {
        let q = Arc::clone(&q);
        let stop = stop_rx.clone();
        tokio::spawn(async move {
            let r = baseline_side(&mut side, &mut ep, &q, stop).await;
            (side, ep, r)
        })
    };
    let ta = spawn(a, ea);
    let tb = spawn(b, eb);
    let start = Instant::now();
    let waited = timeout(BASELINE_TIMEOUT, async {
        let mut last_report = Instant::now();
        // Ends on quiescence; the timeout bounds it.
        loop {
            let _ = timeout(Duration::from_secs(1), q.notify.notified()).await;
            if q.opened.load(Ordering::SeqCst) == 2 && q.in_flight.load(Ordering::SeqCst) == 0 {
                break;
            }
            if last_report.elapsed() > Duration::from_secs(15) {
                last_report = Instant::now();
                progress(
                    BENCH,
                    &format!(
                        "  baseline: {:.0} s, {} KB delivered, {} messages in flight",
                        start.elapsed().as_secs_f64(),
                        (link.bytes_a_to_b() + link.bytes_b_to_a()) / 1000,
                        q.in_flight.load(Ordering::SeqCst)
                    ),
                );
            }
        }
    })
    .await;
    let end = Instant::now();
    stop_tx.send_replace(true);
    let (sa, ea, ra) = ta.await.context("baseline side A panicked")?;
    let (sb, eb, rb) = tb.await.context("baseline side B panicked")?;
    waited.context("baseline timed out")?;
    let (ra, rb) = (ra?, rb?);
    // Every document must now agree.
    for i in 0..sa.docs.len() {
        ensure!(
            sa.docs[i].get_heads() == sb.docs[i].get_heads(),
            "baseline: {} differs",
            sa.ids[i]
        );
    }
    for i in set.docs() {
        ensure!(
            sa.docs[i].get_heads() != households[i].heads,
            "baseline: an edit was lost"
        );
    }
    let first = [ra.first_send, rb.first_send]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(start);
    ea.close();
    eb.close();
    Ok(BaselineResult {
        bytes: link.bytes_a_to_b() + link.bytes_b_to_a(),
        wall: end.saturating_duration_since(first),
        cpu: ra.cpu.max(rb.cpu),
        messages: ra.messages_sent + rb.messages_sent,
    })
}

// ---------------------------------------------------------------------------------------------

fn env_usize(name: &str) -> Result<Option<usize>> {
    match std::env::var(name) {
        Ok(v) => Ok(Some(v.parse().with_context(|| format!("{name}={v:?}"))?)),
        Err(_) => Ok(None),
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "meets"
    } else {
        "MISSES"
    }
}

/// Runs the benchmark (see the module documentation).
pub fn run() -> Result<()> {
    let n = env_usize("CUNYUN_BENCH_SYNC_DOCS")?.unwrap_or(HOUSEHOLDS);
    let skip_baseline = std::env::var("CUNYUN_BENCH_SYNC_SKIP_BASELINE").is_ok_and(|v| v == "1");
    progress(BENCH, &format!("generating {n} household documents"));
    let t = Instant::now();
    let households = generate_households(n)?;
    let sets = generate_edits(&households, 2)?;
    let doc_bytes: usize = households
        .iter()
        .map(|h| h.changes.iter().map(Vec::len).sum::<usize>())
        .sum();
    progress(
        BENCH,
        &format!(
            "  {n} documents ({:.0} B of changes each on average) and 2 edit sets in {:.1} s",
            doc_bytes as f64 / n as f64,
            t.elapsed().as_secs_f64()
        ),
    );
    let change_bytes = sets[0].change_bytes();
    progress(
        BENCH,
        &format!(
            "  edit set 1: {} changes, {change_bytes} B; edit set 2: {} B",
            sets[0]
                .on
                .iter()
                .flatten()
                .map(|(_, c)| c.len())
                .sum::<usize>(),
            sets[1].change_bytes()
        ),
    );
    let ids = identities()?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    // The node's sled store by default; CUNYUN_BENCH_SYNC_STORE=mem uses the protocol's
    // in-memory store instead (what the session alone costs).
    let in_memory = std::env::var("CUNYUN_BENCH_SYNC_STORE").is_ok_and(|v| v == "mem");
    progress(
        BENCH,
        if in_memory {
            "stores: in-memory MemStore"
        } else {
            "stores: the node's sled DocStore on disk"
        },
    );
    let (warm, cold) = if in_memory {
        (
            runtime.block_on(warm_scenario::<MemStore>(&households, &sets, &ids))?,
            runtime.block_on(cold_scenario::<MemStore>(&households, &sets[0], &ids))?,
        )
    } else {
        (
            runtime.block_on(warm_scenario::<SledHost>(&households, &sets, &ids))?,
            runtime.block_on(cold_scenario::<SledHost>(&households, &sets[0], &ids))?,
        )
    };
    let baseline = if skip_baseline {
        progress(BENCH, "baseline skipped");
        None
    } else {
        Some(runtime.block_on(baseline_scenario(&households, &sets[0]))?)
    };

    let w = &warm.warm;
    let bytes_bound = 2 * change_bytes + 16 * 1024;
    emit(BENCH, "round_trips", w.round_trips(), "round trips");
    emit(BENCH, "flights", f64::from(w.flights()), "one-way trips");
    emit(BENCH, "wall_ms", ms(w.wall()), "ms");
    emit(BENCH, "setup_ms", ms(w.wall_with_setup()), "ms");
    emit(BENCH, "bytes_total", w.bytes() as f64, "B");
    emit(BENCH, "change_bytes", change_bytes as f64, "B");
    let payload = w.sides[0].sent.change_payload + w.sides[1].sent.change_payload;
    emit(BENCH, "change_payload_sent", payload as f64, "B");
    emit(BENCH, "reconcile_cpu_ms", ms(w.cpu()), "ms");
    let i = &warm.initiated;
    emit(
        BENCH,
        "initiated_round_trips",
        i.round_trips(),
        "round trips",
    );
    emit(BENCH, "initiated_wall_ms", ms(i.wall()), "ms");
    emit(BENCH, "initiated_bytes_total", i.bytes() as f64, "B");
    emit(
        BENCH,
        "initiated_change_bytes",
        sets[1].change_bytes() as f64,
        "B",
    );
    let nc = &warm.nochange;
    emit(
        BENCH,
        "nochange_round_trips",
        nc.round_trips(),
        "round trips",
    );
    emit(BENCH, "nochange_bytes", nc.bytes() as f64, "B");
    emit(BENCH, "nochange_wall_ms", ms(nc.wall()), "ms");
    emit(BENCH, "nochange_cpu_ms", ms(nc.cpu()), "ms");
    let ns = &warm.nochange_steady;
    emit(
        BENCH,
        "nochange_steady_round_trips",
        ns.round_trips(),
        "round trips",
    );
    emit(BENCH, "nochange_steady_bytes", ns.bytes() as f64, "B");
    let nci = &warm.nochange_initiated;
    emit(
        BENCH,
        "nochange_initiated_round_trips",
        nci.round_trips(),
        "round trips",
    );
    emit(BENCH, "cold_bytes", cold.bytes() as f64, "B");
    emit(BENCH, "cold_round_trips", cold.round_trips(), "round trips");
    emit(BENCH, "cold_wall_ms", ms(cold.wall()), "ms");
    emit(BENCH, "cold_reconcile_cpu_ms", ms(cold.cpu()), "ms");
    if let Some(b) = &baseline {
        emit(BENCH, "baseline_bytes", b.bytes as f64, "B");
        emit(BENCH, "baseline_wall_ms", ms(b.wall), "ms");
        emit(BENCH, "baseline_cpu_ms", ms(b.cpu), "ms");
        emit(BENCH, "baseline_messages", b.messages as f64, "messages");
        emit(BENCH, "bytes_ratio", b.bytes as f64 / w.bytes() as f64, "x");
        emit(BENCH, "time_ratio", ms(b.wall) / ms(w.wall()), "x");
    }

    let report = [
        format!(
            "round trips {} (≤ 3): {}",
            w.round_trips(),
            verdict(w.round_trips() <= 3.0)
        ),
        format!(
            "wall {:.0} ms (≤ 1500): {}",
            ms(w.wall()),
            verdict(w.wall() <= Duration::from_millis(1500))
        ),
        format!(
            "bytes {} (≤ 2 × {change_bytes} + 16 KiB = {bytes_bound}): {}",
            w.bytes(),
            verdict(w.bytes() <= bytes_bound)
        ),
        format!(
            "no change {} RT (≤ 1), {} B (≤ 512): {}",
            nc.round_trips(),
            nc.bytes(),
            verdict(nc.round_trips() <= 1.0 && nc.bytes() <= 512)
        ),
        format!(
            "cold {} B (≤ {} + 32 KiB = {}): {}",
            cold.bytes(),
            bytes_bound,
            bytes_bound + 32 * 1024,
            verdict(cold.bytes() <= bytes_bound + 32 * 1024)
        ),
        format!(
            "reconcile CPU {:.1} ms (≤ 200): {}",
            ms(w.cpu()),
            verdict(w.cpu() <= Duration::from_millis(200))
        ),
        format!(
            "no change a second time: {} RT, {} B",
            ns.round_trips(),
            ns.bytes()
        ),
        format!(
            "A initiating: {} RT, {:.0} ms, {} B",
            i.round_trips(),
            ms(i.wall()),
            i.bytes()
        ),
    ];
    for line in report {
        progress(BENCH, &format!("target: {line}"));
    }
    Ok(())
}
