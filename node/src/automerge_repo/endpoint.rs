//! The node side of the automerge-repo protocol, shared by every connection: the document-id
//! index, where principals come from, and the node's peer id.

use std::sync::Arc;

use cunyun_platform::store::DocStore;
use cunyun_protocol::area::AreaScope;
use rand::Rng;

use super::docid::DocIndex;
use super::policy::{Credentials, Principal, PrincipalResolver};

/// The node side of the protocol, shared by every connection.
pub struct Endpoint {
    index: DocIndex,
    resolver: Arc<dyn PrincipalResolver>,
    peer_id: String,
}

impl Endpoint {
    /// An endpoint over the documents of `scope` in `store`, taking principals from `resolver`.
    pub fn new(
        store: DocStore,
        scope: AreaScope,
        resolver: Arc<dyn PrincipalResolver>,
    ) -> Endpoint {
        let peer_id = format!("cunyun-node-{:016x}", rand::thread_rng().gen::<u64>());
        Endpoint {
            index: DocIndex::new(store, scope),
            resolver,
            peer_id,
        }
    }

    /// The node's peer id (one per process, as automerge-repo peer ids are).
    pub fn peer_id(&self) -> &str {
        &self.peer_id
    }

    /// The principal behind a connection's credentials.
    pub fn principal(&self, credentials: &Credentials<'_>) -> Principal {
        self.resolver.resolve(credentials)
    }

    /// The document-id index.
    pub fn index(&self) -> &DocIndex {
        &self.index
    }
}
