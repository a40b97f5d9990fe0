//! Certificate chains over real mutual TLS on loopback: a province root, a county CA issued by
//! it, and village certificates issued by the county CA offline.
//!
//! Refused: a certificate from another CA, an expired one, one whose scope is not inside its
//! county issuer's (in both directions of the handshake). Accepted: a proper chain province →
//! county → village, which then syncs through the whole node. The clock rule for Pis whose
//! clock is wrong after a power cut is checked on the verifier directly.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cunyun_node::config::NodeConfig;
use cunyun_node::server::{self, RunningNode};
use cunyun_platform::certs::revocation::RevocationSet;
use cunyun_platform::certs::tls::{CertAuthority, CertKeyPem, TlsContext, Validity, SERVER_NAME};
use cunyun_platform::certs::trust::{system_time_s, TrustClock, TrustError};
use cunyun_protocol::area::AreaScope;
use cunyun_protocol::identity::{NodeId, NodeIdentity};
use cunyun_protocol::key::Role;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn ident(n: u8, role: Role, scope: &str) -> NodeIdentity {
    NodeIdentity {
        node_id: NodeId([n; 16]),
        role,
        scope: AreaScope::parse(scope).expect("scope"),
    }
}

const VILLAGE_A: &str = "510116108203";
const VILLAGE_B: &str = "510116108204";

struct Pki {
    root: CertAuthority,
    county: CertAuthority,
}

fn pki() -> Pki {
    let root = CertAuthority::create("test province", &ident(200, Role::Hub, "51")).expect("root");
    let key = rcgen::KeyPair::generate().expect("key");
    let cert_pem = root
        .issue_county_ca(&ident(100, Role::County, "510116"), &key)
        .expect("county CA");
    let county = CertAuthority::from_pem(CertKeyPem {
        cert_pem,
        key_pem: key.serialize_pem(),
    })
    .expect("county CA loads");
    Pki { root, county }
}

fn ctx(pem: &CertKeyPem, root: &CertAuthority) -> TlsContext {
    TlsContext::from_pem(pem, &root.pem.cert_pem, Path::new("<test>")).expect("ctx")
}

/// One handshake and a ping; Ok((what the server saw, what the client saw)) or an error.
async fn handshake(server: TlsContext, client: TlsContext) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let srv = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.map_err(|e| e.to_string())?;
        let (mut s, _) = server.accept(tcp).await.map_err(|e| e.to_string())?;
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
        s.write_all(b"pong").await.map_err(|e| e.to_string())?;
        s.shutdown().await.map_err(|e| e.to_string())?;
        Ok::<_, String>(())
    });
    let client_side = async {
        let (mut c, _) = client.connect(addr).await.map_err(|e| e.to_string())?;
        c.write_all(b"ping").await.map_err(|e| e.to_string())?;
        let mut buf = [0u8; 4];
        c.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
        Ok::<_, String>(())
    };
    let c = tokio::time::timeout(Duration::from_secs(10), client_side)
        .await
        .map_err(|_| "timeout".to_string())?;
    let s = tokio::time::timeout(Duration::from_secs(10), srv)
        .await
        .map_err(|_| "timeout".to_string())?
        .map_err(|e| e.to_string())?;
    c.and(s)
}

/// Asserts a peer with `bad` is refused by a good node whichever side dials.
async fn refused_both_ways(good: &TlsContext, bad: &TlsContext) {
    assert!(
        handshake(good.clone(), bad.clone()).await.is_err(),
        "bad client accepted"
    );
    assert!(
        handshake(bad.clone(), good.clone()).await.is_err(),
        "bad server accepted"
    );
}

fn chain(pem: &CertKeyPem) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("pem")
}

fn verify(ctx: &TlsContext, pem: &CertKeyPem, system_now: u64) -> Result<NodeIdentity, TrustError> {
    let c = chain(pem);
    ctx.verifier()
        .verify(&c[0], &c[1..], system_now, webpki::KeyUsage::client_auth())
        .map(|v| v.identity)
}

/// A village certificate the county CA signs although its scope lies in another county —
/// what a stolen or buggy county CA would make. Built with rcgen directly, past the checks of
/// [`CertAuthority::issue`].
fn out_of_county_village(county: &CertAuthority) -> CertKeyPem {
    let ca_key = rcgen::KeyPair::from_pem(&county.pem.key_pem).expect("key");
    let issuer = rcgen::Issuer::from_ca_cert_pem(&county.pem.cert_pem, ca_key).expect("issuer");
    let id = ident(9, Role::Village, "510117104201");
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(vec![SERVER_NAME.to_string()]).expect("p");
    params
        .subject_alt_names
        .push(rcgen::SanType::URI(id.to_uri().try_into().expect("uri")));
    params.is_ca = rcgen::IsCa::ExplicitNoCa;
    let cert = params.signed_by(&key, &issuer).expect("sign");
    CertKeyPem {
        cert_pem: format!("{}{}", cert.pem(), county.pem.cert_pem),
        key_pem: key.serialize_pem(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_chains_are_refused_good_ones_accepted() {
    let p = pki();
    let village_a = p
        .county
        .issue(&ident(1, Role::Village, VILLAGE_A))
        .expect("issue");
    let village_b = p
        .county
        .issue(&ident(2, Role::Village, VILLAGE_B))
        .expect("issue");
    let a = ctx(&village_a, &p.root);
    let b = ctx(&village_b, &p.root);
    // Two villages of one county, both issued offline by the county CA.
    handshake(a.clone(), b.clone()).await.expect("proper chain");
    handshake(b.clone(), a.clone()).await.expect("proper chain");

    // Another CA (its own root, its own county CA) claiming the same village.
    let rogue = pki();
    let stranger = ctx(
        &rogue
            .county
            .issue(&ident(3, Role::Village, VILLAGE_A))
            .expect("issue"),
        &rogue.root,
    );
    refused_both_ways(&a, &stranger).await;
    assert!(matches!(
        verify(
            &a,
            &rogue
                .county
                .issue(&ident(3, Role::Village, VILLAGE_A))
                .unwrap(),
            system_time_s()
        ),
        Err(TrustError::UnknownIssuer(_))
    ));

    // Expired yesterday.
    let now = system_time_s() as i64;
    let expired_pem = p
        .county
        .issue_with(
            &ident(4, Role::Village, VILLAGE_B),
            Validity {
                not_before: now - 10 * 86_400,
                not_after: now - 86_400,
            },
        )
        .expect("issue");
    let expired = TlsContext::from_pem(&expired_pem, &p.root.pem.cert_pem, Path::new("-"))
        .expect("an expired certificate still loads");
    refused_both_ways(&a, &expired).await;
    assert!(matches!(
        verify(&a, &expired_pem, system_time_s()),
        Err(TrustError::Expired { .. })
    ));

    // A village outside its county issuer's scope.
    let wide_pem = out_of_county_village(&p.county);
    let wide = ctx(&wide_pem, &p.root);
    refused_both_ways(&a, &wide).await;
    assert!(matches!(
        verify(&a, &wide_pem, system_time_s()),
        Err(TrustError::Policy(_))
    ));

    // The good chain verifies directly too, with the identity from the leaf.
    assert_eq!(
        verify(&b, &village_a, system_time_s()).expect("ok"),
        ident(1, Role::Village, VILLAGE_A)
    );
}

#[test]
fn clock_rule_for_pis_without_a_clock() {
    let p = pki();
    let now = system_time_s();
    let own = p
        .county
        .issue(&ident(1, Role::Village, VILLAGE_A))
        .expect("issue");
    // The Pi last saw a correct time `now`; after a power cut its clock reads 1970.
    let clock = Arc::new(TrustClock::in_memory(now));
    let pi = TlsContext::build(
        &own,
        &p.root.pem.cert_pem,
        Path::new("-"),
        clock.clone(),
        Arc::new(RevocationSet::new()),
    )
    .expect("ctx");
    let expired_yesterday = p
        .county
        .issue_with(
            &ident(4, Role::Village, VILLAGE_B),
            Validity {
                not_before: now as i64 - 10 * 86_400,
                not_after: now as i64 - 86_400,
            },
        )
        .expect("issue");
    // Still refused although the system clock says 1970: trusted time never goes back.
    assert!(matches!(
        verify(&pi, &expired_yesterday, 0),
        Err(TrustError::Expired { .. })
    ));
    // A certificate issued "in the future" of the broken clock is accepted, and moves the mark.
    let later = now as i64 + 30 * 86_400;
    let fresh = p
        .county
        .issue_with(
            &ident(5, Role::Village, VILLAGE_B),
            Validity {
                not_before: later,
                not_after: later + 365 * 86_400,
            },
        )
        .expect("issue");
    assert_eq!(
        verify(&pi, &fresh, 0).expect("accepted"),
        ident(5, Role::Village, VILLAGE_B)
    );
    assert_eq!(clock.mark(), later as u64);
    // A certificate that expired between the old mark and the new one is now refused.
    let stale = p
        .county
        .issue_with(
            &ident(6, Role::Village, VILLAGE_B),
            Validity {
                not_before: now as i64,
                not_after: now as i64 + 86_400,
            },
        )
        .expect("issue");
    assert!(matches!(
        verify(&pi, &stale, 0),
        Err(TrustError::Expired { .. })
    ));
    // A fresh node's own certificate is its first evidence of the time.
    let fresh_clock = Arc::new(TrustClock::in_memory(0));
    TlsContext::build(
        &own,
        &p.root.pem.cert_pem,
        Path::new("-"),
        fresh_clock.clone(),
        Arc::new(RevocationSet::new()),
    )
    .expect("ctx");
    assert!(fresh_clock.mark() + 7200 > now && fresh_clock.mark() <= now);
}

#[test]
fn trusted_time_mark_survives_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("clock");
    let clock = TrustClock::load(path.clone());
    assert_eq!(clock.mark(), 0);
    clock.observe(1_800_000_000);
    clock.observe(1_700_000_000);
    assert_eq!(clock.mark(), 1_800_000_000);
    assert_eq!(TrustClock::load(path.clone()).mark(), 1_800_000_000);
    // A system clock a year and more past the certificate evidence is not remembered; one
    // within a year is.
    let clock = TrustClock::load(path.clone());
    clock.observe_system(1_800_000_000 + 2 * 365 * 86_400);
    assert_eq!(clock.mark(), 1_800_000_000);
    clock.observe_system(1_800_000_000 + 30 * 86_400);
    assert_eq!(clock.mark(), 1_800_000_000 + 30 * 86_400);
    assert_eq!(TrustClock::load(path).mark(), 1_800_000_000 + 30 * 86_400);
}

async fn start_node(
    dir: &Path,
    scope: &str,
    role: Role,
    peers: Vec<std::net::SocketAddr>,
) -> RunningNode {
    let mut c = NodeConfig::default();
    c.data_dir = dir.to_owned();
    c.listen = "127.0.0.1:0".parse().expect("addr");
    c.scope = AreaScope::parse(scope).expect("scope");
    c.role = role;
    c.sync.enabled = true;
    c.sync.listen = "127.0.0.1:0".parse().expect("addr");
    c.sync.mdns = false;
    c.sync.static_peers = peers;
    c.sync.interval_s = 1;
    c.sync.debounce_ms = 100;
    c.sync.backoff_ms = 200;
    server::start(&c, std::future::pending())
        .await
        .expect("node starts")
}

fn count(node: &RunningNode) -> usize {
    node.state
        .records
        .store()
        .scan(&AreaScope::parse("51").expect("scope"))
        .count()
}

/// A county node (certificate from its own county CA) and a village issued offline by that
/// CA sync through the whole node; a village whose certificate comes from another CA does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn province_county_village_chain_syncs() {
    let root = tempfile::tempdir().expect("tempdir");
    let p = pki();
    let rogue = pki();
    let write = |name: &str, pem: &CertKeyPem, root_pem: &str| {
        let dir = root.path().join(name);
        cunyun_platform::certs::tls::write_node_files(&dir.join("tls"), pem, root_pem)
            .expect("write");
        dir
    };
    let c_dir = write(
        "c",
        &p.county
            .issue(&ident(3, Role::County, "510116"))
            .expect("issue"),
        &p.root.pem.cert_pem,
    );
    let a_dir = write(
        "a",
        &p.county
            .issue(&ident(1, Role::Village, VILLAGE_A))
            .expect("issue"),
        &p.root.pem.cert_pem,
    );
    let x_dir = write(
        "x",
        &rogue
            .county
            .issue(&ident(7, Role::Village, VILLAGE_B))
            .expect("issue"),
        &rogue.root.pem.cert_pem,
    );
    let county = start_node(&c_dir, "510116", Role::County, vec![]).await;
    let c_addr = county.state.sync.as_ref().expect("sync").listen_addr();
    let a = start_node(&a_dir, VILLAGE_A, Role::Village, vec![c_addr]).await;
    let x = start_node(&x_dir, VILLAGE_B, Role::Village, vec![c_addr]).await;
    for (node, tag) in [(&a, "甲"), (&x, "冒")] {
        for i in 0..3 {
            let body = json!({"profile": {"group": 1, "residents": 2},
                              "private": {"head_name": format!("{tag}{i}")}});
            node.state
                .records
                .create_household("cadre", &body)
                .await
                .expect("create");
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while count(&county) < count(&a) {
        assert!(
            Instant::now() < deadline,
            "village A never reached the county"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Give the rogue village the same chances, then check nothing of it arrived.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(count(&county), count(&a), "only village A's documents");
    let status = x.state.sync.as_ref().expect("sync").status();
    assert_eq!(status.totals.sessions_ok, 0, "{:?}", status.peers);
    assert!(status.totals.sessions_failed > 0);
    for n in [a, x, county] {
        n.stop().await.expect("stop");
    }
}
