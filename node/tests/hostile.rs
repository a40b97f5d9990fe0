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
use cunyun_node::enroll::{self, CaDir, TokenStore};
use cunyun_node::ratelimit::AddrLimits;
use cunyun_node::server::{self, RunningNode};
use cunyun_node::tls::CertAuthority;
use cunyun_node::trust::system_time_s;
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
    cunyun_node::tls::init_dev_identity(&root.join("ca"), &dir.join("tls"), &id).expect("init");
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
        identity(1, Role::Village, "510116104201"),
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
