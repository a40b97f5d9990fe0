//! HTTP routes for pushed-down content (the contract with the recommendation view):
//!
//! - `GET /api/v1/content` (login): the push-down status ([`crate::pushdown::PushdownStatus`]).
//! - `GET /api/v1/content/{item_id}` (login) and `GET /v/content/{item_id}` (no login, for the
//!   villager page): `{"id", "meta": <ContentMeta JSON>, "renditions": [{"name", "mime",
//!   "bytes", "available"}]}` from the item's signed manifest; 404 (zh-CN) without one.
//! - `GET /content/{item_id}/{rendition}` (no login: public science material): the file from
//!   the blob store with its Content-Type, single `Range` requests answered 206; 404 while
//!   the item is not complete here.
//! - `GET /content/{item_id}/{rendition}/html` (no login): an article rendition (Markdown, HTML
//!   or text) rendered on the node as a sanitised HTML fragment ([`crate::markdown`]), for the
//!   cadre app and the villager page to insert as it is; 404 (zh-CN) for a rendition that is not
//!   an article or not here, 413 for one over [`crate::markdown::MAX_ARTICLE_BYTES`].
//!
//! `item_id` is the key of the `rec` item (the hub library's id); its `content` field names
//! the manifest.
//!
//! An item recommended here but not complete (outside the hub's push-down plan for this village,
//! or still on its way) is fetched on demand when either of the item routes asks for it
//! ([`Pushdown::fetch_on_demand`]), waiting at most [`ON_DEMAND_WAIT`]; after that, or with no
//! upstream reachable, the description says `"available": false` (the pages show that the
//! content is still being downloaded) or the route answers 404 with a zh-CN message. Only items
//! of this node's `rec` documents are ever fetched.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use cunyun_protocol::manifest::{ContentId, ContentManifest};
use serde_json::{json, Value};

use crate::markdown::{self, ArticleFormat, RenderError};
use crate::pushdown::Pushdown;
use crate::state::AppState;
use cunyun_platform::blobs::BlobError;
use cunyun_platform::http::ApiError;

/// Routes behind the login (the caller adds the guard).
pub fn api_routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/v1/content", get(status))
        .route("/api/v1/content/{item_id}", get(item))
}

/// Public routes.
pub fn public_routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v/content/{item_id}", get(item))
        .route("/content/{item_id}/{rendition}", get(file))
        .route("/content/{item_id}/{rendition}/html", get(article))
}

/// How long an item route waits for an on-demand fetch before answering.
pub const ON_DEMAND_WAIT: std::time::Duration = std::time::Duration::from_secs(8);

fn no_content() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "本节点还没有这份资源（尚未下载；联网时打开会自动下载，请稍后再试）",
    )
}

async fn status(State(state): State<Arc<AppState>>) -> Response {
    match &state.pushdown {
        Some(p) => Json(json!({"enabled": true, "status": p.status()})).into_response(),
        None => Json(json!({"enabled": false})).into_response(),
    }
}

async fn manifest_of(
    state: &AppState,
    item_id: String,
) -> Result<(Arc<Pushdown>, ContentId, ContentManifest), ApiError> {
    let p = state.pushdown.clone().ok_or_else(no_content)?;
    let cid = p.content_of(&item_id).ok_or_else(no_content)?;
    if !p.blobs().is_complete(&cid) {
        p.fetch_on_demand(cid, ON_DEMAND_WAIT).await;
    }
    let m = p.blobs().manifest(&cid).ok_or_else(no_content)?;
    Ok((p, cid, m))
}

async fn item(State(state): State<Arc<AppState>>, Path(item_id): Path<String>) -> Response {
    let (p, cid, m) = match manifest_of(&state, item_id.clone()).await {
        Ok(x) => x,
        Err(e) => return e.into_response(),
    };
    let meta: Value = serde_json::from_slice::<Value>(&m.meta)
        .ok()
        .and_then(|v| v.get("meta").cloned())
        .unwrap_or(Value::Null);
    let complete = p.blobs().is_complete(&cid);
    let renditions: Vec<Value> = m
        .renditions
        .iter()
        .map(|r| {
            let available = complete || r.chunks.iter().all(|h| p.blobs().has_chunk(h));
            json!({"name": r.name, "mime": r.mime, "bytes": r.total_bytes, "available": available})
        })
        .collect();
    Json(json!({"id": item_id, "meta": meta, "renditions": renditions})).into_response()
}

/// Parses a single `bytes=` range against a file of `len` bytes: `Ok(None)` for no header,
/// `Err(())` for an unsatisfiable or unsupported one.
fn parse_range(h: Option<&str>, len: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(h) = h else { return Ok(None) };
    let spec = h.trim().strip_prefix("bytes=").ok_or(())?;
    if spec.contains(',') {
        return Err(());
    }
    let (a, b) = spec.split_once('-').ok_or(())?;
    let (start, end) = match (a.trim(), b.trim()) {
        ("", n) => {
            let n: u64 = n.parse().map_err(|_| ())?;
            if n == 0 {
                return Err(());
            }
            (len.saturating_sub(n), len.saturating_sub(1))
        }
        (s, "") => (s.parse().map_err(|_| ())?, len.saturating_sub(1)),
        (s, e) => {
            let s: u64 = s.parse().map_err(|_| ())?;
            let e: u64 = e.parse().map_err(|_| ())?;
            (s, e.min(len.saturating_sub(1)))
        }
    };
    if len == 0 || start >= len || start > end {
        return Err(());
    }
    Ok(Some((start, end)))
}

async fn file(
    State(state): State<Arc<AppState>>,
    Path((item_id, rendition)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let (p, cid, m) = match manifest_of(&state, item_id).await {
        Ok(x) => x,
        Err(e) => return e.into_response(),
    };
    let Some(r) = m.rendition(&rendition).cloned() else {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("这份资源没有“{rendition}”版本"),
        )
        .into_response();
    };
    if !r.chunks.iter().all(|h| p.blobs().has_chunk(h)) {
        return no_content().into_response();
    }
    let len = r.total_bytes;
    let range = parse_range(
        headers.get(header::RANGE).and_then(|v| v.to_str().ok()),
        len,
    );
    let (start, end, partial) = match range {
        Ok(None) => (0, len.saturating_sub(1), false),
        Ok(Some((s, e))) => (s, e, true),
        Err(()) => {
            return (
                StatusCode::RANGE_NOT_SATISFIABLE,
                [(header::CONTENT_RANGE, format!("bytes */{len}"))],
            )
                .into_response()
        }
    };
    let blobs = p.blobs().clone();
    let name = rendition.clone();
    let want = if len == 0 { 0 } else { end - start + 1 };
    let data = match tokio::task::spawn_blocking(move || blobs.read_range(&cid, &name, start, want))
        .await
    {
        Ok(Ok(d)) => d,
        _ => return no_content().into_response(),
    };
    let mime = if r.mime.starts_with("text/") {
        format!("{}; charset=utf-8", r.mime)
    } else {
        r.mime.clone()
    };
    let mut resp = (
        [
            (header::CONTENT_TYPE, mime),
            (header::ACCEPT_RANGES, "bytes".to_string()),
            (header::CACHE_CONTROL, "public, max-age=86400".to_string()),
        ],
        data,
    )
        .into_response();
    if partial {
        *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
        if let Ok(v) = format!("bytes {start}-{end}/{len}").parse() {
            resp.headers_mut().insert(header::CONTENT_RANGE, v);
        }
    }
    resp
}

/// Why an article could not be shown.
#[derive(Debug, thiserror::Error)]
pub enum ArticleError {
    /// The item, its manifest, the rendition or one of its chunks is not on this node.
    #[error("本节点还没有这份资源（尚未下载；联网时打开会自动下载，请稍后再试）")]
    Missing,
    /// The rendition is not an article, or cannot be rendered as one.
    #[error(transparent)]
    Render(#[from] RenderError),
    /// The blob store could not read the file.
    #[error("暂时无法读取这份资源，请稍后再试")]
    Read(#[source] BlobError),
}

/// Renders rendition `rendition` of item `item_id` from what is on this node (nothing is
/// fetched; blocking: reads the blob store). The mime type and size (at most `max_bytes`, and
/// never over [`markdown::MAX_ARTICLE_BYTES`]) are checked before the file is read.
pub fn local_article(
    p: &Pushdown,
    item_id: &str,
    rendition: &str,
    max_bytes: u64,
) -> Result<String, ArticleError> {
    let cid = p.content_of(item_id).ok_or(ArticleError::Missing)?;
    let m = p.blobs().manifest(&cid).ok_or(ArticleError::Missing)?;
    let r = m.rendition(rendition).ok_or(ArticleError::Missing)?;
    if ArticleFormat::of_mime(&r.mime).is_none() {
        return Err(RenderError::NotAnArticle(r.mime.clone()).into());
    }
    if r.total_bytes > max_bytes.min(markdown::MAX_ARTICLE_BYTES) {
        return Err(RenderError::TooLarge(r.total_bytes).into());
    }
    if !r.chunks.iter().all(|h| p.blobs().has_chunk(h)) {
        return Err(ArticleError::Missing);
    }
    let data = p
        .blobs()
        .read_range(&cid, rendition, 0, r.total_bytes)
        .map_err(ArticleError::Read)?;
    let names: Vec<&str> = m.renditions.iter().map(|r| r.name.as_str()).collect();
    Ok(markdown::render(&data, &r.mime, item_id, &names)?)
}

/// `GET /content/{item_id}/{rendition}/html`: the article as a sanitised HTML fragment, fetched
/// on demand like the file.
async fn article(
    State(state): State<Arc<AppState>>,
    Path((item_id, rendition)): Path<(String, String)>,
) -> Response {
    let (p, _, _) = match manifest_of(&state, item_id.clone()).await {
        Ok(x) => x,
        Err(e) => return e.into_response(),
    };
    let rendered = tokio::task::spawn_blocking(move || {
        local_article(&p, &item_id, &rendition, markdown::MAX_ARTICLE_BYTES)
    })
    .await;
    let err = match rendered {
        Ok(Ok(html)) => {
            return (
                [
                    (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                    (header::CACHE_CONTROL, "no-cache"),
                    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
                    (
                        header::CONTENT_SECURITY_POLICY,
                        "default-src 'none'; img-src 'self'; media-src 'self'",
                    ),
                ],
                html,
            )
                .into_response()
        }
        Ok(Err(e)) => e,
        Err(_) => ArticleError::Missing,
    };
    let (status, code) = match &err {
        ArticleError::Missing => (StatusCode::NOT_FOUND, "not_found"),
        ArticleError::Render(RenderError::TooLarge(_)) => {
            (StatusCode::PAYLOAD_TOO_LARGE, "too_large")
        }
        ArticleError::Render(_) => (StatusCode::NOT_FOUND, "not_an_article"),
        ArticleError::Read(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
    };
    ApiError::new(status, code, err.to_string()).into_response()
}

/// OpenMetrics lines of the push-down status (inserted before `# EOF` by `/metrics`).
pub fn metrics_text(p: &Pushdown) -> String {
    let s = p.status();
    let mut out = String::new();
    for (name, help, unit, v) in [
        (
            "cunyun_content_wanted",
            "Content items recommended in scope (with a manifest id).",
            "",
            s.wanted as u64,
        ),
        (
            "cunyun_content_planned",
            "Wanted content items the hub's byte budget pushes here (pre-fetched).",
            "",
            s.planned as u64,
        ),
        (
            "cunyun_content_complete",
            "Wanted content items complete in the blob store.",
            "",
            s.complete as u64,
        ),
        (
            "cunyun_content_missing_bytes",
            "Bytes of planned items still to fetch.",
            "bytes",
            s.missing_bytes,
        ),
        (
            "cunyun_content_store_bytes",
            "Bytes of chunks in the blob store.",
            "bytes",
            s.store_bytes,
        ),
        (
            "cunyun_content_pushdown_runs",
            "Push-down runs since start.",
            "",
            s.runs,
        ),
    ] {
        out.push_str(&format!("# TYPE {name} gauge\n# HELP {name} {help}\n"));
        if !unit.is_empty() {
            out.push_str(&format!("# UNIT {name} {unit}\n"));
        }
        out.push_str(&format!("{name} {v}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn ranges() {
        assert_eq!(parse_range(None, 10), Ok(None));
        assert_eq!(parse_range(Some("bytes=0-3"), 10), Ok(Some((0, 3))));
        assert_eq!(parse_range(Some("bytes=5-"), 10), Ok(Some((5, 9))));
        assert_eq!(parse_range(Some("bytes=-4"), 10), Ok(Some((6, 9))));
        assert_eq!(parse_range(Some("bytes=2-99"), 10), Ok(Some((2, 9))));
        for bad in [
            "bytes=10-",
            "bytes=5-2",
            "bytes=0-1,3-4",
            "items=0-1",
            "bytes=x-1",
            "bytes=-0",
        ] {
            assert_eq!(parse_range(Some(bad), 10), Err(()), "{bad}");
        }
    }
}
