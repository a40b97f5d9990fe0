//! Fetcher against server in memory: whole transfers, tampering, cuts and resumption.

use std::collections::{HashMap, VecDeque};

use super::*;
use crate::manifest::{rendition_of, ContentId, ContentManifest, Hash, SigningKey, TrustedKeys};

const CHUNK: u32 = 16 * 1024;

#[derive(Default)]
struct Host {
    manifests: HashMap<ContentId, Vec<u8>>,
    chunks: HashMap<Hash, Vec<u8>>,
    partial: Option<(Hash, Vec<u8>)>,
    bad_chunks: u64,
}

impl Host {
    fn missing(&self, m: &ContentManifest) -> Vec<MissingChunk> {
        let mut out = Vec::new();
        for (ri, r) in m.renditions.iter().enumerate() {
            for (ci, h) in r.chunks.iter().enumerate() {
                if !self.chunks.contains_key(h) {
                    let prefix = match &self.partial {
                        Some((ph, p)) if ph == h => p.clone(),
                        _ => Vec::new(),
                    };
                    out.push(MissingChunk {
                        rendition: ri as u8,
                        chunk: ci as u32,
                        prefix,
                    });
                }
            }
        }
        out
    }

    fn file(&self, m: &ContentManifest, r: usize) -> Vec<u8> {
        m.renditions[r]
            .chunks
            .iter()
            .flat_map(|h| self.chunks[h].clone())
            .collect()
    }
}

fn key() -> SigningKey {
    SigningKey::from_bytes(&[7; 32])
}

fn trusted() -> TrustedKeys {
    let mut t = TrustedKeys::new();
    t.add(key().verifying_key());
    t
}

fn publish(host: &mut Host, data: &[u8]) -> ContentManifest {
    let r = rendition_of("video.mp4", "video/mp4", data, CHUNK);
    for (c, h) in data.chunks(CHUNK as usize).zip(&r.chunks) {
        host.chunks.insert(*h, c.to_vec());
    }
    let m = ContentManifest::sign(br#"{"title":"t"}"#.to_vec(), vec![r], 1, &key()).unwrap();
    host.manifests.insert(m.content_id, m.encode());
    m
}

fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

/// Runs one connection until the fetcher finishes or `cut_after` piece bytes were delivered.
/// `tamper` may change frames on their way to the fetcher. Returns the fetcher's events.
fn run(
    fetcher: &mut Fetcher,
    server: &mut Server,
    serving: &Host,
    fetching: &mut Host,
    cut_after: Option<u64>,
    tamper: &mut dyn FnMut(&mut Frame),
) -> Vec<FetchEvent> {
    let mut events = Vec::new();
    let mut link: VecDeque<Frame> = VecDeque::new();
    for _ in 0..1_000_000 {
        while let Some(f) = fetcher.poll_outgoing() {
            let f = wire::decode(&wire::encode(&f).unwrap()).unwrap().0;
            server.handle(f).unwrap();
        }
        while let Some(req) = server.next_request() {
            match req {
                ServeRequest::Manifest(id) => {
                    server.supply_manifest(id, serving.manifests.get(&id).cloned())
                }
                ServeRequest::Chunk {
                    id,
                    rendition,
                    chunk,
                } => {
                    let data = serving
                        .manifests
                        .get(&id)
                        .map(|b| ContentManifest::decode(b).unwrap())
                        .and_then(|m| {
                            let h = m.renditions[usize::from(rendition)].chunks[chunk as usize];
                            serving.chunks.get(&h).cloned()
                        });
                    server.supply_chunk(id, rendition, chunk, data);
                }
            }
        }
        while let Some(f) = server.poll_outgoing() {
            link.push_back(f);
        }
        if let Some(n) = cut_after {
            if fetcher.stats().piece_bytes >= n {
                if let Some((_, h, p)) = fetcher.partial() {
                    fetching.partial = Some((h, p.to_vec()));
                }
                return events;
            }
        }
        let Some(mut f) = link.pop_front() else {
            break;
        };
        tamper(&mut f);
        fetcher.handle(f).unwrap();
        while let Some(e) = fetcher.poll_event() {
            match &e {
                FetchEvent::Manifest { manifest, bytes } => {
                    fetching
                        .manifests
                        .insert(manifest.content_id, bytes.clone());
                    let missing = fetching.missing(manifest);
                    fetcher.start_content(manifest.content_id, missing);
                }
                FetchEvent::Chunk { hash, data, .. } => {
                    assert_eq!(*blake3::hash(data).as_bytes(), *hash);
                    fetching.chunks.insert(*hash, data.clone());
                    if fetching.partial.as_ref().is_some_and(|(h, _)| h == hash) {
                        fetching.partial = None;
                    }
                }
                FetchEvent::BadChunk { .. } => fetching.bad_chunks += 1,
                FetchEvent::Complete(_) | FetchEvent::Failed { .. } => {}
            }
            events.push(e);
        }
        if fetcher.is_finished() {
            break;
        }
    }
    events
}

#[test]
fn whole_item_arrives_verified() {
    let mut hub = Host::default();
    let file = data(100_000);
    let m = publish(&mut hub, &file);
    let mut village = Host::default();
    let mut f = Fetcher::new(&[m.content_id], trusted(), FetchConfig::default());
    let mut s = Server::new();
    let events = run(&mut f, &mut s, &hub, &mut village, None, &mut |_| {});
    assert!(f.is_finished());
    assert!(events.contains(&FetchEvent::Complete(m.content_id)));
    assert_eq!(village.file(&m, 0), file);
    assert_eq!(s.stats().piece_bytes, file.len() as u64);
}

#[test]
fn tampered_chunk_is_dropped_and_fetched_again() {
    let mut hub = Host::default();
    let file = data(100_000);
    let m = publish(&mut hub, &file);
    let mut village = Host::default();
    let mut f = Fetcher::new(&[m.content_id], trusted(), FetchConfig::default());
    let mut s = Server::new();
    let mut flipped = false;
    let events = run(&mut f, &mut s, &hub, &mut village, None, &mut |fr| {
        if let Frame::Piece { chunk: 2, data, .. } = fr {
            if !flipped {
                data[10] ^= 1;
                flipped = true;
            }
        }
    });
    assert_eq!(village.bad_chunks, 1);
    assert!(events.contains(&FetchEvent::Complete(m.content_id)));
    assert_eq!(village.file(&m, 0), file);
}

#[test]
fn a_server_that_keeps_lying_fails_the_item() {
    let mut hub = Host::default();
    let m = publish(&mut hub, &data(50_000));
    let mut village = Host::default();
    let mut f = Fetcher::new(&[m.content_id], trusted(), FetchConfig::default());
    let mut s = Server::new();
    let events = run(&mut f, &mut s, &hub, &mut village, None, &mut |fr| {
        if let Frame::Piece { chunk: 0, data, .. } = fr {
            data[0] ^= 1;
        }
    });
    assert!(events.iter().any(|e| matches!(
        e,
        FetchEvent::Failed {
            error: FetchError::BadChunks(4),
            ..
        }
    )));
    let h0 = m.renditions[0].chunks[0];
    assert!(!village.chunks.contains_key(&h0), "a bad chunk was stored");
}

#[test]
fn tampered_or_foreign_manifests_are_rejected() {
    let mut hub = Host::default();
    let m = publish(&mut hub, &data(20_000));
    // Any flipped byte.
    for i in [0usize, 5, 40, 60, 100, 300] {
        let mut village = Host::default();
        let mut f = Fetcher::new(&[m.content_id], trusted(), FetchConfig::default());
        let mut s = Server::new();
        let events = run(&mut f, &mut s, &hub, &mut village, None, &mut |fr| {
            if let Frame::Manifest(b) = fr {
                let i = i % b.len();
                b[i] ^= 0x40;
            }
        });
        assert!(
            matches!(
                &events[..],
                [FetchEvent::Failed {
                    error: FetchError::BadManifest(_),
                    ..
                }]
            ),
            "byte {i}: {events:?}"
        );
        assert!(village.manifests.is_empty() && village.chunks.is_empty());
    }
    // Signed by a key the fetcher does not trust.
    let mut other = Host::default();
    let r = m.renditions.clone();
    let foreign =
        ContentManifest::sign(m.meta.clone(), r, 1, &SigningKey::from_bytes(&[9; 32])).unwrap();
    other.manifests.insert(foreign.content_id, foreign.encode());
    other.chunks = hub.chunks.clone();
    let mut village = Host::default();
    let mut f = Fetcher::new(&[m.content_id], trusted(), FetchConfig::default());
    let events = run(
        &mut f,
        &mut Server::new(),
        &other,
        &mut village,
        None,
        &mut |_| {},
    );
    assert!(matches!(
        &events[..],
        [FetchEvent::Failed {
            error: FetchError::BadManifest(crate::manifest::ManifestError::UnknownKey),
            ..
        }]
    ));
}

#[test]
fn unknown_item_is_not_found() {
    let hub = Host::default();
    let mut village = Host::default();
    let id = ContentId([3; 32]);
    let mut f = Fetcher::new(&[id], trusted(), FetchConfig::default());
    let events = run(
        &mut f,
        &mut Server::new(),
        &hub,
        &mut village,
        None,
        &mut |_| {},
    );
    assert_eq!(
        events,
        vec![FetchEvent::Failed {
            id,
            error: FetchError::NotFound
        }]
    );
    assert!(f.is_finished());
}

#[test]
fn a_cut_resumes_and_resends_less_than_one_chunk() {
    let file = data(300_000);
    for cut in [1u64, 20_000, 16_384, 40_000, 123_457, 290_001] {
        let mut hub = Host::default();
        let m = publish(&mut hub, &file);
        let mut village = Host::default();
        let config = FetchConfig {
            window: 8 * 1024,
            ..FetchConfig::default()
        };
        let mut f1 = Fetcher::new(&[m.content_id], trusted(), config);
        let mut s1 = Server::new();
        run(&mut f1, &mut s1, &hub, &mut village, Some(cut), &mut |_| {});
        assert!(!f1.is_finished());
        let mut f2 = Fetcher::new(&[m.content_id], trusted(), config);
        let mut s2 = Server::new();
        let events = run(&mut f2, &mut s2, &hub, &mut village, None, &mut |_| {});
        assert!(events.contains(&FetchEvent::Complete(m.content_id)));
        assert_eq!(village.file(&m, 0), file);
        let sent = s1.stats().piece_bytes + s2.stats().piece_bytes;
        let resent = sent - file.len() as u64;
        assert!(resent <= config.window, "cut {cut}: resent {resent}");
        assert!(resent < u64::from(CHUNK));
    }
}

#[test]
fn a_bad_kept_prefix_is_refetched_whole() {
    let mut hub = Host::default();
    let file = data(40_000);
    let m = publish(&mut hub, &file);
    let mut village = Host::default();
    let h1 = m.renditions[0].chunks[1];
    village.partial = Some((h1, vec![0xEE; 1000]));
    let mut f = Fetcher::new(&[m.content_id], trusted(), FetchConfig::default());
    let events = run(
        &mut f,
        &mut Server::new(),
        &hub,
        &mut village,
        None,
        &mut |_| {},
    );
    assert_eq!(village.bad_chunks, 1);
    assert!(events.contains(&FetchEvent::Complete(m.content_id)));
    assert_eq!(village.file(&m, 0), file);
}

#[test]
fn the_server_never_exceeds_the_credit() {
    let mut s = Server::new();
    let id = ContentId([1; 32]);
    s.handle(Frame::Want {
        id,
        items: vec![WantItem {
            rendition: 0,
            chunk: 0,
            offset: 0,
        }],
    })
    .unwrap();
    assert_eq!(s.next_request(), None, "no credit yet");
    s.handle(Frame::Credit(1000)).unwrap();
    assert!(s.next_request().is_some());
    s.supply_chunk(id, 0, 0, Some(vec![5; 5000]));
    let mut sent = 0;
    while let Some(Frame::Piece { data, .. }) = s.poll_outgoing() {
        sent += data.len();
    }
    assert_eq!(sent, 1000);
    assert!(s.handle(Frame::Credit(999)).is_err());
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]

    /// Any cut point, window and file size: the resumed transfer completes byte-identical and
    /// the server re-sends at most the window.
    #[test]
    fn any_cut_resends_at_most_the_window(
        len in 1usize..120_000,
        cut_frac in 0.0f64..1.0,
        window_kib in 1u64..40,
    ) {
        let file = data(len);
        let mut hub = Host::default();
        let m = publish(&mut hub, &file);
        let mut village = Host::default();
        let config = FetchConfig { window: window_kib * 1024, ..FetchConfig::default() };
        let cut = ((len as f64 * cut_frac) as u64).max(1);
        let mut f1 = Fetcher::new(&[m.content_id], trusted(), config);
        let mut s1 = Server::new();
        run(&mut f1, &mut s1, &hub, &mut village, Some(cut), &mut |_| {});
        let mut f2 = Fetcher::new(&[m.content_id], trusted(), config);
        let mut s2 = Server::new();
        run(&mut f2, &mut s2, &hub, &mut village, None, &mut |_| {});
        proptest::prop_assert_eq!(village.file(&m, 0), file);
        let sent = s1.stats().piece_bytes + s2.stats().piece_bytes;
        proptest::prop_assert!(sent - len as u64 <= config.window);
    }
}
