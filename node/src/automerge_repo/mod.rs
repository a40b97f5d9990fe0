//! The automerge-repo WebSocket protocol v1 on the node, so that stock
//! `@automerge/automerge-repo` clients (the web app, a cadre's phone) sync household documents
//! with it directly.
//!
//! This module owns:
//! - [`wire`]: the CBOR messages (`join`, `peer`, `request`, `sync`, `doc-unavailable`,
//!   `ephemeral`, `error`, …), their size limits and a decoder that returns errors, never panics.
//! - [`docid`]: the stable automerge-repo document id of each [`DocKey`] and the index back.
//!
//! [`DocKey`]: cunyun_protocol::key::DocKey
pub mod docid;
pub mod wire;
