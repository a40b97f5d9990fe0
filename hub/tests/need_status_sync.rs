//! A need's status flows both ways between a village node and the hub over real mutual TLS on
//! loopback: a need recorded in the village syncs up and is matched to an expert at the hub
//! (matched comes down); the hub operator marks it 「服务中」 through the API — the hub writes
//! the need document under the operator's author — and the village sees it; the village
//! resolves it with a satisfaction rating, and the hub's needs list and console page show it.
//! Every HTTP call goes through [`Client`]; every wait is bounded.

mod common;
use common::{identity, start_hub};

use std::path::Path;
use std::time::{Duration, Instant};

use cunyun_hub::RunningHub;
use cunyun_node::config::NodeConfig;
use cunyun_node::records::UpdateMode;
use cunyun_node::server::{self, RunningNode};
use cunyun_protocol::key::{DocKey, Role};
use cunyun_protocol::need::{LocalNeed, NeedStatus};
use reqwest::Method;
use serde_json::{json, Value};

const VILLAGE: &str = "511424104201";

/// The one HTTP client of this test.
struct Client {
    base: String,
    http: reqwest::Client,
}

impl Client {
    /// Logged in as a hub operator.
    async fn new(hub: &RunningHub) -> Client {
        Client {
            base: hub.url(),
            http: common::operator_client(hub).await,
        }
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        common::call_json(&self.http, method, &format!("{}{path}", self.base), body).await
    }

    async fn page(&self, path: &str) -> String {
        self.http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("get")
            .text()
            .await
            .expect("body")
    }
}

async fn start_village(root: &Path, peer: std::net::SocketAddr) -> RunningNode {
    let id = identity(1, Role::Village, VILLAGE);
    let dir = root.join("village");
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
    c.sync.static_peers = vec![peer];
    c.sync.interval_s = 1;
    c.sync.debounce_ms = 100;
    c.sync.backoff_ms = 200;
    server::start(&c, std::future::pending())
        .await
        .expect("village starts")
}

fn village_need(village: &RunningNode, key: &DocKey) -> Option<(LocalNeed, automerge::Automerge)> {
    let doc = village.state.records.store().load(key).ok()??;
    let need = LocalNeed::read_from(&doc).ok()?;
    Some((need, doc))
}

/// Polls `check` every 200 ms for at most 60 s.
async fn wait_for<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Some(v) = check().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn need_status_flows_up_and_down_over_tls() {
    let dir = tempfile::tempdir().expect("tmp");
    let hub = start_hub(dir.path()).await;
    let sync_addr = hub.hub.sync.as_ref().expect("sync").listen_addr();
    let village = start_village(dir.path(), sync_addr).await;
    let c = Client::new(&hub).await;

    let (s, v) = c
        .call(
            Method::POST,
            "/api/v1/experts",
            Some(
                json!({"name": "李明", "organisation": "眉山市农业科学研究院", "title": "研究员",
                "fields": {"plt.citrus": true}, "regions": {"511424": true},
                "services": {"onsite": true}}),
            ),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let need = village
        .state
        .records
        .create_need(
            "cadre",
            &json!({"area": VILLAGE, "requester": "coop", "title": "柑橘大实蝇绿色防控技术指导",
                "tags": {"plt.citrus": true}, "contact_role": "合作社理事长"}),
        )
        .await
        .expect("need");
    let id = need.key.id().to_string();

    // Up: the hub lists the need, matched to the expert (and matched comes down).
    let row = wait_for("the need matched at the hub", async || {
        let (_, v) = c
            .call(Method::GET, "/api/v1/needs?status=matched", None)
            .await;
        v["needs"]
            .as_array()
            .and_then(|a| a.iter().find(|n| n["id"] == id.as_str()).cloned())
    })
    .await;
    assert_eq!(row["suggestions"][0]["name"], "李明");
    wait_for("matched in the village", async || {
        village_need(&village, &need.key).filter(|(n, _)| n.status == NeedStatus::Matched)
    })
    .await;

    // Down: the hub operator marks it in service; the village gets the change, authored by
    // the operator.
    let (s, v) = c
        .call(
            Method::POST,
            &format!("/api/v1/needs/{VILLAGE}/{id}/status"),
            Some(json!({"status": "in_service"})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let (_, doc) = wait_for("in service in the village", async || {
        village_need(&village, &need.key).filter(|(n, _)| n.status == NeedStatus::InService)
    })
    .await;
    let authors: Vec<Vec<u8>> = doc
        .get_changes(&[])
        .iter()
        .filter_map(|c| c.author().map(|a| a.as_bytes().to_vec()))
        .collect();
    assert!(
        authors.iter().any(|a| a == b"hub:sheng"),
        "{:?}",
        authors
            .iter()
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect::<Vec<_>>()
    );

    // Up again: the village resolves it and rates it; the hub shows both.
    village
        .state
        .records
        .update_need(
            "cadre",
            &id,
            &json!({"status": "resolved", "satisfaction": 5}),
            UpdateMode::MergePatch,
        )
        .await
        .expect("resolve");
    let row = wait_for("resolved at the hub", async || {
        let (_, v) = c
            .call(Method::GET, "/api/v1/needs?status=resolved", None)
            .await;
        v["needs"]
            .as_array()
            .and_then(|a| a.iter().find(|n| n["id"] == id.as_str()).cloned())
    })
    .await;
    assert_eq!(row["need"]["satisfaction"], 5);
    let html = c.page("/needs?status=resolved").await;
    assert!(html.contains("柑橘大实蝇绿色防控技术指导") && html.contains("5分"));
    // A resolved need cannot be moved by the hub.
    let (s, v) = c
        .call(
            Method::POST,
            &format!("/api/v1/needs/{VILLAGE}/{id}/status"),
            Some(json!({"status": "in_service"})),
        )
        .await;
    assert_eq!(s, 422, "{v}");

    // The node status page lists the village with its last contact, protocol version and
    // document count.
    let html = c.page("/nodes").await;
    assert!(
        html.contains("村级节点") && html.contains(VILLAGE),
        "{html}"
    );
    let (_, v) = c.call(Method::GET, "/api/v1/sync", None).await;
    let peer = v["peers"]
        .as_array()
        .and_then(|a| a.iter().find(|p| p["scope"] == VILLAGE).cloned())
        .expect("village peer");
    assert_eq!(
        peer["protocol_version"],
        u64::from(cunyun_protocol::sync::wire::PROTOCOL_VERSION),
        "{peer}"
    );
    assert!(peer["documents"].as_u64().is_some_and(|d| d >= 2), "{peer}");
    assert!(html.contains(&format!(
        "<td>v{}</td>",
        cunyun_protocol::sync::wire::PROTOCOL_VERSION
    )));
    village.stop().await.expect("village stops");
    hub.stop().await.expect("hub stops");
}
