//! Enrollment over real TLS on loopback: the hub's one-time token enrolls a county (which gets
//! a county CA), the token works once (also after a restart), expires, and is useless against
//! another root; the county then enrolls villages while the hub is gone — offline into files,
//! and over the LAN with a token of its own — and those villages talk to the county node.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use cunyun_platform::certs::enroll::{self, CaDir, EnrollError, TokenStore};
use cunyun_platform::certs::tls::{CertAuthority, TlsContext};
use cunyun_platform::certs::trust::system_time_s;
use cunyun_protocol::area::AreaScope;
use cunyun_protocol::identity::{NodeId, NodeIdentity};
use cunyun_protocol::key::Role;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn scope(s: &str) -> AreaScope {
    AreaScope::parse(s).expect("scope")
}

fn province_ca(dir: &Path, n: u8) -> CaDir {
    let id = NodeIdentity {
        node_id: NodeId([n; 16]),
        role: Role::Hub,
        scope: scope("51"),
    };
    let ca = CertAuthority::create("test province", &id).expect("root");
    CaDir::write(dir, &ca.pem, &ca.pem.cert_pem).expect("write");
    CaDir::load(dir).expect("load")
}

/// Serves enrollment for the CA in `dir`; returns the address and the task (abort = unreachable).
async fn serve(dir: &Path) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let ca = Arc::new(CaDir::load(dir).expect("ca"));
    let tokens = Arc::new(TokenStore::open(dir));
    (addr, tokio::spawn(enroll::serve(listener, ca, tokens)))
}

async fn ping(server: TlsContext, client: TlsContext) -> Result<(), String> {
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
        Ok::<_, String>(())
    });
    let cli = async {
        let (mut c, _) = client.connect(addr).await.map_err(|e| e.to_string())?;
        c.write_all(b"ping").await.map_err(|e| e.to_string())?;
        let mut buf = [0u8; 4];
        c.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
        Ok::<_, String>(())
    };
    let c = tokio::time::timeout(Duration::from_secs(10), cli)
        .await
        .map_err(|_| "timeout".to_string())?;
    let s = tokio::time::timeout(Duration::from_secs(10), srv)
        .await
        .map_err(|_| "timeout".to_string())?
        .map_err(|e| e.to_string())?;
    c.and(s)
}

fn load(dir: &Path) -> TlsContext {
    TlsContext::load(&dir.join("tls"), Default::default()).expect("tls loads")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn county_enrolls_at_the_hub_then_enrolls_villages_offline() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let hub_dir = tmp.path().join("hub-ca");
    let hub = province_ca(&hub_dir, 200);
    let root_pem = hub.root_pem.clone();
    let tokens = TokenStore::open(&hub_dir);
    let t = tokens
        .issue(scope("510116"), Role::County, 3600, system_time_s())
        .expect("token");
    assert!(t.token.starts_with("cy1-"));
    let (addr, hub_task) = serve(&hub_dir).await;

    // A wrong token and a wrong root both fail and consume nothing.
    let c_dir = tmp.path().join("county");
    let e = enroll::enroll_node(
        addr,
        &root_pem,
        "cy1-00000000000000000000000000000000",
        &c_dir,
    )
    .await
    .expect_err("unknown token");
    assert!(
        matches!(e, EnrollError::Refused(ref m) if m.contains("令牌无效")),
        "{e}"
    );
    let rogue = province_ca(&tmp.path().join("rogue-ca"), 201);
    assert!(
        enroll::enroll_node(addr, &rogue.root_pem, &t.token, &c_dir)
            .await
            .is_err(),
        "a client that trusts another root refuses the endpoint"
    );

    // The county enrolls: a county CA and its own node certificate.
    let done = enroll::enroll_node(addr, &root_pem, &t.token, &c_dir)
        .await
        .expect("enrolled");
    assert_eq!(done.identity.role, Role::County);
    assert_eq!(done.identity.scope, scope("510116"));
    let county_ca_dir = done.ca_dir.clone().expect("a county CA");
    let county_ca = CaDir::load(&county_ca_dir).expect("county CA loads");
    assert!(county_ca.ca.is_intermediate());
    assert_eq!(county_ca.ca.identity, done.identity);
    let county = load(&c_dir);
    assert_eq!(county.identity, done.identity);

    // The token is spent, also for a restarted endpoint.
    let again = enroll::enroll_node(addr, &root_pem, &t.token, &tmp.path().join("c2"))
        .await
        .expect_err("second use");
    assert!(
        matches!(again, EnrollError::Refused(ref m) if m.contains("已被使用")),
        "{again}"
    );
    hub_task.abort();
    let (addr2, hub_task) = serve(&hub_dir).await;
    let again = enroll::enroll_node(addr2, &root_pem, &t.token, &tmp.path().join("c3"))
        .await
        .expect_err("second use after restart");
    assert!(
        matches!(again, EnrollError::Refused(ref m) if m.contains("已被使用")),
        "{again}"
    );
    // An expired token.
    let old = tokens
        .issue(scope("510117"), Role::County, 0, system_time_s())
        .expect("token");
    let e = enroll::enroll_node(addr2, &root_pem, &old.token, &tmp.path().join("c4"))
        .await
        .expect_err("expired");
    assert!(
        matches!(e, EnrollError::Refused(ref m) if m.contains("已过期")),
        "{e}"
    );
    // The hub goes away.
    hub_task.abort();

    // Offline: the county issues a village certificate into files for the Pi.
    let v_dir = tmp.path().join("village-a");
    let va = county_ca
        .issue_node_files(
            scope("510116108203"),
            Role::Village,
            None,
            &v_dir.join("tls"),
        )
        .expect("issued offline");
    let village_a = load(&v_dir);
    assert_eq!(village_a.identity, va);
    ping(county.clone(), village_a.clone())
        .await
        .expect("village and county");
    // Renewal: a new certificate for the same node id, which works like the first.
    let renewed = county_ca
        .issue_node_files(
            scope("510116108203"),
            Role::Village,
            Some(va.node_id),
            &tmp.path().join("renewed").join("tls"),
        )
        .expect("renewed");
    assert_eq!(renewed, va);
    let village_a2 = load(&tmp.path().join("renewed"));
    assert_eq!(village_a2.identity, va);
    ping(county.clone(), village_a2)
        .await
        .expect("renewed village");
    // A county CA refuses a village of another county.
    assert!(county_ca
        .issue_node_files(
            scope("510117104201"),
            Role::Village,
            None,
            &tmp.path().join("x")
        )
        .is_err());

    // Over the LAN: the county serves enrollment with a token of its own.
    let vt = TokenStore::open(&county_ca_dir)
        .issue(scope("510116108204"), Role::Village, 3600, system_time_s())
        .expect("token");
    let (caddr, county_task) = serve(&county_ca_dir).await;
    let b_dir = tmp.path().join("village-b");
    let vb = enroll::enroll_node(caddr, &root_pem, &vt.token, &b_dir)
        .await
        .expect("village enrolled over the LAN");
    assert_eq!(vb.identity.scope, scope("510116108204"));
    assert!(vb.ca_dir.is_none(), "a village gets no CA");
    let village_b = load(&b_dir);
    ping(village_a, village_b.clone())
        .await
        .expect("two villages");
    ping(village_b, county).await.expect("village b and county");
    // Every CA event is in the audit log of its CA directory.
    let actions = |dir: &Path| -> Vec<String> {
        cunyun_platform::audit::Audit::open(dir)
            .read(&Default::default())
            .expect("audit log")
            .into_iter()
            .map(|e| format!("{} {}", e.action, e.target))
            .collect()
    };
    let hub_log = actions(&hub_dir);
    for a in [
        "enroll_token_issued 510116",
        "enroll_token_used 510116",
        "cert_issued urn:cunyun:node:",
    ] {
        assert!(
            hub_log.iter().any(|l| l.starts_with(a)),
            "{a} in {hub_log:?}"
        );
    }
    let county_log = actions(&county_ca_dir);
    for a in [
        "cert_issued urn:cunyun:node:",
        "enroll_token_issued 510116108204",
        "enroll_token_used 510116108204",
    ] {
        assert!(
            county_log.iter().any(|l| l.starts_with(a)),
            "{a} in {county_log:?}"
        );
    }
    county_task.abort();
}

#[test]
fn tokens_are_single_use_and_stored_hashed() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let _ca = province_ca(tmp.path(), 1);
    let tokens = TokenStore::open(tmp.path());
    let t = tokens
        .issue(scope("510116"), Role::County, 3600, system_time_s())
        .expect("token");
    assert!(matches!(
        tokens.redeem("nonsense", NodeId([1; 16]), system_time_s()),
        Err(EnrollError::UnknownToken)
    ));
    // The real token still works once.
    assert_eq!(
        tokens
            .redeem(&t.token, NodeId([2; 16]), system_time_s())
            .expect("redeem"),
        (scope("510116"), Role::County)
    );
    assert!(matches!(
        tokens.redeem(&t.token, NodeId([3; 16]), system_time_s()),
        Err(EnrollError::TokenUsed)
    ));
    // The file holds hashes, never the token.
    let text = std::fs::read_to_string(tmp.path().join("tokens.json")).expect("tokens.json");
    assert!(!text.contains(&t.token));
}
