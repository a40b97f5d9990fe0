//! Setup shared by the hub's integration tests: node identities and a hub with fast timers on
//! loopback, its certificate from a development CA under `root/ca`.

use std::path::Path;

use cunyun_hub::config::HubConfig;
use cunyun_hub::RunningHub;
use cunyun_protocol::area::AreaScope;
use cunyun_protocol::fields::Date;
use cunyun_protocol::identity::{NodeId, NodeIdentity};
use cunyun_protocol::key::Role;

/// A test identity: node id `[n; 16]`, the given role and scope.
pub(crate) fn identity(n: u8, role: Role, scope: &str) -> NodeIdentity {
    NodeIdentity {
        node_id: NodeId([n; 16]),
        role,
        scope: AreaScope::parse(scope).expect("scope"),
    }
}

/// A province hub under `root/hub` (today 2026-04-15, matching every 200 ms, sync every second).
#[allow(dead_code)] // not every test file uses both
pub(crate) async fn start_hub(root: &Path) -> RunningHub {
    start_hub_with(root, |_| {}).await
}

/// [`start_hub`] with `tune` applied to its configuration last.
#[allow(dead_code)]
pub(crate) async fn start_hub_with(root: &Path, tune: impl FnOnce(&mut HubConfig)) -> RunningHub {
    let id = identity(9, Role::Hub, "51");
    let dir = root.join("hub");
    cunyun_node::tls::init_dev_identity(&root.join("ca"), &dir.join("tls"), &id).expect("init");
    let mut c = HubConfig::default();
    c.data_dir = dir;
    c.listen = "127.0.0.1:0".parse().expect("addr");
    c.today = Date::parse("2026-04-15");
    c.match_interval_ms = 200;
    c.sync.enabled = true;
    c.sync.listen = "127.0.0.1:0".parse().expect("addr");
    c.sync.mdns = false;
    c.sync.interval_s = 1;
    c.sync.debounce_ms = 100;
    c.sync.backoff_ms = 200;
    tune(&mut c);
    cunyun_hub::start(&c, std::future::pending())
        .await
        .expect("hub starts")
}

/// `GET <hub>/<path>` as JSON: every hub HTTP call of these tests goes through here, so the one
/// place to add an operator login is this function.
#[allow(dead_code)]
pub(crate) async fn hub_get(hub: &RunningHub, path: &str) -> serde_json::Value {
    let resp = reqwest::Client::new()
        .get(format!("{}{path}", hub.url()))
        .send()
        .await
        .expect("hub request");
    assert!(resp.status().is_success(), "{path}: {}", resp.status());
    resp.json().await.expect("hub JSON")
}
