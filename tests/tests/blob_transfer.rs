//! Content files between nodes over real mutual TLS on loopback: a file published at the hub
//! reaches a county node and, from the county's cache, a village, byte-identical and verified;
//! a lying server's tampered chunk is rejected and fetched again; tampered or foreign
//! manifests are rejected; a cut through the link emulator resumes re-sending less than one
//! chunk; the quota evicts what is no longer wanted.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cunyun_platform::blobs::{self, BlobStore, TransferLimits, DEFAULT_CHUNK_SIZE};
use cunyun_platform::certs::tls::TlsContext;
use cunyun_platform::store::{DocStore, StoreConfig};
use cunyun_platform::sync::{SyncConfig, SyncService};
use cunyun_protocol::area::AreaScope;
use cunyun_protocol::blob::{wire, Frame, FrameReader, ServeRequest, ServeStats, Server};
use cunyun_protocol::identity::{NodeId, NodeIdentity};
use cunyun_protocol::key::Role;
use cunyun_protocol::manifest::{ContentId, ContentManifest, SigningKey, TrustedKeys};
use cunyun_tests::link::{Direction, LinkConfig, LinkEmulator};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

fn hub_key() -> SigningKey {
    SigningKey::from_bytes(&[42; 32])
}

fn trusted() -> TrustedKeys {
    let mut t = TrustedKeys::new();
    t.add(hub_key().verifying_key());
    t
}

fn tls(root: &Path, name: &str, n: u8, role: Role, scope: &str) -> TlsContext {
    let id = NodeIdentity {
        node_id: NodeId([n; 16]),
        role,
        scope: AreaScope::parse(scope).expect("scope"),
    };
    let dir = root.join(name).join("tls");
    cunyun_platform::certs::tls::init_dev_identity(&root.join("ca"), &dir, &id).expect("identity");
    TlsContext::load(&dir, Default::default()).expect("tls")
}

fn store(root: &Path, name: &str, quota: u64) -> BlobStore {
    BlobStore::open(&root.join(name).join("blobs"), quota, trusted())
        .expect("blob store")
        .0
}

fn file_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed * 2 + 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Publishes `data` at the hub as one rendition; returns the signed manifest.
fn publish(hub: &BlobStore, root: &Path, name: &str, data: &[u8]) -> ContentManifest {
    let path = root.join(name);
    std::fs::write(&path, data).expect("write");
    let r = hub.put_file(&path, name, "video/mp4").expect("put file");
    let meta = serde_json::to_vec(&serde_json::json!({ "title": "生猪养殖技术" })).expect("json");
    let m = ContentManifest::sign(meta, vec![r], 1_764_000_000_000, &hub_key()).expect("sign");
    hub.put_manifest(&m).expect("manifest");
    m
}

/// A node's sync service (no peers, no mDNS) serving `blobs` on the shared listener.
async fn serving_node(root: &Path, name: &str, blobs: BlobStore) -> (SyncService, SocketAddr) {
    let dir = root.join(name);
    let docs = DocStore::open(&dir.join("store"), StoreConfig::default()).expect("doc store");
    let mut c = SyncConfig::default();
    c.enabled = true;
    c.listen = "127.0.0.1:0".parse().expect("addr");
    c.mdns = false;
    c.interval_s = 3600;
    let host = std::sync::Arc::new(cunyun_platform::host::NodeHost::new(docs, &dir));
    let service = SyncService::start(c, host, &dir)
        .await
        .expect("sync service");
    service.set_blob_store(blobs);
    let addr = service.listen_addr();
    (service, addr)
}

/// A plain accept loop serving `blobs` with `serve_over`, recording each connection's stats.
async fn counting_server(
    tls: TlsContext,
    blobs: BlobStore,
) -> (SocketAddr, Arc<Mutex<Vec<ServeStats>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let stats = Arc::new(Mutex::new(Vec::new()));
    let out = stats.clone();
    tokio::spawn(async move {
        for _ in 0..10 {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (tls, blobs, out) = (tls.clone(), blobs.clone(), out.clone());
            tokio::spawn(async move {
                let Ok((stream, _)) = tls.accept(tcp).await else {
                    return;
                };
                let limits = TransferLimits {
                    idle: Duration::from_secs(10),
                };
                let (stats, _) = blobs::serve_over(stream, &blobs, limits).await;
                out.lock().expect("lock").push(stats);
            });
        }
    });
    (addr, stats)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hub_to_county_to_village_byte_identical() {
    let root = tempfile::tempdir().expect("tempdir");
    let root = root.path();
    let _hub_tls = tls(root, "hub", 1, Role::Hub, "51");
    let county_tls = tls(root, "county", 2, Role::County, "510116");
    let village_tls = tls(root, "village", 3, Role::Village, "510116108203");
    let hub = store(root, "hub", 1 << 30);
    let county = store(root, "county", 1 << 30);
    let village = store(root, "village", 1 << 30);
    let data = file_bytes(3 * DEFAULT_CHUNK_SIZE as usize + 12_345, 7);
    let m = publish(&hub, root, "video.mp4", &data);

    let (hub_svc, hub_addr) = serving_node(root, "hub", hub).await;
    let (county_svc, county_addr) = serving_node(root, "county", county.clone()).await;

    let report = blobs::fetch_wanted(&county_tls, hub_addr, &county, &[m.content_id])
        .await
        .expect("county fetch");
    assert_eq!(report.complete, vec![m.content_id], "{:?}", report.failed);
    assert_eq!(report.stats.chunks, 4);
    // The village fetches from the county's cache, not the hub.
    let report = blobs::fetch_wanted(&village_tls, county_addr, &village, &[m.content_id])
        .await
        .expect("village fetch");
    assert_eq!(report.complete, vec![m.content_id], "{:?}", report.failed);
    let got = village
        .read_range(&m.content_id, "video.mp4", 0, u64::MAX)
        .expect("read");
    assert!(got == data, "village copy differs");
    assert_eq!(village.manifest(&m.content_id), Some(m.clone()));
    // Asking again sends nothing: everything is held.
    let again = blobs::fetch_wanted(&village_tls, county_addr, &village, &[m.content_id])
        .await
        .expect("again");
    assert_eq!(again.complete, vec![m.content_id]);
    assert_eq!(again.bytes_in, 0);
    // An item nobody has fails clearly; the sync session is unaffected by the blob ALPN.
    let unknown = ContentId([9; 32]);
    let report = blobs::fetch_wanted(&village_tls, county_addr, &village, &[unknown])
        .await
        .expect("fetch unknown");
    assert_eq!(report.failed.len(), 1);
    assert!(
        report.failed[0].1.contains("没有此内容"),
        "{:?}",
        report.failed
    );
    let sync = county_svc.sync_with(hub_addr).await.expect("sync session");
    assert!(sync.outcome.is_ok(), "{:?}", sync.outcome);
    hub_svc.stop().await;
    county_svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tampered_chunk_on_serving_disk_is_not_served() {
    let root = tempfile::tempdir().expect("tempdir");
    let root = root.path();
    let hub_tls = tls(root, "hub", 1, Role::Hub, "51");
    let village_tls = tls(root, "village", 3, Role::Village, "510116108203");
    let hub = store(root, "hub", 1 << 30);
    let village = store(root, "village", 1 << 30);
    let data = file_bytes(2 * DEFAULT_CHUNK_SIZE as usize, 8);
    let m = publish(&hub, root, "video.mp4", &data);
    // Flip one byte of chunk 1 on the hub's disk.
    let hex = ContentId(m.renditions[0].chunks[1]).to_string();
    let path = root.join("hub/blobs/chunks").join(&hex[..2]).join(&hex);
    let mut bytes = std::fs::read(&path).expect("chunk");
    bytes[1000] ^= 0x20;
    std::fs::write(&path, bytes).expect("tamper");
    let (addr, _) = counting_server(hub_tls, hub.clone()).await;
    let report = blobs::fetch_wanted(&village_tls, addr, &village, &[m.content_id])
        .await
        .expect("fetch");
    assert!(report.complete.is_empty());
    assert_eq!(report.failed.len(), 1);
    assert!(
        report.failed[0].1.contains("缺少分块"),
        "{:?}",
        report.failed
    );
    assert!(!village.has_chunk(&m.renditions[0].chunks[1]));
    assert!(village.has_chunk(&m.renditions[0].chunks[0]));
    // The hub re-adds the file; the village then fetches only the chunk it lacks.
    let path = root.join("video.mp4");
    hub.put_file(&path, "video.mp4", "video/mp4")
        .expect("re-add");
    let report = blobs::fetch_wanted(&village_tls, addr, &village, &[m.content_id])
        .await
        .expect("refetch");
    assert_eq!(report.complete, vec![m.content_id]);
    assert_eq!(report.stats.chunks, 1);
    let got = village
        .read_range(&m.content_id, "video.mp4", 0, u64::MAX)
        .expect("read");
    assert!(got == data);
}

/// What a lying server does to what it sends.
#[derive(Clone, Copy)]
enum Lie {
    /// Flip a byte of the first piece of chunk 1, once.
    ChunkOnce,
    /// Flip byte `n` of the manifest.
    ManifestByte(usize),
    /// Send this manifest instead of the real one.
    Foreign,
}

/// Serves one connection from `blobs` through the protocol's `Server`, lying as told.
async fn lying_server(
    tls: TlsContext,
    blobs: BlobStore,
    lie: Lie,
    foreign: Option<Vec<u8>>,
) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let Ok((tcp, _)) = listener.accept().await else {
            return;
        };
        let Ok((mut stream, _)) = tls.accept(tcp).await else {
            return;
        };
        let mut server = Server::new();
        let mut reader = FrameReader::new();
        let mut buf = vec![0u8; 65536];
        let mut lied = false;
        for _ in 0..100_000 {
            while let Some(req) = server.next_request() {
                match req {
                    ServeRequest::Manifest(id) => {
                        let bytes = match (lie, &foreign) {
                            (Lie::Foreign, Some(f)) => Some(f.clone()),
                            _ => blobs.manifest(&id).map(|m| m.encode()),
                        };
                        server.supply_manifest(id, bytes);
                    }
                    ServeRequest::Chunk {
                        id,
                        rendition,
                        chunk,
                    } => {
                        let m = blobs.manifest(&id).expect("manifest");
                        let h = m.renditions[usize::from(rendition)].chunks[chunk as usize];
                        server.supply_chunk(
                            id,
                            rendition,
                            chunk,
                            blobs.get_chunk(&h).expect("read"),
                        );
                    }
                }
            }
            let mut out = Vec::new();
            while let Some(mut f) = server.poll_outgoing() {
                match (&mut f, lie) {
                    (Frame::Piece { chunk: 1, data, .. }, Lie::ChunkOnce) if !lied => {
                        data[3] ^= 1;
                        lied = true;
                    }
                    (Frame::Manifest(b), Lie::ManifestByte(n)) => {
                        let n = n % b.len();
                        b[n] ^= 0x08;
                    }
                    _ => {}
                }
                wire::encode_into(&f, &mut out).expect("encode");
            }
            if !out.is_empty() {
                if stream.write_all(&out).await.is_err() || stream.flush().await.is_err() {
                    return;
                }
                continue;
            }
            let n = match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await
            {
                Ok(Ok(n)) if n > 0 => n,
                _ => return,
            };
            reader.push(&buf[..n]);
            while let Ok(Some(f)) = reader.next_frame() {
                if server.handle(f).is_err() {
                    return;
                }
            }
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tampered_chunk_on_the_wire_is_rejected_and_fetched_again() {
    let root = tempfile::tempdir().expect("tempdir");
    let root = root.path();
    let hub_tls = tls(root, "hub", 1, Role::Hub, "51");
    let village_tls = tls(root, "village", 3, Role::Village, "510116108203");
    let hub = store(root, "hub", 1 << 30);
    let village = store(root, "village", 1 << 30);
    let data = file_bytes(3 * DEFAULT_CHUNK_SIZE as usize, 9);
    let m = publish(&hub, root, "video.mp4", &data);
    let addr = lying_server(hub_tls, hub, Lie::ChunkOnce, None).await;
    let report = blobs::fetch_wanted(&village_tls, addr, &village, &[m.content_id])
        .await
        .expect("fetch");
    assert_eq!(report.stats.bad_chunks, 1);
    assert_eq!(report.complete, vec![m.content_id], "{:?}", report.failed);
    let got = village
        .read_range(&m.content_id, "video.mp4", 0, u64::MAX)
        .expect("read");
    assert!(got == data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tampered_or_foreign_manifest_is_rejected() {
    let root = tempfile::tempdir().expect("tempdir");
    let root = root.path();
    let hub_tls = tls(root, "hub", 1, Role::Hub, "51");
    let village_tls = tls(root, "village", 3, Role::Village, "510116108203");
    let hub = store(root, "hub", 1 << 30);
    let village = store(root, "village", 1 << 30);
    let data = file_bytes(100_000, 10);
    let m = publish(&hub, root, "video.mp4", &data);
    let len = m.encode().len();
    for n in [0, 4, 20, 45, 60, len / 2, len - 70, len - 1] {
        let addr = lying_server(hub_tls.clone(), hub.clone(), Lie::ManifestByte(n), None).await;
        let report = blobs::fetch_wanted(&village_tls, addr, &village, &[m.content_id])
            .await
            .expect("fetch");
        assert!(report.complete.is_empty(), "byte {n} accepted");
        assert!(
            report.failed[0].1.contains("内容清单被拒绝"),
            "{:?}",
            report.failed
        );
        assert!(village.manifest(&m.content_id).is_none());
        assert_eq!(village.usage_bytes(), 0);
    }
    // Same files, signed by a key the village does not trust.
    let other = SigningKey::from_bytes(&[43; 32]);
    let foreign = ContentManifest::sign(m.meta.clone(), m.renditions.clone(), 2, &other)
        .expect("sign")
        .encode();
    let addr = lying_server(hub_tls, hub, Lie::Foreign, Some(foreign)).await;
    let report = blobs::fetch_wanted(&village_tls, addr, &village, &[m.content_id])
        .await
        .expect("fetch");
    assert!(report.complete.is_empty());
    assert!(
        report.failed[0].1.contains("不受信任"),
        "{:?}",
        report.failed
    );
    assert_eq!(village.usage_bytes(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cut_transfer_resumes_resending_less_than_one_chunk() {
    let root = tempfile::tempdir().expect("tempdir");
    let root = root.path();
    let hub_tls = tls(root, "hub", 1, Role::Hub, "51");
    let village_tls = tls(root, "village", 3, Role::Village, "510116108203");
    let hub = store(root, "hub", 1 << 30);
    let village = store(root, "village", 1 << 30);
    let data = file_bytes(8 * DEFAULT_CHUNK_SIZE as usize + 5_000, 11);
    let m = publish(&hub, root, "video.mp4", &data);
    let (server_addr, stats) = counting_server(hub_tls, hub).await;
    let mut link = LinkEmulator::start(
        server_addr,
        LinkConfig {
            one_way_latency: Duration::from_millis(5),
            bits_per_second: 40_000_000,
        },
    )
    .expect("link");
    // Cut in the middle of chunk 3 (after the handshake, the manifest and 3.4 chunks).
    let cut_at = 3 * DEFAULT_CHUNK_SIZE as u64 + 100_000;
    link.set_cut_after_bytes(Direction::BToA, Some(cut_at));
    let first = blobs::fetch_wanted(&village_tls, link.addr(), &village, &[m.content_id]).await;
    assert!(first.is_err(), "the cut did not happen");
    let held = m.renditions[0]
        .chunks
        .iter()
        .filter(|h| village.has_chunk(h))
        .count();
    assert!((2..=4).contains(&held), "held {held} chunks after the cut");
    link.set_cut_after_bytes(Direction::BToA, None);
    let second = blobs::fetch_wanted(&village_tls, link.addr(), &village, &[m.content_id])
        .await
        .expect("resumed fetch");
    assert_eq!(second.complete, vec![m.content_id], "{:?}", second.failed);
    let got = village
        .read_range(&m.content_id, "video.mp4", 0, u64::MAX)
        .expect("read");
    assert!(got == data);
    // Wait (bounded) for both server connections to report.
    let mut sent = Vec::new();
    for _ in 0..100 {
        sent = stats.lock().expect("lock").clone();
        if sent.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(sent.len(), 2, "server connections: {sent:?}");
    let total: u64 = sent.iter().map(|s| s.piece_bytes).sum();
    let resent = total - data.len() as u64;
    eprintln!("after the cut: {held} chunks held; re-sent {resent} bytes; server: {sent:?}");
    assert!(
        resent < u64::from(DEFAULT_CHUNK_SIZE),
        "re-sent {resent} bytes (one chunk is {DEFAULT_CHUNK_SIZE})"
    );
    // Chunks started: each once, plus the cut one again (from its kept prefix) at most.
    let chunks_total = m.renditions[0].chunks.len() as u64;
    let started: u64 = sent.iter().map(|s| s.chunks).sum();
    assert!(started <= chunks_total + 1, "{sent:?}");
    link.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn quota_evicts_what_is_no_longer_wanted() {
    let root = tempfile::tempdir().expect("tempdir");
    let root = root.path();
    let hub_tls = tls(root, "hub", 1, Role::Hub, "51");
    let village_tls = tls(root, "village", 3, Role::Village, "510116108203");
    let hub = store(root, "hub", 1 << 30);
    let size = 2 * DEFAULT_CHUNK_SIZE as usize;
    // Room for two items, not three.
    let village = store(root, "village", (2 * size + size / 2) as u64);
    let a = publish(&hub, root, "a.mp4", &file_bytes(size, 1));
    let b = publish(&hub, root, "b.mp4", &file_bytes(size, 2));
    let c = publish(&hub, root, "c.mp4", &file_bytes(size, 3));
    let (addr, _) = counting_server(hub_tls, hub).await;
    for ids in [&[a.content_id][..], &[a.content_id, b.content_id]] {
        let r = blobs::fetch_wanted(&village_tls, addr, &village, ids)
            .await
            .expect("fetch");
        assert_eq!(r.failed, vec![]);
    }
    // Recommendations changed: b and c are wanted, a is not.
    let r = blobs::fetch_wanted(&village_tls, addr, &village, &[b.content_id, c.content_id])
        .await
        .expect("fetch");
    assert_eq!(r.evicted, vec![a.content_id]);
    assert!(village.is_complete(&b.content_id) && village.is_complete(&c.content_id));
    assert!(village.manifest(&a.content_id).is_none());
    assert!(village.usage_bytes() <= village.quota_bytes());
    // Three wanted items cannot fit: the one that does not is refused, the others stay.
    let r = blobs::fetch_wanted(
        &village_tls,
        addr,
        &village,
        &[a.content_id, b.content_id, c.content_id],
    )
    .await
    .expect("fetch");
    assert_eq!(r.failed.len(), 1);
    assert!(r.failed[0].1.contains("空间不足"), "{:?}", r.failed);
    assert!(village.is_complete(&b.content_id) && village.is_complete(&c.content_id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_started_from_config_serves_content_signed_by_its_trusted_key() {
    let root = tempfile::tempdir().expect("tempdir");
    let root = root.path();
    let village_tls = tls(root, "village", 3, Role::Village, "510116108203");
    let county_id = NodeIdentity {
        node_id: NodeId([2; 16]),
        role: Role::County,
        scope: AreaScope::parse("510116").expect("scope"),
    };
    let dir = root.join("county");
    cunyun_platform::certs::tls::init_dev_identity(&root.join("ca"), &dir.join("tls"), &county_id)
        .expect("identity");
    let mut c = cunyun_node::config::NodeConfig::default();
    c.data_dir = dir;
    c.listen = "127.0.0.1:0".parse().expect("addr");
    c.scope = county_id.scope;
    c.role = county_id.role;
    c.sync.enabled = true;
    c.sync.listen = "127.0.0.1:0".parse().expect("addr");
    c.sync.mdns = false;
    c.content.trusted_hub_keys = vec![cunyun_protocol::manifest::key_to_hex(
        &hub_key().verifying_key(),
    )];
    let node = cunyun_node::server::start(&c, std::future::pending())
        .await
        .expect("node starts");
    let sync = node.state.sync.as_ref().expect("sync on");
    let county = sync.blob_store().expect("blob store opened from config");
    assert_eq!(county.trusted().len(), 1);
    let data = file_bytes(300_000, 12);
    let m = publish(&county, root, "guide.pdf", &data);
    let village = store(root, "village", 1 << 30);
    let report = blobs::fetch_wanted(&village_tls, sync.listen_addr(), &village, &[m.content_id])
        .await
        .expect("fetch");
    assert_eq!(report.complete, vec![m.content_id], "{:?}", report.failed);
    let got = village
        .read_range(&m.content_id, "guide.pdf", 0, u64::MAX)
        .expect("read");
    assert!(got == data);
    // A malformed trusted key stops the node from starting, with a clear error.
    let mut bad = c.clone();
    bad.data_dir = root.join("county2");
    cunyun_platform::certs::tls::init_dev_identity(
        &root.join("ca"),
        &bad.data_dir.join("tls"),
        &county_id,
    )
    .expect("identity");
    bad.content.trusted_hub_keys = vec!["not-a-key".into()];
    let err = cunyun_node::server::start(&bad, std::future::pending())
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("公钥格式无效"), "{err}");
}
