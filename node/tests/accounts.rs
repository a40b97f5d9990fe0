//! Roles, CSRF, the admin pages and the audit view of a node, as an HTTP client sees them: a
//! county node on a loopback port serving two villages.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use cunyun_node::config::NodeConfig;
use cunyun_node::server::{self, RunningNode};
use cunyun_platform::accounts::{Accounts, Role};
use cunyun_protocol::area::AreaScope;
use serde_json::{json, Value};

const COUNTY: &str = "510116";
const VILLAGE_A: &str = "510116108203";
const VILLAGE_B: &str = "510116108204";
const PASSWORD: &str = "足够长的测试密码";

async fn start(dir: &std::path::Path) -> RunningNode {
    let accounts = Accounts::open(dir).unwrap();
    if accounts.list().unwrap().is_empty() {
        accounts.add("cadre_a", VILLAGE_A, PASSWORD).unwrap();
        accounts.add("cadre_b", VILLAGE_B, PASSWORD).unwrap();
        accounts
            .create("cli", "xian", Role::CountyOperator, COUNTY, PASSWORD)
            .unwrap();
        accounts
            .create("cli", "boss", Role::Admin, COUNTY, PASSWORD)
            .unwrap();
    }
    drop(accounts);
    let mut c = NodeConfig::default();
    c.data_dir = dir.to_path_buf();
    c.listen = "127.0.0.1:0".parse().unwrap();
    c.scope = AreaScope::parse(COUNTY).unwrap();
    server::start(&c, std::future::pending()).await.unwrap()
}

/// A logged-in session: its cookies and CSRF token, sent by hand so tests can leave them out.
struct Session {
    http: reqwest::Client,
    url: String,
    cookie: String,
    csrf: String,
}

impl Session {
    async fn login(url: &str, name: &str) -> Session {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let resp = http
            .post(format!("{url}/api/v1/login"))
            .json(&json!({"name": name, "password": PASSWORD}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200, "login {name}");
        let mut pairs = Vec::new();
        let mut csrf = String::new();
        for v in resp.headers().get_all(reqwest::header::SET_COOKIE) {
            let pair = v.to_str().unwrap().split(';').next().unwrap().to_string();
            if let Some(t) = pair.strip_prefix("cunyun_csrf=") {
                csrf = t.to_string();
            }
            pairs.push(pair);
        }
        assert_eq!(csrf.len(), 64, "csrf cookie set at login");
        Session {
            http,
            url: url.to_string(),
            cookie: pairs.join("; "),
            csrf,
        }
    }

    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .get(format!("{}{path}", self.url))
            .header("cookie", &self.cookie)
    }

    /// A state-changing request with the session cookie and the right CSRF token.
    fn write(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.write_raw(method, path)
            .header("x-csrf-token", &self.csrf)
    }

    /// The same without the CSRF header.
    fn write_raw(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.url))
            .header("cookie", &self.cookie)
    }
}

async fn send(req: reqwest::RequestBuilder) -> (u16, Value) {
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json::<Value>().await.unwrap_or(Value::Null))
}

fn household(village: &str) -> Value {
    json!({
        "profile": {"village": village, "group": 1, "residents": 2, "age_18_59": 2, "smartphones": 1},
        "private": {"head_name": "张三", "roster_no": "1-001"}
    })
}

fn is_chinese_403(status: u16, body: &Value) -> bool {
    status == 403
        && body["message"]
            .as_str()
            .is_some_and(|m| m.chars().any(|c| ('\u{4e00}'..='\u{9fff}').contains(&c)))
}

#[tokio::test]
async fn each_role_sees_and_changes_only_its_area() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path()).await;
    let url = node.url();
    let a = Session::login(&url, "cadre_a").await;
    let b = Session::login(&url, "cadre_b").await;
    let op = Session::login(&url, "xian").await;
    let admin = Session::login(&url, "boss").await;
    let post = reqwest::Method::POST;
    let patch = reqwest::Method::PATCH;

    let (s, ha) = send(
        a.write(post.clone(), "/api/v1/households")
            .json(&household(VILLAGE_A)),
    )
    .await;
    assert_eq!(s, 201, "{ha}");
    let id_a = ha["id"].as_str().unwrap().to_string();
    // Without a village the cadre's own is used.
    let mut hb = household(VILLAGE_B);
    hb["profile"].as_object_mut().unwrap().remove("village");
    let (s, hb) = send(b.write(post.clone(), "/api/v1/households").json(&hb)).await;
    assert_eq!(s, 201, "{hb}");
    assert_eq!(hb["profile"]["village"], VILLAGE_B);
    let id_b = hb["id"].as_str().unwrap().to_string();

    // Cadre A: not B's household, by id, in the list, for writes, nor creating in B.
    for path in [
        format!("/api/v1/households/{id_b}"),
        format!("/api/v1/households/{id_b}/recommendations"),
        format!("/api/v1/households/{id_b}/qr.svg"),
    ] {
        let (s, body) = send(a.get(&path)).await;
        assert!(is_chinese_403(s, &body), "{path}: {s} {body}");
    }
    let (s, body) = send(
        a.write(patch.clone(), &format!("/api/v1/households/{id_b}"))
            .json(&json!({"profile": {"residents": 9}})),
    )
    .await;
    assert!(is_chinese_403(s, &body), "{s} {body}");
    let (s, body) = send(
        a.write(post.clone(), "/api/v1/households")
            .json(&household(VILLAGE_B)),
    )
    .await;
    assert!(is_chinese_403(s, &body), "{s} {body}");
    let (s, list) = send(a.get("/api/v1/households")).await;
    assert_eq!(s, 200);
    let ids: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [id_a.as_str()]);
    let (s, body) = send(a.get("/api/v1/overview")).await;
    assert!(
        is_chinese_403(s, &body),
        "county totals are not a cadre's: {s} {body}"
    );
    // Nothing changed in B's household.
    let (s, still) = send(b.get(&format!("/api/v1/households/{id_b}"))).await;
    assert_eq!(s, 200);
    assert_eq!(still["profile"]["residents"], 2);

    // A need of B is out of A's reach too.
    let need = json!({
        "requester": "coop",
        "title": "柑橘黄龙病防控技术指导",
        "description": "合作社柑橘园出现黄化",
        "tags": {"plt.citrus": true},
        "contact_role": "合作社理事长"
    });
    let (s, created) = send(b.write(post.clone(), "/api/v1/needs").json(&need)).await;
    assert_eq!(s, 201, "{created}");
    assert!(
        created["key"].as_str().unwrap().contains(VILLAGE_B),
        "{created}"
    );
    let nid = created["key"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_string();
    let (s, body) = send(a.get(&format!("/api/v1/needs/{nid}"))).await;
    assert!(is_chinese_403(s, &body), "{s} {body}");
    let (s, body) = send(
        a.write(patch.clone(), &format!("/api/v1/needs/{nid}"))
            .json(&json!({"title": "改掉"})),
    )
    .await;
    assert!(is_chinese_403(s, &body), "{s} {body}");
    let (_, needs) = send(a.get("/api/v1/needs")).await;
    assert_eq!(needs["items"].as_array().map(Vec::len), Some(0), "{needs}");
    let (_, needs) = send(b.get("/api/v1/needs")).await;
    assert_eq!(needs["items"].as_array().map(Vec::len), Some(1), "{needs}");

    // The county operator reads both villages and writes nothing.
    let (s, list) = send(op.get("/api/v1/households")).await;
    assert_eq!(
        (s, list["items"].as_array().map(Vec::len)),
        (200, Some(2)),
        "{list}"
    );
    let (s, _) = send(op.get(&format!("/api/v1/households/{id_a}"))).await;
    assert_eq!(s, 200);
    let (s, _) = send(op.get("/api/v1/overview")).await;
    assert_eq!(s, 200);
    let (s, body) = send(
        op.write(patch.clone(), &format!("/api/v1/households/{id_a}"))
            .json(&json!({"profile": {"residents": 9}})),
    )
    .await;
    assert!(is_chinese_403(s, &body), "{s} {body}");
    let (s, body) = send(
        op.write(post.clone(), "/api/v1/households")
            .json(&household(VILLAGE_A)),
    )
    .await;
    assert!(is_chinese_403(s, &body), "{s} {body}");

    // The admin manages accounts, not records; the others cannot reach the admin pages.
    let (s, body) = send(admin.get("/api/v1/households")).await;
    assert!(is_chinese_403(s, &body), "{s} {body}");
    let (s, me) = send(admin.get("/api/v1/me")).await;
    assert_eq!((s, me["cadre"]["role"].as_str()), (200, Some("admin")));
    for who in [&a, &op] {
        let (s, body) = send(who.get("/admin/api/accounts")).await;
        assert!(is_chinese_403(s, &body), "{s} {body}");
        let resp = who.get("/admin/audit").send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 403);
    }
    drop(node);
}

#[tokio::test]
async fn csrf_token_and_cross_site_requests() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path()).await;
    let url = node.url();
    let a = Session::login(&url, "cadre_a").await;
    let post = reqwest::Method::POST;

    // Missing and wrong token: 403 csrf, nothing stored.
    let (s, body) = send(
        a.write_raw(post.clone(), "/api/v1/households")
            .json(&household(VILLAGE_A)),
    )
    .await;
    assert_eq!((s, body["error"].as_str()), (403, Some("csrf")), "{body}");
    let (s, body) = send(
        a.write_raw(post.clone(), "/api/v1/households")
            .header("x-csrf-token", "0".repeat(64))
            .json(&household(VILLAGE_A)),
    )
    .await;
    assert_eq!((s, body["error"].as_str()), (403, Some("csrf")), "{body}");
    // Another session's token does not fit this session.
    let other = Session::login(&url, "cadre_b").await;
    let (s, _) = send(
        a.write_raw(post.clone(), "/api/v1/households")
            .header("x-csrf-token", &other.csrf)
            .json(&household(VILLAGE_A)),
    )
    .await;
    assert_eq!(s, 403);
    let (_, list) = send(a.get("/api/v1/households")).await;
    assert_eq!(
        list["items"].as_array().map(Vec::len),
        Some(0),
        "nothing stored: {list}"
    );
    // Logout without the token does not log out.
    let (s, _) = send(a.write_raw(post.clone(), "/api/v1/logout")).await;
    assert_eq!(s, 403);
    let (s, _) = send(a.get("/api/v1/me")).await;
    assert_eq!(s, 200, "still logged in");

    // Cross-site, even with the right token: refused.
    let (s, body) = send(
        a.write(post.clone(), "/api/v1/households")
            .header("origin", "http://evil.example")
            .json(&household(VILLAGE_A)),
    )
    .await;
    assert_eq!((s, body["error"].as_str()), (403, Some("csrf")), "{body}");
    let (s, _) = send(
        a.write(post.clone(), "/api/v1/households")
            .header("sec-fetch-site", "cross-site")
            .json(&household(VILLAGE_A)),
    )
    .await;
    assert_eq!(s, 403);
    // Villager-page POSTs (no login) from another site are refused; a login from one too.
    let (s, body) = send(
        reqwest::Client::new()
            .post(format!("{url}/v/h0000/items/x/view"))
            .header("origin", "http://evil.example"),
    )
    .await;
    assert_eq!((s, body["error"].as_str()), (403, Some("csrf")), "{body}");
    let (s, _) = send(
        reqwest::Client::new()
            .post(format!("{url}/api/v1/login"))
            .header("sec-fetch-site", "cross-site")
            .json(&json!({"name": "cadre_a", "password": PASSWORD})),
    )
    .await;
    assert_eq!(s, 403);
    let (_, list) = send(a.get("/api/v1/households")).await;
    assert_eq!(
        list["items"].as_array().map(Vec::len),
        Some(0),
        "nothing stored: {list}"
    );

    // The right token from the same origin works.
    let host = url.trim_start_matches("http://").to_string();
    let (s, body) = send(
        a.write(post.clone(), "/api/v1/households")
            .header("origin", format!("http://{host}"))
            .header("sec-fetch-site", "same-origin")
            .json(&household(VILLAGE_A)),
    )
    .await;
    assert_eq!(s, 201, "{body}");
    let (s, _) = send(a.write(post.clone(), "/api/v1/logout")).await;
    assert_eq!(s, 200);
    let (s, _) = send(a.get("/api/v1/me")).await;
    assert_eq!(s, 401, "logged out");
    drop(node);
}

#[tokio::test]
async fn admin_pages_manage_accounts_and_show_the_audit_log() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path()).await;
    let url = node.url();
    let admin = Session::login(&url, "boss").await;
    let a = Session::login(&url, "cadre_a").await;
    let post = reqwest::Method::POST;

    // Without a session the page sends the browser to the login page, which is Chinese.
    let resp = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("{url}/admin/accounts"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 303);
    let login_page = reqwest::get(format!("{url}/login"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(login_page.contains("登录") && login_page.contains("lang=\"zh-CN\""));

    let page = admin
        .get("/admin/accounts")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("账户管理") && page.contains("cadre_a") && page.contains("县级运维"),
        "{page}"
    );

    // Add (bad input changes nothing), then the new account logs in.
    let (s, body) = send(admin.write(post.clone(), "/admin/api/accounts").json(
        &json!({"name": "<b>x</b>", "role": "cadre", "scope": VILLAGE_A, "password": PASSWORD}),
    ))
    .await;
    assert_eq!(s, 422, "{body}");
    let (s, _) = send(admin.write_raw(post.clone(), "/admin/api/accounts").json(
        &json!({"name": "newcadre", "role": "cadre", "scope": VILLAGE_A, "password": PASSWORD}),
    ))
    .await;
    assert_eq!(s, 403, "admin writes need the CSRF token too");
    let (s, body) = send(admin.write(post.clone(), "/admin/api/accounts").json(
        &json!({"name": "newcadre", "role": "cadre", "scope": VILLAGE_A, "password": PASSWORD}),
    ))
    .await;
    assert_eq!(s, 201, "{body}");
    let (_, list) = send(admin.get("/admin/api/accounts")).await;
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.get("name").and_then(Value::as_str).unwrap())
        .collect();
    assert!(
        names.contains(&"newcadre") && !names.contains(&"<b>x</b>"),
        "{names:?}"
    );
    assert!(!list.to_string().contains("argon2"), "no hashes sent");
    Session::login(&url, "newcadre").await;

    // Disable: cadre_a's open session ends at once. Reset a password.
    let (s, _) = send(admin.write(post.clone(), "/admin/api/accounts/cadre_a/disable")).await;
    assert_eq!(s, 200);
    let (s, _) = send(a.get("/api/v1/me")).await;
    assert_eq!(s, 401, "disabled account's session ended");
    let (s, _) = send(admin.write(post.clone(), "/admin/api/accounts/cadre_a/enable")).await;
    assert_eq!(s, 200);
    let (s, body) = send(
        admin
            .write(post.clone(), "/admin/api/accounts/cadre_b/password")
            .json(&json!({"password": "short"})),
    )
    .await;
    assert_eq!(s, 422, "{body}");
    let (s, _) = send(
        admin
            .write(post.clone(), "/admin/api/accounts/cadre_b/password")
            .json(&json!({"password": "新的足够长的密码"})),
    )
    .await;
    assert_eq!(s, 200);
    let (s, _) = send(
        reqwest::Client::new()
            .post(format!("{url}/api/v1/login"))
            .json(&json!({"name": "cadre_b", "password": PASSWORD})),
    )
    .await;
    assert_eq!(s, 401, "old password refused");
    let (s, _) = send(admin.write(post.clone(), "/admin/api/accounts/boss/disable")).await;
    assert_eq!(s, 422, "an admin cannot lock themself out");

    // Hostile names typed at the login land in the log as text, never as markup or formulas.
    for name in ["<script>alert(1)</script>", "=HYPERLINK(\"x\")"] {
        let (s, _) = send(
            reqwest::Client::new()
                .post(format!("{url}/api/v1/login"))
                .json(&json!({"name": name, "password": "whatever-it-is"})),
        )
        .await;
        assert_eq!(s, 401);
    }
    let page = admin
        .get("/admin/audit?what=login_failed")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!page.contains("<script>alert"), "escaped in the view");
    assert!(
        page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{page}"
    );
    let csv = admin
        .get("/admin/audit.csv?what=login_failed")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        csv.contains(",\"'=HYPERLINK(\"\"x\"\")\","),
        "no formula in the CSV: {csv}"
    );

    // A record change, then the audit view shows every kind, filtered.
    let a = Session::login(&url, "cadre_a").await;
    let (s, h) = send(
        a.write(post.clone(), "/api/v1/households")
            .json(&household(VILLAGE_A)),
    )
    .await;
    assert_eq!(s, 201);
    let hh_key = h["profile_key"].as_str().unwrap().to_string();
    let (s, _) = send(a.write(post.clone(), "/api/v1/logout")).await;
    assert_eq!(s, 200);
    let page = admin
        .get("/admin/audit")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for zh in [
        "登录",
        "登录失败",
        "退出登录",
        "新建账户",
        "停用账户",
        "启用账户",
        "重置密码",
        "修改记录",
    ] {
        assert!(
            page.contains(&format!("<td>{zh}</td>")),
            "{zh} in the audit view"
        );
    }
    assert!(page.contains(&hh_key), "record change by key");
    let page = admin
        .get("/admin/audit?who=cadre_a&what=record_change")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains(&hh_key) && !page.contains("<td>boss</td>"),
        "{page}"
    );
    let page = admin
        .get("/admin/audit?from=2000-01-01&to=2000-01-02")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("共 0 条"), "date filter");
    let (s, _) = send(admin.get("/admin/audit?from=yesterday")).await;
    assert_eq!(s, 400);
    let resp = admin
        .get("/admin/audit.csv?who=cadre_a")
        .send()
        .await
        .unwrap();
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let csv = resp.text().await.unwrap();
    assert!(csv.starts_with("\u{feff}时间,"), "{csv}");
    assert!(
        csv.contains(&format!("cadre_a,修改记录,record_change,{hh_key}")),
        "{csv}"
    );
    assert!(csv.contains(",cadre_a,登录,login,cadre_a,成功"), "{csv}");
    assert!(!csv.contains(",boss,"), "filtered by who");

    // A long log: the CSV streams every event (many chunks); the view shows the newest
    // MAX_VIEW_ROWS and counts them all.
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join(cunyun_platform::audit::AUDIT_FILE))
            .unwrap();
        let mut lines = String::new();
        for i in 0..6_000u64 {
            let e = cunyun_platform::audit::AuditEvent {
                ts_ms: 1_700_000_000_000 + i,
                actor: "bulk".into(),
                action: "login_failed".into(),
                target: format!("bulk{i}"),
                ok: false,
                detail: String::new(),
            };
            lines.push_str(&serde_json::to_string(&e).unwrap());
            lines.push('\n');
        }
        f.write_all(lines.as_bytes()).unwrap();
    }
    let csv = admin
        .get("/admin/audit.csv?who=bulk")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(csv.lines().count(), 6_001, "header and every event");
    assert!(csv.contains(",bulk,登录失败,login_failed,bulk5999,失败"));
    let page = admin
        .get("/admin/audit?who=bulk")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("共 6000 条"), "counted");
    assert_eq!(
        page.matches("<td>bulk</td>").count(),
        cunyun_platform::admin::MAX_VIEW_ROWS
    );
    assert!(
        page.contains("bulk5999") && !page.contains("bulk3999<"),
        "the newest"
    );
    drop(node);
}
