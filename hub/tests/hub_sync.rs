//! The hub as a sync peer over real mutual TLS on loopback, in process with real stores.
//!
//! 1. A village node records households (with planted marker strings in every private field);
//!    they sync up to the hub, which matches them against its library and writes `rec`
//!    documents that sync back down to the village. The hub never holds an `hp` document and no
//!    marker string appears in any byte of the hub's data directory. Feedback (`fb`) recorded on
//!    the village node syncs up and changes the hub's coverage figures for the village.
//! 2. A misbehaving peer (a county certificate whose session pretends the hub is a county, so
//!    it offers its `hp` documents) is refused by the hub for every `hp` document, the refusal is
//!    logged on the hub's side, and nothing of it is stored.

mod common;
use common::{identity, start_hub};

use std::io::Write;

use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use automerge::Automerge;
use cunyun_hub::store::HubStore;
use cunyun_hub::RunningHub;
use cunyun_node::config::NodeConfig;
use cunyun_node::server::{self, RunningNode};
use cunyun_platform::certs::tls::TlsContext;
use cunyun_platform::host::NodeHost;
use cunyun_platform::store::{DocStore, DocWrite, StoreConfig};
use cunyun_platform::sync::runner::{run_session, SessionLimits};
use cunyun_protocol::area::AreaScope;
use cunyun_protocol::fields::Date;
use cunyun_protocol::household::{HouseholdPrivate, HouseholdProfile};
use cunyun_protocol::identity::NodeIdentity;
use cunyun_protocol::key::{DocKey, Kind, Role};
use cunyun_protocol::rec::Rec;
use cunyun_protocol::sync::wire::{self, Frame, FrameReader};
use serde_json::json;

const VILLAGE: &str = "511424104201";
const MARKERS: [&str; 4] = ["HPMARKname", "HPMARKroster", "HPMARKnotes", "HPMARKneed"];

/// Log lines of this test process (every test shares one global subscriber).
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

fn hub_sync_addr(hub: &RunningHub) -> std::net::SocketAddr {
    hub.hub.sync.as_ref().expect("sync").listen_addr()
}

async fn start_village(root: &Path, peer: std::net::SocketAddr) -> RunningNode {
    let id = identity(1, Role::Village, VILLAGE);
    let dir = root.join("village");
    cunyun_platform::certs::tls::init_dev_identity(&root.join("ca"), &dir.join("tls"), &id)
        .expect("init");
    let mut c = NodeConfig::default();
    c.data_dir = dir;
    c.listen = "127.0.0.1:0".parse().expect("addr");
    c.scope = id.scope;
    c.role = id.role;
    c.sync.enabled = true;
    c.sync.listen = "127.0.0.1:0".parse().expect("addr");
    c.sync.mdns = false;
    c.sync.static_peers = vec![peer];
    c.sync.interval_s = 1;
    c.sync.debounce_ms = 100;
    c.sync.backoff_ms = 200;
    server::start(&c, std::future::pending())
        .await
        .expect("village starts")
}

/// Every file below `dir` whose bytes contain `needle`.
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

fn doc_write(
    key: DocKey,
    f: impl FnOnce(
        &mut automerge::transaction::Transaction<'_>,
    ) -> Result<(), cunyun_protocol::fields::ViewError>,
) -> DocWrite {
    let mut doc = Automerge::new();
    let mut tx = doc.transaction();
    f(&mut tx).expect("write");
    tx.commit();
    DocWrite {
        key,
        chunk: doc.save(),
        heads: doc.get_heads(),
        updated_at_ms: 1_700_000_000_000,
    }
}

fn kinds_in(store: &Arc<dyn HubStore>) -> Vec<DocKey> {
    store
        .entries(&AreaScope::parse("51").expect("scope"), None)
        .expect("entries")
        .into_iter()
        .map(|(k, _)| k)
        .collect()
}

fn add_content(hub: &RunningHub, root: &Path, name: &str, meta: serde_json::Value) -> String {
    let file = root.join(name);
    std::fs::write(&file, format!("# {}\n", meta["title"])).expect("write");
    hub.hub
        .library
        .add(&meta, &file, &Default::default())
        .expect("add content")
        .id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn household_recorded_in_village_gets_rec_document_and_hub_holds_no_private_data() {
    logs();
    let root = tempfile::tempdir().expect("tempdir");
    let hub = start_hub(root.path()).await;
    let asf = add_content(
        &hub,
        root.path(),
        "asf.md",
        json!({"title": "非洲猪瘟防控十要点", "tags": ["liv.asf"], "format": "article",
            "review_date": "2026-03-01"}),
    );
    let citrus = add_content(
        &hub,
        root.path(),
        "mite.md",
        json!({"title": "柑橘红蜘蛛春季防治", "tags": ["plt.citrus"], "regions": ["511424"],
            "months": [4, 5], "format": "article", "review_date": "2026-03-01"}),
    );
    let village = start_village(root.path(), hub_sync_addr(&hub)).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let rec = village
            .state
            .records
            .create_household(
                "cadre",
                &json!({
                    "profile": {"group": 1 + i, "residents": 3, "age_18_59": 1, "age_70_plus": 2,
                        "crops": {"citrus": {"area_band": 2}},
                        "livestock": {"pig": {"herd_band": 1}}},
                    "private": {"head_name": MARKERS[0], "roster_no": MARKERS[1],
                        "notes": MARKERS[2], "stated_need_text": MARKERS[3]}
                }),
            )
            .await
            .expect("create");
        ids.push(rec.id.clone());
    }
    // Wait (bounded) until every household's rec document is in the village store with both
    // items.
    let store = village.state.records.store().clone();
    let deadline = Instant::now() + Duration::from_secs(60);
    let rec_keys: Vec<DocKey> = ids
        .iter()
        .map(|id| {
            DocKey::new(
                cunyun_protocol::area::AreaCode::parse(VILLAGE).expect("area"),
                Kind::Rec,
                id.as_str(),
            )
            .expect("key")
        })
        .collect();
    let mut recs = Vec::new();
    while Instant::now() < deadline {
        recs = rec_keys
            .iter()
            .filter_map(|k| store.load(k).expect("load"))
            .filter_map(|d| Rec::read_from(&d).ok())
            .collect::<Vec<Rec>>();
        if recs.len() == rec_keys.len()
            && recs
                .iter()
                .all(|r| r.items.contains_key(&asf) && r.items.contains_key(&citrus))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        recs.len(),
        3,
        "rec documents did not reach the village in time"
    );
    for r in &recs {
        assert!(
            r.items.contains_key(&asf) && r.items.contains_key(&citrus),
            "{r:?}"
        );
        assert!(r.items[&asf].reason.contains("养猪"), "{:?}", r.items[&asf]);
    }
    // The village's push plan holds both recommended files (three households each).
    let http = common::operator_client(&hub).await;
    let plan: serde_json::Value = http
        .get(format!(
            "{}/api/v1/push-plan?village={VILLAGE}&budget_mb=100",
            hub.url()
        ))
        .send()
        .await
        .expect("push plan")
        .json()
        .await
        .expect("json");
    let pushed: Vec<(&str, u64)> = plan["push"]
        .as_array()
        .expect("push")
        .iter()
        .map(|f| {
            (
                f["content_id"].as_str().unwrap_or(""),
                f["households"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(pushed.len(), 2, "{plan}");
    assert!(
        pushed
            .iter()
            .all(|(id, n)| (*id == asf || *id == citrus) && *n == 3),
        "{plan}"
    );
    // A local need recorded in the village meets an expert registered at the hub: the `match`
    // document and the need's new status (matched) come back down.
    let resp = http
        .post(format!("{}/api/v1/experts", hub.url()))
        .json(
            &json!({"name": "李明", "organisation": "眉山市农业科学研究院", "title": "研究员",
            "fields": {"plt.citrus": true}, "regions": {"511424": true},
            "services": {"onsite": true}}),
        )
        .send()
        .await
        .expect("post expert");
    assert_eq!(resp.status().as_u16(), 201);
    let need = village
        .state
        .records
        .create_need(
            "cadre",
            &json!({"area": VILLAGE, "requester": "coop", "title": "柑橘大实蝇绿色防控技术指导",
                "tags": {"plt.citrus": true, "plt.pesticide": true}}),
        )
        .await
        .expect("need");
    let match_key = need.key.with_kind(Kind::Match);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut matched = None;
    while Instant::now() < deadline {
        let m = store
            .load(&match_key)
            .expect("load")
            .and_then(|d| cunyun_protocol::expert::NeedMatch::read_from(&d).ok());
        let status = store
            .load(&need.key)
            .expect("load")
            .and_then(|d| cunyun_protocol::need::LocalNeed::read_from(&d).ok())
            .map(|n| n.status);
        if let (Some(m), Some(cunyun_protocol::need::NeedStatus::Matched)) = (m, status) {
            matched = Some(m);
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let matched = matched.expect("match document and matched status reach the village");
    assert_eq!(matched.suggestions.len(), 1);
    assert!(matched
        .suggestions
        .values()
        .all(|s| s.reason.contains("眉山")));
    // Coverage: the county has three households recorded, all with recommendations.
    let county = hub
        .hub
        .engine
        .coverage()
        .rows(cunyun_protocol::area::Level::County);
    assert_eq!(county.len(), 1);
    assert_eq!(
        (
            county[0].area.as_str(),
            county[0].households,
            county[0].with_rec
        ),
        ("511424", 3, 3)
    );
    assert_eq!(
        (county[0].reached, county[0].viewed, county[0].helped),
        (0, 0, 0),
        "no feedback yet"
    );
    // Feedback recorded on the village node (the villager opened an item and tapped 「有帮助」)
    // reaches the hub over the same TLS sync and changes the county's figures.
    let day = Date::parse("2026-04-16").expect("day");
    for event in [
        cunyun_node::feedback::Event::Delivered,
        cunyun_node::feedback::Event::View,
        cunyun_node::feedback::Event::Helpful,
    ] {
        village
            .state
            .records
            .record_feedback(&ids[0], &asf, event, day)
            .await
            .expect("feedback");
    }
    village
        .state
        .records
        .record_feedback(
            &ids[1],
            &citrus,
            cunyun_node::feedback::Event::Delivered,
            day,
        )
        .await
        .expect("feedback");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut figures = (0, 0, 0);
    while Instant::now() < deadline {
        let rows = hub
            .hub
            .engine
            .coverage()
            .rows(cunyun_protocol::area::Level::Village);
        if let Some(r) = rows.iter().find(|r| r.area == VILLAGE) {
            figures = (r.reached, r.viewed, r.helped);
        }
        if figures == (2, 1, 1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(figures, (2, 1, 1), "feedback did not reach the hub in time");
    assert!(hub
        .hub
        .engine
        .coverage()
        .csv(cunyun_protocol::area::Level::Village)
        .contains(",2,1,1\n"));
    // The hub holds the profiles and recs, never a private document.
    let hub_keys = kinds_in(&hub.hub.store);
    assert_eq!(hub_keys.iter().filter(|k| k.kind() == Kind::Hh).count(), 3);
    assert_eq!(hub_keys.iter().filter(|k| k.kind() == Kind::Rec).count(), 3);
    assert!(
        hub_keys.iter().all(|k| k.kind() != Kind::Hp),
        "{hub_keys:?}"
    );
    let hub_dir = root.path().join("hub");
    let village_dir = root.path().join("village");
    village.stop().await.expect("stop");
    hub.stop().await.expect("stop");
    // Let sled's background flusher finish, then read every byte.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for m in MARKERS {
        // The search works: the village, which holds the private documents, has them.
        assert!(
            !files_containing(&village_dir, m.as_bytes()).is_empty(),
            "marker {m} not found in the village store (the search would prove nothing)"
        );
        assert_eq!(
            files_containing(&hub_dir, m.as_bytes()),
            Vec::<std::path::PathBuf>::new(),
            "marker {m} found in the hub's data directory"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hub_refuses_and_logs_private_documents_from_a_misbehaving_peer() {
    let logs = logs();
    let root = tempfile::tempdir().expect("tempdir");
    let hub = start_hub(root.path()).await;
    // A county node whose session will pretend the hub is a county (and so offer `hp`).
    let rogue_id = identity(7, Role::County, "511424");
    let rogue_dir = root.path().join("rogue");
    cunyun_platform::certs::tls::init_dev_identity(
        &root.path().join("ca"),
        &rogue_dir.join("tls"),
        &rogue_id,
    )
    .expect("init");
    let store = DocStore::open(&rogue_dir.join("store"), StoreConfig::default()).expect("store");
    let village = cunyun_protocol::area::AreaCode::parse(VILLAGE).expect("area");
    let mut writes = Vec::new();
    for i in 0..3u8 {
        let id = format!("h0000000{i}");
        let mut profile = HouseholdProfile::new(village, 1, 2);
        profile.age_18_59 = 2;
        let private = HouseholdPrivate {
            head_name: MARKERS[0].into(),
            notes: MARKERS[2].into(),
            ..Default::default()
        };
        let hh = DocKey::new(village, Kind::Hh, id.as_str()).expect("key");
        writes.push(doc_write(hh.clone(), |tx| profile.write_to(tx)));
        writes.push(doc_write(hh.with_kind(Kind::Hp), |tx| private.write_to(tx)));
    }
    store.commit(writes).expect("commit");
    let tls = TlsContext::load(&rogue_dir.join("tls"), Default::default()).expect("tls");
    let (stream, hub_identity) = tls.connect(hub_sync_addr(&hub)).await.expect("connect");
    assert_eq!(hub_identity.role, Role::Hub);
    let pretend = NodeIdentity {
        role: Role::County,
        ..hub_identity
    };
    // A proxy that rewrites the hub's hello to claim role `county`, so the rogue's own session
    // computes a scope that includes `hp` and offers them; the hub's session sees the truth.
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
                    h.identity.role = Role::County;
                }
                wire::encode_into(&frame, &mut out).expect("encode");
            }
            if p_wr.write_all(&out).await.is_err() {
                break;
            }
        }
        let _ = p_wr.shutdown().await;
    });
    let report = tokio::time::timeout(
        Duration::from_secs(60),
        run_session(
            mine,
            Arc::new(NodeHost::new(store.clone(), &rogue_dir)),
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
    assert!(report.refused >= 3, "{report:?}");
    // The hub got the profiles and nothing private.
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline
        && kinds_in(&hub.hub.store)
            .iter()
            .filter(|k| k.kind() == Kind::Hh)
            .count()
            < 3
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let keys = kinds_in(&hub.hub.store);
    assert_eq!(
        keys.iter().filter(|k| k.kind() == Kind::Hh).count(),
        3,
        "{keys:?}"
    );
    assert!(keys.iter().all(|k| k.kind() != Kind::Hp), "{keys:?}");
    // The hub's side logged each refusal, naming the misbehaving peer and the document.
    let text = String::from_utf8_lossy(&logs.lock().expect("logs")).to_string();
    let rogue_hex = rogue_id.node_id.to_string();
    let hub_side: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("sync_refused") && l.contains(&rogue_hex) && l.contains("/hp/"))
        .collect();
    assert!(hub_side.len() >= 3, "hub-side refusals not logged:\n{text}");
    assert!(hub_side.iter().all(|l| l.contains("Us")), "{hub_side:?}");
    let hub_dir = root.path().join("hub");
    hub.stop().await.expect("stop");
    tokio::time::sleep(Duration::from_millis(300)).await;
    for m in [MARKERS[0], MARKERS[2]] {
        assert!(
            files_containing(&hub_dir, m.as_bytes()).is_empty(),
            "{m} in hub dir"
        );
    }
}
