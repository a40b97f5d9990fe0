//! People's pages name places and things, not codes and ids (issue 13): the status page names
//! the village and lists no API paths; the overview's data carries the village's name; the
//! villager page reads weeks in Chinese. Routers are driven with `tower::ServiceExt::oneshot`.

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use cunyun_node::config::NodeConfig;
use cunyun_node::server::{self, RunningNode};
use cunyun_protocol::area::AreaScope;
use serde_json::Value;
use tower::ServiceExt;

const VILLAGE: &str = "510116108203";
const PASSWORD: &str = "村干部的密码2026";

async fn start(dir: &std::path::Path, scope: &str) -> RunningNode {
    let accounts = cunyun_platform::accounts::Accounts::open(dir).expect("accounts");
    accounts.add("wangli", scope, PASSWORD).expect("cadre");
    drop(accounts);
    let mut c = NodeConfig::default();
    c.data_dir = dir.to_path_buf();
    c.listen = "127.0.0.1:0".parse().expect("addr");
    c.scope = AreaScope::parse(scope).expect("scope");
    server::start(&c, std::future::pending())
        .await
        .expect("node starts")
}

/// `GET path` through the router, logged in as the cadre when `login`: status and body text.
async fn get(node: &RunningNode, path: &str, login: bool) -> (StatusCode, String) {
    let mut req = Request::get(path);
    if login {
        let s = node
            .state
            .accounts
            .login("wangli", PASSWORD)
            .expect("login");
        req = req.header(header::COOKIE, format!("cunyun_session={}", s.token));
    }
    let resp = cunyun_node::api::app(node.state.clone(), 1 << 20)
        .oneshot(req.body(Body::empty()).expect("request"))
        .await
        .expect("response");
    let status = resp.status();
    let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .expect("body");
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn status_page_names_the_village_and_lists_no_api_paths() {
    let dir = tempfile::tempdir().expect("tmp");
    let node = start(dir.path(), VILLAGE).await;
    let (s, html) = get(&node, "/status", false).await;
    assert_eq!(s, StatusCode::OK);
    assert!(html.contains("双流区 › 彭镇 › 岷江村"), "{html}");
    for raw in ["/api/", "/healthz", "/metrics", "接口"] {
        assert!(!html.contains(raw), "{raw} on the status page: {html}");
    }
    node.stop().await.expect("stop");
}

#[tokio::test]
async fn an_unknown_village_code_reads_as_unknown_and_does_not_fail() {
    let dir = tempfile::tempdir().expect("tmp");
    let node = start(dir.path(), "511424102999").await;
    let (s, html) = get(&node, "/status", false).await;
    assert_eq!(s, StatusCode::OK);
    assert!(html.contains("511424102999（未知地区）"), "{html}");
    let (s, body) = get(&node, "/api/v1/coverage", true).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["place"], "511424102999（未知地区）");
    node.stop().await.expect("stop");
}

#[tokio::test]
async fn the_overview_data_carries_the_village_name() {
    let dir = tempfile::tempdir().expect("tmp");
    let node = start(dir.path(), VILLAGE).await;
    let (s, body) = get(&node, "/api/v1/coverage", true).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["place"], "岷江村");
    assert_eq!(v["place_label"], "双流区 › 彭镇 › 岷江村");
    node.stop().await.expect("stop");
}
