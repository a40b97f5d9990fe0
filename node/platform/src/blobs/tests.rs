//! Blob store tests: chunking, verification on open and on read, ranges, partial prefixes,
//! quota eviction.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use cunyun_protocol::manifest::{ContentId, ContentManifest, SigningKey, TrustedKeys};

use super::*;

fn key() -> SigningKey {
    SigningKey::from_bytes(&[5; 32])
}

fn trusted() -> TrustedKeys {
    let mut t = TrustedKeys::new();
    t.add(key().verifying_key());
    t
}

fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| ((i * 7 + seed as usize) % 253) as u8)
        .collect()
}

fn publish(store: &BlobStore, dir: &Path, name: &str, bytes: &[u8], chunk: u32) -> ContentManifest {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    let r = store
        .put_file_chunked(&path, name, "application/octet-stream", chunk)
        .unwrap();
    let m = ContentManifest::sign(b"{}".to_vec(), vec![r], 1, &key()).unwrap();
    store.put_manifest(&m).unwrap();
    m
}

#[test]
fn put_file_then_read_back_whole_and_ranges() {
    let tmp = tempfile::tempdir().unwrap();
    let (store, _) = BlobStore::open(&tmp.path().join("b"), 1 << 30, trusted()).unwrap();
    let file = data(70_000, 1);
    let m = publish(&store, tmp.path(), "a.bin", &file, 16 * 1024);
    assert_eq!(m.renditions[0].chunks.len(), 5);
    assert!(store.is_complete(&m.content_id));
    store.verify_content(&m.content_id).unwrap();
    assert_eq!(
        store.read_range(&m.content_id, "a.bin", 0, 70_000).unwrap(),
        file
    );
    assert_eq!(
        store
            .read_range(&m.content_id, "a.bin", 16_000, 20_000)
            .unwrap(),
        file[16_000..36_000]
    );
    assert_eq!(
        store
            .read_range(&m.content_id, "a.bin", 69_990, 100)
            .unwrap(),
        file[69_990..]
    );
    assert!(store.missing_chunks(&m).is_empty());
    assert_eq!(store.usage_bytes(), 70_000);
    // Reopened: the same content, checked.
    drop(store);
    let (store, report) = BlobStore::open(&tmp.path().join("b"), 1 << 30, trusted()).unwrap();
    assert_eq!(report.chunks_checked, 5);
    assert_eq!(report.chunks_dropped, 0);
    assert!(store.is_complete(&m.content_id));
    let out = tmp.path().join("out.bin");
    store.export(&m.content_id, "a.bin", &out).unwrap();
    assert_eq!(std::fs::read(out).unwrap(), file);
}

#[test]
fn corrupt_chunk_on_disk_is_dropped_on_read_and_on_open() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("b");
    let (store, _) = BlobStore::open(&dir, 1 << 30, trusted()).unwrap();
    let m = publish(&store, tmp.path(), "a.bin", &data(50_000, 2), 16 * 1024);
    let h1 = m.renditions[0].chunks[1];
    let h2 = m.renditions[0].chunks[2];
    let path_of = |h: &[u8; 32]| {
        let hex = ContentId(*h).to_string();
        dir.join("chunks").join(&hex[..2]).join(hex)
    };
    // Flip a byte of chunk 1: a read notices, drops it, and the item is no longer complete.
    let mut bytes = std::fs::read(path_of(&h1)).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(path_of(&h1), &bytes).unwrap();
    assert_eq!(store.get_chunk(&h1).unwrap(), None);
    assert!(!path_of(&h1).exists());
    assert!(!store.is_complete(&m.content_id));
    assert!(store.read_range(&m.content_id, "a.bin", 0, 50_000).is_err());
    let missing = store.missing_chunks(&m);
    assert_eq!(missing.len(), 1);
    assert_eq!(missing[0].chunk, 1);
    // Truncate chunk 2 behind the store's back: opening finds and drops it.
    std::fs::write(path_of(&h2), &b"short"[..]).unwrap();
    drop(store);
    let (store, report) = BlobStore::open(&dir, 1 << 30, trusted()).unwrap();
    assert_eq!(report.chunks_dropped, 1);
    assert!(!store.has_chunk(&h2));
    assert_eq!(
        store
            .missing_chunks(&m)
            .iter()
            .map(|c| c.chunk)
            .collect::<Vec<_>>(),
        vec![1, 2]
    );
    // A chunk offered under the wrong hash is refused.
    assert!(matches!(
        store.put_chunk(&h1, b"nope"),
        Err(BlobError::HashMismatch)
    ));
}

#[test]
fn untrusted_or_tampered_manifests_are_refused_and_dropped_on_open() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("b");
    let (store, _) = BlobStore::open(&dir, 1 << 30, trusted()).unwrap();
    let m = publish(&store, tmp.path(), "a.bin", &data(5_000, 3), 4096);
    let other = ContentManifest::sign(
        b"{}".to_vec(),
        m.renditions.clone(),
        2,
        &SigningKey::from_bytes(&[6; 32]),
    )
    .unwrap();
    assert!(store.put_manifest(&other).is_err());
    drop(store);
    let path = dir.join("manifests").join(format!("{}.cm", m.content_id));
    let mut bytes = std::fs::read(&path).unwrap();
    let n = bytes.len();
    bytes[n - 1] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    let (store, report) = BlobStore::open(&dir, 1 << 30, trusted()).unwrap();
    assert_eq!(report.manifests_dropped, 1);
    assert!(store.manifest(&m.content_id).is_none());
}

#[test]
fn partial_prefix_is_offered_until_the_chunk_is_stored() {
    let tmp = tempfile::tempdir().unwrap();
    let (hub, _) = BlobStore::open(&tmp.path().join("hub"), 1 << 30, trusted()).unwrap();
    let (village, _) = BlobStore::open(&tmp.path().join("v"), 1 << 30, trusted()).unwrap();
    let file = data(40_000, 4);
    let m = publish(&hub, tmp.path(), "a.bin", &file, 16 * 1024);
    village.put_manifest(&m).unwrap();
    let h0 = m.renditions[0].chunks[0];
    village.keep_partial(&h0, &file[..1000]).unwrap();
    let missing = village.missing_chunks(&m);
    assert_eq!(missing.len(), 3);
    assert_eq!(missing[0].prefix, file[..1000]);
    assert_eq!(village.missing_bytes(&m), 40_000);
    village.put_chunk(&h0, &file[..16 * 1024]).unwrap();
    assert!(village
        .missing_chunks(&m)
        .iter()
        .all(|c| c.prefix.is_empty()));
}

#[test]
fn quota_evicts_unwanted_least_recently_wanted_first() {
    let tmp = tempfile::tempdir().unwrap();
    let (store, _) = BlobStore::open(&tmp.path().join("b"), 100_000, trusted()).unwrap();
    let a = publish(&store, tmp.path(), "a.bin", &data(30_000, 10), 4096);
    let b = publish(&store, tmp.path(), "b.bin", &data(30_000, 11), 4096);
    let c = publish(&store, tmp.path(), "c.bin", &data(30_000, 12), 4096);
    store.mark_wanted(&[a.content_id], 1_000).unwrap();
    store.mark_wanted(&[b.content_id], 2_000).unwrap();
    store.mark_wanted(&[c.content_id], 3_000).unwrap();
    assert_eq!(store.usage_bytes(), 90_000);
    // 30,000 more: one item must go; c is wanted now, a was wanted longest ago.
    let evicted = store.make_room(&[c.content_id], 30_000).unwrap();
    assert_eq!(evicted, vec![a.content_id]);
    assert!(store.manifest(&a.content_id).is_none());
    assert!(store.is_complete(&b.content_id) && store.is_complete(&c.content_id));
    assert_eq!(store.usage_bytes(), 60_000);
    // Wanted items are never evicted: asking for more than fits fails after evicting b.
    let err = store.make_room(&[c.content_id], 90_000).unwrap_err();
    assert!(matches!(err, BlobError::QuotaExceeded { .. }), "{err}");
    assert!(store.manifest(&b.content_id).is_none());
    assert!(store.is_complete(&c.content_id));
    assert_eq!(store.usage_bytes(), 30_000);
    // Recency survives a reopen.
    drop(store);
    let (store, _) = BlobStore::open(&tmp.path().join("b"), 100_000, trusted()).unwrap();
    assert!(store.is_complete(&c.content_id));
}

#[test]
fn shared_chunks_survive_eviction_of_one_item() {
    let tmp = tempfile::tempdir().unwrap();
    let (store, _) = BlobStore::open(&tmp.path().join("b"), 1 << 30, trusted()).unwrap();
    let common = data(8192, 20);
    let mut f1 = common.clone();
    f1.extend(data(4096, 21));
    let mut f2 = common.clone();
    f2.extend(data(4096, 22));
    let a = publish(&store, tmp.path(), "a.bin", &f1, 4096);
    let b = publish(&store, tmp.path(), "b.bin", &f2, 4096);
    store.remove_content(&a.content_id).unwrap();
    assert!(store.is_complete(&b.content_id));
    assert_eq!(
        store
            .read_range(&b.content_id, "b.bin", 0, 1 << 20)
            .unwrap(),
        f2
    );
    assert_eq!(store.usage_bytes(), 12_288);
}
