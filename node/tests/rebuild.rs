//! Rebuilding a dead village node from its county: the village's data directory is deleted,
//! the node is re-created with the same identity (a new certificate for the same node id, as
//! `cunyun-node enroll-village --node-id` issues), and after syncing with the county it holds
//! every household it had again, private parts included, with the same heads.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use cunyun_node::config::NodeConfig;
use cunyun_node::server::{self, RunningNode};
use cunyun_protocol::area::AreaScope;
use cunyun_protocol::digest::HeadsDigest;
use cunyun_protocol::identity::{NodeId, NodeIdentity};
use cunyun_protocol::key::{DocKey, Role};
use serde_json::json;

const VILLAGE: &str = "510116108203";

fn identity(n: u8, role: Role, scope: &str) -> NodeIdentity {
    NodeIdentity {
        node_id: NodeId([n; 16]),
        role,
        scope: AreaScope::parse(scope).expect("scope"),
    }
}

async fn start_node(
    root: &Path,
    name: &str,
    id: NodeIdentity,
    peers: Vec<std::net::SocketAddr>,
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
    c.sync.interval_s = 1;
    c.sync.debounce_ms = 100;
    c.sync.backoff_ms = 200;
    server::start(&c, std::future::pending())
        .await
        .expect("node starts")
}

fn village_index(node: &RunningNode) -> BTreeMap<DocKey, HeadsDigest> {
    node.state
        .records
        .store()
        .scan(&AreaScope::parse(VILLAGE).expect("scope"))
        .map(|r| r.expect("scan"))
        .map(|(k, e)| (k, e.digest))
        .collect()
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_village_rebuilt_from_its_county_gets_every_household_back() {
    let root = tempfile::tempdir().expect("tempdir");
    let county = start_node(
        root.path(),
        "c",
        identity(3, Role::County, "510116"),
        vec![],
    )
    .await;
    let c_addr = county.state.sync.as_ref().expect("sync").listen_addr();
    let village_id = identity(1, Role::Village, VILLAGE);
    let a = start_node(root.path(), "a", village_id, vec![c_addr]).await;
    for i in 0..15 {
        let body = json!({
            "profile": {"group": 1 + (i % 5), "residents": 3, "age_18_59": 2},
            "private": {"head_name": format!("户主{i}"), "notes": format!("只在本村-{i}")}
        });
        a.state
            .records
            .create_household("cadre", &body)
            .await
            .expect("create");
    }
    let before = village_index(&a);
    assert_eq!(
        before.len(),
        30,
        "15 households, profile and private part each"
    );
    wait_for("the county to hold the village", || {
        village_index(&county) == before
    })
    .await;
    let private_before: Vec<_> = a
        .state
        .records
        .list_households(&Default::default())
        .expect("list")
        .into_iter()
        .map(|h| {
            let full = a.state.records.get_household(&h.id).expect("get");
            (h.id, serde_json::to_value(&full.private).expect("private"))
        })
        .collect();
    a.stop().await.expect("stop");

    // The card died: nothing of the village node is left.
    std::fs::remove_dir_all(root.path().join("a")).expect("delete data dir");
    let a = start_node(root.path(), "a", village_id, vec![c_addr]).await;
    assert!(village_index(&a).is_empty(), "the new node starts empty");
    wait_for("the village to get its documents back", || {
        village_index(&a) == before
    })
    .await;
    for (id, private) in private_before {
        let full = a.state.records.get_household(&id).expect("household back");
        assert_eq!(
            serde_json::to_value(&full.private).expect("private"),
            private,
            "{id}"
        );
    }
    for n in [a, county] {
        n.stop().await.expect("stop");
    }
}
