//! Paged lists and per-class concurrency limits, through the router with `tower::oneshot` (no
//! socket): every household is listed exactly once across pages while creates run; a bad cursor
//! or limit is a zh-CN `400`; the scan budget bounds a page; a full list class answers `503
//! busy` with `Retry-After` while reads go on.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use cunyun_node::config::{Limits, NodeConfig};
use cunyun_node::limits::Class;
use cunyun_node::server::{self, RunningNode};
use cunyun_protocol::area::{AreaCode, AreaScope};
use serde_json::{json, Value};
use tower::ServiceExt;

const VILLAGE: &str = "510116108203";
const CADRE: &str = "wangli";
const PASSWORD: &str = "村干部的密码2026";
const SEEDED: usize = 250;

async fn start(dir: &std::path::Path, limits: Limits) -> RunningNode {
    let accounts = cunyun_platform::accounts::Accounts::open(dir).expect("accounts");
    accounts.add(CADRE, VILLAGE, PASSWORD).expect("add cadre");
    drop(accounts);
    let mut c = NodeConfig::default();
    c.data_dir = dir.to_path_buf();
    c.listen = "127.0.0.1:0".parse().expect("addr");
    c.scope = AreaScope::parse(VILLAGE).expect("scope");
    c.limits = limits;
    let node = server::start(&c, std::future::pending())
        .await
        .expect("node starts");
    let n = server::seed_sample_village(
        &node.state.records,
        CADRE,
        AreaCode::parse(VILLAGE).expect("area"),
        SEEDED,
        7,
        |_, _| {},
    )
    .await
    .expect("seed");
    assert_eq!(n, SEEDED);
    node
}

/// The router and the headers of a logged-in cadre (cookie, CSRF token).
struct Client {
    app: Router,
    cookie: String,
    csrf: String,
}

impl Client {
    async fn login(node: &RunningNode) -> Client {
        let app = cunyun_node::api::app(node.state.clone(), 256 * 1024);
        let resp = app
            .clone()
            .oneshot(
                Request::post("/api/v1/login")
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(Body::from(
                        json!({"name": CADRE, "password": PASSWORD}).to_string(),
                    ))
                    .expect("request"),
            )
            .await
            .expect("login");
        assert_eq!(resp.status(), StatusCode::OK);
        let mut pairs = BTreeMap::new();
        for v in resp.headers().get_all(header::SET_COOKIE) {
            let pair = v.to_str().expect("ascii").split(';').next().expect("pair");
            let (k, val) = pair.split_once('=').expect("k=v");
            pairs.insert(k.to_string(), val.to_string());
        }
        let csrf = pairs["cunyun_csrf"].clone();
        Client {
            app,
            cookie: format!(
                "cunyun_session={}; cunyun_csrf={csrf}",
                pairs["cunyun_session"]
            ),
            csrf,
        }
    }

    async fn call(&self, method: &str, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
        let (status, _, body) = self.call_full(method, uri, body).await;
        (status, body)
    }

    async fn call_full(
        &self,
        method: &str,
        uri: &str,
        body: Option<Value>,
    ) -> (StatusCode, axum::http::HeaderMap, Value) {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::COOKIE, &self.cookie)
            .header("x-csrf-token", &self.csrf)
            .header(header::CONTENT_TYPE, "application/json")
            .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
            .expect("request");
        let resp = self.app.clone().oneshot(req).await.expect("response");
        let (status, headers) = (resp.status(), resp.headers().clone());
        let bytes = axum::body::to_bytes(resp.into_body(), 64 << 20)
            .await
            .expect("body");
        let v = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, headers, v)
    }

    /// Pages through `path` (which has a `?`), returning every item and the page count.
    async fn page_all(&self, path: &str) -> (Vec<Value>, usize) {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        for pages in 1..=10_000 {
            let uri = match &cursor {
                Some(c) => format!("{path}&cursor={c}"),
                None => path.to_string(),
            };
            let (status, body) = self.call("GET", &uri, None).await;
            assert_eq!(status, StatusCode::OK, "{uri}: {body}");
            items.extend(body["items"].as_array().expect("items").iter().cloned());
            match body["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => {
                    assert!(body["next_cursor"].is_null(), "{body}");
                    return (items, pages);
                }
            }
        }
        panic!("paging did not end");
    }
}

fn has_chinese(s: &str) -> bool {
    s.chars().any(|c| ('\u{4e00}'..='\u{9fff}').contains(&c))
}

fn ids(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .map(|h| h["id"].as_str().expect("id").to_string())
        .collect()
}

fn new_household(i: usize) -> Value {
    json!({
        "profile": {"group": 9, "residents": 2, "age_18_59": 2, "smartphones": 1},
        "private": {"head_name": format!("新户{i}"), "roster_no": format!("9-{i:03}")}
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_lists_every_household_once_while_creates_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start(dir.path(), Limits::default()).await;
    let client = Arc::new(Client::login(&node).await);
    let before: BTreeSet<String> = node
        .state
        .records
        .list_households(&Default::default())
        .expect("list")
        .into_iter()
        .map(|h| h.id)
        .collect();
    assert_eq!(before.len(), SEEDED);

    // Exactly the whole village in pages: the last page says nothing follows.
    let (_, pages) = client.page_all("/api/v1/households?limit=125").await;
    assert_eq!(pages, 2, "250 = 2 × 125, no empty third page");

    // The first page of the default size.
    let (status, first) = client.call("GET", "/api/v1/households", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        first["items"].as_array().map(Vec::len),
        Some(100),
        "default page size"
    );
    assert!(first["next_cursor"].is_string());
    assert!(first.get("total").is_none(), "no whole-list count");

    // Creates run while the pages are read.
    let writer = {
        let client = client.clone();
        tokio::spawn(async move {
            let mut made = Vec::new();
            for i in 0..20 {
                let (s, body) = client
                    .call("POST", "/api/v1/households", Some(new_household(i)))
                    .await;
                assert_eq!(s, StatusCode::CREATED, "{body}");
                made.push(body["id"].as_str().expect("id").to_string());
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            made
        })
    };
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let uri = match &cursor {
            Some(c) => format!("/api/v1/households?limit=30&cursor={c}"),
            None => "/api/v1/households?limit=30".to_string(),
        };
        let (status, body) = client.call("GET", &uri, None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let page = body["items"].as_array().expect("items");
        assert!(page.len() <= 30);
        seen.extend(ids(page));
        pages += 1;
        assert!(pages < 100, "paging ends");
        match body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    let made = writer.await.expect("writer");
    let unique: BTreeSet<String> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "no household twice");
    assert!(
        before.is_subset(&unique),
        "every household there all along is listed"
    );
    let made: BTreeSet<String> = made.into_iter().collect();
    assert!(
        unique.difference(&before).all(|id| made.contains(id)),
        "nothing else"
    );
    // In key order, so a page never goes backwards.
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(sorted, seen, "key order");

    // After the creates, paging from the start finds everyone, filters page the same way.
    let (all, pages) = client.page_all("/api/v1/households?limit=50").await;
    assert_eq!(all.len(), SEEDED + 20);
    assert_eq!(pages, (SEEDED + 20).div_ceil(50));
    let (group9, _) = client.page_all("/api/v1/households?group=9&limit=7").await;
    assert_eq!(group9.len(), 20, "the 20 new ones are in group 9");
    let (named, _) = client.page_all("/api/v1/households?q=新户1&limit=3").await;
    assert_eq!(named.len(), 11, "新户1, 新户10..新户19");

    // Needs page the same way.
    let (needs, _) = client.page_all("/api/v1/needs?limit=2").await;
    assert_eq!(needs.len(), 5, "the sample needs");
    node.stop().await.expect("stop");
}

#[tokio::test]
async fn a_bad_cursor_or_limit_is_a_chinese_400_and_reads_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start(dir.path(), Limits::default()).await;
    let client = Client::login(&node).await;
    let (_, page) = client
        .call("GET", "/api/v1/households?group=1&limit=5", None)
        .await;
    let good = page["next_cursor"].as_str().expect("cursor").to_string();
    let (_, needs) = client.call("GET", "/api/v1/needs?limit=1", None).await;
    let need_cursor = needs["next_cursor"].as_str().expect("cursor").to_string();
    let mut flipped = good.clone().into_bytes();
    let mid = flipped.len() / 2;
    flipped[mid] = if flipped[mid] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(flipped).expect("ascii");
    let long = "A".repeat(4000);
    let cases = [
        "/api/v1/households?group=1&cursor=not-a-cursor".to_string(),
        format!("/api/v1/households?group=1&cursor={flipped}"),
        format!("/api/v1/households?group=1&cursor={long}"),
        format!("/api/v1/households?group=2&cursor={good}"), // another filter
        format!("/api/v1/households?cursor={good}"),
        format!("/api/v1/households?group=1&cursor={need_cursor}"), // another list
        format!("/api/v1/needs?limit=1&cursor={good}"),
        format!("/api/v1/households?group=1&village=510116108204&cursor={good}"),
        "/api/v1/households?limit=0".to_string(),
        "/api/v1/households?limit=501".to_string(),
        "/api/v1/households?limit=-1".to_string(),
        "/api/v1/households?limit=abc".to_string(),
        "/api/v1/needs?limit=100000".to_string(),
        "/api/v1/households?village=51x".to_string(),
    ];
    let writes = node.state.records.store().writes();
    for uri in &cases {
        let (status, body) = client.call("GET", uri, None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {body}");
        let code = body["error"].as_str().expect("code");
        assert!(code == "bad_cursor" || code == "bad_query", "{uri}: {body}");
        let msg = body["message"].as_str().expect("message");
        assert!(has_chinese(msg), "{uri}: {msg}");
        assert!(body.get("items").is_none(), "no page with an error");
    }
    assert_eq!(
        node.state.records.store().writes(),
        writes,
        "nothing changed"
    );
    // The good cursor still works with its own filter, and the largest page is allowed.
    let (status, next) = client
        .call(
            "GET",
            &format!("/api/v1/households?group=1&limit=5&cursor={good}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{next}");
    let (status, _) = client
        .call("GET", "/api/v1/households?limit=500", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    node.stop().await.expect("stop");
}

#[tokio::test]
async fn the_scan_budget_bounds_a_page() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut limits = Limits::default();
    limits.scan_budget = 40;
    let node = start(dir.path(), limits).await;
    let client = Client::login(&node).await;

    // Asking for 500 returns what 40 index entries hold, and a cursor.
    let (status, page) = client
        .call("GET", "/api/v1/households?limit=500", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let n = page["items"].as_array().expect("items").len();
    assert!((1..40).contains(&n), "{n} items from a budget of 40");
    assert!(page["next_cursor"].is_string());

    // A filter that matches nothing answers empty pages with cursors, never the whole store
    // in one request; paging still ends.
    let (none, pages) = client
        .page_all("/api/v1/households?q=没有这个人&limit=500")
        .await;
    assert!(none.is_empty());
    assert!(
        pages >= SEEDED / 40,
        "{pages} pages: every page read at most 40 entries"
    );
    assert!(
        pages <= 2 * SEEDED / 38 + 3,
        "{pages} pages: each page moved on"
    );

    // Paging under the budget still reaches every household exactly once.
    let (all, _) = client.page_all("/api/v1/households?limit=500").await;
    let unique: BTreeSet<String> = ids(&all).into_iter().collect();
    assert_eq!((all.len(), unique.len()), (SEEDED, SEEDED));
    node.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_list_class_answers_busy_with_retry_after_and_reads_go_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut limits = Limits::default();
    limits.lists = 2;
    limits.queue_wait_ms = 100;
    let node = start(dir.path(), limits).await;
    let client = Arc::new(Client::login(&node).await);
    let (_, page) = client.call("GET", "/api/v1/households?limit=1", None).await;
    let id = page["items"][0]["id"].as_str().expect("id").to_string();

    // Both list places taken: a list waits the queue wait, then is refused.
    let held = [
        node.state.limits.try_take(Class::List).expect("place 1"),
        node.state.limits.try_take(Class::List).expect("place 2"),
    ];
    assert!(node.state.limits.try_take(Class::List).is_none());
    let started = std::time::Instant::now();
    let (status, headers, body) = client.call_full("GET", "/api/v1/households", None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(started.elapsed() >= Duration::from_millis(100), "it waited");
    assert_eq!(body["error"], "busy");
    assert_eq!(body["message"], "节点繁忙，请稍后再试");
    assert_eq!(
        headers
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    let (status, _) = client.call("GET", "/api/v1/needs", None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    // Reads and writes have their own places.
    let (status, one) = client
        .call("GET", &format!("/api/v1/households/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{one}");
    let (status, _) = client
        .call("POST", "/api/v1/households", Some(new_household(1)))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    drop(held);

    // A flood: 40 lists at once on 2 places. Every answer is a page or busy, nothing else.
    let flood: Vec<_> = (0..40)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move {
                client
                    .call_full("GET", "/api/v1/households?limit=500", None)
                    .await
            })
        })
        .collect();
    let mut by_status: BTreeMap<u16, usize> = BTreeMap::new();
    for t in flood {
        let (status, headers, body) = t.await.expect("task");
        match status {
            StatusCode::OK => assert!(body["items"].is_array()),
            StatusCode::SERVICE_UNAVAILABLE => {
                assert_eq!(body["error"], "busy");
                assert!(headers.contains_key(header::RETRY_AFTER));
            }
            other => panic!("{other}: {body}"),
        }
        *by_status.entry(status.as_u16()).or_default() += 1;
    }
    assert!(
        by_status.get(&200).copied().unwrap_or(0) >= 2,
        "{by_status:?}"
    );
    // Once the flood is over the places are free again.
    assert_eq!(node.state.limits.available(Class::List), 2);
    let (status, _) = client.call("GET", "/api/v1/households", None).await;
    assert_eq!(status, StatusCode::OK);
    node.stop().await.expect("stop");
}
