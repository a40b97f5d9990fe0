//! Revocation over real mutual TLS on loopback, with no hub anywhere: a county revokes its
//! lost village A; the signed list travels by gossip from the county to village B, which then
//! refuses A (and so does the county), while B and the county still sync. Forged, tampered and
//! out-of-scope lists change nothing.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use cunyun_node::config::NodeConfig;
use cunyun_node::server::{self, RunningNode};
use cunyun_platform::certs::enroll::CaDir;
use cunyun_platform::certs::revocation::{self, list_key, verify_signed, RevocationSet};
use cunyun_platform::certs::tls::{CertAuthority, CertKeyPem};
use cunyun_platform::certs::trust::system_time_s;
use cunyun_platform::host::NodeHost;
use cunyun_protocol::area::AreaScope;
use cunyun_protocol::identity::{NodeId, NodeIdentity};
use cunyun_protocol::key::Role;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

fn ident(n: u8, role: Role, scope: &str) -> NodeIdentity {
    NodeIdentity {
        node_id: NodeId([n; 16]),
        role,
        scope: AreaScope::parse(scope).expect("scope"),
    }
}

/// A province root and a county CA for `county` written as CA directories under `dir`.
fn pki(dir: &Path, n: u8, county: &str) -> (CaDir, CaDir) {
    let root = CertAuthority::create("province", &ident(n, Role::Hub, "51")).expect("root");
    CaDir::write(&dir.join("root"), &root.pem, &root.pem.cert_pem).expect("write");
    let key = rcgen::KeyPair::generate().expect("key");
    let cert_pem = root
        .issue_county_ca(&ident(n + 1, Role::County, county), &key)
        .expect("county CA");
    let county_pem = CertKeyPem {
        cert_pem,
        key_pem: key.serialize_pem(),
    };
    CaDir::write(&dir.join("county"), &county_pem, &root.pem.cert_pem).expect("write");
    (
        CaDir::load(&dir.join("root")).expect("root"),
        CaDir::load(&dir.join("county")).expect("county"),
    )
}

fn der(pem: &str) -> Vec<u8> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .expect("a cert")
        .expect("pem")
        .as_ref()
        .to_vec()
}

async fn start_node(
    dir: &Path,
    id: &NodeIdentity,
    ca: &CaDir,
    peers: Vec<std::net::SocketAddr>,
) -> RunningNode {
    let pem = ca.ca.issue(id).expect("issue");
    cunyun_platform::certs::tls::write_node_files(&dir.join("tls"), &pem, &ca.root_pem)
        .expect("files");
    let mut c = NodeConfig::default();
    c.data_dir = dir.to_owned();
    c.listen = "127.0.0.1:0".parse().expect("addr");
    c.scope = id.scope;
    c.role = id.role;
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

fn sync(node: &RunningNode) -> &cunyun_platform::sync::service::SyncService {
    node.state.sync.as_ref().expect("sync enabled")
}

/// Whether `from` can complete a converged session with the node at `addr` now.
async fn syncs(from: &RunningNode, addr: std::net::SocketAddr) -> bool {
    matches!(sync(from).sync_with(addr).await, Ok(r) if r.outcome.is_ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn county_revokes_a_lost_village_while_the_hub_is_unreachable() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (_root, county_ca) = pki(&tmp.path().join("pki"), 10, "510116");
    let c_id = ident(1, Role::County, "510116");
    let a_id = ident(2, Role::Village, "510116108203");
    let b_id = ident(3, Role::Village, "510116108204");
    let county = start_node(&tmp.path().join("c"), &c_id, &county_ca, vec![]).await;
    let c_addr = sync(&county).listen_addr();
    let a = start_node(&tmp.path().join("a"), &a_id, &county_ca, vec![c_addr]).await;
    let a_addr = sync(&a).listen_addr();
    let b = start_node(&tmp.path().join("b"), &b_id, &county_ca, vec![c_addr]).await;
    assert!(
        syncs(&b, a_addr).await,
        "B and A sync before the revocation"
    );
    assert!(syncs(&county, a_addr).await, "the county and A sync before");

    // Village A is lost: the county revokes it (no hub exists in this test).
    let list = revocation::publish(
        &NodeHost::new(county.state.records.store().clone(), &tmp.path().join("c")),
        county_ca.revocation_issuer(),
        &[a_id.node_id],
        &[],
        system_time_s(),
    )
    .expect("published");
    assert_eq!(list.seq, 1);
    let audit = cunyun_platform::audit::Audit::open(&county_ca.dir)
        .read(&Default::default())
        .expect("audit");
    assert!(
        audit
            .iter()
            .any(|e| e.action == "revoke" && e.target == a_id.node_id.to_string()),
        "the revocation is in the CA's audit log: {audit:?}"
    );
    let key = list_key(&c_id.scope, &county_ca.ca.identity.node_id).expect("key");

    // The list reaches B by gossip (B's periodic sync with the county), and B then refuses A.
    let deadline = Instant::now() + Duration::from_secs(30);
    while b
        .state
        .records
        .store()
        .entry(&key)
        .expect("entry")
        .is_none()
    {
        assert!(Instant::now() < deadline, "the list never reached B");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while syncs(&b, a_addr).await {
        assert!(Instant::now() < deadline, "B still syncs with revoked A");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Refused in both directions, by B and by the county; B and the county still sync.
    assert!(!syncs(&a, sync(&b).listen_addr()).await, "A dialling B");
    assert!(!syncs(&county, a_addr).await, "the county dialling A");
    assert!(!syncs(&a, c_addr).await, "A dialling the county");
    assert!(syncs(&b, c_addr).await, "B and the county");
    // A second revocation extends the list (cumulative, next sequence number).
    let list = revocation::publish(
        &NodeHost::new(county.state.records.store().clone(), &tmp.path().join("c")),
        county_ca.revocation_issuer(),
        &[NodeId([9; 16])],
        &[],
        system_time_s(),
    )
    .expect("published");
    assert_eq!((list.seq, list.nodes.len()), (2, 2));
    for n in [a, b, county] {
        n.stop().await.expect("stop");
    }
}

#[test]
fn forged_tampered_and_out_of_scope_lists_change_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (root, county) = pki(&tmp.path().join("p"), 20, "510116");
    let (_rogue_root, rogue_county) = pki(&tmp.path().join("r"), 30, "510116");
    let root_der = der(&root.root_pem);
    let list = revocation::RevocationList {
        v: revocation::LIST_VERSION,
        issuer: county.ca.identity,
        seq: 1,
        issued_at_s: system_time_s(),
        nodes: vec![NodeId([2; 16])],
        serials: vec![],
    };
    let signed =
        revocation::sign_list(&list, &county.ca.pem.key_pem, &der(&county.ca.pem.cert_pem))
            .expect("sign");
    assert_eq!(verify_signed(&signed, &root_der).expect("valid"), list);

    // Tampered payload.
    let mut tampered = signed.clone();
    tampered.payload = tampered.payload.replace("0202", "0303");
    assert!(matches!(
        verify_signed(&tampered, &root_der),
        Err(revocation::RevocationError::Signature)
    ));
    // Signed by a county CA of another root, claiming our county's identity.
    let forged = revocation::sign_list(
        &revocation::RevocationList {
            issuer: rogue_county.ca.identity,
            ..list.clone()
        },
        &rogue_county.ca.pem.key_pem,
        &der(&rogue_county.ca.pem.cert_pem),
    )
    .expect("sign");
    assert!(matches!(
        verify_signed(&forged, &root_der),
        Err(revocation::RevocationError::Issuer(_))
    ));
    // Our county's certificate but another key.
    let wrong_key = revocation::sign_list(
        &list,
        &rogue_county.ca.pem.key_pem,
        &der(&county.ca.pem.cert_pem),
    )
    .expect("sign");
    assert!(verify_signed(&wrong_key, &root_der).is_err());

    // A county's list does not reach outside its county.
    let set = RevocationSet::new();
    let elsewhere = revocation::RevocationList {
        nodes: vec![NodeId([4; 16]), NodeId([5; 16])],
        ..list.clone()
    };
    assert!(set.add(&elsewhere));
    assert!(set
        .revoked(&ident(4, Role::Village, "510116108203"), b"x")
        .is_some());
    assert!(set
        .revoked(&ident(5, Role::Village, "510117104201"), b"x")
        .is_none());
    assert!(set.revoked(&ident(5, Role::Hub, "51"), b"x").is_none());
    assert!(
        !set.add(&elsewhere),
        "adding the same list again changes nothing"
    );
}

/// A session already running with a node when its revocation arrives is ended at once, not at
/// the session's idle or total limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_session_ends_when_the_peer_is_revoked() {
    use tokio::io::AsyncReadExt;
    let tmp = tempfile::tempdir().expect("tempdir");
    let (_root, county_ca) = pki(&tmp.path().join("pki"), 40, "510116");
    let c_id = ident(1, Role::County, "510116");
    let a_id = ident(2, Role::Village, "510116108203");
    let county = start_node(&tmp.path().join("c"), &c_id, &county_ca, vec![]).await;
    let c_addr = sync(&county).listen_addr();
    // Village A connects and then says nothing: the county waits for it (idle limit 60 s).
    let a = cunyun_platform::certs::tls::TlsContext::from_pem(
        &county_ca.ca.issue(&a_id).expect("issue"),
        &county_ca.root_pem,
        Path::new("-"),
    )
    .expect("ctx");
    let (mut stream, seen) = a.connect(c_addr).await.expect("connected");
    assert_eq!(seen, c_id);
    let mut buf = vec![0u8; 64 * 1024];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
        .await
        .expect("the county speaks first")
        .expect("read");
    assert!(n > 0, "the county's hello");
    revocation::publish(
        &NodeHost::new(county.state.records.store().clone(), &tmp.path().join("c")),
        county_ca.revocation_issuer(),
        &[a_id.node_id],
        &[],
        system_time_s(),
    )
    .expect("published");
    // The county drops the connection: EOF or an error, well before any session limit.
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "the session with the revoked village kept running"
    );
    county.stop().await.expect("stop");
}
