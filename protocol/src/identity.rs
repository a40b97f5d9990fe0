//! Node identity as certificates carry it: node id, role and scope.
//!
//! A peer's identity comes from its certificate, never from what it says in a session. The
//! certificate carries a [`NodeIdentity`] as a subjectAltName URI,
//! `urn:cunyun:node:<32 hex node id>:<role>:<scope prefix>`, e.g.
//! `urn:cunyun:node:00112233445566778899aabbccddeeff:village:510116108203`. This module owns that
//! form (pure, size-limited, never panics on input); the node's TLS layer puts it into and reads
//! it out of certificates.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::area::AreaScope;
use crate::key::Role;

/// Prefix of the identity URI.
pub const IDENTITY_URI_PREFIX: &str = "urn:cunyun:node:";

/// Longest identity URI: prefix, id, the longest role, the longest scope, separators.
pub const MAX_IDENTITY_URI_LEN: usize = IDENTITY_URI_PREFIX.len() + 32 + 1 + 7 + 1 + 12;

/// A node's stable, random 128-bit id.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub [u8; 16]);

impl NodeId {
    /// Lower-case hex form (32 characters).
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({})", self.to_hex())
    }
}

impl FromStr for NodeId {
    type Err = IdentityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(IdentityError::BadNodeId);
        }
        let mut out = [0u8; 16];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16)
                .map_err(|_| IdentityError::BadNodeId)?;
        }
        Ok(NodeId(out))
    }
}

impl Serialize for NodeId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for NodeId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Who a node is: what its certificate says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NodeIdentity {
    /// Stable node id.
    pub node_id: NodeId,
    /// What kind of node.
    pub role: Role,
    /// The area it serves; it may hold and receive only what lies in it (and what flows down to it).
    pub scope: AreaScope,
}

/// Why bytes are not an encoded identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// Not an identity URI at all.
    #[error("证书中没有村云节点身份 (not a cunyun identity URI)")]
    NotIdentity,
    /// Too long, or not three `:`-separated parts after the prefix.
    #[error("节点身份格式不正确 (malformed identity URI)")]
    Length,
    /// An unknown role.
    #[error("未知的节点角色“{0}” (unknown role {0:?})")]
    Role(String),
    /// The scope is not a valid area prefix.
    #[error("节点身份中的范围无效 (invalid scope in identity)")]
    Scope,
    /// A node id that is not 32 hex digits.
    #[error("节点编号应为32位十六进制数字 (node id must be 32 hex digits)")]
    BadNodeId,
}

impl NodeIdentity {
    /// The subjectAltName URI that carries this identity.
    pub fn to_uri(&self) -> String {
        format!(
            "{IDENTITY_URI_PREFIX}{}:{}:{}",
            self.node_id,
            self.role.as_str(),
            self.scope
        )
    }

    /// Parses an identity URI.
    pub fn from_uri(uri: &str) -> Result<NodeIdentity, IdentityError> {
        if uri.len() > MAX_IDENTITY_URI_LEN {
            return Err(IdentityError::Length);
        }
        let rest = uri
            .strip_prefix(IDENTITY_URI_PREFIX)
            .ok_or(IdentityError::NotIdentity)?;
        let mut parts = rest.split(':');
        let (Some(id), Some(role), Some(scope), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(IdentityError::Length);
        };
        Ok(NodeIdentity {
            node_id: id.parse()?,
            role: Role::parse(role)
                .ok_or_else(|| IdentityError::Role(role.chars().take(16).collect()))?,
            scope: AreaScope::parse(scope).map_err(|_| IdentityError::Scope)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::area::tests::arb_area;
    use proptest::prelude::*;

    fn arb_role() -> impl Strategy<Value = Role> {
        proptest::sample::select(vec![Role::Village, Role::Mule, Role::County, Role::Hub])
    }

    proptest! {
        #[test]
        fn round_trip(id in any::<[u8; 16]>(), role in arb_role(), area in arb_area()) {
            let ident = NodeIdentity { node_id: NodeId(id), role, scope: area.scope() };
            let uri = ident.to_uri();
            prop_assert!(uri.len() <= MAX_IDENTITY_URI_LEN);
            prop_assert_eq!(NodeIdentity::from_uri(&uri), Ok(ident));
            prop_assert_eq!(ident.node_id.to_hex().parse::<NodeId>(), Ok(ident.node_id));
        }

        #[test]
        fn decode_never_panics(s in "\\PC{0,120}") {
            let _ = NodeIdentity::from_uri(&s);
            let _ = NodeIdentity::from_uri(&format!("{IDENTITY_URI_PREFIX}{s}"));
        }
    }

    #[test]
    fn rejects_damage() {
        let ok = "urn:cunyun:node:00112233445566778899aabbccddeeff:village:510116108203";
        let ident = NodeIdentity::from_uri(ok).expect("valid");
        assert_eq!(ident.role, Role::Village);
        assert_eq!(ident.to_uri(), ok);
        assert_eq!(
            NodeIdentity::from_uri("https://example.invalid/"),
            Err(IdentityError::NotIdentity)
        );
        assert_eq!(
            NodeIdentity::from_uri("urn:cunyun:node:00112233445566778899aabbccddeeff:king:51"),
            Err(IdentityError::Role("king".into()))
        );
        assert_eq!(
            NodeIdentity::from_uri("urn:cunyun:node:0011:village:51"),
            Err(IdentityError::BadNodeId)
        );
        assert_eq!(
            NodeIdentity::from_uri("urn:cunyun:node:00112233445566778899aabbccddeeff:hub:5"),
            Err(IdentityError::Scope)
        );
        assert_eq!(
            NodeIdentity::from_uri("urn:cunyun:node:00112233445566778899aabbccddeeff:hub:51:x"),
            Err(IdentityError::Length)
        );
    }
}
