//! Benchmark `amrepo`: a cadre's automerge-repo client syncing a village over `/automerge`.
//!
//! One node in this process with a sample village of 300 households (600 documents: `hh` and
//! `hp`) in its sled store, and one client speaking the automerge-repo protocol v1 over a real
//! WebSocket on loopback (tokio-tungstenite; Rust automerge replicas, as the stock JS client would
//! hold). Measured:
//! - `open_village_ms`, `open_bytes_per_doc`: the client requests all 600 documents at once from
//!   empty replicas and syncs until every replica has the stored heads (frame bytes both ways).
//! - `change_ack_p50_ms`, `change_ack_p99_ms`: 100 one-field changes to different households,
//!   one at a time, from sending the sync message to the node's reply (sent after the change was
//!   validated and committed durably).
//! - `push_p50_ms`, `push_p99_ms`: 30 changes made through the node's record service (as the HTTP
//!   API does) while the client has the household open, from the durable commit to the client
//!   receiving the sync message (includes the endpoint's 20 ms push coalescing).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use automerge::sync::{self, SyncDoc};
use automerge::transaction::Transactable;
use automerge::{Automerge, ReadDoc, ROOT};
use cunyun_node::automerge_repo::docid::DocumentId;
use cunyun_node::automerge_repo::policy::{Principal, StaticTokens};
use cunyun_node::automerge_repo::wire::{self, Message};
use cunyun_node::config::NodeConfig;
use cunyun_node::records::UpdateMode;
use cunyun_node::server;
use cunyun_platform::store::DocStore;
use cunyun_protocol::area::{AreaCode, AreaScope};
use cunyun_protocol::digest::heads_digest;
use cunyun_protocol::key::{DocKey, Kind};
use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message as WsMessage;

use super::{emit, progress, quantile};

const VILLAGE: &str = "510116108203";
const HOUSEHOLDS: usize = 300;
const CHANGES: usize = 100;
const PUSHES: usize = 30;
const TOKEN: &str = "bench-cadre";
const ME: &str = "bench-client";

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

struct Replica {
    key: DocKey,
    doc: Automerge,
    state: sync::State,
}

struct Client {
    socket: Socket,
    server: String,
    replicas: HashMap<String, Replica>,
    bytes: u64,
}

impl Client {
    async fn send(&mut self, m: &Message) -> anyhow::Result<()> {
        let bytes = wire::encode(m)?;
        self.bytes += bytes.len() as u64;
        self.socket.send(WsMessage::Binary(bytes.into())).await?;
        Ok(())
    }

    async fn recv(&mut self, limit: Duration) -> anyhow::Result<Message> {
        loop {
            let frame = tokio::time::timeout(limit, self.socket.next())
                .await
                .context("no frame from the node in time")?
                .context("the node closed the connection")??;
            if let WsMessage::Binary(b) = frame {
                self.bytes += b.len() as u64;
                return Ok(wire::decode(&b)?);
            }
        }
    }

    fn outgoing(&mut self, id: &str, request: bool) -> Option<Message> {
        let r = self.replicas.get_mut(id)?;
        let data = r.doc.generate_sync_message(&mut r.state)?.encode();
        let (sender_id, target_id, document_id) = (ME.into(), self.server.clone(), id.to_string());
        Some(if request {
            Message::Request {
                sender_id,
                target_id,
                document_id,
                data,
            }
        } else {
            Message::Sync {
                sender_id,
                target_id,
                document_id,
                data,
            }
        })
    }

    /// Absorbs one message from the node and answers it; returns the document it was about.
    async fn handle(&mut self, m: Message) -> anyhow::Result<String> {
        let Message::Sync {
            document_id, data, ..
        } = m
        else {
            bail!("unexpected message from the node: {m:?}");
        };
        let r = self
            .replicas
            .get_mut(&document_id)
            .context("a sync message for a document not asked for")?;
        r.doc
            .receive_sync_message(&mut r.state, sync::Message::decode(&data)?)?;
        if let Some(reply) = self.outgoing(&document_id, false) {
            self.send(&reply).await?;
        }
        Ok(document_id)
    }

    /// Handles messages until one about `id` arrives after which the replica and the node's
    /// store hold the same heads.
    async fn until_stored(&mut self, id: &str, store: &DocStore) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let m = self.recv(Duration::from_secs(30)).await?;
            if self.handle(m).await? != id {
                continue;
            }
            let r = &self.replicas[id];
            if store.entry(&r.key)?.context("entry")?.digest == heads_digest(&r.doc.get_heads()) {
                return Ok(());
            }
        }
        bail!("replica {id} and the store did not agree within 30 s")
    }

    /// Handles messages until none arrives for `quiet`.
    async fn drain(&mut self, quiet: Duration) -> anyhow::Result<()> {
        while let Ok(m) = self.recv(quiet).await {
            self.handle(m).await?;
        }
        Ok(())
    }
}

/// Runs the benchmark.
pub fn run() -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(run_async())
}

async fn run_async() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut config = NodeConfig::default();
    config.data_dir = dir.path().to_path_buf();
    config.listen = "127.0.0.1:0".parse()?;
    config.scope = AreaScope::parse(VILLAGE)?;
    let village = AreaCode::parse(VILLAGE)?;
    let store = server::open_store(&config)?;
    let tokens = StaticTokens(vec![(
        TOKEN.into(),
        Principal::Cadre {
            account: "bench-cadre".into(),
            village,
        },
    )]);
    let node =
        server::start_with_principals(&config, store, Arc::new(tokens), std::future::pending())
            .await?;
    progress("amrepo", &format!("seeding {HOUSEHOLDS} households"));
    server::seed_sample_village(
        &node.state.records,
        "bench",
        village,
        HOUSEHOLDS,
        7,
        |_, _| {},
    )
    .await?;
    let store = node.state.records.store().clone();
    let keys: Vec<DocKey> = store
        .scan(&config.scope)
        .filter_map(Result::ok)
        .map(|(k, _)| k)
        .filter(|k| matches!(k.kind(), Kind::Hh | Kind::Hp))
        .collect();
    let url = format!("ws://{}/automerge?token={TOKEN}", node.addr);
    let (socket, _) = tokio_tungstenite::connect_async(url.as_str()).await?;
    let mut client = Client {
        socket,
        server: String::new(),
        replicas: HashMap::new(),
        bytes: 0,
    };
    client
        .send(&Message::Join {
            sender_id: ME.into(),
            supported_protocol_versions: vec!["1".into()],
            metadata: None,
        })
        .await?;
    match client.recv(Duration::from_secs(10)).await? {
        Message::Peer { sender_id, .. } => client.server = sender_id,
        other => bail!("expected peer, got {other:?}"),
    }
    for key in &keys {
        client.replicas.insert(
            DocumentId::for_key(key).to_string(),
            Replica {
                key: key.clone(),
                doc: Automerge::new(),
                state: sync::State::new(),
            },
        );
    }

    // Open the whole village cold.
    progress("amrepo", &format!("opening {} documents", keys.len()));
    client.bytes = 0;
    let started = Instant::now();
    let ids: Vec<String> = client.replicas.keys().cloned().collect();
    for id in &ids {
        if let Some(m) = client.outgoing(id, true) {
            client.send(&m).await?;
        }
    }
    let mut pending: std::collections::HashSet<String> = ids.iter().cloned().collect();
    while !pending.is_empty() {
        let m = client.recv(Duration::from_secs(60)).await?;
        let id = client.handle(m).await?;
        let r = &client.replicas[&id];
        let stored = store.entry(&r.key)?.context("stored entry")?.digest;
        if heads_digest(&r.doc.get_heads()) == stored {
            pending.remove(&id);
        }
    }
    let open_ms = started.elapsed().as_secs_f64() * 1e3;
    emit("amrepo", "open_village_ms", open_ms, "ms");
    emit(
        "amrepo",
        "open_bytes_per_doc",
        client.bytes as f64 / keys.len() as f64,
        "B",
    );
    client.drain(Duration::from_millis(500)).await?;

    // Client changes, acknowledged after the durable commit.
    let profiles: Vec<String> = ids
        .iter()
        .filter(|id| client.replicas[*id].key.kind() == Kind::Hh)
        .cloned()
        .collect();
    let mut acks = Vec::with_capacity(CHANGES);
    for id in profiles.iter().take(CHANGES) {
        let r = client.replicas.get_mut(id).context("replica")?;
        // A different value each time (automerge writes no op for an unchanged value).
        let current = r
            .doc
            .get(ROOT, "smartphones")?
            .and_then(|(v, _)| v.as_i64())
            .unwrap_or(0);
        let mut tx = r.doc.transaction();
        tx.put(ROOT, "smartphones", if current == 1 { 2_i64 } else { 1 })?;
        tx.commit();
        let m = client.outgoing(id, false).context("a change to send")?;
        let t = Instant::now();
        client.send(&m).await?;
        client.until_stored(id, &store).await?;
        acks.push(t.elapsed().as_secs_f64() * 1e3);
    }
    emit(
        "amrepo",
        "change_ack_p50_ms",
        quantile(&mut acks, 0.5),
        "ms",
    );
    emit(
        "amrepo",
        "change_ack_p99_ms",
        quantile(&mut acks, 0.99),
        "ms",
    );
    client.drain(Duration::from_millis(500)).await?;

    // Node changes pushed to the open documents.
    let mut pushes = Vec::with_capacity(PUSHES);
    for id in profiles.iter().rev().take(PUSHES) {
        let key = client.replicas[id].key.clone();
        let current = node
            .state
            .records
            .get_household(key.id())?
            .profile
            .smartphones;
        node.state
            .records
            .update_household(
                "bench",
                key.id(),
                &serde_json::json!({"profile": {"smartphones": if current == 4 { 5 } else { 4 }}}),
                UpdateMode::MergePatch,
            )
            .await?;
        let t = Instant::now();
        client.until_stored(id, &store).await?;
        pushes.push(t.elapsed().as_secs_f64() * 1e3);
    }
    emit("amrepo", "push_p50_ms", quantile(&mut pushes, 0.5), "ms");
    emit("amrepo", "push_p99_ms", quantile(&mut pushes, 0.99), "ms");
    node.stop().await?;
    Ok(())
}
