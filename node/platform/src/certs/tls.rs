//! Node certificates and mutual TLS 1.3.
//!
//! Every node holds a certificate chained to the province root CA held by the hub, either
//! directly or through the county CA of its county (province → county → village; see
//! [`cunyun_protocol::cert`] for the chain policy and [`crate::certs::enroll`] for how certificates
//! are obtained). `cunyun-node init` makes a local development root instead. Every certificate
//! (CAs included) binds an identity — id, role, scope — as a subjectAltName URI
//! ([`cunyun_protocol::identity`]). Both sides of a connection present their chain; each side
//! verifies the other's with [`crate::certs::trust::ChainVerifier`] and then takes the peer's identity
//! **from the certificate**, never from anything said inside the session.
//!
//! Every certificate also carries the DNS name [`SERVER_NAME`], which clients use as the TLS
//! server name: peers are reached by IP addresses found on the LAN, and what identifies them is
//! the identity URI, not a host name.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use cunyun_protocol::area::AreaScope;
use cunyun_protocol::cert::{check_chain, parse_cert};
use cunyun_protocol::identity::NodeIdentity;
use cunyun_protocol::key::Role;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ServerConfig};
use tokio::net::TcpStream;

use crate::certs::revocation::RevocationSet;
use crate::certs::trust::{ChainVerifier, TrustClock};

/// The DNS name every node certificate carries and every client asks for.
pub const SERVER_NAME: &str = "node.cunyun.invalid";

/// Why a certificate or TLS operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// Making or signing a certificate failed.
    #[error("证书生成失败: {0}")]
    Generate(#[from] rcgen::Error),
    /// A PEM file could not be read or parsed.
    #[error("证书文件 {path} 无法读取: {reason}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// rustls refused the configuration or the handshake.
    #[error("TLS 错误: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client verifier could not be built (e.g. empty CA store).
    #[error("TLS 客户端校验器配置错误: {0}")]
    Verifier(String),
    /// The peer's certificate carries no valid cunyun identity.
    #[error("对端证书没有有效的节点身份: {0}")]
    NoIdentity(String),
    /// A CA refused to issue a certificate that would break the chain policy.
    #[error("不能签发该证书: {0}")]
    Policy(String),
    /// The trust root or a chain was refused.
    #[error(transparent)]
    Trust(#[from] crate::certs::trust::TrustError),
    /// The connection failed.
    #[error("连接失败: {0}")]
    Io(#[from] std::io::Error),
}

/// A certificate and its private key, PEM-encoded.
#[derive(Clone)]
pub struct CertKeyPem {
    /// Certificate (PEM); a node certificate is followed by the county CA that issued it.
    pub cert_pem: String,
    /// Private key (PEM). Keep it readable by the node only.
    pub key_pem: String,
}

/// How long certificates are valid, in days.
pub const ROOT_VALIDITY_DAYS: i64 = 20 * 365;
/// How long a county CA certificate is valid, in days.
pub const COUNTY_CA_VALIDITY_DAYS: i64 = 10 * 365;
/// How long a node certificate is valid, in days (renewal: issue a new one for the same id).
pub const NODE_VALIDITY_DAYS: i64 = 2 * 365;

/// A validity period, Unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    /// Start.
    pub not_before: i64,
    /// End.
    pub not_after: i64,
}

impl Validity {
    /// From `now` (Unix seconds) for `days` days; starts an hour early to absorb small skew.
    pub fn from_now(now: u64, days: i64) -> Validity {
        let now = now as i64;
        Validity {
            not_before: now - 3600,
            not_after: now + days * 86_400,
        }
    }

    fn apply(&self, params: &mut CertificateParams) -> Result<(), TlsError> {
        let t = |s: i64| {
            time::OffsetDateTime::from_unix_timestamp(s)
                .map_err(|e| TlsError::Verifier(format!("有效期无效: {e}")))
        };
        params.not_before = t(self.not_before)?;
        params.not_after = t(self.not_after)?;
        Ok(())
    }
}

/// Why a CA refused to issue a certificate.
fn refuse_issue(
    ca: &NodeIdentity,
    child: &NodeIdentity,
    intermediate: bool,
) -> Result<(), TlsError> {
    let root = NodeIdentity {
        role: Role::Hub,
        ..*ca
    };
    let r = if intermediate {
        check_chain(ca, &[*child], child)
    } else if ca.role == Role::Hub {
        check_chain(ca, &[], child)
    } else {
        // A county CA: check as the chain root → county CA → child would be.
        check_chain(&root, &[*ca], child)
    };
    r.map_err(|e| TlsError::Policy(e.to_string()))
}

/// A certificate authority: the province root (role hub) or a county CA (role county).
pub struct CertAuthority {
    issuer: Issuer<'static, KeyPair>,
    /// The CA's identity (from its certificate).
    pub identity: NodeIdentity,
    /// The CA's own certificate and key.
    pub pem: CertKeyPem,
}

fn ca_params(name: &str, identity: &NodeIdentity) -> Result<CertificateParams, TlsError> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, format!("{name} {}", identity.node_id));
    dn.push(DnType::OrganizationName, "cunyun");
    params.distinguished_name = dn;
    params
        .subject_alt_names
        .push(SanType::URI(identity.to_uri().try_into()?));
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}

impl CertAuthority {
    /// Creates a new self-signed province root CA named `name` with a hub `identity`
    /// (e.g. scope `51`), valid for [`ROOT_VALIDITY_DAYS`] from now.
    pub fn create(name: &str, identity: &NodeIdentity) -> Result<CertAuthority, TlsError> {
        if identity.role != Role::Hub {
            return Err(TlsError::Policy("根证书机构的角色必须是 hub".into()));
        }
        let key = KeyPair::generate()?;
        let mut params = ca_params(name, identity)?;
        Validity::from_now(crate::certs::trust::system_time_s(), ROOT_VALIDITY_DAYS)
            .apply(&mut params)?;
        let cert = params.self_signed(&key)?;
        let pem = CertKeyPem {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        };
        Ok(CertAuthority {
            issuer: Issuer::new(params, key),
            identity: *identity,
            pem,
        })
    }

    /// Loads a CA from its PEM certificate (its own first) and key.
    pub fn from_pem(pem: CertKeyPem) -> Result<CertAuthority, TlsError> {
        let key = KeyPair::from_pem(&pem.key_pem)?;
        let origin = Path::new("<CA>");
        let first = parse_certs(&pem.cert_pem, origin)?
            .into_iter()
            .next()
            .ok_or_else(|| TlsError::Verifier("没有证书".into()))?;
        let identity = identity_of(&first)?;
        let issuer = Issuer::from_ca_cert_der(&first, key)?;
        Ok(CertAuthority {
            issuer,
            identity,
            pem,
        })
    }

    /// Whether this is a county CA (its certificates travel with node certificates it issues).
    pub fn is_intermediate(&self) -> bool {
        self.identity.role != Role::Hub
    }

    /// The CA's own certificate (first PEM block only).
    fn own_cert_pem(&self) -> Result<String, TlsError> {
        first_pem_block(&self.pem.cert_pem).ok_or_else(|| TlsError::Pem {
            path: "<CA>".into(),
            reason: "没有证书".into(),
        })
    }

    /// Issues a node certificate for `identity`, valid for [`NODE_VALIDITY_DAYS`].
    pub fn issue(&self, identity: &NodeIdentity) -> Result<CertKeyPem, TlsError> {
        self.issue_with(
            identity,
            Validity::from_now(crate::certs::trust::system_time_s(), NODE_VALIDITY_DAYS),
        )
    }

    /// Issues a node certificate for `identity` with a new key and the given validity. The
    /// identity must narrow this CA's scope and have a role this CA may issue. A county CA's
    /// certificate is appended, so the file is the chain a peer needs.
    pub fn issue_with(
        &self,
        identity: &NodeIdentity,
        validity: Validity,
    ) -> Result<CertKeyPem, TlsError> {
        let key = KeyPair::generate()?;
        let cert_pem = self.issue_for_key(identity, &key, validity)?;
        Ok(CertKeyPem {
            cert_pem,
            key_pem: key.serialize_pem(),
        })
    }

    /// Issues a node certificate for `identity` over someone else's `public_key` (enrollment
    /// over the network); returns the chain PEM (certificate, then this CA's if a county CA).
    pub fn issue_for_key(
        &self,
        identity: &NodeIdentity,
        public_key: &impl rcgen::PublicKeyData,
        validity: Validity,
    ) -> Result<String, TlsError> {
        refuse_issue(&self.identity, identity, false)?;
        let mut params = CertificateParams::new(vec![SERVER_NAME.to_string()])?;
        params
            .subject_alt_names
            .push(SanType::URI(identity.to_uri().try_into()?));
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            format!("cunyun node {}", identity.node_id),
        );
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        validity.apply(&mut params)?;
        let cert = params.signed_by(public_key, &self.issuer)?;
        let mut cert_pem = cert.pem();
        if self.is_intermediate() {
            cert_pem.push_str(&self.own_cert_pem()?);
        }
        Ok(cert_pem)
    }

    /// Issues a county CA certificate for `identity` (role county, scope inside this root's)
    /// over `public_key`, valid for [`COUNTY_CA_VALIDITY_DAYS`]. Only the root may.
    pub fn issue_county_ca(
        &self,
        identity: &NodeIdentity,
        public_key: &impl rcgen::PublicKeyData,
    ) -> Result<String, TlsError> {
        if self.is_intermediate() {
            return Err(TlsError::Policy(
                "只有省级根证书机构可以签发县级证书机构".into(),
            ));
        }
        if identity.role != Role::County {
            return Err(TlsError::Policy("中间证书机构的角色必须是 county".into()));
        }
        refuse_issue(&self.identity, identity, true)?;
        let mut params = ca_params("cunyun county CA (县级证书机构)", identity)?;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        Validity::from_now(
            crate::certs::trust::system_time_s(),
            COUNTY_CA_VALIDITY_DAYS,
        )
        .apply(&mut params)?;
        Ok(params.signed_by(public_key, &self.issuer)?.pem())
    }
}

/// The first PEM block of `pem`, if it has one.
fn first_pem_block(pem: &str) -> Option<String> {
    const END: &str = "-----END CERTIFICATE-----";
    let start = pem.find("-----BEGIN CERTIFICATE-----")?;
    let end = pem[start..].find(END)? + start + END.len();
    Some(format!("{}\n", &pem[start..end]))
}

fn parse_certs(pem: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    use rustls::pki_types::pem::PemObject;
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_owned(),
            reason: "没有证书".into(),
        });
    }
    Ok(certs)
}

fn parse_key(pem: &str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    use rustls::pki_types::pem::PemObject;
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| TlsError::Pem {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

/// Reads the cunyun identity from a certificate (DER).
pub fn identity_of(cert: &CertificateDer<'_>) -> Result<NodeIdentity, TlsError> {
    parse_cert(cert.as_ref())
        .map(|c| c.identity)
        .map_err(|e| TlsError::NoIdentity(e.to_string()))
}

/// The verified identity of the peer of an established connection.
fn peer_identity(conn: &rustls::CommonState) -> Result<NodeIdentity, TlsError> {
    let cert = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .ok_or_else(|| TlsError::NoIdentity("对端没有出示证书".into()))?;
    identity_of(cert)
}

/// Everything a node needs to speak mutual TLS: its identity and both configurations.
#[derive(Clone)]
pub struct TlsContext {
    /// Who this node is (read from its own certificate).
    pub identity: NodeIdentity,
    own: Arc<cunyun_protocol::cert::CertInfo>,
    verifier: Arc<ChainVerifier>,
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    blob_client: Arc<ClientConfig>,
}

/// ALPN protocol id of a content transfer connection ([`crate::blobs`]). The sync listener
/// offers it; a client that asks for it gets a blob session, and a client that asks for no
/// ALPN (every sync client) gets a sync session, as before.
pub const BLOB_ALPN: &[u8] = b"cunyun-blob/1";

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl TlsContext {
    /// Builds a context from the node's certificate chain, key and the root CA certificate it
    /// trusts, with an in-memory trusted-time mark. `origin` names where the PEMs came from.
    pub fn from_pem(
        node: &CertKeyPem,
        ca_cert_pem: &str,
        origin: &Path,
    ) -> Result<TlsContext, TlsError> {
        TlsContext::build(
            node,
            ca_cert_pem,
            origin,
            Arc::new(TrustClock::in_memory(0)),
            Arc::new(RevocationSet::new()),
        )
    }

    /// Builds a context with the given trusted-time clock and revocation set.
    pub fn build(
        node: &CertKeyPem,
        ca_cert_pem: &str,
        origin: &Path,
        clock: Arc<TrustClock>,
        revoked: Arc<RevocationSet>,
    ) -> Result<TlsContext, TlsError> {
        let chain = parse_certs(&node.cert_pem, origin)?;
        let key = parse_key(&node.key_pem, origin)?;
        let own = parse_cert(chain[0].as_ref()).map_err(|e| TlsError::NoIdentity(e.to_string()))?;
        let roots = parse_certs(ca_cert_pem, origin)?;
        if roots.len() != 1 {
            return Err(TlsError::Pem {
                path: origin.to_owned(),
                reason: format!("根证书文件应只含一个证书，实有 {} 个", roots.len()),
            });
        }
        // The node's own certificate is evidence of the time (see the clock rule).
        clock.observe(own.not_before.max(0) as u64);
        let verifier = Arc::new(ChainVerifier::new(&roots[0], clock, revoked, provider())?);
        let mut server = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier.clone())
            .with_single_cert(chain.clone(), key.clone_key())?;
        server.alpn_protocols = vec![BLOB_ALPN.to_vec()];
        let mut client = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(verifier.clone())
            .with_client_auth_cert(chain, key)?;
        // No session resumption: a resumed handshake skips certificate verification, so a peer
        // revoked (or expired) since the first handshake would still get in.
        server.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        server.send_tls13_tickets = 0;
        client.resumption = rustls::client::Resumption::disabled();
        let mut blob_client = client.clone();
        blob_client.alpn_protocols = vec![BLOB_ALPN.to_vec()];
        Ok(TlsContext {
            identity: own.identity,
            own: Arc::new(own),
            verifier,
            server: Arc::new(server),
            client: Arc::new(client),
            blob_client: Arc::new(blob_client),
        })
    }

    /// Loads `node.crt` (node certificate, then its county CA if any), `node.key` and `ca.crt`
    /// (the province root) from `dir`, with the trusted-time mark kept in `dir/clock`.
    pub fn load(dir: &Path, revoked: Arc<RevocationSet>) -> Result<TlsContext, TlsError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(|e| TlsError::Pem {
                path,
                reason: e.to_string(),
            })
        };
        let node = CertKeyPem {
            cert_pem: read("node.crt")?,
            key_pem: read("node.key")?,
        };
        let clock = Arc::new(TrustClock::load(dir.join("clock")));
        TlsContext::build(&node, &read("ca.crt")?, dir, clock, revoked)
    }

    /// What this node's own certificate says (validity, serial).
    pub fn own_cert(&self) -> &cunyun_protocol::cert::CertInfo {
        &self.own
    }

    /// The verifier every handshake uses (for tools and tests that check a chain directly).
    pub fn verifier(&self) -> &Arc<ChainVerifier> {
        &self.verifier
    }

    /// Opens a TLS connection to `addr` and returns it with the peer's verified identity.
    pub async fn connect(
        &self,
        addr: std::net::SocketAddr,
    ) -> Result<(tokio_rustls::client::TlsStream<TcpStream>, NodeIdentity), TlsError> {
        Self::connect_with(self.client.clone(), addr).await
    }

    /// Like [`TlsContext::connect`], for a content transfer session ([`BLOB_ALPN`]).
    pub async fn connect_blob(
        &self,
        addr: std::net::SocketAddr,
    ) -> Result<(tokio_rustls::client::TlsStream<TcpStream>, NodeIdentity), TlsError> {
        let (stream, peer) = Self::connect_with(self.blob_client.clone(), addr).await?;
        if stream.get_ref().1.alpn_protocol() != Some(BLOB_ALPN) {
            return Err(TlsError::Verifier("对端不支持内容传输".into()));
        }
        Ok((stream, peer))
    }

    async fn connect_with(
        config: Arc<ClientConfig>,
        addr: std::net::SocketAddr,
    ) -> Result<(tokio_rustls::client::TlsStream<TcpStream>, NodeIdentity), TlsError> {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let name =
            ServerName::try_from(SERVER_NAME).map_err(|e| TlsError::Verifier(e.to_string()))?;
        let stream = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await?;
        let peer = peer_identity(stream.get_ref().1)?;
        Ok((stream, peer))
    }

    /// Completes the server side of a handshake on an accepted connection.
    pub async fn accept(
        &self,
        tcp: TcpStream,
    ) -> Result<(tokio_rustls::server::TlsStream<TcpStream>, NodeIdentity), TlsError> {
        tcp.set_nodelay(true)?;
        let stream = tokio_rustls::TlsAcceptor::from(self.server.clone())
            .accept(tcp)
            .await?;
        let peer = peer_identity(stream.get_ref().1)?;
        Ok((stream, peer))
    }
}

/// Writes a development CA (if `ca_dir` has none yet) and a certificate for `identity` into
/// `tls_dir` as `node.crt`, `node.key`, `ca.crt`. Returns whether a new CA was created.
pub fn init_dev_identity(
    ca_dir: &Path,
    tls_dir: &Path,
    identity: &NodeIdentity,
) -> Result<bool, TlsError> {
    let io = |path: &Path, e: std::io::Error| TlsError::Pem {
        path: path.to_owned(),
        reason: e.to_string(),
    };
    std::fs::create_dir_all(ca_dir).map_err(|e| io(ca_dir, e))?;
    std::fs::create_dir_all(tls_dir).map_err(|e| io(tls_dir, e))?;
    let (ca_crt, ca_key) = (ca_dir.join("ca.crt"), ca_dir.join("ca.key"));
    let (ca, created) = if ca_crt.exists() && ca_key.exists() {
        let pem = CertKeyPem {
            cert_pem: std::fs::read_to_string(&ca_crt).map_err(|e| io(&ca_crt, e))?,
            key_pem: std::fs::read_to_string(&ca_key).map_err(|e| io(&ca_key, e))?,
        };
        (CertAuthority::from_pem(pem)?, false)
    } else {
        let province = AreaScope::parse(identity.scope.prefix().get(..2).unwrap_or("51"))
            .map_err(|e| TlsError::Policy(e.to_string()))?;
        let root = NodeIdentity {
            node_id: cunyun_protocol::identity::NodeId(rand::random()),
            role: Role::Hub,
            scope: province,
        };
        let ca = CertAuthority::create("cunyun development CA (村云开发用证书机构)", &root)?;
        write_private(&ca_key, &ca.pem.key_pem).map_err(|e| io(&ca_key, e))?;
        std::fs::write(&ca_crt, &ca.pem.cert_pem).map_err(|e| io(&ca_crt, e))?;
        (ca, true)
    };
    let node = ca.issue(identity)?;
    write_node_files(tls_dir, &node, &ca.pem.cert_pem)?;
    Ok(created)
}

/// Writes a node's `node.crt` (its chain), `node.key` (owner-only) and `ca.crt` (the province
/// root it trusts) into `tls_dir`, as [`TlsContext::load`] reads them.
pub fn write_node_files(
    tls_dir: &Path,
    node: &CertKeyPem,
    root_cert_pem: &str,
) -> Result<(), TlsError> {
    let io = |path: &Path, e: std::io::Error| TlsError::Pem {
        path: path.to_owned(),
        reason: e.to_string(),
    };
    std::fs::create_dir_all(tls_dir).map_err(|e| io(tls_dir, e))?;
    let crt = tls_dir.join("node.crt");
    let key = tls_dir.join("node.key");
    let ca_copy = tls_dir.join("ca.crt");
    write_private(&key, &node.key_pem).map_err(|e| io(&key, e))?;
    write_synced(&crt, &node.cert_pem).map_err(|e| io(&crt, e))?;
    write_synced(&ca_copy, root_cert_pem).map_err(|e| io(&ca_copy, e))?;
    Ok(())
}

/// Writes a file and syncs it.
fn write_synced(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::File::create(path)?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()
}

/// Writes a file readable by its owner only.
pub(crate) fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use cunyun_protocol::identity::NodeId;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn ident(n: u8, role: Role, scope: &str) -> NodeIdentity {
        NodeIdentity {
            node_id: NodeId([n; 16]),
            role,
            scope: AreaScope::parse(scope).expect("scope"),
        }
    }

    fn root_ca(name: &str, n: u8) -> CertAuthority {
        CertAuthority::create(name, &ident(n, Role::Hub, "51")).expect("ca")
    }

    fn ctx(ca: &CertAuthority, id: &NodeIdentity) -> TlsContext {
        let pem = ca.issue(id).expect("issue");
        TlsContext::from_pem(&pem, &ca.pem.cert_pem, Path::new("<test>")).expect("ctx")
    }

    /// Runs one handshake; returns what each side saw of the other, or the client's error.
    async fn handshake(
        server: TlsContext,
        client: TlsContext,
    ) -> Result<(NodeIdentity, NodeIdentity), String> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let srv = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.map_err(|e| e.to_string())?;
            let (mut s, peer) = server.accept(tcp).await.map_err(|e| e.to_string())?;
            let mut buf = [0u8; 4];
            s.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
            s.write_all(b"pong").await.map_err(|e| e.to_string())?;
            s.shutdown().await.map_err(|e| e.to_string())?;
            Ok::<_, String>(peer)
        });
        let client_side = async {
            let (mut c, peer) = client.connect(addr).await.map_err(|e| e.to_string())?;
            c.write_all(b"ping").await.map_err(|e| e.to_string())?;
            let mut buf = [0u8; 4];
            c.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
            Ok::<_, String>(peer)
        };
        let c = tokio::time::timeout(std::time::Duration::from_secs(10), client_side)
            .await
            .map_err(|_| "timeout".to_string())?;
        let s = tokio::time::timeout(std::time::Duration::from_secs(10), srv)
            .await
            .map_err(|_| "timeout".to_string())?
            .map_err(|e| e.to_string())?;
        Ok((s?, c?))
    }

    #[tokio::test]
    async fn mutual_tls_binds_identity_from_certificates() {
        let ca = root_ca("test CA", 200);
        let village = ident(1, Role::Village, "510116108203");
        let county = ident(2, Role::County, "510116");
        let (seen_by_server, seen_by_client) = handshake(ctx(&ca, &county), ctx(&ca, &village))
            .await
            .expect("handshake");
        assert_eq!(seen_by_server, village);
        assert_eq!(seen_by_client, county);
    }

    #[tokio::test]
    async fn certificate_from_another_ca_is_refused() {
        let ca = root_ca("test CA", 200);
        let rogue = root_ca("rogue CA", 201);
        let good = ctx(&ca, &ident(1, Role::Village, "510116108203"));
        let bad = ctx(&rogue, &ident(3, Role::Hub, "51"));
        assert!(
            handshake(good.clone(), bad.clone()).await.is_err(),
            "rogue client"
        );
        assert!(handshake(bad, good).await.is_err(), "rogue server");
    }

    #[test]
    fn init_writes_loadable_files_and_reuses_the_ca() {
        let dir = tempfile::tempdir().expect("tempdir");
        let id = ident(5, Role::Village, "510116108203");
        let created =
            init_dev_identity(&dir.path().join("ca"), &dir.path().join("a"), &id).expect("init");
        assert!(created);
        let id2 = ident(6, Role::County, "510116");
        let created =
            init_dev_identity(&dir.path().join("ca"), &dir.path().join("b"), &id2).expect("init");
        assert!(!created, "second node reuses the CA");
        assert_eq!(
            TlsContext::load(&dir.path().join("a"), Default::default())
                .expect("load")
                .identity,
            id
        );
        assert_eq!(
            TlsContext::load(&dir.path().join("b"), Default::default())
                .expect("load")
                .identity,
            id2
        );
        assert!(TlsContext::load(&dir.path().join("missing"), Default::default()).is_err());
    }

    /// A county CA under `root`, as enrollment makes it.
    fn county_ca(root: &CertAuthority, id: &NodeIdentity) -> CertAuthority {
        let key = KeyPair::generate().expect("key");
        let cert_pem = root.issue_county_ca(id, &key).expect("county CA");
        CertAuthority::from_pem(CertKeyPem {
            cert_pem,
            key_pem: key.serialize_pem(),
        })
        .expect("load county CA")
    }

    #[tokio::test]
    async fn province_county_village_chain_is_accepted_both_ways() {
        let root = root_ca("province", 200);
        let county_id = ident(2, Role::County, "510116");
        let county = county_ca(&root, &county_id);
        assert!(county.is_intermediate());
        let village = ident(1, Role::Village, "510116108203");
        let county_node = ident(3, Role::County, "510116");
        let v = county.issue(&village).expect("issue");
        assert_eq!(
            parse_certs(&v.cert_pem, Path::new("-")).expect("pem").len(),
            2
        );
        let v = TlsContext::from_pem(&v, &root.pem.cert_pem, Path::new("-")).expect("ctx");
        let c = TlsContext::from_pem(
            &county.issue(&county_node).expect("issue"),
            &root.pem.cert_pem,
            Path::new("-"),
        )
        .expect("ctx");
        let (seen_by_server, seen_by_client) = handshake(c.clone(), v.clone()).await.expect("ok");
        assert_eq!((seen_by_server, seen_by_client), (village, county_node));
        // A node issued directly by the root talks with one issued by the county CA.
        let hub = ctx(&root, &ident(4, Role::Hub, "51"));
        handshake(hub.clone(), v).await.expect("hub and village");
        handshake(c, hub).await.expect("county and hub");
    }

    #[test]
    fn cas_refuse_to_issue_wider_or_higher() {
        let root = root_ca("province", 200);
        let county = county_ca(&root, &ident(2, Role::County, "510116"));
        let key = KeyPair::generate().expect("key");
        // Outside the county, a hub, a county CA from a county CA, a county CA outside the root.
        assert!(matches!(
            county.issue(&ident(5, Role::Village, "510117104201")),
            Err(TlsError::Policy(_))
        ));
        assert!(matches!(
            county.issue(&ident(6, Role::Hub, "510116")),
            Err(TlsError::Policy(_))
        ));
        assert!(county
            .issue_county_ca(&ident(7, Role::County, "510116"), &key)
            .is_err());
        assert!(root
            .issue_county_ca(&ident(8, Role::County, "520102"), &key)
            .is_err());
        assert!(root
            .issue_county_ca(&ident(9, Role::Village, "510116108203"), &key)
            .is_err());
    }

    #[test]
    fn certificate_without_identity_is_refused() {
        let ca = root_ca("test CA", 200);
        let key = KeyPair::generate().expect("key");
        let params = CertificateParams::new(vec![SERVER_NAME.to_string()]).expect("params");
        let cert = params.signed_by(&key, &ca.issuer).expect("sign");
        assert!(matches!(
            identity_of(cert.der()),
            Err(TlsError::NoIdentity(_))
        ));
    }
}
