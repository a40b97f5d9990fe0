//! Nodes syncing over real mutual TLS on loopback, through the whole node: API writes on two
//! village nodes reach their county node and a hub-role node; each node ends with exactly what
//! its scope and role allow, with identical heads for every document two nodes both hold.
//!
//! Topology (static peers, no mDNS): village A (510116108203) and village B (510116108204) dial
//! county C (510116); hub H (51) dials C.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use cunyun_node::config::NodeConfig;
use cunyun_node::server::{self, RunningNode};
use cunyun_protocol::area::AreaScope;
use cunyun_protocol::digest::HeadsDigest;
use cunyun_protocol::identity::{NodeId, NodeIdentity};
use cunyun_protocol::key::{DocKey, Kind, Role};
use serde_json::json;

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

fn index(node: &RunningNode) -> BTreeMap<DocKey, HeadsDigest> {
    node.state
        .records
        .store()
        .scan(&AreaScope::parse("51").expect("scope"))
        .map(|r| r.expect("scan"))
        .map(|(k, e)| (k, e.digest))
        .collect()
}

fn sync_addr(node: &RunningNode) -> std::net::SocketAddr {
    node.state
        .sync
        .as_ref()
        .expect("sync enabled")
        .listen_addr()
}

async fn create_households(node: &RunningNode, n: usize, tag: &str) {
    for i in 0..n {
        let body = json!({
            "profile": {"group": 1 + (i % 5), "residents": 2, "age_60_69": 2,
                        "livestock": {"pig": {"herd_band": 1}}},
            "private": {"head_name": format!("{tag}户主{i}"), "notes": format!("{tag}-SECRET-{i}")}
        });
        node.state
            .records
            .create_household("cadre", &body)
            .await
            .expect("create");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn villages_county_and_hub_converge_within_their_scopes() {
    let root = tempfile::tempdir().expect("tempdir");
    let county = start_node(
        root.path(),
        "c",
        identity(3, Role::County, "510116"),
        vec![],
    )
    .await;
    let c_addr = sync_addr(&county);
    let a = start_node(
        root.path(),
        "a",
        identity(1, Role::Village, "510116108203"),
        vec![c_addr],
    )
    .await;
    let b = start_node(
        root.path(),
        "b",
        identity(2, Role::Village, "510116108204"),
        vec![c_addr],
    )
    .await;
    let hub = start_node(root.path(), "h", identity(4, Role::Hub, "51"), vec![c_addr]).await;

    create_households(&a, 12, "甲").await;
    create_households(&b, 9, "乙").await;
    // An edit after the first syncs, so warm sessions carry it too.
    let first = a
        .state
        .records
        .list_households(&Default::default())
        .expect("list")[0]
        .id
        .clone();

    let deadline = Instant::now() + Duration::from_secs(60);
    let mut edited = false;
    loop {
        let (ia, ib, ic, ih) = (index(&a), index(&b), index(&county), index(&hub));
        let county_full = ic.len() == 2 * (12 + 9);
        let hub_full = ih.len() == 12 + 9;
        if county_full && !edited {
            a.state
                .records
                .update_household(
                    "cadre",
                    &first,
                    &json!({"profile": {"group": 5}}),
                    cunyun_node::records::UpdateMode::MergePatch,
                )
                .await
                .expect("update");
            edited = true;
            continue;
        }
        let agree = |x: &BTreeMap<DocKey, HeadsDigest>, y: &BTreeMap<DocKey, HeadsDigest>| {
            x.iter().all(|(k, d)| y.get(k).is_none_or(|e| e == d))
        };
        if edited
            && county_full
            && hub_full
            && ia.len() == 24
            && ib.len() == 18
            && agree(&ia, &ic)
            && agree(&ib, &ic)
            && agree(&ih, &ic)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not converged: a={} b={} c={} h={}",
            ia.len(),
            ib.len(),
            ic.len(),
            ih.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Scope: a village never holds another village's documents; the hub holds no hp.
    let village_a = "510116108203";
    assert!(index(&a).keys().all(|k| k.area().to_string() == village_a));
    assert!(index(&b).keys().all(|k| k.area().to_string() != village_a));
    assert!(index(&hub).keys().all(|k| k.kind() == Kind::Hh));
    // The edit made on A reached the hub.
    let hh = index(&a)
        .keys()
        .find(|k| k.id() == first && k.kind() == Kind::Hh)
        .cloned()
        .expect("key");
    assert_eq!(index(&hub).get(&hh), index(&a).get(&hh));
    // The status page knows the peers and counts.
    let status = county.state.sync.as_ref().expect("sync").status();
    assert_eq!(status.peers.len(), 3, "{:?}", status.peers);
    assert!(status.totals.sessions_ok >= 3);
    assert!(status.totals.docs_received >= 42);

    for n in [a, b, county, hub] {
        n.stop().await.expect("stop");
    }
    // Planted private markers never reached the hub's files.
    for entry in walk(&root.path().join("h")) {
        let bytes = std::fs::read(&entry).unwrap_or_default();
        let hay = String::from_utf8_lossy(&bytes);
        assert!(
            !hay.contains("SECRET"),
            "private data in {}",
            entry.display()
        );
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}
