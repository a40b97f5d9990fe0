//! Benchmark `webapp`: the cadre app on a low-end phone's terms.
//!
//! - `shell_bytes_compressed`: bytes on the wire (status line, headers and body) for the first
//!   load of every file of the app shell (`cunyun_node::webapp::shell_paths`), requested with
//!   `Accept-Encoding: gzip, br` as a browser does. Target ≤ 300 KB.
//! - `list_1000_render_ms`: a node with 1,000 sample households; headless Chromium at 360×640
//!   logs in and opens the household list, loading all 1,000 rows page by page with 「加载更多」;
//!   then the page re-renders the full list nine times
//!   (`window.cunyun.renderListMs()`, timed with `performance.now()` including layout) and the
//!   median is reported. Target ≤ 500 ms.

use anyhow::{bail, Context};
use cunyun_node::config::NodeConfig;
use cunyun_node::server;
use cunyun_protocol::area::{AreaCode, AreaScope};
use serde_json::json;

use super::{emit, progress, quantile};
use crate::browser::{self, Driver};

const VILLAGE: &str = "510116108203";
const HOUSEHOLDS: usize = 1000;
const RENDERS: usize = 9;

/// Fetches `path` with raw HTTP/1.1 and returns the bytes received (headers and body).
async fn wire_bytes(addr: std::net::SocketAddr, path: &str) -> anyhow::Result<usize> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.write_all(
        format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept-Encoding: gzip, br\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await?;
    let mut raw = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tcp.read_to_end(&mut raw),
    )
    .await
    .context("shell request timed out")??;
    let head = String::from_utf8_lossy(&raw[..raw.len().min(400)]).to_string();
    if !head.starts_with("HTTP/1.1 200") {
        bail!("{path}: {head}");
    }
    Ok(raw.len())
}

async fn bench() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let accounts = cunyun_platform::accounts::Accounts::open(dir.path())?;
    accounts.add("bench", VILLAGE, "bench-password")?;
    let mut c = NodeConfig::default();
    c.data_dir = dir.path().to_path_buf();
    c.listen = "127.0.0.1:0".parse()?;
    c.scope = AreaScope::parse(VILLAGE)?;
    let node = server::start(&c, std::future::pending()).await?;

    let mut shell = 0;
    for path in cunyun_node::webapp::shell_paths() {
        shell += wire_bytes(node.addr, path).await?;
    }
    progress("webapp", &format!("app shell: {shell} bytes on the wire"));
    emit("webapp", "shell_bytes_compressed", shell as f64, "B");

    if !browser::available() {
        bail!(
            "list_1000_render_ms needs {} and {}",
            browser::CHROMIUM,
            browser::CHROMEDRIVER
        );
    }
    progress("webapp", &format!("seeding {HOUSEHOLDS} households"));
    server::seed_sample_village(
        &node.state.records,
        "bench",
        AreaCode::parse(VILLAGE)?,
        HOUSEHOLDS,
        7,
        |_, _| {},
    )
    .await?;
    let driver = Driver::start().await?;
    let s = driver.session(&dir.path().join("profile")).await?;
    let url = node.url();
    browser::login(&s, &url, "bench", "bench-password").await?;
    s.goto(&format!("{url}/#/households")).await?;
    // The node pages the list: the first page, then 「加载更多」 until every row is shown.
    let rows = "document.querySelectorAll('#hlist li').length";
    for page in 1..=HOUSEHOLDS.div_ceil(100) {
        let want = (page * 100).min(HOUSEHOLDS);
        s.wait(&format!("{rows} === {want}"), 60).await?;
        if want < HOUSEHOLDS {
            s.click("#hmore").await?;
        }
    }
    s.wait("document.querySelector('#hmore').hidden", 20)
        .await?;
    let mut samples = Vec::new();
    for _ in 0..RENDERS {
        let ms = s
            .js("return window.cunyun.renderListMs()", json!([]))
            .await?
            .as_f64()
            .context("render time")?;
        samples.push(ms);
    }
    progress("webapp", &format!("list renders (ms): {samples:.1?}"));
    emit(
        "webapp",
        "list_1000_render_ms",
        quantile(&mut samples, 0.5),
        "ms",
    );
    s.close().await?;
    drop(driver);
    node.stop().await?;
    Ok(())
}

/// Runs the benchmark.
pub fn run() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(bench())
}
