//! Damaged files: the store quarantines exactly the damaged document and keeps serving the
//! rest, and never panics on bad bytes.
//!
//! Guards against: sled 0.34 turning one flipped byte into lost data or an unopenable store
//! (it treats a bad record in its recent log as a torn write, zeroes what follows and refuses
//! to open), a damaged page taking its neighbours down for good, quarantine that does not
//! survive a restart, and panics on garbage.
//!
//! The documents' bytes are found in sled's files by a unique marker string (sled 0.34 does
//! not compress without its `compression` feature, and the marker is kept out of automerge's
//! DEFLATE by keeping the document small); the tests check the marker is found, so they fail
//! rather than pass vacuously if that ever changes.

use std::path::{Path, PathBuf};

use automerge::{transaction::Transactable, AutoCommit, ReadDoc, ROOT};
use cunyun_platform::store::{DocStore, DocWrite, StoreConfig, StoreError};
use cunyun_protocol::area::AreaScope;
use cunyun_protocol::key::DocKey;
use rand::{Rng, SeedableRng};

/// A caller-side document.
struct Doc {
    key: DocKey,
    am: AutoCommit,
}

impl Doc {
    fn new(key: &str) -> Doc {
        Doc {
            key: DocKey::parse(key).expect("valid key"),
            am: AutoCommit::new(),
        }
    }

    /// A household-like edit: a few fields, one of them `note`.
    fn edit(&mut self, round: i64, note: &str) -> DocWrite {
        let am = &mut self.am;
        am.put(ROOT, "members", 3 + round).expect("put");
        am.put(ROOT, "village", "石桥村").expect("put");
        am.put(ROOT, "round", round).expect("put");
        am.put(ROOT, "note", note).expect("put");
        DocWrite {
            key: self.key.clone(),
            chunk: am.save_incremental(),
            heads: am.get_heads(),
            updated_at_ms: 1_700_000_000_000 + round as u64,
        }
    }

    fn matches(&mut self, stored: &automerge::Automerge) -> bool {
        stored.get_heads() == self.am.get_heads()
            && ReadDoc::hydrate(stored, ROOT, None).ok()
                == ReadDoc::hydrate(&self.am, ROOT, None).ok()
    }
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("read_dir").flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// Flips one byte inside every occurrence of `marker` in the files under `dir`; returns the
/// number of occurrences.
fn flip_marker(dir: &Path, marker: &[u8]) -> usize {
    let mut hits = 0;
    for f in files(dir) {
        let mut bytes = std::fs::read(&f).expect("read");
        let found: Vec<usize> = bytes
            .windows(marker.len())
            .enumerate()
            .filter(|(_, w)| *w == marker)
            .map(|(i, _)| i)
            .collect();
        for &at in &found {
            bytes[at + marker.len() / 2] ^= 0x55;
        }
        if !found.is_empty() {
            std::fs::write(&f, &bytes).expect("write");
            hits += found.len();
        }
    }
    hits
}

/// Whether `before` → `after` of file `path` is explained by the repair log: 4-byte CRC
/// rewrites of `db` records and blob files, or a rewritten `conf`.
fn changes_are_recorded_repairs(
    dir: &Path,
    path: &Path,
    before: &[u8],
    after: &[u8],
    repairs: &str,
) -> bool {
    if before == after {
        return true;
    }
    let Ok(name) = path.strip_prefix(dir) else {
        return false;
    };
    let name = name.to_string_lossy();
    if name == "conf" {
        return repairs.lines().any(|l| l.contains(" conf rewritten"));
    }
    if name.starts_with("snap.") {
        return repairs
            .lines()
            .any(|l| l.contains(&format!(" snapshot {name} restored")));
    }
    // Byte ranges `(offset, len)` the repairs rewrote in this file: `record db@OFFSET len N ...`
    // and `blob ID crc ...` (its first 4 bytes).
    let ranges: Vec<(usize, usize)> = repairs
        .lines()
        .filter_map(|l| {
            let words: Vec<&str> = l.split(' ').skip(1).collect();
            match words.as_slice() {
                ["record", at, "len", n, ..] if name == "db" => {
                    Some((at.strip_prefix("db@")?.parse().ok()?, n.parse().ok()?))
                }
                ["blob", id, ..] if name == format!("blobs/{id}") => Some((0, 4)),
                _ => None,
            }
        })
        .collect();
    before.len() == after.len()
        && before
            .iter()
            .zip(after)
            .enumerate()
            .all(|(i, (x, y))| x == y || ranges.iter().any(|&(o, n)| i >= o && i < o + n))
}

fn village() -> AreaScope {
    AreaScope::parse("510122104201").expect("scope")
}

/// Checks the outcome every damage test wants: the victim is corrupt and quarantined (from the
/// store's own checksums), everything else loads unchanged, new writes work.
fn assert_only_victim_is_damaged(store: &DocStore, docs: &mut [Doc], victim: usize) {
    let err = store
        .load(&docs[victim].key)
        .expect_err("victim must not load");
    match &err {
        StoreError::Corrupt { key, .. } => assert_eq!(key, &docs[victim].key.to_string()),
        other => panic!("expected Corrupt for the victim, got {other}"),
    }
    for (i, d) in docs.iter_mut().enumerate().filter(|(i, _)| *i != victim) {
        match store.load(&d.key) {
            Ok(Some(doc)) => assert!(d.matches(&doc), "document {i} changed"),
            other => panic!("document {i} ({}) does not load: {other:?}", d.key),
        }
    }
    let q = store.quarantined();
    assert_eq!(q.len(), 1, "only the victim is quarantined: {q:?}");
    assert_eq!(q[0].key, docs[victim].key.to_string());
    assert!(
        !q[0].from_backend,
        "found by the store's own checksum: {q:?}"
    );
    // The index still lists every document, the victim included: its bytes are kept.
    let listed = store.scan(&village()).filter(|r| r.is_ok()).count();
    assert!(
        listed >= docs.len(),
        "scan lists {listed} of {}",
        docs.len()
    );
    assert!(store.entry(&docs[victim].key).expect("entry").is_some());
    // New writes work, except to the quarantined document.
    let w = docs[0].edit(100, "after the damage");
    store.commit(vec![w]).expect("commit to a healthy document");
    let mut fresh = Doc::new("510122104201/hh/fresh");
    store
        .commit(vec![fresh.edit(0, "new")])
        .expect("commit a new document");
    let w = docs[victim].edit(100, "write to the victim");
    let err = store.commit(vec![w]).expect_err("victim is read-only");
    assert!(err.is_corrupt(), "{err}");
}

#[test]
fn flipped_bytes_in_one_document_quarantine_only_that_document() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = StoreConfig::default;
    let marker = b"MARKER-zq81-victim-household";
    let victim = 23;
    let mut docs: Vec<Doc> = (0..60)
        .map(|i| Doc::new(&format!("510122104201/hh/h{i:04}")))
        .collect();
    {
        let store = DocStore::open(dir.path(), cfg()).expect("open");
        for round in 0..3 {
            let writes = docs
                .iter_mut()
                .enumerate()
                .map(|(i, d)| {
                    let note = if i == victim && round == 1 {
                        String::from_utf8_lossy(marker).into_owned()
                    } else {
                        format!("note {i} {round}")
                    };
                    d.edit(round, &note)
                })
                .collect();
            store.commit(writes).expect("commit");
        }
        // Compact half of the history away so the marker sits both in live and dead records.
        store.compact_all().expect("compact");
        let w = docs[victim].edit(3, "later edit");
        store.commit(vec![w]).expect("commit");
    }
    let hits = flip_marker(dir.path(), marker);
    assert!(hits >= 1, "the marker must be findable in the store files");

    let store = DocStore::open(dir.path(), cfg()).expect("the store opens despite the damage");
    assert_only_victim_is_damaged(&store, &mut docs, victim);
    let repairs =
        std::fs::read_to_string(dir.path().join("cunyun-log-repairs.txt")).unwrap_or_default();
    assert!(repairs.lines().count() >= 1, "the repair is recorded");
    drop(store);

    // The quarantine survives a restart; everything else still loads.
    let store = DocStore::open(dir.path(), cfg()).expect("reopen");
    let q = store.quarantined();
    assert_eq!(q.len(), 1, "{q:?}");
    assert_eq!(q[0].key, docs[victim].key.to_string());
    assert!(store
        .load(&docs[victim].key)
        .expect_err("still quarantined")
        .is_corrupt());
    for (i, d) in docs.iter_mut().enumerate().filter(|(i, _)| *i != victim) {
        let doc = store.load(&d.key).expect("load").expect("present");
        assert!(d.matches(&doc), "document {i}");
    }
}

#[test]
fn damage_in_an_older_log_segment_is_repaired_at_the_next_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    // No background segment cleaning, so the victim's page stays where it was written.
    let cfg = || StoreConfig {
        sled_background_ms: 0,
        ..StoreConfig::default()
    };
    let marker = b"MARKER-old-segment-7c1e";
    let victim = 5;
    let mut docs: Vec<Doc> = (0..20)
        .map(|i| Doc::new(&format!("510122104201/hh/v{i:03}")))
        .collect();
    {
        let store = DocStore::open(dir.path(), cfg()).expect("open");
        let writes = docs
            .iter_mut()
            .enumerate()
            .map(|(i, d)| {
                let note = if i == victim {
                    String::from_utf8_lossy(marker).into_owned()
                } else {
                    format!("note {i}")
                };
                d.edit(0, &note)
            })
            .collect();
        store.commit(writes).expect("commit");
        // Several segments of other data (another village) after it.
        let filler = "x".repeat(1500);
        for batch in 0..40 {
            let writes = (0..50)
                .map(|i| {
                    let mut d = Doc::new(&format!("510122104202/hh/f{batch:02}{i:03}"));
                    d.edit(0, &filler)
                })
                .collect();
            store.commit(writes).expect("commit filler");
        }
    }
    let db_len = std::fs::metadata(dir.path().join("db")).expect("db").len();
    assert!(db_len > 2 * 512 * 1024, "several segments: {db_len} bytes");
    assert!(
        flip_marker(dir.path(), marker) >= 1,
        "the marker must be findable"
    );

    {
        let store =
            DocStore::open(dir.path(), cfg()).expect("opens: the damage is outside the tail");
        let err = store.load(&docs[victim].key).expect_err("victim");
        assert!(err.is_corrupt(), "{err}");
        // Neighbours on the same sled page may be unreadable now; none loads wrong data.
        let mut collateral = 0;
        for (i, d) in docs.iter_mut().enumerate().filter(|(i, _)| *i != victim) {
            match store.load(&d.key) {
                Ok(Some(doc)) => assert!(d.matches(&doc), "document {i} changed"),
                Ok(None) => panic!("document {i} vanished"),
                Err(e) => {
                    assert!(e.is_corrupt(), "{e}");
                    collateral += 1;
                }
            }
        }
        assert!(
            collateral <= 16,
            "at most one sled page of neighbours: {collateral}"
        );
        assert!(
            dir.path().join("cunyun-check-log").exists(),
            "the page-level damage asks the next open for a full log check"
        );
        eprintln!("page-level damage took {collateral} neighbours with it until the next open");
    }
    // Closing ran the full check and repaired the record; the next open releases the page-level
    // quarantine and the store's checksums single out the victim.
    let store = DocStore::open(dir.path(), cfg()).expect("reopen");
    assert!(store.quarantined().is_empty(), "{:?}", store.quarantined());
    assert_only_victim_is_damaged(&store, &mut docs, victim);
}

#[test]
fn random_flips_never_panic() {
    let marker_free_docs = 120;
    let base = tempfile::tempdir().expect("tempdir");
    let pristine = base.path().join("pristine");
    let mut docs: Vec<Doc> = (0..marker_free_docs)
        .map(|i| Doc::new(&format!("510122104201/hh/r{i:04}")))
        .collect();
    {
        // Without sled's background thread the files, and so each seed's damage, are the same
        // on every run.
        let cfg = StoreConfig {
            sled_background_ms: 0,
            ..StoreConfig::default()
        };
        let store = DocStore::open(&pristine, cfg).expect("open");
        for round in 0..4 {
            let writes = docs
                .iter_mut()
                .map(|d| d.edit(round, "random flips"))
                .collect();
            store.commit(writes).expect("commit");
        }
        store.compact_all().expect("compact");
        let writes = docs
            .iter_mut()
            .take(40)
            .map(|d| d.edit(9, "after compaction"))
            .collect();
        store.commit(writes).expect("commit");
    }
    let names: Vec<PathBuf> = files(&pristine)
        .into_iter()
        .map(|p| p.strip_prefix(&pristine).expect("inside").to_path_buf())
        .collect();
    // `CUNYUN_FLIP_SEEDS=200` runs more seeds.
    let seeds: u64 = std::env::var("CUNYUN_FLIP_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12);
    let mut summary = Vec::new();
    for seed in 0..seeds {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let dir = base.path().join(format!("seed{seed}"));
        std::fs::create_dir_all(dir.join("blobs")).expect("mkdir");
        for n in &names {
            if let Some(parent) = dir.join(n).parent() {
                std::fs::create_dir_all(parent).expect("mkdir");
            }
            std::fs::copy(pristine.join(n), dir.join(n)).expect("copy");
        }
        // 1, 4, 16 or 64 flipped bytes, most of them in the data file.
        let flips = 1 << (2 * (seed % 4));
        for _ in 0..flips {
            let name = if rng.gen_bool(0.85) {
                PathBuf::from("db")
            } else {
                names[rng.gen_range(0..names.len())].clone()
            };
            let path = dir.join(&name);
            let mut bytes = std::fs::read(&path).expect("read");
            if bytes.is_empty() {
                continue;
            }
            let at = rng.gen_range(0..bytes.len());
            bytes[at] ^= 1 << rng.gen_range(0..8);
            std::fs::write(&path, &bytes).expect("write");
        }
        let before: Vec<(PathBuf, Vec<u8>)> = files(&dir)
            .into_iter()
            .map(|p| {
                let b = std::fs::read(&p).expect("read");
                (p, b)
            })
            .collect();
        let line = match DocStore::open(&dir, StoreConfig::default()) {
            Err(e) => {
                let msg = e.to_string();
                assert!(
                    msg.contains(&dir.display().to_string()),
                    "the error names the store: {msg}"
                );
                // A refused open leaves the files as they were (nothing truncated or zeroed),
                // apart from the repairs it recorded.
                let repairs =
                    std::fs::read_to_string(dir.join("cunyun-log-repairs.txt")).unwrap_or_default();
                for (p, b) in &before {
                    let now = std::fs::read(p).expect("read");
                    assert!(
                        changes_are_recorded_repairs(&dir, p, b, &now, &repairs),
                        "seed {seed}: refused open changed {}: {msg}",
                        p.display()
                    );
                }
                format!("seed {seed:2} ({flips:2} flips): open refused: {msg}")
            }
            Ok(store) => {
                let (mut ok, mut corrupt, mut missing, mut other) = (0, 0, 0, 0);
                for d in &mut docs {
                    match store.load(&d.key) {
                        Ok(Some(doc)) => {
                            assert!(
                                d.matches(&doc),
                                "seed {seed}: {} loaded with wrong content",
                                d.key
                            );
                            ok += 1;
                        }
                        Ok(None) => missing += 1,
                        Err(e) if e.is_corrupt() => corrupt += 1,
                        Err(_) => other += 1,
                    }
                    let _ = store.entry(&d.key);
                }
                let scanned = store.scan(&village()).count();
                let mut fresh = Doc::new("510122104201/hh/after-flips");
                let commit = store
                    .commit(vec![fresh.edit(0, "x")])
                    .map_err(|e| e.to_string());
                let _ = store.stats();
                let _ = store.verify();
                format!(
                    "seed {seed:2} ({flips:2} flips): opened; {ok} load, {corrupt} corrupt, {missing} missing, \
                     {other} other errors, {scanned} scanned, {} quarantined, new commit {}",
                    store.quarantined().len(),
                    match commit {
                        Ok(()) => "ok".to_string(),
                        Err(e) => format!("refused: {e}"),
                    }
                )
            }
        };
        eprintln!("{line}");
        summary.push(line);
    }
    assert_eq!(summary.len() as u64, seeds);
}
