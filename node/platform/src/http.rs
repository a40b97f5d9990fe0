//! The HTTP pieces every web surface shares, on the node and on the hub: the one error type
//! ([`ApiError`], JSON `{"error": code, "message": 中文说明}`), JSON bodies with a Chinese error,
//! the session cookie and the login body, and the guards: [`session_user`] (an open session,
//! and the CSRF token on state-changing requests) and [`csrf_guard`] (no state-changing request
//! a browser marks as coming from another site).
//!
//! A browser that opens a page it may not see gets a zh-CN HTML page ([`wants_page`],
//! [`forbidden_page`]: 「没有权限」, why, and a link to log in with another account); JSON API
//! clients (`/api/…` paths, `Accept: application/json`) keep the JSON error.
//!
//! CSRF: login sets the cookie `cunyun_csrf` (not `HttpOnly`) beside the session cookie; every
//! POST/PUT/PATCH/DELETE with a session must carry `x-csrf-token` equal to it, else `403
//! {"error":"csrf"}` and nothing changes.

use axum::body::Bytes;
use axum::extract::Request;
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::accounts::{Accounts, User, COOKIE};

/// An error as the API reports it.
pub struct ApiError {
    status: StatusCode,
    body: Value,
}

impl ApiError {
    /// An error answered with `status` and `{"error": code, "message": message}`.
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            body: json!({ "error": code, "message": message.into() }),
        }
    }
}

impl ApiError {
    /// An error answered with `status` and a body of its own shape (e.g. with `fields`).
    pub fn with_body(status: StatusCode, body: Value) -> ApiError {
        ApiError { status, body }
    }

    /// The HTTP status it answers with.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

/// Parses a request body as JSON, with a Chinese error for anything else.
pub fn json_body(body: &Bytes) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_json",
            format!(
                "请求内容不是有效的JSON（第{}行第{}列）",
                e.line(),
                e.column()
            ),
        )
    })
}

/// The session token carried by the request's cookie, if any.
pub fn session_token(headers: &HeaderMap) -> Option<String> {
    cookie(headers, COOKIE).map(str::to_string)
}

/// `403` with `message`.
pub fn forbidden(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
}

/// Whether `req` is a browser opening a page, to be answered with an HTML page rather than a
/// JSON error: a GET or HEAD outside the JSON API (no `/api/` in its path) whose `Accept` does not
/// ask for JSON.
pub fn wants_page(req: &Request) -> bool {
    let accept = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    matches!(
        *req.method(),
        axum::http::Method::GET | axum::http::Method::HEAD
    ) && !req.uri().path().contains("/api/")
        && !accept.contains("application/json")
}

/// The zh-CN page `403` for a browser whose account may not open `path`: 「没有权限」, `message`
/// (plain text, escaped here) and links to log in with another account (back to `path`) and
/// to the start page. `site` names the system in the title (`村云省级枢纽`).
pub fn forbidden_page(site: &str, message: &str, path: &str) -> Response {
    use crate::html::esc;
    let next: String = path
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'/' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect();
    let html = format!(
        r#"<!doctype html><html lang="zh-CN"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<title>没有权限 · {site}</title>
<style>body{{font-family:sans-serif;margin:2rem auto;max-width:32rem;padding:0 1rem}}.why{{color:#b00}}</style>
</head><body><h1>没有权限</h1><p class="why">{message}</p>
<p><a href="/login?next={next}">换一个账户登录</a> · <a href="/">返回首页</a></p></body></html>"#,
        site = esc(site),
        message = esc(message),
    );
    (
        StatusCode::FORBIDDEN,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        html,
    )
        .into_response()
}

/// `401`: no open session.
fn unauthenticated() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
        "请先登录（登录已过期或尚未登录）",
    )
}

/// Whether a request method changes state (and so needs the CSRF token).
pub fn is_write(method: &axum::http::Method) -> bool {
    !matches!(
        *method,
        axum::http::Method::GET | axum::http::Method::HEAD | axum::http::Method::OPTIONS
    )
}

/// The value of cookie `name` in `headers`.
pub fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn csrf_error(message: &str) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "csrf", message)
}

/// Whether the browser says this request comes from another site: `Sec-Fetch-Site` other than
/// `same-origin`/`none`, or an `Origin` whose host differs from `Host`. Requests without either
/// header (curl, the CLI, tests) are not cross-site.
pub fn cross_site(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        if !matches!(site, "same-origin" | "none") {
            return true;
        }
    }
    match headers.get(header::ORIGIN) {
        None => false,
        Some(_) => !same_origin_or_none(headers),
    }
}

/// Refuses every state-changing request a browser marks as coming from another site (the
/// villager page's POSTs have no session, so this is their CSRF defence; for logged-in requests
/// it comes on top of the token check in [`session_user`]).
pub async fn csrf_guard(req: Request, next: Next) -> Response {
    if is_write(req.method()) && cross_site(req.headers()) {
        tracing::warn!(
            path = %req.uri().path(),
            origin = ?req.headers().get(header::ORIGIN),
            "cross-site write refused"
        );
        return csrf_error("拒绝跨站请求：请在本系统页面内操作").into_response();
    }
    next.run(req).await
}

/// Whether the request's `x-csrf-token` equals the session's token (constant time).
pub fn csrf_ok(headers: &HeaderMap, expected: &str) -> bool {
    let Some(got) = headers.get("x-csrf-token").and_then(|v| v.to_str().ok()) else {
        return false;
    };
    !expected.is_empty()
        && got.len() == expected.len()
        && got
            .bytes()
            .zip(expected.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// The session's user, after the CSRF check for state-changing requests.
pub fn session_user(accounts: &Accounts, req: &Request) -> Result<User, ApiError> {
    let (user, csrf) = session_token(req.headers())
        .and_then(|t| accounts.session_with_csrf(&t))
        .ok_or_else(unauthenticated)?;
    if is_write(req.method()) && !csrf_ok(req.headers(), &csrf) {
        tracing::warn!(account = %user.name, path = %req.uri().path(), "csrf token missing or wrong");
        return Err(csrf_error(
            "请求缺少安全令牌或令牌不符（x-csrf-token），请刷新页面后重试",
        ));
    }
    Ok(user)
}

/// Whether the request has no `Origin`, or one whose host and port equal the `Host` header.
pub fn same_origin_or_none(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let (Ok(origin), Some(Ok(host))) = (
        origin.to_str(),
        headers.get(header::HOST).map(|h| h.to_str()),
    ) else {
        return false;
    };
    let authority = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
        .unwrap_or("");
    !authority.is_empty() && authority.eq_ignore_ascii_case(host)
}

/// Login body.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct LoginBody {
    /// Account name.
    pub name: String,
    /// Password.
    pub password: String,
}

/// Longest account name and password a login may carry, in bytes (hashing a huge password is
/// work an attacker should not get for free).
pub const MAX_LOGIN_FIELD_BYTES: usize = 1024;

/// Parses a login body; pure, so it is fuzzed (`node/fuzz`, target `node_api_json`).
pub fn parse_login(body: &[u8]) -> Result<LoginBody, ApiError> {
    let bad = || {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "请求应为 {\"name\": 用户名, \"password\": 密码}",
        )
    };
    let body: LoginBody = serde_json::from_slice(body).map_err(|_| bad())?;
    if body.name.len() > MAX_LOGIN_FIELD_BYTES || body.password.len() > MAX_LOGIN_FIELD_BYTES {
        return Err(bad());
    }
    Ok(body)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    fn request(method: &str, path: &str, accept: Option<&str>) -> Request {
        let mut r = Request::builder().method(method).uri(path);
        if let Some(a) = accept {
            r = r.header(header::ACCEPT, a);
        }
        r.body(axum::body::Body::empty()).unwrap()
    }

    #[test]
    fn browsers_opening_pages_get_pages_and_api_clients_json() {
        let browser = Some("text/html,application/xhtml+xml,*/*;q=0.8");
        assert!(wants_page(&request("GET", "/admin/accounts", browser)));
        assert!(wants_page(&request("GET", "/needs", None)));
        assert!(!wants_page(&request("GET", "/api/v1/content", browser)));
        assert!(!wants_page(&request("GET", "/admin/api/accounts", browser)));
        assert!(!wants_page(&request(
            "GET",
            "/needs",
            Some("application/json")
        )));
        assert!(!wants_page(&request("POST", "/needs", browser)));
    }

    #[tokio::test]
    async fn the_forbidden_page_is_chinese_html_with_a_login_link() {
        let resp = forbidden_page("村云省级枢纽", "只有<管理员>可以", "/admin/accounts?x=\"1");
        assert_eq!(resp.status(), StatusCode::FORBIDDEN);
        assert!(resp.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html"));
        let body = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .unwrap();
        let html = String::from_utf8(body.to_vec()).unwrap();
        assert!(html.contains("lang=\"zh-CN\"") && html.contains("<h1>没有权限</h1>"));
        assert!(html.contains("只有&lt;管理员&gt;可以"), "{html}");
        assert!(
            html.contains("href=\"/login?next=/admin/accounts%3Fx%3D%221\""),
            "{html}"
        );
    }

    #[test]
    fn cross_origin_upgrades_lose_their_credentials() {
        assert!(same_origin_or_none(&headers(&[("host", "10.0.0.2:8080")])));
        assert!(same_origin_or_none(&headers(&[
            ("host", "10.0.0.2:8080"),
            ("origin", "http://10.0.0.2:8080")
        ])));
        assert!(!same_origin_or_none(&headers(&[
            ("host", "10.0.0.2:8080"),
            ("origin", "http://evil.example")
        ])));
        assert!(!same_origin_or_none(&headers(&[
            ("host", "10.0.0.2:8080"),
            ("origin", "http://10.0.0.2:9090")
        ])));
        assert!(!same_origin_or_none(&headers(&[("origin", "null")])));
    }
}
