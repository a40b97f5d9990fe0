//! Push-down of content over real mutual TLS on loopback: hub → county → village.
//!
//! A household recorded in the village syncs up (village → county → hub); the hub matches it
//! against a library item whose file it chunked and signed; the `rec` document comes back down
//! carrying the manifest's content id; the county fetches the file from the hub, then the
//! village from the county (its only live peer; the first one it is given is a closed port);
//! the village serves identical bytes at
//! `GET /content/{item}/main` (with `Range`), and the item JSON at `/v/content/{item}`.
//!
//! The per-village byte budget: two villages with the same two recommended files, one with a
//! budget that fits only the smaller, one (an override) that fits both; each pre-fetches exactly
//! its plan, the county caches both, and the village with the small budget fetches the other
//! file on demand when it is opened.

mod common;
use common::{hub_get, start_hub, start_hub_with, start_node, sync_addr, wait_for};

use std::path::Path;
use std::time::{Duration, Instant};

use cunyun_protocol::key::Role;
use cunyun_protocol::manifest::ContentId;
use serde_json::json;

const VILLAGE: &str = "511424104201";
const COUNTY: &str = "511424";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn recommended_file_reaches_county_then_village_and_is_served_identically() {
    let root = tempfile::tempdir().expect("tempdir");
    let hub = start_hub(root.path()).await;
    // A 700 000-byte file: three chunks of 256 KiB.
    let body: Vec<u8> = (0..700_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let file = root.path().join("asf.pdf");
    std::fs::write(&file, &body).expect("write");
    let item = hub
        .hub
        .library
        .add(
            &json!({"title": "非洲猪瘟防控明白纸", "tags": ["liv.asf"], "format": "pdf",
                "review_date": "2026-03-01"}),
            &file,
            &Default::default(),
        )
        .expect("add");
    let cid: ContentId = item
        .content
        .as_deref()
        .expect("content id")
        .parse()
        .expect("hex");
    let key = hub.hub.files.public_key_hex();
    let hub_addr = hub.hub.sync.as_ref().expect("sync").listen_addr();
    let county = start_node(root.path(), 2, Role::County, COUNTY, vec![hub_addr], &key).await;
    // The village's first peer is a closed loopback port: the loop must move on to the county.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let village = start_node(
        root.path(),
        1,
        Role::Village,
        VILLAGE,
        vec![dead, sync_addr(&county)],
        &key,
    )
    .await;
    village
        .state
        .records
        .create_household(
            "cadre",
            &json!({"profile": {"group": 1, "residents": 2, "age_18_59": 2,
                "livestock": {"pig": {"herd_band": 1}}}}),
        )
        .await
        .expect("create");

    let deadline = Instant::now() + Duration::from_secs(90);
    let county_blobs = county
        .state
        .pushdown
        .as_ref()
        .expect("pushdown")
        .blobs()
        .clone();
    wait_for("the file at the county", deadline, || {
        county_blobs.is_complete(&cid)
    })
    .await;
    let village_pd = village.state.pushdown.clone().expect("pushdown");
    wait_for("the file at the village", deadline, || {
        village_pd.blobs().is_complete(&cid)
    })
    .await;
    village_pd.blobs().verify_content(&cid).expect("verified");
    assert_eq!(village_pd.content_of(&item.id), Some(cid));

    let http = reqwest::Client::new();
    let url = format!("{}/content/{}/main", village.url(), item.id);
    let resp = http.get(&url).send().await.expect("get");
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"].to_str().expect("ct"),
        "application/pdf"
    );
    assert_eq!(resp.bytes().await.expect("bytes").as_ref(), &body[..]);
    let resp = http
        .get(&url)
        .header("Range", "bytes=262140-262150")
        .send()
        .await
        .expect("range");
    assert_eq!(resp.status(), 206);
    assert_eq!(
        resp.headers()["content-range"].to_str().expect("cr"),
        "bytes 262140-262150/700000"
    );
    assert_eq!(
        resp.bytes().await.expect("bytes").as_ref(),
        &body[262_140..=262_150]
    );
    let resp = http
        .get(&url)
        .header("Range", "bytes=700000-")
        .send()
        .await
        .expect("range");
    assert_eq!(resp.status(), 416);

    let v: serde_json::Value = http
        .get(format!("{}/v/content/{}", village.url(), item.id))
        .send()
        .await
        .expect("item")
        .json()
        .await
        .expect("json");
    assert_eq!(v["id"], item.id.as_str());
    assert_eq!(v["meta"]["title"], "非洲猪瘟防控明白纸");
    assert_eq!(
        v["renditions"],
        json!([{"name": "main", "mime": "application/pdf", "bytes": 700_000, "available": true}])
    );
    let resp = http
        .get(format!("{}/v/content/c0000000000000000", village.url()))
        .send()
        .await
        .expect("missing");
    assert_eq!(resp.status(), 404);
    let resp = http
        .get(format!("{}/content/{}/audio", village.url(), item.id))
        .send()
        .await
        .expect("missing rendition");
    assert_eq!(resp.status(), 404);
    // The login-guarded routes refuse without a session.
    let resp = http
        .get(format!("{}/api/v1/content/{}", village.url(), item.id))
        .send()
        .await
        .expect("guarded");
    assert_eq!(resp.status(), 401);
    // The run that completed the item records it in the status (bounded wait).
    wait_for("the village's push-down status", deadline, || {
        village_pd.status().complete >= 1
    })
    .await;
    let metrics = http
        .get(format!("{}/metrics", village.url()))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(metrics.contains("cunyun_content_complete 1\n"), "{metrics}");
    assert!(metrics.trim_end().ends_with("# EOF"), "{metrics}");
    let st = village_pd.status();
    assert!(st.wanted >= 1 && st.complete == st.wanted, "{st:?}");
    county.stop().await.expect("stop");
    village.stop().await.expect("stop");
    hub.stop().await.expect("stop");
}

fn file_of(root: &Path, name: &str, len: u32, seed: u32) -> (std::path::PathBuf, Vec<u8>) {
    let body: Vec<u8> = (0..len).map(|i| ((i * 7 + seed) % 251) as u8).collect();
    let file = root.join(name);
    std::fs::write(&file, &body).expect("write");
    (file, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn village_budget_decides_what_is_pushed_and_the_rest_comes_on_demand() {
    const VILLAGE2: &str = "511424104202";
    let root = tempfile::tempdir().expect("tempdir");
    let hub = start_hub_with(root.path(), |c| {
        c.pushdown.village_budget_mb = 1;
        c.pushdown
            .budget_mb
            .insert(VILLAGE2.parse().expect("scope"), 5);
    })
    .await;
    // Same tags, so every pig-raising household gets both; 300 kB fits a 1 MB budget, 2 MB does not.
    let (small_file, _) = file_of(root.path(), "small.pdf", 300_000, 1);
    let (big_file, big_body) = file_of(root.path(), "big.pdf", 2_000_000, 2);
    let add = |title: &str, file: &Path| {
        hub.hub
            .library
            .add(
                &json!({"title": title, "tags": ["liv.asf"], "format": "pdf",
                    "review_date": "2026-03-01"}),
                file,
                &Default::default(),
            )
            .expect("add")
    };
    // 3 MB: outside both budgets (village 2's 5 MB holds the other two first).
    let (huge_file, _) = file_of(root.path(), "huge.pdf", 3_000_000, 3);
    let small = add("非洲猪瘟防控明白纸", &small_file);
    let big = add("生猪养殖场消毒图解", &big_file);
    let huge = add("猪场生物安全手册", &huge_file);
    let cid = |i: &cunyun_hub::library::ContentRecord| -> ContentId {
        i.content
            .as_deref()
            .expect("content id")
            .parse()
            .expect("hex")
    };
    let (small_cid, big_cid, huge_cid) = (cid(&small), cid(&big), cid(&huge));
    let key = hub.hub.files.public_key_hex();
    let hub_addr = hub.hub.sync.as_ref().expect("sync").listen_addr();
    let county = start_node(root.path(), 2, Role::County, COUNTY, vec![hub_addr], &key).await;
    let v1 = start_node(
        root.path(),
        1,
        Role::Village,
        VILLAGE,
        vec![sync_addr(&county)],
        &key,
    )
    .await;
    let v2 = start_node(
        root.path(),
        3,
        Role::Village,
        VILLAGE2,
        vec![sync_addr(&county)],
        &key,
    )
    .await;
    for v in [&v1, &v2] {
        for _ in 0..2 {
            v.state
                .records
                .create_household(
                    "cadre",
                    &json!({"profile": {"group": 1, "residents": 2, "age_18_59": 2,
                        "livestock": {"pig": {"herd_band": 1}}}}),
                )
                .await
                .expect("create");
        }
    }
    let deadline = Instant::now() + Duration::from_secs(90);
    let p1 = v1.state.pushdown.clone().expect("pushdown");
    let p2 = v2.state.pushdown.clone().expect("pushdown");
    let pc = county.state.pushdown.clone().expect("pushdown");
    // Village 1: both recommended, only the small file planned and pre-fetched.
    wait_for("village 1's plan pre-fetched", deadline, || {
        let s = p1.status();
        s.wanted == 3 && s.planned == 1 && s.planned_complete == 1
    })
    .await;
    assert!(p1.is_planned(&small_cid) && !p1.is_planned(&big_cid));
    assert!(p1.blobs().is_complete(&small_cid));
    assert!(!p1.blobs().is_complete(&big_cid), "outside the budget");
    // Village 2 (a larger budget): two planned and pre-fetched.
    wait_for("village 2's plan pre-fetched", deadline, || {
        let s = p2.status();
        s.wanted == 3 && s.planned == 2 && s.planned_complete == 2
    })
    .await;
    assert!(p2.is_planned(&small_cid) && p2.is_planned(&big_cid) && !p2.is_planned(&huge_cid));
    // The hub's plan API agrees with what the nodes were told.
    let plan = hub_get(&hub, &format!("/api/v1/push-plan?village={VILLAGE}")).await;
    assert_eq!(plan["budget_bytes"], 1_000_000);
    assert_eq!(plan["push"][0]["content_id"], small.id.as_str());
    assert_eq!(plan["left_out"].as_array().map(Vec::len), Some(2), "{plan}");
    // The county caches its villages' plans, then the rest they were recommended.
    wait_for("the county's cache", deadline, || {
        [small_cid, big_cid, huge_cid]
            .iter()
            .all(|c| pc.blobs().is_complete(c))
    })
    .await;
    assert_eq!(pc.status().planned, 2, "the union of the villages' plans");
    // A villager opens the big item in village 1: fetched on demand from the county.
    let st = p1.status();
    assert!(!p1.blobs().is_complete(&big_cid), "{st:?}");
    let http = reqwest::Client::new();
    let v: serde_json::Value = http
        .get(format!("{}/v/content/{}", v1.url(), big.id))
        .send()
        .await
        .expect("item")
        .json()
        .await
        .expect("json");
    assert_eq!(v["renditions"][0]["available"], true, "{v}");
    p1.blobs().verify_content(&big_cid).expect("verified");
    let got = http
        .get(format!("{}/content/{}/main", v1.url(), big.id))
        .send()
        .await
        .expect("file")
        .bytes()
        .await
        .expect("bytes");
    assert_eq!(got.as_ref(), &big_body[..]);
    // Still only the small one is planned, and the next run keeps what was opened.
    let runs = p1.status().runs;
    wait_for("another push-down run", deadline, || {
        p1.status().runs > runs
    })
    .await;
    assert!(!p1.is_planned(&big_cid) && p1.blobs().is_complete(&big_cid));
    // An id not recommended here is never fetched.
    let resp = http
        .get(format!("{}/v/content/c0000000000000000", v1.url()))
        .send()
        .await
        .expect("missing");
    assert_eq!(resp.status(), 404);
    // Offline (the county, its only upstream, is gone): an unplanned item cannot be fetched
    // and the node says, in Chinese, that it is not downloaded yet.
    county.stop().await.expect("stop");
    let resp = http
        .get(format!("{}/v/content/{}", v2.url(), huge.id))
        .send()
        .await
        .expect("offline item");
    assert_eq!(resp.status(), 404);
    let body: serde_json::Value = resp.json().await.expect("json");
    assert!(
        body.to_string().contains("尚未下载"),
        "a zh-CN 'not yet downloaded': {body}"
    );
    assert!(!p2.blobs().is_complete(&huge_cid));
    for n in [v1, v2] {
        n.stop().await.expect("stop");
    }
    hub.stop().await.expect("stop");
}

/// A Markdown article pushed down to a village reaches the villager page rendered: headings,
/// quote, list and line breaks as HTML, no raw `#`, and the markup an article must not carry
/// (script, event handlers, `javascript:` links) removed; the rendered-fragment route answers the
/// same HTML for the cadre app.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pushed_down_markdown_article_is_rendered_on_the_villager_page() {
    let root = tempfile::tempdir().expect("tempdir");
    let hub = start_hub(root.path()).await;
    let file = root.path().join("asf.md");
    std::fs::write(
        &file,
        "# 非洲猪瘟防控十要点\n\n> 来源：四川省农业农村厅\n\n## 第一步\n\n\
         - 封闭管理\n- 严格消毒\n\n早上喂料\n中午清粪\n\n\
         <script>window.__xss=1</script><img src=x onerror=\"window.__xss=2\">\n\n\
         [举报电话](javascript:alert(1))\n",
    )
    .expect("write");
    let item = hub
        .hub
        .library
        .add(
            &json!({"title": "非洲猪瘟防控十要点", "tags": ["liv.asf"], "format": "article",
                "review_date": "2026-03-01"}),
            &file,
            &Default::default(),
        )
        .expect("add");
    let cid: ContentId = item
        .content
        .as_deref()
        .expect("content id")
        .parse()
        .expect("hex");
    let key = hub.hub.files.public_key_hex();
    let hub_addr = hub.hub.sync.as_ref().expect("sync").listen_addr();
    let village = start_node(root.path(), 1, Role::Village, VILLAGE, vec![hub_addr], &key).await;
    let hh = village
        .state
        .records
        .create_household(
            "cadre",
            &json!({"profile": {"group": 1, "residents": 2, "age_18_59": 2,
                "livestock": {"pig": {"herd_band": 1}}}}),
        )
        .await
        .expect("create")
        .id;
    let deadline = Instant::now() + Duration::from_secs(90);
    let pd = village.state.pushdown.clone().expect("pushdown");
    wait_for("the article at the village", deadline, || {
        pd.blobs().is_complete(&cid) && pd.content_of(&item.id) == Some(cid)
    })
    .await;

    let http = reqwest::Client::new();
    let page = http
        .get(format!("{}/v/{hh}", village.url()))
        .send()
        .await
        .expect("villager page");
    assert_eq!(page.status(), 200);
    let page = page.text().await.expect("text");
    for want in [
        "<h1>非洲猪瘟防控十要点</h1>",
        "<blockquote>",
        "来源：四川省农业农村厅",
        "<h2>第一步</h2>",
        "<li>封闭管理</li>",
        "早上喂料<br>",
    ] {
        assert!(
            page.contains(want),
            "{want} not on the villager page:\n{page}"
        );
    }
    let article = &page[page.find("<div class=article>").expect("article")..];
    for bad in ["# ", "> 来源", "__xss", "onerror", "javascript:"] {
        assert!(
            !article.contains(bad),
            "{bad} on the villager page:\n{article}"
        );
    }

    let resp = http
        .get(format!("{}/content/{}/main/html", village.url(), item.id))
        .send()
        .await
        .expect("fragment");
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"].to_str().expect("ct"),
        "text/html; charset=utf-8"
    );
    let fragment = resp.text().await.expect("text");
    assert!(
        fragment.starts_with("<h1>非洲猪瘟防控十要点</h1>"),
        "{fragment}"
    );
    assert!(!fragment.contains("__xss"), "{fragment}");
    let resp = http
        .get(format!("{}/content/{}/audio/html", village.url(), item.id))
        .send()
        .await
        .expect("missing rendition");
    assert_eq!(resp.status(), 404);
    village.stop().await.expect("stop");
    hub.stop().await.expect("stop");
}
