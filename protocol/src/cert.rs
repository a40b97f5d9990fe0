//! What a cunyun certificate says, and which chains of certificates are acceptable.
//!
//! Certificates are X.509; this module reads the parts cunyun relies on out of their DER
//! ([`parse_cert`]: the identity URI in the subjectAltName, validity, CA flag, serial) and owns
//! the **chain policy** ([`check_chain`]): who may issue what to whom. Signatures and validity
//! dates are checked by the node's TLS layer (webpki); this module adds what webpki does not
//! know about — scope narrowing and roles at each level.
//!
//! Chain shape: province root CA (role `hub`, e.g. scope `51`) → optional county CA
//! (role `county`, scope inside the root's) → node certificate (scope inside its issuer's).
//! The root issues node certificates for the hub and counties (and, in the development flow of
//! `cunyun-node init`, for any node); a county CA issues node certificates for its own county
//! node, its villages and its mule laptops. Nothing else is accepted. Pure and size-limited:
//! hostile bytes give an error, never a panic.

use crate::identity::{IdentityError, NodeIdentity, IDENTITY_URI_PREFIX};
use crate::key::Role;

/// Largest certificate (DER) this module will look at.
pub const MAX_CERT_DER_LEN: usize = 16 * 1024;

/// Longest chain below the root: one county CA.
pub const MAX_INTERMEDIATES: usize = 1;

/// The parts of a certificate cunyun relies on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// The identity URI of the subjectAltName.
    pub identity: NodeIdentity,
    /// Whether it is a CA certificate (basicConstraints cA).
    pub is_ca: bool,
    /// Start of validity, seconds since the Unix epoch.
    pub not_before: i64,
    /// End of validity, seconds since the Unix epoch.
    pub not_after: i64,
    /// Serial number (big-endian bytes, as encoded).
    pub serial: Vec<u8>,
}

/// Why bytes are not a usable cunyun certificate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// Larger than [`MAX_CERT_DER_LEN`].
    #[error("证书过大（{0} 字节）")]
    TooLarge(usize),
    /// Not a DER X.509 certificate.
    #[error("证书无法解析: {0}")]
    Parse(String),
    /// The certificate has no subjectAltName extension (or it is malformed).
    #[error("证书没有有效的 subjectAltName: {0}")]
    NoSan(String),
    /// No `urn:cunyun:node:` URI in the subjectAltName.
    #[error("证书中没有 urn:cunyun:node 身份")]
    NoIdentity,
    /// More than one identity URI.
    #[error("证书含有多个节点身份")]
    ManyIdentities,
    /// The identity URI is malformed.
    #[error("证书中的节点身份无效: {0}")]
    Identity(#[from] IdentityError),
}

/// Reads a certificate's identity, validity, CA flag and serial from its DER.
pub fn parse_cert(der: &[u8]) -> Result<CertInfo, CertError> {
    if der.len() > MAX_CERT_DER_LEN {
        return Err(CertError::TooLarge(der.len()));
    }
    let (rest, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| CertError::Parse(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CertError::Parse("证书后有多余的数据".into()));
    }
    let san = cert
        .subject_alternative_name()
        .map_err(|e| CertError::NoSan(e.to_string()))?
        .ok_or_else(|| CertError::NoSan("缺少该扩展".into()))?;
    let mut found = None;
    for name in &san.value.general_names {
        if let x509_parser::extensions::GeneralName::URI(uri) = name {
            if uri.starts_with(IDENTITY_URI_PREFIX) {
                if found.is_some() {
                    return Err(CertError::ManyIdentities);
                }
                found = Some(NodeIdentity::from_uri(uri)?);
            }
        }
    }
    let identity = found.ok_or(CertError::NoIdentity)?;
    let validity = cert.validity();
    Ok(CertInfo {
        identity,
        is_ca: cert.is_ca(),
        not_before: validity.not_before.timestamp(),
        not_after: validity.not_after.timestamp(),
        serial: cert.raw_serial().to_vec(),
    })
}

/// Why a chain of identities breaks the chain policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChainError {
    /// The trust anchor is not a province (hub) CA.
    #[error("根证书机构必须是省级（hub）机构，而不是 {0}")]
    RootRole(&'static str),
    /// More than [`MAX_INTERMEDIATES`] CAs below the root.
    #[error("证书链过长（{0} 级中间机构）")]
    TooLong(usize),
    /// A CA below the root that is not a county CA.
    #[error("中间证书机构只能是县级（county），而不是 {0}")]
    IntermediateRole(&'static str),
    /// A certificate's scope is not inside its issuer's.
    #[error("证书范围 {child} 不在签发机构范围 {issuer} 之内")]
    ScopeWidens {
        /// The issuer's scope.
        issuer: String,
        /// The certificate's scope.
        child: String,
    },
    /// The issuer may not issue certificates of this role.
    #[error("{issuer} 机构不能签发 {child} 角色的证书")]
    RoleNotAllowed {
        /// The issuer's role.
        issuer: &'static str,
        /// The certificate's role.
        child: &'static str,
    },
}

/// Which roles a CA of role `issuer` may put into a node certificate.
pub fn may_issue(issuer: Role, child: Role) -> bool {
    match issuer {
        // The province root signs county CAs and node certificates of any role (the hub's own,
        // counties enrolled without a CA of their own, and the development flow).
        Role::Hub => true,
        // A county CA signs its own node and the villages and mules below it.
        Role::County => matches!(child, Role::County | Role::Village | Role::Mule),
        Role::Village | Role::Mule => false,
    }
}

fn narrows(issuer: &NodeIdentity, child: &NodeIdentity) -> Result<(), ChainError> {
    if issuer.scope.contains_scope(&child.scope) {
        Ok(())
    } else {
        Err(ChainError::ScopeWidens {
            issuer: issuer.scope.to_string(),
            child: child.scope.to_string(),
        })
    }
}

/// Checks the chain policy for `leaf`, issued through `intermediates` (nearest the leaf first)
/// by the trust anchor `root`. Every certificate's scope must lie inside its issuer's, the root
/// must be a hub CA, intermediates county CAs, and each issuer must be allowed the role below.
pub fn check_chain(
    root: &NodeIdentity,
    intermediates: &[NodeIdentity],
    leaf: &NodeIdentity,
) -> Result<(), ChainError> {
    if root.role != Role::Hub {
        return Err(ChainError::RootRole(root.role.as_str()));
    }
    if intermediates.len() > MAX_INTERMEDIATES {
        return Err(ChainError::TooLong(intermediates.len()));
    }
    // Walk from the root down: root → intermediates (reversed) → leaf.
    let mut issuer = root;
    for ca in intermediates.iter().rev() {
        if ca.role != Role::County {
            return Err(ChainError::IntermediateRole(ca.role.as_str()));
        }
        narrows(issuer, ca)?;
        issuer = ca;
    }
    narrows(issuer, leaf)?;
    if !may_issue(issuer.role, leaf.role) {
        return Err(ChainError::RoleNotAllowed {
            issuer: issuer.role.as_str(),
            child: leaf.role.as_str(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::area::AreaScope;
    use crate::identity::NodeId;

    fn id(n: u8, role: Role, scope: &str) -> NodeIdentity {
        NodeIdentity {
            node_id: NodeId([n; 16]),
            role,
            scope: AreaScope::parse(scope).expect("scope"),
        }
    }

    #[test]
    fn chain_policy() {
        let root = id(0, Role::Hub, "51");
        let county = id(1, Role::County, "510116");
        let village = id(2, Role::Village, "510116108203");
        let mule = id(3, Role::Mule, "510116");
        assert_eq!(check_chain(&root, &[county], &village), Ok(()));
        assert_eq!(check_chain(&root, &[county], &mule), Ok(()));
        assert_eq!(check_chain(&root, &[county], &county), Ok(()));
        assert_eq!(check_chain(&root, &[], &village), Ok(()));
        assert_eq!(check_chain(&root, &[], &id(4, Role::Hub, "51")), Ok(()));
        // A village outside its county.
        assert!(matches!(
            check_chain(&root, &[county], &id(5, Role::Village, "510117104201")),
            Err(ChainError::ScopeWidens { .. })
        ));
        // A county CA outside its root's area (the root here covers city 5103 only).
        assert!(matches!(
            check_chain(&id(0, Role::Hub, "5103"), &[county], &village),
            Err(ChainError::ScopeWidens { .. })
        ));
        // A county CA may not make a hub.
        assert!(matches!(
            check_chain(&root, &[county], &id(6, Role::Hub, "510116")),
            Err(ChainError::RoleNotAllowed { .. })
        ));
        // A village CA is no CA at all.
        assert!(matches!(
            check_chain(&root, &[village], &id(7, Role::Village, "510116108203")),
            Err(ChainError::IntermediateRole("village"))
        ));
        assert!(matches!(
            check_chain(&root, &[county, county], &village),
            Err(ChainError::TooLong(2))
        ));
        assert_eq!(
            check_chain(&county, &[], &village),
            Err(ChainError::RootRole("county"))
        );
    }

    #[test]
    fn parse_refuses_junk() {
        assert!(matches!(
            parse_cert(b"not a cert"),
            Err(CertError::Parse(_))
        ));
        assert!(matches!(
            parse_cert(&vec![0u8; MAX_CERT_DER_LEN + 1]),
            Err(CertError::TooLarge(_))
        ));
    }
}
