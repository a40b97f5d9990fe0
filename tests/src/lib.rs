//! cunyun-tests: multi-node tests and the benchmark runner.
//!
//! # Layout
//! - [`bench`]: the benchmarks behind `cargo run --release -p cunyun-tests --bin bench -- NAME`;
//!   each prints progress on stderr and one JSON object per metric on stdout.
//! - [`link`]: an in-process emulated slow link (latency, bandwidth, cuts) between two sockets.
//! - [`netns`]: throwaway LANs of network namespaces for real-network tests.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod bench;
pub mod link;
pub mod netns;
