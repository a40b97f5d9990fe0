//! The admin pages of a node or hub: account management and the audit view, for `admin`
//! accounts only (others get `403`, a zh-CN page when a browser opened a page
//! ([`crate::http::forbidden_page`]); without a session a page redirects to the login).
//!
//! | method | path | what |
//! |---|---|---|
//! | GET | `/admin/accounts` | accounts page (list, add, disable/enable, reset password) |
//! | GET | `/admin/api/accounts` | the accounts as JSON (no password hashes) |
//! | POST | `/admin/api/accounts` | `{"name","role","scope","password"}` → new account |
//! | POST | `/admin/api/accounts/{name}/disable`, `…/enable` | disable (its sessions end at once) / enable |
//! | POST | `/admin/api/accounts/{name}/password` | `{"password"}` → new password (its sessions end) |
//! | GET | `/admin/audit?who=&what=&from=&to=` | the audit view: the audit log and record changes from the Automerge history |
//! | GET | `/admin/audit.csv?…` | the log events and the newest record changes as CSV, streamed |
//! | GET | `/admin/admin.js` | the page script (sends the CSRF header) |
//!
//! The same routes serve the node (`cunyun_node::state::AppState`) and the hub, through
//! [`AdminBackend`]. Every change is made as the logged-in admin and lands in the audit log.
//! The audit view joins `<data_dir>/audit.jsonl`, `<data_dir>/ca/audit.jsonl` (a county's CA:
//! enrollment tokens, certificates, revocations) and the record changes of the store.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::accounts::{AccountError, Accounts, Role, User};
use crate::audit::{AuditEvent, AuditFilter};
use crate::html::esc;
use crate::http::ApiError;

/// Most rows the audit view shows (newest first, kept in a bounded heap while reading); the
/// CSV export streams every log event and this many record changes.
pub const MAX_VIEW_ROWS: usize = 2000;

/// What the admin pages need from a node or hub.
pub trait AdminBackend: Send + Sync + 'static {
    /// Its accounts (and through them its audit log).
    fn accounts(&self) -> &Accounts;
    /// Record changes from the Automerge history of its documents, filtered by `filter`, at
    /// most `limit` newest ([`crate::audit::record_changes`] for a node's [`DocStore`](crate::store::DocStore)).
    fn record_changes(&self, filter: &AuditFilter, limit: usize) -> Vec<AuditEvent>;
    /// The area it serves.
    fn scope(&self) -> cunyun_protocol::area::AreaScope;
    /// Shown in page titles (`村云节点` / `村云省级枢纽`).
    fn title(&self) -> &'static str;
}

/// The admin routes over `state`, guarded: admins only.
pub fn routes<T: AdminBackend>(state: Arc<T>) -> Router<Arc<T>> {
    Router::new()
        .route("/admin/accounts", get(accounts_page::<T>))
        .route(
            "/admin/api/accounts",
            get(list_accounts::<T>).post(add_account::<T>),
        )
        .route("/admin/api/accounts/{name}/{action}", post(change::<T>))
        .route("/admin/audit", get(audit_page::<T>))
        .route("/admin/audit.csv", get(audit_csv::<T>))
        .route_layer(middleware::from_fn_with_state(state, guard::<T>))
}

/// The unguarded routes: the login page (`/login`) and the page script.
pub fn public_routes<T: AdminBackend>() -> Router<Arc<T>> {
    Router::new()
        .route("/login", get(login_page::<T>))
        .route("/admin/admin.js", get(script))
}

async fn login_page<T: AdminBackend>(State(state): State<Arc<T>>) -> Html<String> {
    Html(format!(
        r#"<!doctype html><html lang="zh-CN"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<title>{title} · 登录</title>
<style>body{{font-family:sans-serif;margin:2rem auto;max-width:22rem}}label{{display:block;margin:.6rem 0}}input{{width:100%;padding:.4rem}}#msg{{color:#b00}}</style>
</head><body><h1>{title} · 登录</h1>
<form id="login"><label>用户名 <input name="name" autocomplete="username" required></label>
<label>密码 <input name="password" type="password" autocomplete="current-password" required></label>
<button>登录</button></form><p id="msg" role="alert"></p>
<script src="/admin/admin.js"></script></body></html>"#,
        title = state.title()
    ))
}

/// Only admins pass (after the session and CSRF checks of [`crate::http::session_user`]).
async fn guard<T: AdminBackend>(
    State(state): State<Arc<T>>,
    mut req: Request,
    next: Next,
) -> Response {
    let user = match crate::http::session_user(state.accounts(), &req) {
        Ok(u) => u,
        Err(e) => {
            if e.status() == StatusCode::UNAUTHORIZED
                && req.method() == axum::http::Method::GET
                && !req.uri().path().starts_with("/admin/api/")
            {
                return Redirect::to(&format!("/login?next={}", req.uri().path())).into_response();
            }
            return e.into_response();
        }
    };
    if user.role != Role::Admin {
        tracing::warn!(account = %user.name, path = %req.uri().path(), "admin page forbidden");
        if crate::http::wants_page(&req) {
            return crate::http::forbidden_page(
                state.title(),
                "只有管理员可以管理账户和查看审计日志",
                req.uri().path(),
            );
        }
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "只有管理员可以管理账户和查看审计日志",
        )
        .into_response();
    }
    req.extensions_mut().insert(user);
    next.run(req).await
}

fn page(title: &str, body: &str) -> Html<String> {
    Html(format!(
        r#"<!doctype html><html lang="zh-CN"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<title>{title}</title>
<style>body{{font-family:sans-serif;margin:1rem;max-width:60rem}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.2rem .5rem;text-align:left}}.off{{color:#999}}#msg{{color:#b00}}form{{margin:.5rem 0}}</style>
</head><body>
<nav><a href="/admin/accounts">账户管理</a> · <a href="/admin/audit">审计日志</a> · <button id="logout">退出登录</button></nav>
{body}
<script src="/admin/admin.js"></script>
</body></html>"#,
        title = esc(title),
    ))
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    tracing::error!(error = %e, "admin request failed");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "服务器内部错误，请稍后重试",
    )
}

fn account_error(e: AccountError) -> ApiError {
    match e {
        AccountError::Io { .. }
        | AccountError::Format { .. }
        | AccountError::Hash(_)
        | AccountError::Audit(_) => internal(e),
        AccountError::NoSuchAccount(_) => {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", e.to_string())
        }
        AccountError::Exists(_) => ApiError::new(StatusCode::CONFLICT, "exists", e.to_string()),
        other => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            other.to_string(),
        ),
    }
}

async fn accounts_page<T: AdminBackend>(
    State(state): State<Arc<T>>,
    Extension(user): Extension<User>,
) -> Result<Html<String>, ApiError> {
    let list = state.accounts().list().map_err(account_error)?;
    let rows: String = list
        .iter()
        .map(|a| {
            format!(
                r#"<tr class="{cls}" data-name="{name}"><td>{name}</td><td>{role}</td><td>{scope}</td><td>{state}</td><td>
<button data-act="{toggle}">{toggle_zh}</button>
<button data-act="password">重置密码</button></td></tr>"#,
                cls = if a.disabled { "off" } else { "" },
                name = esc(&a.name),
                role = a.role.zh_name(),
                scope = a.scope.scope(),
                state = if a.disabled { "已停用" } else { "正常" },
                toggle = if a.disabled { "enable" } else { "disable" },
                toggle_zh = if a.disabled { "启用" } else { "停用" },
            )
        })
        .collect();
    let roles: String = Role::ALL
        .iter()
        .map(|r| format!(r#"<option value="{}">{}</option>"#, r.as_str(), r.zh_name()))
        .collect();
    Ok(page(
        &format!("{} · 账户管理", state.title()),
        &format!(
            r#"<h1>账户管理</h1><p>当前管理员：{me}　服务范围：{scope}</p><p id="msg" role="alert"></p>
<table id="accounts"><thead><tr><th>用户名</th><th>角色</th><th>管辖范围</th><th>状态</th><th>操作</th></tr></thead><tbody>{rows}</tbody></table>
<h2>新建账户</h2>
<form id="add"><label>用户名 <input name="name" required minlength="2" maxlength="32"></label>
<label>角色 <select name="role">{roles}</select></label>
<label>管辖范围（地区代码）<input name="scope" required></label>
<label>密码（至少8个字符）<input name="password" type="password" required minlength="8"></label>
<button>创建</button></form>"#,
            me = esc(&user.name),
            scope = state.scope(),
        ),
    ))
}

async fn list_accounts<T: AdminBackend>(State(state): State<Arc<T>>) -> Result<Response, ApiError> {
    let list = state.accounts().list().map_err(account_error)?;
    let items: Vec<_> = list
        .iter()
        .map(|a| {
            json!({
                "name": a.name, "role": a.role, "scope": a.scope,
                "disabled": a.disabled, "created_ms": a.created_ms,
            })
        })
        .collect();
    Ok(Json(json!({ "items": items })).into_response())
}

#[derive(Deserialize)]
struct NewAccount {
    name: String,
    role: String,
    scope: String,
    password: String,
}

#[derive(Deserialize)]
struct NewPassword {
    password: String,
}

async fn blocking_accounts<T: AdminBackend, R: Send + 'static>(
    state: &Arc<T>,
    f: impl FnOnce(&Accounts) -> Result<R, AccountError> + Send + 'static,
) -> Result<R, ApiError> {
    let st = state.clone();
    tokio::task::spawn_blocking(move || f(st.accounts()))
        .await
        .map_err(internal)?
        .map_err(account_error)
}

async fn add_account<T: AdminBackend>(
    State(state): State<Arc<T>>,
    Extension(user): Extension<User>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let b: NewAccount = serde_json::from_slice(&body).map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "请求应为 {\"name\", \"role\", \"scope\", \"password\"}",
        )
    })?;
    let a = blocking_accounts(&state, move |acc| {
        let role = Role::parse(&b.role)?;
        acc.create(&user.name, &b.name, role, &b.scope, &b.password)
    })
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "name": a.name, "role": a.role, "scope": a.scope })),
    )
        .into_response())
}

async fn change<T: AdminBackend>(
    State(state): State<Arc<T>>,
    Extension(user): Extension<User>,
    Path((name, action)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    match action.as_str() {
        "disable" | "enable" => {
            if action == "disable" && name == user.name {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid",
                    "不能停用自己的账户",
                ));
            }
            let off = action == "disable";
            blocking_accounts(&state, move |a| a.set_disabled(&user.name, &name, off)).await?;
        }
        "password" => {
            let b: NewPassword = serde_json::from_slice(&body).map_err(|_| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    "请求应为 {\"password\": 新密码}",
                )
            })?;
            blocking_accounts(&state, move |a| {
                a.set_password(&user.name, &name, &b.password)
            })
            .await?;
        }
        _ => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "没有这个操作",
            ))
        }
    }
    Ok(Json(json!({ "ok": true })).into_response())
}

/// Query of the audit view: who (exact account), what (action or record key contains), dates.
#[derive(Debug, Default, Deserialize)]
struct AuditQuery {
    who: Option<String>,
    what: Option<String>,
    from: Option<String>,
    to: Option<String>,
}

fn filter_of(q: &AuditQuery) -> Result<AuditFilter, ApiError> {
    let time = |name: &str, v: &Option<String>| -> Result<Option<u64>, ApiError> {
        match v.as_deref().filter(|s| !s.is_empty()) {
            None => Ok(None),
            Some(s) => crate::timefmt::parse_time_ms(s).map(Some).ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_query",
                    format!("查询参数 {name} 有误：应为 YYYY-MM-DD 或毫秒时间戳"),
                )
            }),
        }
    };
    Ok(AuditFilter {
        who: q.who.clone().filter(|s| !s.is_empty()),
        what: q.what.clone().filter(|s| !s.is_empty()),
        from_ms: time("from", &q.from)?,
        // A bare date as the end means the whole of that day.
        to_ms: time("to", &q.to)?.map(|t| {
            if q.to.as_deref().is_some_and(|s| s.len() == 10) {
                t + 86_400_000
            } else {
                t
            }
        }),
    })
}

/// The log events and the record changes matching `filter`, newest first.
fn audit_rows<T: AdminBackend>(
    state: &T,
    filter: &AuditFilter,
) -> Result<(Vec<AuditEvent>, usize), ApiError> {
    let mut newest = crate::audit::NewestEvents::new(MAX_VIEW_ROWS);
    for log in audit_logs(state) {
        log.for_each(filter, |e| {
            newest.push(e);
            true
        })
        .map_err(internal)?;
    }
    for e in state.record_changes(filter, MAX_VIEW_ROWS) {
        newest.push(e);
    }
    let total = newest.seen();
    Ok((newest.into_newest_first(), total))
}

/// The audit logs of the data directory: the accounts' and, when there is one, the events of a
/// CA kept in it (a county's `ca/`: tokens, certificates, revocations).
fn audit_logs<T: AdminBackend>(state: &T) -> [crate::audit::Audit; 2] {
    [
        crate::audit::Audit::open(state.accounts().dir()),
        crate::audit::Audit::open(&state.accounts().dir().join("ca")),
    ]
}

/// `YYYY-MM-DD HH:MM:SS` in China Standard Time (the raw milliseconds past the year 9999).
fn fmt_time(ms: u64) -> String {
    match crate::clock::cst_datetime(ms) {
        Some(t) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        None => ms.to_string(),
    }
}

fn query_or_400(
    q: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<AuditQuery, ApiError> {
    q.map(|Query(q)| q).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_query",
            format!("查询参数有误：{}", e.body_text()),
        )
    })
}

async fn audit_page<T: AdminBackend>(
    State(state): State<Arc<T>>,
    q: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Html<String>, ApiError> {
    let q = query_or_400(q)?;
    let filter = filter_of(&q)?;
    let st = state.clone();
    let f = filter.clone();
    let (rows, total) = tokio::task::spawn_blocking(move || audit_rows(&*st, &f))
        .await
        .map_err(internal)??;
    let body: String = rows
        .iter()
        .map(|e| {
            format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                fmt_time(e.ts_ms),
                esc(&e.actor),
                esc(action_zh(&e.action)),
                esc(&e.target),
                if e.ok { "成功" } else { "失败" },
                esc(&e.detail)
            )
        })
        .collect();
    let v = |o: &Option<String>| esc(o.as_deref().unwrap_or(""));
    let qs = serde_urlencoded_pairs(&q);
    Ok(page(
        &format!("{} · 审计日志", state.title()),
        &format!(
            r#"<h1>审计日志</h1>
<form method="get"><label>操作人 <input name="who" value="{who}"></label>
<label>内容（操作或记录）<input name="what" value="{what}"></label>
<label>起 <input name="from" value="{from}" placeholder="2026-12-01"></label>
<label>止 <input name="to" value="{to}" placeholder="2026-12-31"></label>
<button>筛选</button> <a href="/admin/audit.csv{qs}">导出CSV</a></form>
<p>共 {total} 条{more}</p>
<table id="audit"><thead><tr><th>时间</th><th>操作人</th><th>操作</th><th>对象</th><th>结果</th><th>说明</th></tr></thead><tbody>{body}</tbody></table>"#,
            who = v(&q.who),
            what = v(&q.what),
            from = v(&q.from),
            to = v(&q.to),
            more = if total > MAX_VIEW_ROWS {
                format!("，显示最新 {MAX_VIEW_ROWS} 条，全部请导出CSV")
            } else {
                String::new()
            },
        ),
    ))
}

/// `?who=…&…` of the set filters, for the CSV link.
fn serde_urlencoded_pairs(q: &AuditQuery) -> String {
    let pairs: Vec<String> = [
        ("who", &q.who),
        ("what", &q.what),
        ("from", &q.from),
        ("to", &q.to),
    ]
    .iter()
    .filter_map(|(k, v)| {
        v.as_deref()
            .filter(|s| !s.is_empty())
            .map(|v| format!("{k}={}", esc(&percent(v))))
    })
    .collect();
    if pairs.is_empty() {
        String::new()
    } else {
        format!("?{}", pairs.join("&"))
    }
}

fn percent(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The Chinese name of an audit action.
pub fn action_zh(action: &str) -> &str {
    match action {
        "login" => "登录",
        "login_failed" => "登录失败",
        "logout" => "退出登录",
        "account_add" => "新建账户",
        "account_passwd" => "重置密码",
        "account_disable" => "停用账户",
        "account_enable" => "启用账户",
        "account_remove" => "删除账户",
        "enroll_token_issued" => "签发注册令牌",
        "enroll_token_used" => "使用注册令牌",
        "cert_issued" => "签发证书",
        "revoke" => "吊销",
        "record_change" => "修改记录",
        other => other,
    }
}

/// One CSV field, quoted when needed; a leading `=`, `+`, `-` or `@` is prefixed with `'` so a
/// spreadsheet does not run it as a formula.
fn csv_field(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@']) {
        format!("'{s}")
    } else {
        s.to_string()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

/// The CSV export, streamed: the audit log events (each log oldest first, read a line at a
/// time), then the newest [`MAX_VIEW_ROWS`] record changes, oldest first. Rows are sent in
/// chunks through a small channel as the client reads them, so memory does not grow with the
/// log; a client that goes away stops the export.
async fn audit_csv<T: AdminBackend>(
    State(state): State<Arc<T>>,
    q: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let filter = filter_of(&query_or_400(q)?)?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::task::spawn_blocking(move || {
        let mut chunk =
            String::from("\u{feff}时间,毫秒时间戳,操作人,操作,操作代码,对象,结果,说明\r\n");
        // Sends the chunk once it is big enough (or `last`); false when the client is gone.
        let flush = |chunk: &mut String, last: bool| {
            if chunk.len() < 16 * 1024 && !last {
                return true;
            }
            let bytes = Bytes::from(std::mem::take(chunk));
            tx.blocking_send(Ok(bytes)).is_ok()
        };
        let mut open = true;
        for log in audit_logs(&*state) {
            let read = log.for_each(&filter, |e| {
                csv_row(&mut chunk, &e);
                open = flush(&mut chunk, false);
                open
            });
            if let Err(e) = read {
                tracing::error!(error = %e, "audit export failed");
                let _ = tx.blocking_send(Err(std::io::Error::other("audit log unreadable")));
                return;
            }
            if !open {
                return;
            }
        }
        let mut changes = state.record_changes(&filter, MAX_VIEW_ROWS);
        changes.reverse();
        for e in &changes {
            csv_row(&mut chunk, e);
            if !flush(&mut chunk, false) {
                return;
            }
        }
        flush(&mut chunk, true);
    });
    let body = axum::body::Body::from_stream(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }));
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"audit.csv\"",
            ),
        ],
        body,
    )
        .into_response())
}

/// Appends one event as a CSV line.
fn csv_row(out: &mut String, e: &AuditEvent) {
    out.push_str(
        &[
            fmt_time(e.ts_ms),
            e.ts_ms.to_string(),
            csv_field(&e.actor),
            action_zh(&e.action).to_string(),
            e.action.clone(),
            csv_field(&e.target),
            if e.ok { "成功" } else { "失败" }.to_string(),
            csv_field(&e.detail),
        ]
        .join(","),
    );
    out.push_str("\r\n");
}

async fn script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        include_str!("../web/admin.js"),
    )
        .into_response()
}

/// Whether the request reached us over TLS: on the node's own HTTPS listener (which marks its
/// requests with [`crate::certs::webtls::PlainHttpPort`]) or through a proxy (`X-Forwarded-Proto`).
fn over_tls(
    https: Option<&crate::certs::webtls::PlainHttpPort>,
    headers: &axum::http::HeaderMap,
) -> bool {
    https.is_some()
        || headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

/// The `Set-Cookie` value for `token` (empty and expired to log out); `Secure` when `secure`
/// ([`over_tls`]).
fn session_cookie(token: &str, max_age_s: u64, secure: bool) -> String {
    format!(
        "{}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_s}{}",
        crate::accounts::COOKIE,
        if secure { "; Secure" } else { "" }
    )
}

/// The `Set-Cookie` value of the CSRF token: readable by the page's script (not `HttpOnly`).
fn csrf_cookie(token: &str, max_age_s: u64, secure: bool) -> String {
    session_cookie(token, max_age_s, secure)
        .replacen(crate::accounts::COOKIE, crate::accounts::CSRF_COOKIE, 1)
        .replace("; HttpOnly", "")
}

/// `POST /api/v1/login` of a node or hub: `{"name", "password"}` → the session cookie
/// (`HttpOnly; SameSite=Strict`) and the CSRF cookie; `401` wrong, `429` locked out, `403`
/// disabled.
pub async fn login<T: AdminBackend>(
    State(state): State<Arc<T>>,
    https: Option<axum::Extension<crate::certs::webtls::PlainHttpPort>>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    crate::http::json_body(&body)?;
    let body = crate::http::parse_login(&body)?;
    let secure = over_tls(https.as_ref().map(|e| &e.0), &headers);
    let st = state.clone();
    let result =
        tokio::task::spawn_blocking(move || st.accounts().login(&body.name, &body.password))
            .await
            .map_err(|_| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "服务器内部错误，请稍后重试",
                )
            })?;
    match result {
        Ok(login) => {
            let max_age = crate::accounts::SESSION_MS / 1000;
            let cookie = session_cookie(&login.token, max_age, secure);
            let csrf = csrf_cookie(&login.csrf, max_age, secure);
            Ok((
                axum::response::AppendHeaders([
                    (header::SET_COOKIE, cookie),
                    (header::SET_COOKIE, csrf),
                ]),
                Json(json!({ "cadre": login.user, "csrf": login.csrf })),
            )
                .into_response())
        }
        Err(e @ AccountError::Disabled) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "disabled",
            e.to_string(),
        )),
        Err(e @ AccountError::BadCredentials) => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "bad_credentials",
            e.to_string(),
        )),
        Err(e @ AccountError::Locked(_)) => Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "locked",
            e.to_string(),
        )),
        Err(e) => {
            tracing::error!(error = %e, "login failed");
            Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "服务器内部错误，请稍后重试",
            ))
        }
    }
}

/// `POST /api/v1/logout`: ends the session (with the CSRF token when the session is open).
pub async fn logout<T: AdminBackend>(
    State(state): State<Arc<T>>,
    req: Request,
) -> Result<Response, ApiError> {
    let headers = req.headers().clone();
    if let Some(token) = crate::http::session_token(&headers) {
        if state.accounts().session(&token).is_some() {
            crate::http::session_user(state.accounts(), &req)?;
        }
        state.accounts().logout(&token).map_err(|e| {
            tracing::error!(error = %e, "logout failed");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "服务器内部错误，请稍后重试",
            )
        })?;
    }
    let secure = over_tls(
        req.extensions()
            .get::<crate::certs::webtls::PlainHttpPort>(),
        &headers,
    );
    let cookie = session_cookie("", 0, secure);
    let csrf = csrf_cookie("", 0, secure);
    Ok((
        axum::response::AppendHeaders([(header::SET_COOKIE, cookie), (header::SET_COOKIE, csrf)]),
        Json(json!({ "ok": true })),
    )
        .into_response())
}
