//! Certificates: who a node is and whom it trusts.
//!
//! - [`tls`]: node certificates (identity in a SAN URI), CAs and mutual TLS 1.3.
//! - [`trust`]: the chain verifier (province root, scope narrowing, trusted time, revocation).
//! - [`revocation`]: revoked nodes and certificates this node refuses.
//! - [`enroll`]: one-time enrollment tokens, the enrollment endpoint, CA directories and offline
//!   issuing of village/mule certificates by a county CA.
//! - [`webtls`]: the web app's HTTPS: a node web CA and server certificate a phone can trust.

pub mod enroll;
pub mod revocation;
pub mod tls;
pub mod trust;
pub mod webtls;
