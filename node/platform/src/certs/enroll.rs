//! Enrollment: one-time tokens, the enrollment endpoint, and the CA directory.
//!
//! The hub operator holds the province root CA. For a new county they issue a **one-time
//! token** ([`TokenStore::issue`]) bound to a scope and a role, with an expiry. The county node
//! connects to the enrollment endpoint ([`serve`]) over TLS that authenticates the *server*
//! only — the token is the client's authorisation — and sends the token with a public key it
//! generated ([`request`]). The endpoint redeems the token (durably marked used **before**
//! anything is issued, so a token works once even across a crash) and returns a county CA
//! certificate over that key (for a `county` token at the root) or a node certificate (any
//! other token, or any token at a county CA). With its county CA the county node then issues
//! certificates for its villages and mule laptops **offline**: [`CertAuthority::issue`] into
//! files the operator carries to the Pi, or the same endpoint served by the county on the LAN.
//!
//! A CA directory holds `ca.crt` (this CA's certificate), `ca.key`, `root.crt` (the province
//! root; absent at the root itself) and `tokens.json` (hashes of issued tokens, never the
//! tokens themselves).
//!
//! Wire format (version 1): one JSON object per direction, newline-terminated, at most
//! [`MAX_MESSAGE_LEN`] bytes; the endpoint closes the connection after answering.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cunyun_protocol::area::AreaScope;
use cunyun_protocol::identity::{NodeId, NodeIdentity};
use cunyun_protocol::key::Role;
use rustls::pki_types::ServerName;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use crate::certs::revocation::RevocationSet;
use crate::certs::tls::{
    CertAuthority, CertKeyPem, TlsError, Validity, NODE_VALIDITY_DAYS, SERVER_NAME,
};
use crate::certs::trust::{system_time_s, ChainVerifier, TrustClock};

/// Largest request or response, in bytes.
pub const MAX_MESSAGE_LEN: usize = 32 * 1024;
/// Enrollment wire version.
pub const ENROLL_VERSION: u32 = 1;
/// Default lifetime of a token, in hours.
pub const DEFAULT_TOKEN_TTL_HOURS: u64 = 72;
/// Most unredeemed tokens a CA keeps (older expired ones are dropped first).
pub const MAX_TOKENS: usize = 10_000;
/// Longest an enrollment connection may take.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(20);
const TOKEN_PREFIX: &str = "cy1-";

/// Why enrollment failed. Messages are shown to operators.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnrollError {
    /// The token is unknown (mistyped, or from another CA).
    #[error("注册令牌无效")]
    UnknownToken,
    /// The token was used already.
    #[error("注册令牌已被使用（每个令牌只能使用一次）")]
    TokenUsed,
    /// The token expired.
    #[error("注册令牌已过期，请向上级管理员重新申请")]
    TokenExpired,
    /// The request is malformed or too large.
    #[error("注册请求无效: {0}")]
    BadRequest(String),
    /// The endpoint refused the request.
    #[error("注册被拒绝: {0}")]
    Refused(String),
    /// The answer does not fit what was asked.
    #[error("注册应答无效: {0}")]
    BadResponse(String),
    /// Certificates or TLS.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// Files or the network.
    #[error("注册失败: {0}")]
    Io(#[from] std::io::Error),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct TokenRecord {
    /// blake3 of the token text, hex.
    hash: String,
    scope: AreaScope,
    role: Role,
    created_s: u64,
    expires_s: u64,
    used_s: Option<u64>,
    used_by: Option<NodeId>,
}

/// A token as handed to the operator.
#[derive(Debug, Clone)]
pub struct EnrollToken {
    /// The secret text (`cy1-` and 32 hex digits).
    pub token: String,
    /// The scope it enrolls.
    pub scope: AreaScope,
    /// The role it enrolls.
    pub role: Role,
    /// When it expires, Unix seconds.
    pub expires_s: u64,
}

/// The one-time tokens of one CA, in `<ca dir>/tokens.json` (see the module docs).
pub struct TokenStore {
    path: PathBuf,
    lock: Mutex<()>,
    audit: crate::audit::Audit,
}

/// Writes a CA event to the audit log of its CA directory (`<ca dir>/audit.jsonl`).
fn audit(log: &crate::audit::Audit, event: crate::audit::AuditEvent) -> Result<(), EnrollError> {
    log.record(event)
        .map_err(|e| EnrollError::Io(std::io::Error::other(e.to_string())))
}

fn hash_token(token: &str) -> String {
    blake3::hash(token.trim().as_bytes()).to_hex().to_string()
}

impl TokenStore {
    /// The token store of the CA in `ca_dir`.
    pub fn open(ca_dir: &Path) -> TokenStore {
        TokenStore {
            path: ca_dir.join("tokens.json"),
            lock: Mutex::new(()),
            audit: crate::audit::Audit::open(ca_dir),
        }
    }

    fn read(&self) -> Result<Vec<TokenRecord>, EnrollError> {
        match std::fs::read_to_string(&self.path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| {
                EnrollError::Io(std::io::Error::other(format!(
                    "{} 已损坏: {e}",
                    self.path.display()
                )))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e.into()),
        }
    }

    /// Writes atomically and durably (temp file, fsync, rename, fsync the directory).
    fn write(&self, records: &[TokenRecord]) -> Result<(), EnrollError> {
        let text = serde_json::to_string_pretty(records).map_err(std::io::Error::other)?;
        let tmp = self.path.with_extension("json.tmp");
        crate::certs::tls::write_private(&tmp, &text)?;
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }

    /// Issues a token enrolling `role` at `scope`, valid for `ttl_s` seconds from `now_s`.
    pub fn issue(
        &self,
        scope: AreaScope,
        role: Role,
        ttl_s: u64,
        now_s: u64,
    ) -> Result<EnrollToken, EnrollError> {
        let _guard = self
            .lock
            .lock()
            .map_err(|_| std::io::Error::other("锁异常"))?;
        let token = format!("{TOKEN_PREFIX}{}", hex::encode(rand::random::<[u8; 16]>()));
        let mut records = self.read()?;
        records.retain(|r| r.used_s.is_some() || r.expires_s > now_s);
        if records.iter().filter(|r| r.used_s.is_none()).count() >= MAX_TOKENS {
            return Err(EnrollError::BadRequest(format!(
                "未使用的令牌已达上限 {MAX_TOKENS}"
            )));
        }
        let expires_s = now_s.saturating_add(ttl_s);
        records.push(TokenRecord {
            hash: hash_token(&token),
            scope,
            role,
            created_s: now_s,
            expires_s,
            used_s: None,
            used_by: None,
        });
        self.write(&records)?;
        audit(
            &self.audit,
            crate::audit::AuditEvent::now(
                "cli",
                "enroll_token_issued",
                &scope.to_string(),
                format!("{} expires_s={expires_s}", role.as_str()),
            ),
        )?;
        Ok(EnrollToken {
            token,
            scope,
            role,
            expires_s,
        })
    }

    /// Redeems `token` for `node` at `now_s`: durably marks it used and returns what it
    /// enrolls. A second redeem of the same token fails, also after a restart.
    pub fn redeem(
        &self,
        token: &str,
        node: NodeId,
        now_s: u64,
    ) -> Result<(AreaScope, Role), EnrollError> {
        let _guard = self
            .lock
            .lock()
            .map_err(|_| std::io::Error::other("锁异常"))?;
        let mut records = self.read()?;
        let hash = hash_token(token);
        let record = records
            .iter_mut()
            .find(|r| r.hash == hash)
            .ok_or(EnrollError::UnknownToken)?;
        if record.used_s.is_some() {
            return Err(EnrollError::TokenUsed);
        }
        if record.expires_s <= now_s {
            return Err(EnrollError::TokenExpired);
        }
        record.used_s = Some(now_s);
        record.used_by = Some(node);
        let out = (record.scope, record.role);
        self.write(&records)?;
        audit(
            &self.audit,
            crate::audit::AuditEvent::now(
                &node.to_string(),
                "enroll_token_used",
                &out.0.to_string(),
                out.1.as_str(),
            ),
        )?;
        Ok(out)
    }
}

/// A CA directory loaded: the CA and the province root certificate (PEM).
pub struct CaDir {
    /// The CA.
    pub ca: CertAuthority,
    /// The province root certificate, PEM.
    pub root_pem: String,
    /// The directory.
    pub dir: PathBuf,
}

impl CaDir {
    /// This CA as the signer of revocation lists ([`revocation::publish`](crate::certs::revocation::publish)).
    pub fn revocation_issuer(&self) -> crate::certs::revocation::RevocationIssuer<'_> {
        crate::certs::revocation::RevocationIssuer {
            identity: self.ca.identity,
            cert_pem: &self.ca.pem.cert_pem,
            key_pem: &self.ca.pem.key_pem,
            root_pem: &self.root_pem,
            dir: &self.dir,
        }
    }

    /// Loads `ca.crt`, `ca.key` and `root.crt` (the root itself if absent) from `dir`.
    pub fn load(dir: &Path) -> Result<CaDir, EnrollError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(|e| {
                EnrollError::Io(std::io::Error::new(
                    e.kind(),
                    format!("无法读取 {}: {e}", path.display()),
                ))
            })
        };
        let pem = CertKeyPem {
            cert_pem: read("ca.crt")?,
            key_pem: read("ca.key")?,
        };
        let ca = CertAuthority::from_pem(pem)?;
        let root_pem = if dir.join("root.crt").exists() {
            read("root.crt")?
        } else {
            ca.pem.cert_pem.clone()
        };
        Ok(CaDir {
            ca,
            root_pem,
            dir: dir.to_owned(),
        })
    }

    /// Writes a CA directory (county CA: `root_pem` is the province root's certificate).
    pub fn write(dir: &Path, ca: &CertKeyPem, root_pem: &str) -> Result<(), EnrollError> {
        std::fs::create_dir_all(dir)?;
        crate::certs::tls::write_private(&dir.join("ca.key"), &ca.key_pem)?;
        std::fs::write(dir.join("ca.crt"), &ca.cert_pem)?;
        std::fs::write(dir.join("root.crt"), root_pem)?;
        std::fs::File::open(dir)?.sync_all()?;
        Ok(())
    }

    /// Issues a node certificate for a new node of `role` at `scope` (new random node id)
    /// and writes `node.crt`, `node.key` and `ca.crt` into `tls_dir`: offline enrollment of a
    /// village node or mule laptop by its county.
    ///
    /// With `node_id` given, the certificate is for that existing node: **renewal** before (or
    /// after) its certificate expires keeps the node's id, so peers' watermarks and revocations
    /// by id still apply.
    pub fn issue_node_files(
        &self,
        scope: AreaScope,
        role: Role,
        node_id: Option<NodeId>,
        tls_dir: &Path,
    ) -> Result<NodeIdentity, EnrollError> {
        let identity = NodeIdentity {
            node_id: node_id.unwrap_or_else(|| NodeId(rand::random())),
            role,
            scope,
        };
        let pem = self.ca.issue(&identity)?;
        crate::certs::tls::write_node_files(tls_dir, &pem, &self.root_pem)?;
        audit(
            &crate::audit::Audit::open(&self.dir),
            crate::audit::AuditEvent::now(
                "cli",
                "cert_issued",
                &identity.to_uri(),
                if node_id.is_some() {
                    "offline renewal"
                } else {
                    "offline"
                },
            ),
        )?;
        Ok(identity)
    }
}

/// An enrollment request (version 1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// Wire version, [`ENROLL_VERSION`].
    pub v: u32,
    /// The one-time token.
    pub token: String,
    /// The id of the node being enrolled.
    pub node_id: NodeId,
    /// Its public key, PEM (`PUBLIC KEY`).
    pub public_key_pem: String,
}

/// Longest token text the endpoint looks at (a real one is 36 characters).
const MAX_TOKEN_LEN: usize = 128;

/// Decodes and checks a request message: JSON, the version, the token's length and the public
/// key. Pure (no token store, no CA), so it is fuzzed (`node/fuzz`, target `api_json`).
pub fn decode_request(raw: &[u8]) -> Result<(Request, rcgen::SubjectPublicKeyInfo), EnrollError> {
    let req: Request =
        serde_json::from_slice(raw).map_err(|e| EnrollError::BadRequest(e.to_string()))?;
    if req.v != ENROLL_VERSION {
        return Err(EnrollError::BadRequest(format!("不支持的版本 {}", req.v)));
    }
    if req.token.trim().is_empty() || req.token.len() > MAX_TOKEN_LEN {
        return Err(EnrollError::UnknownToken);
    }
    let key = rcgen::SubjectPublicKeyInfo::from_pem(&req.public_key_pem)
        .map_err(|e| EnrollError::BadRequest(format!("公钥无效: {e}")))?;
    Ok((req, key))
}

/// Decodes a response message and checks it answers the request for `node_id`. Pure, so it
/// is fuzzed.
pub fn decode_response(raw: &[u8], node_id: NodeId) -> Result<Issued, EnrollError> {
    let resp: Response =
        serde_json::from_slice(raw).map_err(|e| EnrollError::BadResponse(e.to_string()))?;
    if resp.v != ENROLL_VERSION {
        return Err(EnrollError::BadResponse(format!("不支持的版本 {}", resp.v)));
    }
    match (resp.issued, resp.error) {
        (Some(issued), None) if issued.identity.node_id == node_id => Ok(issued),
        (Some(_), None) => Err(EnrollError::BadResponse("节点编号不符".into())),
        (_, Some(e)) => Err(EnrollError::Refused(e)),
        (None, None) => Err(EnrollError::BadResponse("空应答".into())),
    }
}

/// What a successful enrollment returns.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Issued {
    /// The enrolled identity.
    pub identity: NodeIdentity,
    /// `ca` (a county CA certificate) or `node` (a node certificate chain).
    pub kind: String,
    /// The certificate (chain), PEM.
    pub cert_pem: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Response {
    v: u32,
    #[serde(default)]
    issued: Option<Issued>,
    #[serde(default)]
    error: Option<String>,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads one newline-terminated message of at most [`MAX_MESSAGE_LEN`] bytes.
async fn read_message<R: AsyncRead + Unpin>(r: R) -> Result<Vec<u8>, EnrollError> {
    use tokio::io::AsyncReadExt;
    let mut reader = BufReader::new(r.take(MAX_MESSAGE_LEN as u64 + 1));
    let mut line = Vec::new();
    reader.read_until(b'\n', &mut line).await?;
    if line.len() > MAX_MESSAGE_LEN {
        return Err(EnrollError::BadRequest(format!(
            "消息超过 {MAX_MESSAGE_LEN} 字节"
        )));
    }
    if line.last() != Some(&b'\n') {
        return Err(EnrollError::BadRequest("消息不完整".into()));
    }
    Ok(line)
}

/// Handles one decoded request: redeem the token, then issue.
fn handle(ca: &CaDir, tokens: &TokenStore, raw: &[u8]) -> Result<Issued, EnrollError> {
    let (req, key) = decode_request(raw)?;
    let (scope, role) = tokens.redeem(&req.token, req.node_id, system_time_s())?;
    let identity = NodeIdentity {
        node_id: req.node_id,
        role,
        scope,
    };
    let (kind, cert_pem) = if role == Role::County && !ca.ca.is_intermediate() {
        ("ca", ca.ca.issue_county_ca(&identity, &key)?)
    } else {
        let validity = Validity::from_now(system_time_s(), NODE_VALIDITY_DAYS);
        ("node", ca.ca.issue_for_key(&identity, &key, validity)?)
    };
    tracing::info!(
        target: "cunyun::_events::enrolled",
        node = %identity.node_id,
        role = role.as_str(),
        scope = %scope,
        kind
    );
    audit(
        &tokens.audit,
        crate::audit::AuditEvent::now(
            &identity.node_id.to_string(),
            "cert_issued",
            &identity.to_uri(),
            format!("enroll ({kind})"),
        ),
    )?;
    Ok(Issued {
        identity,
        kind: kind.into(),
        cert_pem,
    })
}

/// The TLS configuration of an enrollment endpoint: a fresh server certificate issued by the
/// CA itself (with the CA's identity), no client certificates.
pub fn server_config(ca: &CaDir) -> Result<Arc<rustls::ServerConfig>, EnrollError> {
    let pem = ca.ca.issue(&ca.ca.identity)?;
    use rustls::pki_types::pem::PemObject;
    let chain = rustls::pki_types::CertificateDer::pem_slice_iter(pem.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| EnrollError::BadResponse(e.to_string()))?;
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(pem.key_pem.as_bytes())
        .map_err(|e| EnrollError::BadResponse(e.to_string()))?;
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(TlsError::from)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(TlsError::from)?;
    Ok(Arc::new(config))
}

/// Serves enrollment on `listener` until the task is dropped: one request per connection,
/// with the default per-address limits ([`crate::ratelimit::AddrLimits::ENROLL`]).
pub async fn serve(listener: TcpListener, ca: Arc<CaDir>, tokens: Arc<TokenStore>) {
    serve_limited(listener, ca, tokens, crate::ratelimit::AddrLimits::ENROLL).await;
}

/// [`serve`] with the given limits per source address; a connection over them is closed
/// before the TLS handshake.
pub async fn serve_limited(
    listener: TcpListener,
    ca: Arc<CaDir>,
    tokens: Arc<TokenStore>,
    per_address: crate::ratelimit::AddrLimits,
) {
    let limiter = crate::ratelimit::AddrLimiter::new("enroll", per_address);
    let config = match server_config(&ca) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "enrollment endpoint cannot start");
            return;
        }
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    // A few connections at once; an enrollment is rare and cheap.
    let slots = Arc::new(tokio::sync::Semaphore::new(8));
    loop {
        let Ok((tcp, addr)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let Ok(addr_permit) = limiter.admit(addr) else {
            continue;
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            continue;
        };
        let (acceptor, ca, tokens) = (acceptor.clone(), ca.clone(), tokens.clone());
        tokio::spawn(async move {
            let _addr_permit = addr_permit;
            let work = async {
                let mut tls = acceptor.accept(tcp).await?;
                let answer = match read_message(&mut tls).await {
                    Ok(raw) => {
                        let (ca, tokens) = (ca.clone(), tokens.clone());
                        tokio::task::spawn_blocking(move || handle(&ca, &tokens, &raw))
                            .await
                            .map_err(|e| EnrollError::Io(std::io::Error::other(e)))?
                    }
                    Err(e) => Err(e),
                };
                let response = match answer {
                    Ok(issued) => Response {
                        v: ENROLL_VERSION,
                        issued: Some(issued),
                        error: None,
                    },
                    Err(e) => {
                        tracing::warn!(
                            target: "cunyun::_events::enroll_refused",
                            %addr,
                            error = %e
                        );
                        Response {
                            v: ENROLL_VERSION,
                            issued: None,
                            error: Some(e.to_string()),
                        }
                    }
                };
                let mut out = serde_json::to_vec(&response).map_err(std::io::Error::other)?;
                out.push(b'\n');
                tls.write_all(&out).await?;
                tls.shutdown().await?;
                Ok::<_, EnrollError>(())
            };
            if let Ok(Err(e)) = tokio::time::timeout(CONNECTION_TIMEOUT, work).await {
                tracing::debug!(%addr, error = %e, "enrollment connection failed");
            }
            drop(permit);
        });
    }
}

/// Asks the endpoint at `addr` (whose chain must lead to `root_pem`) to enroll `node_id` with
/// `token`, over the public key `public_key_pem`.
pub async fn request(
    addr: SocketAddr,
    root_pem: &str,
    token: &str,
    node_id: NodeId,
    public_key_pem: &str,
) -> Result<Issued, EnrollError> {
    use rustls::pki_types::pem::PemObject;
    let root = rustls::pki_types::CertificateDer::pem_slice_iter(root_pem.as_bytes())
        .next()
        .ok_or_else(|| EnrollError::BadRequest("根证书文件中没有证书".into()))?
        .map_err(|e| EnrollError::BadRequest(format!("根证书无效: {e}")))?;
    let verifier = Arc::new(
        ChainVerifier::new(
            &root,
            Arc::new(TrustClock::in_memory(0)),
            Arc::new(RevocationSet::new()),
            provider(),
        )
        .map_err(TlsError::from)?,
    );
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(TlsError::from)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    let name =
        ServerName::try_from(SERVER_NAME).map_err(|e| EnrollError::BadRequest(e.to_string()))?;
    let work = async {
        let tcp = TcpStream::connect(addr).await?;
        let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await?;
        let req = Request {
            v: ENROLL_VERSION,
            token: token.trim().to_string(),
            node_id,
            public_key_pem: public_key_pem.to_string(),
        };
        let mut out = serde_json::to_vec(&req).map_err(std::io::Error::other)?;
        out.push(b'\n');
        tls.write_all(&out).await?;
        tls.flush().await?;
        let raw = read_message(&mut tls).await?;
        let _ = write_shutdown(&mut tls).await;
        Ok::<_, EnrollError>(raw)
    };
    let raw = tokio::time::timeout(CONNECTION_TIMEOUT, work)
        .await
        .map_err(|_| EnrollError::Io(std::io::Error::other(format!("连接 {addr} 超时"))))??;
    decode_response(&raw, node_id)
}

async fn write_shutdown<W: AsyncWrite + Unpin>(w: &mut W) -> std::io::Result<()> {
    w.shutdown().await
}

/// What [`enroll_node`] wrote.
#[derive(Debug, Clone)]
pub struct Enrolled {
    /// The node's identity (from its new certificate).
    pub identity: NodeIdentity,
    /// The county CA directory written, for a county enrolled at the root.
    pub ca_dir: Option<PathBuf>,
}

/// Enrolls this node: a new node id and key, a request with `token` to `addr`, and the result
/// written under `data_dir` — a county CA in `data_dir/ca` plus the county node's own
/// certificate issued by it, or just the node certificate — into `data_dir/tls`. The files are
/// checked by building a TLS context from them (the chain verifies up to the root).
pub async fn enroll_node(
    addr: SocketAddr,
    root_pem: &str,
    token: &str,
    data_dir: &Path,
) -> Result<Enrolled, EnrollError> {
    let tls_dir = data_dir.join("tls");
    let ca_dir = data_dir.join("ca");
    if tls_dir.join("node.crt").exists() || ca_dir.join("ca.crt").exists() {
        return Err(EnrollError::BadRequest(format!(
            "{} 已有证书；如需重新注册，请先移走 tls/ 和 ca/ 目录",
            data_dir.display()
        )));
    }
    let node_id = NodeId(rand::random());
    let key = rcgen::KeyPair::generate().map_err(TlsError::from)?;
    let issued = request(addr, root_pem, token, node_id, &key.public_key_pem()).await?;
    let (node_pem, written_ca) = if issued.kind == "ca" {
        let ca_pem = CertKeyPem {
            cert_pem: issued.cert_pem.clone(),
            key_pem: key.serialize_pem(),
        };
        let county = CertAuthority::from_pem(ca_pem.clone())?;
        if county.identity != issued.identity {
            return Err(EnrollError::BadResponse("证书身份与应答不符".into()));
        }
        // The county node's own certificate: same id, role and scope as its CA.
        let node = county.issue(&issued.identity)?;
        CaDir::write(&ca_dir, &ca_pem, root_pem)?;
        (node, Some(ca_dir))
    } else {
        (
            CertKeyPem {
                cert_pem: issued.cert_pem.clone(),
                key_pem: key.serialize_pem(),
            },
            None,
        )
    };
    // Check before writing: the chain must verify against the root like any peer's would.
    let ctx = crate::certs::tls::TlsContext::from_pem(&node_pem, root_pem, &tls_dir)?;
    ctx.verifier()
        .verify(
            &first_der(&node_pem.cert_pem)?,
            &rest_der(&node_pem.cert_pem)?,
            system_time_s(),
            webpki::KeyUsage::client_auth(),
        )
        .map_err(|e| EnrollError::BadResponse(e.to_string()))?;
    crate::certs::tls::write_node_files(&tls_dir, &node_pem, root_pem)?;
    Ok(Enrolled {
        identity: ctx.identity,
        ca_dir: written_ca,
    })
}

fn all_der(pem: &str) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, EnrollError> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| EnrollError::BadResponse(e.to_string()))
}

fn first_der(pem: &str) -> Result<rustls::pki_types::CertificateDer<'static>, EnrollError> {
    all_der(pem)?
        .into_iter()
        .next()
        .ok_or_else(|| EnrollError::BadResponse("没有证书".into()))
}

fn rest_der(pem: &str) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, EnrollError> {
    Ok(all_der(pem)?.into_iter().skip(1).collect())
}
