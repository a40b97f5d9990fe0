//! cunyun-hub: the provincial hub.
//!
//! A thin skeleton until the hub milestone: it opens a province-scoped document store and serves
//! `/healthz` and `/metrics`. It deliberately exposes no household write API: the hub must never
//! hold `hp` (private) documents, and the sync engine that will feed it refuses them by kind reach.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod matcher;

use std::path::Path;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use cunyun_node::metrics::Metrics;
use cunyun_node::store::{DocStore, StoreConfig, StoreError};

/// The running hub's shared state.
pub struct Hub {
    /// The province-wide document store.
    pub store: DocStore,
    metrics: Metrics,
}

impl Hub {
    /// Opens (creating if needed) the hub's store below `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Hub, StoreError> {
        Ok(Hub {
            store: DocStore::open(&data_dir.join("store"), StoreConfig::default())?,
            metrics: Metrics::new(),
        })
    }
}

/// The hub's HTTP routes.
pub fn router(hub: Arc<Hub>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(hub)
}

async fn healthz(State(hub): State<Arc<Hub>>) -> impl IntoResponse {
    let stats = hub.store.stats();
    Json(serde_json::json!({
        "status": "ok",
        "role": "hub",
        "documents": stats.documents,
        "quarantined": stats.quarantined,
    }))
}

async fn metrics(State(hub): State<Arc<Hub>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        hub.metrics.render(&hub.store),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    #[tokio::test]
    async fn serves_health_and_metrics() {
        let dir = tempfile::tempdir().expect("tempdir");
        let hub = Arc::new(Hub::open(dir.path()).expect("open"));
        let resp = router(hub.clone())
            .oneshot(Request::get("/healthz").body(Body::empty()).expect("req"))
            .await
            .expect("resp");
        assert_eq!(resp.status(), StatusCode::OK);
        let resp = router(hub)
            .oneshot(Request::get("/metrics").body(Body::empty()).expect("req"))
            .await
            .expect("resp");
        assert_eq!(resp.status(), StatusCode::OK);
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .expect("body");
        assert!(String::from_utf8_lossy(&body).contains("cunyun_store_documents"));
    }
}
