//! Sync over a bad link: a village node pushes 150 households to its county node through an
//! in-process link emulator (100 ms each way, 1 Mbit/s), and the first session's connection is
//! cut mid-transfer. The village retries after its backoff; the nodes end converged, with the
//! county's store consistent and every document loadable — nothing half-applied.

use std::time::{Duration, Instant};

use cunyun_node::config::NodeConfig;
use cunyun_node::server::{self, RunningNode};
use cunyun_protocol::area::{AreaCode, AreaScope};
use cunyun_protocol::identity::{NodeId, NodeIdentity};
use cunyun_protocol::key::Role;
use cunyun_tests::link::{Direction, LinkConfig, LinkEmulator};

const VILLAGE: &str = "510116108203";

fn config(root: &std::path::Path, name: &str, id: NodeIdentity) -> NodeConfig {
    let dir = root.join(name);
    cunyun_platform::certs::tls::init_dev_identity(&root.join("ca"), &dir.join("tls"), &id)
        .expect("identity");
    let mut c = NodeConfig::default();
    c.data_dir = dir;
    c.listen = "127.0.0.1:0".parse().expect("addr");
    c.scope = id.scope;
    c.role = id.role;
    c.sync.listen = "127.0.0.1:0".parse().expect("addr");
    c.sync.mdns = false;
    c.sync.interval_s = 2;
    c.sync.debounce_ms = 100;
    c.sync.backoff_ms = 300;
    c.sync.idle_timeout_s = 10;
    c
}

fn digests(node: &RunningNode) -> Vec<(String, String)> {
    node.state
        .records
        .store()
        .scan(&AreaScope::parse(VILLAGE).expect("scope"))
        .map(|r| r.expect("scan"))
        .map(|(k, e)| (k.to_string(), e.digest.to_hex()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cut_mid_session_then_converges_without_corruption() {
    let root = tempfile::tempdir().expect("tempdir");
    let village_id = NodeIdentity {
        node_id: NodeId([1; 16]),
        role: Role::Village,
        scope: AreaScope::parse(VILLAGE).expect("scope"),
    };
    let county_id = NodeIdentity {
        node_id: NodeId([2; 16]),
        role: Role::County,
        scope: AreaScope::parse("510116").expect("scope"),
    };

    // The village records its households with sync off (out of range of the county).
    let mut vc = config(root.path(), "village", village_id);
    let village = server::start(&vc, std::future::pending())
        .await
        .expect("village");
    server::seed_sample_village(
        &village.state.records,
        "cadre",
        AreaCode::parse(VILLAGE).expect("village"),
        150,
        3,
        |_, _| {},
    )
    .await
    .expect("seed");
    village.stop().await.expect("stop");

    let mut cc = config(root.path(), "county", county_id);
    cc.sync.enabled = true;
    let county = server::start(&cc, std::future::pending())
        .await
        .expect("county");
    let county_sync = county.state.sync.as_ref().expect("sync").listen_addr();
    let link = LinkEmulator::start(county_sync, LinkConfig::village()).expect("link");
    // The first session dies after 40 KB have crossed towards the county.
    link.set_cut_after_bytes(Direction::AToB, Some(40_000));

    vc.sync.enabled = true;
    vc.sync.static_peers = vec![link.addr()];
    let village = server::start(&vc, std::future::pending())
        .await
        .expect("village");
    let expected = digests(&village);
    assert_eq!(expected.len(), 2 * 150 + 5);

    let deadline = Instant::now() + Duration::from_secs(90);
    let ok_sessions = |n: &RunningNode| {
        n.state
            .sync
            .as_ref()
            .map_or(0, |s| s.status().totals.sessions_ok)
    };
    // Converged: the county holds everything, and the session that got it there has finished
    // on the village's side too (its last frame crosses the 100 ms link).
    while digests(&county) != expected || ok_sessions(&village) == 0 {
        assert!(
            Instant::now() < deadline,
            "not converged: county holds {} of {} documents",
            digests(&county).len(),
            expected.len()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(link.resets() >= 1, "the link was cut");
    let village_status = village.state.sync.as_ref().expect("sync").status();
    assert!(
        village_status.totals.sessions_failed >= 1,
        "the cut session failed: {:?}",
        village_status.totals
    );
    assert!(village_status.totals.sessions_ok >= 1);
    assert!(
        link.bytes_a_to_b() > 40_000,
        "the retry carried the rest over the link"
    );

    // Nothing corrupted or half-applied on the receiving side.
    let store = county.state.records.store();
    let report = store.verify().expect("verify");
    assert!(report.is_ok(), "{:?}", report.problems);
    for (key, _) in &expected {
        let key = cunyun_protocol::key::DocKey::parse(key).expect("key");
        assert!(store.load(&key).expect("loads").is_some(), "{key}");
    }
    assert!(store.quarantined().is_empty());
    village.stop().await.expect("stop");
    county.stop().await.expect("stop");
}
