//! Logins on the hub: accounts ([`cunyun_platform::accounts`], in `<data_dir>/accounts.json`,
//! managed with `cunyun-hub user …` and `/admin/accounts`), the login page `/login`,
//! `/api/v1/login` and `/api/v1/logout`, and the guard on every other route.
//!
//! Every route except `/healthz`, `/metrics`, the login page and login/logout needs a session
//! of a `hub_operator` or `admin` account: without one an API call gets `401` (a page a redirect
//! to `/login`), another role `403` (JSON for API clients, the zh-CN page 「没有权限」 with a login
//! link for a browser opening a page, [`cunyun_platform::http::forbidden_page`]). State-changing requests also need the CSRF header
//! (`x-csrf-token` = the `cunyun_csrf` cookie) and are refused cross-site, as on the node
//! ([`cunyun_platform::http::csrf_guard`]). The admin pages (`/admin/accounts`, `/admin/audit`,
//! `/admin/audit.csv`) are the node's ([`cunyun_platform::admin`]), for admins only.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::post;
use axum::Router;
use cunyun_platform::accounts::Role;
use cunyun_platform::admin::AdminBackend;
use cunyun_platform::http::ApiError;

use crate::Hub;

impl AdminBackend for Hub {
    fn accounts(&self) -> &cunyun_platform::accounts::Accounts {
        &self.accounts
    }
    fn record_changes(
        &self,
        filter: &cunyun_platform::audit::AuditFilter,
        limit: usize,
    ) -> Vec<cunyun_platform::audit::AuditEvent> {
        let entries = match self.store.entries(&self.scope, None) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "audit view: listing documents failed");
                return Vec::new();
            }
        };
        let store = self.store.as_ref();
        let docs = entries
            .into_iter()
            .filter_map(|(key, _)| Some((key.clone(), store.get(&key).ok()??)));
        cunyun_platform::audit::record_changes_of(docs, filter, limit)
    }
    fn scope(&self) -> cunyun_protocol::area::AreaScope {
        self.scope
    }
    fn title(&self) -> &'static str {
        "村云省级枢纽"
    }
}

/// Wraps the hub's operator routes (`guarded`) with the login guard and adds the public and
/// admin routes.
pub fn with_auth(hub: Arc<Hub>, guarded: Router<Arc<Hub>>) -> Router<Arc<Hub>> {
    Router::new()
        .route("/api/v1/login", post(cunyun_platform::admin::login::<Hub>))
        .route(
            "/api/v1/logout",
            post(cunyun_platform::admin::logout::<Hub>),
        )
        .merge(cunyun_platform::admin::public_routes::<Hub>())
        .merge(cunyun_platform::admin::routes(hub.clone()))
        .merge(guarded.route_layer(middleware::from_fn_with_state(hub, require_operator)))
        .layer(middleware::from_fn(cunyun_platform::http::csrf_guard))
}

/// Lets through hub operators and admins with an open session (and the CSRF token for writes).
async fn require_operator(State(hub): State<Arc<Hub>>, mut req: Request, next: Next) -> Response {
    let user = match cunyun_platform::http::session_user(&hub.accounts, &req) {
        Ok(u) => u,
        Err(e) => {
            let page =
                req.method() == axum::http::Method::GET && !req.uri().path().starts_with("/api/");
            if e.status() == StatusCode::UNAUTHORIZED && page {
                return Redirect::to(&format!("/login?next={}", req.uri().path())).into_response();
            }
            return e.into_response();
        }
    };
    if !matches!(user.role, Role::HubOperator | Role::Admin) {
        tracing::warn!(account = %user.name, role = %user.role, path = %req.uri().path(), "hub route forbidden");
        let why = format!(
            "{}账户不能使用省级枢纽；需要省级运维或管理员账户",
            user.role.zh_name()
        );
        if cunyun_platform::http::wants_page(&req) {
            return cunyun_platform::http::forbidden_page("村云省级枢纽", &why, req.uri().path());
        }
        return ApiError::new(StatusCode::FORBIDDEN, "forbidden", why).into_response();
    }
    // Writes made on this request are authored by the operator (`crate::operator::Operator`).
    req.extensions_mut()
        .insert(crate::operator::Operator(user.name.clone()));
    req.extensions_mut().insert(user);
    next.run(req).await
}
