//! The `/automerge` WebSocket route: upgrades the request, takes its principal from the
//! credentials it carries ([`super::policy::PrincipalResolver`]), and runs one
//! [`Connection`] over the socket: binary frames in, replies out, and, whenever the store
//! acknowledged a commit ([`cunyun_platform::store::DocStore::watch_writes`]; commits within
//! [`PUSH_COALESCE`] are taken together), a push of the open documents that changed. A peer that
//! has not sent `join` within [`JOIN_TIMEOUT`] is dropped.
//!
//! **Cross-site requests.** Browsers send a site's cookies with a WebSocket upgrade even when
//! another site's page opens it, and the server cannot tell from the cookie. So a request whose
//! `Origin` header names a different host than its `Host` header has its credentials ignored:
//! it is served as [`Principal::Anonymous`]. Clients outside a browser send no `Origin`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap};
use axum::response::Response;
use serde::Deserialize;

use super::policy::{Credentials, Principal};
use super::session::{Connection, Step};
use super::wire::{self, Message, MAX_MESSAGE_BYTES};
use crate::state::AppState;
use cunyun_platform::http::same_origin_or_none;

/// How long a new connection may take to send `join`.
pub const JOIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection waits after a commit before pushing, so that a burst of commits (peer
/// sync applying many documents) costs one pass over the open documents.
pub const PUSH_COALESCE: Duration = Duration::from_millis(20);

/// Query parameters of `/automerge`.
#[derive(Debug, Deserialize)]
pub struct WsQuery {
    /// A bearer token, for clients that cannot set headers on a WebSocket.
    pub token: Option<String>,
}

/// `GET /automerge` (WebSocket upgrade).
pub async fn handler(
    State(state): State<Arc<AppState>>,
    Query(query): Query<WsQuery>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let principal = if same_origin_or_none(&headers) {
        let credentials = Credentials {
            headers: &headers,
            query_token: query.token.as_deref(),
        };
        // A logged-in cadre's session cookie (the web app's login), else the endpoint's resolver.
        match credentials
            .cookie(cunyun_platform::accounts::COOKIE)
            .and_then(|token| state.accounts.session(token))
        {
            Some(user) => crate::automerge_repo::policy::principal_of(user),
            None => state.automerge_repo.principal(&credentials),
        }
    } else {
        tracing::warn!(
            origin = ?headers.get(header::ORIGIN),
            "automerge-repo: cross-origin upgrade served as anonymous"
        );
        Principal::Anonymous
    };
    ws.max_message_size(MAX_MESSAGE_BYTES)
        .max_frame_size(MAX_MESSAGE_BYTES)
        .on_upgrade(move |socket| serve(state, principal, socket))
}

/// Sleeps until `due`, or forever when there is none.
async fn sleep_until_due(due: Option<tokio::time::Instant>) {
    match due {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

async fn send_all(socket: &mut WebSocket, messages: Vec<Message>) -> bool {
    for m in messages {
        match wire::encode(&m) {
            Ok(bytes) => {
                if socket.send(WsMessage::Binary(bytes.into())).await.is_err() {
                    return false;
                }
            }
            Err(e) => {
                tracing::error!(error = %e, message_type = m.type_name(), "automerge-repo: message not encodable");
            }
        }
    }
    true
}

async fn serve(state: Arc<AppState>, principal: super::policy::Principal, mut socket: WebSocket) {
    let store = state.records.store().clone();
    let app = state.clone();
    app.metrics.amrepo_connections.inc();
    let mut conn = Connection::new(state, principal);
    let mut written = store.watch_writes();
    written.mark_unchanged();
    let join_deadline = tokio::time::sleep(JOIN_TIMEOUT);
    tokio::pin!(join_deadline);
    // When a push pass is due (set by a commit; frames keep being served meanwhile).
    let mut push_due: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            frame = socket.recv() => {
                let bytes = match frame {
                    None | Some(Err(_)) | Some(Ok(WsMessage::Close(_))) => break,
                    Some(Ok(WsMessage::Binary(b))) => b,
                    Some(Ok(WsMessage::Text(_))) => {
                        let step = conn.receive(b"").await;
                        send_all(&mut socket, step.send).await;
                        break;
                    }
                    Some(Ok(_)) => continue,
                };
                let Step { send, close } = conn.receive(&bytes).await;
                if !send_all(&mut socket, send).await || close {
                    break;
                }
            }
            changed = written.changed(), if conn.joined() && push_due.is_none() => {
                if changed.is_err() {
                    break; // the store closed
                }
                push_due = Some(tokio::time::Instant::now() + PUSH_COALESCE);
            }
            _ = sleep_until_due(push_due) => {
                push_due = None;
                written.mark_unchanged();
                let pushes = conn.refresh();
                if !send_all(&mut socket, pushes).await {
                    break;
                }
            }
            _ = &mut join_deadline, if !conn.joined() => {
                tracing::info!("automerge-repo: no join in time, closing");
                break;
            }
        }
    }
    let _ = socket.send(WsMessage::Close(None)).await;
    app.metrics.amrepo_connections.dec();
    tracing::debug!(
        account = conn.principal().account(),
        "automerge-repo connection closed"
    );
}
