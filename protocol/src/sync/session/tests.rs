//! Session tests: two in-memory stores driven through the real wire encoding.

use std::collections::BTreeMap;
use std::time::Instant;

use automerge::transaction::Transactable;
use automerge::{AutomergeError, ChangeHash, ROOT};
use proptest::prelude::*;

use super::*;
use crate::area::AreaScope;
use crate::identity::NodeId;
use crate::key::{Kind, Role};
use crate::sync::mem::{run_pair, MemStore, PairReport};
use crate::sync::wire::tests::arb_frame;
use crate::sync::{DocCompare, SyncStore};

const VILLAGE: &str = "510122104201";
const COUNTY: &str = "510122";

fn ident(n: u8, role: Role, scope: &str) -> NodeIdentity {
    NodeIdentity {
        node_id: NodeId([n; 16]),
        role,
        scope: AreaScope::parse(scope).expect("scope"),
    }
}

fn key(s: &str) -> DocKey {
    DocKey::parse(s).expect("key")
}

fn hh(i: usize) -> DocKey {
    key(&format!("{VILLAGE}/hh/h{i:05}"))
}

fn put(store: &mut MemStore, k: &DocKey, field: &str, v: i64) {
    store
        .edit(k, |tx| tx.put(ROOT, field, v).map(|_| ()))
        .map_err(|e: AutomergeError| e)
        .expect("edit");
}

/// Copies every document of `from` into `to` (same changes, so same heads).
fn copy_all(from: &MemStore, to: &mut MemStore) {
    for k in from.keys().cloned().collect::<Vec<_>>() {
        let changes = from.changes_since(&k, &[]).expect("changes");
        to.apply(&k, &changes).expect("apply");
    }
}

fn village_county() -> (NodeIdentity, NodeIdentity) {
    (
        ident(1, Role::Village, VILLAGE),
        ident(2, Role::County, COUNTY),
    )
}

fn configs(a: NodeIdentity, b: NodeIdentity) -> (SessionConfig, SessionConfig) {
    (SessionConfig::new(a, b), SessionConfig::new(b, a))
}

fn memory_of(r: &PairReport, side: usize) -> Option<PeerMemory> {
    match &r.outcome[side] {
        Some(Outcome::Converged(m)) => Some(*m),
        _ => None,
    }
}

/// Every document either side may share has the same heads on both.
fn assert_same_shared(a: &MemStore, b: &MemStore, shared: &SharedScope) {
    let keys: std::collections::BTreeSet<DocKey> = a
        .keys()
        .chain(b.keys())
        .filter(|k| shared.contains(k))
        .cloned()
        .collect();
    for k in keys {
        assert_eq!(a.heads_of(&k), b.heads_of(&k), "{k}");
    }
}

fn run(a: &mut MemStore, ca: SessionConfig, b: &mut MemStore, cb: SessionConfig) -> PairReport {
    let r = run_pair(a, ca, b, cb).expect("sessions start");
    assert_eq!(r.unencodable, [0, 0]);
    assert!(
        r.apply_errors.iter().all(Vec::is_empty),
        "{:?}",
        r.apply_errors
    );
    r
}

fn stores(n: usize) -> (MemStore, MemStore) {
    let mut a = MemStore::new(b"node-a");
    for i in 0..n {
        put(&mut a, &hh(i), "members", i as i64);
    }
    let mut b = MemStore::new(b"node-b");
    copy_all(&a, &mut b);
    (a, b)
}

#[test]
fn identical_stores_settle_in_one_flight_and_few_bytes() {
    let (mut a, mut b) = stores(300);
    let (va, cb) = village_county();
    let (ca, cbc) = configs(va, cb);
    let r = run(&mut a, ca, &mut b, cbc);
    assert!(r.converged());
    assert_eq!(r.flights, 1);
    assert_eq!(r.finished_after, [Some(1), Some(1)]);
    assert!(r.total_bytes() <= 512, "{} bytes", r.total_bytes());
    println!(
        "no change: {} flight(s), {} B total",
        r.flights,
        r.total_bytes()
    );
}

#[test]
fn one_sided_and_both_sided_differences_converge_cold() {
    for (extra_a, extra_b, edits_a, edits_b, estimate) in [
        (5usize, 0usize, 0usize, 0usize, None),
        (0, 7, 0, 0, None),
        (0, 0, 10, 0, Some(10)),
        (3, 4, 6, 6, Some(20)),
        (120, 0, 0, 0, None),
    ] {
        let (mut a, mut b) = stores(200);
        for i in 0..extra_a {
            put(&mut a, &hh(1000 + i), "members", 1);
        }
        for i in 0..extra_b {
            put(&mut b, &hh(2000 + i), "members", 2);
        }
        // Concurrent edits of the same documents on both sides.
        for i in 0..edits_a {
            put(&mut a, &hh(i), "phones", 1);
        }
        for i in 0..edits_b {
            put(&mut b, &hh(i), "tv", 1);
        }
        let (va, cb) = village_county();
        let (mut ca, mut cbc) = configs(va, cb);
        ca.estimate = estimate;
        cbc.estimate = estimate;
        let r = run(&mut a, ca, &mut b, cbc);
        assert!(r.converged(), "{:?}", r.outcome);
        assert_same_shared(&a, &b, &SharedScope::between(&va, &cb));
        assert_eq!(a.len(), b.len());
        println!(
            "cold a+{extra_a} b+{extra_b} edits {edits_a}/{edits_b} est {estimate:?}: \
             changes by flight {}, converged after {} flights, {} B, {} cells, {} diffs",
            r.last_apply_flight,
            r.flights,
            r.total_bytes(),
            r.stats[0].cells_sent + r.stats[1].cells_sent,
            r.stats[0].differences,
        );
        if estimate.is_some() {
            assert!(r.last_apply_flight <= 3, "{r:?}");
        } else if extra_a + extra_b + edits_a + edits_b < 40 {
            assert!(r.last_apply_flight <= 4, "{r:?}");
        }
    }
}

#[test]
fn warm_sessions_use_watermarks() {
    let (mut a, mut b) = stores(200);
    put(&mut a, &hh(1), "x", 1);
    let (va, cb) = village_county();
    let (ca, cbc) = configs(va, cb);
    let first = run(&mut a, ca.clone(), &mut b, cbc.clone());
    assert!(first.converged());
    let (ma, mb) = (memory_of(&first, 0), memory_of(&first, 1));
    assert!(ma.is_some() && mb.is_some());

    // Nothing changed: one flight.
    let (mut ca2, mut cb2) = (ca.clone(), cbc.clone());
    ca2.memory = ma;
    cb2.memory = mb;
    let r = run(&mut a, ca2.clone(), &mut b, cb2.clone());
    assert!(r.converged());
    assert_eq!(r.flights, 1);
    assert!(r.total_bytes() <= 512, "{}", r.total_bytes());

    // One-sided edit.
    put(&mut a, &hh(5), "x", 5);
    put(&mut a, &hh(6000), "x", 6);
    let r = run(&mut a, ca2.clone(), &mut b, cb2.clone());
    assert!(r.converged());
    assert_eq!(r.stats[0].mode, Mode::Watermark);
    assert_eq!(r.stats[0].cells_sent, 0);
    assert_same_shared(&a, &b, &SharedScope::between(&va, &cb));
    println!(
        "warm one-sided: changes by flight {}, converged after {} flights, {} B",
        r.last_apply_flight,
        r.flights,
        r.total_bytes()
    );
    assert_eq!(r.last_apply_flight, 3);
    assert!(r.flights <= 4);

    // Concurrent edits of one document, with fresh memories.
    let (mut ca3, mut cb3) = (ca.clone(), cbc.clone());
    ca3.memory = memory_of(&r, 0);
    cb3.memory = memory_of(&r, 1);
    put(&mut a, &hh(7), "a", 1);
    put(&mut b, &hh(7), "b", 1);
    let r = run(&mut a, ca3, &mut b, cb3);
    assert!(r.converged());
    assert_eq!(r.stats[0].mode, Mode::Watermark);
    assert_same_shared(&a, &b, &SharedScope::between(&va, &cb));
    println!(
        "warm concurrent: changes by flight {}, converged after {} flights, {} B",
        r.last_apply_flight,
        r.flights,
        r.total_bytes()
    );
    assert_eq!(r.last_apply_flight, 2);
    assert!(r.flights <= 3);
}

#[test]
fn stale_memory_falls_back_to_sketches() {
    let (mut a, mut b) = stores(50);
    let (va, cb) = village_county();
    let (ca, cbc) = configs(va, cb);
    let first = run(&mut a, ca.clone(), &mut b, cbc.clone());
    let mut ca2 = ca.clone();
    ca2.memory = memory_of(&first, 0);
    // B lost its memory of A (e.g. restored from an old backup): cold for both.
    put(&mut a, &hh(3), "x", 1);
    put(&mut b, &hh(4), "x", 1);
    let r = run(&mut a, ca2, &mut b, cbc.clone());
    assert!(r.converged());
    assert_eq!(r.stats[0].mode, Mode::Sketch);
    assert_same_shared(&a, &b, &SharedScope::between(&va, &cb));

    // A memory that claims more than the peer really saw: A's summary misses an edit, the
    // Done fingerprints differ, and a sketch round repairs it.
    let after = run(&mut a, ca.clone(), &mut b, cbc.clone());
    let mut ma = memory_of(&after, 0).expect("memory");
    let mb = memory_of(&after, 1).expect("memory");
    put(&mut a, &hh(8), "y", 1);
    ma.my_seq_seen += 1; // pretends B already saw the edit
    let mut cb2 = cbc.clone();
    cb2.memory = Some(PeerMemory {
        my_seq_seen: mb.my_seq_seen,
        peer_seq_seen: ma.my_seq_seen,
        scope_id: mb.scope_id,
    });
    let mut ca3 = ca.clone();
    ca3.memory = Some(ma);
    let r = run(&mut a, ca3, &mut b, cb2);
    assert!(r.converged(), "{:?}", r.outcome);
    assert_eq!(r.stats[0].rounds, 2, "repaired in a second round");
    assert_same_shared(&a, &b, &SharedScope::between(&va, &cb));
}

#[test]
fn hp_never_reaches_the_hub() {
    let county = ident(2, Role::County, COUNTY);
    let hub = ident(3, Role::Hub, "51");
    let mut c = MemStore::new(b"county");
    for i in 0..20 {
        put(&mut c, &hh(i), "m", 1);
        put(&mut c, &hh(i).with_kind(Kind::Hp), "phone", 1);
    }
    let mut h = MemStore::new(b"hub");
    let (cc, ch) = configs(county, hub);
    let r = run(&mut c, cc, &mut h, ch);
    assert!(r.converged());
    assert_eq!(h.len(), 20);
    assert!(h.keys().all(|k| k.kind() != Kind::Hp));

    // A hub that lists an hp document anyway gets it refused, and the session goes on.
    put(&mut c, &hh(0), "m", 2);
    let (cc, ch) = configs(county, hub);
    let mut s = Session::new(cc, &c).expect("session");
    while s.poll_outgoing().is_some() {}
    let mut hub_side = Session::new(ch, &h).expect("session");
    let hello = hub_side.poll_outgoing().expect("hello");
    s.handle(&c, hello).expect("hello accepted");
    while s.poll_outgoing().is_some() {}
    let hp = hh(0).with_kind(Kind::Hp);
    s.handle(
        &c,
        Frame::Summary {
            basis: SummaryBasis::Decoded,
            entries: vec![
                DocHeads {
                    key: hp.clone(),
                    heads: vec![],
                },
                DocHeads {
                    key: hh(1),
                    heads: h.heads_of(&hh(1)).expect("held"),
                },
            ],
        },
    )
    .expect("session continues");
    let out: Vec<Frame> = std::iter::from_fn(|| s.poll_outgoing()).collect();
    assert_eq!(
        out,
        vec![Frame::Refused {
            key: hp.clone(),
            reason: RefuseReason::NotForRole
        }]
    );
    assert!(!s.is_finished());

    // And a hub that wants one in a warm session gets a refusal, never its changes.
    let (mut cc, mut ch) = configs(county, hub);
    let first = run(&mut c, cc.clone(), &mut h, ch.clone());
    cc.memory = memory_of(&first, 0);
    ch.memory = memory_of(&first, 1);
    put(&mut c, &hh(2), "m", 3);
    let mut s = Session::new(cc, &c).expect("session");
    let mut hub_side = Session::new(ch, &h).expect("session");
    while s.poll_outgoing().is_some() {}
    let hello = hub_side.poll_outgoing().expect("hello");
    s.handle(&c, hello).expect("hello accepted");
    s.handle(
        &c,
        Frame::End {
            phase: Phase::WatermarkSummary,
        },
    )
    .expect("empty summary");
    while s.poll_outgoing().is_some() {}
    s.handle(
        &c,
        Frame::Want {
            entries: vec![DocHeads {
                key: hp.clone(),
                heads: vec![],
            }],
        },
    )
    .expect("session continues");
    let out: Vec<Frame> = std::iter::from_fn(|| s.poll_outgoing()).collect();
    assert_eq!(
        out,
        vec![Frame::Refused {
            key: hp,
            reason: RefuseReason::NotForRole
        }]
    );
    assert!(!s.is_finished());
}

#[test]
fn big_documents_are_split_across_frames() {
    let (va, cb) = village_county();
    let mut a = MemStore::new(b"a");
    let big = hh(1);
    // 64 KB of incompressible-ish text per change, 2.5 MB in all.
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut text = move || -> String {
        (0..8192)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                format!("{:08x}", x as u32)
            })
            .collect()
    };
    for i in 0..40 {
        let t = text();
        a.edit(&big, |tx| {
            tx.put(ROOT, format!("f{i}"), t.as_str()).map(|_| ())
        })
        .map_err(|e: AutomergeError| e)
        .expect("edit");
    }
    let mut b = MemStore::new(b"b");
    let (ca, cbc) = configs(va, cb);
    let r = run(&mut a, ca, &mut b, cbc);
    assert!(r.converged());
    assert_eq!(a.heads_of(&big), b.heads_of(&big));
    assert!(r.frames[0] >= 5, "{} frames", r.frames[0]);
    assert!(r.stats[0].docs_sent >= 2, "split over several frames");
}

#[test]
fn out_of_scope_documents_are_refused_per_document() {
    let (va, cb) = village_county();
    let mut v = MemStore::new(b"village");
    put(&mut v, &hh(1), "m", 1);
    let mut c = MemStore::new(b"county");
    put(&mut c, &hh(1), "m", 2);
    // The county holds a neighbouring village's household, which the village may not hold.
    let neighbour = key("510122104202/hh/n1");
    put(&mut c, &neighbour, "m", 3);
    let mut rogue = MemStore::new(b"rogue");
    put(&mut rogue, &neighbour, "m", 4);

    let (cv, cc) = configs(va, cb);
    let mut s = Session::new(cv, &v).expect("session");
    let mut county = Session::new(cc, &c).expect("session");
    while s.poll_outgoing().is_some() {}
    let hello = county.poll_outgoing().expect("hello");
    s.handle(&c, hello).expect("hello");
    while s.poll_outgoing().is_some() {}
    // A (buggy or hostile) county pushes the neighbour's household and lists it.
    let changes = rogue.changes_since(&neighbour, &[]).expect("changes");
    s.handle(
        &v,
        Frame::Changes {
            docs: vec![
                DocChanges {
                    key: neighbour.clone(),
                    changes,
                },
                DocChanges {
                    key: hh(1),
                    changes: c.changes_since(&hh(1), &[]).expect("changes"),
                },
            ],
        },
    )
    .expect("session continues");
    let out: Vec<Frame> = std::iter::from_fn(|| s.poll_outgoing()).collect();
    assert_eq!(
        out,
        vec![Frame::Refused {
            key: neighbour.clone(),
            reason: RefuseReason::OutOfScope
        }]
    );
    let events: Vec<Event> = std::iter::from_fn(|| s.poll_event()).collect();
    assert!(events.iter().any(|e| matches!(e,
        Event::Refused { key, by: RefusedBy::Us, .. } if *key == neighbour)));
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::Apply { key, .. } if *key == hh(1))));
    assert!(!events
        .iter()
        .any(|e| matches!(e, Event::Apply { key, .. } if *key == neighbour)));
    assert!(!s.is_finished());

    // And a full session never moves it.
    let (cv, cc) = configs(va, cb);
    let r = run(&mut v, cv, &mut c, cc);
    assert!(r.converged());
    assert!(v.doc(&neighbour).is_none());
    assert_eq!(v.heads_of(&hh(1)), c.heads_of(&hh(1)));
}

/// The other direction: a (hostile) village pushes a household of another village of its
/// county to the county. The county refuses it, never applies it (so the node stores nothing),
/// and keeps what the village may send.
#[test]
fn a_village_pushing_another_villages_document_is_refused() {
    let (va, cb) = village_county();
    let mut v = MemStore::new(b"village");
    put(&mut v, &hh(1), "m", 1);
    let c = MemStore::new(b"county");
    let neighbour = key("510122104202/hh/n1");
    let mut rogue = MemStore::new(b"rogue");
    put(&mut rogue, &neighbour, "m", 4);

    let (cv, cc) = configs(va, cb);
    let mut county = Session::new(cc, &c).expect("session");
    let mut village = Session::new(cv, &v).expect("session");
    while county.poll_outgoing().is_some() {}
    let hello = village.poll_outgoing().expect("hello");
    county.handle(&c, hello).expect("hello");
    while county.poll_outgoing().is_some() {}
    while county.poll_event().is_some() {}
    county
        .handle(
            &c,
            Frame::Changes {
                docs: vec![
                    DocChanges {
                        key: neighbour.clone(),
                        changes: rogue.changes_since(&neighbour, &[]).expect("changes"),
                    },
                    DocChanges {
                        key: hh(1),
                        changes: v.changes_since(&hh(1), &[]).expect("changes"),
                    },
                ],
            },
        )
        .expect("session continues");
    let out: Vec<Frame> = std::iter::from_fn(|| county.poll_outgoing()).collect();
    assert!(out.contains(&Frame::Refused {
        key: neighbour.clone(),
        reason: RefuseReason::OutOfScope
    }));
    let events: Vec<Event> = std::iter::from_fn(|| county.poll_event()).collect();
    assert!(events.iter().any(|e| matches!(e,
        Event::Refused { key, by: RefusedBy::Us, .. } if *key == neighbour)));
    assert!(!events
        .iter()
        .any(|e| matches!(e, Event::Apply { key, .. } if *key == neighbour)));
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::Apply { key, .. } if *key == hh(1))));
}

#[test]
fn content_flows_down_between_villages() {
    let a_id = ident(1, Role::Village, VILLAGE);
    let b_id = ident(4, Role::Village, "510122104202");
    let content = key("510000000000/content/c1");
    let mut a = MemStore::new(b"a");
    put(&mut a, &content, "title", 1);
    put(&mut a, &hh(1), "m", 1);
    let mut b = MemStore::new(b"b");
    put(&mut b, &key("510122104202/hh/x"), "m", 1);
    let (ca, cb) = configs(a_id, b_id);
    let r = run(&mut a, ca, &mut b, cb);
    assert!(r.converged());
    assert_eq!(b.heads_of(&content), a.heads_of(&content));
    assert!(b.doc(&hh(1)).is_none());
    assert!(a.doc(&key("510122104202/hh/x")).is_none());
}

#[test]
fn identity_mismatch_fails_the_session() {
    let (va, cb) = village_county();
    let (mut a, _) = stores(3);
    let impostor = ident(9, Role::County, COUNTY);
    let mut s = Session::new(SessionConfig::new(va, cb), &a).expect("session");
    let other = Session::new(SessionConfig::new(impostor, va), &a);
    let mut other = other.expect("session");
    let hello = other.poll_outgoing().expect("hello");
    let err = s.handle(&a, hello).expect_err("identity");
    assert_eq!(err, SessionError::Identity);
    assert!(s.is_finished());
    let events: Vec<Event> = std::iter::from_fn(|| s.poll_event()).collect();
    assert!(matches!(events.last(), Some(Event::Failed { .. })));
    let out: Vec<Frame> = std::iter::from_fn(|| s.poll_outgoing()).collect();
    assert!(matches!(
        out.last(),
        Some(Frame::Error {
            code: ErrorCode::Identity,
            ..
        })
    ));
    // Frames after the end are ignored.
    put(&mut a, &hh(0), "z", 1);
    assert!(s
        .handle(
            &a,
            Frame::End {
                phase: Phase::Answers
            }
        )
        .is_ok());
}

#[test]
fn large_differences_need_several_batches_but_converge() {
    let (mut a, mut b) = stores(100);
    for i in 0..400 {
        put(&mut a, &hh(3000 + i), "m", 1);
    }
    for i in 0..100 {
        put(&mut b, &hh(i), "edit", 1);
    }
    let (va, cb) = village_county();
    let (ca, cbc) = configs(va, cb);
    let r = run(&mut a, ca, &mut b, cbc);
    assert!(r.converged());
    assert_same_shared(&a, &b, &SharedScope::between(&va, &cb));
    println!(
        "cold, 400 new + 100 edited: {} flights, {} B, {} cells",
        r.flights,
        r.total_bytes(),
        r.stats[0].cells_sent + r.stats[1].cells_sent
    );
}

/// A store of many index entries without Automerge documents: each document is a version
/// number, its one head the hash of (key, version). For measuring reconciliation CPU.
struct IndexStore {
    docs: BTreeMap<DocKey, u32>,
    /// The index, as a real store keeps it (rebuilt after applying).
    index: Vec<(DocKey, HeadsDigest)>,
}

fn fake_head(k: &DocKey, v: u32) -> ChangeHash {
    let mut h = blake3::Hasher::new();
    h.update(k.to_string().as_bytes());
    h.update(&v.to_be_bytes());
    ChangeHash(*h.finalize().as_bytes())
}

impl SyncStore for IndexStore {
    fn seq(&self) -> u64 {
        0
    }
    fn entries(&self, scope: &SharedScope) -> Result<Vec<(DocKey, HeadsDigest)>, StoreError> {
        Ok(self
            .index
            .iter()
            .filter(|(k, _)| scope.contains(k))
            .cloned()
            .collect())
    }
    fn entries_since(
        &self,
        _: &SharedScope,
        _: u64,
    ) -> Result<Option<Vec<(DocKey, HeadsDigest)>>, StoreError> {
        Ok(None)
    }
    fn heads(&self, key: &DocKey) -> Result<Option<Vec<ChangeHash>>, StoreError> {
        Ok(self.docs.get(key).map(|v| vec![fake_head(key, *v)]))
    }
    fn changes_since(
        &self,
        key: &DocKey,
        theirs: &[ChangeHash],
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        Ok(match self.docs.get(key) {
            Some(v) if !theirs.contains(&fake_head(key, *v)) => vec![v.to_be_bytes().to_vec()],
            _ => Vec::new(),
        })
    }
    fn has_all(&self, key: &DocKey, hashes: &[ChangeHash]) -> Result<bool, StoreError> {
        let mine = self.docs.get(key).map(|v| fake_head(key, *v));
        Ok(hashes.iter().all(|h| Some(*h) == mine))
    }
    fn compare(&self, key: &DocKey, theirs: &[ChangeHash]) -> Result<DocCompare, StoreError> {
        let my_heads = self.heads(key)?;
        Ok(DocCompare {
            they_lack: self.changes_since(key, theirs)?,
            i_lack: !self.has_all(key, theirs)?,
            my_heads,
        })
    }
}

impl IndexStore {
    fn new(docs: BTreeMap<DocKey, u32>) -> IndexStore {
        let mut s = IndexStore {
            docs,
            index: Vec::new(),
        };
        s.reindex();
        s
    }

    fn reindex(&mut self) {
        self.index = self
            .docs
            .iter()
            .map(|(k, v)| (k.clone(), heads_digest(&[fake_head(k, *v)])))
            .collect();
    }

    fn apply(&mut self, key: &DocKey, changes: &[Vec<u8>]) {
        for c in changes {
            let mut b = [0u8; 4];
            if c.len() == 4 {
                b.copy_from_slice(c);
            }
            let v = u32::from_be_bytes(b);
            let e = self.docs.entry(key.clone()).or_insert(0);
            *e = (*e).max(v);
        }
    }
}

/// Reconciling two 50,000-entry indexes that differ in 100 documents, CPU only.
#[test]
fn fifty_thousand_entries_reconcile_quickly() {
    let n = 50_000;
    let base: BTreeMap<DocKey, u32> = (0..n).map(|i| (hh(i), 1)).collect();
    let (mut da, mut db) = (base.clone(), base);
    for i in 0..50 {
        da.insert(hh(i * 997 % n), 2);
        db.insert(hh((i * 991 + 7) % n), 3);
    }
    let mut a = IndexStore::new(da);
    let mut b = IndexStore::new(db);
    let (va, cb) = village_county();
    let start = Instant::now();
    let mut sa = Session::new(SessionConfig::new(va, cb), &a).expect("a");
    let mut sb = Session::new(SessionConfig::new(cb, va), &b).expect("b");
    let setup = start.elapsed();
    let mut flights = 0;
    let mut bytes = 0usize;
    loop {
        let fa: Vec<Frame> = std::iter::from_fn(|| sa.poll_outgoing()).collect();
        let fb: Vec<Frame> = std::iter::from_fn(|| sb.poll_outgoing()).collect();
        if fa.is_empty() && fb.is_empty() {
            break;
        }
        flights += 1;
        assert!(flights < 50);
        for f in fa {
            bytes += wire::encoded_len(&f);
            let _ = sb.handle(&b, f);
            while let Some(e) = sb.poll_event() {
                if let Event::Apply { key, changes } = e {
                    b.apply(&key, &changes);
                }
            }
        }
        for f in fb {
            bytes += wire::encoded_len(&f);
            let _ = sa.handle(&a, f);
            while let Some(e) = sa.poll_event() {
                if let Event::Apply { key, changes } = e {
                    a.apply(&key, &changes);
                }
            }
        }
    }
    let elapsed = start.elapsed();
    assert!(
        matches!(sa.outcome(), Some(Outcome::Converged(_))),
        "{:?}",
        sa.outcome()
    );
    assert!(matches!(sb.outcome(), Some(Outcome::Converged(_))));
    assert_eq!(a.docs, b.docs);
    println!(
        "50k entries, 100 differing: {:.1} ms CPU for both sides ({:.1} ms of it starting the \
         two sessions), {flights} flights, {bytes} B, {} cells each way",
        elapsed.as_secs_f64() * 1000.0,
        setup.as_secs_f64() * 1000.0,
        sa.stats().cells_sent
    );
    if cfg!(not(debug_assertions)) {
        assert!(elapsed.as_millis() < 200, "{elapsed:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Whatever frames arrive, in whatever order, a session never panics and never emits a
    /// document outside the shared scope.
    #[test]
    fn arbitrary_frames_never_panic(frames in proptest::collection::vec(arb_frame(), 0..12)) {
        let (va, cb) = village_county();
        let (a, b) = stores(5);
        let mut s = Session::new(SessionConfig::new(va, cb), &a).expect("session");
        let mut other = Session::new(SessionConfig::new(cb, va), &b).expect("session");
        let hello = other.poll_outgoing().expect("hello");
        let shared = SharedScope::between(&va, &cb);
        for (i, f) in std::iter::once(hello).chain(frames).enumerate() {
            let _ = s.handle(&a, f);
            while let Some(e) = s.poll_event() {
                if let Event::Apply { key, .. } = e {
                    prop_assert!(shared.contains(&key), "frame {}: {}", i, key);
                }
            }
            while let Some(f) = s.poll_outgoing() {
                prop_assert!(wire::encode(&f).is_ok());
                if let Frame::Changes { docs } = &f {
                    for d in docs {
                        prop_assert!(shared.contains(&d.key));
                    }
                }
            }
        }
    }
}

#[test]
fn no_change_session_after_a_sync_lists_nothing() {
    let (mut a, mut b) = stores(300);
    let (va, cb) = village_county();
    let (ca, cbc) = configs(va, cb);
    let first = run(&mut a, ca.clone(), &mut b, cbc.clone());
    assert!(first.converged());
    // Changes on both sides, synced warm: each side applies the other's changes.
    for i in 0..40 {
        put(&mut a, &hh(i), "a", 1);
        put(&mut b, &hh(100 + i), "b", 1);
    }
    let (mut ca2, mut cb2) = (ca.clone(), cbc.clone());
    ca2.memory = memory_of(&first, 0);
    cb2.memory = memory_of(&first, 1);
    let r = run(&mut a, ca2, &mut b, cb2);
    assert!(r.converged());
    assert_eq!(r.stats[0].mode, Mode::Watermark);
    // The next session, with nothing changed, must not re-list what was just received.
    let (mut ca3, mut cb3) = (ca.clone(), cbc.clone());
    ca3.memory = memory_of(&r, 0);
    cb3.memory = memory_of(&r, 1);
    let r = run(&mut a, ca3.clone(), &mut b, cb3.clone());
    assert!(r.converged());
    assert_eq!(r.flights, 1);
    assert!(r.total_bytes() <= 512, "{} B", r.total_bytes());
    // And an edit after it is still found warm.
    ca3.memory = memory_of(&r, 0);
    cb3.memory = memory_of(&r, 1);
    put(&mut b, &hh(7), "late", 1);
    let r = run(&mut a, ca3, &mut b, cb3);
    assert!(r.converged());
    assert_eq!(r.stats[0].mode, Mode::Watermark);
    assert_eq!(r.stats[0].rounds, 1);
    assert_same_shared(&a, &b, &SharedScope::between(&va, &cb));
}

#[test]
fn cold_four_hundred_differences_need_no_more_cells() {
    // 210 documents edited on one side: 420 symbol differences, equal document counts, and
    // no estimate from either side.
    let (mut a, mut b) = stores(2000);
    for i in 0..210 {
        put(&mut a, &hh(i * 7), "edit", 1);
    }
    let (va, cb) = village_county();
    let (ca, cbc) = configs(va, cb);
    let r = run(&mut a, ca, &mut b, cbc);
    assert!(r.converged(), "{:?}", r.outcome);
    assert_same_shared(&a, &b, &SharedScope::between(&va, &cb));
    assert_eq!(r.stats[0].differences, 420);
    // One batch each way, no MoreCells round.
    let batch = first_batch(COLD_DEFAULT_ESTIMATE, MAX_SESSION_CELLS);
    assert!(batch >= 512);
    assert_eq!(r.stats[0].cells_sent, r.stats[1].cells_received);
    assert_eq!(r.stats[0].cells_sent, batch, "{:?}", r.stats);
    assert_eq!(r.stats[1].cells_sent, batch, "{:?}", r.stats);
    assert!(r.last_apply_flight <= 4, "{}", r.last_apply_flight);
}

/// Bytes of the changes `store` holds for `keys` beyond `before` (heads per key).
fn new_change_bytes(store: &MemStore, before: &BTreeMap<DocKey, Vec<ChangeHash>>) -> u64 {
    before
        .iter()
        .map(|(k, h)| {
            store
                .changes_since(k, h)
                .expect("changes")
                .iter()
                .map(|c| c.len() as u64)
                .sum::<u64>()
        })
        .sum()
}

#[test]
fn long_histories_are_not_resent() {
    // 40 documents with 60 changes each, held by both.
    let mut a = MemStore::new(b"node-a");
    for i in 0..40 {
        for v in 0..60 {
            put(&mut a, &hh(i), "members", v);
        }
    }
    let mut b = MemStore::new(b"node-b");
    copy_all(&a, &mut b);
    let (va, cb) = village_county();
    let (ca, cbc) = configs(va, cb);
    let first = run(&mut a, ca.clone(), &mut b, cbc.clone());
    assert!(first.converged());
    let shared = SharedScope::between(&va, &cb);
    let heads = |s: &MemStore| -> BTreeMap<DocKey, Vec<ChangeHash>> {
        s.keys()
            .map(|k| (k.clone(), s.heads_of(k).expect("held")))
            .collect()
    };
    let mut memory = (memory_of(&first, 0), memory_of(&first, 1));
    let mut cold = (ca.clone(), cbc.clone());
    type Edit = fn(&mut MemStore, &mut MemStore);
    let cases: [(&str, bool, Edit); 4] = [
        ("warm one-sided", true, |a, _| {
            for i in 0..10 {
                put(a, &hh(i), "x", 1);
                put(a, &hh(i), "y", 2);
            }
        }),
        ("warm concurrent", true, |a, b| {
            for i in 10..20 {
                put(a, &hh(i), "a", 1);
                put(b, &hh(i), "b", 1);
            }
        }),
        ("cold one-sided", false, |a, _| {
            for i in 20..30 {
                put(a, &hh(i), "x", 1);
            }
        }),
        ("cold concurrent", false, |a, b| {
            for i in 30..40 {
                put(a, &hh(i), "a", 1);
                put(b, &hh(i), "b", 1);
            }
        }),
    ];
    for (name, warm, edit) in cases {
        let (ha, hb) = (heads(&a), heads(&b));
        edit(&mut a, &mut b);
        let change_bytes = new_change_bytes(&a, &ha) + new_change_bytes(&b, &hb);
        let (mut c1, mut c2) = (cold.0.clone(), cold.1.clone());
        if warm {
            c1.memory = memory.0;
            c2.memory = memory.1;
        }
        let r = run(&mut a, c1, &mut b, c2);
        assert!(r.converged(), "{name}: {:?}", r.outcome);
        assert_eq!(
            r.stats[0].mode,
            if warm { Mode::Watermark } else { Mode::Sketch }
        );
        assert_eq!(r.stats[0].rounds, 1, "{name}");
        assert_same_shared(&a, &b, &shared);
        let sketch = 28 * (r.stats[0].cells_sent + r.stats[1].cells_sent);
        println!(
            "{name}: {} B ({} B of sketch), {} B of new changes",
            r.total_bytes(),
            sketch,
            change_bytes
        );
        assert!(
            r.total_bytes() - sketch <= 2 * change_bytes + 2048,
            "{name}: {} B ({} B of sketch) for {} B of changes",
            r.total_bytes(),
            sketch,
            change_bytes
        );
        memory = (memory_of(&r, 0), memory_of(&r, 1));
        cold = (ca.clone(), cbc.clone());
    }
}

/// Runs two sessions frame by frame (no wire), calling `during` once after the first flight.
fn run_with_edit_during(
    a: &mut MemStore,
    ca: SessionConfig,
    b: &mut MemStore,
    cb: SessionConfig,
    during: impl FnOnce(&mut MemStore),
) -> [Option<Outcome>; 2] {
    let mut sa = Session::new(ca, &*a).expect("start a");
    let mut sb = Session::new(cb, &*b).expect("start b");
    let mut during = Some(during);
    for flight in 0..50 {
        let to_b: Vec<Frame> = std::iter::from_fn(|| sa.poll_outgoing()).collect();
        let to_a: Vec<Frame> = std::iter::from_fn(|| sb.poll_outgoing()).collect();
        if to_a.is_empty() && to_b.is_empty() {
            break;
        }
        for (s, store, frames) in [(&mut sa, &mut *a, to_a), (&mut sb, &mut *b, to_b)] {
            for f in frames {
                let _ = s.handle(&*store, f);
                while let Some(ev) = s.poll_event() {
                    store.apply_event(&ev).expect("apply");
                }
            }
        }
        if flight == 0 {
            if let Some(f) = during.take() {
                f(a);
            }
        }
    }
    [sa.outcome().cloned(), sb.outcome().cloned()]
}

#[test]
fn an_edit_during_a_session_is_listed_by_the_next_one() {
    let (mut a, mut b) = stores(100);
    let (va, cb) = village_county();
    let (ca, cbc) = configs(va, cb);
    let first = run(&mut a, ca.clone(), &mut b, cbc.clone());
    let memory = |o: &[Option<Outcome>; 2], i: usize| match &o[i] {
        Some(Outcome::Converged(m)) => Some(*m),
        other => panic!("not converged: {other:?}"),
    };
    // B changed a document; while the session runs, A edits another one locally.
    put(&mut b, &hh(1), "b", 1);
    let (mut c1, mut c2) = (ca.clone(), cbc.clone());
    c1.memory = memory_of(&first, 0);
    c2.memory = memory_of(&first, 1);
    let out = run_with_edit_during(&mut a, c1, &mut b, c2, |a| put(a, &hh(50), "a", 1));
    let (ma, mb) = (memory(&out, 0), memory(&out, 1));
    assert_ne!(a.heads_of(&hh(50)), b.heads_of(&hh(50)));
    // The next warm session still lists A's edit and converges in one round.
    let (mut c1, mut c2) = (ca.clone(), cbc.clone());
    c1.memory = ma;
    c2.memory = mb;
    let r = run(&mut a, c1, &mut b, c2);
    assert!(r.converged(), "{:?}", r.outcome);
    assert_eq!(r.stats[0].mode, Mode::Watermark);
    assert_eq!(r.stats[0].rounds, 1);
    assert_same_shared(&a, &b, &SharedScope::between(&va, &cb));
}
