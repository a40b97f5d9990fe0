//! cunyun-node: the village/county node.
//!
//! # Layout
//! - [`config`]: [`config::NodeConfig`], the documented TOML configuration.
//! - [`store`]: the durable document store on sled (chunks, heads-digest index, group commit,
//!   compaction, corruption quarantine).
//! - [`records`]: household and local-need operations over the store (validation, authorship,
//!   listing).
//! - [`blobs`]: content files: the BLAKE3 chunk store with quota and eviction, and verified,
//!   resumable transfer of hub-signed content between nodes.
//! - [`accounts`]: cadre accounts (Argon2id hashes) and durable login sessions.
//! - [`api`]: the axum HTTP API, `/healthz`, `/metrics` and the status page.
//! - [`automerge_repo`]: the automerge-repo WebSocket protocol v1 at `/automerge`, with its
//!   share policy, for stock `@automerge/automerge-repo` clients.
//! - [`edits`]: household edits made offline, applied on a fork at their base heads and merged.
//! - [`server`]: starting and stopping a node (used by the binary, tests and examples).
//! - [`sample`]: deterministic generation of realistic sample villages.
//! - [`discovery`]: finding peers on the LAN by mDNS (`_cunyun._tcp.local.`).
//! - [`sync`]: sync sessions over mutual TLS, discovery-driven gossip, status.
//! - [`tls`]: node certificates (identity in a SAN URI), CAs and mutual TLS 1.3.
//! - [`enroll`]: one-time enrollment tokens, the enrollment endpoint, CA directories and
//!   offline issuing of village/mule certificates by a county CA.
//! - [`trust`]: the chain verifier (province root, scope narrowing, trusted time, revocation).
//! - [`revocation`]: revoked nodes and certificates this node refuses.
//! - [`feedback`]: recording a household's feedback (`fb`): items opened, rated helpful,
//!   delivered.
//! - [`webapp`]: the embedded cadre web app, villager page and the app's API routes.
//! - [`pushdown`]: fetches the content the node's `rec` documents recommend from upstream.
//! - [`content_api`]: content item JSON, file download (with `Range`) and rendered-article routes.
//! - [`markdown`]: an article rendition (Markdown, HTML, text) as sanitised HTML.
//! - [`html`]: the one HTML escaping helper of server-rendered pages (node and hub).
//! - [`metrics`], [`timefmt`]: Prometheus metrics; query-string time parsing.
//!
//! **Architecture invariant:** an HTTP write is answered only after the store has made it
//! durable; a request that fails validation changes nothing.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod accounts;
pub mod admin;
pub mod api;
pub mod audit;
pub mod automerge_repo;
pub mod blobs;
pub mod config;
pub mod content_api;
pub mod deletion;
pub mod discovery;
pub mod edits;
pub mod enroll;
pub mod feedback;
pub mod html;
pub mod markdown;
pub mod metrics;
pub mod pushdown;
pub mod ratelimit;
pub mod records;
pub mod revocation;
pub mod sample;
pub mod server;
pub mod store;
pub mod sync;
pub mod timefmt;
pub mod tls;
pub mod trust;
pub mod user_cli;
pub mod webapp;
pub mod webtls;
