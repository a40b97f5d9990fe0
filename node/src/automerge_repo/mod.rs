//! The automerge-repo WebSocket protocol v1 on the node, so that stock
//! `@automerge/automerge-repo` clients (the web app, a cadre's phone) sync household documents
//! with it directly.
//!
//! This module owns:
//! - [`wire`]: the CBOR messages (`join`, `peer`, `request`, `sync`, `doc-unavailable`,
//!   `ephemeral`, `error`, …), their size limits and a decoder that returns errors, never panics.
//! - [`docid`]: the stable automerge-repo document id of each [`DocKey`] and the index back.
//! - [`endpoint`]: the node side shared by every connection (document ids, principals, peer id).
//! - [`policy`]: the share policy (which [`policy::Principal`] may read or write which document)
//!   and [`policy::PrincipalResolver`], where a connection's principal comes from.
//! - [`session`]: one connection's protocol state machine (handshake, per-document sync against
//!   the store, validation and durable commit of received changes, pushes of node changes).
//! - [`ws`]: the axum WebSocket route `/automerge` that runs a session over a socket.
//!
//! A stock client connects with
//! `new Repo({network: [new WebSocketClientAdapter("ws://<node>/automerge")]})` and opens a
//! household with `repo.find(household.automerge_url)` (the URL is in the household JSON of the
//! HTTP API). Which documents it may read or write is [`policy::access`].
//!
//! [`DocKey`]: cunyun_protocol::key::DocKey
pub mod docid;
pub mod endpoint;
pub mod policy;
pub mod session;
pub mod wire;
pub mod ws;
