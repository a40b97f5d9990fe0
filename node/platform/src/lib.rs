//! cunyun-platform: what a village or county node and the provincial hub both stand on.
//!
//! The village app (`cunyun-node`: records, edits, the cadre web app, automerge-repo, push-down,
//! routes) and the hub (`cunyun-hub`) depend on this crate; it depends on neither. See
//! ARCHITECTURE.md for why it lives at `node/platform/`.
//!
//! # Layout
//! - [`store`]: the durable document store on sled (chunks, heads-digest index, group commit,
//!   compaction, corruption quarantine).
//! - [`host`]: [`host::SyncHost`], the narrow store seam the sync service stands on, and
//!   [`host::NodeHost`], the node's `DocStore` behind it (the hub's stores in `cunyun-hub`).
//! - [`sync`]: sync sessions over mutual TLS, discovery-driven gossip, status.
//! - [`discovery`]: finding peers on the LAN by mDNS (`_cunyun._tcp.local.`).
//! - [`blobs`]: content files: the BLAKE3 chunk store with quota and eviction, and verified,
//!   resumable transfer of hub-signed content between nodes.
//! - [`certs`]: node certificates and mutual TLS, the chain verifier, revocation, enrollment and
//!   the web app's HTTPS certificates.
//! - [`accounts`]: accounts (Argon2id hashes) and durable login sessions.
//! - [`audit`]: the append-only audit log of account and record changes.
//! - [`admin`]: the account and audit pages, generic over the node and the hub.
//! - [`http`]: the one `ApiError`, JSON bodies, the session and CSRF guards.
//! - [`html`]: the one HTML escaping helper of server-rendered pages.
//! - [`ratelimit`]: per-address connection limits and rate limits.
//! - [`metrics`]: Prometheus metrics.
//! - [`clock`], [`timefmt`]: the wall clock; query-string time parsing and China Standard Time
//!   dates.
//! - [`user_cli`]: the `user` subcommand (accounts from the command line).
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod accounts;
pub mod admin;
pub mod audit;
pub mod blobs;
pub mod certs;
pub mod clock;
pub mod discovery;
pub mod host;
pub mod html;
pub mod http;
pub mod metrics;
pub mod ratelimit;
pub mod store;
pub mod sync;
pub mod timefmt;
pub mod user_cli;
