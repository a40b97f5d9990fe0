//! Starting, seeding and stopping a node: opens the store, builds the API and serves it until
//! asked to stop. The binary, the integration tests and the examples all start nodes here.

use std::net::SocketAddr;
use std::sync::Arc;

use cunyun_protocol::area::AreaCode;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::api::app;
use crate::config::NodeConfig;
use crate::records::{RecordError, Records};
use crate::state::AppState;
use cunyun_platform::metrics::Metrics;
use cunyun_platform::store::{DocStore, StoreError};

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The data directory could not be created.
    #[error("无法创建数据目录 {path}: {source}")]
    DataDir {
        /// The directory.
        path: std::path::PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The store could not be opened.
    #[error("无法打开文档库: {0}")]
    Store(#[from] StoreError),
    /// The account files could not be opened.
    #[error(transparent)]
    Accounts(#[from] cunyun_platform::accounts::AccountError),
    /// Sync could not start.
    #[error(transparent)]
    Sync(#[from] cunyun_platform::sync::service::SyncStartError),
    /// The content blob store could not be opened (or a trusted hub key is malformed).
    #[error("无法打开内容缓存: {0}")]
    Blobs(#[from] cunyun_platform::blobs::BlobError),
    /// The web app's HTTPS certificate could not be prepared.
    #[error(transparent)]
    WebTls(#[from] cunyun_platform::certs::webtls::WebTlsError),
    /// The listen address could not be bound.
    #[error("无法监听 {addr}: {source}（端口可能已被占用）")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// What went wrong.
        source: std::io::Error,
    },
}

/// A node serving HTTP in the background.
pub struct RunningNode {
    /// The address it actually listens on (useful with port 0).
    pub addr: SocketAddr,
    /// The address of the web app's HTTPS listener, when `[web_tls]` is enabled.
    pub https_addr: Option<SocketAddr>,
    /// Shared state, for tests that look inside.
    pub state: Arc<AppState>,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl RunningNode {
    /// The base URL, e.g. `http://127.0.0.1:8080`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The HTTPS base URL of the web app, e.g. `https://127.0.0.1:8443`, when enabled.
    pub fn https_url(&self) -> Option<String> {
        self.https_addr.map(|a| format!("https://{a}"))
    }

    /// Stops serving, waits for in-flight requests, and returns once the server task ended.
    pub async fn stop(mut self) -> std::io::Result<()> {
        if let Some(sync) = &self.state.sync {
            sync.stop().await;
        }
        if let Some(p) = &self.state.pushdown {
            p.stop();
        }
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match self.task.await {
            Ok(r) => r,
            Err(e) => Err(std::io::Error::other(e)),
        }
    }

    /// Serves until the server task ends (e.g. on a signal handled by the caller).
    pub async fn wait(self) -> std::io::Result<()> {
        match self.task.await {
            Ok(r) => r,
            Err(e) => Err(std::io::Error::other(e)),
        }
    }
}

/// Opens the node's store (creating the data directory if needed).
pub fn open_store(config: &NodeConfig) -> Result<DocStore, StartError> {
    std::fs::create_dir_all(&config.data_dir).map_err(|source| StartError::DataDir {
        path: config.data_dir.clone(),
        source,
    })?;
    Ok(DocStore::open(
        &config.data_dir.join("store"),
        config.store.clone(),
    )?)
}

/// Opens the store and starts serving. `shutdown_signal` additionally stops the server when it
/// completes (the binary passes Ctrl-C/SIGTERM; tests pass `std::future::pending()`).
pub async fn start(
    config: &NodeConfig,
    shutdown_signal: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<RunningNode, StartError> {
    let store = open_store(config)?;
    start_with_store(config, store, shutdown_signal).await
}

/// Starts serving over an already open store. Nobody has an account yet: every
/// automerge-repo connection is anonymous (see [`start_with_principals`]).
pub async fn start_with_store(
    config: &NodeConfig,
    store: DocStore,
    shutdown_signal: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<RunningNode, StartError> {
    start_with_principals(
        config,
        store,
        Arc::new(crate::automerge_repo::policy::NoAccounts),
        shutdown_signal,
    )
    .await
}

/// Starts serving over an already open store, taking the principal of each automerge-repo
/// connection (`/automerge`) from `principals`.
pub async fn start_with_principals(
    config: &NodeConfig,
    store: DocStore,
    principals: Arc<dyn crate::automerge_repo::policy::PrincipalResolver>,
    shutdown_signal: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<RunningNode, StartError> {
    let sync = if config.sync.enabled {
        let host = Arc::new(cunyun_platform::host::NodeHost::new(
            store.clone(),
            &config.data_dir,
        ));
        let service =
            cunyun_platform::sync::SyncService::start(config.sync.clone(), host, &config.data_dir)
                .await?;
        let blobs = open_blobs(config)?;
        service.set_blob_store(blobs.clone());
        let metrics_feed = service.subscribe();
        let mut peers: Vec<std::net::SocketAddr> = config.sync.upstream.into_iter().collect();
        peers.extend(config.sync.static_peers.iter().copied());
        let pushdown = Arc::new(crate::pushdown::Pushdown::new(
            store.clone(),
            config.scope,
            blobs,
            service.clone(),
            peers,
        ));
        pushdown.clone().spawn(std::time::Duration::from_secs(
            config.content.pushdown_interval_s.max(1),
        ));
        Some((service, metrics_feed, pushdown))
    } else {
        None
    };
    let (sync, metrics_feed, pushdown) = match sync {
        Some((s, f, p)) => (Some(s), Some(f), Some(p)),
        None => (None, None, None),
    };
    let automerge_repo =
        crate::automerge_repo::endpoint::Endpoint::new(store.clone(), config.scope, principals);
    let state = Arc::new(AppState {
        automerge_repo,
        records: Arc::new(Records::new(store, config.scope)),
        metrics: Metrics::new(),
        accounts: cunyun_platform::accounts::Accounts::open(&config.data_dir)?,
        node_name: config.node_name.clone(),
        sync,
        pushdown,
        limits: Arc::new(crate::limits::RouteLimits::new(config.limits)),
    });
    if let Some(p) = &state.pushdown {
        p.record_deliveries_to(state.records.clone());
    }
    if let Some(mut feed) = metrics_feed {
        // A weak reference: the feed's sender lives in the sync service inside the state, so a
        // strong one would keep the state (and the store) alive after the node stopped.
        let state = Arc::downgrade(&state);
        tokio::spawn(async move {
            loop {
                match feed.recv().await {
                    Ok(report) => match state.upgrade() {
                        Some(state) => state.metrics.record_sync(&report),
                        None => break,
                    },
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                }
            }
        });
    }
    let bind = |addr: SocketAddr| async move {
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind { addr, source })?;
        let local = l
            .local_addr()
            .map_err(|source| StartError::Bind { addr, source })?;
        Ok::<_, StartError>((l, local))
    };
    let (listener, addr) = bind(config.listen).await?;
    let (tx, rx) = oneshot::channel::<()>();
    // One stop signal for both listeners.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        tokio::select! {
            _ = rx => {}
            _ = shutdown_signal => {}
        }
        let _ = stop_tx.send(true);
    });
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|v| *v).await;
        }
    };
    crate::backup::socket::spawn(Arc::downgrade(&state), &config.data_dir, stopped());
    let mut router = app(state.clone(), config.max_body_bytes);
    let mut https = None;
    if config.web_tls.enabled {
        let files = cunyun_platform::certs::webtls::prepare(&config.web_tls, &config.data_dir)?;
        let tls = cunyun_platform::certs::webtls::server_config(&files)?;
        let (tcp, https_addr) = bind(config.web_tls.listen).await?;
        let tcp = cunyun_platform::ratelimit::LimitedListener::new(
            tcp,
            cunyun_platform::ratelimit::AddrLimiter::new("https", config.http_per_address),
        );
        let tls_listener =
            cunyun_platform::certs::webtls::TlsListener::new(tcp, tls).map_err(|source| {
                StartError::Bind {
                    addr: config.web_tls.listen,
                    source,
                }
            })?;
        let ca =
            cunyun_platform::certs::webtls::CaDownload::load(&files.ca_cert, https_addr.port());
        let https_router = app(state.clone(), config.max_body_bytes)
            .merge(cunyun_platform::certs::webtls::ca_routes(ca.clone()))
            .layer(axum::Extension(
                cunyun_platform::certs::webtls::PlainHttpPort(addr.port()),
            ));
        router = router
            .merge(cunyun_platform::certs::webtls::ca_routes(ca))
            .layer(axum::middleware::from_fn_with_state(
                https_addr.port(),
                cunyun_platform::certs::webtls::http_gate,
            ));
        let stop = stopped();
        https = Some((
            https_addr,
            tokio::spawn(async move {
                axum::serve(tls_listener, https_router)
                    .with_graceful_shutdown(stop)
                    .await
            }),
        ));
        tracing::info!(target: "cunyun::_events::web_tls_started", addr = %https_addr);
    }
    let https_addr = https.as_ref().map(|(a, _)| *a);
    let stop = stopped();
    let listener = cunyun_platform::ratelimit::LimitedListener::new(
        listener,
        cunyun_platform::ratelimit::AddrLimiter::new("http", config.http_per_address),
    );
    let task = tokio::spawn(async move {
        let plain = axum::serve(listener, router)
            .with_graceful_shutdown(stop)
            .await;
        if let Some((_, t)) = https {
            match t.await {
                Ok(r) => r?,
                Err(e) => return Err(std::io::Error::other(e)),
            }
        }
        plain
    });
    tracing::info!(target: "cunyun::_events::node_started", %addr, scope = %config.scope);
    Ok(RunningNode {
        addr,
        https_addr,
        state,
        shutdown: Some(tx),
        task,
    })
}

/// Opens the content blob store of `config` (checking every chunk; see [`cunyun_platform::blobs`]).
pub fn open_blobs(
    config: &NodeConfig,
) -> Result<cunyun_platform::blobs::BlobStore, cunyun_platform::blobs::BlobError> {
    let trusted =
        cunyun_protocol::manifest::TrustedKeys::from_hex(&config.content.trusted_hub_keys)?;
    let dir = config
        .content
        .dir
        .clone()
        .unwrap_or_else(|| config.data_dir.join("blobs"));
    let quota = config.content.quota_mb.saturating_mul(1 << 20);
    let (store, report) = cunyun_platform::blobs::BlobStore::open(&dir, quota, trusted)?;
    tracing::info!(
        target: "cunyun::_events::blobs_opened",
        dir = %dir.display(),
        chunks = report.chunks_checked,
        dropped = report.chunks_dropped + report.manifests_dropped
    );
    Ok(store)
}

/// Records `households` generated sample households of `village` through the same path as the
/// API (validation, authorship, durable commit), reporting progress through `progress(done, total)`.
pub async fn seed_sample_village(
    records: &Records,
    author: &str,
    village: AreaCode,
    households: usize,
    seed: u64,
    mut progress: impl FnMut(usize, usize),
) -> Result<usize, RecordError> {
    let sample = crate::sample::sample_village(village, households, seed);
    let total = sample.len();
    let mut done = 0;
    // Commit in concurrent batches so group commit shares fsyncs.
    for batch in sample.chunks(32) {
        let futures = batch.iter().map(|h| {
            let body = serde_json::json!({ "profile": h.profile, "private": h.private });
            async move { records.create_household(author, &body).await }
        });
        for r in futures::future::join_all(futures).await {
            r?;
            done += 1;
        }
        progress(done, total);
    }
    let needs = crate::sample::sample_needs(village, 5, seed);
    for n in needs {
        let body = serde_json::to_value(&n)
            .map_err(|e| RecordError::BadRequest(format!("示例需求序列化失败: {e}")))?;
        records.create_need(author, &body).await?;
    }
    Ok(done)
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM: what the binaries pass as the `shutdown` future.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
