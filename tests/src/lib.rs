//! cunyun-tests: multi-node tests and the benchmark runner.
//!
//! # Layout
//! - [`bench`]: the benchmarks behind `cargo run --release -p cunyun-tests --bin bench -- NAME`;
//!   each prints progress on stderr and one JSON object per metric on stdout.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod bench;
