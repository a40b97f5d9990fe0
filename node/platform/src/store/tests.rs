//! Unit tests of the document store: round trips, compaction, scans, limits, concurrency,
//! corruption through a fault-injecting backend, and a model test against a `BTreeMap`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use automerge::{transaction::Transactable, AutoCommit, ReadDoc, ROOT};
use cunyun_protocol::area::AreaScope;
use cunyun_protocol::digest::heads_digest;
use cunyun_protocol::key::DocKey;
use proptest::prelude::*;

use super::*;

fn key(s: &str) -> DocKey {
    DocKey::parse(s).expect("valid key")
}

fn scope(s: &str) -> AreaScope {
    AreaScope::parse(s).expect("valid scope")
}

fn cfg() -> StoreConfig {
    StoreConfig {
        cache_capacity_bytes: 4 * 1024 * 1024,
        ..StoreConfig::default()
    }
}

/// A caller-side document: edits it and produces the `DocWrite` for each edit.
struct Editor {
    key: DocKey,
    doc: AutoCommit,
    t: u64,
}

impl Editor {
    fn new(k: &str) -> Editor {
        Editor {
            key: key(k),
            doc: AutoCommit::new(),
            t: 1_700_000_000_000,
        }
    }

    /// Sets `field` to `value` and returns the incremental chunk as a write.
    fn edit(&mut self, field: &str, value: i64) -> DocWrite {
        self.doc.put(ROOT, field, value).expect("put");
        self.doc
            .put(ROOT, "note", format!("edit {value} of {}", self.key))
            .expect("put");
        self.t += 1000;
        DocWrite {
            key: self.key.clone(),
            chunk: self.doc.save_incremental(),
            heads: self.doc.get_heads(),
            updated_at_ms: self.t,
        }
    }

    fn digest(&mut self) -> cunyun_protocol::digest::HeadsDigest {
        heads_digest(&self.doc.get_heads())
    }
}

fn same_doc(stored: &Automerge, editor: &mut Editor) {
    assert_eq!(
        stored.get_heads(),
        editor.doc.get_heads(),
        "heads of {}",
        editor.key
    );
    assert_eq!(
        ReadDoc::hydrate(stored, ROOT, None).expect("hydrate stored"),
        ReadDoc::hydrate(&editor.doc, ROOT, None).expect("hydrate editor"),
        "content of {}",
        editor.key
    );
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn put_load_round_trip_and_entry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = DocStore::open(dir.path(), cfg()).expect("open");
    let mut a = Editor::new("510122104201/hh/a1");
    assert!(store.load(&a.key).expect("load").is_none());
    assert!(store.entry(&a.key).expect("entry").is_none());
    for i in 0..3 {
        store.commit(vec![a.edit("size", i)]).expect("commit");
    }
    let loaded = store.load(&a.key).expect("load").expect("present");
    same_doc(&loaded, &mut a);
    let e = store.entry(&a.key).expect("entry").expect("present");
    assert_eq!(e.digest, a.digest());
    assert_eq!(e.chunks, 3);
    assert_eq!(e.updated_at_ms, a.t);
    let s = store.stats();
    assert_eq!((s.documents, s.chunks, s.commits, s.writes), (1, 3, 3, 3));
    assert!(s.fsyncs >= 3, "every commit is synced");
    assert_eq!(s.bytes, e.bytes);
    assert!(store.verify().expect("verify").is_ok());
    drop(store);

    // Everything is still there after reopening, totals included.
    let store = DocStore::open(dir.path(), cfg()).expect("reopen");
    same_doc(&store.load(&a.key).expect("load").expect("present"), &mut a);
    assert_eq!(store.stats().documents, 1);
    assert_eq!(store.stats().chunks, 3);
}

#[test]
fn an_acknowledged_commit_has_already_moved_watch_writes() {
    // Watchers are woken before the acknowledgement: a caller that looks right after its
    // commit returned never misses its own write (the hub's conformance suite relies on it).
    let dir = tempfile::tempdir().expect("tempdir");
    let store = DocStore::open(dir.path(), cfg()).expect("open");
    let mut watch = store.watch_writes();
    let mut a = Editor::new("510122104201/hh/a1");
    for i in 0..300 {
        store.commit(vec![a.edit("size", i)]).expect("commit");
        assert!(
            watch.has_changed().expect("store open"),
            "commit {i} returned before watch_writes moved"
        );
        watch.borrow_and_update();
    }
}

#[test]
fn full_save_as_first_chunk_then_increments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = DocStore::open(dir.path(), cfg()).expect("open");
    let mut a = Editor::new("510122104201/hh/full");
    a.doc.put(ROOT, "x", 1).expect("put");
    let full = a.doc.save();
    let w = DocWrite {
        key: a.key.clone(),
        chunk: full,
        heads: a.doc.get_heads(),
        updated_at_ms: 1,
    };
    store.commit(vec![w]).expect("commit full save");
    // save_after(heads) output works as an increment too.
    let heads = a.doc.get_heads();
    a.doc.put(ROOT, "y", 2).expect("put");
    let w = DocWrite {
        key: a.key.clone(),
        chunk: a.doc.save_after(&heads),
        heads: a.doc.get_heads(),
        updated_at_ms: 2,
    };
    store.commit(vec![w]).expect("commit save_after");
    same_doc(&store.load(&a.key).expect("load").expect("present"), &mut a);
}

#[test]
fn many_chunks_then_compaction_keeps_doc_and_digest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = DocStore::open(
        dir.path(),
        StoreConfig {
            compact_after_chunks: 1000,
            ..cfg()
        },
    )
    .expect("open");
    let mut a = Editor::new("510122104201/hh/many");
    let mut b = Editor::new("510122104201/hp/many");
    for i in 0..40 {
        store
            .commit(vec![a.edit("n", i), b.edit("m", -i)])
            .expect("commit");
    }
    let before = store.entry(&a.key).expect("entry").expect("present");
    assert_eq!(before.chunks, 40);
    let stats = store.compact_all().expect("compact");
    assert_eq!(stats.docs_compacted, 2);
    assert_eq!(stats.chunks_before, 80);
    assert_eq!(stats.chunks_after, 2);
    let after = store.entry(&a.key).expect("entry").expect("present");
    assert_eq!(after.chunks, 1);
    assert_eq!(after.digest, before.digest, "compaction keeps the digest");
    assert_eq!(after.updated_at_ms, before.updated_at_ms);
    assert!(
        after.bytes < before.bytes,
        "{} < {}",
        after.bytes,
        before.bytes
    );
    same_doc(&store.load(&a.key).expect("load").expect("present"), &mut a);
    same_doc(&store.load(&b.key).expect("load").expect("present"), &mut b);
    assert_eq!(store.stats().chunks, 2);
    assert!(store.verify().expect("verify").is_ok());

    // Writes after compaction append to the snapshot.
    store.commit(vec![a.edit("n", 99)]).expect("commit");
    assert_eq!(
        store.entry(&a.key).expect("entry").expect("present").chunks,
        2
    );
    same_doc(&store.load(&a.key).expect("load").expect("present"), &mut a);
    assert!(store.verify().expect("verify").is_ok());
}

#[test]
fn automatic_compaction_after_threshold() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = DocStore::open(
        dir.path(),
        StoreConfig {
            compact_after_chunks: 4,
            ..cfg()
        },
    )
    .expect("open");
    let mut a = Editor::new("510122104201/hh/auto");
    for i in 0..4 {
        store.commit(vec![a.edit("n", i)]).expect("commit");
    }
    let digest = a.digest();
    wait_until("automatic compaction", || {
        store
            .entry(&a.key)
            .expect("entry")
            .is_some_and(|e| e.chunks == 1)
    });
    assert_eq!(
        store.entry(&a.key).expect("entry").expect("present").digest,
        digest
    );
    assert_eq!(store.stats().compactions, 1);
    same_doc(&store.load(&a.key).expect("load").expect("present"), &mut a);
    assert!(store.verify().expect("verify").is_ok());
}

#[test]
fn scan_is_ordered_and_exact_by_scope() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = DocStore::open(dir.path(), cfg()).expect("open");
    let keys = [
        "510122104201/hh/b",
        "510122104201/hh/a",
        "510122104201/hh/a1",
        "510122104201/hp/a",
        "510122104201/need/n1",
        "510122104202/hh/a",      // neighbouring village
        "510122104200/hh/z",      // township-level key sorting just before
        "510122105201/hh/a",      // another township
        "510123104201/hh/a",      // another county
        "510122000000/content/c", // county-level document
    ];
    let mut editors: Vec<Editor> = keys.iter().map(|k| Editor::new(k)).collect();
    let writes = editors.iter_mut().map(|e| e.edit("v", 1)).collect();
    store.commit(writes).expect("commit");

    let got: Vec<String> = store
        .scan(&scope("510122104201"))
        .map(|r| r.expect("scan item").0.to_string())
        .collect();
    assert_eq!(
        got,
        vec![
            "510122104201/hh/a",
            "510122104201/hh/a1",
            "510122104201/hh/b",
            "510122104201/hp/a",
            "510122104201/need/n1",
        ]
    );
    let county: Vec<DocKey> = store
        .scan(&scope("510122"))
        .map(|r| r.expect("scan item").0)
        .collect();
    assert_eq!(county.len(), 9, "{county:?}");
    assert!(
        county.windows(2).all(|w| w[0] < w[1]),
        "ordered: {county:?}"
    );
    assert!(county
        .iter()
        .all(|k| k.area().as_str().starts_with("510122")));
    let township: Vec<DocKey> = store
        .scan(&scope("510122104"))
        .map(|r| r.expect("scan item").0)
        .collect();
    assert_eq!(township.len(), 7);
    // Entries carry the digest of each document.
    for (k, e) in store.scan(&scope("51")).map(|r| r.expect("scan item")) {
        let ed = editors
            .iter_mut()
            .find(|ed| ed.key == k)
            .expect("known key");
        assert_eq!(e.digest, ed.digest());
        assert_eq!(e.chunks, 1);
    }
}

#[test]
fn size_limits_refuse_and_store_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = DocStore::open(
        dir.path(),
        StoreConfig {
            max_chunk_bytes: 2048,
            max_doc_bytes: 6000,
            compact_after_chunks: 1000,
            ..cfg()
        },
    )
    .expect("open");
    let mut big = Editor::new("510122104201/hh/big");
    big.doc.put(ROOT, "blob", "x".repeat(5000)).expect("put");
    let w = DocWrite {
        key: big.key.clone(),
        chunk: big.doc.save_nocompress(),
        heads: big.doc.get_heads(),
        updated_at_ms: 1,
    };
    let err = store.commit(vec![w]).expect_err("chunk over the limit");
    assert!(
        matches!(err, StoreError::TooLarge { what: "chunk", .. }),
        "{err}"
    );
    assert!(err.to_string().contains("510122104201/hh/big"), "{err}");
    assert!(store.entry(&big.key).expect("entry").is_none());

    // Grow a document up to the document limit; the write that would cross it is refused,
    // together with every other write of the same commit.
    let mut a = Editor::new("510122104201/hh/grow");
    let mut other = Editor::new("510122104201/hh/other");
    let mut n = 0;
    loop {
        a.doc
            .put(ROOT, format!("f{n}"), "y".repeat(1500))
            .expect("put");
        let w = DocWrite {
            key: a.key.clone(),
            chunk: a.doc.save_incremental(),
            heads: a.doc.get_heads(),
            updated_at_ms: n,
        };
        let before = store.entry(&a.key).expect("entry");
        match store.commit(vec![other.edit("v", n as i64), w]) {
            Ok(()) => n += 1,
            Err(StoreError::TooLarge {
                what: "document",
                size,
                limit,
                ..
            }) => {
                assert!(size > limit);
                assert_eq!(
                    store.entry(&a.key).expect("entry"),
                    before,
                    "nothing stored"
                );
                break;
            }
            Err(e) => panic!("unexpected error {e}"),
        }
        assert!(n < 10, "limit never reached");
    }
    assert!(n >= 2);
    // The other document's write in the refused commit was not stored either.
    assert_eq!(
        store
            .entry(&other.key)
            .expect("entry")
            .expect("present")
            .chunks,
        n as u32
    );
    assert!(store.verify().expect("verify").is_ok());
    let s = store.stats();
    assert_eq!(s.documents, 2);
}

#[test]
fn invalid_writes_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = DocStore::open(dir.path(), cfg()).expect("open");
    let mut a = Editor::new("510122104201/hh/a");
    let good = a.edit("v", 1);
    let cases = [
        DocWrite {
            chunk: vec![],
            ..good.clone()
        },
        DocWrite {
            chunk: b"not automerge".to_vec(),
            ..good.clone()
        },
        DocWrite {
            heads: vec![],
            ..good.clone()
        },
    ];
    for w in cases {
        let err = store.commit(vec![w]).expect_err("refused");
        assert!(matches!(err, StoreError::InvalidWrite { .. }), "{err}");
    }
    assert_eq!(store.stats().documents, 0);
    store.commit(vec![good]).expect("valid write");
}

#[test]
fn concurrent_commits_are_all_acked_and_present() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = DocStore::open(
        dir.path(),
        StoreConfig {
            compact_after_chunks: 5,
            ..cfg()
        },
    )
    .expect("open");
    let threads = 16;
    let per_thread = 40;
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                let mut ed = Editor::new(&format!("510122104201/hh/t{t}"));
                for i in 0..per_thread {
                    store.commit(vec![ed.edit("i", i)]).expect("commit");
                }
                ed
            })
        })
        .collect();
    let mut editors: Vec<Editor> = handles
        .into_iter()
        .map(|h| h.join().expect("thread"))
        .collect();
    let s = store.stats();
    assert_eq!(s.commits, (threads * per_thread) as u64);
    assert!(s.fsyncs <= s.commits);
    for ed in &mut editors {
        same_doc(&store.load(&ed.key).expect("load").expect("present"), ed);
    }
    assert!(store.verify().expect("verify").is_ok());
}

#[test]
fn commit_async_does_not_block_the_runtime() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = DocStore::open(dir.path(), cfg()).expect("open");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut eds: Vec<Editor> = (0..8)
        .map(|i| Editor::new(&format!("510122104201/hh/as{i}")))
        .collect();
    let writes: Vec<DocWrite> = eds.iter_mut().map(|e| e.edit("v", 7)).collect();
    rt.block_on(async {
        // Eight commits in flight at once on a single-threaded runtime.
        let futs: Vec<_> = writes
            .into_iter()
            .map(|w| {
                let store = store.clone();
                tokio::spawn(async move { store.commit_async(vec![w]).await })
            })
            .collect();
        for f in futs {
            f.await.expect("task").expect("commit");
        }
    });
    for ed in &mut eds {
        same_doc(&store.load(&ed.key).expect("load").expect("present"), ed);
    }
}

/// A backend wrapper that damages the chunks of one document on read and counts chunk reads.
struct FaultyBackend {
    inner: Arc<dyn KvBackend>,
    damage_prefix: Mutex<Option<Vec<u8>>>,
    chunk_reads: AtomicU64,
}

impl FaultyBackend {
    fn new(inner: Arc<dyn KvBackend>) -> FaultyBackend {
        FaultyBackend {
            inner,
            damage_prefix: Mutex::new(None),
            chunk_reads: AtomicU64::new(0),
        }
    }

    fn damage(&self, doc: &DocKey) {
        *self.damage_prefix.lock().expect("lock") = Some(doc.to_bytes());
    }

    fn maybe_damage(&self, tree: TreeId, key: &[u8], mut value: Vec<u8>) -> Vec<u8> {
        if tree == TreeId::Docs {
            self.chunk_reads.fetch_add(1, Ordering::Relaxed);
            let prefix = self.damage_prefix.lock().expect("lock").clone();
            if prefix.is_some_and(|p| key.starts_with(&p) && key.get(p.len()) == Some(&0)) {
                let last = value.len() - 1;
                value[last] ^= 0x40;
            }
        }
        value
    }
}

impl KvBackend for FaultyBackend {
    fn get(&self, tree: TreeId, key: &[u8]) -> Result<Option<Vec<u8>>, BackendError> {
        Ok(self
            .inner
            .get(tree, key)?
            .map(|v| self.maybe_damage(tree, key, v)))
    }
    fn range(&self, tree: TreeId, start: &[u8], end: Option<&[u8]>) -> KvIter {
        let items: Vec<_> = self
            .inner
            .range(tree, start, end)
            .map(|r| {
                r.map(|(k, v)| {
                    let v = self.maybe_damage(tree, &k, v);
                    (k, v)
                })
            })
            .collect();
        Box::new(items.into_iter())
    }
    fn apply(&self, batch: &WriteBatch) -> Result<(), BackendError> {
        self.inner.apply(batch)
    }
    fn sync(&self) -> Result<(), BackendError> {
        self.inner.sync()
    }
    fn size_on_disk(&self) -> Result<u64, BackendError> {
        self.inner.size_on_disk()
    }
}

fn open_faulty(dir: &Path, cfg: StoreConfig) -> (DocStore, Arc<FaultyBackend>) {
    let sled = SledBackend::open(dir, &cfg).expect("sled");
    let faulty = Arc::new(FaultyBackend::new(Arc::new(sled)));
    let store = DocStore::open_with_backend(faulty.clone(), cfg).expect("open");
    (store, faulty)
}

#[test]
fn damaged_chunk_is_quarantined_and_everything_else_keeps_working() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut eds: Vec<Editor> = (0..6)
        .map(|i| Editor::new(&format!("510122104201/hh/d{i}")))
        .collect();
    {
        let (store, faulty) = open_faulty(dir.path(), cfg());
        for round in 0..3 {
            let writes = eds.iter_mut().map(|e| e.edit("r", round)).collect();
            store.commit(writes).expect("commit");
        }
        let victim = eds[2].key.clone();
        faulty.damage(&victim);
        let err = store.load(&victim).expect_err("damaged");
        match &err {
            StoreError::Corrupt { key, reason } => {
                assert_eq!(key, &victim.to_string());
                assert!(reason.contains("checksum"), "{reason}");
            }
            other => panic!("expected Corrupt, got {other}"),
        }
        let q = store.quarantined();
        assert_eq!(q.len(), 1);
        assert_eq!(q[0].key, victim.to_string());
        assert!(q[0].when_ms > 0);
        assert_eq!(store.stats().quarantined, 1);
        for ed in eds.iter_mut().filter(|e| e.key != victim) {
            same_doc(&store.load(&ed.key).expect("load").expect("present"), ed);
        }
        // New writes work; writes to the quarantined document are refused.
        store
            .commit(vec![eds[0].edit("after", 1)])
            .expect("commit after damage");
        let err = store
            .commit(vec![eds[2].edit("after", 1)])
            .expect_err("quarantined");
        assert!(err.is_corrupt(), "{err}");
        // The damaged bytes are kept: the index still lists the document.
        assert!(store.entry(&victim).expect("entry").is_some());
        // Compaction skips it and counts nothing for it.
        let stats = store.compact_all().expect("compact");
        assert_eq!(stats.docs_compacted, 5);
    }
    // The quarantine survives reopening (without the fault, the bytes are fine, but the record
    // stays until someone repairs the document).
    let (store, _) = open_faulty(dir.path(), cfg());
    let q = store.quarantined();
    assert_eq!(q.len(), 1, "{q:?}");
    assert!(store
        .load(&eds[2].key)
        .expect_err("still quarantined")
        .is_corrupt());
    same_doc(
        &store.load(&eds[0].key).expect("load").expect("present"),
        &mut eds[0],
    );
}

#[test]
fn bytes_automerge_refuses_are_quarantined() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = DocStore::open(dir.path(), cfg()).expect("open");
    let mut a = Editor::new("510122104201/hh/junk");
    let mut w = a.edit("v", 1);
    // Valid envelope and magic number, garbage after it.
    w.chunk.truncate(10);
    w.chunk.extend_from_slice(&[0xff; 40]);
    store
        .commit(vec![w])
        .expect("stored (only the magic number is checked on write)");
    let err = store.load(&a.key).expect_err("automerge refuses");
    assert!(
        matches!(&err, StoreError::Corrupt { reason, .. } if reason.contains("automerge")),
        "{err}"
    );
    assert_eq!(store.quarantined().len(), 1);
}

#[test]
fn open_reads_no_documents() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = DocStore::open(dir.path(), cfg()).expect("open");
        let mut eds: Vec<Editor> = (0..50)
            .map(|i| Editor::new(&format!("510122104201/hh/o{i}")))
            .collect();
        for r in 0..3 {
            store
                .commit(eds.iter_mut().map(|e| e.edit("r", r)).collect())
                .expect("commit");
        }
    }
    let (store, faulty) = open_faulty(dir.path(), cfg());
    let s = store.stats();
    assert_eq!((s.documents, s.chunks), (50, 150));
    assert_eq!(
        faulty.chunk_reads.load(Ordering::Relaxed),
        0,
        "open read chunks"
    );
    assert_eq!(store.scan(&scope("510122104201")).count(), 50);
    assert_eq!(
        faulty.chunk_reads.load(Ordering::Relaxed),
        0,
        "scan read chunks"
    );
}

#[test]
fn second_open_of_the_same_directory_fails_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _store = DocStore::open(dir.path(), cfg()).expect("open");
    let err = DocStore::open(dir.path(), cfg()).err().expect("locked");
    assert!(matches!(err, StoreError::Open { .. }), "{err}");
}

/// One step of the model test.
#[derive(Debug, Clone)]
enum Op {
    /// One commit editing one document.
    Edit(usize, i64),
    /// One commit editing several documents (maybe the same one twice).
    Multi(Vec<(usize, i64)>),
    /// A commit with an oversized chunk next to a valid write: refused whole.
    Oversized(usize, usize),
    CompactAll,
    Reopen,
}

const MODEL_KEYS: [&str; 6] = [
    "510122104201/hh/a",
    "510122104201/hh/a1",
    "510122104201/hp/a",
    "510122104202/hh/a",
    "510122000000/content/c",
    "510123104201/hh/b",
];

fn arb_op() -> impl Strategy<Value = Op> {
    let doc = 0..MODEL_KEYS.len();
    prop_oneof![
        6 => (doc.clone(), any::<i64>()).prop_map(|(d, v)| Op::Edit(d, v)),
        3 => proptest::collection::vec((doc.clone(), any::<i64>()), 1..5).prop_map(Op::Multi),
        1 => (doc.clone(), doc).prop_map(|(a, b)| Op::Oversized(a, b)),
        1 => Just(Op::CompactAll),
        1 => Just(Op::Reopen),
    ]
}

fn model_cfg() -> StoreConfig {
    StoreConfig {
        compact_after_chunks: 3,
        max_chunk_bytes: 4096,
        ..cfg()
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// After any sequence of commits, refused commits, compactions and reopens, the index
    /// matches a model `BTreeMap`, every document loads as the caller's copy, and
    /// `verify` finds index, chunks and totals consistent.
    #[test]
    fn index_stays_in_step_with_documents(ops in proptest::collection::vec(arb_op(), 1..25)) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = DocStore::open(dir.path(), model_cfg()).expect("open");
        let mut eds: Vec<Editor> = MODEL_KEYS.iter().map(|k| Editor::new(k)).collect();
        // key -> (digest, updated_at) of committed state.
        let mut model: BTreeMap<DocKey, (cunyun_protocol::digest::HeadsDigest, u64)> = BTreeMap::new();
        for op in ops {
            match op {
                Op::Edit(d, v) => {
                    let w = eds[d].edit("v", v);
                    store.commit(vec![w]).expect("commit");
                    model.insert(eds[d].key.clone(), (eds[d].digest(), eds[d].t));
                }
                Op::Multi(edits) => {
                    let writes = edits.iter().map(|&(d, v)| eds[d].edit("v", v)).collect();
                    store.commit(writes).expect("commit");
                    for &(d, _) in &edits {
                        model.insert(eds[d].key.clone(), (eds[d].digest(), eds[d].t));
                    }
                }
                Op::Oversized(a, b) => {
                    // Work on copies so the callers' documents keep matching the store.
                    let mut big = AutoCommit::load(&eds[a].doc.save()).expect("copy");
                    big.put(ROOT, "blob", "z".repeat(10_000)).expect("put");
                    let big_w = DocWrite {
                        key: eds[a].key.clone(),
                        chunk: big.save_nocompress(),
                        heads: big.get_heads(),
                        updated_at_ms: 1,
                    };
                    let mut small = AutoCommit::load(&eds[b].doc.save()).expect("copy");
                    small.put(ROOT, "v", 0).expect("put");
                    let small_w = DocWrite {
                        key: eds[b].key.clone(),
                        chunk: small.save_incremental(),
                        heads: small.get_heads(),
                        updated_at_ms: 1,
                    };
                    let err = store.commit(vec![small_w, big_w]).expect_err("too large");
                    prop_assert!(matches!(err, StoreError::TooLarge { .. }), "{}", err);
                }
                Op::CompactAll => {
                    store.compact_all().expect("compact");
                    for (k, _) in store.scan(&scope("51")).map(|r| r.expect("scan")) {
                        prop_assert_eq!(store.entry(&k).expect("entry").expect("present").chunks, 1);
                    }
                }
                Op::Reopen => {
                    drop(store);
                    store = DocStore::open(dir.path(), model_cfg()).expect("reopen");
                }
            }
            let scanned: BTreeMap<DocKey, (cunyun_protocol::digest::HeadsDigest, u64)> = store
                .scan(&scope("51"))
                .map(|r| r.map(|(k, e)| (k, (e.digest, e.updated_at_ms))))
                .collect::<Result<_, _>>()
                .expect("scan");
            prop_assert_eq!(&scanned, &model);
            let report = store.verify().expect("verify");
            prop_assert!(report.is_ok(), "{:?}", report.problems);
            prop_assert_eq!(store.stats().documents, model.len() as u64);
        }
        for ed in &mut eds {
            match store.load(&ed.key).expect("load") {
                Some(doc) => same_doc(&doc, ed),
                None => prop_assert!(!model.contains_key(&ed.key)),
            }
        }
        prop_assert!(store.quarantined().is_empty());
    }
}

#[test]
fn vacuum_keeps_everything_and_shrinks() {
    let base = tempfile::tempdir().expect("tempdir");
    let dir = base.path().join("store");
    let mut eds: Vec<Editor> = (0..40)
        .map(|i| Editor::new(&format!("510122104201/hh/vac{i}")))
        .collect();
    let mut junk = Editor::new("510122104201/hh/junk");
    {
        let store = DocStore::open(&dir, cfg()).expect("open");
        for r in 0..12 {
            store
                .commit(eds.iter_mut().map(|e| e.edit("r", r)).collect())
                .expect("commit");
        }
        store.compact_all().expect("compact");
        let mut w = junk.edit("v", 1);
        w.chunk.truncate(10);
        w.chunk.extend_from_slice(&[0xee; 30]);
        store.commit(vec![w]).expect("commit junk");
        assert!(store.load(&junk.key).is_err());
    }
    let stats = DocStore::vacuum(&dir, &cfg()).expect("vacuum");
    assert!(stats.keys >= 2 * 41, "{stats:?}");
    assert!(stats.bytes_after < stats.bytes_before, "{stats:?}");
    assert!(!base.path().join("store.vacuum-new").exists());
    assert!(!base.path().join("store.vacuum-old").exists());
    let store = DocStore::open(&dir, cfg()).expect("reopen");
    for ed in &mut eds {
        same_doc(&store.load(&ed.key).expect("load").expect("present"), ed);
    }
    assert_eq!(store.quarantined().len(), 1, "quarantine carried over");
    assert!(store.verify().expect("verify").is_ok());
    assert_eq!(store.stats().documents, 41);
}

#[test]
fn interrupted_vacuum_is_finished_or_rolled_back_at_open() {
    let base = tempfile::tempdir().expect("tempdir");
    let dir = base.path().join("store");
    let mut ed = Editor::new("510122104201/hh/x");
    {
        let store = DocStore::open(&dir, cfg()).expect("open");
        store.commit(vec![ed.edit("v", 1)]).expect("commit");
    }
    let copy = |to: &Path| {
        std::fs::create_dir_all(to).expect("mkdir");
        for e in std::fs::read_dir(&dir).expect("ls").flatten() {
            if e.path().is_file() {
                std::fs::copy(e.path(), to.join(e.file_name())).expect("copy");
            }
        }
    };
    // A crash while copying: the incomplete copy is dropped, the store is untouched.
    let new = base.path().join("store.vacuum-new");
    copy(&new);
    {
        let store = DocStore::open(&dir, cfg()).expect("open after an interrupted copy");
        same_doc(
            &store.load(&ed.key).expect("load").expect("present"),
            &mut ed,
        );
    }
    assert!(!new.exists());
    // A crash between the two renames: the complete copy is moved into place.
    copy(&new);
    std::fs::File::create(new.join("cunyun-vacuum-complete")).expect("marker");
    std::fs::rename(&dir, base.path().join("store.vacuum-old")).expect("rename");
    let store = DocStore::open(&dir, cfg()).expect("open after an interrupted swap");
    same_doc(
        &store.load(&ed.key).expect("load").expect("present"),
        &mut ed,
    );
    assert!(!base.path().join("store.vacuum-old").exists());
    assert!(!dir.join("cunyun-vacuum-complete").exists());
}

/// Whether any file under `dir` contains `needle`.
fn files_contain(dir: &Path, needle: &[u8]) -> bool {
    walk(dir).iter().any(|f| {
        std::fs::read(f)
            .map(|b| b.windows(needle.len()).any(|w| w == needle))
            .unwrap_or(false)
    })
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn removal_drops_chunks_index_and_totals_and_the_next_open_vacuums_the_bytes_away() {
    let base = tempfile::tempdir().expect("tempdir");
    let dir = base.path().join("store");
    let marker = "MARKER-removal-7d1f";
    let mut gone = Editor::new("510122104201/hh/gone");
    let mut kept = Editor::new("510122104201/hh/kept");
    {
        let store = DocStore::open(&dir, cfg()).expect("open");
        for r in 0..3 {
            store
                .commit(vec![gone.edit("r", r), kept.edit("r", r)])
                .expect("commit");
        }
        gone.doc.put(ROOT, "secret", marker).expect("put");
        let mut w = gone.edit("r", 9);
        // A write and a removal of the same document in one commit is refused, changing nothing.
        assert!(store
            .commit_with_removals(vec![w.clone()], vec![gone.key.clone()])
            .is_err());
        store.commit(vec![w.clone()]).expect("commit marker");
        assert!(
            files_contain(&dir, marker.as_bytes()),
            "the marker is on disk before"
        );
        let before = store.stats();
        // The removal and another document's write in one batch; a missing document is a no-op.
        w = kept.edit("r", 10);
        store
            .commit_with_removals(vec![w], vec![gone.key.clone(), key("510122104201/hh/none")])
            .expect("remove");
        assert!(store.load(&gone.key).expect("load").is_none());
        assert!(store.entry(&gone.key).expect("entry").is_none());
        let listed: Vec<DocKey> = store
            .scan(&scope("510122104201"))
            .map(|r| r.expect("scan").0)
            .collect();
        assert_eq!(listed, vec![kept.key.clone()]);
        let after = store.stats();
        assert_eq!(after.documents, before.documents - 1);
        assert!(store.verify().expect("verify").is_ok());
        same_doc(
            &store.load(&kept.key).expect("load").expect("kept"),
            &mut kept,
        );
    }
    // The next open finds the vacuum flag, rewrites the store and clears the flag.
    let store = DocStore::open(&dir, cfg()).expect("reopen");
    assert!(
        !files_contain(&dir, marker.as_bytes()),
        "removed bytes left in sled's files"
    );
    assert!(store.load(&gone.key).expect("load").is_none());
    same_doc(
        &store.load(&kept.key).expect("load").expect("kept"),
        &mut kept,
    );
    assert!(store.verify().expect("verify").is_ok());
    assert_eq!(store.stats().documents, 1);
    drop(store);
    // The vacuum dropped the flag: the next open does not vacuum again.
    let backend = SledBackend::open(&dir, &cfg()).expect("open backend");
    assert!(!vacuum_due(&backend));
}
