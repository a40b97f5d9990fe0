//! Logins on the hub: every route but `/healthz` and `/metrics` needs a hub operator or admin,
//! writes need the CSRF token, logins are rate-limited, admins manage accounts and read the
//! audit log.

mod common;

use cunyun_platform::accounts::{Role, MAX_FAILURES};
use serde_json::{json, Value};

const PASSWORD: &str = "足够长的测试密码";

async fn send(req: reqwest::RequestBuilder) -> (u16, Value) {
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    (status, resp.json::<Value>().await.unwrap_or(Value::Null))
}

fn plain() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(20))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

#[tokio::test]
async fn every_route_but_health_and_metrics_needs_an_operator() {
    let root = tempfile::tempdir().expect("tempdir");
    let hub = common::start_hub(root.path()).await;
    let url = hub.url();
    let anon = plain();

    for path in ["/healthz", "/metrics", "/login"] {
        let resp = anon.get(format!("{url}{path}")).send().await.expect("get");
        assert_eq!(resp.status().as_u16(), 200, "{path} is open");
    }
    for path in [
        "/api/v1/content",
        "/api/v1/experts",
        "/api/v1/coverage",
        "/api/v1/coverage.csv",
        "/api/v1/content.csv",
        "/api/v1/sync",
        "/api/v1/push-plan?village=511424104201&budget_mb=1",
    ] {
        let (s, body) = send(anon.get(format!("{url}{path}"))).await;
        assert_eq!(
            (s, body["error"].as_str()),
            (401, Some("unauthenticated")),
            "{path}"
        );
    }
    let (s, _) = send(anon.post(format!("{url}/api/v1/match"))).await;
    assert_eq!(s, 401);
    let resp = anon.get(format!("{url}/")).send().await.expect("console");
    assert_eq!(
        resp.status().as_u16(),
        303,
        "the console sends the browser to log in"
    );
    assert!(resp.headers()["location"]
        .to_str()
        .expect("location")
        .starts_with("/login"));
    let page = anon
        .get(format!("{url}/login"))
        .send()
        .await
        .expect("login page")
        .text()
        .await
        .expect("text");
    assert!(page.contains("村云省级枢纽 · 登录") && page.contains("lang=\"zh-CN\""));

    // A hub operator: reads, and writes with the CSRF token only.
    let op = common::operator_client(&hub).await;
    let (s, _) = send(op.get(format!("{url}/api/v1/content"))).await;
    assert_eq!(s, 200);
    let resp = op.get(format!("{url}/")).send().await.expect("console");
    assert_eq!(resp.status().as_u16(), 200);
    let (s, body) = send(op.post(format!("{url}/api/v1/match"))).await;
    assert_eq!(s, 200, "{body}");
    let expert = json!({"name": "李明", "organisation": "眉山市农业科学研究院", "title": "研究员",
        "fields": {"plt.citrus": true}, "regions": {"511424": true}, "services": {"onsite": true}});
    let (s, body) = send(
        op.post(format!("{url}/api/v1/experts"))
            .header("x-csrf-token", "wrong")
            .json(&expert),
    )
    .await;
    assert_eq!((s, body["error"].as_str()), (403, Some("csrf")), "{body}");
    let (s, body) = send(
        op.post(format!("{url}/api/v1/experts"))
            .header("origin", "http://evil.example")
            .json(&expert),
    )
    .await;
    assert_eq!((s, body["error"].as_str()), (403, Some("csrf")), "{body}");
    let (_, list) = send(op.get(format!("{url}/api/v1/experts"))).await;
    assert_eq!(
        list.to_string().matches("李明").count(),
        0,
        "nothing stored: {list}"
    );
    let (s, body) = send(op.post(format!("{url}/api/v1/experts")).json(&expert)).await;
    assert_eq!(s, 201, "{body}");
    // Operators do not manage accounts.
    let (s, body) = send(op.get(format!("{url}/admin/api/accounts"))).await;
    assert_eq!(s, 403, "{body}");

    // A cadre account is refused on the hub, in Chinese.
    hub.hub
        .accounts
        .add("cunganbu", "511424104201", PASSWORD)
        .expect("cadre");
    let cadre = common::login_client(&hub, "cunganbu", PASSWORD).await;
    let (s, body) = send(cadre.get(format!("{url}/api/v1/content"))).await;
    assert_eq!(s, 403);
    assert!(body["message"]
        .as_str()
        .expect("message")
        .contains("省级运维"));

    // Logout ends the session.
    let (s, _) = send(op.post(format!("{url}/api/v1/logout"))).await;
    assert_eq!(s, 200);
    let (s, _) = send(op.get(format!("{url}/api/v1/content"))).await;
    assert_eq!(s, 401);
}

#[tokio::test]
async fn logins_are_rate_limited() {
    let root = tempfile::tempdir().expect("tempdir");
    let hub = common::start_hub(root.path()).await;
    let url = hub.url();
    hub.hub
        .accounts
        .create("test", "sheng", Role::HubOperator, "51", PASSWORD)
        .expect("operator");
    let login = |password: &'static str| {
        plain()
            .post(format!("{url}/api/v1/login"))
            .json(&json!({"name": "sheng", "password": password}))
    };
    for _ in 0..MAX_FAILURES {
        let (s, body) = send(login("wrong-password")).await;
        assert_eq!((s, body["error"].as_str()), (401, Some("bad_credentials")));
    }
    let (s, body) = send(login(PASSWORD)).await;
    assert_eq!((s, body["error"].as_str()), (429, Some("locked")), "{body}");
    assert!(body["message"]
        .as_str()
        .expect("message")
        .contains("登录失败次数过多"));
    let failed = hub
        .hub
        .accounts
        .audit()
        .read(&cunyun_platform::audit::AuditFilter {
            what: Some("login_failed".into()),
            ..Default::default()
        })
        .expect("audit");
    assert_eq!(
        failed.len(),
        MAX_FAILURES + 1,
        "every refused login is audited"
    );
}

#[tokio::test]
async fn admins_manage_hub_accounts_and_read_the_audit_log() {
    let root = tempfile::tempdir().expect("tempdir");
    let hub = common::start_hub(root.path()).await;
    let url = hub.url();
    hub.hub
        .accounts
        .create("test", "guanli", Role::Admin, "51", PASSWORD)
        .expect("admin");
    let admin = common::login_client(&hub, "guanli", PASSWORD).await;
    // An admin may use the operator routes too.
    let (s, _) = send(admin.get(format!("{url}/api/v1/content"))).await;
    assert_eq!(s, 200);
    let page = admin
        .get(format!("{url}/admin/accounts"))
        .send()
        .await
        .expect("page")
        .text()
        .await
        .expect("text");
    assert!(
        page.contains("账户管理") && page.contains("guanli"),
        "{page}"
    );
    let (s, body) = send(admin.post(format!("{url}/admin/api/accounts")).json(
        &json!({"name": "sheng2", "role": "hub_operator", "scope": "51", "password": PASSWORD}),
    ))
    .await;
    assert_eq!(s, 201, "{body}");
    let (s, body) = send(admin.post(format!("{url}/admin/api/accounts")).json(
        &json!({"name": "sheng3", "role": "hub_operator", "scope": "510116", "password": PASSWORD}),
    ))
    .await;
    assert_eq!(s, 422, "a hub operator's scope is a province: {body}");
    let op = common::login_client(&hub, "sheng2", PASSWORD).await;
    let (s, _) = send(op.get(format!("{url}/api/v1/content"))).await;
    assert_eq!(s, 200);
    let (s, _) = send(admin.post(format!("{url}/admin/api/accounts/sheng2/disable"))).await;
    assert_eq!(s, 200);
    let (s, _) = send(op.get(format!("{url}/api/v1/content"))).await;
    assert_eq!(s, 401, "the disabled operator's session ended at once");

    let page = admin
        .get(format!("{url}/admin/audit?what=account"))
        .send()
        .await
        .expect("audit")
        .text()
        .await
        .expect("text");
    assert!(
        page.contains("<td>新建账户</td>") && page.contains("<td>停用账户</td>"),
        "{page}"
    );
    let csv = admin
        .get(format!("{url}/admin/audit.csv?who=sheng2"))
        .send()
        .await
        .expect("csv")
        .text()
        .await
        .expect("text");
    assert!(csv.contains(",sheng2,登录,login,sheng2,成功"), "{csv}");
    assert!(!csv.contains(",guanli,"), "{csv}");
}

// Multi-threaded: the test blocks on the CLI processes while the hub answers them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_manages_hub_accounts_and_logs_in_to_call_the_hub() {
    use std::io::Write as _;
    let root = tempfile::tempdir().expect("tempdir");
    let hub = common::start_hub(root.path()).await;
    let data_dir = root.path().join("hub");
    let run = |args: &[&str], stdin: &str, env: Option<&str>| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_cunyun-hub"));
        cmd.args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .env_remove("CUNYUN_HUB_PASSWORD");
        if let Some(p) = env {
            cmd.env("CUNYUN_HUB_PASSWORD", p);
        }
        let mut child = cmd.spawn().expect("spawn");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin.as_bytes())
            .expect("write");
        let out = child.wait_with_output().expect("wait");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let dd = data_dir.to_str().expect("path");
    let (ok, out, err) = run(
        &[
            "user",
            "add",
            "--data-dir",
            dd,
            "--name",
            "sheng",
            "--role",
            "hub_operator",
            "--scope",
            "51",
            "--password-stdin",
        ],
        &format!("{PASSWORD}\n"),
        None,
    );
    assert!(ok, "{err}");
    assert!(out.contains("省级运维"), "{out}");
    let (ok, _, err) = run(
        &[
            "user",
            "add",
            "--data-dir",
            dd,
            "--name",
            "x",
            "--role",
            "hub_operator",
        ],
        "",
        None,
    );
    assert!(!ok && err.contains("--scope"), "{err}");
    let url = hub.url();
    let (ok, out, err) = run(
        &["content", "list", "--hub", &url, "--user", "sheng"],
        "",
        Some(PASSWORD),
    );
    assert!(ok, "{err}");
    assert!(out.contains("资源库共0条"), "{out}");
    let (ok, _, err) = run(
        &["match", "--hub", &url, "--user", "sheng"],
        &format!("{PASSWORD}\n"),
        None,
    );
    assert!(ok, "password from stdin: {err}");
    let (ok, _, err) = run(
        &["match", "--hub", &url, "--user", "sheng"],
        "wrong-password\n",
        None,
    );
    assert!(!ok && err.contains("登录枢纽失败"), "{err}");
    let (ok, out, _) = run(
        &["user", "disable", "--data-dir", dd, "--name", "sheng"],
        "",
        None,
    );
    assert!(ok && out.contains("已停用"), "{out}");
    let (ok, _, err) = run(
        &["match", "--hub", &url, "--user", "sheng"],
        "",
        Some(PASSWORD),
    );
    assert!(!ok && err.contains("停用"), "{err}");
}
