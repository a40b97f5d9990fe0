//! Push-down of content: keeps the node's blob store filled with what its `rec` documents
//! recommend.
//!
//! The **wanted set** is every item named by a `rec` document in the node's scope (a county
//! node's scope covers its villages, so it caches for them) that carries the content id of
//! its hub-signed manifest (`rec` item field `content`; items written before the hub signed
//! manifests have none and are skipped). [`Pushdown::run_once`] computes it, records it with
//! `mark_wanted`, and fetches what is missing with [`fetch_wanted`] from the node's upstream
//! peers, in order: the configured `upstream`, the static peers, then every county or hub peer
//! the sync service has reached by an address of its own (not inbound). A missing manifest or
//! chunk on one peer, or a peer that cannot be reached, is not an error for the loop: the next
//! peer is tried and the next run retries. Room is made by evicting items no longer wanted,
//! least recently wanted first (the store's quota rule).
//!
//! [`Pushdown::spawn`] runs it after every converged sync session and every
//! `interval` (default 60 s). Counts are in [`PushdownStatus`] (`/api/v1/content`) and in
//! `/metrics` (`cunyun_content_*`); each run logs `cunyun::_events::pushdown_run`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use cunyun_protocol::area::AreaScope;
use cunyun_protocol::digest::HeadsDigest;
use cunyun_protocol::key::{DocKey, Kind, Role};
use cunyun_protocol::manifest::ContentId;
use cunyun_protocol::rec::Rec;
use serde::Serialize;

use crate::blobs::{fetch_wanted, BlobStore};
use crate::store::DocStore;
use crate::sync::SyncService;

/// What the push-down loop last saw.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PushdownStatus {
    /// Items wanted (recommended here and carrying a content id).
    pub wanted: usize,
    /// Of those, items complete in the blob store.
    pub complete: usize,
    /// Bytes of the wanted items' files.
    pub wanted_bytes: u64,
    /// Bytes of those still missing.
    pub missing_bytes: u64,
    /// Bytes of chunks held.
    pub store_bytes: u64,
    /// The store's quota, bytes.
    pub quota_bytes: u64,
    /// Runs so far.
    pub runs: u64,
    /// Last run, ms since the epoch.
    pub last_run_ms: Option<u64>,
    /// Last problem (Chinese), if the last run left anything missing.
    pub last_error: Option<String>,
}

/// The push-down loop's state (see the module documentation).
pub struct Pushdown {
    store: DocStore,
    scope: AreaScope,
    blobs: BlobStore,
    sync: SyncService,
    peers: Vec<SocketAddr>,
    items: Mutex<BTreeMap<String, ContentId>>,
    recs: Arc<Mutex<RecCache>>,
    status: Mutex<PushdownStatus>,
    run_lock: tokio::sync::Mutex<()>,
    task: Mutex<Option<tokio::task::AbortHandle>>,
}

impl Pushdown {
    /// A loop for the node with this store and scope, fetching into `blobs` through `sync`'s
    /// TLS identity from `peers` (configured upstream and static peers, in order) and the
    /// county/hub peers sync has reached.
    pub fn new(
        store: DocStore,
        scope: AreaScope,
        blobs: BlobStore,
        sync: SyncService,
        peers: Vec<SocketAddr>,
    ) -> Pushdown {
        Pushdown {
            store,
            scope,
            blobs,
            sync,
            peers,
            items: Mutex::new(BTreeMap::new()),
            recs: Arc::default(),
            status: Mutex::new(PushdownStatus::default()),
            run_lock: tokio::sync::Mutex::new(()),
            task: Mutex::new(None),
        }
    }

    /// The blob store.
    pub fn blobs(&self) -> &BlobStore {
        &self.blobs
    }

    /// The last status.
    pub fn status(&self) -> PushdownStatus {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// The content id a `rec` item id names, as of the last run (no scan here: the public
    /// routes call this, and a scan per unknown id would let anyone make the node scan).
    pub fn content_of(&self, item_id: &str) -> Option<ContentId> {
        self.items.lock().ok()?.get(item_id).copied()
    }

    fn candidates(&self) -> Vec<SocketAddr> {
        let mut out = self.peers.clone();
        for p in self.sync.status().peers {
            if p.source == "inbound" || !matches!(p.role, Some(Role::County | Role::Hub)) {
                continue;
            }
            for a in p.addrs {
                if !out.contains(&a) {
                    out.push(a);
                }
            }
        }
        out
    }

    /// One pass: compute the wanted set and fetch what is missing (see the module doc).
    pub async fn run_once(&self) -> PushdownStatus {
        let _guard = self.run_lock.lock().await;
        let items = {
            let me = (self.store.clone(), self.scope, Arc::clone(&self.recs));
            tokio::task::spawn_blocking(move || scan(&me.0, &me.1, &me.2))
                .await
                .unwrap_or_default()
        };
        let wanted: Vec<ContentId> = {
            let mut w: Vec<ContentId> = items.values().copied().collect();
            w.sort();
            w.dedup();
            w
        };
        if let Ok(mut m) = self.items.lock() {
            *m = items;
        }
        let mut last_error = None;
        if let Err(e) = self.blobs.mark_wanted(&wanted, crate::records::now_ms()) {
            last_error = Some(e.to_string());
        }
        let mut fetched = 0usize;
        for peer in self.candidates() {
            let missing: Vec<ContentId> = wanted
                .iter()
                .filter(|c| !self.blobs.is_complete(c))
                .copied()
                .collect();
            if missing.is_empty() {
                break;
            }
            match fetch_wanted(self.sync.tls(), peer, &self.blobs, &wanted).await {
                Ok(r) => {
                    fetched += r.complete.len();
                    if let Some((id, why)) = r.failed.first() {
                        last_error = Some(format!("{peer}：{id}：{why}"));
                    }
                    tracing::debug!(%peer, complete = r.complete.len(), failed = r.failed.len(),
                        evicted = r.evicted.len(), bytes_in = r.bytes_in, "pushdown fetch");
                }
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "pushdown fetch failed; next peer");
                    last_error = Some(format!("{peer}：{e}"));
                }
            }
        }
        let mut st = PushdownStatus {
            wanted: wanted.len(),
            quota_bytes: self.blobs.quota_bytes(),
            store_bytes: self.blobs.usage_bytes(),
            ..PushdownStatus::default()
        };
        for c in &wanted {
            if self.blobs.is_complete(c) {
                st.complete += 1;
            }
            if let Some(m) = self.blobs.manifest(c) {
                st.wanted_bytes += m.total_bytes();
                st.missing_bytes += self.blobs.missing_bytes(&m);
            }
        }
        if st.complete == st.wanted {
            last_error = None;
        }
        st.last_error = last_error;
        st.last_run_ms = Some(crate::records::now_ms());
        if let Ok(mut s) = self.status.lock() {
            st.runs = s.runs + 1;
            *s = st.clone();
        }
        tracing::info!(
            target: "cunyun::_events::pushdown_run",
            wanted = st.wanted,
            complete = st.complete,
            fetched,
            missing_bytes = st.missing_bytes,
            store_bytes = st.store_bytes,
            error = st.last_error.as_deref().unwrap_or("")
        );
        st
    }

    /// Stops the loop started by [`Pushdown::spawn`].
    pub fn stop(&self) {
        if let Some(t) = self.task.lock().ok().and_then(|mut t| t.take()) {
            t.abort();
        }
    }

    /// Runs [`Pushdown::run_once`] after each converged sync session that changed documents
    /// here, and every `interval`, until [`Pushdown::stop`].
    pub fn spawn(self: Arc<Self>, interval: Duration) {
        let mut feed = self.sync.subscribe();
        let me = self.clone();
        let handle = tokio::spawn(async move {
            let p = me;
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    r = feed.recv() => match r {
                        Ok(report) if report.outcome.is_ok() && report.docs_applied > 0 => {}
                        Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                    },
                }
                p.run_once().await;
            }
        });
        if let Ok(mut t) = self.task.lock() {
            *t = Some(handle.abort_handle());
        }
    }
}

/// The content items of one `rec` document, as of the heads digest they were read at.
type RecCache = BTreeMap<DocKey, (HeadsDigest, Vec<(String, ContentId)>)>;

/// Item id → content id of every `rec` item in scope that carries one. Only `rec` documents
/// whose heads digest changed since the previous run are loaded again (`cache`).
fn scan(
    store: &DocStore,
    scope: &AreaScope,
    cache: &Mutex<RecCache>,
) -> BTreeMap<String, ContentId> {
    let mut cache = cache.lock().unwrap_or_else(PoisonError::into_inner);
    let mut seen = RecCache::new();
    for entry in store.scan(scope) {
        let Ok((key, index)) = entry else { continue };
        if key.kind() != Kind::Rec {
            continue;
        }
        if let Some(hit) = cache.remove(&key).filter(|(d, _)| *d == index.digest) {
            seen.insert(key, hit);
            continue;
        }
        let Ok(Some(doc)) = store.load(&key) else {
            continue;
        };
        match Rec::read_from(&doc) {
            Ok(rec) => {
                let items = rec
                    .items
                    .into_iter()
                    .filter_map(|(id, item)| Some((id, item.content?.parse().ok()?)))
                    .collect();
                seen.insert(key, (index.digest, items));
            }
            Err(e) => tracing::warn!(key = %key, error = %e, "rec document unreadable"),
        }
    }
    *cache = seen;
    cache
        .values()
        .flat_map(|(_, items)| items.iter().cloned())
        .collect()
}
