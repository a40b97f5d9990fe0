//! The README's first command, as a new user runs it: `cunyun-node demo` starts a node with a
//! generated sample village on embedded storage and prints its URL; the API then lists the
//! households. A second start reuses the data instead of generating it again.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the demo and returns the child and the URL it printed.
fn start_demo(dir: &std::path::Path) -> (KillOnDrop, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cunyun-node"))
        .args([
            "demo",
            "--listen",
            "127.0.0.1:0",
            "--households",
            "300",
            "--data-dir",
        ])
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn cunyun-node demo");
    let stdout = child.stdout.take().expect("stdout");
    let child = KillOnDrop(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // Keep draining stdout after the URL: a closed pipe would kill the demo at its next line.
        let mut sent = false;
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(pos) = line.find("http://") {
                if !sent {
                    let _ = tx.send(line[pos..].trim().to_string());
                    sent = true;
                }
            }
        }
    });
    let url = rx
        .recv_timeout(Duration::from_secs(180))
        .expect("demo printed its URL within 180 s");
    (child, url)
}

/// Logs in as the demo cadre the demo printed and returns the session cookie pair.
fn demo_login(url: &str) -> String {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let resp = reqwest::Client::new()
            .post(format!("{url}/api/v1/login"))
            .json(&serde_json::json!({"name": "demo", "password": "demo-2026"}))
            .send()
            .await
            .expect("login");
        assert_eq!(resp.status().as_u16(), 200);
        let cookie = resp
            .headers()
            .get(reqwest::header::SET_COOKIE)
            .and_then(|v| v.to_str().ok())
            .expect("cookie");
        cookie.split(';').next().expect("pair").to_string()
    })
}

fn get_json(url: &str, cookie: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client");
        loop {
            match http.get(url).header("cookie", cookie).send().await {
                Ok(r) => return r.json().await.expect("json"),
                Err(e) if Instant::now() < deadline => {
                    eprintln!("retrying {url}: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("{url}: {e}"),
            }
        }
    })
}

#[test]
fn demo_serves_a_sample_village() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (child, url) = start_demo(dir.path());
    let cookie = demo_login(&url);
    let list = get_json(&format!("{url}/api/v1/households?limit=500"), &cookie);
    assert_eq!(
        list["items"].as_array().map(Vec::len),
        Some(300),
        "300 sample households"
    );
    assert!(list["next_cursor"].is_null(), "one page of 500 holds them");
    let first = &list["items"][0];
    assert!(first["head_name"].as_str().is_some_and(|n| !n.is_empty()));
    let health = get_json(&format!("{url}/healthz"), "");
    assert_eq!(health["status"], "ok");
    drop(child);

    // Second start: the same data, not generated again.
    let (child, url) = start_demo(dir.path());
    let list = get_json(
        &format!("{url}/api/v1/households?limit=500"),
        &demo_login(&url),
    );
    assert_eq!(list["items"].as_array().map(Vec::len), Some(300));
    drop(child);
}

#[test]
fn user_add_reads_the_password_from_stdin_and_refuses_bad_input() {
    use std::io::Write as _;
    let dir = tempfile::tempdir().expect("tempdir");
    let run = |args: &[&str], stdin: &str| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_cunyun-node"))
            .args(["user"])
            .args(args)
            .arg("--data-dir")
            .arg(dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin.as_bytes())
            .expect("write");
        child.wait_with_output().expect("wait")
    };
    let ok = run(
        &[
            "add",
            "--name",
            "wangli",
            "--village",
            "510116108203",
            "--password-stdin",
        ],
        "一个足够长的密码\n",
    );
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let short = run(&["add", "--name", "lisi", "--password-stdin"], "short\n");
    assert!(!short.status.success());
    assert!(String::from_utf8_lossy(&short.stderr).contains("密码至少"));
    let again = run(
        &["add", "--name", "wangli", "--password-stdin"],
        "another long one\n",
    );
    assert!(!again.status.success(), "duplicate refused");
    let list = run(&["list"], "");
    let out = String::from_utf8_lossy(&list.stdout).to_string();
    assert!(out.contains("wangli") && !out.contains("lisi"), "{out}");
    let accounts = cunyun_platform::accounts::Accounts::open(dir.path()).expect("open");
    let session = accounts
        .login("wangli", "一个足够长的密码")
        .expect("the password read from stdin logs in")
        .token;

    // Roles and scopes.
    let op = run(
        &[
            "add",
            "--name",
            "xian",
            "--role",
            "county_operator",
            "--scope",
            "510116",
            "--password-stdin",
        ],
        "county-password\n",
    );
    assert!(
        op.status.success(),
        "{}",
        String::from_utf8_lossy(&op.stderr)
    );
    assert!(String::from_utf8_lossy(&op.stdout).contains("县级运维"));
    let bad = run(
        &[
            "add",
            "--name",
            "x2",
            "--role",
            "county_operator",
            "--scope",
            "510116108203",
            "--password-stdin",
        ],
        "county-password\n",
    );
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("县级运维的管辖范围应为6位县级代码"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    let bad = run(&["add", "--name", "x3", "--role", "boss"], "");
    assert!(String::from_utf8_lossy(&bad.stderr).contains("未知角色"));

    // Disable ends the open session at once; enable, passwd, remove.
    let off = run(&["disable", "--name", "wangli"], "");
    assert!(
        off.status.success(),
        "{}",
        String::from_utf8_lossy(&off.stderr)
    );
    assert!(String::from_utf8_lossy(&off.stdout).contains("已停用"));
    assert_eq!(accounts.session(&session), None, "disabled: session dead");
    assert!(run(&["enable", "--name", "wangli"], "").status.success());
    let pw = run(
        &["passwd", "--name", "wangli", "--password-stdin"],
        "新的足够长的密码\n",
    );
    assert!(
        pw.status.success(),
        "{}",
        String::from_utf8_lossy(&pw.stderr)
    );
    assert!(accounts.login("wangli", "一个足够长的密码").is_err());
    accounts
        .login("wangli", "新的足够长的密码")
        .expect("new password works");
    assert!(run(&["remove", "--name", "xian"], "").status.success());
    let none = run(&["remove", "--name", "nobody"], "");
    assert!(!none.status.success());
    assert!(String::from_utf8_lossy(&none.stderr).contains("没有账户"));
    let out = String::from_utf8_lossy(&run(&["list"], "").stdout).to_string();
    assert!(out.contains("wangli") && !out.contains("xian"), "{out}");
    let log = std::fs::read_to_string(dir.path().join("audit.jsonl")).expect("audit log");
    for action in [
        "account_add",
        "account_disable",
        "account_enable",
        "account_passwd",
        "account_remove",
    ] {
        assert!(log.contains(action), "{action} in {log}");
    }
}
