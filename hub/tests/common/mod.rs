//! Setup shared by the hub's integration tests: node identities and a hub with fast timers on
//! loopback, its certificate from a development CA under `root/ca`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cunyun_hub::config::HubConfig;
use cunyun_hub::RunningHub;
use cunyun_node::config::NodeConfig;
use cunyun_node::server::{self, RunningNode};
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
    let resp = operator_client(hub)
        .await
        .get(format!("{}{path}", hub.url()))
        .send()
        .await
        .expect("hub request");
    assert!(resp.status().is_success(), "{path}: {}", resp.status());
    resp.json().await.expect("hub JSON")
}

/// The data directory of test node `n` under `root`.
#[allow(dead_code)]
pub(crate) fn node_dir(root: &Path, n: u8) -> PathBuf {
    root.join(format!("node{n}"))
}

/// A node `n` (identity [`identity`]`(n, role, scope)`, certificate from the CA under
/// `root/ca`) in [`node_dir`], on loopback with fast timers, syncing with `peers`, trusting the
/// hub content key `hub_key`, push-down every second.
#[allow(dead_code)]
pub(crate) async fn start_node(
    root: &Path,
    n: u8,
    role: Role,
    scope: &str,
    peers: Vec<SocketAddr>,
    hub_key: &str,
) -> RunningNode {
    let id = identity(n, role, scope);
    let dir = node_dir(root, n);
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
    c.content.trusted_hub_keys = vec![hub_key.to_string()];
    c.content.pushdown_interval_s = 1;
    server::start(&c, std::future::pending())
        .await
        .expect("node starts")
}

/// The sync (and blob) listener of a node.
#[allow(dead_code)]
pub(crate) fn sync_addr(n: &RunningNode) -> SocketAddr {
    n.state.sync.as_ref().expect("sync").listen_addr()
}

/// Polls `f` every 200 ms until it holds; fails the test at `deadline`.
#[allow(dead_code)]
pub(crate) async fn wait_for(what: &str, deadline: Instant, mut f: impl FnMut() -> bool) {
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
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
                cunyun_platform::accounts::Role::HubOperator,
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

/// A JSON call with `http` (e.g. an [`operator_client`]): the status and the JSON body (null
/// when empty or not JSON).
#[allow(dead_code)]
pub(crate) async fn call_json(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let mut req = http.request(method, url);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.expect("send");
    let status = r.status().as_u16();
    let text = r.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
    )
}
