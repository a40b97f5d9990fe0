//! A test host for network-namespace tests: runs a real node (store, mutual-TLS sync, mDNS) from
//! a directory prepared by the test (`<dir>/tls` holds its certificate), records `--households`
//! sample households, and prints `CONVERGED <documents> <index digest>` once its store holds
//! `--expect` documents, then keeps serving until `--seconds` pass or `<dir>/stop` appears.

use std::time::Duration;

use cunyun_node::config::NodeConfig;
use cunyun_node::server;
use cunyun_protocol::area::{AreaCode, AreaScope};
use cunyun_tests::cli_arg;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let dir = std::path::PathBuf::from(cli_arg(&args, "--dir")?);
    let scope = AreaScope::parse(&cli_arg(&args, "--scope")?)?;
    let village = AreaCode::parse(&cli_arg(&args, "--village")?)?;
    let households: usize = cli_arg(&args, "--households")?.parse()?;
    let expect: usize = cli_arg(&args, "--expect")?.parse()?;
    let seconds: u64 = cli_arg(&args, "--seconds")?.parse()?;
    let seed: u64 = cli_arg(&args, "--seed")?.parse()?;

    let mut c = NodeConfig::default();
    c.data_dir = dir.clone();
    c.listen = "127.0.0.1:0".parse()?;
    c.scope = scope;
    c.sync.enabled = true;
    c.sync.listen = "0.0.0.0:7447".parse()?;
    c.sync.mdns = true;
    let node = server::start(&c, std::future::pending()).await?;
    println!("STARTED");
    if households > 0 {
        server::seed_sample_village(
            &node.state.records,
            "cadre",
            village,
            households,
            seed,
            |_, _| {},
        )
        .await?;
    }
    let store = node.state.records.store().clone();
    let all = AreaScope::parse("51")?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
    let mut reported = false;
    while tokio::time::Instant::now() < deadline && !dir.join("stop").exists() {
        let entries: Vec<_> = store.scan(&all).collect::<Result<_, _>>()?;
        if entries.len() >= expect && !reported {
            let mut h = blake3::Hasher::new();
            for (k, e) in &entries {
                h.update(&k.to_bytes());
                h.update(&e.digest.0);
            }
            println!("CONVERGED {} {}", entries.len(), h.finalize().to_hex());
            reported = true;
        } else if reported && entries.len() < expect {
            reported = false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let status = node.state.sync.as_ref().map(|s| s.status());
    if let Some(s) = status {
        println!(
            "STATUS peers={} ok={} failed={}",
            s.peers.len(),
            s.totals.sessions_ok,
            s.totals.sessions_failed
        );
    }
    node.stop().await?;
    Ok(())
}
