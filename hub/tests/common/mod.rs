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
pub(crate) async fn start_hub(root: &Path) -> RunningHub {
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
    cunyun_hub::start(&c, std::future::pending())
        .await
        .expect("hub starts")
}
