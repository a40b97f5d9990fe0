//! Per-route-class concurrency with backpressure ([`RouteLimits`], the [`limit`] middleware).
//!
//! Every request is put in a [`Class`] by its method and matched route: lists (whole-scope or
//! paged walks of the index), other reads, and writes. Each class has a fixed number of places
//! (a `tokio` semaphore, `[limits]` in the config). A request waits for a place up to
//! `queue_wait_ms`; after that it is answered `503` with `{"error": "busy", "message":
//! "节点繁忙，请稍后再试"}` and `Retry-After`, having done nothing. So a flood of clients costs
//! queue slots and a short wait each, never more memory or a slower node for those admitted.
//!
//! Static files, `/healthz`, `/metrics`, `/status` and the `/automerge` WebSocket handshake
//! are not limited (the sync sessions have their own limits in the sync service).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tokio::sync::Semaphore;

use crate::config::Limits;

/// What kind of work a request is, for its concurrency limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Lists: household and need lists, overview, coverage, the audit log and its CSV.
    List,
    /// Other `GET`s of the API, the admin pages and the villager pages.
    Read,
    /// `POST`, `PUT`, `PATCH`, `DELETE`.
    Write,
}

impl Class {
    /// The metric/log name of the class.
    pub fn name(self) -> &'static str {
        match self {
            Class::List => "list",
            Class::Read => "read",
            Class::Write => "write",
        }
    }

    /// The class of a request to `route` (the matched route pattern), or `None` when it is not
    /// limited.
    pub fn of(method: &Method, route: &str) -> Option<Class> {
        const LISTS: [&str; 6] = [
            "/api/v1/households",
            "/api/v1/needs",
            "/api/v1/overview",
            "/api/v1/coverage",
            "/admin/audit",
            "/admin/audit.csv",
        ];
        const FREE: [&str; 8] = [
            "/",
            "/app/{file}",
            "/sw.js",
            "/healthz",
            "/metrics",
            "/status",
            "/automerge",
            "/admin/admin.js",
        ];
        if FREE.contains(&route) {
            return None;
        }
        match *method {
            Method::GET | Method::HEAD if LISTS.contains(&route) => Some(Class::List),
            Method::GET | Method::HEAD | Method::OPTIONS => Some(Class::Read),
            _ => Some(Class::Write),
        }
    }
}

/// The `[limits]` of a running node with a semaphore per class.
#[derive(Debug)]
pub struct RouteLimits {
    /// The configured values (page sizes and scan budget are read by the list handlers).
    pub config: Limits,
    lists: Arc<Semaphore>,
    reads: Arc<Semaphore>,
    writes: Arc<Semaphore>,
}

impl RouteLimits {
    /// Places as `config` says.
    pub fn new(config: Limits) -> RouteLimits {
        RouteLimits {
            config,
            lists: Arc::new(Semaphore::new(config.lists.max(1))),
            reads: Arc::new(Semaphore::new(config.reads.max(1))),
            writes: Arc::new(Semaphore::new(config.writes.max(1))),
        }
    }

    fn semaphore(&self, class: Class) -> &Arc<Semaphore> {
        match class {
            Class::List => &self.lists,
            Class::Read => &self.reads,
            Class::Write => &self.writes,
        }
    }

    /// Free places of `class` now (for tests and metrics).
    pub fn available(&self, class: Class) -> usize {
        self.semaphore(class).available_permits()
    }

    /// Takes a place of `class` now, if one is free, for work done outside a request (and for
    /// tests that fill a class); the place is given back when the permit is dropped.
    pub fn try_take(&self, class: Class) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.semaphore(class).clone().try_acquire_owned().ok()
    }
}

/// The answer to a request that found its class full for longer than the queue wait.
pub fn busy(retry_after_s: u64) -> Response {
    let mut resp = (
        StatusCode::SERVICE_UNAVAILABLE,
        axum::Json(json!({
            "error": "busy",
            "message": "节点繁忙，请稍后再试",
        })),
    )
        .into_response();
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_s.max(1)));
    resp
}

/// Middleware: runs the request once its class has a place, else answers [`busy`].
pub async fn limit(State(limits): State<Arc<RouteLimits>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string());
    let Some(class) = route.as_deref().and_then(|r| Class::of(req.method(), r)) else {
        return next.run(req).await;
    };
    let wait = Duration::from_millis(limits.config.queue_wait_ms);
    let sem = limits.semaphore(class).clone();
    match tokio::time::timeout(wait, sem.acquire_owned()).await {
        Ok(Ok(permit)) => {
            let resp = next.run(req).await;
            drop(permit);
            resp
        }
        // Timed out (or, never, closed): the class stayed full.
        _ => {
            tracing::info!(
                class = class.name(),
                route = route.as_deref().unwrap_or(""),
                wait_ms = limits.config.queue_wait_ms,
                "request refused: node busy"
            );
            busy(limits.config.queue_wait_ms.div_ceil(1000))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_fall_in_the_expected_classes() {
        let get = Method::GET;
        assert_eq!(Class::of(&get, "/api/v1/households"), Some(Class::List));
        assert_eq!(Class::of(&get, "/admin/audit.csv"), Some(Class::List));
        assert_eq!(
            Class::of(&get, "/api/v1/households/{id}"),
            Some(Class::Read)
        );
        assert_eq!(
            Class::of(&Method::POST, "/api/v1/households"),
            Some(Class::Write)
        );
        assert_eq!(
            Class::of(&Method::PATCH, "/api/v1/needs/{id}"),
            Some(Class::Write)
        );
        assert_eq!(Class::of(&get, "/healthz"), None);
        assert_eq!(Class::of(&get, "/automerge"), None);
    }

    #[tokio::test]
    async fn busy_is_a_chinese_503_with_retry_after() {
        let resp = busy(2);
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            resp.headers()
                .get(header::RETRY_AFTER)
                .map(|v| v.as_bytes()),
            Some(b"2".as_slice())
        );
        let body = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .expect("body");
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(v["error"], "busy");
        assert_eq!(v["message"], "节点繁忙，请稍后再试");
    }
}
