//! Node certificates and mutual TLS 1.3.
//!
//! Every node holds a certificate chained to the province CA (until enrollment exists, a local
//! development CA made by `cunyun-node init`). The certificate binds the node's identity — id,
//! role, scope — as a subjectAltName URI ([`cunyun_protocol::identity`]). Both sides of a
//! connection present certificates; each side verifies the other's chain and then takes the
//! peer's identity **from the certificate**, never from anything said inside the session.
//!
//! Every certificate also carries the DNS name [`SERVER_NAME`], which clients use as the TLS
//! server name: peers are reached by IP addresses found on the LAN, and what identifies them is
//! the identity URI, not a host name.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use cunyun_protocol::identity::{NodeIdentity, IDENTITY_URI_PREFIX};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::net::TcpStream;

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
    /// The connection failed.
    #[error("连接失败: {0}")]
    Io(#[from] std::io::Error),
}

/// A certificate and its private key, PEM-encoded.
#[derive(Clone)]
pub struct CertKeyPem {
    /// Certificate (PEM).
    pub cert_pem: String,
    /// Private key (PEM). Keep it readable by the node only.
    pub key_pem: String,
}

/// A certificate authority that can issue node certificates.
pub struct CertAuthority {
    issuer: Issuer<'static, KeyPair>,
    /// The CA's own certificate and key.
    pub pem: CertKeyPem,
}

fn ca_params(name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn.push(DnType::OrganizationName, "cunyun");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

impl CertAuthority {
    /// Creates a new self-signed CA named `name` (e.g. "cunyun development CA").
    pub fn create(name: &str) -> Result<CertAuthority, TlsError> {
        let key = KeyPair::generate()?;
        let params = ca_params(name);
        let cert = params.self_signed(&key)?;
        let pem = CertKeyPem {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        };
        Ok(CertAuthority {
            issuer: Issuer::new(params, key),
            pem,
        })
    }

    /// Loads a CA from its PEM certificate and key.
    pub fn from_pem(pem: CertKeyPem) -> Result<CertAuthority, TlsError> {
        let key = KeyPair::from_pem(&pem.key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(&pem.cert_pem, key)?;
        Ok(CertAuthority { issuer, pem })
    }

    /// Issues a certificate for a node with this identity.
    pub fn issue(&self, identity: &NodeIdentity) -> Result<CertKeyPem, TlsError> {
        let key = KeyPair::generate()?;
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
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(CertKeyPem {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
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
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref())
        .map_err(|e| TlsError::NoIdentity(format!("证书无法解析: {e}")))?;
    let san = parsed
        .subject_alternative_name()
        .map_err(|e| TlsError::NoIdentity(format!("subjectAltName 无法解析: {e}")))?
        .ok_or_else(|| TlsError::NoIdentity("证书没有 subjectAltName".into()))?;
    let mut found = None;
    for name in &san.value.general_names {
        if let x509_parser::extensions::GeneralName::URI(uri) = name {
            if uri.starts_with(IDENTITY_URI_PREFIX) {
                if found.is_some() {
                    return Err(TlsError::NoIdentity("证书含有多个节点身份".into()));
                }
                found = Some(
                    NodeIdentity::from_uri(uri).map_err(|e| TlsError::NoIdentity(e.to_string()))?,
                );
            }
        }
    }
    found.ok_or_else(|| TlsError::NoIdentity("证书中没有 urn:cunyun:node 身份".into()))
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
    /// Builds a context from the node's certificate chain, key and the CA certificate it trusts.
    /// `origin` names where the PEMs came from, for error messages.
    pub fn from_pem(
        node: &CertKeyPem,
        ca_cert_pem: &str,
        origin: &Path,
    ) -> Result<TlsContext, TlsError> {
        let chain = parse_certs(&node.cert_pem, origin)?;
        let key = parse_key(&node.key_pem, origin)?;
        let identity = identity_of(&chain[0])?;
        let mut roots = RootCertStore::empty();
        for ca in parse_certs(ca_cert_pem, origin)? {
            roots.add(ca)?;
        }
        let roots = Arc::new(roots);
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
            .build()
            .map_err(|e| TlsError::Verifier(e.to_string()))?;
        let mut server = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())?;
        server.alpn_protocols = vec![BLOB_ALPN.to_vec()];
        let client = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)?;
        let mut blob_client = client.clone();
        blob_client.alpn_protocols = vec![BLOB_ALPN.to_vec()];
        Ok(TlsContext {
            identity,
            server: Arc::new(server),
            client: Arc::new(client),
            blob_client: Arc::new(blob_client),
        })
    }

    /// Loads `node.crt`, `node.key` and `ca.crt` from `dir` (as `cunyun-node init` writes them).
    pub fn load(dir: &Path) -> Result<TlsContext, TlsError> {
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
        TlsContext::from_pem(&node, &read("ca.crt")?, dir)
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
        let ca = CertAuthority::create("cunyun development CA (村云开发用证书机构)")?;
        write_private(&ca_key, &ca.pem.key_pem).map_err(|e| io(&ca_key, e))?;
        std::fs::write(&ca_crt, &ca.pem.cert_pem).map_err(|e| io(&ca_crt, e))?;
        (ca, true)
    };
    let node = ca.issue(identity)?;
    let crt = tls_dir.join("node.crt");
    let key = tls_dir.join("node.key");
    let ca_copy = tls_dir.join("ca.crt");
    write_private(&key, &node.key_pem).map_err(|e| io(&key, e))?;
    std::fs::write(&crt, &node.cert_pem).map_err(|e| io(&crt, e))?;
    std::fs::write(&ca_copy, &ca.pem.cert_pem).map_err(|e| io(&ca_copy, e))?;
    Ok(created)
}

/// Writes a file readable by its owner only.
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
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
    use cunyun_protocol::area::AreaScope;
    use cunyun_protocol::identity::NodeId;
    use cunyun_protocol::key::Role;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn ident(n: u8, role: Role, scope: &str) -> NodeIdentity {
        NodeIdentity {
            node_id: NodeId([n; 16]),
            role,
            scope: AreaScope::parse(scope).expect("scope"),
        }
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
        let ca = CertAuthority::create("test CA").expect("ca");
        let village = ident(1, Role::Village, "510116104201");
        let county = ident(2, Role::County, "510116");
        let (seen_by_server, seen_by_client) = handshake(ctx(&ca, &county), ctx(&ca, &village))
            .await
            .expect("handshake");
        assert_eq!(seen_by_server, village);
        assert_eq!(seen_by_client, county);
    }

    #[tokio::test]
    async fn certificate_from_another_ca_is_refused() {
        let ca = CertAuthority::create("test CA").expect("ca");
        let rogue = CertAuthority::create("rogue CA").expect("ca");
        let good = ctx(&ca, &ident(1, Role::Village, "510116104201"));
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
        let id = ident(5, Role::Village, "510116104201");
        let created =
            init_dev_identity(&dir.path().join("ca"), &dir.path().join("a"), &id).expect("init");
        assert!(created);
        let id2 = ident(6, Role::County, "510116");
        let created =
            init_dev_identity(&dir.path().join("ca"), &dir.path().join("b"), &id2).expect("init");
        assert!(!created, "second node reuses the CA");
        assert_eq!(
            TlsContext::load(&dir.path().join("a"))
                .expect("load")
                .identity,
            id
        );
        assert_eq!(
            TlsContext::load(&dir.path().join("b"))
                .expect("load")
                .identity,
            id2
        );
        assert!(TlsContext::load(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn certificate_without_identity_is_refused() {
        let ca = CertAuthority::create("test CA").expect("ca");
        let key = KeyPair::generate().expect("key");
        let params = CertificateParams::new(vec![SERVER_NAME.to_string()]).expect("params");
        let cert = params.signed_by(&key, &ca.issuer).expect("sign");
        assert!(matches!(
            identity_of(cert.der()),
            Err(TlsError::NoIdentity(_))
        ));
    }
}
