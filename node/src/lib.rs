//! cunyun-node: the village/county node app, on the platform crate (`cunyun-platform`: store,
//! sync host, blobs, certificates, accounts, audit, the HTTP guard).
//!
//! # Layout
//! - [`config`]: [`config::NodeConfig`], the documented TOML configuration.
//! - [`records`]: household and local-need operations over the store (validation, authorship,
//!   listing).
//! - [`limits`]: per-route-class concurrency limits with a zh-CN `503 busy` when full.
//! - [`paging`]: the opaque list cursor and the bounded key-order walk behind every paged list.
//! - [`state`]: [`state::AppState`], what every handler shares, and record errors as API errors.
//! - [`api`]: the axum HTTP API, `/healthz`, `/metrics` and the status page.
//! - [`automerge_repo`]: the automerge-repo WebSocket protocol v1 at `/automerge`, with its
//!   share policy, for stock `@automerge/automerge-repo` clients.
//! - [`edits`]: household edits made offline, applied on a fork at their base heads and merged.
//! - [`deletion`]: household deletion on request (tombstones) and the guard against deleted ones.
//! - [`backup`]: encrypted backup and verified restore of a data directory, also while the
//!   node runs (its backup socket).
//! - [`notify`]: systemd readiness and watchdog notifications (`sd_notify`).
//! - [`server`]: starting and stopping a node (used by the binary, tests and examples).
//! - [`sample`]: deterministic generation of realistic sample villages.
//! - [`feedback`]: recording a household's feedback (`fb`): items opened, rated helpful,
//!   delivered.
//! - [`webapp`]: the embedded cadre web app, villager page and the app's API routes.
//! - [`pushdown`]: fetches the content the node's `rec` documents recommend from upstream.
//! - [`content_api`]: content item JSON, file download (with `Range`) and rendered-article routes.
//! - [`markdown`]: an article rendition (Markdown, HTML, text) as sanitised HTML.
//! - [`places`]: what pages show for the node's place and its sync peers (names, not codes).
//!
//! **Architecture invariant:** an HTTP write is answered only after the store has made it
//! durable; a request that fails validation changes nothing.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod api;
pub mod automerge_repo;
pub mod backup;
pub mod config;
pub mod content_api;
pub mod deletion;
pub mod edits;
pub mod feedback;
pub mod limits;
pub mod markdown;
pub mod need_experts;
pub mod notify;
pub mod paging;
pub mod places;
pub mod pushdown;
pub mod records;
pub mod sample;
pub mod server;
pub mod state;
pub mod webapp;
