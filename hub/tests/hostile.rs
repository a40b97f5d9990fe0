//! Hostile input at the hub's content API, over loopback: traversal in rendition ids (the keys
//! of `files` and the `renditions` of the metadata) and in item ids is refused, nothing is
//! stored, and no file outside the named ones is touched.
#![allow(clippy::unwrap_used)]

mod common;
use common::start_hub;

use std::time::Duration;

use serde_json::{json, Value};

/// Every HTTP call of this file goes through here, logged in as a hub operator.
async fn call(
    hub: &cunyun_hub::RunningHub,
    method: reqwest::Method,
    url: &str,
    body: Option<Value>,
) -> (u16, Value) {
    common::call_json(&common::operator_client(hub).await, method, url, body).await
}

const NAMES: [&str; 9] = [
    "../x",
    "..%2fx",
    "%2e%2e%2fx",
    "..\\x",
    "/etc/passwd",
    "a/../../b",
    "x\u{0}y",
    "....//x",
    "C:\\x",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traversal_in_rendition_and_item_ids_is_refused_and_stores_nothing() {
    let root = tempfile::tempdir().unwrap();
    let hub = start_hub(root.path()).await;
    let url = hub.url();
    // The files sit in the hub's import directory, the only place the API reads from, so what
    // is refused below is the rendition or item id.
    let import = root.path().join("hub").join("import");
    let (main, audio) = (import.join("asf.md"), import.join("asf.opus"));
    std::fs::write(&main, "# 防非洲猪瘟\n").unwrap();
    std::fs::write(&audio, vec![7u8; 100]).unwrap();
    let blobs = root.path().join("hub").join("blobs");
    let count = |dir: &std::path::Path| walk(dir).len();
    let before = count(&blobs);

    for name in NAMES {
        // As the key of `files` and as a rendition id in the metadata.
        let body = json!({
            "meta": {"title": "防非洲猪瘟", "tags": ["liv.asf"], "format": "article",
                     "review_date": "2026-03-01",
                     "renditions": [{"id": name, "format": "audio", "language": "sichuanese"}]},
            "file": "asf.md",
            "files": {name: "asf.opus"},
        });
        let (status, v) = call(
            &hub,
            reqwest::Method::POST,
            &format!("{url}/api/v1/content"),
            Some(body),
        )
        .await;
        assert!(matches!(status, 400 | 422), "{name:?}: {status} {v}");
        // Only as the key of `files`.
        let body = json!({
            "meta": {"title": "防非洲猪瘟", "tags": ["liv.asf"], "format": "article",
                     "review_date": "2026-03-01"},
            "file": "asf.md",
            "files": {name: "asf.opus"},
        });
        let (status, v) = call(
            &hub,
            reqwest::Method::POST,
            &format!("{url}/api/v1/content"),
            Some(body),
        )
        .await;
        assert!(matches!(status, 400 | 422), "{name:?}: {status} {v}");
        // As an item id to delete.
        let enc: String = name.bytes().map(|b| format!("%{b:02X}")).collect();
        let (status, v) = call(
            &hub,
            reqwest::Method::DELETE,
            &format!("{url}/api/v1/content/{enc}"),
            None,
        )
        .await;
        assert!(matches!(status, 400 | 404 | 405), "{name:?}: {status} {v}");
    }
    assert!(hub.hub.library.list().is_empty(), "nothing was added");
    assert_eq!(count(&blobs), before, "nothing reached the blob store");
    assert!(main.exists() && audio.exists());
    assert!(root.path().join("hub").join("content.key").exists());
    hub.stop().await.unwrap();
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// A plain TCP connection from 127.0.0.2 (loopback, a different address from the operator's
/// 127.0.0.1) that sends nothing; whether the hub closed it within `wait`.
async fn flood_connect(to: std::net::SocketAddr, wait: Duration) -> (tokio::net::TcpStream, bool) {
    use tokio::io::AsyncReadExt;
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let mut s = tokio::time::timeout(Duration::from_secs(5), sock.connect(to))
        .await
        .unwrap()
        .unwrap();
    let mut buf = [0u8; 16];
    let closed = matches!(
        tokio::time::timeout(wait, s.read(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    );
    (s, closed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_port_refuses_a_flooding_address_and_serves_the_operator() {
    let root = tempfile::tempdir().unwrap();
    let mut c = cunyun_hub::config::HubConfig::default();
    c.data_dir = root.path().join("hub");
    c.listen = "127.0.0.1:0".parse().unwrap();
    c.http_per_address = cunyun_platform::ratelimit::AddrLimits {
        per_minute: 3,
        concurrent: 2,
        exempt_loopback: false,
    };
    let hub = cunyun_hub::start(&c, std::future::pending()).await.unwrap();
    let short = Duration::from_millis(300);
    let long = Duration::from_secs(5);
    let (a, closed) = flood_connect(hub.addr, short).await;
    assert!(!closed, "first connection admitted");
    let (b, closed) = flood_connect(hub.addr, short).await;
    assert!(!closed, "second connection admitted");
    let (_, closed) = flood_connect(hub.addr, long).await;
    assert!(closed, "a third at once is refused");
    drop((a, b));
    tokio::time::sleep(short).await;
    let (c3, closed) = flood_connect(hub.addr, short).await;
    assert!(!closed, "third in the minute admitted");
    drop(c3);
    tokio::time::sleep(short).await;
    let (_, closed) = flood_connect(hub.addr, long).await;
    assert!(closed, "the fourth in the minute is refused");
    // The operator on 127.0.0.1 is served.
    let (status, _) = call(
        &hub,
        reqwest::Method::GET,
        &format!("{}/healthz", hub.url()),
        None,
    )
    .await;
    assert_eq!(status, 200);
    hub.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_files_are_read_only_from_the_import_directory() {
    let root = tempfile::tempdir().unwrap();
    let hub = start_hub(root.path()).await;
    let url = hub.url();
    let data = root.path().join("hub");
    let outside = root.path().join("secret.md");
    std::fs::write(&outside, "# 不该发布的文件\n").unwrap();
    std::fs::write(data.join("import").join("ok.md"), "# 防非洲猪瘟\n").unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(data.join("content.key"), data.join("import").join("key.md"))
        .unwrap();
    let meta = json!({"title": "防非洲猪瘟", "tags": ["liv.asf"], "format": "article",
                      "review_date": "2026-03-01"});
    let key = data.join("content.key");
    for file in [
        outside.to_str().unwrap(),
        key.to_str().unwrap(),
        "../content.key",
        "../../secret.md",
        "key.md",
        "missing.md",
        "",
    ] {
        let (status, v) = call(
            &hub,
            reqwest::Method::POST,
            &format!("{url}/api/v1/content"),
            Some(json!({"meta": meta, "file": file})),
        )
        .await;
        assert_eq!(status, 422, "{file:?}: {v}");
        assert!(v["message"].as_str().unwrap().contains("导入目录"), "{v}");
    }
    assert!(hub.hub.library.list().is_empty(), "nothing was added");
    let (status, v) = call(
        &hub,
        reqwest::Method::POST,
        &format!("{url}/api/v1/content"),
        Some(json!({"meta": meta, "file": "ok.md"})),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(hub.hub.library.list().len(), 1);
    hub.stop().await.unwrap();
}
