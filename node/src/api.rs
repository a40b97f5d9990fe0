//! The node's HTTP JSON API under `/api/v1`, plus `/healthz`, `/metrics` and a status page
//! (`/status`).
//!
//! Every `/api/v1` route except login and logout needs a session cookie (see
//! [`cunyun_platform::accounts`]); without one it answers `401`. The logged-in account is the Automerge
//! author of every change made through the request.
//!
//! Authorization ([`authorize`]), `403` with a Chinese message otherwise: a cadre reads and
//! writes only their village's records; a county (or hub) operator reads their scope and writes
//! nothing; an admin manages accounts and reads the audit log (`/admin/…`,
//! [`cunyun_platform::admin`]) but reads no records. Lists show only records inside the account's scope;
//! the overview and coverage counts need a scope covering the whole node.
//!
//! CSRF ([`csrf_guard`]): login also sets the cookie `cunyun_csrf` (not `HttpOnly`); every
//! POST/PUT/PATCH/DELETE with a session must carry `x-csrf-token` equal to it, else `403
//! {"error":"csrf"}` and nothing changes. Every state-changing request, with a session or not
//! (the villager page's feedback POSTs, login), is refused when the browser says it comes from
//! another site (`Sec-Fetch-Site: cross-site`/`same-site`, or an `Origin` other than the `Host`).
//!
//! | method | path | what |
//! |---|---|---|
//! | POST | `/api/v1/login` | `{"name", "password"}` → session cookie (`HttpOnly; SameSite=Strict`) |
//! | POST | `/api/v1/logout` | ends the session |
//! | GET | `/api/v1/me` | the logged-in cadre |
//! | GET | `/api/v1/households?group=&tag=&updated_since=&q=&village=&limit=&cursor=` | one page of households |
//! | POST | `/api/v1/households` | create: `{"client_id"?, "profile": {…}, "private": {…}}` (see below) |
//! | GET | `/api/v1/households/{id}` | read one |
//! | PUT | `/api/v1/households/{id}` | replace the parts given |
//! | PATCH | `/api/v1/households/{id}` | JSON merge patch of the parts given |
//! | GET/POST | `/api/v1/needs?tag=&status=&updated_since=&village=&limit=&cursor=`, GET/PUT/PATCH `/api/v1/needs/{id}` | local needs (科技所需) |
//! | GET | `/api/v1/taxonomy` | the need-tag tree |
//! | GET | `/api/v1/overview` | counts for the status page |
//! | GET | `/api/v1/sync` | peers, last sync per peer, documents and bytes exchanged, errors |
//! | GET (WebSocket) | `/automerge?token=` | automerge-repo protocol v1 ([`crate::automerge_repo`]) |
//!
//! Creates are idempotent with a client id: a household or need body may carry `client_id`, a
//! random UUID version 4 in canonical lowercase form that the client makes once per new record
//! ([`crate::records::ClientId`]). The first request creates the record (`201`); the same
//! `client_id` with the same body again (the answer was lost) creates nothing and answers `200`
//! with the record as it is now. The same `client_id` with a different body is `409
//! client_id_reused` and the stored record is unchanged (the cadre opens it and edits it), `409
//! deleted` once the household was deleted; a malformed `client_id` is `400 bad_client_id` and
//! nothing is stored. Without `client_id` every request creates a record.
//!
//! Lists are paged ([`crate::paging`]): `{"items": [...], "next_cursor": "..." | null}`. A
//! page holds at most `limit` items (default and maximum from `[limits]`) and reads at most
//! `scan_budget` index entries, so it may hold fewer items than asked, or none, and still a
//! `next_cursor`; the list is complete when `next_cursor` is `null`. Send `cursor` back with
//! the same filter to get the next page; a cursor that is malformed, of another version, list,
//! filter or area is `400 bad_cursor` and nothing is read; a bad `limit` is `400 bad_query`.
//! Every request class has a concurrency limit ([`crate::limits`]): when it stays full for
//! the queue wait, `503 busy` with `Retry-After`.
//!
//! Errors are JSON `{"error": code, "message": 中文说明}`; invalid input is `422` with every
//! field error in `fields`, and nothing is stored. Internals are logged, not sent to clients.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, MatchedPath, Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::Extension;
use axum::{Json, Router};
use cunyun_protocol::area::AreaScope;
use cunyun_protocol::deletion::DeletionReason;
use cunyun_protocol::taxonomy;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::paging::{fingerprint, Cursor, ListKind};
use crate::records::{
    Created, HouseholdFilter, NeedFilter, Page, PageSpec, RecordError, UpdateMode,
};
use crate::state::AppState;
use crate::state::{blocking, count_write};
use cunyun_platform::accounts::{Cadre, Role, User};
use cunyun_platform::html::esc;
use cunyun_platform::http::{csrf_guard, forbidden, is_write, json_body, session_user, ApiError};
use cunyun_platform::metrics::HttpLabels;
use cunyun_platform::timefmt::parse_time_ms;

/// Builds the router. Tested without a socket through `tower::ServiceExt::oneshot`.
pub fn app(state: Arc<AppState>, max_body_bytes: usize) -> Router {
    let guarded = Router::new()
        .route(
            "/api/v1/households",
            get(list_households).post(create_household),
        )
        .route(
            "/api/v1/households/{id}",
            get(get_household)
                .put(put_household)
                .patch(patch_household)
                .delete(delete_household),
        )
        .route("/api/v1/needs", get(list_needs).post(create_need))
        .route(
            "/api/v1/needs/{id}",
            get(get_need).put(put_need).patch(patch_need),
        )
        .route("/api/v1/taxonomy", get(taxonomy_tree))
        .route("/api/v1/overview", get(overview))
        .route("/api/v1/sync", get(sync_status))
        .route("/api/v1/me", get(me))
        .merge(crate::webapp::api_routes())
        .merge(crate::content_api::api_routes())
        .route_layer(middleware::from_fn_with_state(state.clone(), require_login));
    let admin = cunyun_platform::admin::routes(state.clone())
        .merge(cunyun_platform::admin::public_routes());
    Router::new()
        .route("/status", get(status_page))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/automerge", get(crate::automerge_repo::ws::handler))
        .route(
            "/api/v1/login",
            post(cunyun_platform::admin::login::<AppState>),
        )
        .route(
            "/api/v1/logout",
            post(cunyun_platform::admin::logout::<AppState>),
        )
        .merge(guarded)
        .merge(admin)
        .merge(crate::webapp::public_routes())
        .merge(crate::content_api::public_routes())
        .fallback(not_found)
        .layer(middleware::from_fn(csrf_guard))
        .layer(middleware::from_fn_with_state(
            state.limits.clone(),
            crate::limits::limit,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), track))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(tower_http::compression::CompressionLayer::new())
        .with_state(state)
}

/// Counts and times every request by matched route.
async fn track(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let resp = next.run(req).await;
    let status = resp.status().as_u16();
    state
        .metrics
        .http_latency
        .observe(started.elapsed().as_secs_f64());
    state
        .metrics
        .http_requests
        .get_or_create(&HttpLabels {
            method: method.clone(),
            route: route.clone(),
            status,
        })
        .inc();
    tracing::debug!(
        method,
        route,
        status,
        ms = started.elapsed().as_millis() as u64,
        "request"
    );
    resp
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "没有这个地址")
}

async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    let stats = state.records.store().stats();
    Json(json!({
        "status": "ok",
        "documents": stats.documents,
        "quarantined": stats.quarantined,
    }))
    .into_response()
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let mut body = state.metrics.render(state.records.store());
    if let Some(p) = &state.pushdown {
        let extra = crate::content_api::metrics_text(p);
        match body.rfind("# EOF") {
            Some(i) => body.insert_str(i, &extra),
            None => body.push_str(&extra),
        }
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

/// Query of the household list.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HouseholdQuery {
    group: Option<String>,
    tag: Option<String>,
    updated_since: Option<String>,
    q: Option<String>,
    village: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

fn bad_query(param: &str, msg: &str) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "bad_query",
        format!("查询参数 {param} 有误：{msg}"),
    )
}

fn parse_since(s: &Option<String>) -> Result<Option<u64>, ApiError> {
    s.as_deref()
        .map(|v| {
            parse_time_ms(v).ok_or_else(|| {
                bad_query(
                    "updated_since",
                    "应为毫秒时间戳、YYYY-MM-DD 或 YYYY-MM-DDTHH:MM:SS+08:00",
                )
            })
        })
        .transpose()
}

fn query_or_400<T: serde::de::DeserializeOwned>(
    q: Result<Query<T>, axum::extract::rejection::QueryRejection>,
) -> Result<T, ApiError> {
    q.map(|Query(t)| t).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_query",
            format!("查询参数有误：{}", e.body_text()),
        )
    })
}

/// The paging of one list request: its range, filter fingerprint and page bounds. Built (and
/// the cursor checked) before anything is read.
struct Paging {
    list: ListKind,
    filter: [u8; 8],
    /// `None`: the reader's area and this node's scope do not meet; the list is empty.
    spec: Option<PageSpec>,
}

impl Paging {
    /// `limit` and `cursor` checked against the node's `[limits]`, over the node's scope
    /// narrowed to the reader's area and to `village` when given; `filter` lists the filter's
    /// normalised values (a cursor only continues the same filter).
    fn new(
        state: &AppState,
        user: &User,
        list: ListKind,
        village: Option<&str>,
        filter: &[&str],
        limit: &Option<String>,
        cursor: &Option<String>,
    ) -> Result<Paging, ApiError> {
        let cfg = state.limits.config;
        let limit = match limit.as_deref() {
            None | Some("") => cfg.page_size,
            Some(v) => match v.parse::<usize>() {
                Ok(n) if (1..=cfg.max_page_size).contains(&n) => n,
                _ => {
                    return Err(bad_query(
                        "limit",
                        &format!("每页条数应为 1 到 {} 之间的整数", cfg.max_page_size),
                    ))
                }
            },
        };
        let mut scope = state.records.scope().intersect(&user.area_scope());
        if let Some(v) = village.filter(|v| !v.is_empty()) {
            let v = AreaScope::parse(v)
                .map_err(|_| bad_query("village", "应为区划代码（如 510116108203）"))?;
            scope = scope.and_then(|s| s.intersect(&v));
        }
        let scope_name = scope.map(|s| s.to_string()).unwrap_or_default();
        let mut parts = vec![scope_name.as_str()];
        parts.extend_from_slice(filter);
        let fp = fingerprint(&parts);
        let Some(scope) = scope else {
            // Still refuse a bad cursor: a client must not learn to send junk.
            if let Some(c) = cursor.as_deref().filter(|c| !c.is_empty()) {
                Cursor::decode(c, list, fp, (b"", b"")).map_err(cursor_error)?;
            }
            return Ok(Paging {
                list,
                filter: fp,
                spec: None,
            });
        };
        let (start, end) = scope.key_range();
        let from = match cursor.as_deref().filter(|c| !c.is_empty()) {
            Some(c) => {
                Cursor::decode(c, list, fp, (&start, &end))
                    .map_err(cursor_error)?
                    .from
            }
            None => start,
        };
        Ok(Paging {
            list,
            filter: fp,
            spec: Some(PageSpec {
                from,
                end,
                limit,
                scan_budget: cfg.scan_budget,
            }),
        })
    }

    /// `{"items": […], "next_cursor": "…" | null}`.
    fn answer<T: serde::Serialize>(&self, page: Page<T>) -> Response {
        let next = page.resume.map(|from| {
            Cursor {
                list: self.list,
                filter: self.filter,
                from,
            }
            .encode()
        });
        Json(json!({ "items": page.items, "next_cursor": next })).into_response()
    }
}

fn cursor_error(e: crate::paging::CursorError) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "bad_cursor", e.to_string())
}

/// `GET /api/v1/households`: one page of the reader's households (see [`crate::paging`]).
async fn list_households(
    State(state): State<Arc<AppState>>,
    Extension(user): Extension<User>,
    q: Result<Query<HouseholdQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let q = query_or_400(q)?;
    let group = q
        .group
        .as_deref()
        .filter(|g| !g.is_empty())
        .map(|g| {
            g.parse::<u32>()
                .map_err(|_| bad_query("group", "应为小组编号（正整数）"))
        })
        .transpose()?;
    let tag = q.tag.clone().filter(|t| !t.is_empty());
    if let Some(tag) = &tag {
        if taxonomy::Tag::parse(tag).is_none() {
            return Err(bad_query("tag", &format!("未知的需求标签“{tag}”")));
        }
    }
    let filter = HouseholdFilter {
        group,
        tag,
        updated_since_ms: parse_since(&q.updated_since)?,
        text: q.q.clone().filter(|s| !s.is_empty()),
    };
    let (g, since) = (
        filter.group.map(|g| g.to_string()).unwrap_or_default(),
        filter
            .updated_since_ms
            .map(|s| s.to_string())
            .unwrap_or_default(),
    );
    let paging = Paging::new(
        &state,
        &user,
        ListKind::Households,
        q.village.as_deref(),
        &[
            &g,
            filter.tag.as_deref().unwrap_or(""),
            &since,
            filter.text.as_deref().unwrap_or(""),
        ],
        &q.limit,
        &q.cursor,
    )?;
    let page = match paging.spec.clone() {
        Some(spec) => blocking(&state, move |r| r.households_page(&filter, &spec)).await?,
        None => Page {
            items: Vec::new(),
            resume: None,
        },
    };
    Ok(paging.answer(page))
}

async fn create_household(
    State(state): State<Arc<AppState>>,
    Extension(cadre): Extension<Cadre>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let mut body = json_body(&body)?;
    check_create_area(&state, &cadre, &mut body, Some("profile"), "village")?;
    let result = state
        .records
        .create_household_once(&cadre.name, &body)
        .await;
    let created = count_write(&state, "hh", create_op(&result), result)?;
    Ok((create_status(&created), Json(created.record)).into_response())
}

/// The write counter's `op` of a create: `create_repeat` when a resend found it made before.
fn create_op<T>(result: &Result<Created<T>, RecordError>) -> &'static str {
    match result {
        Ok(c) if !c.created => "create_repeat",
        _ => "create",
    }
}

/// `201` for a record this request created, `200` for one a resend of the same `client_id`
/// found.
fn create_status<T>(created: &Created<T>) -> StatusCode {
    if created.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    }
}

async fn get_household(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(Json(state.records.get_household(&id)?).into_response())
}

async fn put_household(
    State(state): State<Arc<AppState>>,
    Extension(cadre): Extension<Cadre>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    update_household(state, cadre, id, body, UpdateMode::Replace).await
}

async fn patch_household(
    State(state): State<Arc<AppState>>,
    Extension(cadre): Extension<Cadre>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    update_household(state, cadre, id, body, UpdateMode::MergePatch).await
}

async fn update_household(
    state: Arc<AppState>,
    cadre: Cadre,
    id: String,
    body: Bytes,
    mode: UpdateMode,
) -> Result<Response, ApiError> {
    let body = json_body(&body)?;
    let result = state
        .records
        .update_household(&cadre.name, &id, &body, mode)
        .await;
    Ok(Json(count_write(&state, "hh", "update", result)?).into_response())
}

/// What a cadre types to confirm a deletion (it cannot be undone).
pub const DELETE_CONFIRMATION: &str = "确认删除";

/// `DELETE /api/v1/households/{id}` with `{"reason": <id>, "confirm": "确认删除"}`: deletes the
/// household on request (a cadre of its village only). Answered after the tombstone and the
/// removal are durable; the deletion then propagates by sync (`crate::deletion`).
async fn delete_household(
    State(state): State<Arc<AppState>>,
    Extension(cadre): Extension<Cadre>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let body = json_body(&body)?;
    let reason = body.get("reason").and_then(Value::as_str);
    let Some(reason) = reason.and_then(DeletionReason::parse) else {
        let ids: Vec<&str> = DeletionReason::ALL.iter().map(|r| r.id()).collect();
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            format!("请选择删除原因（reason）：{}", ids.join("、")),
        ));
    };
    if body.get("confirm").and_then(Value::as_str) != Some(DELETE_CONFIRMATION) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "confirm_required",
            format!("删除后无法恢复，并会同步删除所有节点上的该户数据。确认删除请在 confirm 中填写“{DELETE_CONFIRMATION}”"),
        ));
    }
    let hh = {
        let id = id.clone();
        blocking(&state, move |r| r.find_household(&id)).await?
    }
    .ok_or_else(|| RecordError::NotFound(id.clone()))?;
    if !cadre.may_write(hh.area()) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "只能删除本村的农户",
        ));
    }
    let result = state
        .records
        .delete_household(&cadre.name, &id, reason)
        .await;
    let tomb = count_write(&state, "hh", "delete", result)?;
    Ok(Json(json!({
        "deleted": id,
        "village": tomb.village,
        "date": tomb.date.to_string(),
        "reason": tomb.reason.id(),
        "reason_name": tomb.reason.zh_name(),
        "by": tomb.by,
        "message": "已删除该户，删除将同步到所有存有该户数据的节点",
    }))
    .into_response())
}

/// Query of the needs list.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NeedQuery {
    tag: Option<String>,
    status: Option<String>,
    updated_since: Option<String>,
    village: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

/// `GET /api/v1/needs`: one page of the reader's local needs, paged as households are.
async fn list_needs(
    State(state): State<Arc<AppState>>,
    Extension(user): Extension<User>,
    q: Result<Query<NeedQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let q = query_or_400(q)?;
    let filter = NeedFilter {
        tag: q.tag.clone().filter(|t| !t.is_empty()),
        status: q.status.clone().filter(|t| !t.is_empty()),
        updated_since_ms: parse_since(&q.updated_since)?,
    };
    let since = filter
        .updated_since_ms
        .map(|s| s.to_string())
        .unwrap_or_default();
    let paging = Paging::new(
        &state,
        &user,
        ListKind::Needs,
        q.village.as_deref(),
        &[
            filter.tag.as_deref().unwrap_or(""),
            filter.status.as_deref().unwrap_or(""),
            &since,
        ],
        &q.limit,
        &q.cursor,
    )?;
    let page = match paging.spec.clone() {
        Some(spec) => blocking(&state, move |r| r.needs_page(&filter, &spec)).await?,
        None => Page {
            items: Vec::new(),
            resume: None,
        },
    };
    Ok(paging.answer(page))
}

async fn create_need(
    State(state): State<Arc<AppState>>,
    Extension(cadre): Extension<Cadre>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let mut body = json_body(&body)?;
    check_create_area(&state, &cadre, &mut body, None, "area")?;
    let result = state.records.create_need_once(&cadre.name, &body).await;
    let created = count_write(&state, "need", create_op(&result), result)?;
    Ok((create_status(&created), Json(created.record)).into_response())
}

/// One need with the hub's expert suggestions joined in (`experts`, see [`need_experts`]).
#[derive(serde::Serialize)]
struct NeedDetail {
    #[serde(flatten)]
    record: crate::records::NeedRecord,
    experts: Vec<crate::need_experts::SuggestedExpert>,
}

async fn get_need(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let detail = blocking(&state, move |r| {
        let record = r.get_need(&id)?;
        let experts = crate::need_experts::suggestions(r.store(), &record.key, &record.need)?;
        Ok(NeedDetail { record, experts })
    })
    .await?;
    Ok(Json(detail).into_response())
}

async fn put_need(
    State(state): State<Arc<AppState>>,
    Extension(cadre): Extension<Cadre>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let body = json_body(&body)?;
    let result = state
        .records
        .update_need(&cadre.name, &id, &body, UpdateMode::Replace)
        .await;
    Ok(Json(count_write(&state, "need", "update", result)?).into_response())
}

async fn patch_need(
    State(state): State<Arc<AppState>>,
    Extension(cadre): Extension<Cadre>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let body = json_body(&body)?;
    let result = state
        .records
        .update_need(&cadre.name, &id, &body, UpdateMode::MergePatch)
        .await;
    Ok(Json(count_write(&state, "need", "update", result)?).into_response())
}

async fn taxonomy_tree() -> Response {
    let groups: Vec<Value> = taxonomy::Group::ALL
        .iter()
        .map(|g| {
            json!({
                "id": g.id(),
                "name": g.zh_name(),
                "tags": taxonomy::Tag::all()
                    .filter(|t| t.group() == *g)
                    .map(|t| json!({
                        "id": t.id(),
                        "name": t.zh_name(),
                        "plain": t.plain_words(),
                        "askable": t.is_askable(),
                    }))
                    .collect::<Vec<_>>(),
            })
        })
        .collect();
    Json(json!({ "groups": groups })).into_response()
}

async fn sync_status(State(state): State<Arc<AppState>>) -> Response {
    match &state.sync {
        Some(sync) => {
            let mut status = json!(sync.status());
            crate::places::name_peers(&mut status);
            Json(json!({ "enabled": true, "status": status })).into_response()
        }
        None => Json(json!({
            "enabled": false,
            "message": "本节点未启用同步（配置文件 [sync] enabled = true，并先运行 cunyun-node init）",
        }))
        .into_response(),
    }
}

async fn overview(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let o = blocking(&state, |r| r.overview()).await?;
    Ok(Json(o).into_response())
}

async fn status_page(State(state): State<Arc<AppState>>) -> Result<Html<String>, ApiError> {
    let o = blocking(&state, |r| r.overview()).await?;
    let stats = state.records.store().stats();
    let groups: String = o
        .by_group
        .iter()
        .map(|(g, n)| format!("<tr><td>第{g}小组</td><td>{n} 户</td></tr>"))
        .collect();
    let warn = if stats.quarantined > 0 {
        format!(
            "<p class=warn>注意：有 {} 份文档损坏已被隔离，请联系县级运维人员。</p>",
            stats.quarantined
        )
    } else {
        String::new()
    };
    Ok(Html(format!(
        r#"<!doctype html><html lang="zh-CN"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<title>村云节点 · {name}</title>
<style>body{{font-family:sans-serif;margin:1rem;max-width:40rem}}td{{padding:.2rem .8rem}}.warn{{color:#b00}}</style>
</head><body>
<h1>村云节点 · {name}</h1>
<p>服务范围：{place} <small>（{scope}）</small></p>
<p>已登记 <b>{hh}</b> 户，本地科技需求 <b>{needs}</b> 条，文档 {docs} 份。</p>
{warn}
<table>{groups}</table>
<p><a href="/">打开村干部应用</a>（需要登录）</p>
</body></html>"#,
        name = esc(&state.node_name),
        place = esc(&crate::places::label(&state.records.scope())),
        scope = state.records.scope(),
        hh = o.households,
        needs = o.needs,
        docs = stats.documents,
    )))
}

/// Lets a request through only with an open session and the right to do it, handing the handler
/// its [`User`].
async fn require_login(
    State(state): State<Arc<AppState>>,
    mut req: Request,
    next: Next,
) -> Response {
    let user = match session_user(&state.accounts, &req) {
        Ok(u) => u,
        Err(e) => return e.into_response(),
    };
    if let Err(e) = authorize(&state, &user, req.method(), req.uri().path()) {
        tracing::warn!(account = %user.name, role = %user.role, path = %req.uri().path(), "forbidden");
        return e.into_response();
    }
    req.extensions_mut().insert(user);
    next.run(req).await
}

/// Whether `user` may make this request (see the module docs). Records named in the path are
/// looked up; unknown ones are left to the handler (`404`).
pub(crate) fn authorize(
    state: &AppState,
    user: &User,
    method: &axum::http::Method,
    path: &str,
) -> Result<(), ApiError> {
    if path == "/api/v1/me" {
        return Ok(());
    }
    if user.role == Role::Admin {
        return Err(forbidden(
            "管理员账户只能管理账户和查看审计日志，不能查看或修改农户记录",
        ));
    }
    let write = is_write(method) && path != "/api/v1/derive-tags";
    if write && user.role != Role::Cadre {
        return Err(forbidden(format!(
            "{}账户只能查看，不能修改记录；请由村干部修改",
            user.role.zh_name()
        )));
    }
    let area = if let Some(rest) = path.strip_prefix("/api/v1/households/") {
        let id = rest.split('/').next().unwrap_or("");
        state.records.find_household(id)?.map(|k| *k.area())
    } else if let Some(rest) = path.strip_prefix("/api/v1/needs/") {
        let id = rest.split('/').next().unwrap_or("");
        match state.records.find_need(id) {
            Ok(k) => Some(*k.area()),
            Err(crate::records::RecordError::NotFound(_)) => None,
            Err(e) => return Err(e.into()),
        }
    } else {
        None
    };
    if let Some(area) = area {
        if !user.may_read(&area) || (write && !user.may_write(&area)) {
            return Err(forbidden(format!(
                "无权访问：该记录属于 {area}，不在您的管辖范围（{}）内",
                user.area_scope()
            )));
        }
    }
    if matches!(path, "/api/v1/overview" | "/api/v1/coverage")
        && !user.area_scope().contains_scope(&state.records.scope())
    {
        return Err(forbidden(format!(
            "无权查看：本节点的汇总涵盖 {}，超出您的管辖范围（{}）",
            state.records.scope(),
            user.area_scope()
        )));
    }
    Ok(())
}

/// Before a create: a missing area is the cadre's own village; an area of this node outside
/// the user's scope is `403` (one outside the node is left to validation: `422`).
fn check_create_area(
    state: &AppState,
    user: &User,
    body: &mut Value,
    part: Option<&str>,
    field: &str,
) -> Result<(), ApiError> {
    let obj = match part {
        Some(p) => body.get_mut(p),
        None => Some(&mut *body),
    };
    if let Some(Value::Object(m)) = obj {
        if user.scope.level() == cunyun_protocol::area::Level::Village {
            m.entry(field)
                .or_insert_with(|| Value::String(user.scope.to_string()));
        }
        if let Some(area) = m
            .get(field)
            .and_then(Value::as_str)
            .and_then(|a| cunyun_protocol::area::AreaCode::parse(a).ok())
        {
            if state.records.scope().contains(&area) && !user.may_write(&area) {
                return Err(forbidden(format!(
                    "无权在 {area} 新建记录：不在您的管辖范围（{}）内",
                    user.area_scope()
                )));
            }
        }
    }
    Ok(())
}

async fn me(Extension(cadre): Extension<Cadre>) -> Response {
    Json(json!({ "cadre": cadre })).into_response()
}
