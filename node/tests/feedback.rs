//! Recommendations and feedback as a client sees them: a real node on a loopback port with a real
//! store and a `rec` document as the hub writes it. The recommendations API and the villager page
//! read the real `rec` layout; opening an item and 「有帮助」 write the household's `fb` document
//! durably (there after a restart), only for items of its `rec`, helpful once a day, with no
//! personal data.

use std::time::Duration;

use automerge::AutoCommit;
use cunyun_node::config::NodeConfig;
use cunyun_node::feedback::Event;
use cunyun_node::server::{self, RunningNode};
use cunyun_platform::store::DocWrite;
use cunyun_protocol::area::{AreaCode, AreaScope};
use cunyun_protocol::feedback::{Feedback, Recorded};
use cunyun_protocol::fields::Date;
use cunyun_protocol::key::{DocKey, Kind};
use cunyun_protocol::rec::Rec;
use serde_json::{json, Value};

const VILLAGE: &str = "510116108203";
const CADRE: &str = "wangli";
const PASSWORD: &str = "村干部的密码2026";

async fn start(dir: &std::path::Path) -> RunningNode {
    let accounts = cunyun_platform::accounts::Accounts::open(dir).expect("accounts");
    if accounts.list().expect("list").is_empty() {
        accounts.add(CADRE, VILLAGE, PASSWORD).expect("add cadre");
    }
    drop(accounts);
    let mut c = NodeConfig::default();
    c.data_dir = dir.to_path_buf();
    c.listen = "127.0.0.1:0".parse().expect("addr");
    c.scope = AreaScope::parse(VILLAGE).expect("scope");
    server::start(&c, std::future::pending())
        .await
        .expect("node starts")
}

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
    assert_eq!(resp.status().as_u16(), 200);
    let cookie = resp
        .headers()
        .get(reqwest::header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .expect("cookie")
        .split(';')
        .next()
        .expect("pair")
        .to_string();
    let csrf = resp
        .headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix("cunyun_csrf="))
        .and_then(|v| v.split(';').next())
        .expect("csrf cookie")
        .to_string();
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        "x-csrf-token",
        reqwest::header::HeaderValue::from_str(&csrf).expect("header"),
    );
    headers.insert(
        reqwest::header::COOKIE,
        reqwest::header::HeaderValue::from_str(&cookie).expect("header"),
    );
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .default_headers(headers)
        .build()
        .expect("client")
}

async fn send(req: reqwest::RequestBuilder) -> (u16, Value) {
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    (status, resp.json::<Value>().await.unwrap_or(Value::Null))
}

/// Writes the hub's `rec` document for household `id` into the node's store.
fn write_rec(node: &RunningNode, id: &str) {
    let rec = Rec::from_json(&json!({
        "village": VILLAGE, "updated": "2026-04-15",
        "items": {
            "asf-10": {"title": "非洲猪瘟防控十要点", "rendition": "main", "bytes": 34000,
                "score": 1080, "week": "2026-W16", "tags": {"liv.asf": true},
                "reason": "家中养猪：防非洲猪瘟"},
            "citrus-3": {"title": "柑橘黄龙病识别", "rendition": "480p", "bytes": 9000,
                "score": 700, "week": "2026-W15", "tags": {"plt.citrus": true},
                "reason": "种柑橘：防黄龙病"}
        }
    }))
    .expect("rec");
    let mut doc = AutoCommit::new();
    rec.write_to(&mut doc).expect("write rec");
    let key = DocKey::new(AreaCode::parse(VILLAGE).expect("village"), Kind::Rec, id).expect("key");
    node.state
        .records
        .store()
        .commit(vec![DocWrite {
            key,
            chunk: doc.save(),
            heads: doc.get_heads(),
            updated_at_ms: 1,
        }])
        .expect("commit rec");
}

fn read_fb(node: &RunningNode, id: &str) -> Option<(Feedback, Value)> {
    let key = DocKey::new(AreaCode::parse(VILLAGE).expect("village"), Kind::Fb, id).expect("key");
    let doc = node.state.records.store().load(&key).expect("load")?;
    let fb = Feedback::read_from(&doc).expect("fb readable");
    let json = serde_json::to_value(&fb).expect("json");
    Some((fb, json))
}

#[tokio::test]
async fn recommendations_villager_page_and_feedback() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start(dir.path()).await;
    let url = node.url();
    let http = client(&url).await;
    let anon = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client");
    let (status, created) = send(http.post(format!("{url}/api/v1/households")).json(&json!({
        "profile": {"group": 3, "residents": 1, "age_18_59": 1,
            "livestock": {"pig": {"herd_band": 1}}},
        "private": {"head_name": "王秀英", "phone": "13800000000", "roster_no": "3-017"}
    })))
    .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().expect("id").to_string();

    // Before the hub wrote a rec: no items, and feedback on anything is refused.
    let (_, recs) = send(http.get(format!("{url}/api/v1/households/{id}/recommendations"))).await;
    assert_eq!(recs["items"], json!([]));
    let (status, _) = send(anon.post(format!("{url}/v/{id}/items/asf-10/helpful"))).await;
    assert_eq!(status, 404);
    assert!(read_fb(&node, &id).is_none(), "nothing stored");

    write_rec(&node, &id);
    let (status, recs) =
        send(http.get(format!("{url}/api/v1/households/{id}/recommendations"))).await;
    assert_eq!(status, 200);
    let items = recs["items"].as_array().expect("items");
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["id"], "asf-10", "newest week first");
    assert_eq!(items[0]["title"], "非洲猪瘟防控十要点");
    assert_eq!(items[0]["reason"], "家中养猪：防非洲猪瘟");
    assert_eq!(items[0]["week"], "2026-W16");
    assert_eq!(items[0]["week_zh"], "2026年第16周（4月13日—4月19日）");
    assert_eq!(items[0]["content"], "/v/content/asf-10");
    assert_eq!(items[1]["file"], "/content/citrus-3/480p");

    // The villager page lists them with the helpful button, and no personal data.
    let page = anon
        .get(format!("{url}/v/{id}"))
        .send()
        .await
        .expect("page")
        .text()
        .await
        .expect("html");
    for s in [
        "非洲猪瘟防控十要点",
        "种柑橘：防黄龙病",
        "推荐于2026年第16周（4月13日—4月19日）",
        "有帮助",
        "内容正在下载，请稍后再看",
    ] {
        assert!(page.contains(s), "{s} missing");
    }
    for private in ["王秀英", "13800000000", "3-017"] {
        assert!(!page.contains(private), "{private} leaked");
    }
    assert!(
        !page.contains("2026-W"),
        "no raw ISO week on the villager page"
    );

    // A file completing on the node marks its item delivered (what the push-down loop records),
    // once.
    let day = Date::parse("2026-04-16").expect("day");
    let records = &node.state.records;
    for expected in [Recorded::Changed, Recorded::Unchanged] {
        let got = records
            .record_feedback(&id, "citrus-3", Event::Delivered, day)
            .await
            .expect("delivered");
        assert_eq!(got, expected);
    }
    assert_eq!(
        read_fb(&node, &id).expect("fb").0.items["citrus-3"].delivered_on(),
        Some(day)
    );

    // Opening and rating: views count (an open counts as delivered), helpful once; items
    // outside the rec are refused.
    for _ in 0..2 {
        let (status, r) = send(anon.post(format!("{url}/v/{id}/items/asf-10/view"))).await;
        assert_eq!((status, &r["recorded"]), (200, &json!(true)));
    }
    let (status, r) =
        send(http.post(format!("{url}/api/v1/households/{id}/items/citrus-3/view"))).await;
    assert_eq!((status, &r["recorded"]), (200, &json!(true)));
    let (status, _) =
        send(anon.post(format!("{url}/api/v1/households/{id}/items/citrus-3/view"))).await;
    assert_eq!(status, 401, "the cadre route needs a login");
    let (_, r) = send(anon.post(format!("{url}/v/{id}/items/asf-10/helpful"))).await;
    assert_eq!(r["recorded"], true);
    let (status, r) = send(anon.post(format!("{url}/v/{id}/items/asf-10/helpful"))).await;
    assert_eq!((status, &r["recorded"]), (200, &json!(false)), "idempotent");
    let (status, _) = send(anon.post(format!("{url}/v/{id}/items/other/helpful"))).await;
    assert_eq!(status, 404);
    let (status, _) = send(anon.post(format!("{url}/v/hnope/items/asf-10/view"))).await;
    assert_eq!(status, 404);

    let (fb, json) = read_fb(&node, &id).expect("fb stored");
    assert_eq!(fb.items.len(), 2, "{json}");
    assert_eq!(fb.items["asf-10"].view_count(), 2);
    assert!(fb.items["asf-10"].is_helpful());
    assert_eq!(fb.items["citrus-3"].view_count(), 1);
    assert_eq!(
        fb.items["citrus-3"].delivered_on(),
        Some(day),
        "first delivery kept"
    );
    assert!(
        fb.items["asf-10"].delivered_on().is_some(),
        "opened, so delivered"
    );
    assert!(!fb.items["citrus-3"].is_helpful());
    assert!(!fb.items.contains_key("other"));
    let text = json.to_string();
    for private in ["王秀英", "13800000000", "3-017"] {
        assert!(!text.contains(private), "{private} in fb");
    }
    let today = fb.items["asf-10"].first_viewed().expect("viewed");
    assert!(today >= Date::parse("2026-01-01").expect("date"));

    // Acknowledged feedback is durable.
    node.stop().await.expect("stop");
    let node = start(dir.path()).await;
    let (fb2, _) = read_fb(&node, &id).expect("fb after restart");
    assert_eq!(fb2, fb);
    node.stop().await.expect("stop");
}
