//! One automerge-repo connection: the join/peer handshake, then per-document Automerge sync
//! against the node's durable store. No I/O of its own: [`Connection::receive`] takes a frame's
//! bytes and returns the messages to send (and whether to close), [`Connection::refresh`]
//! returns the sync messages that push changes made on the node to the peer.
//!
//! **Per document.** A `request` or `sync` for a document id opens it in the connection (at most
//! [`MAX_OPEN_DOCUMENTS`]): the id must name a stored document ([`DocIndex`]) that the share
//! policy lets the principal read; otherwise the answer is `doc-unavailable` and nothing else.
//! The connection keeps the document and an `automerge::sync::State` for it, and answers each
//! sync message with the next one from `generate_sync_message`.
//!
//! **Received changes.** Changes a sync message brings are applied to a fresh copy of the stored
//! document under the record's write lock ([`crate::records::Records::write_lock`]), the result
//! is checked with `protocol`'s view of its kind (household profile, private part, need: read and
//! fully validated, village or area unchanged), and only then committed through the store's
//! writer; the reply is sent after the commit returned, so a change the peer sees acknowledged
//! is durable. A change that is refused (the principal may only read, the document would be
//! invalid, automerge refuses the bytes) is not stored and is logged
//! (`cunyun::_events::automerge_repo_refused`), the peer gets `doc-unavailable` for that document
//! and the connection ignores it from then on (the peer's repo would otherwise resend the same
//! changes forever); the peer sees the document again after it reconnects.
//!
//! **Pushes.** When the store has been written, [`Connection::refresh`] compares each open
//! document's stored heads digest with the connection's copy, reloads those that differ (a
//! cadre's edit through the API, a change from peer sync or from another client) and sends the
//! peer a sync message.
//!
//! `ephemeral`, `remote-subscription-change` and `remote-heads-changed` messages are accepted
//! and ignored (the node relays no presence data and gossips no remote heads).

use std::collections::{HashMap, HashSet};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use automerge::sync::{self, SyncDoc};
use automerge::{Automerge, Change};
use cunyun_protocol::digest::heads_digest;
use cunyun_protocol::household::{HouseholdPrivate, HouseholdProfile};
use cunyun_protocol::key::{DocKey, Kind};
use cunyun_protocol::need::LocalNeed;

use super::docid::DocumentId;
use super::policy::{access, Access, Principal};
use super::wire::{self, Message, PeerMetadata, WireError, PROTOCOL_VERSION};
use crate::state::AppState;
use cunyun_platform::clock::now_ms;
use cunyun_platform::store::DocWrite;

/// Most documents one connection may have open at once; more are answered `doc-unavailable`.
pub const MAX_OPEN_DOCUMENTS: usize = 2048;

/// What to do after a frame.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Step {
    /// Messages to send, in order.
    pub send: Vec<Message>,
    /// Close the connection after sending them.
    pub close: bool,
}

struct OpenDoc {
    key: DocKey,
    access: Access,
    /// The id exactly as the peer wrote it (echoed back in replies).
    wire_id: String,
    doc: Automerge,
    state: sync::State,
}

/// Why received changes were not stored.
struct Refusal(String);

/// One connection's protocol state.
pub struct Connection {
    app: Arc<AppState>,
    principal: Principal,
    remote: Option<String>,
    docs: HashMap<DocumentId, OpenDoc>,
    refused: HashSet<DocumentId>,
}

impl Connection {
    /// A connection from `principal`, before its `join`.
    pub fn new(app: Arc<AppState>, principal: Principal) -> Connection {
        Connection {
            app,
            principal,
            remote: None,
            docs: HashMap::new(),
            refused: HashSet::new(),
        }
    }

    /// Whether the handshake is done.
    pub fn joined(&self) -> bool {
        self.remote.is_some()
    }

    /// The principal.
    pub fn principal(&self) -> &Principal {
        &self.principal
    }

    fn me(&self) -> String {
        self.app.automerge_repo.peer_id().to_string()
    }

    fn them(&self) -> String {
        self.remote.clone().unwrap_or_default()
    }

    fn error(&self, message: impl Into<String>) -> Step {
        Step {
            send: vec![Message::Error {
                message: message.into(),
                sender_id: Some(self.me()),
                target_id: self.remote.clone(),
            }],
            close: true,
        }
    }

    fn unavailable(&self, wire_id: &str) -> Message {
        self.app.metrics.amrepo_unavailable.inc();
        Message::DocUnavailable {
            sender_id: self.me(),
            target_id: self.them(),
            document_id: wire_id.to_string(),
        }
    }

    fn sync_message(&self, wire_id: &str, m: sync::Message) -> Message {
        Message::Sync {
            sender_id: self.me(),
            target_id: self.them(),
            document_id: wire_id.to_string(),
            data: m.encode(),
        }
    }

    /// Handles one binary frame from the peer.
    pub async fn receive(&mut self, bytes: &[u8]) -> Step {
        let message = match wire::decode(bytes) {
            Ok(m) => m,
            Err(WireError::UnknownType(t)) if self.joined() => {
                tracing::debug!(
                    message_type = t,
                    "automerge-repo: unknown message type ignored"
                );
                return Step::default();
            }
            Err(e) => {
                tracing::warn!(error = %e, account = self.principal.account(), "automerge-repo: bad message");
                return self.error(format!("消息无法解析：{e}"));
            }
        };
        let Some(remote) = self.remote.clone() else {
            return self.handshake(message);
        };
        match message {
            Message::Request {
                target_id,
                document_id,
                data,
                ..
            }
            | Message::Sync {
                target_id,
                document_id,
                data,
                ..
            } => {
                if target_id != self.app.automerge_repo.peer_id() {
                    tracing::debug!(
                        target_id,
                        "automerge-repo: message for another peer ignored"
                    );
                    return Step::default();
                }
                Step {
                    send: self.sync(&document_id, &data).await,
                    close: false,
                }
            }
            Message::Leave { .. } => Step {
                send: Vec::new(),
                close: true,
            },
            Message::Error { message, .. } => {
                tracing::info!(
                    remote,
                    message,
                    "automerge-repo: the peer reported an error"
                );
                Step {
                    send: Vec::new(),
                    close: true,
                }
            }
            // A repeated join (a client retrying its handshake) is answered again.
            join @ Message::Join { .. } => self.handshake(join),
            Message::Peer { .. } => self.error("只有节点发送 peer 消息，客户端应发送 join"),
            Message::DocUnavailable { .. }
            | Message::Ephemeral { .. }
            | Message::RemoteSubscriptionChange { .. }
            | Message::RemoteHeadsChanged { .. } => Step::default(),
        }
    }

    fn handshake(&mut self, message: Message) -> Step {
        let Message::Join {
            sender_id,
            supported_protocol_versions,
            ..
        } = message
        else {
            return self.error("连接后的第一条消息必须是 join");
        };
        if !supported_protocol_versions
            .iter()
            .any(|v| v == PROTOCOL_VERSION)
        {
            return self.error(format!(
                "不支持对方的协议版本 {supported_protocol_versions:?}，本节点只支持版本 1"
            ));
        }
        tracing::info!(
            remote = sender_id,
            account = self.principal.account(),
            "automerge-repo peer joined"
        );
        if self.remote.as_ref() != Some(&sender_id) {
            // Sync states belong to one peer: a new peer id starts afresh.
            self.docs.clear();
            self.refused.clear();
        }
        self.remote = Some(sender_id.clone());
        Step {
            send: vec![Message::Peer {
                sender_id: self.me(),
                target_id: sender_id,
                selected_protocol_version: PROTOCOL_VERSION.to_string(),
                metadata: Some(PeerMetadata {
                    storage_id: None,
                    is_ephemeral: false,
                }),
            }],
            close: false,
        }
    }

    /// Opens `id` for this connection if the policy allows and the store has it.
    fn open(&mut self, id: DocumentId, wire_id: &str) -> Option<OpenDoc> {
        if self.docs.len() >= MAX_OPEN_DOCUMENTS {
            tracing::warn!(
                account = self.principal.account(),
                "automerge-repo: too many open documents on one connection"
            );
            return None;
        }
        let key = match self.app.automerge_repo.index().lookup(&id) {
            Ok(Some(key)) => key,
            Ok(None) => return None,
            Err(e) => {
                tracing::error!(error = %e, "automerge-repo: document-id index failed");
                return None;
            }
        };
        let access = access(&self.principal, &key);
        if access == Access::None {
            tracing::info!(target: "cunyun::_events::automerge_repo_denied", key = %key, account = self.principal.account());
            return None;
        }
        match self.app.records.store().load(&key) {
            Ok(Some(doc)) => Some(OpenDoc {
                key,
                access,
                wire_id: wire_id.to_string(),
                doc,
                state: sync::State::new(),
            }),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(key = %key, error = %e, "automerge-repo: document could not be loaded");
                None
            }
        }
    }

    async fn sync(&mut self, wire_id: &str, data: &[u8]) -> Vec<Message> {
        let Ok(id) = DocumentId::parse(wire_id) else {
            return vec![self.unavailable(wire_id)];
        };
        if self.refused.contains(&id) {
            return Vec::new();
        }
        let mut od = match self.docs.remove(&id) {
            Some(od) => od,
            None => match self.open(id, wire_id) {
                Some(od) => od,
                None => return vec![self.unavailable(wire_id)],
            },
        };
        match self
            .apply(&mut od, data)
            .await
            .and_then(|()| generate(&mut od))
        {
            Ok(reply) => {
                let out = reply
                    .map(|m| vec![self.sync_message(&od.wire_id, m)])
                    .unwrap_or_default();
                self.docs.insert(id, od);
                out
            }
            Err(Refusal(reason)) => {
                tracing::warn!(
                    target: "cunyun::_events::automerge_repo_refused",
                    key = %od.key,
                    account = self.principal.account(),
                    reason
                );
                self.app.metrics.amrepo_refused.inc();
                self.refused.insert(id);
                vec![self.unavailable(&od.wire_id)]
            }
        }
    }

    /// Receives one sync message into `od`, storing any new changes durably first.
    async fn apply(&self, od: &mut OpenDoc, data: &[u8]) -> Result<(), Refusal> {
        let message = sync::Message::decode(data)
            .map_err(|e| Refusal(format!("not an automerge sync message: {e}")))?;
        let before = od.doc.get_heads();
        let received = catch_unwind(AssertUnwindSafe(|| {
            od.doc.receive_sync_message(&mut od.state, message)
        }));
        match received {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(Refusal(format!("automerge refused the sync message: {e}"))),
            Err(_) => return Err(Refusal("automerge panicked on the sync message".into())),
        }
        let new: Vec<Change> = od.doc.get_changes(&before);
        if new.is_empty() {
            return Ok(());
        }
        if od.access != Access::ReadWrite {
            return Err(Refusal(format!(
                "{} change(s) to a document this account may only read",
                new.len()
            )));
        }
        od.doc = self.commit(&od.key, new).await?;
        Ok(())
    }

    /// Applies `changes` to the stored document, validates it and commits it durably.
    async fn commit(&self, key: &DocKey, changes: Vec<Change>) -> Result<Automerge, Refusal> {
        let records = &self.app.records;
        let _guard = records.write_lock(key.id()).await;
        let store = records.store();
        let mut doc = store
            .load(key)
            .map_err(|e| Refusal(format!("store: {e}")))?
            .ok_or_else(|| Refusal("the document is no longer stored".into()))?;
        let before = doc.get_heads();
        let count = changes.len();
        doc.apply_changes(changes)
            .map_err(|e| Refusal(format!("automerge refused the changes: {e}")))?;
        let after = doc.get_heads();
        if after == before {
            return Ok(doc);
        }
        check_document(key, &doc).map_err(Refusal)?;
        // The changes carry the client's actor, not the account: the audit log says whose they
        // are, durably before they are stored and acknowledged.
        let event = cunyun_platform::audit::AuditEvent::now(
            self.principal.account(),
            "record_change",
            &key.to_string(),
            format!("/automerge: {count} changes"),
        );
        self.app
            .accounts
            .audit()
            .record(event)
            .map_err(|e| Refusal(format!("audit: {e}")))?;
        store
            .commit_async(vec![DocWrite {
                key: key.clone(),
                chunk: doc.save_after(&before),
                heads: after,
                updated_at_ms: now_ms(),
            }])
            .await
            .map_err(|e| Refusal(format!("store: {e}")))?;
        self.app.metrics.amrepo_changes.inc();
        tracing::info!(
            target: "cunyun::_events::automerge_repo_change",
            key = %key,
            account = self.principal.account(),
            changes = count
        );
        Ok(doc)
    }

    /// Sync messages for open documents whose stored state changed since the peer last heard.
    pub fn refresh(&mut self) -> Vec<Message> {
        let store = self.app.records.store().clone();
        let mut out = Vec::new();
        let mut changed = Vec::new();
        for (id, od) in &self.docs {
            match store.entry(&od.key) {
                Ok(Some(e)) if e.digest != heads_digest(&od.doc.get_heads()) => changed.push(*id),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(key = %od.key, error = %e, "automerge-repo: index entry unreadable")
                }
            }
        }
        for id in changed {
            let Some(mut od) = self.docs.remove(&id) else {
                continue;
            };
            match store.load(&od.key) {
                Ok(Some(doc)) => od.doc = doc,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(key = %od.key, error = %e, "automerge-repo: document could not be reloaded");
                    self.docs.insert(id, od);
                    continue;
                }
            }
            match generate(&mut od) {
                Ok(Some(m)) => out.push(self.sync_message(&od.wire_id, m)),
                Ok(None) => {}
                Err(Refusal(reason)) => {
                    tracing::warn!(key = %od.key, reason, "automerge-repo: document dropped from the connection");
                    self.refused.insert(id);
                    continue;
                }
            }
            self.docs.insert(id, od);
        }
        out
    }
}

/// The next sync message for `od`. The peer's earlier messages shaped the sync state, so a panic
/// inside automerge is caught and refuses the document rather than ending the node's task.
fn generate(od: &mut OpenDoc) -> Result<Option<sync::Message>, Refusal> {
    let (doc, state) = (&od.doc, &mut od.state);
    catch_unwind(AssertUnwindSafe(|| doc.generate_sync_message(state)))
        .map_err(|_| Refusal("automerge panicked generating a sync message".into()))
}

/// Checks a document a peer changed with `protocol`'s view of its kind. Only the kinds the share
/// policy lets anyone write are accepted.
pub fn check_document(key: &DocKey, doc: &Automerge) -> Result<(), String> {
    let invalid = |e: &dyn std::fmt::Display| format!("the document would be invalid: {e}");
    match key.kind() {
        Kind::Hh => {
            let p = HouseholdProfile::read_from(doc).map_err(|e| invalid(&e))?;
            p.validate().map_err(|e| invalid(&e))?;
            if &p.village != key.area() {
                return Err(format!(
                    "the household's village would change from {} to {}",
                    key.area(),
                    p.village
                ));
            }
        }
        Kind::Hp => {
            let p = HouseholdPrivate::read_from(doc).map_err(|e| invalid(&e))?;
            p.validate().map_err(|e| invalid(&e))?;
        }
        Kind::Need => {
            let n = LocalNeed::read_from(doc).map_err(|e| invalid(&e))?;
            n.validate().map_err(|e| invalid(&e))?;
            if &n.area != key.area() {
                return Err(format!(
                    "the need's area would change from {} to {}",
                    key.area(),
                    n.area
                ));
            }
        }
        other => {
            return Err(format!(
                "documents of kind {other} are not written over automerge-repo"
            ))
        }
    }
    Ok(())
}
