//! The console names places, not codes (issue 13): the needs page shows the gazetteer's label
//! of each need's village with the code as small text, and an unknown code as 「（未知地区）」.
//! Driven through the hub's router with `tower::ServiceExt::oneshot`.

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use cunyun_hub::config::HubConfig;
use cunyun_hub::store::HubWrite;
use cunyun_hub::RunningHub;
use cunyun_platform::accounts::Role;
use cunyun_protocol::fields::Date;
use cunyun_protocol::need::LocalNeed;
use serde_json::json;
use tower::ServiceExt;

const PASSWORD: &str = "足够长的测试密码";

async fn start(dir: &std::path::Path) -> RunningHub {
    let mut c = HubConfig::default();
    c.data_dir = dir.to_path_buf();
    c.listen = "127.0.0.1:0".parse().expect("addr");
    c.today = Date::parse("2026-04-15");
    c.match_interval_ms = 60_000;
    cunyun_hub::start(&c, std::future::pending())
        .await
        .expect("hub starts")
}

fn plant_need(hub: &RunningHub, area: &str, id: &str, title: &str) {
    let need = LocalNeed::from_json(&json!({"area": area, "requester": "coop",
        "title": title, "tags": {"plt.citrus": true},
        "contact_role": "合作社理事长", "created": "2026-04-01", "updated": "2026-04-01"}))
    .expect("need");
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
}

/// `GET path` through the router with `headers`, as account `who` (created with `role`) when
/// given: status, content type and body text.
async fn get(
    hub: &RunningHub,
    path: &str,
    who: Option<(&str, Role)>,
    headers: &[(&str, &str)],
) -> (StatusCode, String, String) {
    let mut req = Request::get(path);
    if let Some((name, role)) = who {
        let accounts = &hub.hub.accounts;
        if accounts.login(name, PASSWORD).is_err() {
            let scope = if role == Role::Cadre {
                "510116108203"
            } else {
                "51"
            };
            accounts
                .create("test", name, role, scope, PASSWORD)
                .expect("account");
        }
        let s = accounts.login(name, PASSWORD).expect("login");
        req = req.header(header::COOKIE, format!("cunyun_session={}", s.token));
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = cunyun_hub::router(hub.hub.clone())
        .oneshot(req.body(Body::empty()).expect("request"))
        .await
        .expect("response");
    let status = resp.status();
    let ctype = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .expect("body");
    (status, ctype, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn the_needs_page_names_each_village() {
    let dir = tempfile::tempdir().expect("tmp");
    let hub = start(dir.path()).await;
    plant_need(&hub, "510116108203", "n1", "水稻育秧");
    plant_need(&hub, "511424102999", "n2", "柑橘修剪");
    let op = Some(("sheng", Role::HubOperator));
    let (s, _, html) = get(&hub, "/needs", op, &[]).await;
    assert_eq!(s, StatusCode::OK, "{html}");
    assert!(html.contains("双流区 › 彭镇 › 岷江村"), "{html}");
    assert!(html.contains("<small class=\"code\">510116108203</small>"));
    assert!(html.contains("511424102999（未知地区）"), "{html}");
    assert!(
        !html.contains("<td>510116108203</td>"),
        "no bare code cell: {html}"
    );
    hub.stop().await.expect("stop");
}

const BROWSER: (&str, &str) = (
    "accept",
    "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
);

#[tokio::test]
async fn a_browser_without_permission_gets_a_chinese_page_and_api_clients_json() {
    let dir = tempfile::tempdir().expect("tmp");
    let hub = start(dir.path()).await;
    let cadre = Some(("cunganbu", Role::Cadre));
    let operator = Some(("sheng", Role::HubOperator));

    // A cadre opens the console; an operator opens the admin page: the zh-CN page.
    for (who, path, why) in [
        (cadre, "/", "村干部账户不能使用省级枢纽"),
        (cadre, "/needs?status=open", "村干部账户不能使用省级枢纽"),
        (operator, "/admin/accounts", "只有管理员可以管理账户"),
    ] {
        let (s, ctype, html) = get(&hub, path, who, &[BROWSER]).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{path}");
        assert!(ctype.starts_with("text/html"), "{path}: {ctype}");
        assert!(
            html.contains("lang=\"zh-CN\"") && html.contains("没有权限") && html.contains(why),
            "{path}: {html}"
        );
        assert!(html.contains("href=\"/login?next="), "{path}: {html}");
        assert!(!html.contains("\"error\""), "{path}: {html}");
    }

    // JSON clients keep JSON: API paths, and pages asked for as JSON.
    for (who, path, accept) in [
        (cadre, "/api/v1/content", BROWSER),
        (cadre, "/", ("accept", "application/json")),
        (operator, "/admin/api/accounts", BROWSER),
    ] {
        let (s, ctype, body) = get(&hub, path, who, &[accept]).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{path}");
        assert!(ctype.starts_with("application/json"), "{path}: {ctype}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert_eq!(v["error"], "forbidden", "{path}: {body}");
    }

    // Without a session a page sends the browser to the login page.
    let (s, _, _) = get(&hub, "/needs", None, &[BROWSER]).await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    hub.stop().await.expect("stop");
}
