//! Benchmark `gossip`: how fast one new change spreads through a village LAN of 30 nodes.
//!
//! Thirty real nodes run in this process — each with its own sled store, certificate and
//! mutual-TLS sync endpoint on loopback — on a simulated LAN where every node knows every other
//! (as mDNS would tell them), with the **default** sync timers (`SyncConfig::default()`:
//! debounce, periodic interval with jitter, backoff, concurrency bound). After the LAN is quiet, a
//! household is recorded on one node chosen by the seed, and the time until all 30 stores hold
//! it is measured. Twenty seeded runs; the median is reported as `converge_median_ms`.

use std::time::{Duration, Instant};

use anyhow::Context;
use cunyun_node::config::NodeConfig;
use cunyun_node::server::{self, RunningNode};
use cunyun_protocol::area::AreaScope;
use cunyun_protocol::identity::{NodeId, NodeIdentity};
use cunyun_protocol::key::{DocKey, Kind, Role};
use rand::{Rng, SeedableRng};

use super::{emit, progress, quantile};

const NODES: usize = 30;
const RUNS: u64 = 20;
const VILLAGE: &str = "510116108203";

async fn start_lan(root: &std::path::Path, seed: u64) -> anyhow::Result<Vec<RunningNode>> {
    // Bind every sync port first so each node can be told all the others; each node then
    // listens on the very socket bound here (a port released and bound again may be taken by
    // another process on a shared machine).
    let mut ports = Vec::new();
    let mut listeners = Vec::new();
    for _ in 0..NODES {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        ports.push(l.local_addr()?);
        listeners.push(Some(l));
    }
    let mut nodes = Vec::with_capacity(NODES);
    for i in 0..NODES {
        let dir = root.join(format!("s{seed}n{i}"));
        let mut id = [0u8; 16];
        id[0] = i as u8;
        id[1..9].copy_from_slice(&seed.to_le_bytes());
        let identity = NodeIdentity {
            node_id: NodeId(id),
            role: if i == 0 { Role::County } else { Role::Village },
            scope: AreaScope::parse(if i == 0 { "510116" } else { VILLAGE })?,
        };
        cunyun_platform::certs::tls::init_dev_identity(
            &root.join("ca"),
            &dir.join("tls"),
            &identity,
        )?;
        let mut c = NodeConfig::default();
        c.data_dir = dir;
        c.listen = "127.0.0.1:0".parse()?;
        c.scope = identity.scope;
        c.role = identity.role;
        c.sync.enabled = true;
        c.sync.mdns = false;
        c.sync.listen = ports[i];
        c.sync.bound = cunyun_platform::sync::BoundListener::new(
            listeners[i].take().context("each socket is used once")?,
        );
        c.sync.static_peers = ports
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, a)| *a)
            .collect();
        nodes.push(
            server::start(&c, std::future::pending())
                .await
                .with_context(|| format!("node {i}"))?,
        );
    }
    Ok(nodes)
}

fn holds(node: &RunningNode, key: &DocKey) -> bool {
    matches!(node.state.records.store().entry(key), Ok(Some(_)))
}

async fn wait_quiet(nodes: &[RunningNode]) {
    // Quiet: no node's session count changed for two seconds (bounded to 60 s).
    let deadline = Instant::now() + Duration::from_secs(60);
    let total = |nodes: &[RunningNode]| -> u64 {
        nodes
            .iter()
            .filter_map(|n| n.state.sync.as_ref())
            .map(|s| {
                let t = s.status().totals;
                t.sessions_ok + t.sessions_failed
            })
            .sum()
    };
    let mut last = total(nodes);
    let mut stable_since = Instant::now();
    while Instant::now() < deadline && stable_since.elapsed() < Duration::from_secs(2) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = total(nodes);
        if now != last {
            last = now;
            stable_since = Instant::now();
        }
    }
}

async fn one_run(root: &std::path::Path, seed: u64) -> anyhow::Result<f64> {
    let nodes = start_lan(root, seed).await?;
    wait_quiet(&nodes).await;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let origin = rng.gen_range(0..NODES);
    let body = serde_json::json!({
        "profile": {"village": VILLAGE, "group": 2, "residents": 1, "age_70_plus": 1, "elderly_alone": true},
        "private": {"head_name": "测试户"}
    });
    let started = Instant::now();
    let record = nodes[origin]
        .state
        .records
        .create_household("bench", &body)
        .await?;
    let key = DocKey::parse(&format!("{VILLAGE}/hh/{}", record.id))?;
    let deadline = started + Duration::from_secs(120);
    let ms = loop {
        if nodes.iter().all(|n| holds(n, &key)) {
            break started.elapsed().as_secs_f64() * 1000.0;
        }
        if Instant::now() > deadline {
            anyhow::bail!("run {seed}: change did not reach all {NODES} nodes in 120 s");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    debug_assert_eq!(key.kind(), Kind::Hh);
    for n in nodes {
        n.stop().await?;
    }
    Ok(ms)
}

/// Runs the benchmark.
pub fn run() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let root = tempfile::tempdir()?;
    let mut samples = Vec::new();
    for seed in 0..RUNS {
        let ms = rt.block_on(one_run(root.path(), seed))?;
        progress(
            "gossip",
            &format!(
                "run {}/{RUNS}: one change reached {NODES} nodes in {ms:.0} ms",
                seed + 1
            ),
        );
        samples.push(ms);
    }
    let max = samples.iter().copied().fold(0.0, f64::max);
    emit(
        "gossip",
        "converge_median_ms",
        quantile(&mut samples, 0.5),
        "ms",
    );
    emit("gossip", "converge_max_ms", max, "ms");
    emit("gossip", "nodes", NODES as f64, "count");
    Ok(())
}
