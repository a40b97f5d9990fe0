//! cunyun-examples: runnable scenarios built on the cunyun libraries.
//!
//! - `village_day`: `cargo run -p cunyun-examples --bin village_day` — a node in a temporary
//!   directory, a sample village recorded, a cadre's day of edits through the API, a restart, and
//!   the data still there.
//! - `demo-county`: `cargo run --release -p cunyun-examples --bin demo-county` — the README's
//!   first command: a hub, a county node and three village nodes in one process.
//! - [`seed_library`]: the demo's generated content library.
//! - [`seed_experts`]: the demo's generated expert registry.

pub mod seed_experts;
pub mod seed_library;
