//! The `/automerge` WebSocket route: upgrades the request, takes its principal from the
//! credentials it carries ([`super::policy::PrincipalResolver`]), and runs one
//! [`Connection`] over the socket: binary frames in, replies out, and every
//! [`PUSH_CHECK_INTERVAL`] a check whether the store was written (then open documents that
//! changed are pushed). A peer that has not sent `join` within [`JOIN_TIMEOUT`] is dropped.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Deserialize;

use super::policy::Credentials;
use super::session::{Connection, Step};
use super::wire::{self, Message, MAX_MESSAGE_BYTES};
use crate::api::AppState;

/// How long a new connection may take to send `join`.
pub const JOIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a connection checks whether the store has been written.
pub const PUSH_CHECK_INTERVAL: Duration = Duration::from_millis(100);

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
    let principal = state.automerge_repo.principal(&Credentials {
        headers: &headers,
        query_token: query.token.as_deref(),
    });
    ws.max_message_size(MAX_MESSAGE_BYTES)
        .max_frame_size(MAX_MESSAGE_BYTES)
        .on_upgrade(move |socket| serve(state, principal, socket))
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
    let mut conn = Connection::new(state, principal);
    let mut seen_writes = store.writes();
    let mut tick = tokio::time::interval(PUSH_CHECK_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let join_deadline = tokio::time::sleep(JOIN_TIMEOUT);
    tokio::pin!(join_deadline);
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
            _ = tick.tick(), if conn.joined() => {
                let writes = store.writes();
                if writes != seen_writes {
                    seen_writes = writes;
                    let pushes = conn.refresh();
                    if !send_all(&mut socket, pushes).await {
                        break;
                    }
                }
            }
            _ = &mut join_deadline, if !conn.joined() => {
                tracing::info!("automerge-repo: no join in time, closing");
                break;
            }
        }
    }
    let _ = socket.send(WsMessage::Close(None)).await;
    tracing::debug!(
        account = conn.principal().account(),
        "automerge-repo connection closed"
    );
}
