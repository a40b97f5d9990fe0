//! The node's side of sync: the protocol's sans-IO session ([`cunyun_protocol::sync`]) put to
//! work over mutual TLS against any [`crate::host::SyncHost`] (the node's sled store, the
//! hub's stores).
//!
//! - [`adapter`]: the host as a session sees it, and applying received changes durably.
//! - [`runner`]: one session over a byte stream, with timeouts.
//! - [`service`]: discovery, dialing, accepting, scheduling (debounce, periodic with jitter,
//!   backoff, a bound on concurrent sessions), persisted watermarks, status.

pub mod adapter;
pub mod runner;
pub mod service;

pub use service::{BoundListener, SyncConfig, SyncService, SyncStatus};
