//! `DELETE /api/v1/households/{id}` as a client sees it, on a county-scope node holding two
//! villages: only a cadre of the household's village may delete it (`403` otherwise), a reason
//! and the zh-CN confirmation are required (nothing changes without them), and a deletion
//! removes the household's documents and leaves its tombstone. The operator's CLI
//! (`cunyun-node delete-household`) does the same on a stopped node and vacuums at once.

use std::time::Duration;

use cunyun_node::config::NodeConfig;
use cunyun_node::server::{self, RunningNode};
use cunyun_protocol::area::AreaScope;
use cunyun_protocol::key::{DocKey, Kind};
use serde_json::{json, Value};

const COUNTY: &str = "510116";
const VILLAGE_A: &str = "510116108203";
const VILLAGE_B: &str = "510116108204";
const PASSWORD: &str = "村干部的密码2026";

fn config(dir: &std::path::Path) -> NodeConfig {
    let mut c = NodeConfig::default();
    c.data_dir = dir.to_path_buf();
    c.listen = "127.0.0.1:0".parse().expect("addr");
    c.scope = AreaScope::parse(COUNTY).expect("scope");
    c
}

async fn start(dir: &std::path::Path) -> RunningNode {
    let accounts = cunyun_platform::accounts::Accounts::open(dir).expect("accounts");
    accounts.add("cadre_a", VILLAGE_A, PASSWORD).expect("add a");
    accounts.add("cadre_b", VILLAGE_B, PASSWORD).expect("add b");
    drop(accounts);
    server::start(&config(dir), std::future::pending())
        .await
        .expect("node starts")
}

/// The one client helper of this file: logged in as `name`, sending the session cookie (and the
/// CSRF token, when the server sets one) on every request.
async fn client(url: &str, name: &str) -> reqwest::Client {
    let anon = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client");
    let resp = anon
        .post(format!("{url}/api/v1/login"))
        .json(&json!({"name": name, "password": PASSWORD}))
        .send()
        .await
        .expect("login");
    assert_eq!(resp.status().as_u16(), 200, "login succeeds");
    let mut pairs = Vec::new();
    let mut csrf = None;
    for v in resp.headers().get_all(reqwest::header::SET_COOKIE) {
        let pair = v
            .to_str()
            .expect("cookie")
            .split(';')
            .next()
            .expect("pair")
            .to_string();
        if let Some(token) = pair.strip_prefix("cunyun_csrf=") {
            csrf = Some(token.to_string());
        }
        pairs.push(pair);
    }
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::COOKIE,
        reqwest::header::HeaderValue::from_str(&pairs.join("; ")).expect("header"),
    );
    if let Some(token) = csrf {
        headers.insert(
            "x-csrf-token",
            reqwest::header::HeaderValue::from_str(&token).expect("header"),
        );
    }
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .default_headers(headers)
        .build()
        .expect("client")
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

fn kinds_of(node: &RunningNode, id: &str) -> Vec<Kind> {
    node.state
        .records
        .store()
        .scan(&AreaScope::parse(COUNTY).expect("scope"))
        .map(|r| r.expect("scan").0)
        .filter(|k| k.id() == id)
        .map(|k| k.kind())
        .collect()
}

#[tokio::test]
async fn only_the_villages_cadre_deletes_with_reason_and_confirmation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start(dir.path()).await;
    let url = node.url();
    let record = node
        .state
        .records
        .create_household(
            "cadre_b",
            &json!({"profile": {"village": VILLAGE_B, "group": 1, "residents": 2},
                    "private": {"head_name": "李四", "notes": "APIDELMARK"}}),
        )
        .await
        .expect("create");
    let id = record.id.clone();
    let at = format!("{url}/api/v1/households/{id}");
    let ok_body = json!({"reason": "withdrawn", "confirm": "确认删除"});

    // Another village's cadre: 403, nothing changes.
    let a = client(&url, "cadre_a").await;
    let (status, body) = send(a.delete(&at).json(&ok_body)).await;
    assert_eq!(status, 403, "{body}");
    assert!(
        has_chinese(body["message"].as_str().unwrap_or("")),
        "{body}"
    );
    assert_eq!(kinds_of(&node, &id), [Kind::Hh, Kind::Hp]);

    // The village's cadre, without confirmation or with a bad reason: refused, nothing changes.
    let b = client(&url, "cadre_b").await;
    for (bad, code) in [
        (json!({"reason": "withdrawn"}), 400),
        (json!({"reason": "withdrawn", "confirm": "yes"}), 400),
        (json!({"reason": "bored", "confirm": "确认删除"}), 422),
        (json!({"confirm": "确认删除"}), 422),
    ] {
        let (status, body) = send(b.delete(&at).json(&bad)).await;
        assert_eq!(status, code, "{bad} → {body}");
        assert!(
            has_chinese(body["message"].as_str().unwrap_or("")),
            "{body}"
        );
    }
    let (status, _) = send(b.delete(&at).body("not json")).await;
    assert_eq!(status, 400);
    assert_eq!(kinds_of(&node, &id), [Kind::Hh, Kind::Hp]);

    // Deleted: documents gone, tombstone kept, the record is no longer found.
    let (status, body) = send(b.delete(&at).json(&ok_body)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["deleted"], id);
    assert_eq!(body["reason"], "withdrawn");
    assert_eq!(body["by"], "cadre_b");
    assert_eq!(kinds_of(&node, &id), [Kind::Del]);
    let (status, _) = send(b.get(&at)).await;
    assert_eq!(status, 404);
    let (status, _) = send(b.delete(&at).json(&ok_body)).await;
    assert_eq!(status, 404);
    let (_, list) = send(b.get(format!("{url}/api/v1/households"))).await;
    assert_eq!(list["items"].as_array().map(Vec::len), Some(0), "{list}");
    node.stop().await.expect("stop");
}

#[tokio::test]
async fn the_operators_cli_deletes_on_a_stopped_node_and_vacuums() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start(dir.path()).await;
    let record = node
        .state
        .records
        .create_household(
            "cadre_a",
            &json!({"profile": {"village": VILLAGE_A, "group": 1, "residents": 2},
                    "private": {"notes": "CLIDELMARK"}}),
        )
        .await
        .expect("create");
    node.stop().await.expect("stop");
    let bin = env!("CARGO_BIN_EXE_cunyun-node");
    let run = |confirm: &str| {
        use std::io::Write;
        let mut child = std::process::Command::new(bin)
            .args(["delete-household", "--data-dir"])
            .arg(dir.path())
            .args(["--village", VILLAGE_A, "--id", &record.id])
            .args(["--reason", "mistake", "--by", "县运维"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(format!("{confirm}\n").as_bytes())
            .expect("write");
        child.wait_with_output().expect("wait")
    };
    let contains = |needle: &str| {
        fn walk(p: &std::path::Path, needle: &[u8]) -> bool {
            std::fs::read_dir(p)
                .into_iter()
                .flatten()
                .flatten()
                .any(|e| {
                    let p = e.path();
                    if p.is_dir() {
                        walk(&p, needle)
                    } else {
                        std::fs::read(&p)
                            .map(|b| b.windows(needle.len()).any(|w| w == needle))
                            .unwrap_or(false)
                    }
                })
        }
        walk(dir.path(), needle.as_bytes())
    };
    assert!(contains("CLIDELMARK"));
    // Not confirmed: nothing happens.
    let out = run("好的");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("未确认"));
    assert!(contains("CLIDELMARK"));
    let out = run("确认删除");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("已删除"));
    assert!(!contains("CLIDELMARK"), "the deleted data is still on disk");
    let node = start_again(dir.path()).await;
    let del = DocKey::parse(&format!("{VILLAGE_A}/del/{}", record.id)).expect("key");
    let tomb = node
        .state
        .records
        .store()
        .load(&del)
        .expect("load")
        .expect("tombstone");
    let t = cunyun_protocol::deletion::Tombstone::read_from(&tomb, &del).expect("valid");
    assert_eq!(t.by, "县运维");
    assert_eq!(kinds_of(&node, &record.id), [Kind::Del]);
    node.stop().await.expect("stop");
}

async fn start_again(dir: &std::path::Path) -> RunningNode {
    server::start(&config(dir), std::future::pending())
        .await
        .expect("node starts")
}
