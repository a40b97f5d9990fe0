//! The automerge-repo endpoint's protocol state machine ([`Connection`]) driven in-process by a
//! Rust automerge peer, over a real node and store: the handshake and its errors, finding and
//! syncing a household, durable storage of valid changes, refusal (nothing stored) of changes
//! that make a household invalid or come from a principal that may only read, `doc-unavailable`
//! for unknown ids and for documents the share policy hides, and pushes of node-side changes.
#![allow(clippy::unwrap_used)]

use automerge::sync::{self, SyncDoc};
use automerge::transaction::Transactable;
use automerge::{Automerge, ReadDoc, ROOT};
use cunyun_node::automerge_repo::docid::DocumentId;
use cunyun_node::automerge_repo::policy::Principal;
use cunyun_node::automerge_repo::session::{Connection, Step};
use cunyun_node::automerge_repo::wire::{decode, encode, Message};
use cunyun_node::config::NodeConfig;
use cunyun_node::records::UpdateMode;
use cunyun_node::server::{self, RunningNode};
use cunyun_protocol::area::{AreaCode, AreaScope};
use cunyun_protocol::key::{DocKey, Kind};
use serde_json::json;

const VILLAGE: &str = "510116108203";
const ME: &str = "rust-client";

async fn start(dir: &std::path::Path) -> RunningNode {
    let mut c = NodeConfig::default();
    c.data_dir = dir.to_path_buf();
    c.listen = "127.0.0.1:0".parse().unwrap();
    c.scope = AreaScope::parse(VILLAGE).unwrap();
    server::start(&c, std::future::pending()).await.unwrap()
}

fn cadre() -> Principal {
    Principal::Cadre {
        account: "cadre-li".into(),
        village: AreaCode::parse(VILLAGE).unwrap(),
    }
}

async fn create(node: &RunningNode) -> (String, DocKey) {
    let body = json!({
        "profile": {"group": 2, "residents": 2, "age_18_59": 2, "smartphones": 1},
        "private": {"head_name": "李四"}
    });
    let rec = node
        .state
        .records
        .create_household("admin", &body)
        .await
        .unwrap();
    (rec.id.clone(), rec.profile_key.clone())
}

fn bytes(m: &Message) -> Vec<u8> {
    encode(m).unwrap()
}

async fn join(conn: &mut Connection) -> String {
    let step = conn
        .receive(&bytes(&Message::Join {
            sender_id: ME.into(),
            supported_protocol_versions: vec!["1".into()],
            metadata: None,
        }))
        .await;
    assert!(!step.close);
    match &step.send[..] {
        [Message::Peer {
            sender_id,
            target_id,
            selected_protocol_version,
            ..
        }] => {
            assert_eq!(target_id, ME);
            assert_eq!(selected_protocol_version, "1");
            sender_id.clone()
        }
        other => panic!("expected peer, got {other:?}"),
    }
}

/// A client-side replica of one document and its sync state.
struct Replica {
    id: String,
    doc: Automerge,
    state: sync::State,
}

impl Replica {
    fn new(key: &DocKey) -> Replica {
        Replica {
            id: DocumentId::for_key(key).to_string(),
            doc: Automerge::new(),
            state: sync::State::new(),
        }
    }

    fn outgoing(&mut self, server: &str, request: bool) -> Option<Message> {
        let data = self.doc.generate_sync_message(&mut self.state)?.encode();
        Some(if request {
            Message::Request {
                sender_id: ME.into(),
                target_id: server.into(),
                document_id: self.id.clone(),
                data,
            }
        } else {
            Message::Sync {
                sender_id: ME.into(),
                target_id: server.into(),
                document_id: self.id.clone(),
                data,
            }
        })
    }

    /// Applies the server's replies; returns whether one was `doc-unavailable`.
    fn absorb(&mut self, step: &Step) -> bool {
        let mut unavailable = false;
        for m in &step.send {
            match m {
                Message::Sync {
                    document_id, data, ..
                } => {
                    assert_eq!(document_id, &self.id);
                    self.doc
                        .receive_sync_message(&mut self.state, sync::Message::decode(data).unwrap())
                        .unwrap();
                }
                Message::DocUnavailable { document_id, .. } => {
                    assert_eq!(document_id, &self.id);
                    unavailable = true;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        unavailable
    }

    /// Syncs until neither side has anything to say (bounded); returns whether the server
    /// answered `doc-unavailable`.
    async fn sync(&mut self, conn: &mut Connection, server: &str) -> bool {
        let mut first = self.doc.get_heads().is_empty();
        for _ in 0..20 {
            let Some(m) = self.outgoing(server, first) else {
                return false;
            };
            first = false;
            let step = conn.receive(&bytes(&m)).await;
            if self.absorb(&step) {
                return true;
            }
        }
        panic!("sync did not settle in 20 rounds");
    }
}

fn smartphones(doc: &Automerge) -> i64 {
    match doc.get(ROOT, "smartphones").unwrap() {
        Some((v, _)) => v.as_i64().unwrap(),
        None => panic!("no smartphones field"),
    }
}

#[tokio::test]
async fn handshake_errors_close_the_connection() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path()).await;
    // Anything before join.
    let mut conn = Connection::new(node.state.clone(), cadre());
    let step = conn
        .receive(&bytes(&Message::Leave {
            sender_id: ME.into(),
        }))
        .await;
    assert!(step.close);
    assert!(matches!(&step.send[..], [Message::Error { .. }]));
    // A version the node does not speak.
    let mut conn = Connection::new(node.state.clone(), cadre());
    let step = conn
        .receive(&bytes(&Message::Join {
            sender_id: ME.into(),
            supported_protocol_versions: vec!["2".into()],
            metadata: None,
        }))
        .await;
    assert!(step.close && matches!(&step.send[..], [Message::Error { .. }]));
    assert!(!conn.joined());
    // A repeated join is answered again; a peer message from the client is an error.
    let mut conn = Connection::new(node.state.clone(), cadre());
    let first = join(&mut conn).await;
    assert_eq!(join(&mut conn).await, first);
    let step = conn
        .receive(&bytes(&Message::Peer {
            sender_id: ME.into(),
            target_id: first,
            selected_protocol_version: "1".into(),
            metadata: None,
        }))
        .await;
    assert!(step.close && matches!(&step.send[..], [Message::Error { .. }]));
    // Garbage bytes.
    let mut conn = Connection::new(node.state.clone(), cadre());
    let step = conn.receive(&[0xff, 0x00, 0x13]).await;
    assert!(step.close);
    // Every error message decodes (the client must be able to read it).
    for m in &step.send {
        assert_eq!(&decode(&bytes(m)).unwrap(), m);
    }
    node.stop().await.unwrap();
}

#[tokio::test]
async fn cadre_syncs_and_changes_a_household_and_sees_node_changes() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path()).await;
    let (id, hh) = create(&node).await;
    let mut conn = Connection::new(node.state.clone(), cadre());
    let server = join(&mut conn).await;

    let mut r = Replica::new(&hh);
    assert!(!r.sync(&mut conn, &server).await);
    assert_eq!(smartphones(&r.doc), 1, "the client got the household");

    // A valid change is stored durably.
    let mut tx = r.doc.transaction();
    tx.put(ROOT, "smartphones", 3_i64).unwrap();
    tx.commit();
    assert!(!r.sync(&mut conn, &server).await);
    let stored = node.state.records.get_household(&id).unwrap();
    assert_eq!(stored.profile.smartphones, 3);
    assert_eq!(
        node.state
            .records
            .store()
            .entry(&hh)
            .unwrap()
            .unwrap()
            .digest,
        cunyun_protocol::digest::heads_digest(&r.doc.get_heads()),
        "the index describes the client's heads"
    );
    // Whose change it was is in the audit log (the change itself carries the client's actor).
    let audit = node
        .state
        .accounts
        .audit()
        .read(&cunyun_platform::audit::AuditFilter {
            who: Some("cadre-li".into()),
            what: Some("record_change".into()),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_eq!(audit[0].target, hh.to_string());

    // A change made on the node is pushed to the open document.
    assert!(conn.refresh().is_empty(), "nothing to push while in sync");
    node.state
        .records
        .update_household(
            "admin",
            &id,
            &json!({"profile": {"smartphones": 5}}),
            UpdateMode::MergePatch,
        )
        .await
        .unwrap();
    let pushed = conn.refresh();
    assert_eq!(pushed.len(), 1, "{pushed:?}");
    r.absorb(&Step {
        send: pushed,
        close: false,
    });
    assert!(!r.sync(&mut conn, &server).await);
    assert_eq!(smartphones(&r.doc), 5, "the client sees the node's change");
    node.stop().await.unwrap();
}

#[tokio::test]
async fn invalid_and_read_only_changes_are_refused_and_not_stored() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path()).await;
    let (id, hh) = create(&node).await;
    let entry_before = node.state.records.store().entry(&hh).unwrap().unwrap();

    // A change that makes the household invalid (more age-band members than residents).
    let mut conn = Connection::new(node.state.clone(), cadre());
    let server = join(&mut conn).await;
    let mut r = Replica::new(&hh);
    assert!(!r.sync(&mut conn, &server).await);
    let mut tx = r.doc.transaction();
    tx.put(ROOT, "residents", 1_i64).unwrap();
    tx.commit();
    assert!(r.sync(&mut conn, &server).await, "refused as unavailable");
    let stored = node.state.records.get_household(&id).unwrap();
    assert_eq!(stored.profile.residents, 2, "nothing stored");
    assert_eq!(
        node.state.records.store().entry(&hh).unwrap().unwrap(),
        entry_before
    );
    // The refused document is ignored for the rest of the connection (no refusal loop).
    let again = r.outgoing(&server, false);
    if let Some(m) = again {
        assert_eq!(conn.receive(&bytes(&m)).await, Step::default());
    }

    // Moving the household to another village is refused too.
    let mut conn = Connection::new(node.state.clone(), cadre());
    let server = join(&mut conn).await;
    let mut r = Replica::new(&hh);
    assert!(!r.sync(&mut conn, &server).await);
    let mut tx = r.doc.transaction();
    tx.put(ROOT, "village", "510116108204").unwrap();
    tx.commit();
    assert!(r.sync(&mut conn, &server).await);
    assert_eq!(
        node.state.records.store().entry(&hh).unwrap().unwrap(),
        entry_before
    );

    // An operator may read but not write.
    let op = Principal::Operator {
        account: "op".into(),
        scope: AreaScope::parse("510116").unwrap(),
    };
    let mut conn = Connection::new(node.state.clone(), op);
    let server = join(&mut conn).await;
    let mut r = Replica::new(&hh);
    assert!(!r.sync(&mut conn, &server).await, "an operator reads");
    let mut tx = r.doc.transaction();
    tx.put(ROOT, "smartphones", 2_i64).unwrap();
    tx.commit();
    assert!(r.sync(&mut conn, &server).await, "but may not write");
    assert_eq!(
        node.state.records.store().entry(&hh).unwrap().unwrap(),
        entry_before
    );
    let metrics = node.state.metrics.render(node.state.records.store());
    assert!(
        metrics.contains("cunyun_amrepo_refused_total 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("cunyun_amrepo_changes_total 0"),
        "{metrics}"
    );
    node.stop().await.unwrap();
}

#[tokio::test]
async fn unknown_and_hidden_documents_are_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path()).await;
    let (_, hh) = create(&node).await;
    let other_village = Principal::Cadre {
        account: "cadre-zhao".into(),
        village: AreaCode::parse("510116108204").unwrap(),
    };
    for (principal, key) in [
        (Principal::Anonymous, hh.clone()),
        (Principal::Anonymous, hh.with_kind(Kind::Hp)),
        (other_village, hh.with_kind(Kind::Hp)),
        // Not stored at all (as a document a client made with `repo.create()`).
        (
            cadre(),
            DocKey::parse(&format!("{VILLAGE}/hh/hnotstored")).unwrap(),
        ),
    ] {
        let mut conn = Connection::new(node.state.clone(), principal.clone());
        let server = join(&mut conn).await;
        let mut r = Replica::new(&key);
        assert!(r.sync(&mut conn, &server).await, "{principal:?} {key}");
        assert!(
            r.doc.get_heads().is_empty(),
            "no content for {principal:?} {key}"
        );
    }
    // An id that is not bs58check.
    let mut conn = Connection::new(node.state.clone(), cadre());
    let server = join(&mut conn).await;
    let step = conn
        .receive(&bytes(&Message::Request {
            sender_id: ME.into(),
            target_id: server,
            document_id: "not-an-id".into(),
            data: sync::Message::decode(
                &Automerge::new()
                    .generate_sync_message(&mut sync::State::new())
                    .unwrap()
                    .encode(),
            )
            .unwrap()
            .encode(),
        }))
        .await;
    assert!(matches!(&step.send[..], [Message::DocUnavailable { .. }]));
    node.stop().await.unwrap();
}
