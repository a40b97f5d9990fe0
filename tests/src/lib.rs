//! cunyun-tests: multi-node tests and the benchmark runner.
//!
//! # Layout
//! - [`bench`]: the benchmarks behind `cargo run --release -p cunyun-tests --bin bench -- NAME`;
//!   each prints progress on stderr and one JSON object per metric on stdout.
//! - [`browser`]: a small WebDriver client for headless Chromium (web-app tests, benchmark).
//! - [`link`]: an in-process emulated slow link (latency, bandwidth, cuts) between two sockets.
//! - [`netns`]: throwaway LANs of network namespaces for real-network tests.
//! - [`postgres`]: a private PostgreSQL server on a Unix socket in a temp dir, for any test.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod bench;
pub mod browser;
pub mod link;
pub mod netns;
pub mod postgres;
pub mod wifi;

/// The value after `name` in a test host's command line (`--name value`).
pub fn cli_arg(args: &[String], name: &str) -> anyhow::Result<String> {
    use anyhow::Context;
    let pos = args
        .iter()
        .position(|a| a == name)
        .with_context(|| format!("missing {name}"))?;
    args.get(pos + 1)
        .cloned()
        .with_context(|| format!("missing value of {name}"))
}
