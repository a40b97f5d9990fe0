//! Revoked certificates this node refuses.
//!
//! A [`RevocationSet`] holds every revocation this node has accepted: node ids and certificate
//! serials, each with the issuer that revoked it. The chain verifier ([`crate::trust`]) consults
//! it on every handshake, so once a revocation is in the set the revoked node is refused by this
//! node in both directions.

use std::collections::HashMap;
use std::sync::RwLock;

use cunyun_protocol::identity::{NodeId, NodeIdentity};

/// Revoked node ids and serials (see the module docs).
#[derive(Debug, Default)]
pub struct RevocationSet {
    inner: RwLock<Revoked>,
}

#[derive(Debug, Default)]
struct Revoked {
    /// Revoked node id → the issuer that revoked it.
    nodes: HashMap<NodeId, NodeId>,
    /// Revoked certificate serial → the issuer that revoked it.
    serials: HashMap<Vec<u8>, NodeId>,
}

impl RevocationSet {
    /// An empty set.
    pub fn new() -> RevocationSet {
        RevocationSet::default()
    }

    /// Adds revocations by `issuer`.
    pub fn add(&self, issuer: NodeId, nodes: &[NodeId], serials: &[Vec<u8>]) {
        if let Ok(mut r) = self.inner.write() {
            for n in nodes {
                r.nodes.insert(*n, issuer);
            }
            for s in serials {
                r.serials.insert(s.clone(), issuer);
            }
        }
    }

    /// Why a certificate with this identity and serial is revoked, if it is.
    pub fn revoked(&self, identity: &NodeIdentity, serial: &[u8]) -> Option<String> {
        let r = self.inner.read().ok()?;
        if let Some(by) = r.nodes.get(&identity.node_id) {
            return Some(format!("{}，由 {by} 吊销", identity.node_id));
        }
        r.serials.get(serial).map(|by| {
            format!(
                "{}（证书序列号 {}），由 {by} 吊销",
                identity.node_id,
                hex::encode(serial)
            )
        })
    }

    /// How many node ids and serials are revoked.
    pub fn len(&self) -> usize {
        self.inner
            .read()
            .map(|r| r.nodes.len() + r.serials.len())
            .unwrap_or(0)
    }

    /// Whether nothing is revoked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
