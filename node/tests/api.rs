//! The HTTP API as a client sees it: a real node on a loopback port with a real store.
//!
//! Covers create/read/update/list of households and needs, `422` with every field error in
//! Chinese (and nothing stored), filters, authorship of every change, `/healthz`, `/metrics`, and
//! that acknowledged writes are there after a restart. Every client logs in as a cadre first;
//! the login guard, durable sessions, logout, and the web app's shell and routes are covered too.

use std::time::Duration;

use cunyun_node::config::NodeConfig;
use cunyun_node::server::{self, RunningNode};
use cunyun_protocol::area::AreaScope;
use cunyun_protocol::key::{DocKey, Kind};
use serde_json::{json, Value};

const VILLAGE: &str = "510116108203";

fn config(dir: &std::path::Path) -> NodeConfig {
    let mut c = NodeConfig::default();
    c.data_dir = dir.to_path_buf();
    c.listen = "127.0.0.1:0".parse().expect("addr");
    c.scope = AreaScope::parse(VILLAGE).expect("scope");
    c
}

const CADRE: &str = "wangli";
const PASSWORD: &str = "村干部的密码2026";

async fn start(dir: &std::path::Path) -> RunningNode {
    let accounts = cunyun_platform::accounts::Accounts::open(dir).expect("accounts");
    if accounts.list().expect("list").is_empty() {
        accounts.add(CADRE, VILLAGE, PASSWORD).expect("add cadre");
    }
    drop(accounts);
    server::start(&config(dir), std::future::pending())
        .await
        .expect("node starts")
}

/// A client logged in as the test cadre: it sends the session cookie on every request.
async fn client(url: &str) -> reqwest::Client {
    let anon = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client");
    let resp = anon
        .post(format!("{url}/api/v1/login"))
        .json(&json!({"name": CADRE, "password": PASSWORD}))
        .send()
        .await
        .expect("login");
    assert_eq!(resp.status().as_u16(), 200, "login succeeds");
    let cookies: Vec<String> = resp
        .headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::to_string)
        .collect();
    let cookie = cookies
        .iter()
        .find(|c| c.starts_with("cunyun_session="))
        .expect("session cookie");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let csrf = cookies
        .iter()
        .find(|c| c.starts_with("cunyun_csrf="))
        .expect("csrf cookie");
    assert!(
        !csrf.contains("HttpOnly") && csrf.contains("SameSite=Strict"),
        "{csrf}"
    );
    let pair = |c: &str| c.split(';').next().expect("cookie pair").to_string();
    let token = pair(csrf).trim_start_matches("cunyun_csrf=").to_string();
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::COOKIE,
        reqwest::header::HeaderValue::from_str(&format!("{}; {}", pair(cookie), pair(csrf)))
            .expect("header"),
    );
    headers.insert(
        "x-csrf-token",
        reqwest::header::HeaderValue::from_str(&token).expect("header"),
    );
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .default_headers(headers)
        .build()
        .expect("client")
}

fn valid_household() -> Value {
    json!({
        "profile": {
            "group": 3,
            "residents": 3,
            "age_18_59": 1,
            "age_60_69": 1,
            "age_70_plus": 1,
            "smartphones": 1,
            "crops": {"citrus": {"area_band": 2}},
            "livestock": {"pig": {"herd_band": 1}},
            "stated_needs": {"plt.citrus": {"priority": 1}}
        },
        "private": {"head_name": "王秀英", "phone": "13800000000", "roster_no": "3-017"}
    })
}

async fn send(req: reqwest::RequestBuilder) -> (u16, Value) {
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let body = resp.json::<Value>().await.unwrap_or(Value::Null);
    (status, body)
}

fn has_chinese(s: &str) -> bool {
    s.chars().any(|c| ('\u{4e00}'..='\u{9fff}').contains(&c))
}

#[tokio::test]
async fn household_lifecycle_and_validation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start(dir.path()).await;
    let url = node.url();
    let http = client(&url).await;

    // Create.
    let (status, created) = send(
        http.post(format!("{url}/api/v1/households"))
            .json(&valid_household()),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().expect("id").to_string();
    assert_eq!(
        created["profile"]["village"], VILLAGE,
        "village defaults to the node's"
    );
    assert_eq!(created["private"]["head_name"], "王秀英");
    // Each document's automerge-repo URL is the stable id derived from its key.
    let hh_key = DocKey::parse(&format!("{VILLAGE}/hh/{id}")).expect("key");
    assert_eq!(
        created["automerge_url"].as_str(),
        Some(cunyun_node::automerge_repo::docid::url_for_key(&hh_key).as_str())
    );
    assert_eq!(
        created["private_automerge_url"].as_str(),
        Some(cunyun_node::automerge_repo::docid::url_for_key(&hh_key.with_kind(Kind::Hp)).as_str())
    );
    let tags: Vec<&str> = created["derived_tags"]
        .as_array()
        .expect("tags")
        .iter()
        .filter_map(|t| t["tag"].as_str())
        .collect();
    assert!(
        tags.contains(&"liv.asf") && tags.contains(&"plt.citrus"),
        "{tags:?}"
    );
    assert!(created["derived_tags"][0]["reason"]
        .as_str()
        .is_some_and(has_chinese));

    // Invalid input: every field error, in Chinese, and nothing stored.
    let docs_before = node.state.records.store().stats().documents;
    let bad = json!({
        "profile": {"group": 0, "residents": -1, "crops": {"banana": {}}, "age_60_69": "two"},
        "private": {"phone": "not-a-phone"}
    });
    let (status, body) = send(http.post(format!("{url}/api/v1/households")).json(&bad)).await;
    assert_eq!(status, 422, "{body}");
    let fields = body["fields"].as_array().expect("fields");
    let paths: Vec<&str> = fields.iter().filter_map(|f| f["field"].as_str()).collect();
    for expected in [
        "profile.group",
        "profile.residents",
        "profile.age_60_69",
        "private.phone",
    ] {
        assert!(
            paths.contains(&expected),
            "{expected} missing from {paths:?}"
        );
    }
    assert!(
        paths.iter().any(|p| p.starts_with("profile.crops")),
        "{paths:?}"
    );
    for f in fields {
        assert!(f["message"].as_str().is_some_and(has_chinese), "{f}");
        assert!(f["code"].as_str().is_some_and(|c| !c.is_empty()), "{f}");
    }
    assert!(body["message"].as_str().is_some_and(has_chinese));
    assert_eq!(node.state.records.store().stats().documents, docs_before);

    // Out of scope village, unknown top-level field, broken JSON.
    let mut other = valid_household();
    other["profile"]["village"] = json!("510116108204");
    let (status, body) = send(http.post(format!("{url}/api/v1/households")).json(&other)).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["fields"][0]["code"], "out_of_scope");
    let (status, _) = send(
        http.post(format!("{url}/api/v1/households"))
            .json(&json!({"profile": {}, "extra": 1})),
    )
    .await;
    assert_eq!(status, 422);
    let (status, body) = send(
        http.post(format!("{url}/api/v1/households"))
            .header("content-type", "application/json")
            .body("{\"profile\": "),
    )
    .await;
    assert_eq!(status, 400);
    assert!(body["message"].as_str().is_some_and(has_chinese));
    assert_eq!(node.state.records.store().stats().documents, docs_before);

    // Update with a merge patch; the other fields stay.
    let (status, updated) = send(
        http.patch(format!("{url}/api/v1/households/{id}"))
            .json(&json!({"profile": {"group": 4}, "private": {"notes": "新修了水窖"}})),
    )
    .await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["profile"]["group"], 4);
    assert_eq!(updated["profile"]["crops"]["citrus"]["area_band"], 2);
    assert_eq!(updated["private"]["notes"], "新修了水窖");
    assert_eq!(updated["private"]["head_name"], "王秀英");
    // An invalid update changes nothing.
    let (status, _) = send(
        http.patch(format!("{url}/api/v1/households/{id}"))
            .json(&json!({"profile": {"residents": 200}})),
    )
    .await;
    assert_eq!(status, 422);
    let (_, read) = send(http.get(format!("{url}/api/v1/households/{id}"))).await;
    assert_eq!(read["profile"]["group"], 4);
    assert_eq!(read["profile"]["residents"], 3);
    let (status, _) = send(http.get(format!("{url}/api/v1/households/hdoesnotexist"))).await;
    assert_eq!(status, 404);

    // A second household, then the list and its filters.
    let mut second = valid_household();
    second["profile"]["group"] = json!(1);
    second["profile"]["livestock"] = json!({});
    second["private"]["head_name"] = json!("李建国");
    let (status, _) = send(http.post(format!("{url}/api/v1/households")).json(&second)).await;
    assert_eq!(status, 201);
    let list = |q: &'static str| {
        let http = http.clone();
        let url = url.clone();
        async move {
            let (status, body) = send(http.get(format!("{url}/api/v1/households{q}"))).await;
            assert_eq!(status, 200, "{q}: {body}");
            assert!(body["next_cursor"].is_null(), "{q}: one page: {body}");
            body["items"].as_array().expect("items").len()
        }
    };
    assert_eq!(list("").await, 2);
    assert_eq!(list("?group=4").await, 1);
    assert_eq!(list("?tag=liv.asf").await, 1);
    assert_eq!(list("?tag=plt.citrus").await, 2);
    assert_eq!(list("?q=李").await, 1);
    assert_eq!(list("?updated_since=2000-01-01").await, 2);
    assert_eq!(list("?updated_since=4102444800000").await, 0);
    let (status, body) = send(http.get(format!("{url}/api/v1/households?tag=nope"))).await;
    assert_eq!(status, 400);
    assert!(body["message"].as_str().is_some_and(has_chinese));
    let (status, _) =
        send(http.get(format!("{url}/api/v1/households?updated_since=yesterday"))).await;
    assert_eq!(status, 400);

    // Every change carries its author.
    let key = DocKey::parse(&format!("{VILLAGE}/hh/{id}")).expect("key");
    let doc = node
        .state
        .records
        .store()
        .load(&key)
        .expect("load")
        .expect("doc");
    let changes = doc.get_changes(&[]);
    assert!(changes.len() >= 2, "create and update");
    for c in changes {
        let author = c.author().expect("author recorded");
        assert_eq!(author.as_bytes(), CADRE.as_bytes(), "the logged-in cadre");
    }

    // Health and metrics.
    let (status, health) = send(http.get(format!("{url}/healthz"))).await;
    assert_eq!(status, 200);
    assert_eq!(health["status"], "ok");
    let metrics = http
        .get(format!("{url}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(metrics.contains("cunyun_http_requests_total"), "{metrics}");
    assert!(metrics.contains("cunyun_record_writes_total"), "{metrics}");
    assert!(metrics.contains("cunyun_invalid_inputs_total"), "{metrics}");
    assert!(metrics.contains("cunyun_store_documents 4"), "{metrics}");

    // Acknowledged writes are there after a restart.
    node.stop().await.expect("stop");
    let node = start(dir.path()).await;
    let (status, read) = send(
        client(&node.url())
            .await
            .get(format!("{}/api/v1/households/{id}", node.url())),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(read["private"]["notes"], "新修了水窖");
    let hp = key.with_kind(Kind::Hp);
    assert!(node
        .state
        .records
        .store()
        .entry(&hp)
        .expect("entry")
        .is_some());
    node.stop().await.expect("stop");
}

#[tokio::test]
async fn local_needs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start(dir.path()).await;
    let url = node.url();
    let http = client(&url).await;
    let need = json!({
        "requester": "coop",
        "title": "柑橘黄龙病防控技术指导",
        "description": "合作社200亩柑橘园出现黄化，需要专家现场诊断",
        "tags": {"plt.citrus": true},
        "contact_role": "合作社理事长"
    });
    let (status, created) = send(http.post(format!("{url}/api/v1/needs")).json(&need)).await;
    assert_eq!(status, 201, "{created}");
    let id = created["key"]
        .as_str()
        .expect("key")
        .rsplit('/')
        .next()
        .expect("id")
        .to_string();
    assert_eq!(created["need"]["status"], "open");

    let (status, body) = send(
        http.post(format!("{url}/api/v1/needs"))
            .json(&json!({"requester": "nobody", "title": ""})),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert!(body["fields"].as_array().expect("fields").len() >= 2);

    // open -> resolved skips steps: refused.
    let (status, body) = send(
        http.patch(format!("{url}/api/v1/needs/{id}"))
            .json(&json!({"status": "resolved", "satisfaction": 5})),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    let (status, body) = send(
        http.patch(format!("{url}/api/v1/needs/{id}"))
            .json(&json!({"status": "matched"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (_, list) = send(http.get(format!("{url}/api/v1/needs?status=matched"))).await;
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1), "{list}");
    let (_, list) = send(http.get(format!("{url}/api/v1/needs?status=open"))).await;
    assert_eq!(list["items"].as_array().map(Vec::len), Some(0), "{list}");
    let (status, tax) = send(http.get(format!("{url}/api/v1/taxonomy"))).await;
    assert_eq!(status, 200);
    let n: usize = tax["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .map(|g| g["tags"].as_array().map_or(0, Vec::len))
        .sum();
    assert_eq!(n, 98);
    node.stop().await.expect("stop");
}

#[tokio::test]
async fn the_api_needs_a_login_and_logout_ends_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start(dir.path()).await;
    let url = node.url();
    let anon = reqwest::Client::new();
    for path in [
        "/api/v1/households",
        "/api/v1/needs",
        "/api/v1/overview",
        "/api/v1/me",
    ] {
        let (status, body) = send(anon.get(format!("{url}{path}"))).await;
        assert_eq!(status, 401, "{path}: {body}");
        assert!(body["message"].as_str().is_some_and(has_chinese));
    }
    let (status, _) = send(
        anon.post(format!("{url}/api/v1/households"))
            .json(&valid_household()),
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(
        node.state.records.store().stats().documents,
        0,
        "nothing stored"
    );
    let (status, body) = send(
        anon.post(format!("{url}/api/v1/login"))
            .json(&json!({"name": CADRE, "password": "wrong password"})),
    )
    .await;
    assert_eq!(status, 401, "{body}");
    assert!(body["message"].as_str().is_some_and(has_chinese));

    let http = client(&url).await;
    let (status, me) = send(http.get(format!("{url}/api/v1/me"))).await;
    assert_eq!(status, 200);
    assert_eq!(me["cadre"]["name"], CADRE);
    // Sessions survive a restart of the node.
    node.stop().await.expect("stop");
    let node = start(dir.path()).await;
    let url = node.url();
    let (status, _) = send(http.get(format!("{url}/api/v1/me"))).await;
    assert_eq!(status, 200, "session kept across restart");
    let (status, _) = send(http.post(format!("{url}/api/v1/logout"))).await;
    assert_eq!(status, 200);
    let (status, _) = send(http.get(format!("{url}/api/v1/me"))).await;
    assert_eq!(status, 401, "logged out");
    node.stop().await.expect("stop");
}

#[tokio::test]
async fn app_shell_villager_page_and_app_routes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start(dir.path()).await;
    let url = node.url();
    let anon = reqwest::Client::new();

    // The shell: open, compressed on request, revalidated by ETag.
    for path in cunyun_node::webapp::shell_paths() {
        let resp = anon
            .get(format!("{url}{path}"))
            .header("accept-encoding", "gzip, br")
            .send()
            .await
            .expect("shell");
        assert_eq!(resp.status().as_u16(), 200, "{path}");
        let enc = resp
            .headers()
            .get("content-encoding")
            .map(|v| v.to_str().unwrap_or("").to_string());
        assert!(
            matches!(enc.as_deref(), Some("br") | Some("gzip")),
            "{path}: {enc:?}"
        );
        let etag = resp.headers().get("etag").expect("etag").clone();
        let again = anon
            .get(format!("{url}{path}"))
            .header("if-none-match", etag)
            .send()
            .await
            .expect("revalidate");
        assert_eq!(again.status().as_u16(), 304, "{path}");
    }
    let (status, _) = send(anon.get(format!("{url}/app/nope.js"))).await;
    assert_eq!(status, 404);

    // App routes need a login.
    for path in ["/api/v1/schema", "/api/v1/coverage"] {
        let (status, _) = send(anon.get(format!("{url}{path}"))).await;
        assert_eq!(status, 401, "{path}");
    }
    let http = client(&url).await;
    let (status, created) = send(
        http.post(format!("{url}/api/v1/households"))
            .json(&valid_household()),
    )
    .await;
    assert_eq!(status, 201);
    let id = created["id"].as_str().expect("id");

    // Derived tags for a profile being typed; invalid profiles get the field errors.
    let (status, d) = send(http.post(format!("{url}/api/v1/derive-tags")).json(
        &json!({"profile": {"group": 1, "residents": 2, "livestock": {"pig": {"herd_band": 1}}}}),
    ))
    .await;
    assert_eq!(status, 200, "{d}");
    assert!(d["derived_tags"]
        .as_array()
        .expect("tags")
        .iter()
        .any(|t| t["tag"] == "liv.asf" && t["reason"].as_str().is_some_and(has_chinese)));
    let (status, d) = send(
        http.post(format!("{url}/api/v1/derive-tags"))
            .json(&json!({"profile": {"group": 0}})),
    )
    .await;
    assert_eq!(status, 422, "{d}");

    let (_, cov) = send(http.get(format!("{url}/api/v1/coverage"))).await;
    assert_eq!(cov["households"], 1);
    assert_eq!(
        cov["unsynced_upstream"], 2,
        "profile and private, never synced upstream"
    );
    let (_, recs) = send(http.get(format!("{url}/api/v1/households/{id}/recommendations"))).await;
    assert_eq!(recs["items"], json!([]));
    let qr = http
        .get(format!("{url}/api/v1/households/{id}/qr.svg"))
        .send()
        .await
        .expect("qr");
    assert_eq!(qr.status().as_u16(), 200);
    assert!(qr.text().await.expect("svg").contains("<svg"));

    // The villager page: no login, no personal data.
    let page = anon
        .get(format!("{url}/v/{id}"))
        .send()
        .await
        .expect("villager");
    assert_eq!(page.status().as_u16(), 200);
    let page = page.text().await.expect("html");
    assert!(page.contains("为您家推荐"));
    for private in ["王秀英", "13800000000", "3-017"] {
        assert!(!page.contains(private), "{private} leaked");
    }
    let missing = anon
        .get(format!("{url}/v/hdoesnotexist"))
        .send()
        .await
        .expect("missing");
    assert_eq!(missing.status().as_u16(), 404);
    node.stop().await.expect("stop");
}
