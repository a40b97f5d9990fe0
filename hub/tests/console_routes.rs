//! Every console form's route, over real HTTP on loopback: good input is saved (and shows on the
//! console page, escaped), bad input answers 422 with the Chinese message for each field and
//! changes nothing. Every HTTP call goes through [`Client`] (the one place a login goes).

mod common;

use std::path::Path;

use cunyun_hub::config::HubConfig;
use cunyun_hub::store::HubWrite;
use cunyun_hub::RunningHub;
use cunyun_protocol::fields::Date;
use cunyun_protocol::key::Kind;
use cunyun_protocol::need::{LocalNeed, NeedStatus};
use reqwest::Method;
use serde_json::{json, Value};

/// The one HTTP client of these tests.
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

    /// A page: status and HTML.
    async fn page(&self, path: &str) -> (u16, String) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("get");
        (r.status().as_u16(), r.text().await.expect("body"))
    }

    /// A JSON call: status and JSON body (null when empty).
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        common::call_json(&self.http, method, &format!("{}{path}", self.base), body).await
    }

    /// The console's upload: multipart `meta` + `file` (when given, as `(name, bytes)`).
    async fn upload(&self, meta: &Value, file: Option<(&str, &[u8])>) -> (u16, Value) {
        let boundary = "cunyun-test-boundary-7d1f";
        let mut body = Vec::new();
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"meta\"\r\n\r\n{meta}\r\n"
            )
            .as_bytes(),
        );
        if let Some((name, bytes)) = file {
            body.extend_from_slice(
                format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n").as_bytes(),
            );
            body.extend_from_slice(bytes);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        let r = self
            .http
            .post(format!("{}/api/v1/content/upload", self.base))
            .header(
                "content-type",
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(body)
            .send()
            .await
            .expect("upload");
        let status = r.status().as_u16();
        let text = r.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}

async fn start(dir: &Path) -> RunningHub {
    let mut c = HubConfig::default();
    c.data_dir = dir.to_path_buf();
    c.listen = "127.0.0.1:0".parse().expect("addr");
    c.today = Date::parse("2026-04-15");
    c.match_interval_ms = 60_000;
    c.max_upload_bytes = 64 * 1024;
    cunyun_hub::start(&c, std::future::pending())
        .await
        .expect("hub starts")
}

/// The message of each field error, by field.
fn errors(v: &Value) -> Vec<(String, String)> {
    v["fields"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    (
                        e["field"].as_str().unwrap_or("").to_string(),
                        e["message"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn has_error(v: &Value, field: &str, text: &str) -> bool {
    errors(v)
        .iter()
        .any(|(f, m)| f.starts_with(field) && m.contains(text))
}

#[tokio::test]
async fn every_page_renders_with_the_navigation() {
    let dir = tempfile::tempdir().expect("tmp");
    let hub = start(dir.path()).await;
    let c = Client::new(&hub).await;
    for path in [
        "/",
        "/?level=village",
        "/content",
        "/content/new",
        "/experts",
        "/experts/new",
        "/needs",
        "/needs?status=matched",
        "/nodes",
    ] {
        let (s, html) = c.page(path).await;
        assert_eq!(s, 200, "{path}");
        for label in ["覆盖情况", "内容库", "专家", "需求", "节点"] {
            assert!(html.contains(label), "{path} lacks {label}");
        }
        assert!(html.contains("/console/console.js"), "{path}");
    }
    let (s, js) = c.page("/console/console.js").await;
    assert_eq!(s, 200);
    assert!(js.contains("x-csrf-token") && js.contains("cunyun_csrf"));
    assert_eq!(c.page("/content/c0000000000000000/edit").await.0, 404);
    assert_eq!(c.page("/experts/e0000000000000000/edit").await.0, 404);
    assert!(c.page("/nodes").await.1.contains("未启用同步"));
    hub.stop().await.expect("stop");
}

#[tokio::test]
async fn content_form_upload_edit_and_remove() {
    let dir = tempfile::tempdir().expect("tmp");
    let hub = start(&dir.path().join("hub")).await;
    let c = Client::new(&hub).await;
    let uploads = dir.path().join("hub/uploads");
    let nothing_stored = |hub: &RunningHub| {
        assert!(hub.hub.library.list().is_empty());
        assert!(std::fs::read_dir(&uploads)
            .map(|d| d.count() == 0)
            .unwrap_or(true));
    };

    // Bad input: every problem at once, in Chinese, next to its field; nothing stored.
    let bad = json!({"title": "", "tags": [], "regions": ["51x"], "months": [13],
        "format": null, "review_date": "2026-03-01", "expires": "2026-01-01"});
    let (s, v) = c.upload(&bad, Some(("a.md", b"# x\n"))).await;
    assert_eq!(s, 422, "{v}");
    for (field, text) in [
        ("title", "必填"),
        ("tags", "至少选一个"),
        ("regions", "无效"),
        ("months", "1到12"),
        ("format", "格式"),
        ("expires", "应晚于审核日期"),
    ] {
        assert!(has_error(&v, field, text), "{field}: {v}");
    }
    nothing_stored(&hub);
    // No file chosen.
    let meta = json!({"title": "防非洲猪瘟<script>window.__xss=1</script>", "summary": "不从疫区调猪",
        "tags": ["liv.asf"], "regions": ["5114"], "months": [3, 4], "audience": ["age_60_69"],
        "language": "sichuanese", "format": "article", "source": "省农技站",
        "review_date": "2026-03-01", "expires": null});
    let (s, v) = c.upload(&meta, None).await;
    assert_eq!(s, 422);
    assert!(has_error(&v, "file", "请选择要上传的文件"), "{v}");
    // An empty file.
    let (s, v) = c.upload(&meta, Some(("a.md", b""))).await;
    assert_eq!(s, 422, "{v}");
    assert!(has_error(&v, "file", "空"), "{v}");
    // Too large (the limit is 64 KiB here).
    let big = vec![b'x'; 65 * 1024];
    let (s, v) = c.upload(&meta, Some(("big.md", &big))).await;
    assert_eq!(s, 413, "{v}");
    assert!(v["message"].as_str().unwrap_or("").contains("上传上限"));
    nothing_stored(&hub);

    // Good input: stored, listed, the title shown as text.
    let (s, v) = c
        .upload(&meta, Some(("asf.md", "# 防非洲猪瘟\n".as_bytes())))
        .await;
    assert_eq!(s, 201, "{v}");
    let id = v["id"].as_str().expect("id").to_string();
    let content_id = v["content"].as_str().expect("content").to_string();
    assert_eq!(v["meta"]["bytes"], "# 防非洲猪瘟\n".len());
    assert_eq!(hub.hub.library.list().len(), 1);
    assert!(std::fs::read_dir(&uploads).expect("dir").next().is_none());
    let (_, html) = c.page("/content").await;
    assert!(html.contains("防非洲猪瘟&lt;script&gt;window.__xss=1&lt;/script&gt;"));
    assert!(!html.contains("<script>window.__xss"));
    assert!(html.contains("在用"));

    // Edit: bad input changes nothing.
    let before = hub.hub.library.get(&id).expect("item");
    let (s, v) = c
        .call(
            Method::PUT,
            &format!("/api/v1/content/{id}"),
            Some(json!({"meta": {"title": "标".repeat(61), "tags": ["nope"], "review_date": "2026-3-1"}})),
        )
        .await;
    assert_eq!(s, 422, "{v}");
    assert!(has_error(&v, "title", "不能超过60个字"), "{v}");
    assert!(has_error(&v, "tags", ""), "{v}");
    assert!(has_error(&v, "review_date", ""), "{v}");
    assert_eq!(hub.hub.library.get(&id).expect("item"), before);
    // Retire: expires today (the hub's date), no longer live, record kept.
    assert!(c.page("/content").await.1.contains("/retire"));
    let (s, v) = c
        .call(Method::POST, &format!("/api/v1/content/{id}/retire"), None)
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["meta"]["expires"], "2026-04-15");
    assert_eq!(v["meta"]["title"], meta["title"]);
    let (_, html) = c.page("/content").await;
    assert!(html.contains("已失效") && !html.contains("/retire"));
    let (s, _) = c
        .call(
            Method::POST,
            "/api/v1/content/c0000000000000000/retire",
            None,
        )
        .await;
    assert_eq!(s, 404);
    // Good edit: re-signed, same ids, shown; the expiry makes it 已失效.
    let mut edited = meta.clone();
    edited["title"] = json!("防非洲猪瘟（修订）");
    edited["expires"] = json!("2026-04-01");
    let (s, v) = c
        .call(
            Method::PUT,
            &format!("/api/v1/content/{id}"),
            Some(json!({ "meta": edited })),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (v["id"].as_str(), v["content"].as_str()),
        (Some(id.as_str()), Some(content_id.as_str()))
    );
    let (_, html) = c.page("/content").await;
    assert!(html.contains("防非洲猪瘟（修订）") && html.contains("已失效"));
    let (s, html) = c.page(&format!("/content/{id}/edit")).await;
    assert_eq!(s, 200);
    assert!(html.contains("value=\"防非洲猪瘟（修订）\""));
    // Unknown item.
    let (s, _) = c
        .call(
            Method::PUT,
            "/api/v1/content/c0000000000000000",
            Some(json!({"meta": edited})),
        )
        .await;
    assert_eq!(s, 404);

    // Remove.
    let (s, _) = c
        .call(Method::DELETE, &format!("/api/v1/content/{id}"), None)
        .await;
    assert_eq!(s, 204);
    assert!(hub.hub.library.list().is_empty());
    assert!(!c.page("/content").await.1.contains("修订"));
    hub.stop().await.expect("stop");
}

#[tokio::test]
async fn expert_form_add_edit_and_remove() {
    let dir = tempfile::tempdir().expect("tmp");
    let hub = start(dir.path()).await;
    let c = Client::new(&hub).await;
    let count = |hub: &RunningHub| {
        hub.hub
            .store
            .entries(
                &cunyun_protocol::area::AreaScope::parse("51").expect("scope"),
                Some(Kind::Expert),
            )
            .expect("entries")
            .len()
    };

    let (s, v) = c
        .call(
            Method::POST,
            "/api/v1/experts",
            Some(json!({"name": "", "organisation": "省农科院", "fields": {},
                "regions": {"5x": true}, "services": {}, "phone": "13800000000"})),
        )
        .await;
    assert_eq!(s, 422, "{v}");
    for (field, text) in [
        ("name", "必填"),
        ("fields", "至少选一个"),
        ("regions", "无效"),
        ("services", "至少选一项"),
        ("phone", "未知字段"),
    ] {
        assert!(has_error(&v, field, text), "{field}: {v}");
    }
    assert_eq!(count(&hub), 0);

    let good = json!({"name": "<svg onload=__xss=1>", "organisation": "眉山市农业科学研究院",
        "title": "研究员", "fields": {"plt.citrus": true}, "regions": {"5114": true},
        "services": {"onsite": true, "remote": true}});
    let (s, v) = c
        .call(Method::POST, "/api/v1/experts", Some(good.clone()))
        .await;
    assert_eq!(s, 201, "{v}");
    let id = v["id"].as_str().expect("id").to_string();
    assert_eq!(count(&hub), 1);
    let (_, html) = c.page("/experts").await;
    assert!(html.contains("&lt;svg onload=__xss=1&gt;"));
    assert!(!html.contains("<svg onload"));

    // Edit: bad input changes nothing; a good edit keeps the id even with a new name.
    let (s, v) = c
        .call(
            Method::PUT,
            &format!("/api/v1/experts/{id}"),
            Some(
                json!({"name": "王".repeat(21), "organisation": "", "fields": {"plt.citrus": true},
                "services": {"onsite": true}}),
            ),
        )
        .await;
    assert_eq!(s, 422, "{v}");
    assert!(
        has_error(&v, "name", "不能超过20个字") && has_error(&v, "organisation", "必填"),
        "{v}"
    );
    let (_, v) = c
        .call(Method::GET, &format!("/api/v1/experts/{id}"), None)
        .await;
    assert_eq!(v["expert"]["organisation"], "眉山市农业科学研究院");
    let mut renamed = good.clone();
    renamed["name"] = json!("李明华");
    let (s, v) = c
        .call(Method::PUT, &format!("/api/v1/experts/{id}"), Some(renamed))
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["id"], id.as_str());
    assert_eq!(v["expert"]["name"], "李明华");
    assert_eq!(count(&hub), 1);
    let (s, _) = c
        .call(
            Method::PUT,
            "/api/v1/experts/e0000000000000000",
            Some(good.clone()),
        )
        .await;
    assert_eq!(s, 404);
    assert!(c
        .page(&format!("/experts/{id}/edit"))
        .await
        .1
        .contains("value=\"李明华\""));

    // Remove: gone from the list and the page, kept as a withdrawn document.
    let (s, _) = c
        .call(Method::DELETE, &format!("/api/v1/experts/{id}"), None)
        .await;
    assert_eq!(s, 204);
    let (_, v) = c.call(Method::GET, "/api/v1/experts", None).await;
    assert_eq!(v["experts"].as_array().map(Vec::len), Some(0));
    let (_, v) = c.call(Method::GET, "/api/v1/experts?all=1", None).await;
    assert_eq!(v["experts"][0]["expert"]["withdrawn"], true);
    assert!(!c.page("/experts").await.1.contains("李明华"));
    let (s, _) = c
        .call(Method::DELETE, &format!("/api/v1/experts/{id}"), None)
        .await;
    assert_eq!(s, 404);
    hub.stop().await.expect("stop");
}

/// Puts a need into the hub's store as if a village had synced it up.
fn plant_need(hub: &RunningHub, id: &str, status: NeedStatus) -> LocalNeed {
    let mut need = LocalNeed::from_json(&json!({"area": "511424104201", "requester": "coop",
        "title": "柑橘大实蝇<b>防控</b>", "tags": {"plt.citrus": true},
        "contact_role": "合作社理事长", "created": "2026-04-01", "updated": "2026-04-01"}))
    .expect("need");
    need.status = status;
    let key = need.key(id).expect("key");
    let mut doc = automerge::Automerge::new();
    let mut tx = doc.transaction();
    need.write_to(&mut tx).expect("write");
    tx.commit();
    hub.hub
        .store
        .apply(
            vec![HubWrite {
                key,
                chunk: doc.save(),
            }],
            Vec::new(),
        )
        .expect("commit");
    need
}

fn stored_status(hub: &RunningHub, id: &str) -> NeedStatus {
    let key = cunyun_protocol::key::DocKey::new(
        cunyun_protocol::area::AreaCode::parse("511424104201").expect("area"),
        Kind::Need,
        id,
    )
    .expect("key");
    let doc = hub.hub.store.get(&key).expect("load").expect("doc");
    LocalNeed::read_from(&doc).expect("need").status
}

#[tokio::test]
async fn need_status_button_and_filters() {
    let dir = tempfile::tempdir().expect("tmp");
    let hub = start(dir.path()).await;
    let c = Client::new(&hub).await;
    plant_need(&hub, "n1", NeedStatus::Open);
    plant_need(&hub, "n2", NeedStatus::Matched);

    // Not allowed: open → in service (must be matched first); unknown status; unknown need.
    let (s, v) = c
        .call(
            Method::POST,
            "/api/v1/needs/511424104201/n1/status",
            Some(json!({"status": "in_service"})),
        )
        .await;
    assert_eq!(s, 422, "{v}");
    assert!(has_error(&v, "status", "不能从“待对接”改为“服务中”"), "{v}");
    assert_eq!(stored_status(&hub, "n1"), NeedStatus::Open);
    let (s, _) = c
        .call(
            Method::POST,
            "/api/v1/needs/511424104201/n1/status",
            Some(json!({"status": "done"})),
        )
        .await;
    assert_eq!(s, 422);
    let (s, _) = c
        .call(
            Method::POST,
            "/api/v1/needs/511424104201/n9/status",
            Some(json!({"status": "in_service"})),
        )
        .await;
    assert_eq!(s, 404);
    assert_eq!(stored_status(&hub, "n1"), NeedStatus::Open);

    // Allowed: matched → in service.
    let (s, v) = c
        .call(
            Method::POST,
            "/api/v1/needs/511424104201/n2/status",
            Some(json!({"status": "in_service"})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["need"]["status"], "in_service");
    assert_eq!(v["need"]["updated"], "2026-04-15");
    assert_eq!(stored_status(&hub, "n2"), NeedStatus::InService);

    // Filters.
    let (_, v) = c
        .call(Method::GET, "/api/v1/needs?status=in_service", None)
        .await;
    let ids: Vec<&str> = v["needs"]
        .as_array()
        .expect("needs")
        .iter()
        .filter_map(|n| n["id"].as_str())
        .collect();
    assert_eq!(ids, ["n2"]);
    let (_, v) = c.call(Method::GET, "/api/v1/needs?area=5114", None).await;
    assert_eq!(v["needs"].as_array().map(Vec::len), Some(2));
    let (_, v) = c.call(Method::GET, "/api/v1/needs?area=5101", None).await;
    assert_eq!(v["needs"].as_array().map(Vec::len), Some(0));
    assert_eq!(
        c.call(Method::GET, "/api/v1/needs?area=51x", None).await.0,
        400
    );
    assert_eq!(
        c.call(Method::GET, "/api/v1/needs?status=done", None)
            .await
            .0,
        400
    );

    // The page: titles escaped, one button per allowed next status.
    let (_, html) = c.page("/needs?status=open").await;
    assert!(html.contains("柑橘大实蝇&lt;b&gt;防控&lt;/b&gt;"));
    assert!(
        html.contains("data-status=\"matched\" data-url=\"/api/v1/needs/511424104201/n1/status\"")
    );
    assert!(!html.contains("/n2/status"));
    let (s, html) = c.page("/needs?area=51x").await;
    assert_eq!(s, 400);
    assert!(html.contains("地区“51x”无效") && html.contains("需求"));
    hub.stop().await.expect("stop");
}
