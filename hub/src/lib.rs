//! cunyun-hub: the provincial hub.
//!
//! A hub-role peer of the sync engine whose scope is the province: villages and counties sync
//! their `hh`, `need` and `fb` documents up to it; it refuses `hp` (the sync scope of a hub-role
//! peer excludes them, and the session logs every refusal under `cunyun::_events::sync_refused`).
//! It keeps a content library, matches households to content and writes `rec` documents into its
//! store, which sync down to each household's village.
//!
//! - [`config`]: the hub's configuration, [`HubConfig`](config::HubConfig).
//! - [`files`]: content files in the node's chunked blob store, and the hub's content signing
//!   key that signs one manifest per item ([`HubFiles`](files::HubFiles)); the sync listener
//!   serves the store to nodes (ALPN `cunyun-blob/1`).
//! - [`library`]: the content library (operator items: metadata + files), durable.
//! - [`coverage`]: coverage per area (households recorded, with recommendations, demand by tag).
//! - [`matcher`]: incremental matching state (who is dirty, weekly caps, seen items).
//! - [`engine`]: matching rounds from the store and library to `rec` documents.
//! - [`experts`]: the expert registry (add, edit, remove) over `expert` documents.
//! - [`needs`]: local needs with their suggested experts, and the operator's status changes.
//! - [`operator`]: who is acting (the Automerge author of operator writes).
//! - [`manage_api`]: the JSON API behind the console's forms (content upload and edit,
//!   experts, needs).
//! - [`console`]: the zh-CN operator console (coverage, content, experts, needs, nodes).
//! - [`router`]: every HTTP route: the operator API (`/api/v1/content`, `/api/v1/experts`,
//!   `/api/v1/needs`, `/api/v1/match`, `/api/v1/coverage`, `/healthz`, `/metrics`) and the
//!   console.
//!
//! - [`store`]: the storage seam for documents and their change feed ([`store::HubStore`]), on
//!   sled or PostgreSQL (`[store] backend`): the engine, experts, needs, the console and the
//!   operator API read and write documents only through it.
//! - [`auth`]: logins (hub operators and admins), the guard on every route but `/healthz` and
//!   `/metrics`, the admin pages.
//!
//! It deliberately exposes no household write API: the hub must never hold `hp` documents.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod auth;
pub mod config;
pub mod console;
pub mod coverage;
pub mod engine;
pub mod experts;
pub mod files;
pub mod library;
pub mod manage_api;
pub mod matcher;
pub mod needs;
pub mod operator;
pub mod store;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::store::HubStore;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use cunyun_platform::metrics::Metrics;
use cunyun_platform::store::StoreError;
use cunyun_platform::sync::SyncService;
use cunyun_protocol::area::Level;
use cunyun_protocol::fields::Date;
use cunyun_protocol::key::Role;
use serde_json::{json, Value};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::config::HubConfig;
use crate::engine::{Engine, RoundReport};
use crate::files::HubFiles;
use crate::library::{ContentLibrary, LibraryError};

/// The running hub's shared state.
pub struct Hub {
    /// The province-wide document store (sled or PostgreSQL).
    pub store: Arc<dyn HubStore>,
    /// The content library.
    pub library: ContentLibrary,
    /// Content files and the signing key.
    pub files: Arc<HubFiles>,
    /// The matching engine.
    pub engine: Engine,
    /// The sync service, when enabled.
    pub sync: Option<SyncService>,
    /// Operator and admin accounts, sessions and the audit log ([`auth`]).
    pub accounts: cunyun_platform::accounts::Accounts,
    metrics: Metrics,
    today: Option<Date>,
    scope: cunyun_protocol::area::AreaScope,
    /// Where uploads wait while they are stored (`<data>/uploads`).
    uploads: PathBuf,
    /// Largest console upload, in bytes.
    max_upload_bytes: u64,
    /// The only directory `POST /api/v1/content` reads files from (`<data>/import`).
    import_dir: PathBuf,
}

/// Why the hub could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HubStartError {
    /// The data directory could not be created.
    #[error("无法创建数据目录 {path}: {source}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The store could not be opened.
    #[error("无法打开文档库: {0}")]
    Store(#[from] StoreError),
    /// The configured document backend cannot be used (yet).
    #[error("{0}")]
    Backend(#[from] crate::store::HubStoreError),
    /// The accounts could not be read.
    #[error(transparent)]
    Accounts(#[from] cunyun_platform::accounts::AccountError),
    /// The content library could not be opened.
    #[error("无法打开资源库: {0}")]
    Library(#[from] LibraryError),
    /// The file store could not be opened.
    #[error("无法打开文件库: {0}")]
    Files(#[from] crate::files::FileStoreError),
    /// Sync could not start.
    #[error(transparent)]
    Sync(#[from] cunyun_platform::sync::service::SyncStartError),
    /// The certificate is not a hub's for the configured province.
    #[error("证书身份为{role}（{scope}），省级枢纽需要hub角色、范围{expected}")]
    Identity {
        /// Role in the certificate.
        role: &'static str,
        /// Scope in the certificate.
        scope: String,
        /// The configured scope.
        expected: String,
    },
    /// The API address could not be bound.
    #[error("无法监听 {addr}: {source}（端口可能已被占用）")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// What went wrong.
        source: std::io::Error,
    },
}

/// The date in China (UTC+8) from the system clock (2026-01-01 if the clock is outside the
/// years records accept).
pub fn today_in_china() -> Date {
    cunyun_platform::clock::today_cst()
        .unwrap_or_else(|| Date::new(2026, 1, 1).expect("2026-01-01 is a valid date"))
}

impl Hub {
    /// The matching date: the configured one, or today in China.
    pub fn today(&self) -> Date {
        self.today.unwrap_or_else(today_in_china)
    }

    /// Runs one matching round now (off the async runtime).
    pub async fn match_now(self: &Arc<Self>) -> Result<RoundReport, String> {
        let hub = self.clone();
        tokio::task::spawn_blocking(move || hub.engine.round(&hub.library, hub.today()))
            .await
            .map_err(|e| format!("匹配任务异常退出: {e}"))?
            .map_err(|e| e.to_string())
    }
}

/// A hub serving in the background.
pub struct RunningHub {
    /// The operator API address.
    pub addr: SocketAddr,
    /// Shared state.
    pub hub: Arc<Hub>,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
    rounds: JoinHandle<()>,
}

impl RunningHub {
    /// The API's base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops matching, sync and the API.
    pub async fn stop(mut self) -> std::io::Result<()> {
        self.rounds.abort();
        if let Some(sync) = &self.hub.sync {
            sync.stop().await;
        }
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match self.task.await {
            Ok(r) => r,
            Err(e) => Err(std::io::Error::other(e)),
        }
    }

    /// Serves until the server task ends.
    pub async fn wait(self) -> std::io::Result<()> {
        match self.task.await {
            Ok(r) => r,
            Err(e) => Err(std::io::Error::other(e)),
        }
    }
}

/// Opens everything below `config.data_dir`, starts sync (when enabled), the matching rounds and
/// the operator API.
pub async fn start(
    config: &HubConfig,
    shutdown_signal: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<RunningHub, HubStartError> {
    let dir = &config.data_dir;
    std::fs::create_dir_all(dir).map_err(|source| HubStartError::DataDir {
        path: dir.clone(),
        source,
    })?;
    // Uploads left behind by a stop mid-request are never needed again.
    let _ = std::fs::remove_dir_all(dir.join("uploads"));
    std::fs::create_dir_all(dir.join(IMPORT_DIR)).map_err(|source| HubStartError::DataDir {
        path: dir.join(IMPORT_DIR),
        source,
    })?;
    // sled in `<data>/store`, or the PostgreSQL database of `[store.postgres]` (migrated).
    // Off the runtime: opening PostgreSQL migrates on the store's own runtime and waits.
    let (store_cfg, store_dir) = (config.store.clone(), dir.clone());
    let store = tokio::task::spawn_blocking(move || crate::store::open(&store_cfg, &store_dir))
        .await
        .map_err(|e| {
            crate::store::HubStoreError::Config(format!("打开文档库的任务异常退出: {e}"))
        })??;
    tracing::info!(backend = ?store.backend(), "hub document store opened");
    let files = Arc::new(HubFiles::open(dir)?);
    let library = ContentLibrary::open(&dir.join("library"), files.clone())?;
    let sync = if config.sync.enabled {
        let host = Arc::new(crate::store::synchost::HubSyncHost::new(store.clone()));
        let s = SyncService::start(config.sync.clone(), host, dir).await?;
        s.set_blob_store(files.blobs().clone());
        let id = s.identity();
        if id.role != Role::Hub || id.scope != config.scope {
            s.stop().await;
            return Err(HubStartError::Identity {
                role: id.role.as_str(),
                scope: id.scope.to_string(),
                expected: config.scope.to_string(),
            });
        }
        Some(s)
    } else {
        None
    };
    let today = config.today;
    let hub = Arc::new(Hub {
        engine: Engine::new(
            store.clone(),
            config.scope,
            today.unwrap_or_else(today_in_china),
            config.per_week,
        )
        .with_pushdown(config.pushdown.clone()),
        store,
        library,
        files,
        sync,
        accounts: cunyun_platform::accounts::Accounts::open(dir)?,
        metrics: Metrics::new(),
        today,
        scope: config.scope,
        uploads: dir.join("uploads"),
        import_dir: dir.join(IMPORT_DIR),
        max_upload_bytes: config.max_upload_bytes,
    });
    if let Some(s) = &hub.sync {
        let mut feed = s.subscribe();
        // Weak: the feed's sender lives in the hub's sync service, so a strong reference would
        // keep the hub (and its store) alive after it stopped.
        let h = Arc::downgrade(&hub);
        tokio::spawn(async move {
            loop {
                match feed.recv().await {
                    Ok(report) => match h.upgrade() {
                        Some(h) => h.metrics.record_sync(&report),
                        None => break,
                    },
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                }
            }
        });
    }
    let rounds = {
        let hub = hub.clone();
        let every = Duration::from_millis(config.match_interval_ms.max(100));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = hub.match_now().await {
                    tracing::warn!(error = %e, "matching round failed");
                }
            }
        })
    };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| HubStartError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener
        .local_addr()
        .map_err(|source| HubStartError::Bind {
            addr: config.listen,
            source,
        })?;
    let (tx, rx) = oneshot::channel::<()>();
    let router =
        router(hub.clone()).layer(axum::extract::DefaultBodyLimit::max(config.max_body_bytes));
    let limiter = cunyun_platform::ratelimit::AddrLimiter::new("hub-http", config.http_per_address);
    let task = tokio::spawn(async move {
        axum::serve(
            cunyun_platform::ratelimit::LimitedListener::new(listener, limiter),
            router,
        )
        .with_graceful_shutdown(async move {
            tokio::select! {
                _ = rx => {}
                _ = shutdown_signal => {}
            }
        })
        .await
    });
    tracing::info!(target: "cunyun::_events::hub_started", %addr, scope = %config.scope);
    Ok(RunningHub {
        addr,
        hub,
        shutdown: Some(tx),
        task,
        rounds,
    })
}

/// The hub's HTTP routes.
pub fn router(hub: Arc<Hub>) -> Router {
    let guarded = Router::new()
        .route("/api/v1/content", get(list_content).post(add_content))
        .route(
            "/api/v1/content/upload",
            // The handler enforces `max_upload_bytes` while it streams the file to disk.
            post(manage_api::upload_content).layer(axum::extract::DefaultBodyLimit::disable()),
        )
        .route(
            "/api/v1/content/{id}",
            delete(remove_content).put(manage_api::edit_content),
        )
        .route(
            "/api/v1/content/{id}/retire",
            post(manage_api::retire_content),
        )
        .route("/api/v1/match", post(match_now))
        .route(
            "/api/v1/experts",
            get(manage_api::list_experts).post(manage_api::add_expert),
        )
        .route(
            "/api/v1/experts/{id}",
            get(manage_api::get_expert)
                .put(manage_api::edit_expert)
                .delete(manage_api::remove_expert),
        )
        .route("/api/v1/needs", get(manage_api::list_needs))
        .route(
            "/api/v1/needs/{area}/{id}/status",
            post(manage_api::set_need_status),
        )
        .route("/api/v1/coverage", get(coverage_json))
        .route("/api/v1/coverage.csv", get(coverage_csv))
        .route("/api/v1/content.csv", get(content_csv))
        .route("/api/v1/sync", get(sync_status))
        .route("/api/v1/push-plan", get(push_plan))
        .merge(console::routes());
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .merge(auth::with_auth(hub.clone(), guarded))
        .with_state(hub)
}

pub(crate) fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({"error": code, "message": message.into()})),
    )
        .into_response()
}

async fn healthz(State(hub): State<Arc<Hub>>) -> Response {
    let h = hub.clone();
    let stats = match tokio::task::spawn_blocking(move || h.store.stats()).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "store",
                format!("文档库不可用：{e}"),
            )
        }
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
    };
    Json(json!({
        "status": "ok",
        "role": "hub",
        "documents": stats.documents,
        "quarantined": stats.quarantined,
        "content_items": hub.library.list().len(),
        "households": hub.engine.households(),
    }))
    .into_response()
}

async fn metrics(State(hub): State<Arc<Hub>>) -> impl IntoResponse {
    let h = hub.clone();
    let stats = tokio::task::spawn_blocking(move || h.store.stats())
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    let mut text = hub
        .metrics
        .render_with(&cunyun_platform::store::StoreStats {
            documents: stats.documents,
            chunks: stats.chunks,
            bytes: stats.bytes,
            writes: stats.writes,
            quarantined: stats.quarantined,
            disk_bytes: stats.disk_bytes,
            ..Default::default()
        });
    let coverage = hub.engine.coverage().prometheus();
    // Coverage lines go before the closing `# EOF`.
    match text.rfind("# EOF") {
        Some(i) => text.insert_str(i, &coverage),
        None => text.push_str(&coverage),
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
}

pub(crate) fn level_of(q: &BTreeMap<String, String>) -> Result<Level, Box<Response>> {
    match q.get("level") {
        None => Ok(Level::County),
        Some(l) => coverage::parse_level(l).ok_or_else(|| {
            Box::new(error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("未知的层级“{l}”，可选 province、prefecture、county、township、village"),
            ))
        }),
    }
}

async fn coverage_json(
    State(hub): State<Arc<Hub>>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    match level_of(&q) {
        Ok(level) => Json(json!({
            "level": coverage::level_id(level),
            "rows": hub.engine.coverage().rows(level),
        }))
        .into_response(),
        Err(r) => *r,
    }
}

fn csv_response(name: &str, body: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}.csv\""),
            ),
        ],
        // A byte-order mark so spreadsheet programs read the Chinese header as UTF-8.
        format!("\u{feff}{body}"),
    )
        .into_response()
}

async fn coverage_csv(
    State(hub): State<Arc<Hub>>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    match level_of(&q) {
        Ok(level) => csv_response(
            &format!("coverage-{}", coverage::level_id(level)),
            hub.engine.coverage().csv(level),
        ),
        Err(r) => *r,
    }
}

fn csv_field(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

fn content_table_csv(items: &[library::ContentRecord]) -> String {
    let mut out =
        String::from("资源编号,标题,格式,标签,适用地区,适用月份,审核日期,失效日期,主文件字节数\n");
    for r in items {
        let m = &r.meta;
        let tags: Vec<&str> = m.tags.iter().map(|t| t.zh_name()).collect();
        let regions: Vec<String> = m.regions.iter().map(|r| r.to_string()).collect();
        let months: Vec<String> = m.months.iter().map(|m| m.to_string()).collect();
        out.push_str(&format!(
            "{},{},{},{},{},{},{},{},{}\n",
            r.id,
            csv_field(&m.title),
            m.format.zh_name(),
            csv_field(&tags.join("；")),
            csv_field(&regions.join(" ")),
            csv_field(&months.join(" ")),
            m.review_date,
            m.expires.map(|d| d.to_string()).unwrap_or_default(),
            m.bytes
        ));
    }
    out
}

async fn content_csv(State(hub): State<Arc<Hub>>) -> Response {
    csv_response("content", content_table_csv(&hub.library.list()))
}

/// `?village=<12 digits>[&budget_mb=<n>]`: the files to push to a village within its byte budget
/// (default: the configured one, `[pushdown]`, which is what the `rec` documents' `push` flags
/// follow).
async fn push_plan(
    State(hub): State<Arc<Hub>>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    let village = match q
        .get("village")
        .map(|v| cunyun_protocol::area::AreaCode::parse(v))
    {
        Some(Ok(v)) if v.level() == Level::Village => v,
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "需要村级区划代码 village（12位）",
            )
        }
    };
    let budget = match q.get("budget_mb").map(|b| b.parse::<u64>()) {
        None => hub.engine.budget_bytes(&village),
        Some(Ok(mb)) => mb.saturating_mul(1_000_000),
        Some(Err(_)) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "空间预算 budget_mb 应为整数（单位MB）",
            )
        }
    };
    let h = hub.clone();
    match tokio::task::spawn_blocking(move || h.engine.push_plan(&village, budget)).await {
        Ok(Ok((picked, left))) => {
            let row = |f: &cunyun_protocol::matching::FileDemand| {
                json!({"content_id": f.content_id, "rendition": f.rendition,
                    "bytes": f.bytes, "households": f.households})
            };
            let used: u64 = picked.iter().map(|f| f.bytes).sum();
            Json(json!({
                "village": village,
                "budget_bytes": budget,
                "used_bytes": used,
                "push": picked.iter().map(row).collect::<Vec<_>>(),
                "left_out": left.iter().map(row).collect::<Vec<_>>(),
            }))
            .into_response()
        }
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
    }
}

async fn sync_status(State(hub): State<Arc<Hub>>) -> Response {
    match &hub.sync {
        Some(s) => Json(json!(s.status())).into_response(),
        None => error(StatusCode::NOT_FOUND, "sync_disabled", "本枢纽未启用同步"),
    }
}

async fn list_content(State(hub): State<Arc<Hub>>) -> impl IntoResponse {
    Json(json!({ "items": hub.library.list() }))
}

/// Name of the import directory under the hub's data directory.
pub const IMPORT_DIR: &str = "import";

/// The file `name` (relative, inside the import directory `dir`) that `POST /api/v1/content`
/// may read. Anything else — an absolute path, `..`, a symbolic link leading out — is refused:
/// the API must not let a logged-in operator publish the hub's own keys or any other file.
fn import_path(dir: &Path, name: &str) -> Result<PathBuf, Box<Response>> {
    let refuse = || {
        Box::new(error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "file",
            format!(
                "文件“{name}”须放在枢纽的导入目录 {} 中，并用相对于该目录的名称指明；\
                 不能读取其他位置的文件",
                dir.display()
            ),
        ))
    };
    let rel = Path::new(name);
    if name.is_empty()
        || !rel
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)))
    {
        return Err(refuse());
    }
    let (Ok(root), Ok(path)) = (dir.canonicalize(), dir.join(rel).canonicalize()) else {
        return Err(refuse());
    };
    if !path.starts_with(&root) || !path.is_file() {
        return Err(refuse());
    }
    Ok(path)
}

/// `POST /api/v1/content` `{"meta": {…}, "file": "main.md", "files": {"audio": "main.opus"}}`:
/// files by name in the hub's import directory ([`import_path`]).
async fn add_content(State(hub): State<Arc<Hub>>, body: Option<Json<Value>>) -> Response {
    let Some(Json(body)) = body else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "请求内容应为JSON：{\"meta\": {…}, \"file\": \"导入目录中的文件名\"}",
        );
    };
    let (Some(meta), Some(file)) = (body.get("meta"), body.get("file").and_then(Value::as_str))
    else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "需要资源信息 meta 和主文件路径 file",
        );
    };
    let mut others = BTreeMap::new();
    if let Some(files) = body.get("files") {
        let Some(map) = files.as_object() else {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "files 应为对象：{\"版本编号\": \"文件路径\"}",
            );
        };
        for (k, v) in map {
            let Some(p) = v.as_str() else {
                return error(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    format!("版本“{k}”的文件路径应为文字"),
                );
            };
            match import_path(&hub.import_dir, p) {
                Ok(p) => others.insert(k.clone(), p),
                Err(r) => return *r,
            };
        }
    }
    let meta = meta.clone();
    let main = match import_path(&hub.import_dir, file) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let h = hub.clone();
    let result = tokio::task::spawn_blocking(move || h.library.add(&meta, &main, &others)).await;
    match result {
        Ok(Ok(record)) => (StatusCode::CREATED, Json(json!(record))).into_response(),
        Ok(Err(LibraryError::Invalid(errs))) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({
                "error": "invalid",
                "message": format!("资源信息有误，共{}处，请修改后重新提交", errs.len()),
                "fields": errs.0,
            })),
        )
            .into_response(),
        Ok(Err(e @ (LibraryError::Files(_) | LibraryError::FileStore(_)))) => {
            error(StatusCode::UNPROCESSABLE_ENTITY, "file", e.to_string())
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "content add failed");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "资源保存失败，请查看枢纽日志",
            )
        }
        Err(e) => {
            tracing::error!(error = %e, "content add task failed");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "资源保存失败，请查看枢纽日志",
            )
        }
    }
}

async fn remove_content(State(hub): State<Arc<Hub>>, UrlPath(id): UrlPath<String>) -> Response {
    match hub.library.remove(&id) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e @ LibraryError::NotFound(_)) => {
            error(StatusCode::NOT_FOUND, "not_found", e.to_string())
        }
        Err(e) => {
            tracing::error!(error = %e, "content remove failed");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "资源删除失败，请查看枢纽日志",
            )
        }
    }
}

async fn match_now(State(hub): State<Arc<Hub>>) -> Response {
    match hub.match_now().await {
        Ok(report) => Json(json!(report)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "matching round failed");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!("匹配失败：{e}"),
            )
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    async fn hub(dir: &std::path::Path) -> RunningHub {
        let c = HubConfig {
            data_dir: dir.to_path_buf(),
            listen: "127.0.0.1:0".parse().unwrap(),
            today: Date::parse("2026-04-15"),
            ..Default::default()
        };
        start(&c, std::future::pending()).await.unwrap()
    }

    /// Sends `req` as a logged-in hub operator (session cookie and CSRF header).
    async fn call(h: &RunningHub, mut req: Request<Body>) -> (StatusCode, Value) {
        let accounts = &h.hub.accounts;
        if accounts.list().unwrap().is_empty() {
            accounts
                .create(
                    "test",
                    "sheng",
                    cunyun_platform::accounts::Role::HubOperator,
                    "51",
                    "operator-password",
                )
                .unwrap();
        }
        let login = accounts.login("sheng", "operator-password").unwrap();
        let headers = req.headers_mut();
        headers.insert(
            header::COOKIE,
            format!("cunyun_session={}", login.token).parse().unwrap(),
        );
        headers.insert("x-csrf-token", login.csrf.parse().unwrap());
        let resp = router(h.hub.clone()).oneshot(req).await.unwrap();
        let status = resp.status();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    #[tokio::test]
    async fn serves_health_metrics_and_content_api() {
        let dir = tempfile::tempdir().unwrap();
        let h = hub(&dir.path().join("hub")).await;
        let (s, v) = call(&h, Request::get("/healthz").body(Body::empty()).unwrap()).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(v["role"], "hub");
        let resp = router(h.hub.clone())
            .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
            .await
            .unwrap();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        assert!(String::from_utf8_lossy(&body).contains("cunyun_store_documents"));

        // Files are read only from the hub's import directory, by name.
        std::fs::write(
            dir.path().join("hub").join(IMPORT_DIR).join("asf.md"),
            "# 防非洲猪瘟\n",
        )
        .unwrap();
        let file = "asf.md";
        let post = |body: Value| {
            Request::post("/api/v1/content")
                .header("content-type", "application/json")
                .body(Body::from(body.to_string()))
                .unwrap()
        };
        let (s, v) = call(
            &h,
            post(
                json!({"meta": {"title": "", "tags": ["nope"], "format": "article",
                "review_date": "2026-03-01"}, "file": file}),
            ),
        )
        .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(v["fields"].as_array().unwrap().len(), 2, "{v}");
        let (s, v) = call(&h, post(json!({"meta": {}, "file": "missing.md"}))).await;
        assert!(s.is_client_error() || s.is_server_error(), "{s} {v}");
        let (s, _) = call(&h, post(json!({"file": "x"}))).await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        assert!(h.hub.library.list().is_empty());
        let (s, v) = call(
            &h,
            post(
                json!({"meta": {"title": "防非洲猪瘟", "tags": ["liv.asf"], "format": "article",
                "review_date": "2026-03-01"}, "file": file}),
            ),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        let id = v["id"].as_str().unwrap().to_string();
        let (_, v) = call(
            &h,
            Request::get("/api/v1/content").body(Body::empty()).unwrap(),
        )
        .await;
        assert_eq!(v["items"][0]["meta"]["title"], "防非洲猪瘟");
        let (s, v) = call(
            &h,
            Request::post("/api/v1/match").body(Body::empty()).unwrap(),
        )
        .await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(v["recs_written"], 0);
        let (s, _) = call(
            &h,
            Request::delete(format!("/api/v1/content/{id}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(s, StatusCode::NO_CONTENT);
        let (s, _) = call(
            &h,
            Request::delete(format!("/api/v1/content/{id}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        h.stop().await.unwrap();
    }
}
