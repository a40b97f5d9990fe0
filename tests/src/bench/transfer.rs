//! Benchmark `transfer`: a 30 MB content file pushed down from the hub to a village over an
//! emulated mountain link (200 ms RTT, 1 Mbit/s each way).
//!
//! # Scenario
//!
//! The hub's blob store holds a 30,000,000-byte file (pseudo-random, so nothing compresses or
//! dedupes), chunked at the default 256 KiB and described by a hub-signed manifest. The hub
//! serves it with the node's `serve_over` behind a real mutual-TLS accept (the same code the
//! sync listener runs for the blob ALPN); the village calls `fetch_wanted` through
//! [`LinkEmulator`] with [`LinkConfig::village`], into its own on-disk blob store (every chunk
//! verified against the manifest and written with fsync). The clock runs from the call to
//! `fetch_wanted` — TCP connect, TLS handshake and manifest included — to its return, after the
//! whole file was re-read and its whole-file hash checked.
//!
//! # Metrics
//!
//! - `link_utilisation` = file bytes × 8 / (elapsed × 1,000,000 bit/s): the share of the
//!   link's rate that carried file content. Target ≥ 0.9.
//! - `elapsed_s`: the fetch's wall time.
//! - `wire_bytes_down` / `wire_bytes_up`: bytes the emulator delivered hub → village and back
//!   (TLS records, frames, credits and the handshake included); `wire_overhead` =
//!   `wire_bytes_down` / file bytes − 1.
//!
//! `CUNYUN_BENCH_TRANSFER_MB` sets the file size in MB (default 30) for quick runs; at 1 Mbit/s
//! the default takes about 4 minutes by nature.

use std::time::{Duration, Instant};

use anyhow::Context;
use cunyun_platform::blobs::{self, BlobStore, TransferLimits};
use cunyun_platform::certs::tls::TlsContext;
use cunyun_protocol::area::AreaScope;
use cunyun_protocol::identity::{NodeId, NodeIdentity};
use cunyun_protocol::key::Role;
use cunyun_protocol::manifest::{ContentManifest, SigningKey, TrustedKeys};

use super::{emit, progress};
use crate::link::{Direction, LinkConfig, LinkEmulator};

const BENCH: &str = "transfer";

fn tls(
    root: &std::path::Path,
    name: &str,
    n: u8,
    role: Role,
    scope: &str,
) -> anyhow::Result<TlsContext> {
    let id = NodeIdentity {
        node_id: NodeId([n; 16]),
        role,
        scope: AreaScope::parse(scope)?,
    };
    let dir = root.join(name).join("tls");
    cunyun_platform::certs::tls::init_dev_identity(&root.join("ca"), &dir, &id)?;
    Ok(TlsContext::load(&dir, Default::default())?)
}

/// Runs the benchmark and prints its metrics.
pub fn run() -> anyhow::Result<()> {
    let mb: u64 = std::env::var("CUNYUN_BENCH_TRANSFER_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let size = (mb * 1_000_000) as usize;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run_async(size))
}

async fn run_async(size: usize) -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let root = root.path();
    let key = SigningKey::from_bytes(&[42; 32]);
    let mut trusted = TrustedKeys::new();
    trusted.add(key.verifying_key());
    let hub_tls = tls(root, "hub", 1, Role::Hub, "51")?;
    let village_tls = tls(root, "village", 3, Role::Village, "510116108203")?;
    let (hub, _) = BlobStore::open(&root.join("hub/blobs"), 1 << 40, trusted.clone())?;
    let (village, _) = BlobStore::open(&root.join("village/blobs"), 1 << 40, trusted)?;

    progress(BENCH, &format!("publishing a {size}-byte file at the hub"));
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let data: Vec<u8> = (0..size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    let file = root.join("video.mp4");
    std::fs::write(&file, &data)?;
    let rendition = hub.put_file(&file, "video.mp4", "video/mp4")?;
    let meta = serde_json::to_vec(&serde_json::json!({ "title": "柑橘病虫害绿色防控" }))?;
    let manifest = ContentManifest::sign(meta, vec![rendition], 1_764_000_000_000, &key)?;
    hub.put_manifest(&manifest)?;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let hub_addr = listener.local_addr()?;
    let serving = {
        let hub = hub.clone();
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.context("accept")?;
            let (stream, _) = hub_tls.accept(tcp).await?;
            let limits = TransferLimits {
                idle: Duration::from_secs(60),
            };
            let (stats, result) = blobs::serve_over(stream, &hub, limits).await;
            result?;
            anyhow::Ok(stats)
        })
    };
    let mut link = LinkEmulator::start(hub_addr, LinkConfig::village())?;
    progress(
        BENCH,
        &format!(
            "fetching through the emulated link (1 Mbit/s, 200 ms RTT): about {} s",
            size * 8 / 1_000_000
        ),
    );
    let started = Instant::now();
    let report =
        blobs::fetch_wanted(&village_tls, link.addr(), &village, &[manifest.content_id]).await?;
    let elapsed = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        report.complete == vec![manifest.content_id],
        "fetch incomplete: {:?}",
        report.failed
    );
    let got = village.read_range(&manifest.content_id, "video.mp4", 0, u64::MAX)?;
    anyhow::ensure!(
        got == data,
        "the village's copy differs from the hub's file"
    );
    let stats = tokio::time::timeout(Duration::from_secs(30), serving)
        .await
        .context("server did not finish")???;
    let down = link.bytes(Direction::BToA);
    let up = link.bytes(Direction::AToB);
    link.stop();
    let rate = LinkConfig::village().bits_per_second as f64;
    let utilisation = size as f64 * 8.0 / (elapsed * rate);
    progress(
        BENCH,
        &format!(
            "{} chunks in {elapsed:.1} s; server sent {} piece bytes; utilisation {utilisation:.3} (target ≥ 0.9)",
            report.stats.chunks, stats.piece_bytes
        ),
    );
    emit(BENCH, "link_utilisation", utilisation, "ratio");
    emit(BENCH, "elapsed_s", elapsed, "s");
    emit(BENCH, "wire_bytes_down", down as f64, "B");
    emit(BENCH, "wire_bytes_up", up as f64, "B");
    emit(
        BENCH,
        "wire_overhead",
        down as f64 / size as f64 - 1.0,
        "ratio",
    );
    Ok(())
}
