//! Deletion on request reaches every node that held the household, over real mutual TLS on
//! loopback.
//!
//! Topology (static peers, no mDNS): village V (510116108203) and hub H (51) dial county C
//! (510116); a mule M (village scope 510116108203) dials V. Two households are recorded at V
//! with planted marker strings in their profile and private part; they reach M, C and H, the hub
//! matches them and its `rec` documents come back down, and V records feedback (`fb`). The mule
//! is then stopped (it will be the stale peer). One household is deleted at V. Within bounded
//! sync rounds its `hh`, `hp`, `rec` and `fb` are gone from V, C and H, which hold its tombstone;
//! the hub no longer matches or counts it; the other household is untouched. The mule comes
//! back with the old documents, one of them edited offline, and offers them: they are refused
//! (V never holds them again) and the mule receives the tombstone and removes them too. Finally every node is stopped, its
//! store reopened (which vacuums after a removal), and no file of any node contains the deleted
//! household's markers, while the kept household's marker is still there.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use automerge::transaction::Transactable;
use cunyun_hub::config::HubConfig;
use cunyun_hub::RunningHub;
use cunyun_node::config::NodeConfig;
use cunyun_node::server::{self, RunningNode};
use cunyun_platform::store::{DocStore, DocWrite, StoreConfig};
use cunyun_protocol::area::AreaScope;
use cunyun_protocol::deletion::DeletionReason;
use cunyun_protocol::fields::Date;
use cunyun_protocol::identity::{NodeId, NodeIdentity};
use cunyun_protocol::key::{DocKey, Kind, Role};
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
    // A node just stopped may still be closing its store (its sync tasks end on their own):
    // retry for a bounded time.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match try_start_node(root, name, id, peers.clone()).await {
            Ok(node) => return node,
            Err(e) if Instant::now() < deadline => {
                eprintln!("retrying start of {name}: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("{name} does not start: {e}"),
        }
    }
}

async fn try_start_node(
    root: &Path,
    name: &str,
    id: NodeIdentity,
    peers: Vec<std::net::SocketAddr>,
) -> Result<RunningNode, server::StartError> {
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
    server::start(&c, std::future::pending()).await
}

async fn start_hub(root: &Path, peer: std::net::SocketAddr) -> RunningHub {
    let id = identity(9, Role::Hub, "51");
    let dir = root.join("hub");
    cunyun_platform::certs::tls::init_dev_identity(&root.join("ca"), &dir.join("tls"), &id)
        .expect("init");
    let mut c = HubConfig::default();
    c.data_dir = dir;
    c.listen = "127.0.0.1:0".parse().expect("addr");
    c.today = Date::parse("2026-04-15");
    c.match_interval_ms = 200;
    c.sync.enabled = true;
    c.sync.listen = "127.0.0.1:0".parse().expect("addr");
    c.sync.mdns = false;
    c.sync.static_peers = vec![peer];
    c.sync.interval_s = 1;
    c.sync.debounce_ms = 100;
    c.sync.backoff_ms = 200;
    cunyun_hub::start(&c, std::future::pending())
        .await
        .expect("hub starts")
}

fn sync_addr(node: &RunningNode) -> std::net::SocketAddr {
    node.state
        .sync
        .as_ref()
        .expect("sync enabled")
        .listen_addr()
}

fn keys(store: &DocStore) -> BTreeSet<DocKey> {
    store
        .scan(&AreaScope::parse("51").expect("scope"))
        .map(|r| r.expect("scan").0)
        .collect()
}

/// The documents of household `id` in the hub's store, by kind.
fn hub_household_kinds(store: &dyn cunyun_hub::store::HubStore, id: &str) -> BTreeSet<Kind> {
    store
        .entries(&AreaScope::parse("51").expect("scope"), None)
        .expect("entries")
        .into_iter()
        .map(|(k, _)| k)
        .filter(|k| k.id() == id)
        .map(|k| k.kind())
        .collect()
}

/// The documents of household `id` in `store`, by kind.
fn household_kinds(store: &DocStore, id: &str) -> BTreeSet<Kind> {
    keys(store)
        .into_iter()
        .filter(|k| k.id() == id)
        .map(|k| k.kind())
        .collect()
}

fn files_containing(dir: &Path, needle: &[u8]) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_containing(&p, needle));
        } else if let Ok(bytes) = std::fs::read(&p) {
            if bytes.windows(needle.len()).any(|w| w == needle) {
                out.push(p);
            }
        }
    }
    out
}

/// Opens the store of a stopped node (retrying while its last handles close).
async fn open_store(dir: &Path) -> DocStore {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match DocStore::open(&dir.join("store"), StoreConfig::default()) {
            Ok(s) => return s,
            Err(e) if Instant::now() < deadline => {
                eprintln!("retrying open of {}: {e}", dir.display());
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("{}: the store does not open: {e}", dir.display()),
        }
    }
}

/// Polls `cond` every 200 ms for at most 60 s.
async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

const GONE_HH: &str = "DELMARKhh7c2e";
const GONE_HP: &str = "DELMARKhp7c2e";
const KEPT_HP: &str = "KEEPMARKhp51a0";

fn set(kinds: &[Kind]) -> BTreeSet<Kind> {
    kinds.iter().copied().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deletion_reaches_every_node_and_a_stale_peer_cannot_bring_it_back() {
    let root = tempfile::tempdir().expect("tempdir");
    let county = start_node(
        root.path(),
        "c",
        identity(3, Role::County, "510116"),
        vec![],
    )
    .await;
    let hub = start_hub(root.path(), sync_addr(&county)).await;
    let asf = {
        let file = root.path().join("asf.md");
        std::fs::write(&file, "# 非洲猪瘟防控\n").expect("write");
        hub.hub
            .library
            .add(
                &json!({"title": "非洲猪瘟防控十要点", "tags": ["liv.asf"], "format": "article",
                    "review_date": "2026-03-01"}),
                &file,
                &Default::default(),
            )
            .expect("add content")
            .id
    };
    let v = start_node(
        root.path(),
        "v",
        identity(1, Role::Village, VILLAGE),
        vec![sync_addr(&county)],
    )
    .await;
    let mule_id = identity(5, Role::Mule, VILLAGE);
    let mule = start_node(root.path(), "m", mule_id, vec![sync_addr(&v)]).await;

    let mut ids = Vec::new();
    for (surveyor, notes) in [(GONE_HH, GONE_HP), ("kept", KEPT_HP)] {
        let rec = v
            .state
            .records
            .create_household(
                "wang",
                &json!({
                    "profile": {"group": 2, "residents": 3, "age_18_59": 2,
                        "livestock": {"pig": {"herd_band": 1}}, "surveyor": surveyor},
                    "private": {"head_name": "张三", "notes": notes}
                }),
            )
            .await
            .expect("create");
        ids.push(rec.id);
    }
    let (gone, kept) = (ids[0].clone(), ids[1].clone());
    let all = set(&[Kind::Hh, Kind::Hp, Kind::Rec, Kind::Fb]);
    let (vs, cs, ms) = (
        v.state.records.store().clone(),
        county.state.records.store().clone(),
        mule.state.records.store().clone(),
    );
    let hs = hub.hub.store.clone();
    // The hub's recommendation comes down; the village records that it was opened.
    wait_for("the rec document at the village", || {
        household_kinds(&vs, &gone).contains(&Kind::Rec)
    })
    .await;
    v.state
        .records
        .record_feedback(
            &gone,
            &asf,
            cunyun_node::feedback::Event::View,
            Date::parse("2026-04-16").expect("date"),
        )
        .await
        .expect("feedback");
    wait_for("the household on every node", || {
        household_kinds(&vs, &gone) == all
            && household_kinds(&ms, &gone) == all
            && household_kinds(&cs, &gone) == all
            && hub_household_kinds(hs.as_ref(), &gone) == set(&[Kind::Hh, Kind::Rec, Kind::Fb])
            && hub.hub.engine.households() == 2
    })
    .await;
    // The markers are really in the files now (so their absence later means something).
    assert!(!files_containing(&root.path().join("c"), GONE_HP.as_bytes()).is_empty());
    assert!(!files_containing(&root.path().join("hub"), GONE_HH.as_bytes()).is_empty());
    let reached_before = hub.hub.engine.coverage();

    // The mule goes away holding the household: it will be the stale peer.
    drop(ms);
    mule.stop().await.expect("stop mule");
    let tomb = v
        .state
        .records
        .delete_household("wang", &gone, DeletionReason::Withdrawn)
        .await
        .expect("delete");
    assert_eq!(tomb.household, gone);
    assert!(household_kinds(&vs, &gone) == set(&[Kind::Del]));
    wait_for("the deletion at the county and the hub", || {
        household_kinds(&cs, &gone) == set(&[Kind::Del])
            && hub_household_kinds(hs.as_ref(), &gone) == set(&[Kind::Del])
            && hub.hub.engine.households() == 1
    })
    .await;
    // The other household is untouched everywhere.
    assert_eq!(
        household_kinds(&vs, &kept),
        set(&[Kind::Hh, Kind::Hp, Kind::Rec])
    );
    assert!(hub_household_kinds(hs.as_ref(), &kept).contains(&Kind::Hh));
    assert_ne!(
        format!("{:?}", hub.hub.engine.coverage()),
        format!("{reached_before:?}"),
        "coverage still counts the deleted household"
    );

    // While away, the mule's holder edited the household offline (so its next session offers
    // the profile as changed, whatever the peers remember of each other).
    {
        let store = open_store(&root.path().join("m")).await;
        let hh = keys(&store)
            .into_iter()
            .find(|k| k.id() == gone && k.kind() == Kind::Hh)
            .expect("stale hh");
        let mut doc = store.load(&hh).expect("load").expect("doc");
        let before = doc.get_heads();
        let mut tx = doc.transaction();
        tx.put(automerge::ROOT, "group", 3).expect("put");
        tx.commit();
        store
            .commit(vec![DocWrite {
                key: hh,
                chunk: doc.save_after(&before),
                heads: doc.get_heads(),
                updated_at_ms: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .expect("clock")
                    .as_millis() as u64,
            }])
            .expect("offline edit");
    }
    // The stale mule comes back and offers the old documents.
    let mule = start_node(root.path(), "m", mule_id, vec![sync_addr(&v)]).await;
    let ms = mule.state.records.store().clone();
    assert_eq!(household_kinds(&ms, &gone), all, "the mule is stale");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        // Never resurrected at the village, at any moment.
        assert_eq!(household_kinds(&vs, &gone), set(&[Kind::Del]));
        let sessions_ok = mule
            .state
            .sync
            .as_ref()
            .expect("sync")
            .status()
            .totals
            .sessions_ok;
        if household_kinds(&ms, &gone) == set(&[Kind::Del]) && sessions_ok >= 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the mule did not take the deletion"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(household_kinds(&cs, &gone), set(&[Kind::Del]));
    assert_eq!(hub_household_kinds(hs.as_ref(), &gone), set(&[Kind::Del]));

    drop((vs, cs, ms, hs));
    for n in [v, county, mule] {
        n.stop().await.expect("stop");
    }
    hub.stop().await.expect("stop hub");
    // Reopening a store after a removal vacuums it: the removed bytes leave sled's files.
    for name in ["v", "c", "m", "hub"] {
        let dir = root.path().join(name);
        let store = open_store(&dir).await;
        assert_eq!(household_kinds(&store, &gone), set(&[Kind::Del]), "{name}");
        drop(store);
        for m in [GONE_HH, GONE_HP] {
            assert!(
                files_containing(&dir, m.as_bytes()).is_empty(),
                "{m} still in {name}: {:?}",
                files_containing(&dir, m.as_bytes())
            );
        }
    }
    for name in ["v", "c", "m"] {
        assert!(
            !files_containing(&root.path().join(name), KEPT_HP.as_bytes()).is_empty(),
            "the kept household's data vanished from {name}"
        );
    }
}
