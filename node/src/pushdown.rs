//! Push-down of content: keeps the node's blob store filled with what its `rec` documents
//! recommend.
//!
//! The **wanted set** is every item named by a `rec` document in the node's scope (a county
//! node's scope covers its villages, so it caches for them) that carries the content id of
//! its hub-signed manifest (`rec` item field `content`; items written before the hub signed
//! manifests have none and are skipped). The **planned set** is the part of it the hub's
//! per-village byte budget pushes down: items flagged `push` in at least one `rec` document in
//! scope (a county: the union of its villages' plans). [`Pushdown::run_once`] computes both,
//! records the wanted set with `mark_wanted` (so recommended items are evicted last), and
//! fetches what is missing of the planned set with [`fetch_keeping`] from the node's upstream
//! peers, in order: the configured `upstream`, the static peers, then every county or hub peer
//! the sync service has reached by an address of its own (not inbound). A missing manifest or
//! chunk on one peer, or a peer that cannot be reached, is not an error for the loop: the next
//! peer is tried and the next run retries. Room is made by evicting items outside the planned
//! set, least recently wanted first (the store's quota rule): first items no longer
//! recommended, then recommended items that were fetched on demand.
//!
//! A **county** node pre-fetches its villages' planned union first and then the rest of what its
//! villages were recommended (within its quota): its villages fetch unplanned items on demand from
//! it, usually with no other upstream in reach.
//!
//! **Delivered.** On a village node (once [`Pushdown::record_deliveries_to`] was called, as
//! `server::start` does), each run records `delivered` in the `fb` document of every household
//! whose `rec` names an item that is complete here (once per household and item while the node
//! runs; the `fb` document keeps only the first day anyway): that is the hub's "reached".
//!
//! **On demand** ([`Pushdown::fetch_on_demand`]): an item that is recommended here but not
//! planned (or not yet arrived) is fetched when a villager or cadre opens it: one background
//! fetch per item (at most [`MAX_ON_DEMAND`] at a time) from the same peers, awaited for a
//! bounded time by the request that started or joined it; it keeps the planned files.
//!
//! [`Pushdown::spawn`] runs it after every converged sync session and every
//! `interval` (default 60 s). Counts are in [`PushdownStatus`] (`/api/v1/content`) and in
//! `/metrics` (`cunyun_content_*`); each run logs `cunyun::_events::pushdown_run`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use cunyun_protocol::area::AreaScope;
use cunyun_protocol::digest::HeadsDigest;
use cunyun_protocol::key::{DocKey, Kind, Role};
use cunyun_protocol::manifest::ContentId;
use cunyun_protocol::rec::Rec;
use serde::Serialize;

use cunyun_platform::blobs::{fetch_keeping, BlobStore};
use cunyun_platform::store::DocStore;
use cunyun_platform::sync::SyncService;

/// What the push-down loop last saw.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PushdownStatus {
    /// Items wanted (recommended here and carrying a content id).
    pub wanted: usize,
    /// Of those, items the hub's byte budget plans to push here (pre-fetched).
    pub planned: usize,
    /// Of the wanted items, those complete in the blob store.
    pub complete: usize,
    /// Of the planned items, those complete in the blob store.
    pub planned_complete: usize,
    /// Bytes of the planned items' files (as far as their manifests are known).
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
    /// Last problem (Chinese), if the last run left anything planned missing.
    pub last_error: Option<String>,
}

/// Most on-demand fetches running at once.
pub const MAX_ON_DEMAND: usize = 4;

/// Whether an on-demand fetch has ended (`true`) or is running (`false`).
type Done = tokio::sync::watch::Receiver<bool>;

/// The push-down loop's state (see the module documentation).
pub struct Pushdown {
    store: DocStore,
    scope: AreaScope,
    blobs: BlobStore,
    sync: SyncService,
    peers: Vec<SocketAddr>,
    items: Mutex<BTreeMap<String, ContentId>>,
    planned: Mutex<Vec<ContentId>>,
    on_demand: Mutex<HashMap<ContentId, Done>>,
    records: Mutex<Option<Arc<crate::records::Records>>>,
    delivered: Mutex<HashSet<(DocKey, String)>>,
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
            planned: Mutex::new(Vec::new()),
            on_demand: Mutex::new(HashMap::new()),
            records: Mutex::new(None),
            delivered: Mutex::new(HashSet::new()),
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

    /// Makes each run record deliveries (see the module doc) through `records`; only a
    /// village node records them (a file at the county has not reached the village).
    pub fn record_deliveries_to(&self, records: Arc<crate::records::Records>) {
        if let Ok(mut a) = self.records.lock() {
            *a = Some(records);
        }
    }

    async fn record_deliveries(&self) {
        if self.sync.identity().role != Role::Village {
            return;
        }
        let Some(records) = self.records.lock().ok().and_then(|r| r.clone()) else {
            return;
        };
        let Some(day) = cunyun_platform::clock::today_cst() else {
            return;
        };
        let todo: Vec<(DocKey, String)> = {
            let recs = self.recs.lock().unwrap_or_else(PoisonError::into_inner);
            let done = self
                .delivered
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            recs.iter()
                .flat_map(|(key, (_, items))| {
                    items
                        .iter()
                        .filter(|(_, cid, _)| self.blobs.is_complete(cid))
                        .map(move |(item, _, _)| (key.clone(), item.clone()))
                })
                .filter(|k| !done.contains(k))
                .collect()
        };
        for (key, item) in todo {
            match records
                .record_feedback(key.id(), &item, crate::feedback::Event::Delivered, day)
                .await
            {
                Ok(_) | Err(crate::records::RecordError::NotFound(_)) => {
                    if let Ok(mut d) = self.delivered.lock() {
                        d.insert((key, item));
                    }
                }
                Err(e) => {
                    tracing::warn!(key = %key, item, error = %e, "delivery not recorded; next run retries");
                }
            }
        }
    }

    /// Whether the hub's plan pushes the item with this content id here (as of the last run).
    pub fn is_planned(&self, id: &ContentId) -> bool {
        self.planned
            .lock()
            .map(|p| p.binary_search(id).is_ok())
            .unwrap_or(false)
    }

    /// Fetches a recommended item now (see the module doc), waiting at most `wait` for it;
    /// returns whether it is complete here. An item not recommended here is never fetched; an
    /// item already being fetched is waited for, not fetched twice; beyond [`MAX_ON_DEMAND`]
    /// running fetches nothing new is started.
    pub async fn fetch_on_demand(self: &Arc<Self>, id: ContentId, wait: Duration) -> bool {
        if self.blobs.is_complete(&id) {
            return true;
        }
        let known = self
            .items
            .lock()
            .map(|m| m.values().any(|c| *c == id))
            .unwrap_or(false);
        if !known {
            return false;
        }
        let mut done = {
            let Ok(mut running) = self.on_demand.lock() else {
                return false;
            };
            running.retain(|_, rx| !*rx.borrow());
            match running.get(&id) {
                Some(rx) => rx.clone(),
                None if running.len() >= MAX_ON_DEMAND => return false,
                None => {
                    let (tx, rx) = tokio::sync::watch::channel(false);
                    running.insert(id, rx.clone());
                    let me = Arc::clone(self);
                    tokio::spawn(async move {
                        me.fetch_one(id).await;
                        let _ = tx.send(true);
                    });
                    rx
                }
            }
        };
        let _ = tokio::time::timeout(wait, done.wait_for(|d| *d)).await;
        self.blobs.is_complete(&id)
    }

    async fn fetch_one(&self, id: ContentId) {
        let mut keep = self.planned.lock().map(|p| p.clone()).unwrap_or_default();
        keep.push(id);
        for peer in self.candidates() {
            if self.blobs.is_complete(&id) {
                break;
            }
            match fetch_keeping(self.sync.tls(), peer, &self.blobs, &[id], &keep).await {
                Ok(r) => tracing::debug!(%peer, content = %id, complete = r.complete.len(),
                    failed = r.failed.len(), bytes_in = r.bytes_in, "on-demand fetch"),
                Err(e) => {
                    tracing::debug!(%peer, content = %id, error = %e, "on-demand fetch failed; next peer");
                }
            }
        }
        tracing::info!(
            target: "cunyun::_events::content_on_demand",
            content = %id,
            complete = self.blobs.is_complete(&id)
        );
    }

    /// One pass: compute the wanted and planned sets and fetch what is missing of the planned
    /// set (see the module doc).
    pub async fn run_once(&self) -> PushdownStatus {
        let _guard = self.run_lock.lock().await;
        let (items, planned) = {
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
        let planned: Vec<ContentId> = planned.into_iter().collect();
        if let Ok(mut m) = self.items.lock() {
            *m = items;
        }
        if let Ok(mut p) = self.planned.lock() {
            p.clone_from(&planned);
        }
        let mut last_error = None;
        if let Err(e) = self
            .blobs
            .mark_wanted(&wanted, cunyun_platform::clock::now_ms())
        {
            last_error = Some(e.to_string());
        }
        let mut fetch = planned.clone();
        if self.sync.identity().role == Role::County {
            fetch.extend(wanted.iter().filter(|c| planned.binary_search(c).is_err()));
        }
        let mut fetched = 0usize;
        for peer in self.candidates() {
            let missing = fetch.iter().any(|c| !self.blobs.is_complete(c));
            if !missing {
                break;
            }
            match fetch_keeping(self.sync.tls(), peer, &self.blobs, &fetch, &planned).await {
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
        self.record_deliveries().await;
        let mut st = PushdownStatus {
            wanted: wanted.len(),
            planned: planned.len(),
            quota_bytes: self.blobs.quota_bytes(),
            store_bytes: self.blobs.usage_bytes(),
            ..PushdownStatus::default()
        };
        for c in &wanted {
            if self.blobs.is_complete(c) {
                st.complete += 1;
            }
        }
        for c in &planned {
            if self.blobs.is_complete(c) {
                st.planned_complete += 1;
            }
            if let Some(m) = self.blobs.manifest(c) {
                st.wanted_bytes += m.total_bytes();
                st.missing_bytes += self.blobs.missing_bytes(&m);
            }
        }
        if st.planned_complete == st.planned {
            last_error = None;
        }
        st.last_error = last_error;
        st.last_run_ms = Some(cunyun_platform::clock::now_ms());
        if let Ok(mut s) = self.status.lock() {
            st.runs = s.runs + 1;
            *s = st.clone();
        }
        tracing::info!(
            target: "cunyun::_events::pushdown_run",
            wanted = st.wanted,
            planned = st.planned,
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

/// The content items of one `rec` document (item id, content id, planned), as of the heads
/// digest they were read at.
type RecCache = BTreeMap<DocKey, (HeadsDigest, Vec<(String, ContentId, bool)>)>;

/// Item id → content id of every `rec` item in scope that carries one, and the content ids
/// flagged `push` in at least one of them. Only `rec` documents whose heads digest changed
/// since the previous run are loaded again (`cache`).
fn scan(
    store: &DocStore,
    scope: &AreaScope,
    cache: &Mutex<RecCache>,
) -> (BTreeMap<String, ContentId>, BTreeSet<ContentId>) {
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
                    .filter_map(|(id, item)| Some((id, item.content?.parse().ok()?, item.push)))
                    .collect();
                seen.insert(key, (index.digest, items));
            }
            Err(e) => tracing::warn!(key = %key, error = %e, "rec document unreadable"),
        }
    }
    *cache = seen;
    let mut items = BTreeMap::new();
    let mut planned = BTreeSet::new();
    for (id, cid, push) in cache.values().flat_map(|(_, items)| items.iter()) {
        items.insert(id.clone(), *cid);
        if *push {
            planned.insert(*cid);
        }
    }
    (items, planned)
}
