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

/// Password of the accounts [`operator_client`] creates.
#[allow(dead_code)]
pub(crate) const OPERATOR_PASSWORD: &str = "省级运维的密码2026";

/// A client logged in to `hub` as a hub operator (created on first use): it sends the session
/// cookie and the CSRF header on every request. Every hub HTTP call of a test goes through one.
#[allow(dead_code)]
pub(crate) async fn operator_client(hub: &RunningHub) -> reqwest::Client {
    let accounts = &hub.hub.accounts;
    if !accounts
        .list()
        .expect("accounts")
        .iter()
        .any(|a| a.name == "sheng")
    {
        accounts
            .create(
                "test",
                "sheng",
                cunyun_node::accounts::Role::HubOperator,
                "51",
                OPERATOR_PASSWORD,
            )
            .expect("hub operator");
    }
    login_client(hub, "sheng", OPERATOR_PASSWORD).await
}

/// A client logged in to `hub` as `name`.
#[allow(dead_code)]
pub(crate) async fn login_client(hub: &RunningHub, name: &str, password: &str) -> reqwest::Client {
    let resp = reqwest::Client::new()
        .post(format!("{}/api/v1/login", hub.url()))
        .json(&serde_json::json!({"name": name, "password": password}))
        .send()
        .await
        .expect("login");
    assert_eq!(resp.status().as_u16(), 200, "login as {name}");
    let mut cookies = Vec::new();
    let mut csrf = String::new();
    for v in resp.headers().get_all(reqwest::header::SET_COOKIE) {
        let pair = v
            .to_str()
            .expect("cookie")
            .split(';')
            .next()
            .expect("pair")
            .to_string();
        if let Some(t) = pair.strip_prefix("cunyun_csrf=") {
            csrf = t.to_string();
        }
        cookies.push(pair);
    }
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::COOKIE,
        cookies.join("; ").parse().expect("cookie header"),
    );
    headers.insert("x-csrf-token", csrf.parse().expect("csrf header"));
    reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(20))
        .redirect(reqwest::redirect::Policy::none())
        .default_headers(headers)
        .build()
        .expect("client")
}
