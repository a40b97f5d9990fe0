//! cunyun-protocol: the document model, codecs and pure algorithms shared by every cunyun
//! process.
//!
//! # Layout
//! - [`area`]: 12-digit statistical division codes (统计用区划代码), their levels and prefix scopes.
//! - [`gazetteer`]: Sichuan's place names (NBS 2023 统计用区划代码) by area code, built in.
//! - [`key`]: document keys `<area>/<kind>/<id>`, document kinds and how far each may travel.
//! - [`identity`]: node identity (id, role, scope) as certificates carry it.
//! - [`cert`]: reading that identity out of an X.509 certificate, and the chain policy (scope
//!   narrows province → county → village; roles allowed at each level).
//! - [`digest`]: the heads digest that the store indexes and the sync engine reconciles on.
//! - [`taxonomy`]: the two-level need-tag tree (科普需求标签) with zh-CN names.
//! - [`household`]: typed views of household profile (`hh`) and private (`hp`) documents.
//! - [`expert`]: the expert registry (科技所能, `expert`), expert suggestions for local needs and
//!   the `match` document.
//! - [`library`]: content metadata (科普资源元数据) of the hub's content library.
//! - [`matching`]: the pure scorer (household tags × season × region × freshness, diversity,
//!   format by media profile), the inverted tag index and the per-village byte budget.
//! - [`need`]: typed view of a local science-and-technology need (`need`, 科技所需).
//! - [`rec`]: typed view of the hub's recommendation document (`rec`) for one household.
//! - [`feedback`]: typed view of a household's feedback document (`fb`): delivered, viewed,
//!   helpful per recommended item, merge-friendly per-day maps and counters.
//! - [`fields`]: field errors with machine codes and zh-CN messages, and the string representation
//!   shared by every typed view.
//! - [`triggers`]: `derive_tags`, the trigger rules from household fields to need tags.
//! - [`manifest`]: hub-signed content manifests (files as BLAKE3-hashed chunks, Ed25519).
//! - [`blob`]: the sans-IO chunk transfer (want → verified chunks, resumable, flow-controlled).
//! - [`sync`]: the sans-IO sync session: versioned frames, rateless IBLT reconciliation, shared
//!   scope by kind reach, and an in-memory store for tests and simulations.
//!
//! **Architecture invariant:** this crate does no I/O. It never depends on tokio, sled, axum or
//! rustls, never reads a clock and never touches the file system; callers pass time in.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod area;
pub mod blob;

pub mod cert;
mod codec;
pub mod deletion;
pub mod digest;
pub mod expert;
pub mod feedback;
pub mod fields;
pub mod gazetteer;
pub mod household;
pub mod identity;
pub mod key;
pub mod library;
pub mod manifest;
pub mod matching;
pub mod need;
pub mod rec;
pub mod sync;
pub mod taxonomy;
pub mod triggers;
