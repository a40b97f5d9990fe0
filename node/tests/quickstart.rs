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
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(pos) = line.find("http://") {
                let _ = tx.send(line[pos..].trim().to_string());
                return;
            }
        }
    });
    let url = rx
        .recv_timeout(Duration::from_secs(180))
        .expect("demo printed its URL within 180 s");
    (child, url)
}

fn get_json(url: &str) -> serde_json::Value {
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
            match http.get(url).send().await {
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
    let list = get_json(&format!("{url}/api/v1/households"));
    assert_eq!(list["total"], 300, "300 sample households");
    let first = &list["items"][0];
    assert!(first["head_name"].as_str().is_some_and(|n| !n.is_empty()));
    let health = get_json(&format!("{url}/healthz"));
    assert_eq!(health["status"], "ok");
    drop(child);

    // Second start: the same data, not generated again.
    let (child, url) = start_demo(dir.path());
    let list = get_json(&format!("{url}/api/v1/households"));
    assert_eq!(list["total"], 300);
    drop(child);
}
