//! The sync service over a `NodeHost`, on loopback mutual TLS: a write is synced because the
//! host reported it (no periodic round is due for an hour), and `stop()` ends every task so
//! the stores reopen right after.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use automerge::transaction::Transactable;
use automerge::{Automerge, ROOT};
use cunyun_platform::host::NodeHost;
use cunyun_platform::store::{DocStore, DocWrite, StoreConfig};
use cunyun_platform::sync::{SyncConfig, SyncService};
use cunyun_protocol::area::AreaScope;
use cunyun_protocol::identity::{NodeId, NodeIdentity};
use cunyun_protocol::key::{DocKey, Role};

const VILLAGE: &str = "510116108203";

async fn start(
    root: &Path,
    name: &str,
    n: u8,
    peers: Vec<std::net::SocketAddr>,
) -> (DocStore, SyncService) {
    let id = NodeIdentity {
        node_id: NodeId([n; 16]),
        role: Role::Village,
        scope: AreaScope::parse(VILLAGE).expect("scope"),
    };
    let dir = root.join(name);
    cunyun_platform::certs::tls::init_dev_identity(&root.join("ca"), &dir.join("tls"), &id)
        .expect("init");
    let store = DocStore::open(&dir.join("store"), StoreConfig::default()).expect("store");
    let mut c = SyncConfig::default();
    c.enabled = true;
    c.listen = "127.0.0.1:0".parse().expect("addr");
    c.mdns = false;
    c.static_peers = peers;
    // Only the first contact and writes make a peer due within the test.
    c.interval_s = 3600;
    c.debounce_ms = 50;
    let host = Arc::new(NodeHost::new(store.clone(), &dir));
    let service = SyncService::start(c, host, &dir)
        .await
        .expect("sync starts");
    (store, service)
}

fn write(store: &DocStore, id: &str) -> DocKey {
    let key = DocKey::parse(&format!("{VILLAGE}/hh/{id}")).expect("key");
    let mut doc = Automerge::new();
    let mut tx = doc.transaction();
    tx.put(ROOT, "group", 1).expect("put");
    tx.commit();
    store
        .commit(vec![DocWrite {
            key: key.clone(),
            chunk: doc.save(),
            heads: doc.get_heads(),
            updated_at_ms: cunyun_platform::clock::now_ms(),
        }])
        .expect("commit");
    key
}

async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_is_synced_when_the_host_reports_it_and_stop_frees_the_stores() {
    let root = tempfile::tempdir().expect("tempdir");
    let (a_store, a) = start(root.path(), "a", 1, Vec::new()).await;
    let (b_store, b) = start(root.path(), "b", 2, vec![a.listen_addr()]).await;
    // B dials A once at start (a new peer is due at once) and then not for an hour.
    eventually("the first session", || b.status().totals.sessions_ok >= 1).await;
    let first = b.status().totals.sessions_ok;

    // A write on B: the scheduler wakes on the host's write counter and dials A.
    let key = write(&b_store, "h1");
    eventually("the write to reach A", || {
        a_store.entry(&key).unwrap().is_some()
    })
    .await;
    eventually("B to record the session", || {
        b.status().totals.sessions_ok > first
    })
    .await;

    // A session in flight when the service stops.
    let in_flight = {
        let (b, addr) = (b.clone(), a.listen_addr());
        tokio::spawn(async move { b.sync_with(addr).await })
    };
    tokio::time::sleep(Duration::from_millis(5)).await;
    tokio::time::timeout(Duration::from_secs(40), async {
        b.stop().await;
        a.stop().await;
    })
    .await
    .expect("stop returns");
    let _ = in_flight.await.expect("sync_with task");
    // Stopped: no new session starts.
    assert!(b.sync_with(a.listen_addr()).await.is_err());
    drop((a, b, a_store, b_store));
    // Nothing of the services holds the stores any more: they reopen (sled locks its files).
    for name in ["a", "b"] {
        let store = DocStore::open(
            &root.path().join(name).join("store"),
            StoreConfig::default(),
        )
        .unwrap_or_else(|e| panic!("{name}'s store reopens after stop: {e}"));
        assert!(
            store.entry(&key).unwrap().is_some(),
            "{name} holds the document"
        );
    }
}
