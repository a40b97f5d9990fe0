//! The sync service: who to sync with, when, and what happened.
//!
//! Peers come from mDNS ([`crate::discovery`]), from the configured static peers and upstream,
//! and from whoever connects. A peer is synced when it is discovered, shortly after any local
//! change (debounced — applied remote changes count too, so news spreads onward), and
//! periodically with jitter. A failed session backs off exponentially; at most
//! `max_concurrent_sessions` run at once. What a converged session earned (the per-peer
//! watermarks) is persisted so the next session with that peer is warm.
//!
//! The service stands on a [`SyncHost`]. The scheduler sleeps until the next peer is due, the
//! host reports a write ([`SyncHost::watch_writes`]) or the peer list changes; it does not poll
//! the store. Every task the service starts (connections, sessions) is tracked, and
//! [`SyncService::stop`] returns only once they have ended and no host call of theirs is still
//! running, so the store can be closed right after.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cunyun_protocol::identity::{NodeId, NodeIdentity};
use cunyun_protocol::key::{DocKey, Role};
use cunyun_protocol::sync::PeerMemory;
use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::certs::revocation::RevocationSet;
use crate::certs::tls::TlsContext;
use crate::clock::now_ms;
use crate::discovery::{MdnsDiscovery, PeerEvent};
use crate::host::{HostEntry, HostError, SyncHost};
use crate::sync::runner::{run_session, SessionLimits, SessionReport};

/// A node whose certificate expires within this many days logs a warning at start.
pub const RENEW_WARNING_DAYS: i64 = 30;

/// The sync protocol version announced on mDNS.
pub const PROTOCOL_VERSION: u32 = 1;

/// Content transfer connections served at once (they do not take sync session slots).
pub const MAX_BLOB_SESSIONS: usize = 8;

/// Sync settings (the `[sync]` table of the node config).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct SyncConfig {
    /// Whether this node syncs at all. Needs a certificate (`cunyun-node init`).
    pub enabled: bool,
    /// Address the sync endpoint (mutual TLS) listens on.
    pub listen: SocketAddr,
    /// Directory with `node.crt`, `node.key`, `ca.crt`; default `<data_dir>/tls`.
    pub tls_dir: Option<PathBuf>,
    /// Announce and browse on the LAN by mDNS.
    pub mdns: bool,
    /// Peers to sync with whether or not mDNS finds them.
    pub static_peers: Vec<SocketAddr>,
    /// The county node or hub this node reports to.
    pub upstream: Option<SocketAddr>,
    /// Seconds between periodic syncs with each peer (±`jitter` of it).
    pub interval_s: u64,
    /// Fraction of the interval by which each periodic sync is moved at random.
    pub jitter: f64,
    /// Milliseconds to wait after a local change before syncing (changes within it are batched).
    pub debounce_ms: u64,
    /// First retry delay after a failed session, in milliseconds; doubles up to `backoff_max_s`.
    pub backoff_ms: u64,
    /// Longest retry delay, in seconds.
    pub backoff_max_s: u64,
    /// Sessions running at once, in and out together.
    pub max_concurrent_sessions: usize,
    /// Seconds without a byte from the peer before a session is abandoned.
    pub idle_timeout_s: u64,
    /// Inbound connections per source address (`[sync.per_address]`: `per_minute`,
    /// `concurrent`); see [`crate::ratelimit`].
    pub per_address: crate::ratelimit::AddrLimits,
    /// A socket the caller already bound (tests, benchmarks): the service listens on it instead
    /// of binding `listen`, so a port chosen with `:0` is never released and bound again.
    #[serde(skip)]
    pub bound: BoundListener,
}

/// A listening socket handed to [`SyncService::start`], taken by the first start that uses it.
#[derive(Debug, Clone, Default)]
pub struct BoundListener(Arc<Mutex<Option<std::net::TcpListener>>>);

impl BoundListener {
    /// Wraps a socket bound by the caller; its address is then the service's address.
    pub fn new(listener: std::net::TcpListener) -> BoundListener {
        BoundListener(Arc::new(Mutex::new(Some(listener))))
    }

    fn take(&self) -> Option<std::net::TcpListener> {
        // A poisoned lock still holds the socket; take it.
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            enabled: false,
            listen: SocketAddr::from(([0, 0, 0, 0], 7447)),
            tls_dir: None,
            mdns: true,
            static_peers: Vec::new(),
            upstream: None,
            interval_s: 30,
            jitter: 0.2,
            debounce_ms: 300,
            backoff_ms: 2_000,
            backoff_max_s: 300,
            max_concurrent_sessions: 4,
            idle_timeout_s: 60,
            per_address: crate::ratelimit::AddrLimits::SYNC,
            bound: BoundListener::default(),
        }
    }
}

/// Why the sync service could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SyncStartError {
    /// No usable certificate.
    #[error("无法加载节点证书（请先运行 cunyun-node init）: {0}")]
    Tls(#[from] crate::certs::tls::TlsError),
    /// The sync port could not be bound.
    #[error("无法监听同步端口 {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// What went wrong.
        source: std::io::Error,
    },
    /// mDNS could not start.
    #[error(transparent)]
    Discovery(#[from] crate::discovery::DiscoveryError),
}

/// What the node knows about one peer.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PeerStatus {
    /// Node id (verified by TLS once a session ran; announced before that).
    pub node_id: String,
    /// Role.
    pub role: Option<Role>,
    /// Scope.
    pub scope: Option<String>,
    /// Where it was reached or found.
    pub addrs: Vec<SocketAddr>,
    /// How it became known: `mdns`, `static`, `upstream`, `inbound`.
    pub source: String,
    /// Last successful session, ms since the epoch.
    pub last_sync_ms: Option<u64>,
    /// Last attempt, ms since the epoch.
    pub last_attempt_ms: Option<u64>,
    /// Last error, in Chinese.
    pub last_error: Option<String>,
    /// Sessions that converged.
    pub sessions_ok: u64,
    /// Sessions that failed.
    pub sessions_failed: u64,
    /// Documents changed here by this peer.
    pub docs_received: u64,
    /// Documents this node sent changes for.
    pub docs_sent: u64,
    /// Bytes received from it.
    pub bytes_in: u64,
    /// Bytes sent to it.
    pub bytes_out: u64,
    /// The sync protocol version its last hello announced (the only version on the wire).
    pub protocol_version: Option<u8>,
    /// Documents it held in the scope shared with this node, as of its last hello.
    pub documents: Option<u64>,
    /// Whether a session is running now.
    pub active: bool,
    #[serde(skip)]
    due_ms: u64,
    #[serde(skip)]
    failures: u32,
}

/// The whole sync picture, for `/api/v1/sync` and `cunyun-node status`.
#[derive(Debug, Clone, Serialize)]
pub struct SyncStatus {
    /// This node.
    pub node: NodeIdentity,
    /// Where the sync endpoint listens.
    pub listen: SocketAddr,
    /// Every known peer, by node id (or address until identified).
    pub peers: Vec<PeerStatus>,
    /// Totals since start.
    pub totals: SyncTotals,
}

/// Counters since start.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct SyncTotals {
    /// Sessions that converged.
    pub sessions_ok: u64,
    /// Sessions that failed.
    pub sessions_failed: u64,
    /// Documents changed here by peers.
    pub docs_received: u64,
    /// Documents refused.
    pub refused: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Bytes sent.
    pub bytes_out: u64,
}

/// Peers are keyed by node id once known; before that by address.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum PeerKey {
    Id(NodeId),
    Addr(SocketAddr),
}

struct Inner {
    /// The host, wrapped so that [`SyncService::stop`] can tell when no task uses it any more.
    host: Arc<dyn SyncHost>,
    tls: TlsContext,
    config: SyncConfig,
    listen: SocketAddr,
    /// The remembered watermarks of every peer (persisted through the host).
    memory: Mutex<HashMap<NodeId, PeerMemory>>,
    peers: Mutex<BTreeMap<PeerKey, PeerStatus>>,
    active: Mutex<HashSet<PeerKey>>,
    totals: Mutex<SyncTotals>,
    slots: Arc<Semaphore>,
    reports: tokio::sync::broadcast::Sender<SessionReport>,
    /// Content files served to peers that connect with the blob ALPN (none: refused).
    blobs: Mutex<Option<crate::blobs::BlobStore>>,
    blob_slots: Arc<Semaphore>,
    /// Bumped whenever a revocation list adds revocations (running sessions re-check).
    revocation_updates: tokio::sync::watch::Sender<u64>,
    /// Wakes the scheduler: a peer was added or made due, or a session ended.
    wake: tokio::sync::Notify,
    /// Connection and session tasks (reaped as they finish, ended by `stop`).
    sessions: Mutex<tokio::task::JoinSet<()>>,
    /// Set by `stop`: no new task is started.
    stopped: std::sync::atomic::AtomicBool,
}

/// The caller's host as the service holds it: every clone of the `Arc` around it belongs to the
/// service or one of its tasks, so the count says whether any host call is still running.
struct Tracked(Arc<dyn SyncHost>);

impl SyncHost for Tracked {
    fn seq(&self) -> Result<u64, HostError> {
        self.0.seq()
    }
    fn scan_range(&self, start: &[u8], end: &[u8]) -> Result<Vec<HostEntry>, HostError> {
        self.0.scan_range(start, end)
    }
    fn changed_since(
        &self,
        start: &[u8],
        end: &[u8],
        since: u64,
    ) -> Result<Option<Vec<HostEntry>>, HostError> {
        self.0.changed_since(start, end, since)
    }
    fn load(&self, key: &DocKey) -> Result<Option<automerge::Automerge>, HostError> {
        self.0.load(key)
    }
    fn contains(&self, key: &DocKey) -> Result<bool, HostError> {
        self.0.contains(key)
    }
    fn commit(
        &self,
        writes: Vec<crate::store::DocWrite>,
        removes: Vec<DocKey>,
    ) -> Result<Vec<HostEntry>, HostError> {
        self.0.commit(writes, removes)
    }
    fn watch_writes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.0.watch_writes()
    }
    fn load_peer_memory(&self) -> Result<HashMap<NodeId, PeerMemory>, HostError> {
        self.0.load_peer_memory()
    }
    fn save_peer_memory(&self, peer: NodeId, memory: PeerMemory) -> Result<(), HostError> {
        self.0.save_peer_memory(peer, memory)
    }
}

/// Longest [`SyncService::stop`] waits for host calls still running on the blocking pool.
const STOP_WAIT: Duration = Duration::from_secs(30);

/// A running sync service. Dropping it does not stop the tasks; call [`SyncService::stop`].
#[derive(Clone)]
pub struct SyncService {
    inner: Arc<Inner>,
    tasks: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl SyncService {
    /// Starts the sync service over `host`, for a node whose certificates live in
    /// `<data_dir>/tls` (unless `config.tls_dir` says otherwise).
    pub async fn start(
        config: SyncConfig,
        host: Arc<dyn SyncHost>,
        data_dir: &Path,
    ) -> Result<SyncService, SyncStartError> {
        let host: Arc<dyn SyncHost> = Arc::new(Tracked(host));
        let tls_dir = config
            .tls_dir
            .clone()
            .unwrap_or_else(|| data_dir.join("tls"));
        let revoked = Arc::new(RevocationSet::new());
        let tls = TlsContext::load(&tls_dir, revoked.clone())?;
        let left_s = tls.own_cert().not_after - crate::certs::trust::system_time_s() as i64;
        if left_s < RENEW_WARNING_DAYS * 86_400 {
            tracing::warn!(
                target: "cunyun::_events::certificate_expiring",
                node = %tls.identity.node_id,
                days_left = left_s / 86_400,
                "node certificate expires soon; renew it (cunyun-node enroll-village --node-id)"
            );
        }
        // Lists already stored take effect before the first handshake; the watermarks are read
        // once (a failure only makes the first sessions cold).
        let memory = {
            let (host, tls) = (host.clone(), tls.clone());
            tokio::task::spawn_blocking(move || {
                let v = tls.verifier();
                v.revocations()
                    .refresh(host.as_ref(), &tls.identity.scope, v.root_der());
                host.load_peer_memory().unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "peer watermarks unreadable; starting cold");
                    HashMap::new()
                })
            })
            .await
            .unwrap_or_default()
        };
        let bind_error = |source| SyncStartError::Bind {
            addr: config.listen,
            source,
        };
        let listener = match config.bound.take() {
            Some(l) => {
                l.set_nonblocking(true).map_err(bind_error)?;
                TcpListener::from_std(l).map_err(bind_error)?
            }
            None => TcpListener::bind(config.listen).await.map_err(bind_error)?,
        };
        let listen = listener
            .local_addr()
            .map_err(|source| SyncStartError::Bind {
                addr: config.listen,
                source,
            })?;
        let (reports, _) = tokio::sync::broadcast::channel(256);
        let inner = Arc::new(Inner {
            memory: Mutex::new(memory),
            host,
            tls,
            slots: Arc::new(Semaphore::new(config.max_concurrent_sessions.max(1))),
            config,
            listen,
            peers: Mutex::new(BTreeMap::new()),
            active: Mutex::new(HashSet::new()),
            totals: Mutex::new(SyncTotals::default()),
            reports,
            blobs: Mutex::new(None),
            blob_slots: Arc::new(Semaphore::new(MAX_BLOB_SESSIONS)),
            revocation_updates: tokio::sync::watch::Sender::new(0),
            wake: tokio::sync::Notify::new(),
            sessions: Mutex::new(tokio::task::JoinSet::new()),
            stopped: std::sync::atomic::AtomicBool::new(false),
        });
        let service = SyncService {
            inner: inner.clone(),
            tasks: Arc::new(Mutex::new(Vec::new())),
        };
        let now = now_ms();
        for addr in &inner.config.static_peers {
            service.add_peer(PeerKey::Addr(*addr), vec![*addr], "static", now);
        }
        if let Some(addr) = inner.config.upstream {
            service.add_peer(PeerKey::Addr(addr), vec![addr], "upstream", now);
        }
        let mut tasks = vec![tokio::spawn(accept_loop(service.clone(), listener))];
        if inner.config.mdns {
            let discovery =
                MdnsDiscovery::start(&inner.tls.identity, listen.port(), PROTOCOL_VERSION)?;
            tasks.push(tokio::spawn(discovery_loop(service.clone(), discovery)));
        }
        tasks.push(tokio::spawn(scheduler_loop(service.clone())));
        if let Ok(mut t) = service.tasks.lock() {
            t.extend(tasks);
        }
        tracing::info!(
            target: "cunyun::_events::sync_started",
            node = %inner.tls.identity.node_id,
            %listen,
            mdns = inner.config.mdns
        );
        Ok(service)
    }

    /// Serves content from `store` to peers that connect with the blob ALPN
    /// ([`crate::certs::tls::BLOB_ALPN`]); until this is called such connections are closed.
    pub fn set_blob_store(&self, store: crate::blobs::BlobStore) {
        if let Ok(mut b) = self.inner.blobs.lock() {
            *b = Some(store);
        }
    }

    /// The blob store content is served from, if set.
    pub fn blob_store(&self) -> Option<crate::blobs::BlobStore> {
        self.inner.blobs.lock().ok().and_then(|b| b.clone())
    }

    /// The TLS context (for dialing content transfers with [`crate::blobs::fetch_wanted`]).
    pub fn tls(&self) -> &TlsContext {
        &self.inner.tls
    }

    /// This node's identity (from its certificate).
    pub fn identity(&self) -> NodeIdentity {
        self.inner.tls.identity
    }

    /// Where the sync endpoint listens.
    pub fn listen_addr(&self) -> SocketAddr {
        self.inner.listen
    }

    /// Session reports as they finish (for tests, benchmarks and metrics).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<SessionReport> {
        self.inner.reports.subscribe()
    }

    /// Stops the service: no new session starts, every task of the service (listener,
    /// discovery, scheduler, connections, sessions) ends, and this returns once none of them
    /// is still inside a host call (at most [`STOP_WAIT`] for those), so the caller may close
    /// the store right after. Applies already handed to the host complete, each atomically.
    pub async fn stop(&self) {
        use std::sync::atomic::Ordering;
        self.inner.stopped.store(true, Ordering::SeqCst);
        self.inner.slots.close();
        let loops: Vec<_> = match self.tasks.lock() {
            Ok(mut tasks) => tasks.drain(..).collect(),
            Err(_) => Vec::new(),
        };
        for t in &loops {
            t.abort();
        }
        for t in loops {
            let _ = t.await;
        }
        // Nothing spawns into the set any more (`stopped`); take it out to await it unlocked.
        let mut sessions = match self.inner.sessions.lock() {
            Ok(mut set) => std::mem::take(&mut *set),
            Err(_) => tokio::task::JoinSet::new(),
        };
        sessions.abort_all();
        while sessions.join_next().await.is_some() {}
        // Aborted tasks may have left a host call running on the blocking pool.
        let deadline = tokio::time::Instant::now() + STOP_WAIT;
        while Arc::strong_count(&self.inner.host) > 1 {
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!("sync host still in use after stop; giving up waiting");
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tracing::info!(
            target: "cunyun::_events::sync_stopped",
            node = %self.inner.tls.identity.node_id
        );
    }

    /// Starts `task` as one of the service's tracked tasks (finished ones are reaped); `false`
    /// once the service is stopping.
    fn spawn_tracked(&self, task: impl std::future::Future<Output = ()> + Send + 'static) -> bool {
        use std::sync::atomic::Ordering;
        let Ok(mut set) = self.inner.sessions.lock() else {
            return false;
        };
        if self.inner.stopped.load(Ordering::SeqCst) {
            return false;
        }
        while set.try_join_next().is_some() {}
        set.spawn(task);
        true
    }

    /// The current picture.
    pub fn status(&self) -> SyncStatus {
        let peers = self
            .inner
            .peers
            .lock()
            .map(|p| p.values().cloned().collect())
            .unwrap_or_default();
        SyncStatus {
            node: self.inner.tls.identity,
            listen: self.inner.listen,
            peers,
            totals: self.inner.totals.lock().map(|t| *t).unwrap_or_default(),
        }
    }

    /// Dials `addr` once now and runs a session; for tools and tests. The session is one of
    /// the service's tasks: [`SyncService::stop`] ends it.
    pub async fn sync_with(&self, addr: SocketAddr) -> Result<SessionReport, String> {
        let stopped = || "同步服务已停止".to_string();
        let permit = self
            .inner
            .slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| stopped())?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let service = self.clone();
        let started = self.spawn_tracked(async move {
            let r = dial(&service, addr).await;
            drop(permit);
            let _ = tx.send(r);
        });
        if !started {
            return Err(stopped());
        }
        rx.await.map_err(|_| stopped())?
    }

    fn add_peer(&self, key: PeerKey, addrs: Vec<SocketAddr>, source: &str, due_ms: u64) {
        if let Ok(mut peers) = self.inner.peers.lock() {
            let entry = peers.entry(key.clone()).or_insert_with(|| PeerStatus {
                node_id: match &key {
                    PeerKey::Id(id) => id.to_string(),
                    PeerKey::Addr(a) => a.to_string(),
                },
                source: source.to_string(),
                ..Default::default()
            });
            for a in addrs {
                if !entry.addrs.contains(&a) {
                    entry.addrs.push(a);
                }
            }
            // New peers are due now; a known one is pulled forward unless it is backing off.
            if entry.due_ms == 0 {
                entry.due_ms = due_ms;
            } else if entry.failures == 0 {
                entry.due_ms = entry.due_ms.min(due_ms);
            }
        }
        self.inner.wake.notify_one();
    }

    /// Makes every known peer due within the debounce delay (after a local change).
    fn all_due_in(&self, delay_ms: u64) {
        let due = now_ms() + delay_ms;
        if let Ok(mut peers) = self.inner.peers.lock() {
            for p in peers.values_mut() {
                if p.failures == 0 && p.due_ms > due {
                    p.due_ms = due;
                }
            }
        }
        self.inner.wake.notify_one();
    }

    fn periodic_delay_ms(&self) -> u64 {
        let base = self.inner.config.interval_s.max(1) as f64 * 1000.0;
        let j = self.inner.config.jitter.clamp(0.0, 0.9);
        let factor = 1.0 + rand::thread_rng().gen_range(-j..=j);
        (base * factor) as u64
    }

    async fn record(&self, key: &PeerKey, report: &SessionReport, addr: Option<SocketAddr>) {
        let now = now_ms();
        let ok = report.outcome.is_ok();
        if let Ok(mut t) = self.inner.totals.lock() {
            if ok {
                t.sessions_ok += 1;
            } else {
                t.sessions_failed += 1;
            }
            t.docs_received += report.docs_applied as u64;
            t.refused += report.refused as u64;
            t.bytes_in += report.bytes_in;
            t.bytes_out += report.bytes_out;
        }
        let id_key = PeerKey::Id(report.peer.node_id);
        if let Ok(mut peers) = self.inner.peers.lock() {
            // Once identified, an address-keyed peer becomes an id-keyed one.
            let mut status = peers.remove(key).unwrap_or_default();
            if let Some(existing) = peers.remove(&id_key) {
                status.addrs.extend(existing.addrs);
                status.sessions_ok += existing.sessions_ok;
                status.sessions_failed += existing.sessions_failed;
                status.docs_received += existing.docs_received;
                status.docs_sent += existing.docs_sent;
                status.bytes_in += existing.bytes_in;
                status.bytes_out += existing.bytes_out;
                if status.source.is_empty() {
                    status.source = existing.source;
                }
                status.last_sync_ms = status.last_sync_ms.max(existing.last_sync_ms);
                status.protocol_version = status.protocol_version.or(existing.protocol_version);
                status.documents = status.documents.or(existing.documents);
            }
            if let Some(a) = addr {
                if !status.addrs.contains(&a) {
                    status.addrs.push(a);
                }
            }
            status.addrs.sort();
            status.addrs.dedup();
            status.node_id = report.peer.node_id.to_string();
            status.role = Some(report.peer.role);
            status.scope = Some(report.peer.scope.to_string());
            status.last_attempt_ms = Some(now);
            status.bytes_in += report.bytes_in;
            status.bytes_out += report.bytes_out;
            status.docs_received += report.docs_applied as u64;
            status.docs_sent += report.stats.docs_sent;
            if report.stats.peer_version > 0 {
                status.protocol_version = Some(report.stats.peer_version);
                status.documents = Some(report.stats.peer_documents);
            }
            if ok {
                status.sessions_ok += 1;
                status.last_sync_ms = Some(now);
                status.last_error = None;
                status.failures = 0;
                status.due_ms = now + self.periodic_delay_ms();
            } else {
                status.sessions_failed += 1;
                status.last_error = report.outcome.as_ref().err().cloned();
                status.failures = status.failures.saturating_add(1);
                status.due_ms = now + self.backoff_ms(status.failures);
            }
            status.active = false;
            if status.source.is_empty() {
                status.source = "inbound".into();
            }
            peers.insert(id_key, status);
        }
        if let Ok(memory) = report.outcome {
            let peer = report.peer.node_id;
            if let Ok(mut mem) = self.inner.memory.lock() {
                mem.insert(peer, memory);
            }
            let host = self.inner.host.clone();
            let saved =
                tokio::task::spawn_blocking(move || host.save_peer_memory(peer, memory)).await;
            match saved {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "could not persist peer watermarks"),
                Err(e) => tracing::warn!(error = %e, "could not persist peer watermarks"),
            }
        }
        // The peer is rescheduled (and a slot is free again).
        self.inner.wake.notify_one();
        let _ = self.inner.reports.send(report.clone());
        tracing::info!(
            target: "cunyun::_events::sync_session",
            peer = %report.peer.node_id,
            ok,
            error = report.outcome.as_ref().err().map(String::as_str),
            docs_applied = report.docs_applied,
            bytes_in = report.bytes_in,
            bytes_out = report.bytes_out,
            ms = report.duration.as_millis() as u64
        );
    }

    fn backoff_ms(&self, failures: u32) -> u64 {
        let base = self.inner.config.backoff_ms.max(100);
        let max = self.inner.config.backoff_max_s.max(1) * 1000;
        let exp = base.saturating_mul(1u64 << failures.saturating_sub(1).min(16));
        let jittered = exp as f64 * rand::thread_rng().gen_range(0.8..=1.2);
        (jittered as u64).min(max)
    }

    fn memory_for(&self, peer: &NodeId) -> Option<PeerMemory> {
        self.inner
            .memory
            .lock()
            .ok()
            .and_then(|m| m.get(peer).copied())
    }

    fn set_active(&self, key: &PeerKey, on: bool) -> bool {
        let Ok(mut active) = self.inner.active.lock() else {
            return false;
        };
        if on {
            active.insert(key.clone())
        } else {
            active.remove(key)
        }
    }
}

fn limits(config: &SyncConfig) -> SessionLimits {
    SessionLimits {
        idle: Duration::from_secs(config.idle_timeout_s.max(1)),
        ..SessionLimits::default()
    }
}

/// Runs a session, ending it as soon as a revocation of the peer is accepted (the connection
/// is dropped; applies already handed to the store complete, each atomically).
async fn guarded_session<S>(service: &SyncService, stream: S, peer: NodeIdentity) -> SessionReport
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let inner = &service.inner;
    let mut revocations = inner.revocation_updates.subscribe();
    let session = run_session(
        stream,
        inner.host.clone(),
        inner.tls.identity,
        peer,
        service.memory_for(&peer.node_id),
        limits(&inner.config),
    );
    tokio::pin!(session);
    let started = std::time::Instant::now();
    loop {
        tokio::select! {
            report = &mut session => return report,
            changed = revocations.changed() => {
                if changed.is_err() {
                    return session.await;
                }
                let why = inner.tls.verifier().revocations().revoked(&peer, &[]);
                if let Some(why) = why {
                    tracing::warn!(
                        target: "cunyun::_events::session_ended_revoked",
                        peer = %peer.node_id,
                        why
                    );
                    return SessionReport {
                        peer,
                        outcome: Err(format!("对端证书已被吊销，会话已中止: {why}")),
                        stats: Default::default(),
                        docs_applied: 0,
                        refused: 0,
                        bytes_out: 0,
                        bytes_in: 0,
                        duration: started.elapsed(),
                    };
                }
            }
        }
    }
}

async fn dial(service: &SyncService, addr: SocketAddr) -> Result<SessionReport, String> {
    let inner = &service.inner;
    let (stream, peer) = tokio::time::timeout(Duration::from_secs(15), inner.tls.connect(addr))
        .await
        .map_err(|_| format!("连接 {addr} 超时"))?
        .map_err(|e| e.to_string())?;
    if peer.node_id == inner.tls.identity.node_id {
        return Err("连接到了本节点自己".into());
    }
    let report = guarded_session(service, stream, peer).await;
    Ok(report)
}

async fn accept_loop(service: SyncService, listener: TcpListener) {
    let limiter = crate::ratelimit::AddrLimiter::new("sync", service.inner.config.per_address);
    loop {
        let (tcp, addr) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        // Per-address limits first, before any TLS work or a session slot is spent on it.
        let Ok(addr_permit) = limiter.admit(addr) else {
            drop(tcp);
            continue;
        };
        let task_service = service.clone();
        let started = service.spawn_tracked(async move {
            let service = task_service;
            let _addr_permit = addr_permit;
            let Ok(permit) = service.inner.slots.clone().try_acquire_owned() else {
                // Busy: the peer retries later (its backoff); dropping closes the connection.
                tracing::debug!(%addr, "sync busy; inbound connection refused");
                return;
            };
            let inner = &service.inner;
            let handshake =
                tokio::time::timeout(Duration::from_secs(15), inner.tls.accept(tcp)).await;
            let (stream, peer) = match handshake {
                Ok(Ok(x)) => x,
                Ok(Err(e)) => {
                    tracing::warn!(
                        target: "cunyun::_events::sync_handshake_refused",
                        %addr,
                        error = %e
                    );
                    return;
                }
                Err(_) => return,
            };
            if stream.get_ref().1.alpn_protocol() == Some(crate::certs::tls::BLOB_ALPN) {
                drop(permit);
                serve_blobs(&service, stream, peer).await;
                return;
            }
            let key = PeerKey::Id(peer.node_id);
            service.set_active(&key, true);
            let report = guarded_session(&service, stream, peer).await;
            service.set_active(&key, false);
            service.record(&key, &report, None).await;
            drop(permit);
            service.inner.wake.notify_one();
        });
        if !started {
            return;
        }
    }
}

/// Serves one content transfer connection, if this node serves content.
async fn serve_blobs<S>(service: &SyncService, stream: S, peer: NodeIdentity)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let store = service.inner.blobs.lock().ok().and_then(|b| b.clone());
    let Some(store) = store else {
        tracing::debug!(peer = %peer.node_id, "no blob store; content connection closed");
        return;
    };
    let Ok(_permit) = service.inner.blob_slots.clone().try_acquire_owned() else {
        tracing::debug!(peer = %peer.node_id, "content transfers busy; connection closed");
        return;
    };
    let limits = crate::blobs::TransferLimits {
        idle: Duration::from_secs(service.inner.config.idle_timeout_s.max(1)),
    };
    if let (_, Err(e)) = crate::blobs::serve_over(stream, &store, limits).await {
        tracing::warn!(peer = %peer.node_id, error = %e, "content transfer ended with an error");
    }
}

async fn discovery_loop(service: SyncService, mut discovery: MdnsDiscovery) {
    while let Some(event) = discovery.next().await {
        match event {
            PeerEvent::Found(peer) => {
                if peer.protocol_version != PROTOCOL_VERSION {
                    tracing::info!(peer = %peer.node_id, version = peer.protocol_version, "peer speaks another protocol version");
                    continue;
                }
                service.add_peer(PeerKey::Id(peer.node_id), peer.addrs, "mdns", now_ms());
            }
            PeerEvent::Lost(id) => {
                tracing::debug!(peer = %id, "peer left the LAN");
            }
        }
    }
}

/// Longest the scheduler sleeps without a reason to wake (a safety net; it is woken by writes,
/// new or rescheduled peers and ended sessions).
const SCHEDULER_MAX_SLEEP: Duration = Duration::from_secs(60);
/// How long the scheduler waits before looking again when every session slot is taken and no
/// session ends meanwhile.
const SCHEDULER_BUSY_RETRY: Duration = Duration::from_millis(500);

async fn scheduler_loop(service: SyncService) {
    let mut writes = service.inner.host.watch_writes();
    writes.borrow_and_update();
    let mut writes_open = true;
    loop {
        let busy = start_due_sessions(&service);
        let now = now_ms();
        let sleep = if busy {
            SCHEDULER_BUSY_RETRY
        } else {
            next_due_ms(&service).map_or(SCHEDULER_MAX_SLEEP, |due| {
                Duration::from_millis(due.saturating_sub(now)).min(SCHEDULER_MAX_SLEEP)
            })
        };
        tokio::select! {
            changed = writes.changed(), if writes_open => {
                if changed.is_err() {
                    // The host is gone; the periodic schedule still runs.
                    writes_open = false;
                    continue;
                }
                writes.borrow_and_update();
                // A local change (or one applied from a peer) makes every peer due after the
                // debounce; changes within it are batched into one session per peer.
                service.all_due_in(service.inner.config.debounce_ms);
                // A revocation list may have arrived (or been published here).
                let (host, tls) = (service.inner.host.clone(), service.inner.tls.clone());
                let added = tokio::task::spawn_blocking(move || {
                    let v = tls.verifier();
                    v.revocations()
                        .refresh(host.as_ref(), &tls.identity.scope, v.root_der())
                })
                .await
                .unwrap_or(0);
                if added > 0 {
                    service.inner.revocation_updates.send_modify(|g| *g += 1);
                }
            }
            _ = service.inner.wake.notified() => {}
            _ = tokio::time::sleep(sleep) => {}
        }
    }
}

/// When the next idle peer with an address is due (`None`: no peer is scheduled).
fn next_due_ms(service: &SyncService) -> Option<u64> {
    let active = service.inner.active.lock().ok()?;
    let peers = service.inner.peers.lock().ok()?;
    peers
        .iter()
        .filter(|(k, p)| {
            p.due_ms != 0 && p.due_ms != u64::MAX && !p.addrs.is_empty() && !active.contains(k)
        })
        .map(|(_, p)| p.due_ms)
        .min()
}

/// Dials every peer that is due, as far as session slots allow; `true` if a due peer had to
/// wait for a slot.
fn start_due_sessions(service: &SyncService) -> bool {
    let now = now_ms();
    let due: Vec<(PeerKey, Vec<SocketAddr>)> = match service.inner.peers.lock() {
        Ok(peers) => peers
            .iter()
            .filter(|(_, p)| p.due_ms != 0 && p.due_ms <= now && !p.addrs.is_empty())
            .map(|(k, p)| (k.clone(), p.addrs.clone()))
            .collect(),
        Err(_) => return false,
    };
    for (key, addrs) in due {
        if !service.set_active(&key, true) {
            continue;
        }
        let Ok(permit) = service.inner.slots.clone().try_acquire_owned() else {
            service.set_active(&key, false);
            return true;
        };
        if let Ok(mut peers) = service.inner.peers.lock() {
            if let Some(p) = peers.get_mut(&key) {
                p.active = true;
                // Not due again until this session ends and reschedules it.
                p.due_ms = u64::MAX;
            }
        }
        let task_service = service.clone();
        let task_key = key.clone();
        let started = service.spawn_tracked(async move {
            let (service, key) = (task_service, task_key);
            let mut result = Err("没有可用地址".to_string());
            let mut used = None;
            for addr in addrs {
                result = dial(&service, addr).await;
                if result.is_ok() {
                    used = Some(addr);
                    break;
                }
            }
            service.set_active(&key, false);
            match result {
                Ok(report) => service.record(&key, &report, used).await,
                Err(e) => {
                    let now = now_ms();
                    if let Ok(mut peers) = service.inner.peers.lock() {
                        if let Some(p) = peers.get_mut(&key) {
                            p.active = false;
                            p.last_attempt_ms = Some(now);
                            p.last_error = Some(e.clone());
                            p.sessions_failed += 1;
                            p.failures = p.failures.saturating_add(1);
                            p.due_ms = now + service.backoff_ms(p.failures);
                        }
                    }
                    if let Ok(mut t) = service.inner.totals.lock() {
                        t.sessions_failed += 1;
                    }
                    service.inner.wake.notify_one();
                    tracing::info!(
                        target: "cunyun::_events::sync_dial_failed",
                        error = %e
                    );
                }
            }
            drop(permit);
            service.inner.wake.notify_one();
        });
        if !started {
            service.set_active(&key, false);
            return false;
        }
    }
    false
}
