//! Hostile input at the node's listeners, over loopback: per-address connection limits on the
//! sync port and the enrollment port (the (N+1)th connection of an address in a minute, and one
//! over the concurrent cap, is closed before TLS, while a well-behaved peer on another address
//! still syncs or enrolls).
//!
//! The hostile client binds its source to 127.0.0.2 (loopback: 127.0.0.0/8 never leaves the
//! machine) so it is a different address from the well-behaved peer on 127.0.0.1.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use cunyun_node::config::NodeConfig;
use cunyun_node::server::{self, RunningNode};
use cunyun_platform::certs::enroll::{self, CaDir, TokenStore};
use cunyun_platform::certs::tls::CertAuthority;
use cunyun_platform::certs::trust::system_time_s;
use cunyun_platform::ratelimit::AddrLimits;
use cunyun_protocol::area::AreaScope;
use cunyun_protocol::identity::{NodeId, NodeIdentity};
use cunyun_protocol::key::Role;
use serde_json::json;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpSocket, TcpStream};

const HOSTILE: &str = "127.0.0.2";

fn identity(n: u8, role: Role, scope: &str) -> NodeIdentity {
    NodeIdentity {
        node_id: NodeId([n; 16]),
        role,
        scope: AreaScope::parse(scope).expect("scope"),
    }
}

/// A plain TCP connection from `HOSTILE` to `to` that never speaks TLS.
async fn hostile_connect(to: SocketAddr) -> TcpStream {
    let sock = TcpSocket::new_v4().expect("socket");
    sock.bind(format!("{HOSTILE}:0").parse().expect("addr"))
        .expect("bind 127.0.0.2");
    tokio::time::timeout(Duration::from_secs(5), sock.connect(to))
        .await
        .expect("connect in time")
        .expect("connect")
}

/// Whether the server closed `s` (end of stream or reset) within `wait`. A server waiting for
/// a TLS ClientHello sends nothing and keeps the connection open.
async fn closed_within(s: &mut TcpStream, wait: Duration) -> bool {
    let mut buf = [0u8; 64];
    match tokio::time::timeout(wait, s.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => true,
        Ok(Ok(_)) | Err(_) => false,
    }
}

/// Connects from `HOSTILE` and asserts the server admitted the connection (kept it open).
async fn admitted(to: SocketAddr) -> TcpStream {
    let mut s = hostile_connect(to).await;
    assert!(
        !closed_within(&mut s, Duration::from_millis(300)).await,
        "connection within the limits was closed"
    );
    s
}

/// Connects from `HOSTILE` and asserts the server closed the connection at once.
async fn refused(to: SocketAddr) {
    let mut s = hostile_connect(to).await;
    assert!(
        closed_within(&mut s, Duration::from_secs(5)).await,
        "connection over the limits was kept open"
    );
}

/// Drops `streams` and gives the server a moment to see them closed (its handshake fails on
/// the end of stream, which frees the address's concurrent count).
async fn close(streams: Vec<TcpStream>) {
    drop(streams);
    tokio::time::sleep(Duration::from_millis(300)).await;
}

/// Drives the limits of a listener at `to` with `per_minute` = 5 and `concurrent` = 2:
/// the third concurrent connection is refused, then the sixth in the minute.
async fn exercise_limits(to: SocketAddr) {
    let h1 = admitted(to).await;
    let h2 = admitted(to).await;
    refused(to).await; // a third at once
    close(vec![h1, h2]).await;
    let h3 = admitted(to).await;
    let h4 = admitted(to).await;
    close(vec![h3, h4]).await;
    let h5 = admitted(to).await;
    close(vec![h5]).await;
    refused(to).await; // the sixth in the minute
    refused(to).await; // and it stays refused
}

const TEST_LIMITS: AddrLimits = AddrLimits {
    per_minute: 5,
    concurrent: 2,
    exempt_loopback: false,
};

async fn start_node(
    root: &Path,
    name: &str,
    id: NodeIdentity,
    peers: Vec<SocketAddr>,
) -> RunningNode {
    let dir = root.join(name);
    cunyun_platform::certs::tls::init_dev_identity(&root.join("ca"), &dir.join("tls"), &id)
        .expect("init");
    let mut c = NodeConfig::default();
    c.data_dir = dir;
    c.listen = "127.0.0.1:0".parse().expect("addr");
    c.scope = id.scope;
    c.role = id.role;
    c.sync.enabled = true;
    c.sync.listen = "127.0.0.1:0".parse().expect("addr");
    c.sync.mdns = false;
    c.sync.static_peers = peers;
    c.sync.interval_s = 3600; // only the first sync and syncs after changes
    c.sync.debounce_ms = 100;
    c.sync.backoff_ms = 200;
    c.sync.per_address = TEST_LIMITS;
    server::start(&c, std::future::pending())
        .await
        .expect("node starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_port_refuses_a_flooding_address_and_a_good_peer_still_syncs() {
    let root = tempfile::tempdir().expect("tempdir");
    let county = start_node(
        root.path(),
        "c",
        identity(3, Role::County, "510116"),
        vec![],
    )
    .await;
    let c_addr = county.state.sync.as_ref().expect("sync").listen_addr();

    exercise_limits(c_addr).await;

    // A village on 127.0.0.1 syncs a new household to the county all the same.
    let village = start_node(
        root.path(),
        "a",
        identity(1, Role::Village, "510116108203"),
        vec![],
    )
    .await;
    let created = village
        .state
        .records
        .create_household(
            "cadre",
            &json!({"profile": {"group": 1, "residents": 2}, "private": {"head_name": "张三"}}),
        )
        .await
        .expect("create");
    let report = village
        .state
        .sync
        .as_ref()
        .expect("sync")
        .sync_with(c_addr)
        .await
        .expect("the good peer connects");
    assert!(report.outcome.is_ok(), "{:?}", report.outcome);
    assert!(
        county.state.records.get_household(&created.id).is_ok(),
        "the household reached the county"
    );
    // The flooding address is still refused.
    refused(c_addr).await;
    for n in [village, county] {
        n.stop().await.expect("stop");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrollment_port_refuses_a_flooding_address_and_a_good_node_still_enrolls() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let hub_dir = tmp.path().join("hub-ca");
    let ca = CertAuthority::create("test province", &identity(200, Role::Hub, "51")).expect("root");
    CaDir::write(&hub_dir, &ca.pem, &ca.pem.cert_pem).expect("write");
    let hub = CaDir::load(&hub_dir).expect("load");
    let tokens = TokenStore::open(&hub_dir);
    let token = tokens
        .issue(
            AreaScope::parse("510116").expect("scope"),
            Role::County,
            3600,
            system_time_s(),
        )
        .expect("token");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(enroll::serve_limited(
        listener,
        Arc::new(CaDir::load(&hub_dir).expect("ca")),
        Arc::new(TokenStore::open(&hub_dir)),
        TEST_LIMITS,
    ));

    exercise_limits(addr).await;

    // A county on 127.0.0.1 enrolls with its token.
    let done = enroll::enroll_node(
        addr,
        &hub.root_pem,
        &token.token,
        &tmp.path().join("county"),
    )
    .await
    .expect("a well-behaved node enrolls");
    assert_eq!(done.identity.role, Role::County);
    refused(addr).await;
    task.abort();
}

const VILLAGE_A: &str = "510116108203";
const VILLAGE_B: &str = "510116108204";

/// A client logged in as `name`: it sends the session cookie, and the CSRF token when the node
/// sets one (`cunyun_csrf`), on every request.
async fn logged_in(url: &str, name: &str, password: &str) -> reqwest::Client {
    let resp = reqwest::Client::new()
        .post(format!("{url}/api/v1/login"))
        .json(&json!({"name": name, "password": password}))
        .send()
        .await
        .expect("login");
    assert_eq!(resp.status().as_u16(), 200, "login");
    let pairs: Vec<String> = resp
        .headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .map(str::to_string)
        .collect();
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::COOKIE,
        pairs.join("; ").parse().expect("cookie header"),
    );
    if let Some(token) = pairs.iter().find_map(|p| p.strip_prefix("cunyun_csrf=")) {
        headers.insert("x-csrf-token", token.parse().expect("csrf header"));
    }
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .default_headers(headers)
        .build()
        .expect("client")
}

async fn send(req: reqwest::RequestBuilder) -> (u16, serde_json::Value) {
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let body = resp.json().await.unwrap_or(serde_json::Value::Null);
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cadre_of_village_a_gets_403_for_village_b_records_on_every_api_route() {
    use cunyun_protocol::key::Kind;
    let dir = tempfile::tempdir().expect("tempdir");
    let accounts = cunyun_platform::accounts::Accounts::open(dir.path()).expect("accounts");
    accounts
        .add("cadre-a", VILLAGE_A, "甲村干部的密码2026")
        .expect("add");
    accounts
        .add("cadre-b", VILLAGE_B, "乙村干部的密码2026")
        .expect("add");
    drop(accounts);
    let mut c = NodeConfig::default();
    c.data_dir = dir.path().to_path_buf();
    c.listen = "127.0.0.1:0".parse().expect("addr");
    c.scope = AreaScope::parse("510116").expect("county scope");
    c.role = Role::County;
    let node = server::start(&c, std::future::pending())
        .await
        .expect("node starts");
    let url = node.url();
    let records = &node.state.records;
    let household = |village: &str| {
        json!({"profile": {"village": village, "group": 1, "residents": 2},
               "private": {"head_name": "户主"}})
    };
    let own = records
        .create_household("admin", &household(VILLAGE_A))
        .await
        .expect("create A");
    let other = records
        .create_household("admin", &household(VILLAGE_B))
        .await
        .expect("create B");
    let need = |area: &str| {
        json!({"area": area, "requester": "coop", "title": "柑橘黄龙病防控",
               "contact_role": "合作社理事长"})
    };
    let own_need = records
        .create_need("admin", &need(VILLAGE_A))
        .await
        .expect("need A");
    let other_need = records
        .create_need("admin", &need(VILLAGE_B))
        .await
        .expect("need B");
    let store = records.store();
    let b_keys = [
        other.profile_key.clone(),
        other.private_key.clone(),
        other.profile_key.with_kind(Kind::Rec),
        other.profile_key.with_kind(Kind::Fb),
        other_need.key.clone(),
    ];
    let snapshot = || {
        b_keys
            .iter()
            .map(|k| store.entry(k).expect("entry").map(|e| e.digest))
            .collect::<Vec<_>>()
    };
    let before = snapshot();
    let documents = store.stats().documents;

    let http = logged_in(&url, "cadre-a", "甲村干部的密码2026").await;
    let (hb, nb) = (&other.id, other_need.key.id());
    let edit = json!({"edit_id": "edit-0000001", "base": {"profile": [], "private": []},
                      "patch": {"profile": {"residents": 9}}});
    let patch = json!({"profile": {"residents": 9}});
    let routes: Vec<(&str, reqwest::RequestBuilder)> = vec![
        (
            "GET household",
            http.get(format!("{url}/api/v1/households/{hb}")),
        ),
        (
            "PUT household",
            http.put(format!("{url}/api/v1/households/{hb}"))
                .json(&household(VILLAGE_B)),
        ),
        (
            "PATCH household",
            http.patch(format!("{url}/api/v1/households/{hb}"))
                .json(&patch),
        ),
        (
            "POST edit",
            http.post(format!("{url}/api/v1/households/{hb}/edits"))
                .json(&edit),
        ),
        (
            "GET recommendations",
            http.get(format!("{url}/api/v1/households/{hb}/recommendations")),
        ),
        (
            "POST item view",
            http.post(format!("{url}/api/v1/households/{hb}/items/item1/view")),
        ),
        (
            "GET qr",
            http.get(format!("{url}/api/v1/households/{hb}/qr.svg")),
        ),
        ("GET need", http.get(format!("{url}/api/v1/needs/{nb}"))),
        (
            "PUT need",
            http.put(format!("{url}/api/v1/needs/{nb}"))
                .json(&need(VILLAGE_B)),
        ),
        (
            "PATCH need",
            http.patch(format!("{url}/api/v1/needs/{nb}"))
                .json(&json!({"title": "改"})),
        ),
        (
            "POST household in B",
            http.post(format!("{url}/api/v1/households"))
                .json(&household(VILLAGE_B)),
        ),
        (
            "POST need in B",
            http.post(format!("{url}/api/v1/needs"))
                .json(&need(VILLAGE_B)),
        ),
    ];
    for (what, req) in routes {
        let (status, body) = send(req).await;
        assert_eq!(status, 403, "{what}: {body}");
        assert_eq!(body["error"], "forbidden", "{what}: {body}");
        assert!(
            body["message"]
                .as_str()
                .is_some_and(|m| m.contains("管辖范围") && m.contains("510116108203")),
            "{what}: {body}"
        );
    }
    assert_eq!(snapshot(), before, "nothing of village B changed");
    assert_eq!(store.stats().documents, documents, "nothing was created");

    // Lists show only village A's records.
    let (status, list) = send(http.get(format!("{url}/api/v1/households"))).await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|i| i["id"].as_str())
        .collect();
    assert_eq!(ids, vec![own.id.as_str()]);
    let (status, list) = send(http.get(format!("{url}/api/v1/needs"))).await;
    assert_eq!(status, 200);
    let keys: Vec<&str> = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|i| i["key"].as_str())
        .collect();
    assert_eq!(keys, vec![own_need.key.to_string().as_str()]);

    // The cadre's own village works on the same routes, and a record created without a village
    // lands in theirs.
    let (status, body) = send(http.get(format!("{url}/api/v1/households/{}", own.id))).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = send(
        http.patch(format!("{url}/api/v1/households/{}", own.id))
            .json(&patch),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = send(http.get(format!("{url}/api/v1/needs/{}", own_need.key.id()))).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = send(
        http.post(format!("{url}/api/v1/households"))
            .json(&json!({"profile": {"group": 2, "residents": 1}, "private": {}})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["profile"]["village"], VILLAGE_A);
    // And village B's cadre is refused village A's the same way.
    let http_b = logged_in(&url, "cadre-b", "乙村干部的密码2026").await;
    let (status, _) = send(http_b.get(format!("{url}/api/v1/households/{}", own.id))).await;
    assert_eq!(status, 403);
    node.stop().await.expect("stop");
}

/// Sends `path` byte for byte (no client-side normalisation of `..`) and returns the status
/// and body.
async fn raw_get(addr: SocketAddr, path: &str, cookie: Option<&str>) -> (u16, String) {
    use tokio::io::AsyncWriteExt;
    let mut s = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
        .await
        .expect("connect in time")
        .expect("connect");
    let cookie = cookie.map_or(String::new(), |c| format!("Cookie: {c}\r\n"));
    let req =
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{cookie}Connection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("answer in time")
        .expect("read");
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status line");
    (status, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traversal_in_content_rendition_item_and_app_file_names_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A secret beside the data directory and one inside it, which no route may serve.
    std::fs::write(dir.path().join("secret.txt"), "TOP-SECRET-FILE").expect("write");
    let mut c = NodeConfig::default();
    c.data_dir = dir.path().join("data");
    std::fs::create_dir_all(&c.data_dir).expect("mkdir");
    std::fs::write(c.data_dir.join("secret.txt"), "TOP-SECRET-FILE").expect("write");
    let accounts = cunyun_platform::accounts::Accounts::open(&c.data_dir).expect("accounts");
    accounts
        .add("cadre-a", VILLAGE_A, "甲村干部的密码2026")
        .expect("add");
    drop(accounts);
    c.listen = "127.0.0.1:0".parse().expect("addr");
    c.scope = AreaScope::parse(VILLAGE_A).expect("scope");
    let node = server::start(&c, std::future::pending())
        .await
        .expect("node starts");
    let login = reqwest::Client::new()
        .post(format!("{}/api/v1/login", node.url()))
        .json(&json!({"name": "cadre-a", "password": "甲村干部的密码2026"}))
        .send()
        .await
        .expect("login");
    assert_eq!(login.status().as_u16(), 200);
    let cookie = login
        .headers()
        .get(reqwest::header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::to_string);
    let names = [
        "../secret.txt",
        "..%2fsecret.txt",
        "..%2Fsecret.txt",
        "%2e%2e%2fsecret.txt",
        "%2E%2E/secret.txt",
        "..%5csecret.txt",
        "..\\secret.txt",
        "%2fetc%2fpasswd",
        "/etc/passwd",
        "secret.txt%00.js",
        "app.js%00",
        "..%2f..%2f..%2f..%2fetc%2fpasswd",
        "....//secret.txt",
        "%252e%252e%252fsecret.txt",
    ];
    for name in names {
        for path in [
            format!("/content/{name}/main"),
            format!("/content/item1/{name}"),
            format!("/content/{name}/main/html"),
            format!("/content/item1/{name}/html"),
            format!("/v/content/{name}"),
            format!("/api/v1/content/{name}"),
            format!("/app/{name}"),
            format!("/app/{name}/app.js"),
        ] {
            let (status, text) = raw_get(node.addr, &path, cookie.as_deref()).await;
            assert!(matches!(status, 400 | 404), "{path}: {status}\n{text}");
            assert!(!text.contains("TOP-SECRET"), "{path} leaked a file");
            assert!(!text.contains("root:"), "{path} leaked /etc/passwd");
            assert!(
                !text.contains("addEventListener"),
                "{path} served an app file under another name"
            );
        }
    }
    // Blob-store paths come only from typed ids (hex of a hash): no name above parses as one.
    for name in names {
        let decoded = name
            .replace("%2f", "/")
            .replace("%2e", ".")
            .replace("%00", "\0");
        for text in [name, decoded.as_str()] {
            assert!(
                text.parse::<cunyun_protocol::manifest::ContentId>()
                    .is_err(),
                "{text}"
            );
        }
    }
    // The real app file is served (the routes work at all).
    let (status, _) = raw_get(node.addr, "/app/app.js", None).await;
    assert_eq!(status, 200);
    node.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_limit_get_413_on_every_writing_route_and_change_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let accounts = cunyun_platform::accounts::Accounts::open(dir.path()).expect("accounts");
    accounts
        .add("cadre-a", VILLAGE_A, "甲村干部的密码2026")
        .expect("add");
    drop(accounts);
    let mut c = NodeConfig::default();
    c.data_dir = dir.path().to_path_buf();
    c.listen = "127.0.0.1:0".parse().expect("addr");
    c.scope = AreaScope::parse(VILLAGE_A).expect("scope");
    c.max_body_bytes = 16 * 1024;
    let node = server::start(&c, std::future::pending())
        .await
        .expect("node starts");
    let url = node.url();
    let own = node
        .state
        .records
        .create_household(
            "admin",
            &json!({"profile": {"group": 1, "residents": 2}, "private": {"head_name": "户主"}}),
        )
        .await
        .expect("create");
    let documents = node.state.records.store().stats().documents;
    // Valid JSON, one string field long enough to pass the limit.
    let big = json!({"profile": {"group": 1, "residents": 2, "surveyor": "长".repeat(8 * 1024)}});
    let big = serde_json::to_vec(&big).expect("json");
    assert!(big.len() > c.max_body_bytes);
    let http = logged_in(&url, "cadre-a", "甲村干部的密码2026").await;
    let id = &own.id;
    for (what, req) in [
        (
            "login",
            reqwest::Client::new().post(format!("{url}/api/v1/login")),
        ),
        (
            "create household",
            http.post(format!("{url}/api/v1/households")),
        ),
        (
            "put household",
            http.put(format!("{url}/api/v1/households/{id}")),
        ),
        (
            "patch household",
            http.patch(format!("{url}/api/v1/households/{id}")),
        ),
        (
            "edit",
            http.post(format!("{url}/api/v1/households/{id}/edits")),
        ),
        ("create need", http.post(format!("{url}/api/v1/needs"))),
        (
            "derive tags",
            http.post(format!("{url}/api/v1/derive-tags")),
        ),
    ] {
        let (status, body) = send(
            req.header("content-type", "application/json")
                .body(big.clone()),
        )
        .await;
        assert_eq!(status, 413, "{what}: {body}");
    }
    assert_eq!(node.state.records.store().stats().documents, documents);
    node.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_port_refuses_a_flooding_address_and_serves_others() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = NodeConfig::default();
    c.data_dir = dir.path().to_path_buf();
    c.listen = "127.0.0.1:0".parse().expect("addr");
    c.scope = AreaScope::parse(VILLAGE_A).expect("scope");
    c.http_per_address = TEST_LIMITS;
    let node = server::start(&c, std::future::pending())
        .await
        .expect("node starts");
    // An HTTP server waits for the request line, like a TLS server for its ClientHello.
    exercise_limits(node.addr).await;
    // A phone on 127.0.0.1 is served.
    let resp = reqwest::Client::new()
        .get(format!("{}/healthz", node.url()))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("healthz");
    assert_eq!(resp.status().as_u16(), 200);
    refused(node.addr).await;
    node.stop().await.expect("stop");
}
