//! What every handler of the village app shares: [`AppState`] (records, accounts, metrics, the
//! sync service, the automerge-repo endpoint, push-down), running a record operation off the
//! async workers ([`blocking`]), counting writes ([`count_write`]) and how a [`RecordError`]
//! answers as an [`ApiError`]. The routers (`api`, `webapp`, `content_api`, `automerge_repo`)
//! stand on this module; it stands on none of them.

use std::sync::Arc;

use axum::http::StatusCode;
use serde_json::json;

use crate::records::{RecordError, Records};
use cunyun_platform::http::ApiError;
use cunyun_platform::metrics::Metrics;
use cunyun_platform::store::StoreError;

/// Shared state of every handler.
pub struct AppState {
    /// The record service (shared with the push-down loop, which records deliveries).
    pub records: Arc<Records>,
    /// Metrics registry.
    pub metrics: Metrics,
    /// Cadre accounts and sessions; a logged-in cadre is the author of their changes.
    pub accounts: cunyun_platform::accounts::Accounts,
    /// Name shown on the status page.
    pub node_name: String,
    /// The sync service, when sync is enabled.
    pub sync: Option<cunyun_platform::sync::SyncService>,
    /// The automerge-repo endpoint (`/automerge`): document ids and principals.
    pub automerge_repo: crate::automerge_repo::endpoint::Endpoint,
    /// The content push-down loop, when sync is enabled.
    pub pushdown: Option<Arc<crate::pushdown::Pushdown>>,
    /// `[limits]`: page sizes, scan budget and the per-class concurrency places.
    pub limits: Arc<crate::limits::RouteLimits>,
}

impl cunyun_platform::admin::AdminBackend for AppState {
    fn accounts(&self) -> &cunyun_platform::accounts::Accounts {
        &self.accounts
    }
    fn record_changes(
        &self,
        filter: &cunyun_platform::audit::AuditFilter,
        limit: usize,
    ) -> Vec<cunyun_platform::audit::AuditEvent> {
        cunyun_platform::audit::record_changes(
            self.records.store(),
            &self.records.scope(),
            filter,
            limit,
        )
    }
    fn scope(&self) -> cunyun_protocol::area::AreaScope {
        self.records.scope()
    }
    fn title(&self) -> &'static str {
        "村云节点"
    }
}

impl From<RecordError> for ApiError {
    fn from(e: RecordError) -> ApiError {
        match e {
            RecordError::Invalid(errs) => ApiError::with_body(
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({
                    "error": "invalid",
                    "message": format!("输入有误，共{}处，请修改后重新提交", errs.0.len()),
                    "fields": errs.0,
                }),
            ),
            RecordError::BadRequest(m) => ApiError::new(StatusCode::BAD_REQUEST, "bad_request", m),
            RecordError::BadClientId(m) => {
                ApiError::new(StatusCode::BAD_REQUEST, "bad_client_id", m)
            }
            e @ RecordError::ClientIdReused { .. } => {
                ApiError::new(StatusCode::CONFLICT, "client_id_reused", e.to_string())
            }
            e @ RecordError::ClientIdTaken(_) => {
                ApiError::new(StatusCode::CONFLICT, "client_id_taken", e.to_string())
            }
            e @ RecordError::CreatedThenDeleted { .. } => {
                ApiError::new(StatusCode::CONFLICT, "deleted", e.to_string())
            }
            RecordError::NotFound(id) => ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("未找到记录 {id}"),
            ),
            RecordError::Store(StoreError::Corrupt { key, reason }) => {
                tracing::error!(key, reason, "request hit a corrupt document");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "corrupt",
                    "该记录的存储数据已损坏，已被隔离保存；请联系县级运维人员。其他记录不受影响。",
                )
            }
            other => {
                tracing::error!(error = %other, "request failed");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "服务器内部错误，请稍后重试；如果反复出现，请联系运维人员",
                )
            }
        }
    }
}

/// Runs a record operation that reads the store on the blocking pool, off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    state: &Arc<AppState>,
    op: impl FnOnce(&Records) -> Result<T, RecordError> + Send + 'static,
) -> Result<T, ApiError> {
    let state = state.clone();
    tokio::task::spawn_blocking(move || op(&state.records))
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "blocking task failed");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "服务器内部错误，请稍后重试",
            )
        })?
        .map_err(ApiError::from)
}

pub(crate) fn count_write<T>(
    state: &AppState,
    kind: &str,
    op: &str,
    result: Result<T, RecordError>,
) -> Result<T, ApiError> {
    match result {
        Ok(v) => {
            state
                .metrics
                .record_writes
                .get_or_create(&cunyun_platform::metrics::WriteLabels {
                    kind: kind.into(),
                    op: op.into(),
                })
                .inc();
            Ok(v)
        }
        Err(e) => {
            if matches!(e, RecordError::Invalid(_)) {
                state.metrics.invalid_inputs.inc();
            }
            Err(e.into())
        }
    }
}
