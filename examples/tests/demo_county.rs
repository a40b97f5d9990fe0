//! The README's first command: `demo-county` run as a process in a temporary directory.
//!
//! First run: the printed village app URL accepts the demo login and, within a minute of the demo
//! being ready, a household's recommendations list in the village app is non-empty (the household
//! went village → county → hub, was matched against the seed library and its `rec` came back
//! down) and at least one recommended file has been pushed down and is complete at the village
//! (and is served by the content route). Ctrl-C (SIGINT) stops it cleanly. Second run on
//! the same directory: nothing is generated again, the same households are there and the
//! recommendations are already in the village store.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const HOUSEHOLDS: usize = 20;

/// The running demo; killed (and reaped) on drop so no process outlives the test.
struct Demo {
    child: Child,
    lines: mpsc::Receiver<String>,
    stdout: Vec<String>,
    stderr: Arc<Mutex<String>>,
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Demo {
    fn start(dir: &Path) -> Demo {
        let mut child = Command::new(env!("CARGO_BIN_EXE_demo-county"))
            .args(["--port", "0", "--households", &HOUSEHOLDS.to_string()])
            .arg("--data-dir")
            .arg(dir)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("demo-county starts");
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err = child.stderr.take().expect("stderr");
        let buf = stderr.clone();
        std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n) = err.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                if let Ok(mut b) = buf.lock() {
                    b.push_str(&String::from_utf8_lossy(&chunk[..n]));
                }
            }
        });
        Demo {
            child,
            lines,
            stdout: Vec::new(),
            stderr,
        }
    }

    /// Reads stdout lines until one contains `needle` (bounded by `within`).
    fn wait_line(&mut self, needle: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.stdout.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => break,
            }
        }
        panic!(
            "no line with {needle:?} within {within:?}; stdout: {:#?}; stderr: {}",
            self.stdout,
            self.stderr()
        );
    }

    fn stderr(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// The village app URLs the demo printed (waits for the 「按 Ctrl-C 停止」 line).
    fn village_urls(&mut self) -> Vec<String> {
        self.wait_line("按 Ctrl-C 停止", Duration::from_secs(240));
        self.stdout
            .iter()
            .filter_map(|l| l.split("村干部应用：").nth(1))
            .filter_map(|rest| rest.split_whitespace().next())
            .map(|u| u.trim_end_matches('/').to_string())
            .collect()
    }

    /// SIGINT, as Ctrl-C sends; waits (bounded) for a clean exit.
    fn interrupt(&mut self) {
        let status = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
        self.wait_line("已停止。", Duration::from_secs(30));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                assert!(status.success(), "demo exited with {status}");
                return;
            }
            assert!(Instant::now() < deadline, "demo did not exit after SIGINT");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Logs in as the demo cadre; returns the session cookie.
async fn login(http: &reqwest::Client, url: &str) -> String {
    login_as(http, url, "demo", "demo-2026").await
}

async fn login_as(http: &reqwest::Client, url: &str, name: &str, password: &str) -> String {
    let resp = http
        .post(format!("{url}/api/v1/login"))
        .json(&json!({"name": name, "password": password}))
        .send()
        .await
        .expect("login request");
    assert!(resp.status().is_success(), "login: {}", resp.status());
    let cookie = resp
        .headers()
        .get(reqwest::header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .expect("session cookie")
        .to_string();
    cookie
}

async fn coverage(http: &reqwest::Client, url: &str, cookie: &str) -> Value {
    let resp = http
        .get(format!("{url}/api/v1/coverage"))
        .header(reqwest::header::COOKIE, cookie)
        .send()
        .await
        .expect("coverage request");
    assert!(resp.status().is_success(), "coverage: {}", resp.status());
    resp.json().await.expect("coverage json")
}

async fn get_json(http: &reqwest::Client, url: &str, cookie: &str) -> Value {
    let resp = http
        .get(url)
        .header(reqwest::header::COOKIE, cookie)
        .send()
        .await
        .expect("request");
    assert!(resp.status().is_success(), "{url}: {}", resp.status());
    resp.json().await.expect("json")
}

/// The first non-empty recommendations list of a household of the village, if any.
async fn some_recommendations(http: &reqwest::Client, url: &str, cookie: &str) -> Option<Value> {
    let list = get_json(http, &format!("{url}/api/v1/households"), cookie).await;
    for h in list["items"].as_array()?.iter().take(HOUSEHOLDS) {
        let id = h["id"].as_str()?;
        let recs = get_json(
            http,
            &format!("{url}/api/v1/households/{id}/recommendations"),
            cookie,
        )
        .await;
        if recs["items"].as_array().is_some_and(|i| !i.is_empty()) {
            return Some(recs["items"].clone());
        }
    }
    None
}

/// Polls (at most 300 times, until 60 s after `ready`) until the village app shows a non-empty
/// recommendations list and the village's push-down has at least one file complete. Returns the
/// list and the push-down status.
async fn wait_for_recs_and_a_file(
    http: &reqwest::Client,
    url: &str,
    cookie: &str,
    ready: Instant,
) -> (Value, Value) {
    let deadline = ready + Duration::from_secs(60);
    let (mut recs, mut content) = (None, Value::Null);
    for _ in 0..300 {
        if recs.is_none() {
            recs = some_recommendations(http, url, cookie).await;
        }
        content = get_json(http, &format!("{url}/api/v1/content"), cookie).await;
        let files = content["status"]["complete"].as_u64().unwrap_or(0);
        if let (Some(r), true) = (&recs, files >= 1) {
            return (r.clone(), content);
        }
        if Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("within a minute: recommendations {recs:?}, push-down {content}",);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_county_brings_recommendations_to_a_village_and_reuses_its_data() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join("demo-county");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");

    // First run: everything is created.
    let mut demo = Demo::start(&dir);
    let urls = demo.village_urls();
    assert_eq!(urls.len(), 3, "three village app URLs: {:#?}", demo.stdout);
    assert!(urls.iter().all(|u| u.starts_with("http://127.0.0.1:")));
    // The console line: URL, then the demo operator's login ("登录：name / password").
    let line = demo
        .stdout
        .iter()
        .find_map(|l| l.split("省级枢纽控制台：").nth(1))
        .expect("console URL printed")
        .to_string();
    let console = line.split_whitespace().next().expect("URL").to_string();
    assert!(console.starts_with("http://127.0.0.1:"), "{console}");
    let creds = line.split("登录：").nth(1).expect("operator login printed");
    let mut creds = creds.split(['/', '（']).map(str::trim);
    let (name, password) = (creds.next().expect("name"), creds.next().expect("password"));
    let hub_cookie = login_as(&http, console.trim_end_matches('/'), name, password).await;
    let page = http
        .get(&console)
        .header(reqwest::header::COOKIE, &hub_cookie)
        .send()
        .await
        .expect("console request");
    assert!(page.status().is_success(), "console: {}", page.status());
    let body = page.text().await.expect("console body");
    assert!(
        body.contains("村云省级枢纽") && body.contains("内容库"),
        "the logged-in console: {body}"
    );
    let ready = Instant::now();
    let cookie = login(&http, &urls[1]).await;
    let (recs, content) = wait_for_recs_and_a_file(&http, &urls[1], &cookie, ready).await;
    eprintln!(
        "recommendations and a pushed-down file in the village {:.1} s after the demo was ready: {content}",
        ready.elapsed().as_secs_f64()
    );
    assert!(
        content["status"]["planned"].as_u64().unwrap_or(0) >= 1,
        "{content}"
    );
    let item = &recs[0];
    let file = http
        .get(format!(
            "{}{}",
            urls[1],
            item["file"].as_str().expect("file link")
        ))
        .send()
        .await
        .expect("file request");
    assert_eq!(file.status().as_u16(), 200, "{item}");
    let bytes = file.bytes().await.expect("file bytes");
    assert_eq!(Some(bytes.len() as u64), item["bytes"].as_u64(), "{item}");
    let cov = coverage(&http, &urls[1], &cookie).await;
    assert_eq!(cov["households"], json!(HOUSEHOLDS));
    assert!(
        cov["with_recommendations"].as_u64().unwrap_or(0) >= 1,
        "{cov}"
    );
    demo.wait_line("已生成推荐", Duration::from_secs(30));
    let err = demo.stderr();
    assert!(err.contains("首次运行：已向资源库加入"), "{err}");
    assert!(dir.join("province-ca").join("ca.key").exists());
    assert!(dir.join("county").join("ca").join("ca.crt").exists());
    demo.interrupt();
    drop(demo);

    // Second run: the same certificates, library and households.
    let mut demo = Demo::start(&dir);
    let urls = demo.village_urls();
    assert_eq!(urls.len(), 3);
    let err = demo.stderr();
    assert!(
        !err.contains("首次运行"),
        "second run regenerated data: {err}"
    );
    assert!(err.contains("已有的证书和数据"), "{err}");
    let cookie = login(&http, &urls[1]).await;
    let again = coverage(&http, &urls[1], &cookie).await;
    assert_eq!(again["households"], json!(HOUSEHOLDS), "{again}");
    assert!(
        again["with_recommendations"].as_u64().unwrap_or(0) >= 1,
        "the recommendations were kept: {again}"
    );
    demo.interrupt();
}
