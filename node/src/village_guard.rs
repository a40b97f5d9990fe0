//! The village boundary of the `/api/v1` routes: a cadre works for one village, and a node (a
//! county node holds many villages) answers `403` to any request of theirs that names a
//! household or need record of another village — reads, updates, queued edits, QR codes,
//! recommendations and feedback alike — and lists only their village's records. Creating a
//! record in another village is `403` too; a record created without a village is placed in the
//! cadre's.
//!
//! [`guard`] is a route layer inside the login guard (it needs the [`Cadre`] that guard hands
//! on); the list and create handlers call [`may_access`] and [`fill_area`] themselves. The
//! automerge-repo endpoint applies the same boundary through its share policy
//! ([`crate::automerge_repo::policy`]).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use cunyun_protocol::area::{AreaCode, AreaScope};
use serde_json::Value;

use crate::accounts::Cadre;
use crate::api::{ApiError, AppState};

/// Whether `cadre` may see and change records of `area`.
pub fn may_access(cadre: &Cadre, area: &AreaCode) -> bool {
    *area == cadre.village
}

/// The `403` for a record outside the cadre's village.
pub fn forbidden() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "forbidden",
        "无权访问其他村的记录（每位村干部只能查看和修改本村的记录）",
    )
}

/// Checks the area named by `field` of a create body: `403` when it is another village this
/// node serves, set to the cadre's village when absent. Anything that is not a string, or an
/// area outside `scope`, is left for validation (`422 out_of_scope`).
pub fn fill_area(
    cadre: &Cadre,
    scope: &AreaScope,
    object: &mut Value,
    field: &str,
) -> Result<(), ApiError> {
    let Value::Object(m) = object else {
        return Ok(());
    };
    match m.get(field) {
        None | Some(Value::Null) => {
            m.insert(field.into(), Value::String(cadre.village.to_string()));
            Ok(())
        }
        Some(Value::String(s)) => match AreaCode::parse(s) {
            Ok(area) if scope.contains(&area) && !may_access(cadre, &area) => Err(forbidden()),
            _ => Ok(()),
        },
        Some(_) => Ok(()),
    }
}

/// The record a guarded path names: `/api/v1/households/{id}[/…]` or `/api/v1/needs/{id}`.
enum Named<'a> {
    Household(&'a str),
    Need(&'a str),
}

fn named(path: &str) -> Option<Named<'_>> {
    let mut parts = path.strip_prefix("/api/v1/")?.split('/');
    match (parts.next(), parts.next()) {
        (Some("households"), Some(id)) if !id.is_empty() => Some(Named::Household(id)),
        (Some("needs"), Some(id)) if !id.is_empty() => Some(Named::Need(id)),
        _ => None,
    }
}

/// Route layer: `403` when the request names a record of another village than the logged-in
/// cadre's. Unknown ids pass (the handler answers `404`).
pub async fn guard(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let Some(cadre) = req.extensions().get::<Cadre>().cloned() else {
        return next.run(req).await;
    };
    let area = match named(req.uri().path()) {
        Some(Named::Household(id)) => state
            .records
            .find_household(id)
            .ok()
            .flatten()
            .map(|k| *k.area()),
        Some(Named::Need(id)) => state.records.find_need(id).ok().map(|k| *k.area()),
        None => None,
    };
    match area {
        Some(area) if !may_access(&cadre, &area) => {
            tracing::warn!(
                target: "cunyun::_events::api_forbidden",
                account = %cadre.name,
                village = %cadre.village,
                %area,
                path = req.uri().path(),
                "village boundary"
            );
            forbidden().into_response()
        }
        _ => next.run(req).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_their_record() {
        assert!(matches!(
            named("/api/v1/households/abc"),
            Some(Named::Household("abc"))
        ));
        assert!(matches!(
            named("/api/v1/households/abc/qr.svg"),
            Some(Named::Household("abc"))
        ));
        assert!(matches!(named("/api/v1/needs/n1"), Some(Named::Need("n1"))));
        assert!(named("/api/v1/households").is_none());
        assert!(named("/api/v1/households/").is_none());
        assert!(named("/api/v1/taxonomy").is_none());
    }
}
