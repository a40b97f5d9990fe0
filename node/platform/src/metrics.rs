//! Prometheus metrics for `/metrics`: HTTP traffic, record writes, sync, automerge-repo clients
//! and the store's own counters.
//!
//! Counters that the store already keeps (commits, fsyncs, corrupt documents, size on disk) are
//! read from [`crate::store::DocStore::stats`] at scrape time rather than counted twice.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::store::{DocStore, StoreStats};

/// Labels of one HTTP request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// HTTP method.
    pub method: String,
    /// The matched route, e.g. `/api/v1/households/{id}` (never the raw path).
    pub route: String,
    /// Status code.
    pub status: u16,
}

/// Labels of a record write.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    /// Document kind written, e.g. `hh`.
    pub kind: String,
    /// `create` or `update`.
    pub op: String,
}

/// Labels of a sync session.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `ok` or `failed`.
    pub outcome: String,
}

/// Labels of sync traffic.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabels {
    /// `in` or `out`.
    pub direction: String,
}

/// Every metric the node exports.
pub struct Metrics {
    registry: Registry,
    /// HTTP requests served.
    pub http_requests: Family<HttpLabels, Counter>,
    /// HTTP request latency in seconds.
    pub http_latency: Histogram,
    /// Records created or updated through the API.
    pub record_writes: Family<WriteLabels, Counter>,
    /// Requests refused because the input was invalid (422).
    pub invalid_inputs: Counter,
    /// Sync sessions by outcome (`ok`, `failed`).
    pub sync_sessions: Family<OutcomeLabels, Counter>,
    /// Documents changed here by sync.
    pub sync_docs_received: Counter,
    /// Documents refused in sync sessions.
    pub sync_refused: Counter,
    /// Sync bytes by direction (`in`, `out`).
    pub sync_bytes: Family<DirectionLabels, Counter>,
    /// Open automerge-repo (`/automerge`) connections.
    pub amrepo_connections: Gauge,
    /// Documents changed by automerge-repo clients and stored.
    pub amrepo_changes: Counter,
    /// Changes from automerge-repo clients refused (invalid, read-only, unreadable).
    pub amrepo_refused: Counter,
    /// `doc-unavailable` answers (unknown documents and those the share policy hides).
    pub amrepo_unavailable: Counter,
    store_documents: Gauge,
    store_chunks: Gauge,
    store_commits: Gauge<u64, AtomicU64>,
    store_fsyncs: Gauge<u64, AtomicU64>,
    store_quarantined: Gauge,
    store_disk_bytes: Gauge<u64, AtomicU64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("cunyun");
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests served",
            http_requests.clone(),
        );
        let http_latency = Histogram::new(exponential_buckets(0.0005, 2.0, 14));
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency",
            http_latency.clone(),
        );
        let record_writes = Family::<WriteLabels, Counter>::default();
        registry.register(
            "record_writes",
            "Records created or updated through the API",
            record_writes.clone(),
        );
        let invalid_inputs = Counter::default();
        registry.register(
            "invalid_inputs",
            "Requests refused with 422 because a field was invalid",
            invalid_inputs.clone(),
        );
        let sync_sessions = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "sync_sessions",
            "Sync sessions by outcome",
            sync_sessions.clone(),
        );
        let sync_docs_received = Counter::default();
        registry.register(
            "sync_docs_received",
            "Documents changed here by sync",
            sync_docs_received.clone(),
        );
        let sync_refused = Counter::default();
        registry.register(
            "sync_refused",
            "Documents refused in sync sessions (out of scope or reach)",
            sync_refused.clone(),
        );
        let sync_bytes = Family::<DirectionLabels, Counter>::default();
        registry.register("sync_bytes", "Sync bytes by direction", sync_bytes.clone());
        let amrepo_connections = Gauge::default();
        registry.register(
            "amrepo_connections",
            "Open automerge-repo WebSocket connections",
            amrepo_connections.clone(),
        );
        let amrepo_changes = Counter::default();
        registry.register(
            "amrepo_changes",
            "Documents changed by automerge-repo clients and stored",
            amrepo_changes.clone(),
        );
        let amrepo_refused = Counter::default();
        registry.register(
            "amrepo_refused",
            "Changes from automerge-repo clients refused (invalid or not allowed)",
            amrepo_refused.clone(),
        );
        let amrepo_unavailable = Counter::default();
        registry.register(
            "amrepo_unavailable",
            "doc-unavailable answers to automerge-repo clients",
            amrepo_unavailable.clone(),
        );
        let store_documents = Gauge::default();
        registry.register(
            "store_documents",
            "Documents in the store",
            store_documents.clone(),
        );
        let store_chunks = Gauge::default();
        registry.register(
            "store_chunks",
            "Stored chunks (snapshots and incremental changes)",
            store_chunks.clone(),
        );
        let store_commits = Gauge::<u64, AtomicU64>::default();
        registry.register(
            "store_commits",
            "Durable commits acknowledged since start",
            store_commits.clone(),
        );
        let store_fsyncs = Gauge::<u64, AtomicU64>::default();
        registry.register(
            "store_fsyncs",
            "Flushes to disk since start (group commit shares one between commits)",
            store_fsyncs.clone(),
        );
        let store_quarantined = Gauge::default();
        registry.register(
            "store_quarantined_documents",
            "Documents found corrupt and isolated",
            store_quarantined.clone(),
        );
        let store_disk_bytes = Gauge::<u64, AtomicU64>::default();
        registry.register(
            "store_disk_bytes",
            "Size of the store on disk",
            store_disk_bytes.clone(),
        );
        Metrics {
            registry,
            http_requests,
            http_latency,
            record_writes,
            invalid_inputs,
            sync_sessions,
            sync_docs_received,
            sync_refused,
            sync_bytes,
            amrepo_connections,
            amrepo_changes,
            amrepo_refused,
            amrepo_unavailable,
            store_documents,
            store_chunks,
            store_commits,
            store_fsyncs,
            store_quarantined,
            store_disk_bytes,
        }
    }

    /// Counts a finished sync session.
    pub fn record_sync(&self, report: &crate::sync::runner::SessionReport) {
        let outcome = if report.outcome.is_ok() {
            "ok"
        } else {
            "failed"
        };
        self.sync_sessions
            .get_or_create(&OutcomeLabels {
                outcome: outcome.into(),
            })
            .inc();
        self.sync_docs_received.inc_by(report.docs_applied as u64);
        self.sync_refused.inc_by(report.refused as u64);
        for (direction, n) in [("in", report.bytes_in), ("out", report.bytes_out)] {
            self.sync_bytes
                .get_or_create(&DirectionLabels {
                    direction: direction.into(),
                })
                .inc_by(n);
        }
    }

    /// Renders every metric in the Prometheus text format, reading the store's counters first.
    pub fn render(&self, store: &DocStore) -> String {
        self.render_with(&store.stats())
    }

    /// [`Metrics::render`] with store figures from elsewhere (the hub's stores).
    pub fn render_with(&self, s: &StoreStats) -> String {
        self.store_documents.set(s.documents as i64);
        self.store_chunks.set(s.chunks as i64);
        self.store_commits.set(s.commits);
        self.store_fsyncs.set(s.fsyncs);
        self.store_quarantined.set(s.quarantined as i64);
        self.store_disk_bytes.set(s.disk_bytes);
        let mut out = String::new();
        if let Err(e) = encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        out
    }
}
