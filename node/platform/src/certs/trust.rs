//! Verifying a peer's certificate chain: the province root, scope narrowing, expiry with a
//! clock that may be wrong, and revocation.
//!
//! [`ChainVerifier`] is the rustls client *and* server certificate verifier of every sync
//! connection. For a presented chain (node certificate, then at most one county CA) it
//! 1. checks signatures, CA flags and key usages up to the configured province root (webpki);
//! 2. checks the chain policy of [`cunyun_protocol::cert::check_chain`] — every certificate's
//!    scope inside its issuer's, a hub root, county intermediates, allowed roles;
//! 3. checks validity against the node's **trusted time** ([`TrustClock`]);
//! 4. refuses a chain any certificate of which is on a revocation list the node has accepted
//!    ([`crate::certs::revocation`]).
//!
//! # Clock rule (Pis without a battery-backed clock)
//! A village Pi's clock may read 1970, or the moment it lost power, after a power cut. The node
//! therefore never trusts its clock to be *earlier* than the newest time it has evidence for:
//! **trusted time = max(system clock, high-water mark)**, where the high-water mark is the
//! newest of: the `notBefore` of every certificate that passed verification (its own included,
//! at start), and the system clock at any earlier check — the latter believed only up to
//! [`MAX_SYSTEM_AHEAD_S`] past that certificate evidence, so a clock reading years ahead is
//! never remembered. The mark is kept in `<tls dir>/clock` and only moves forward.
//! Consequences:
//! - a certificate whose `notAfter` is before trusted time is refused (expired), even if the
//!   system clock has been set back;
//! - a certificate whose `notBefore` is after trusted time is **accepted** (its issuer's clock
//!   is the better evidence of the time) and moves the mark forward;
//! - a node whose clock runs behind can accept a certificate that expired after the mark and
//!   before the real time; the mark bounds that window to the time since the node last saw a
//!   fresh certificate or a correct clock.

use std::cell::RefCell;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cunyun_protocol::cert::{check_chain, parse_cert, CertInfo, MAX_INTERMEDIATES};
use cunyun_protocol::identity::NodeIdentity;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, TrustAnchor, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

use crate::certs::revocation::RevocationSet;

/// Why a peer's chain was refused. Messages are for operators (Chinese).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TrustError {
    /// A certificate could not be read, or carries no valid identity.
    #[error("证书无效: {0}")]
    Cert(String),
    /// Too many certificates below the root.
    #[error("证书链过长（{0} 个中间证书）")]
    TooLong(usize),
    /// The chain does not lead to the province root (another CA, bad signature, ...).
    #[error("证书不是由本省证书机构签发: {0}")]
    UnknownIssuer(String),
    /// The chain breaks the scope or role policy.
    #[error("证书链不符合范围规则: {0}")]
    Policy(String),
    /// A certificate of the chain has expired (by trusted time).
    #[error("证书已过期（有效期至 {not_after}，可信时间 {trusted_now}）")]
    Expired {
        /// End of validity, Unix seconds.
        not_after: i64,
        /// Trusted time used, Unix seconds.
        trusted_now: u64,
    },
    /// A certificate of the chain has been revoked.
    #[error("证书已被吊销（节点 {0}）")]
    Revoked(String),
}

impl From<TrustError> for rustls::Error {
    fn from(e: TrustError) -> Self {
        use rustls::CertificateError as C;
        match e {
            TrustError::Expired { .. } => rustls::Error::InvalidCertificate(C::Expired),
            TrustError::Revoked(_) => rustls::Error::InvalidCertificate(C::Revoked),
            TrustError::UnknownIssuer(_) => rustls::Error::InvalidCertificate(C::UnknownIssuer),
            other => {
                rustls::Error::InvalidCertificate(C::Other(rustls::OtherError(Arc::new(other))))
            }
        }
    }
}

/// The node's trusted time: never earlier than the newest time it has evidence for.
#[derive(Debug)]
pub struct TrustClock {
    state: Mutex<Marks>,
    path: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy)]
struct Marks {
    /// The high-water mark.
    mark: u64,
    /// The newest `notBefore` of a verified certificate (the mark's certificate evidence).
    evidence: u64,
}

/// The mark is written to disk when it moves by at least this much.
const PERSIST_STEP_S: u64 = 60;

/// The system clock is remembered in the mark only up to this far past the newest certificate
/// start seen: a clock reading years ahead (garbage after a power cut) is used for the check at
/// hand but never remembered, so fixing the clock fixes the node.
pub const MAX_SYSTEM_AHEAD_S: u64 = 365 * 86_400;

fn system_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl TrustClock {
    /// A clock with no persisted mark (tests, tools); `mark` counts as certificate evidence.
    pub fn in_memory(mark: u64) -> TrustClock {
        TrustClock {
            state: Mutex::new(Marks {
                mark,
                evidence: mark,
            }),
            path: None,
        }
    }

    /// Loads the marks from `path` (`<mark> <evidence>`; missing or unreadable: 0) and keeps
    /// them there.
    pub fn load(path: PathBuf) -> TrustClock {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let mut nums = text.split_whitespace().map(|n| n.parse::<u64>().ok());
        let mark = nums.next().flatten().unwrap_or(0);
        let evidence = nums.next().flatten().unwrap_or(mark).min(mark);
        TrustClock {
            state: Mutex::new(Marks { mark, evidence }),
            path: Some(path),
        }
    }

    /// The high-water mark, Unix seconds.
    pub fn mark(&self) -> u64 {
        self.state.lock().map(|m| m.mark).unwrap_or(0)
    }

    /// Trusted time for a system clock reading `system` (Unix seconds).
    pub fn trusted(&self, system: u64) -> u64 {
        system.max(self.mark())
    }

    /// Records certificate evidence that the time is at least `t` (a verified `notBefore`).
    pub fn observe(&self, t: u64) {
        self.advance(t, true);
    }

    /// Records a system clock reading `t`, believed only up to [`MAX_SYSTEM_AHEAD_S`] past the
    /// certificate evidence.
    pub fn observe_system(&self, t: u64) {
        self.advance(t, false);
    }

    fn advance(&self, t: u64, is_evidence: bool) {
        let Ok(mut m) = self.state.lock() else {
            return;
        };
        let before = *m;
        if is_evidence {
            m.evidence = m.evidence.max(t);
            m.mark = m.mark.max(t);
        } else if t <= m.evidence.saturating_add(MAX_SYSTEM_AHEAD_S) {
            m.mark = m.mark.max(t);
        }
        let persist = m.mark >= before.mark.saturating_add(PERSIST_STEP_S)
            || (m.evidence > before.evidence && m.mark > before.mark);
        if let (true, Some(path)) = (persist, &self.path) {
            let tmp = path.with_extension("tmp");
            let r = std::fs::write(&tmp, format!("{} {}", m.mark, m.evidence))
                .and_then(|_| std::fs::rename(&tmp, path));
            if let Err(e) = r {
                tracing::warn!(path = %path.display(), error = %e, "could not persist the trusted-time mark");
            }
        }
    }
}

/// A chain that passed: the peer's identity and what its certificates say.
#[derive(Debug, Clone)]
pub struct VerifiedChain {
    /// The node certificate's identity.
    pub identity: NodeIdentity,
    /// The node certificate.
    pub leaf: CertInfo,
    /// The CAs below the root, nearest the leaf first.
    pub intermediates: Vec<CertInfo>,
}

/// Verifies peers' chains against one province root (see the module docs).
pub struct ChainVerifier {
    root_der: CertificateDer<'static>,
    anchor: TrustAnchor<'static>,
    root: CertInfo,
    clock: Arc<TrustClock>,
    revoked: Arc<RevocationSet>,
    provider: Arc<CryptoProvider>,
}

impl std::fmt::Debug for ChainVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChainVerifier")
            .field("root", &self.root.identity)
            .finish_non_exhaustive()
    }
}

impl ChainVerifier {
    /// A verifier trusting the root certificate `root` (DER).
    pub fn new(
        root: &CertificateDer<'_>,
        clock: Arc<TrustClock>,
        revoked: Arc<RevocationSet>,
        provider: Arc<CryptoProvider>,
    ) -> Result<ChainVerifier, TrustError> {
        let info = parse_cert(root.as_ref()).map_err(|e| TrustError::Cert(e.to_string()))?;
        let anchor = webpki::anchor_from_trusted_cert(root)
            .map_err(|e| TrustError::Cert(format!("根证书无效: {e}")))?
            .to_owned();
        Ok(ChainVerifier {
            root_der: root.clone().into_owned(),
            anchor,
            root: info,
            clock,
            revoked,
            provider,
        })
    }

    /// The root's identity.
    pub fn root_identity(&self) -> NodeIdentity {
        self.root.identity
    }

    /// The root certificate (DER).
    pub fn root_der(&self) -> &CertificateDer<'static> {
        &self.root_der
    }

    /// The revocations this verifier enforces.
    pub fn revocations(&self) -> &Arc<RevocationSet> {
        &self.revoked
    }

    /// The trusted-time clock this verifier uses.
    pub fn clock(&self) -> &Arc<TrustClock> {
        &self.clock
    }

    /// Verifies a presented chain at system time `system_now` (Unix seconds).
    pub fn verify(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        system_now: u64,
        usage: webpki::KeyUsage,
    ) -> Result<VerifiedChain, TrustError> {
        if intermediates.len() > MAX_INTERMEDIATES {
            return Err(TrustError::TooLong(intermediates.len()));
        }
        let cert = |der: &CertificateDer<'_>| {
            parse_cert(der.as_ref()).map_err(|e| TrustError::Cert(e.to_string()))
        };
        let leaf = cert(end_entity)?;
        let inter = intermediates
            .iter()
            .map(cert)
            .collect::<Result<Vec<_>, _>>()?;
        let trusted_now = self.clock.trusted(system_now);
        // Expiry by trusted time; a notBefore in the future is tolerated (see the clock rule).
        for c in std::iter::once(&leaf)
            .chain(&inter)
            .chain(std::iter::once(&self.root))
        {
            if c.not_after < trusted_now as i64 {
                return Err(TrustError::Expired {
                    not_after: c.not_after,
                    trusted_now,
                });
            }
        }
        let newest_start = std::iter::once(&leaf)
            .chain(&inter)
            .chain(std::iter::once(&self.root))
            .map(|c| c.not_before.max(0) as u64)
            .max()
            .unwrap_or(0);
        // webpki checks validity too; give it a time inside every certificate's period.
        let check_time =
            UnixTime::since_unix_epoch(Duration::from_secs(trusted_now.max(newest_start)));
        let ee = webpki::EndEntityCert::try_from(end_entity)
            .map_err(|e| TrustError::Cert(e.to_string()))?;
        let policy_error: RefCell<Option<String>> = RefCell::new(None);
        let root_identity = self.root.identity;
        let leaf_identity = leaf.identity;
        let check_path = |path: &webpki::VerifiedPath<'_>| -> Result<(), webpki::Error> {
            let ids: Result<Vec<NodeIdentity>, String> = path
                .intermediate_certificates()
                .map(|c| {
                    parse_cert(c.der().as_ref())
                        .map(|i| i.identity)
                        .map_err(|e| e.to_string())
                })
                .collect();
            let result = ids.and_then(|ids| {
                check_chain(&root_identity, &ids, &leaf_identity).map_err(|e| e.to_string())
            });
            result.map_err(|e| {
                *policy_error.borrow_mut() = Some(e);
                webpki::Error::UnknownIssuer
            })
        };
        let verified = ee.verify_for_usage(
            self.provider.signature_verification_algorithms.all,
            std::slice::from_ref(&self.anchor),
            intermediates,
            check_time,
            usage,
            None,
            Some(&check_path),
        );
        if let Err(e) = verified {
            return Err(match policy_error.into_inner() {
                Some(reason) => TrustError::Policy(reason),
                None => TrustError::UnknownIssuer(format!("{e:?}")),
            });
        }
        for c in std::iter::once(&leaf).chain(&inter) {
            if let Some(why) = self.revoked.revoked(&c.identity, &c.serial) {
                return Err(TrustError::Revoked(why));
            }
        }
        self.clock.observe(newest_start);
        self.clock.observe_system(system_now);
        Ok(VerifiedChain {
            identity: leaf.identity,
            leaf,
            intermediates: inter,
        })
    }

    fn verify_rustls(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
        usage: webpki::KeyUsage,
    ) -> Result<(), rustls::Error> {
        match self.verify(end_entity, intermediates, now.as_secs(), usage) {
            Ok(_) => Ok(()),
            Err(e) => {
                tracing::warn!(
                    target: "cunyun::_events::peer_certificate_refused",
                    error = %e
                );
                Err(e.into())
            }
        }
    }

    fn tls12(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn tls13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Peers are reached by LAN address and identified by the identity URI, so the server name is
/// not checked; everything else is.
impl ServerCertVerifier for ChainVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.verify_rustls(
            end_entity,
            intermediates,
            now,
            webpki::KeyUsage::server_auth(),
        )?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes()
    }
}

impl ClientCertVerifier for ChainVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.verify_rustls(
            end_entity,
            intermediates,
            now,
            webpki::KeyUsage::client_auth(),
        )?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes()
    }
}

/// Unix seconds now by the system clock (which [`TrustClock`] corrects).
pub fn system_time_s() -> u64 {
    system_now()
}
