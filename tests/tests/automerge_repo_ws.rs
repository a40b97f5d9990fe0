//! The `/automerge` route over a real WebSocket on loopback, from Rust (no npm needed): a bearer
//! token in the URL or the web app's session cookie makes the connection a cadre's, and the same
//! credentials from a page of another origin (a cross-site WebSocket, which a browser would send
//! with the cadre's cookies) count for nothing.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use automerge::sync::{self, SyncDoc};
use automerge::Automerge;
use cunyun_node::automerge_repo::docid::DocumentId;
use cunyun_node::automerge_repo::policy::{Principal, StaticTokens};
use cunyun_node::automerge_repo::wire::{self, Message};
use cunyun_node::config::NodeConfig;
use cunyun_node::server;
use cunyun_protocol::area::{AreaCode, AreaScope};
use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message as WsMessage;

const VILLAGE: &str = "510116108203";
const TOKEN: &str = "ws-test-token";

/// Joins, requests `doc`, and returns the node's answer to the request.
async fn ask(url: &str, origin: Option<&str>, doc: &DocumentId) -> Message {
    ask_with(url, origin, None, doc).await
}

/// [`ask`] with a `Cookie` header.
async fn ask_with(
    url: &str,
    origin: Option<&str>,
    cookie: Option<&str>,
    doc: &DocumentId,
) -> Message {
    let mut req = url.into_client_request().unwrap();
    if let Some(o) = origin {
        req.headers_mut().insert("origin", o.parse().unwrap());
    }
    if let Some(c) = cookie {
        req.headers_mut().insert("cookie", c.parse().unwrap());
    }
    let (mut ws, _) = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::connect_async(req),
    )
    .await
    .unwrap()
    .unwrap();
    let recv = async |ws: &mut tokio_tungstenite::WebSocketStream<_>| loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            WsMessage::Binary(b) => return wire::decode(&b).unwrap(),
            _ => continue,
        }
    };
    let join = Message::Join {
        sender_id: "rust-ws".into(),
        supported_protocol_versions: vec!["1".into()],
        metadata: None,
    };
    ws.send(WsMessage::Binary(wire::encode(&join).unwrap().into()))
        .await
        .unwrap();
    let Message::Peer {
        sender_id: server, ..
    } = recv(&mut ws).await
    else {
        panic!("no peer message");
    };
    let data = Automerge::new()
        .generate_sync_message(&mut sync::State::new())
        .unwrap()
        .encode();
    let request = Message::Request {
        sender_id: "rust-ws".into(),
        target_id: server,
        document_id: doc.to_string(),
        data,
    };
    ws.send(WsMessage::Binary(wire::encode(&request).unwrap().into()))
        .await
        .unwrap();
    recv(&mut ws).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_count_only_from_the_same_origin() {
    let data = tempfile::tempdir().unwrap();
    let mut config = NodeConfig::default();
    config.data_dir = data.path().to_path_buf();
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.scope = AreaScope::parse(VILLAGE).unwrap();
    let accounts = cunyun_platform::accounts::Accounts::open(data.path()).unwrap();
    accounts.add("zhouwu", VILLAGE, "村干部的密码2026").unwrap();
    drop(accounts);
    let store = server::open_store(&config).unwrap();
    let tokens = StaticTokens(vec![(
        TOKEN.into(),
        Principal::Cadre {
            account: "cadre-ws".into(),
            village: AreaCode::parse(VILLAGE).unwrap(),
        },
    )]);
    let node =
        server::start_with_principals(&config, store, Arc::new(tokens), std::future::pending())
            .await
            .unwrap();
    let rec = node
        .state
        .records
        .create_household(
            "admin",
            &serde_json::json!({"profile": {"group": 1, "residents": 1}, "private": {"head_name": "周五"}}),
        )
        .await
        .unwrap();
    let doc = DocumentId::parse(&rec.private_automerge_url).unwrap();
    let url = format!("ws://{}/automerge?token={TOKEN}", node.addr);
    let same = format!("http://{}", node.addr);

    // The cadre, with no Origin (a non-browser client) or the node's own origin: the document.
    for origin in [None, Some(same.as_str())] {
        let answer = ask(&url, origin, &doc).await;
        assert!(
            matches!(answer, Message::Sync { .. }),
            "{origin:?}: {answer:?}"
        );
    }
    // The same token from another site's page: anonymous, so the private part is unavailable.
    let answer = ask(&url, Some("http://evil.example"), &doc).await;
    assert!(
        matches!(answer, Message::DocUnavailable { .. }),
        "{answer:?}"
    );
    // A cadre logged in through the web app: the session cookie makes the connection theirs.
    let login = reqwest::Client::new()
        .post(format!("http://{}/api/v1/login", node.addr))
        .json(&serde_json::json!({"name": "zhouwu", "password": "村干部的密码2026"}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status().as_u16(), 200);
    let cookie = login
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .unwrap()
        .to_string();
    let anon = format!("ws://{}/automerge", node.addr);
    let answer = ask_with(&anon, None, Some(&cookie), &doc).await;
    assert!(matches!(answer, Message::Sync { .. }), "{answer:?}");
    // The same cookie from another site's page counts for nothing.
    let answer = ask_with(&anon, Some("http://evil.example"), Some(&cookie), &doc).await;
    assert!(
        matches!(answer, Message::DocUnavailable { .. }),
        "{answer:?}"
    );
    // No token at all: anonymous.
    let answer = ask(&anon, None, &doc).await;
    assert!(
        matches!(answer, Message::DocUnavailable { .. }),
        "{answer:?}"
    );
    node.stop().await.unwrap();
}

/// Logs `name` in through the web app and returns the session cookie pair.
async fn session_cookie(addr: std::net::SocketAddr, name: &str, password: &str) -> String {
    let login = reqwest::Client::new()
        .post(format!("http://{addr}/api/v1/login"))
        .json(&serde_json::json!({"name": name, "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status().as_u16(), 200);
    login
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cadre_of_another_village_gets_nothing_of_this_village_on_a_county_node() {
    use cunyun_node::automerge_repo::docid::url_for_key;
    use cunyun_protocol::key::Kind;
    const OTHER: &str = "510116108204";
    let data = tempfile::tempdir().unwrap();
    let mut config = NodeConfig::default();
    config.data_dir = data.path().to_path_buf();
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.scope = AreaScope::parse("510116").unwrap();
    config.role = cunyun_protocol::key::Role::County;
    let accounts = cunyun_platform::accounts::Accounts::open(data.path()).unwrap();
    accounts
        .add("cadre-a", VILLAGE, "甲村干部的密码2026")
        .unwrap();
    accounts
        .add("cadre-b", OTHER, "乙村干部的密码2026")
        .unwrap();
    drop(accounts);
    let node = server::start(&config, std::future::pending())
        .await
        .unwrap();
    let records = &node.state.records;
    let rec = records
        .create_household(
            "admin",
            &serde_json::json!({"profile": {"village": VILLAGE, "group": 1, "residents": 1},
                                "private": {"head_name": "周五"}}),
        )
        .await
        .unwrap();
    let need = records
        .create_need(
            "admin",
            &serde_json::json!({"area": VILLAGE, "requester": "coop", "title": "柑橘黄龙病防控",
                                "contact_role": "合作社理事长"}),
        )
        .await
        .unwrap();
    let docs: Vec<DocumentId> = [
        rec.profile_key.clone(),
        rec.private_key.clone(),
        need.key.clone(),
        rec.profile_key.with_kind(Kind::Rec),
    ]
    .iter()
    .map(|k| DocumentId::parse(&url_for_key(k)).unwrap())
    .collect();
    let ws = format!("ws://{}/automerge", node.addr);

    // Village A's cadre finds the household (the endpoint works for the right person).
    let a = session_cookie(node.addr, "cadre-a", "甲村干部的密码2026").await;
    let answer = ask_with(&ws, None, Some(&a), &docs[0]).await;
    assert!(matches!(answer, Message::Sync { .. }), "{answer:?}");
    // Village B's cadre, asking by id for each of village A's documents: unavailable, nothing
    // of the document is sent (the first and only answer is doc-unavailable).
    let b = session_cookie(node.addr, "cadre-b", "乙村干部的密码2026").await;
    for doc in &docs {
        let answer = ask_with(&ws, None, Some(&b), doc).await;
        assert!(
            matches!(answer, Message::DocUnavailable { .. }),
            "{doc}: {answer:?}"
        );
    }
    node.stop().await.unwrap();
}
