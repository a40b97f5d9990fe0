//! Sensitive interests never travel above the county, enforced by both sides of a real mutual
//! TLS session with the hub on loopback. The test case is a county store into which household
//! profiles were written raw, bypassing the typed API: one with a sensitive stated need
//! (`hlt.mental`), one with a private field (`phone`), one with a sensitive tag in a derived list
//! (`pol.aid`), and a clean one.
//!
//! 1. **Sender.** An honest county session with the hub withholds the three (they are not listed
//!    and no change of them is sent; logged as `sync_withheld`), the session converges, and the
//!    hub holds only the clean profile; no planted marker is in the hub's files.
//! 2. **Receiver.** A county whose session is made to believe the hub is a county (a proxy
//!    rewrites the hub's hello) sends all four; the hub refuses the three (logged as
//!    `sync_refused`), stores nothing of them, and stores the clean one.

mod common;
use common::{identity, start_hub};

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use automerge::transaction::Transactable;
use automerge::{Automerge, ObjType, ReadDoc, ROOT};
use cunyun_hub::store::HubStore;
use cunyun_hub::RunningHub;
use cunyun_platform::certs::tls::TlsContext;
use cunyun_platform::host::NodeHost;
use cunyun_platform::store::{DocStore, DocWrite, StoreConfig};
use cunyun_platform::sync::runner::{run_session, SessionLimits};
use cunyun_protocol::area::{AreaCode, AreaScope};
use cunyun_protocol::household::HouseholdProfile;
use cunyun_protocol::identity::NodeIdentity;
use cunyun_protocol::key::{DocKey, Kind, Role};
use cunyun_protocol::sync::wire::{self, Frame, FrameReader};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const VILLAGE: &str = "511424104201";

fn logs() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let b = buf.clone();
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("cunyun=debug,warn"))
            .with_ansi(false)
            .with_writer(move || Capture(b.clone()))
            .try_init();
        buf
    })
}

struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut b) = self.0.lock() {
            b.extend_from_slice(data);
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn log_lines(pred: impl Fn(&str) -> bool) -> Vec<String> {
    let text = String::from_utf8_lossy(&logs().lock().expect("logs")).to_string();
    text.lines()
        .filter(|l| pred(l))
        .map(str::to_string)
        .collect()
}

fn files_containing(dir: &Path, needle: &[u8]) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_containing(&p, needle));
        } else if let Ok(bytes) = std::fs::read(&p) {
            if bytes.windows(needle.len()).any(|w| w == needle) {
                out.push(p);
            }
        }
    }
    out
}

fn hub_hh_keys(store: &dyn HubStore) -> Vec<DocKey> {
    store
        .entries(&AreaScope::parse("51").expect("scope"), Some(Kind::Hh))
        .expect("entries")
        .into_iter()
        .map(|(k, _)| k)
        .collect()
}

fn hh_keys(store: &DocStore) -> Vec<DocKey> {
    store
        .scan(&AreaScope::parse("51").expect("scope"))
        .map(|r| r.expect("scan").0)
        .filter(|k| k.kind() == Kind::Hh)
        .collect()
}

/// A profile written through the typed layer, then `raw` applied to the document directly.
fn raw_profile(
    id: &str,
    marker: &str,
    raw: impl FnOnce(&mut automerge::transaction::Transaction<'_>),
) -> DocWrite {
    let village = AreaCode::parse(VILLAGE).expect("area");
    let mut profile = HouseholdProfile::new(village, 1, 2);
    profile.age_18_59 = 2;
    profile.surveyor = marker.to_string();
    let mut doc = Automerge::new();
    let mut tx = doc.transaction();
    profile.write_to(&mut tx).expect("write");
    raw(&mut tx);
    tx.commit();
    DocWrite {
        key: DocKey::new(village, Kind::Hh, id).expect("key"),
        chunk: doc.save(),
        heads: doc.get_heads(),
        updated_at_ms: 1_700_000_000_000,
    }
}

/// Marker of the clean profile, then of the three sensitive ones.
const MARKS: [&str; 4] = ["PBCLEAN01", "PBMENTAL1", "PBPHONE01", "PBAIDTAG1"];

/// A county store (under `root/<name>`) with the four raw-written profiles, and its TLS context.
fn county_store(root: &Path, name: &str, n: u8) -> (DocStore, TlsContext) {
    let id = identity(n, Role::County, "511424");
    let dir = root.join(name);
    cunyun_platform::certs::tls::init_dev_identity(&root.join("ca"), &dir.join("tls"), &id)
        .expect("init");
    let store = DocStore::open(&dir.join("store"), StoreConfig::default()).expect("store");
    let writes = vec![
        raw_profile("hclean", MARKS[0], |_| {}),
        raw_profile("hmental", MARKS[1], |tx| {
            let needs = match tx.get(ROOT, "stated_needs").expect("get") {
                Some((_, id)) => id,
                None => tx
                    .put_object(ROOT, "stated_needs", ObjType::Map)
                    .expect("map"),
            };
            tx.put_object(&needs, "hlt.mental", ObjType::Map)
                .expect("need");
        }),
        raw_profile("hphone", MARKS[2], |tx| {
            tx.put(ROOT, "phone", "13812345678").expect("phone");
        }),
        raw_profile("haid", MARKS[3], |tx| {
            let list = tx
                .put_object(ROOT, "derived_tags", ObjType::List)
                .expect("list");
            tx.insert(&list, 0, "pol.aid").expect("tag");
        }),
    ];
    store.commit(writes).expect("commit");
    let tls = TlsContext::load(&dir.join("tls"), Default::default()).expect("tls");
    (store, tls)
}

fn hub_sync_addr(hub: &RunningHub) -> std::net::SocketAddr {
    hub.hub.sync.as_ref().expect("sync").listen_addr()
}

async fn wait_for_hh(hub: &RunningHub, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && hub_hh_keys(hub.hub.store.as_ref()).len() < n {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn assert_hub_holds_only_the_clean_profile(hub: RunningHub, root: &Path) {
    let keys: Vec<String> = hub_hh_keys(hub.hub.store.as_ref())
        .iter()
        .map(|k| k.id().to_string())
        .collect();
    assert_eq!(keys, ["hclean"], "the hub holds {keys:?}");
    hub.stop().await.expect("stop");
    let hub_dir = root.join("hub");
    assert!(!files_containing(&hub_dir, MARKS[0].as_bytes()).is_empty());
    for m in &MARKS[1..] {
        assert!(
            files_containing(&hub_dir, m.as_bytes()).is_empty(),
            "{m} reached the hub's files"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_county_withholds_sensitive_profiles_from_the_hub() {
    logs();
    let root = tempfile::tempdir().expect("tempdir");
    let hub = start_hub(root.path()).await;
    let (store, tls) = county_store(root.path(), "county", 6);
    let (stream, hub_identity) = tls.connect(hub_sync_addr(&hub)).await.expect("connect");
    let report = tokio::time::timeout(
        Duration::from_secs(60),
        run_session(
            stream,
            Arc::new(NodeHost::new(store.clone(), &root.path().join("county"))),
            tls.identity,
            hub_identity,
            None,
            SessionLimits::default(),
        ),
    )
    .await
    .expect("session ends");
    assert!(report.outcome.is_ok(), "{report:?}");
    wait_for_hh(&hub, 1).await;
    let withheld = log_lines(|l| l.contains("sync_withheld") && l.contains(VILLAGE));
    for id in ["hmental", "hphone", "haid"] {
        assert!(
            withheld.iter().any(|l| l.contains(&format!("/hh/{id}"))),
            "{id} not logged as withheld: {withheld:?}"
        );
    }
    assert!(!withheld.iter().any(|l| l.contains("/hh/hclean")));
    // The county keeps all four.
    assert_eq!(hh_keys(&store).len(), 4);
    assert_hub_holds_only_the_clean_profile(hub, root.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_hub_refuses_sensitive_profiles_a_county_sends_anyway() {
    logs();
    let root = tempfile::tempdir().expect("tempdir");
    let hub = start_hub(root.path()).await;
    let (store, tls) = county_store(root.path(), "rogue", 7);
    let (stream, hub_identity) = tls.connect(hub_sync_addr(&hub)).await.expect("connect");
    // The rogue's session believes the hub is a county, so it does not withhold anything; the
    // hub's session sees the truth.
    let pretend = NodeIdentity {
        role: Role::County,
        scope: AreaScope::parse("511424").expect("scope"),
        ..hub_identity
    };
    let (mine, theirs) = tokio::io::duplex(1 << 20);
    let (mut tls_rd, mut tls_wr) = tokio::io::split(stream);
    let (mut p_rd, mut p_wr) = tokio::io::split(theirs);
    let up = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut p_rd, &mut tls_wr).await;
        let _ = tls_wr.shutdown().await;
    });
    let down = tokio::spawn(async move {
        let mut reader = FrameReader::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match tls_rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            reader.push(&buf[..n]);
            let mut out = Vec::new();
            while let Ok(Some(mut frame)) = reader.next_frame() {
                if let Frame::Hello(h) = &mut frame {
                    h.identity.role = pretend.role;
                    h.identity.scope = pretend.scope;
                }
                wire::encode_into(&frame, &mut out).expect("encode");
            }
            if p_wr.write_all(&out).await.is_err() {
                break;
            }
        }
        let _ = p_wr.shutdown().await;
    });
    let _report = tokio::time::timeout(
        Duration::from_secs(60),
        run_session(
            mine,
            Arc::new(NodeHost::new(store.clone(), &root.path().join("rogue"))),
            tls.identity,
            pretend,
            None,
            SessionLimits::default(),
        ),
    )
    .await
    .expect("session ends");
    up.abort();
    down.abort();
    wait_for_hh(&hub, 1).await;
    let refused = log_lines(|l| l.contains("sync_refused") && l.contains("敏感"));
    for id in ["hmental", "hphone", "haid"] {
        assert!(
            refused.iter().any(|l| l.contains(&format!("/hh/{id}"))),
            "{id} not refused by the hub: {refused:?}"
        );
    }
    assert_hub_holds_only_the_clean_profile(hub, root.path()).await;
}
