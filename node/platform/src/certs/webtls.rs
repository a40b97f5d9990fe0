//! HTTPS for the cadre web app, so its service worker works on a village LAN.
//!
//! Browsers run service workers only in a secure context: over plain `http://192.168.1.10` the
//! app cannot be reopened offline. With `[web_tls] enabled = true` the node also serves the
//! whole API and app over HTTPS on `[web_tls] listen`, with a certificate for its LAN
//! addresses and names, and the plain HTTP listener keeps only what villagers' phones need
//! (the villager pages `/v/...`, status, metrics, the automerge-repo endpoint): its `/`
//! tells a cadre where the HTTPS app is, and its `/api/` answers 403 `https_required` (a
//! password never crosses the LAN in clear text).
//!
//! **Which CA.** The certificate is issued by a *node-local web CA* made on first start in
//! `<data_dir>/web-tls/` (its key never leaves the node), not by the county CA of
//! [`crate::certs::tls`]/[`crate::certs::enroll`]: that key is kept offline by the county operator and vouches
//! for node identities in sync; a CA installed on a phone is trusted by the phone for every
//! site, so the web CA carries X.509 name constraints and can vouch only for LAN names and
//! addresses (RFC 1918, loopback, link-local, ULA; `localhost`, `*.local`, `*.lan`,
//! `*.home.arpa`, `*.internal`). A stolen web CA key therefore cannot impersonate a bank to the
//! phone, and the node's sync mTLS is untouched. An operator with a certificate of their own
//! sets `cert`/`key` (and `ca_cert` to offer for download) instead.
//!
//! The CA certificate is offered at `/ca.crt` with a zh-CN installation guide at `/ca`, on both
//! listeners (a phone fetches it over HTTP before it trusts the HTTPS one).
//!
//! `cunyun-node web-cert` (re)issues the web certificate; at start the node re-issues it by
//! itself when it is missing, does not cover the configured names or expires within 30 days
//! (`auto_issue`, on by default). Phones keep trusting the same CA, so re-issuing needs no
//! reinstall.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use rcgen::{
    BasicConstraints, CertificateParams, CidrSubnet, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, GeneralSubtree, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    NameConstraints, SanType,
};
use serde::Deserialize;
use tokio::sync::mpsc;

use crate::ratelimit::{LimitedListener, LimitedStream};

use crate::certs::tls::{write_private, Validity};

/// How long the web CA is valid, in days.
pub const WEB_CA_VALIDITY_DAYS: i64 = 10 * 365;
/// How long a web certificate is valid, in days (below the 398 days browsers accept).
pub const WEB_CERT_VALIDITY_DAYS: i64 = 397;
/// A web certificate expiring within this many days is re-issued at start.
const RENEW_BEFORE_DAYS: i64 = 30;
/// A TLS handshake that takes longer is dropped (a slow client cannot hold the listener).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// `[web_tls]`: the HTTPS listener of the web app.
///
/// ```toml
/// [web_tls]
/// enabled = true
/// listen = "0.0.0.0:8443"
/// names = ["192.168.1.10", "cunyun.lan"]   # what phones type in the address bar
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct WebTlsConfig {
    /// Serve the app over HTTPS (off by default: a development node on loopback needs none).
    pub enabled: bool,
    /// Address the HTTPS listener binds.
    pub listen: SocketAddr,
    /// LAN addresses and host names the certificate is issued for (IP addresses or DNS names
    /// inside the web CA's name constraints). Empty: `localhost`, `127.0.0.1` and the listen
    /// address if it is a specific one.
    pub names: Vec<String>,
    /// Directory of the web CA and certificate. Default `<data_dir>/web-tls`.
    pub dir: Option<PathBuf>,
    /// A certificate chain (PEM) of the operator's own, instead of the node-local web CA's.
    pub cert: Option<PathBuf>,
    /// Its private key (PEM); required with `cert`.
    pub key: Option<PathBuf>,
    /// With `cert`: the CA certificate (PEM) offered at `/ca.crt`.
    pub ca_cert: Option<PathBuf>,
    /// Re-issue the web certificate at start when missing, not covering `names` or about to
    /// expire.
    pub auto_issue: bool,
}

impl Default for WebTlsConfig {
    fn default() -> Self {
        WebTlsConfig {
            enabled: false,
            listen: SocketAddr::from(([127, 0, 0, 1], 8443)),
            names: Vec::new(),
            dir: None,
            cert: None,
            key: None,
            ca_cert: None,
            auto_issue: true,
        }
    }
}

/// Why HTTPS could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WebTlsError {
    /// A file could not be read or written.
    #[error("网页证书文件 {path} 无法读写: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// A certificate or key could not be made or parsed.
    #[error("网页证书生成或读取失败: {0}")]
    Cert(String),
    /// A configured name is not a LAN name the web CA may vouch for.
    #[error("“{0}” 不是局域网地址或名称：网页证书只能签发给局域网 IP（10.x、172.16–31.x、192.168.x、127.x）或以 .lan、.local、.home.arpa、.internal 结尾的名称及 localhost")]
    NotLan(String),
    /// `cert` without `key` (or the reverse).
    #[error("[web_tls] 的 cert 与 key 必须同时配置")]
    HalfConfigured,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> WebTlsError + '_ {
    move |source| WebTlsError::Io {
        path: path.to_owned(),
        source,
    }
}

fn cert_err(e: impl std::fmt::Display) -> WebTlsError {
    WebTlsError::Cert(e.to_string())
}

/// DNS subtrees the web CA may vouch for.
const LAN_DNS: &[&str] = &["localhost", "local", "lan", "home.arpa", "internal"];

/// IP ranges the web CA may vouch for: RFC 1918, loopback, link-local, IPv6 loopback and ULA.
fn lan_subnets() -> Vec<CidrSubnet> {
    vec![
        CidrSubnet::from_v4_prefix([10, 0, 0, 0], 8),
        CidrSubnet::from_v4_prefix([172, 16, 0, 0], 12),
        CidrSubnet::from_v4_prefix([192, 168, 0, 0], 16),
        CidrSubnet::from_v4_prefix([127, 0, 0, 0], 8),
        CidrSubnet::from_v4_prefix([169, 254, 0, 0], 16),
        CidrSubnet::from_addr_prefix(IpAddr::V6(std::net::Ipv6Addr::LOCALHOST), 128),
        CidrSubnet::from_v6_prefix([0xfc, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], 7),
    ]
}

/// Whether `name` is inside the web CA's name constraints.
fn is_lan_name(name: &str) -> bool {
    if let Ok(ip) = name.parse::<IpAddr>() {
        return match ip {
            IpAddr::V4(v4) => v4.is_private() || v4.is_loopback() || v4.is_link_local(),
            IpAddr::V6(v6) => v6.is_loopback() || (v6.segments()[0] & 0xfe00) == 0xfc00,
        };
    }
    let n = name.trim_end_matches('.').to_ascii_lowercase();
    !n.is_empty()
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        && LAN_DNS
            .iter()
            .any(|d| n == *d || n.ends_with(&format!(".{d}")))
}

/// The names a web certificate is issued for under `config` (see [`WebTlsConfig::names`]).
pub fn cert_names(config: &WebTlsConfig) -> Vec<String> {
    if !config.names.is_empty() {
        return config.names.clone();
    }
    let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    let ip = config.listen.ip();
    if !ip.is_unspecified() && !names.contains(&ip.to_string()) {
        names.push(ip.to_string());
    }
    names
}

/// Where the node-local web CA and certificate live.
#[derive(Debug, Clone)]
pub struct WebTlsFiles {
    /// The CA certificate offered to phones.
    pub ca_cert: PathBuf,
    /// The server certificate chain.
    pub cert: PathBuf,
    /// Its key.
    pub key: PathBuf,
}

impl WebTlsFiles {
    /// The files in `dir`.
    pub fn in_dir(dir: &Path) -> WebTlsFiles {
        WebTlsFiles {
            ca_cert: dir.join("ca.crt"),
            cert: dir.join("web.crt"),
            key: dir.join("web.key"),
        }
    }
}

/// The web-TLS directory of a node with `data_dir`.
pub fn dir_of(config: &WebTlsConfig, data_dir: &Path) -> PathBuf {
    config
        .dir
        .clone()
        .unwrap_or_else(|| data_dir.join("web-tls"))
}

fn write_synced(path: &Path, contents: &str) -> Result<(), WebTlsError> {
    use std::io::Write;
    let mut f = std::fs::File::create(path).map_err(io_err(path))?;
    f.write_all(contents.as_bytes()).map_err(io_err(path))?;
    f.sync_all().map_err(io_err(path))
}

/// Loads the web CA of `dir`, creating it (key owner-only) if there is none.
fn load_or_create_ca(dir: &Path) -> Result<(Issuer<'static, KeyPair>, String), WebTlsError> {
    let crt = dir.join("ca.crt");
    let key = dir.join("ca.key");
    if crt.exists() && key.exists() {
        let cert_pem = std::fs::read_to_string(&crt).map_err(io_err(&crt))?;
        let key_pem = std::fs::read_to_string(&key).map_err(io_err(&key))?;
        let kp = KeyPair::from_pem(&key_pem).map_err(cert_err)?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, kp).map_err(cert_err)?;
        return Ok((issuer, cert_pem));
    }
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let kp = KeyPair::generate().map_err(cert_err)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    let tag = &blake3::hash(kp.public_key_raw()).to_hex()[..8];
    dn.push(DnType::CommonName, format!("村云节点网页证书机构 {tag}"));
    dn.push(DnType::OrganizationName, "cunyun");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let mut permitted: Vec<GeneralSubtree> = LAN_DNS
        .iter()
        .map(|d| GeneralSubtree::DnsName((*d).to_string()))
        .collect();
    permitted.extend(lan_subnets().into_iter().map(GeneralSubtree::IpAddress));
    params.name_constraints = Some(NameConstraints {
        permitted_subtrees: permitted,
        excluded_subtrees: Vec::new(),
    });
    apply_validity(&mut params, WEB_CA_VALIDITY_DAYS)?;
    let cert = params.self_signed(&kp).map_err(cert_err)?;
    let cert_pem = cert.pem();
    write_private(&key, &kp.serialize_pem()).map_err(io_err(&key))?;
    write_synced(&crt, &cert_pem)?;
    tracing::info!(target: "cunyun::_events::web_ca_created", path = %crt.display());
    Ok((Issuer::new(params, kp), cert_pem))
}

fn apply_validity(params: &mut CertificateParams, days: i64) -> Result<(), WebTlsError> {
    let v = Validity::from_now(crate::certs::trust::system_time_s(), days);
    let t = |s: i64| time::OffsetDateTime::from_unix_timestamp(s).map_err(cert_err);
    params.not_before = t(v.not_before)?;
    params.not_after = t(v.not_after)?;
    Ok(())
}

/// Issues a new web certificate for `names` from the web CA in `dir` (creating the CA on first
/// use) and writes `web.crt`/`web.key` there. Every name must be a LAN name.
pub fn issue(dir: &Path, names: &[String]) -> Result<WebTlsFiles, WebTlsError> {
    if names.is_empty() {
        return Err(WebTlsError::NotLan(String::new()));
    }
    if let Some(bad) = names.iter().find(|n| !is_lan_name(n)) {
        return Err(WebTlsError::NotLan(bad.clone()));
    }
    let (issuer, _) = load_or_create_ca(dir)?;
    let kp = KeyPair::generate().map_err(cert_err)?;
    let mut params = CertificateParams::default();
    for n in names {
        params.subject_alt_names.push(match n.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(n.clone().try_into().map_err(cert_err)?),
        });
    }
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, names[0].clone());
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    apply_validity(&mut params, WEB_CERT_VALIDITY_DAYS)?;
    let cert = params.signed_by(&kp, &issuer).map_err(cert_err)?;
    let files = WebTlsFiles::in_dir(dir);
    write_private(&files.key, &kp.serialize_pem()).map_err(io_err(&files.key))?;
    write_synced(&files.cert, &cert.pem())?;
    tracing::info!(target: "cunyun::_events::web_cert_issued", names = ?names, path = %files.cert.display());
    Ok(files)
}

/// Whether the certificate at `path` covers every one of `names` and is valid for more than
/// [`RENEW_BEFORE_DAYS`].
fn still_good(path: &Path, names: &[String]) -> bool {
    let Ok(pem) = std::fs::read(path) else {
        return false;
    };
    let Ok((_, pem)) = x509_parser::pem::parse_x509_pem(&pem) else {
        return false;
    };
    let Ok(cert) = pem.parse_x509() else {
        return false;
    };
    let now = crate::certs::trust::system_time_s() as i64;
    if cert.validity().not_after.timestamp() < now + RENEW_BEFORE_DAYS * 86_400 {
        return false;
    }
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return false;
    };
    let mut have: Vec<String> = Vec::new();
    for g in &san.value.general_names {
        match g {
            x509_parser::extensions::GeneralName::DNSName(d) => have.push(d.to_string()),
            x509_parser::extensions::GeneralName::IPAddress(b) => {
                let ip = match b.len() {
                    4 => <[u8; 4]>::try_from(*b).ok().map(IpAddr::from),
                    16 => <[u8; 16]>::try_from(*b).ok().map(IpAddr::from),
                    _ => None,
                };
                if let Some(ip) = ip {
                    have.push(ip.to_string());
                }
            }
            _ => {}
        }
    }
    names.iter().all(|n| {
        let n = n
            .parse::<IpAddr>()
            .map(|i| i.to_string())
            .unwrap_or(n.clone());
        have.iter().any(|h| h.eq_ignore_ascii_case(&n))
    })
}

/// The files to serve with under `config`: the operator's own, or the node-local web CA's
/// (issued now if needed and `auto_issue` is on).
pub fn prepare(config: &WebTlsConfig, data_dir: &Path) -> Result<WebTlsFiles, WebTlsError> {
    match (&config.cert, &config.key) {
        (Some(cert), Some(key)) => {
            return Ok(WebTlsFiles {
                ca_cert: config.ca_cert.clone().unwrap_or_default(),
                cert: cert.clone(),
                key: key.clone(),
            })
        }
        (None, None) => {}
        _ => return Err(WebTlsError::HalfConfigured),
    }
    let dir = dir_of(config, data_dir);
    let names = cert_names(config);
    let files = WebTlsFiles::in_dir(&dir);
    // A missing CA (deleted, or a fresh directory) is made anew, and the certificate with it.
    let complete = files.ca_cert.exists() && files.key.exists();
    if config.auto_issue && !(complete && still_good(&files.cert, &names)) {
        return issue(&dir, &names);
    }
    Ok(files)
}

/// The rustls server configuration for `files` (TLS 1.2 and 1.3, HTTP/1.1 by ALPN).
pub fn server_config(files: &WebTlsFiles) -> Result<Arc<rustls::ServerConfig>, WebTlsError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| WebTlsError::Cert(format!("{}: {e}", files.cert.display())))?;
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| WebTlsError::Cert(format!("{}: {e}", files.key.display())))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(cert_err)?
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .map_err(cert_err)?;
    // axum is built without its http2 feature: HTTP/1.1 only.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A TLS listener for `axum::serve`: accepts TCP connections (within the per-address limits of
/// the [`LimitedListener`] it wraps) and completes each handshake in its own task (bounded by
/// [`HANDSHAKE_TIMEOUT`]), so a slow client holds up nobody.
pub struct TlsListener {
    rx: mpsc::Receiver<(tokio_rustls::server::TlsStream<LimitedStream>, SocketAddr)>,
    addr: SocketAddr,
}

impl TlsListener {
    /// Starts accepting on `tcp` with `config`. Stops when the listener is dropped.
    pub fn new(
        mut tcp: LimitedListener,
        config: Arc<rustls::ServerConfig>,
    ) -> std::io::Result<Self> {
        let addr = axum::serve::Listener::local_addr(&tcp)?;
        let (tx, rx) = mpsc::channel(64);
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        tokio::spawn(async move {
            loop {
                let (stream, peer) = tokio::select! {
                    r = axum::serve::Listener::accept(&mut tcp) => r,
                    _ = tx.closed() => break,
                };
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(target: "cunyun::_events::web_tls_handshake_failed", %peer, error = %e);
                        }
                        Err(_) => {
                            tracing::debug!(target: "cunyun::_events::web_tls_handshake_timeout", %peer);
                        }
                    }
                });
            }
        });
        Ok(TlsListener { rx, addr })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<LimitedStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(x) => x,
            // The accept task only ends once this listener is gone; never reached in use.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.addr)
    }
}

/// The CA certificate offered to phones, and its SHA-256 fingerprint as Android shows it.
#[derive(Clone)]
pub struct CaDownload {
    pem: Option<Arc<str>>,
    fingerprint: String,
    https_port: u16,
}

impl CaDownload {
    /// Reads the CA certificate at `path` (none if `path` is empty or unreadable: `/ca.crt`
    /// then answers 404 with the reason).
    pub fn load(path: &Path, https_port: u16) -> CaDownload {
        let pem = if path.as_os_str().is_empty() {
            None
        } else {
            std::fs::read_to_string(path).ok()
        };
        let fingerprint = pem
            .as_deref()
            .and_then(|p| x509_parser::pem::parse_x509_pem(p.as_bytes()).ok())
            .map(|(_, pem)| {
                let d = ring::digest::digest(&ring::digest::SHA256, &pem.contents);
                d.as_ref()
                    .iter()
                    .map(|b| format!("{b:02X}"))
                    .collect::<Vec<_>>()
                    .join(":")
            })
            .unwrap_or_default();
        CaDownload {
            pem: pem.map(Arc::from),
            fingerprint,
            https_port,
        }
    }
}

/// `/ca.crt` and `/ca`, for both listeners.
pub fn ca_routes(ca: CaDownload) -> Router {
    Router::new()
        .route("/ca.crt", get(ca_crt))
        .route("/ca", get(ca_page))
        .with_state(ca)
}

async fn ca_crt(State(ca): State<CaDownload>) -> Response {
    match ca.pem {
        Some(pem) => (
            [
                (header::CONTENT_TYPE, "application/x-x509-ca-cert"),
                (
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"cunyun-ca.crt\"",
                ),
            ],
            pem.to_string(),
        )
            .into_response(),
        None => (
            StatusCode::NOT_FOUND,
            "本节点未配置可供下载的证书机构证书（[web_tls] ca_cert）",
        )
            .into_response(),
    }
}

/// The plain HTTP port, known to requests on the HTTPS listener: villager links and QR codes
/// made there point to plain HTTP (villagers' phones do not have the web CA).
#[derive(Debug, Clone, Copy)]
pub struct PlainHttpPort(pub u16);

/// The host part of a `Host` header (no port; IPv6 keeps its brackets).
pub fn host_only(host: &str) -> &str {
    if host.starts_with('[') {
        return host
            .split_once(']')
            .map_or(host, |(h, _)| &host[..h.len() + 1]);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

fn https_url(req_host: Option<&str>, port: u16) -> String {
    let host = host_only(req_host.unwrap_or("localhost"));
    let host: String = host
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "-.[]:".contains(*c))
        .collect();
    if port == 443 {
        format!("https://{host}/")
    } else {
        format!("https://{host}:{port}/")
    }
}

async fn ca_page(State(ca): State<CaDownload>, headers: axum::http::HeaderMap) -> Html<String> {
    let app = https_url(
        headers.get(header::HOST).and_then(|h| h.to_str().ok()),
        ca.https_port,
    );
    Html(format!(
        r#"<!doctype html><html lang="zh-CN"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1"><title>安装村云证书</title>
<style>body{{font:16px/1.6 sans-serif;margin:0 auto;max-width:40em;padding:12px}}a.btn{{display:block;text-align:center;background:#1f6f43;color:#fff;padding:14px;border-radius:8px;text-decoration:none;margin:12px 0}}code{{word-break:break-all;font-size:13px}}</style></head><body>
<h1>在手机上安装村云证书</h1>
<p>村干部应用通过安全连接（https）打开，离线时才能继续使用。手机需要先信任本村节点的证书机构，每部手机只需安装一次。</p>
<a class="btn" href="/ca.crt">下载证书（cunyun-ca.crt）</a>
<h2>安卓手机安装步骤</h2>
<ol>
<li>连接村委会 Wi-Fi，用手机浏览器打开本页，点上面的“下载证书”。</li>
<li>打开手机“设置”→“安全”（或“安全和隐私”“更多安全设置”）→“加密与凭据”→“安装证书”→“CA 证书”。</li>
<li>提示“您的数据将不再是私密的”时点“仍然安装”，按要求输入锁屏密码。</li>
<li>在“下载”文件夹中选择 <b>cunyun-ca.crt</b>。</li>
<li>安装后用浏览器打开 <a href="{app}">{app}</a>，地址栏显示小锁即成功。</li>
</ol>
<p>核对证书：在“设置”→“加密与凭据”→“信任的凭据”→“用户”中点开“村云节点网页证书机构”，SHA-256 指纹应为：</p>
<p><code>{fp}</code></p>
<p>此证书只能用于局域网地址（如 192.168.x.x、*.lan），不能用于其他网站。换手机或恢复出厂设置后需重新安装。</p>
</body></html>"#,
        app = app,
        fp = if ca.fingerprint.is_empty() {
            "（未配置）".to_string()
        } else {
            ca.fingerprint.clone()
        },
    ))
}

/// Middleware of the plain HTTP listener when HTTPS is on: `/` points cadres to the HTTPS app,
/// the app shell redirects there, and `/api/` answers 403 `https_required`. Everything else
/// (villager pages, status, metrics, automerge-repo, `/ca`) is served as before.
pub async fn http_gate(State(https_port): State<u16>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok());
    let app = https_url(host, https_port);
    if path == "/" || path == "/index.html" {
        return Html(format!(
            r#"<!doctype html><html lang="zh-CN"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1"><title>村云 · 村干部应用</title>
<style>body{{font:16px/1.6 sans-serif;margin:0 auto;max-width:40em;padding:12px}}a.btn{{display:block;text-align:center;background:#1f6f43;color:#fff;padding:14px;border-radius:8px;text-decoration:none;margin:12px 0}}</style></head><body>
<h1>村干部应用请用安全连接打开</h1>
<a class="btn" id="https" href="{app}">打开村干部应用（https）</a>
<p>第一次使用的手机请先<a href="/ca">安装村云证书</a>，否则浏览器会提示“连接不是私密连接”。</p>
<p>村民查看推荐内容请直接扫描农户二维码。</p></body></html>"#
        ))
        .into_response();
    }
    if path == "/sw.js" || path.starts_with("/app/") {
        let to = format!("{}{}", app.trim_end_matches('/'), path);
        return (StatusCode::PERMANENT_REDIRECT, [(header::LOCATION, to)]).into_response();
    }
    if path.starts_with("/api/") {
        return (
            StatusCode::FORBIDDEN,
            axum::Json(serde_json::json!({
                "error": "https_required",
                "message": format!("请通过安全连接打开村干部应用：{app}"),
            })),
        )
            .into_response();
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn lan_names() {
        for ok in [
            "192.168.1.10",
            "10.0.0.2",
            "172.20.1.1",
            "127.0.0.1",
            "cunyun.lan",
            "localhost",
            "cun.local",
            "::1",
        ] {
            assert!(is_lan_name(ok), "{ok}");
        }
        for bad in ["8.8.8.8", "example.com", "lan.example.com", "", "a b.lan"] {
            assert!(!is_lan_name(bad), "{bad}");
        }
    }

    #[test]
    fn issues_covers_and_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let names = vec!["cunyun.lan".to_string(), "192.168.1.10".to_string()];
        let files = issue(dir.path(), &names).unwrap();
        assert!(still_good(&files.cert, &names));
        assert!(!still_good(&files.cert, &["other.lan".to_string()]));
        let ca_before = std::fs::read_to_string(&files.ca_cert).unwrap();
        // Re-issuing keeps the CA (phones need no reinstall).
        issue(dir.path(), &["other.lan".to_string()]).unwrap();
        assert_eq!(std::fs::read_to_string(&files.ca_cert).unwrap(), ca_before);
        assert!(server_config(&files).is_ok());
        let err = issue(dir.path(), &["example.com".to_string()]).unwrap_err();
        assert!(err.to_string().contains("example.com"));
        // prepare re-issues when the names change.
        let mut c = WebTlsConfig {
            names: vec!["node.lan".into()],
            dir: Some(dir.path().to_path_buf()),
            ..Default::default()
        };
        prepare(&c, dir.path()).unwrap();
        assert!(still_good(&files.cert, &c.names));
        // A lost CA is replaced and the certificate re-issued under it.
        std::fs::remove_file(&files.ca_cert).unwrap();
        std::fs::remove_file(dir.path().join("ca.key")).unwrap();
        prepare(&c, dir.path()).unwrap();
        let ca_now = std::fs::read_to_string(&files.ca_cert).unwrap();
        assert_ne!(ca_now, ca_before);
        assert!(server_config(&files).is_ok());
        c.cert = Some(files.cert.clone());
        assert!(matches!(
            prepare(&c, dir.path()),
            Err(WebTlsError::HalfConfigured)
        ));
    }

    #[test]
    fn https_url_from_host() {
        assert_eq!(
            https_url(Some("192.168.1.10:8080"), 8443),
            "https://192.168.1.10:8443/"
        );
        assert_eq!(https_url(Some("cunyun.lan"), 443), "https://cunyun.lan/");
        assert_eq!(https_url(Some("[::1]:80"), 8443), "https://[::1]:8443/");
        assert_eq!(
            https_url(Some("x\"><script>:1"), 8443),
            "https://xscript:8443/"
        );
    }
}
