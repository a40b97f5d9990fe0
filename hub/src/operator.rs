//! Who is acting: the name under which operator writes are authored.
//!
//! [`Operator`] is an axum extractor. It takes the operator from the request's extensions, where
//! the hub's login guard (`crate::auth`) puts the logged-in hub operator; a request that carries
//! none (only possible for a router built without that guard, as in unit tests) acts as
//! [`Operator::UNNAMED`]. Handlers that write documents use it as the Automerge author, so a need
//! status or an expert change in a village's history names who made it at the hub.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

/// The acting hub operator (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operator(pub String);

impl Operator {
    /// The author of writes made without a logged-in operator.
    pub const UNNAMED: &'static str = "hub-operator";

    /// The Automerge author name: `hub:<operator>`.
    pub fn author(&self) -> String {
        format!("hub:{}", self.0)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Operator {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<Operator>()
            .cloned()
            .unwrap_or_else(|| Operator(Operator::UNNAMED.to_string())))
    }
}
