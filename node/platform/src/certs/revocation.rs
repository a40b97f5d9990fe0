//! Revocation lists: signed by a CA, gossiped as documents, enforced on every handshake.
//!
//! A CA (the province root or a county CA) revokes node ids and certificate serials with a
//! [`RevocationList`]: issuer, sequence number, time, entries — signed with the CA's key
//! ([`sign_list`]). The signed list is stored as an Automerge document of kind `rev`, keyed
//! `<province area>/rev/<issuer node id>` ([`list_key`]), which the sync engine carries like any
//! document: `rev` flows down, so it reaches every node of the province, and a county can revoke
//! one of its villages while the hub is unreachable (the county syncs with its villages
//! directly).
//!
//! A node accepts a list only after verifying it ([`verify_signed`]): the issuer's certificate
//! is the province root or a county CA certificate signed by the root, and the list's signature
//! is by that certificate's key. A list revokes only certificates whose scope lies inside the
//! issuer's scope (a county cannot revoke another county's villages, nor the hub). Revocation is
//! monotonic: lists are cumulative and every list that verifies is added to the
//! [`RevocationSet`]; a forged or damaged value in the document (any peer can write a CRDT) is
//! ignored and removes nothing. The chain verifier ([`crate::certs::trust`]) consults the set on every
//! handshake, so once a node has the list the revoked node is refused in both directions.

use std::collections::HashMap;
use std::sync::RwLock;

use automerge::transaction::Transactable;
use automerge::{Automerge, ReadDoc, ScalarValue, ROOT};
use cunyun_protocol::area::{AreaCode, AreaScope};
use cunyun_protocol::cert::parse_cert;
use cunyun_protocol::identity::{NodeId, NodeIdentity};
use cunyun_protocol::key::{DocKey, Kind, Role};
use rustls::pki_types::CertificateDer;
use serde::{Deserialize, Serialize};

use crate::host::SyncHost;
use crate::store::DocWrite;

/// Version of the list payload.
pub const LIST_VERSION: u32 = 1;
/// Most entries (node ids plus serials) one list may carry.
pub const MAX_LIST_ENTRIES: usize = 10_000;
/// Largest signed list, in bytes.
pub const MAX_SIGNED_LEN: usize = 1024 * 1024;
/// Most conflicting values of one list document that are examined.
const MAX_VALUES: usize = 16;
/// The document field holding the signed list.
const FIELD: &str = "signed";

/// Why a revocation list was refused or could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RevocationError {
    /// The list or its envelope is malformed or too large.
    #[error("吊销列表格式无效: {0}")]
    Malformed(String),
    /// The issuer is not the root nor a county CA signed by it.
    #[error("吊销列表的签发机构不可信: {0}")]
    Issuer(String),
    /// The signature does not verify.
    #[error("吊销列表签名无效")]
    Signature,
    /// The store failed.
    #[error("吊销列表无法写入: {0}")]
    Store(String),
}

/// What a CA revokes (the signed payload).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevocationList {
    /// Payload version ([`LIST_VERSION`]).
    pub v: u32,
    /// The issuing CA's identity.
    pub issuer: NodeIdentity,
    /// Increases with every list the issuer publishes.
    pub seq: u64,
    /// When it was issued, Unix seconds (the issuer's clock).
    pub issued_at_s: u64,
    /// Revoked node ids.
    pub nodes: Vec<NodeId>,
    /// Revoked certificate serials, hex.
    pub serials: Vec<String>,
}

/// A list with its signature and the issuer's certificate, as stored in the document.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SignedList {
    /// The [`RevocationList`] as JSON; the signature covers exactly these bytes.
    pub payload: String,
    /// Signature over `payload` by the issuer's key, hex.
    pub sig: String,
    /// The issuer's CA certificate (DER), hex.
    pub issuer_cert: String,
}

/// The document key of `issuer`'s list in the province of `scope`.
pub fn list_key(scope: &AreaScope, issuer: &NodeId) -> Result<DocKey, RevocationError> {
    let province = format!("{}0000000000", scope.prefix().get(..2).unwrap_or("00"));
    let area = AreaCode::parse(&province).map_err(|e| RevocationError::Malformed(e.to_string()))?;
    DocKey::new(area, Kind::Rev, issuer.to_hex())
        .map_err(|e| RevocationError::Malformed(e.to_string()))
}

/// Signs `list` with the CA key `key_pem` whose certificate is `issuer_cert` (DER).
pub fn sign_list(
    list: &RevocationList,
    key_pem: &str,
    issuer_cert: &[u8],
) -> Result<SignedList, RevocationError> {
    use rcgen::SigningKey;
    if list.nodes.len() + list.serials.len() > MAX_LIST_ENTRIES {
        return Err(RevocationError::Malformed(format!(
            "条目超过 {MAX_LIST_ENTRIES} 个"
        )));
    }
    let payload =
        serde_json::to_string(list).map_err(|e| RevocationError::Malformed(e.to_string()))?;
    let key =
        rcgen::KeyPair::from_pem(key_pem).map_err(|e| RevocationError::Issuer(e.to_string()))?;
    let sig = key
        .sign(payload.as_bytes())
        .map_err(|e| RevocationError::Issuer(e.to_string()))?;
    Ok(SignedList {
        payload,
        sig: hex::encode(sig),
        issuer_cert: hex::encode(issuer_cert),
    })
}

fn ecdsa_p256(
) -> Result<&'static dyn rustls::pki_types::SignatureVerificationAlgorithm, RevocationError> {
    let provider = rustls::crypto::ring::default_provider();
    provider
        .signature_verification_algorithms
        .mapping
        .iter()
        .find(|(s, _)| *s == rustls::SignatureScheme::ECDSA_NISTP256_SHA256)
        .and_then(|(_, algs)| algs.first().copied())
        .ok_or_else(|| RevocationError::Issuer("缺少 ECDSA P-256 算法".into()))
}

/// OID 1.2.840.10045.4.3.2, ecdsa-with-SHA256 — what cunyun CAs sign with.
const ECDSA_SHA256_OID: &str = "1.2.840.10045.4.3.2";

/// Verifies `signed` against the province root `root` (DER); returns the list.
pub fn verify_signed(signed: &SignedList, root: &[u8]) -> Result<RevocationList, RevocationError> {
    if signed.payload.len() + signed.sig.len() + signed.issuer_cert.len() > MAX_SIGNED_LEN {
        return Err(RevocationError::Malformed("过大".into()));
    }
    let bad = |e: String| RevocationError::Malformed(e);
    let list: RevocationList =
        serde_json::from_str(&signed.payload).map_err(|e| bad(e.to_string()))?;
    if list.v != LIST_VERSION {
        return Err(bad(format!("不支持的版本 {}", list.v)));
    }
    if list.nodes.len() + list.serials.len() > MAX_LIST_ENTRIES {
        return Err(bad(format!("条目超过 {MAX_LIST_ENTRIES} 个")));
    }
    let issuer_der = hex::decode(&signed.issuer_cert).map_err(|e| bad(e.to_string()))?;
    let sig = hex::decode(&signed.sig).map_err(|e| bad(e.to_string()))?;
    let root_info = parse_cert(root).map_err(|e| RevocationError::Issuer(e.to_string()))?;
    let issuer_info =
        parse_cert(&issuer_der).map_err(|e| RevocationError::Issuer(e.to_string()))?;
    if issuer_info.identity != list.issuer || !issuer_info.is_ca {
        return Err(RevocationError::Issuer("签发机构证书与列表不符".into()));
    }
    let alg = ecdsa_p256()?;
    if issuer_der != root {
        // A county CA: signed by the root, inside the root's scope.
        if list.issuer.role != Role::County
            || !root_info.identity.scope.contains_scope(&list.issuer.scope)
        {
            return Err(RevocationError::Issuer(
                "只有省级根机构和县级机构可以吊销".into(),
            ));
        }
        let (_, cert) = x509_parser::parse_x509_certificate(&issuer_der)
            .map_err(|e| RevocationError::Issuer(e.to_string()))?;
        if cert.signature_algorithm.algorithm.to_id_string() != ECDSA_SHA256_OID {
            return Err(RevocationError::Issuer("不支持的签名算法".into()));
        }
        let root_der = CertificateDer::from(root);
        let root_ee = webpki::EndEntityCert::try_from(&root_der)
            .map_err(|e| RevocationError::Issuer(e.to_string()))?;
        root_ee
            .verify_signature(
                alg,
                cert.tbs_certificate.as_ref(),
                &cert.signature_value.data,
            )
            .map_err(|_| RevocationError::Issuer("县级机构证书不是由本省根机构签发".into()))?;
    } else if list.issuer != root_info.identity {
        return Err(RevocationError::Issuer("根证书身份不符".into()));
    }
    let issuer_cert = CertificateDer::from(issuer_der.as_slice());
    let issuer_ee = webpki::EndEntityCert::try_from(&issuer_cert)
        .map_err(|e| RevocationError::Issuer(e.to_string()))?;
    issuer_ee
        .verify_signature(alg, signed.payload.as_bytes(), &sig)
        .map_err(|_| RevocationError::Signature)?;
    Ok(list)
}

/// Every signed list stored in a list document (conflicting values included).
pub fn signed_values(doc: &Automerge) -> Vec<SignedList> {
    let Ok(values) = doc.get_all(ROOT, FIELD) else {
        return Vec::new();
    };
    values
        .into_iter()
        .take(MAX_VALUES)
        .filter_map(|(v, _)| match v.as_scalar() {
            Some(ScalarValue::Bytes(b)) if b.len() <= MAX_SIGNED_LEN => {
                serde_json::from_slice::<SignedList>(b).ok()
            }
            _ => None,
        })
        .collect()
}

fn first_der(pem: &str) -> Result<Vec<u8>, RevocationError> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .ok_or_else(|| RevocationError::Issuer("没有证书".into()))?
        .map(|c| c.as_ref().to_vec())
        .map_err(|e| RevocationError::Issuer(e.to_string()))
}

/// The CA that signs a revocation list: its identity, certificate and key, and the province
/// root its lists must verify against (from a CA directory: `CaDir::revocation_issuer`).
#[derive(Debug, Clone, Copy)]
pub struct RevocationIssuer<'a> {
    /// The CA's identity.
    pub identity: NodeIdentity,
    /// The CA's certificate, PEM.
    pub cert_pem: &'a str,
    /// The CA's private key, PEM.
    pub key_pem: &'a str,
    /// The province root certificate, PEM.
    pub root_pem: &'a str,
    /// The CA's directory, whose `audit.jsonl` records the revocation.
    pub dir: &'a std::path::Path,
}

/// Revokes `nodes` and `serials` as `ca`: adds them to the CA's current list in `host`, signs
/// it with the next sequence number, and commits the document (durable when this returns).
/// Returns the new list.
pub fn publish(
    host: &dyn SyncHost,
    ca: RevocationIssuer<'_>,
    nodes: &[NodeId],
    serials: &[String],
    now_s: u64,
) -> Result<RevocationList, RevocationError> {
    let issuer = ca.identity;
    let root = first_der(ca.root_pem)?;
    let root = root.as_slice();
    let ca_cert = first_der(ca.cert_pem)?;
    let ca_cert_der = ca_cert.as_slice();
    let key_pem = ca.key_pem;
    let key = list_key(&issuer.scope, &issuer.node_id)?;
    let store_err = |e: String| RevocationError::Store(e);
    let mut doc = host
        .load(&key)
        .map_err(|e| store_err(e.to_string()))?
        .unwrap_or_else(Automerge::new);
    // Start from the newest list of ours that verifies.
    let current = signed_values(&doc)
        .iter()
        .filter_map(|s| verify_signed(s, root).ok())
        .filter(|l| l.issuer == issuer)
        .max_by_key(|l| l.seq);
    let mut list = current.unwrap_or(RevocationList {
        v: LIST_VERSION,
        issuer,
        seq: 0,
        issued_at_s: now_s,
        nodes: Vec::new(),
        serials: Vec::new(),
    });
    for n in nodes {
        if !list.nodes.contains(n) {
            list.nodes.push(*n);
        }
    }
    for s in serials {
        if !list.serials.contains(s) {
            list.serials.push(s.clone());
        }
    }
    list.seq += 1;
    list.issued_at_s = now_s;
    let signed = sign_list(&list, key_pem, ca_cert_der)?;
    // The list must verify as every receiver will verify it.
    verify_signed(&signed, root)?;
    let bytes =
        serde_json::to_vec(&signed).map_err(|e| RevocationError::Malformed(e.to_string()))?;
    let before = doc.get_heads();
    let mut tx = doc.transaction();
    tx.put(ROOT, FIELD, ScalarValue::Bytes(bytes))
        .map_err(|e| store_err(e.to_string()))?;
    tx.commit();
    host.commit(
        vec![DocWrite {
            key: key.clone(),
            // A new document is stored as a whole snapshot, as the records layer does.
            chunk: if before.is_empty() {
                doc.save()
            } else {
                doc.save_after(&before)
            },
            heads: doc.get_heads(),
            updated_at_ms: now_s * 1000,
        }],
        Vec::new(),
    )
    .map_err(|e| store_err(e.to_string()))?;
    let revoked: Vec<String> = nodes
        .iter()
        .map(ToString::to_string)
        .chain(serials.iter().map(|s| format!("serial:{s}")))
        .collect();
    crate::audit::Audit::open(ca.dir)
        .record(crate::audit::AuditEvent::now(
            &issuer.node_id.to_string(),
            "revoke",
            &revoked.join(","),
            format!("seq={}", list.seq),
        ))
        .map_err(|e| store_err(e.to_string()))?;
    tracing::info!(
        target: "cunyun::_events::revocation_published",
        key = %key,
        seq = list.seq,
        nodes = list.nodes.len(),
        serials = list.serials.len()
    );
    Ok(list)
}

/// Revoked node ids and serials this node enforces (see the module docs).
#[derive(Debug, Default)]
pub struct RevocationSet {
    inner: RwLock<Revoked>,
}

#[derive(Debug, Default)]
struct Revoked {
    /// Revoked node id → the issuers that revoked it.
    nodes: HashMap<NodeId, Vec<NodeIdentity>>,
    /// Revoked certificate serial (hex) → the issuers that revoked it.
    serials: HashMap<String, Vec<NodeIdentity>>,
    /// The newest list sequence accepted per issuer.
    seen: HashMap<NodeId, u64>,
    /// The heads digest of each list document when it was last read.
    read: HashMap<DocKey, cunyun_protocol::digest::HeadsDigest>,
}

impl RevocationSet {
    /// An empty set.
    pub fn new() -> RevocationSet {
        RevocationSet::default()
    }

    /// Adds a verified list; returns whether anything new was revoked.
    pub fn add(&self, list: &RevocationList) -> bool {
        let Ok(mut r) = self.inner.write() else {
            return false;
        };
        let mut changed = false;
        for n in &list.nodes {
            let by = r.nodes.entry(*n).or_default();
            if !by.contains(&list.issuer) {
                by.push(list.issuer);
                changed = true;
            }
        }
        for s in &list.serials {
            let by = r.serials.entry(s.to_ascii_lowercase()).or_default();
            if !by.contains(&list.issuer) {
                by.push(list.issuer);
                changed = true;
            }
        }
        let seen = r.seen.entry(list.issuer.node_id).or_default();
        *seen = (*seen).max(list.seq);
        changed
    }

    /// Why a certificate with this identity and serial is revoked, if it is: revoked by an
    /// issuer whose scope contains the certificate's.
    pub fn revoked(&self, identity: &NodeIdentity, serial: &[u8]) -> Option<String> {
        let r = self.inner.read().ok()?;
        let applies = |by: &Vec<NodeIdentity>| {
            by.iter()
                .find(|i| i.scope.contains_scope(&identity.scope))
                .copied()
        };
        if let Some(by) = r.nodes.get(&identity.node_id).and_then(applies) {
            return Some(format!("{}，由 {} 吊销", identity.node_id, by.node_id));
        }
        let serial = hex::encode(serial);
        r.serials.get(&serial).and_then(applies).map(|by| {
            format!(
                "{}（证书序列号 {serial}），由 {} 吊销",
                identity.node_id, by.node_id
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

    /// Reads every list document of the province of `scope` in `host` and adds each list that
    /// verifies against `root`. Returns how many lists were newly effective.
    pub fn refresh(&self, host: &dyn SyncHost, scope: &AreaScope, root: &[u8]) -> usize {
        let province = format!("{}0000000000", scope.prefix().get(..2).unwrap_or("00"));
        let start = format!("{province}/rev/").into_bytes();
        let end = format!("{province}/rev0").into_bytes();
        let mut added = 0;
        let entries = match host.scan_range(&start, &end) {
            Ok(entries) => entries,
            Err(e) => {
                tracing::warn!(error = %e, "revocation lists unreadable");
                return 0;
            }
        };
        for entry in entries {
            let key = entry.key;
            let unchanged = self
                .inner
                .read()
                .map(|r| r.read.get(&key) == Some(&entry.digest))
                .unwrap_or(false);
            if unchanged {
                continue;
            }
            if let Ok(mut r) = self.inner.write() {
                r.read.insert(key.clone(), entry.digest);
            }
            let doc = match host.load(&key) {
                Ok(Some(doc)) => doc,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(key = %key, error = %e, "revocation list unreadable");
                    continue;
                }
            };
            for signed in signed_values(&doc) {
                match verify_signed(&signed, root) {
                    Ok(list) => {
                        if self.add(&list) {
                            added += 1;
                            tracing::info!(
                                target: "cunyun::_events::revocation_accepted",
                                issuer = %list.issuer.node_id,
                                seq = list.seq,
                                nodes = list.nodes.len()
                            );
                        }
                    }
                    Err(e) => {
                        tracing::warn!(key = %key, error = %e, "revocation list refused");
                    }
                }
            }
        }
        added
    }
}
