//! The hub store's change feed under concurrent commits: a reader polling
//! [`HubStore::changes_since`] while many writers commit must, in the end, have seen every
//! document's final state — no commit skipped — also when a writer that got a *lower*
//! transaction id commits *after* writers with higher ids were already read.
//!
//! PostgreSQL: "long" writers are made to hold their transaction open after it has written
//! (and so has its transaction id): each writes two new documents `…/long-a-N` and
//! `…/long-z-N` in one apply, and a `psql` session holds an uncommitted insert of `long-z-N`,
//! so the apply inserts `long-a-N` and then waits on the primary key until that session rolls
//! back 0.3–0.6 s later. Meanwhile "short" writers create and update documents as fast as
//! they can. A second, naive reader uses "highest position seen + 1" as its watermark — what
//! a plain sequence would give — and the test requires that it *did* miss documents: proof
//! that the race happened, and that the store's watermark (the snapshot's xmin) is what
//! prevents the skips.
//!
//! sled: the same short writers and readers (one process; positions in flight).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use automerge::transaction::Transactable;
use automerge::{Automerge, ROOT};
use cunyun_hub::store::postgres::PgHubStore;
use cunyun_hub::store::{
    self, FeedPos, HubStore, HubStoreConfig, HubWrite, Limits, PostgresConfig,
};
use cunyun_protocol::area::AreaScope;
use cunyun_protocol::digest::HeadsDigest;
use cunyun_protocol::key::DocKey;
use cunyun_tests::postgres::PgServer;
use rand::Rng;

const AREA: &str = "511424104201";

fn key(id: &str) -> DocKey {
    DocKey::parse(&format!("{AREA}/hh/{id}")).expect("test key")
}

fn new_doc(value: &str) -> Automerge {
    let mut doc = Automerge::new();
    let mut tx = doc.transaction();
    tx.put(ROOT, "v", value).expect("put");
    tx.commit();
    doc
}

fn change(doc: &mut Automerge, value: &str) -> Vec<u8> {
    let before = doc.get_heads();
    let mut tx = doc.transaction();
    tx.put(ROOT, "v", value).expect("put");
    tx.commit();
    doc.save_after(&before)
}

/// What one reader saw.
#[derive(Default)]
struct Seen {
    pairs: BTreeSet<(DocKey, HeadsDigest)>,
    polls: u64,
    rows: u64,
}

/// Polls the feed until `stop`, then once more. `naive`: the watermark is the highest position
/// seen + 1 instead of the store's `next`.
fn read_feed(store: &dyn HubStore, stop: &AtomicBool, naive: bool) -> anyhow::Result<Seen> {
    let mut seen = Seen::default();
    let mut w = FeedPos::START;
    loop {
        let last = stop.load(Ordering::SeqCst);
        let page = store.changes_since(w)?;
        seen.polls += 1;
        seen.rows += page.rows.len() as u64;
        let highest = page.rows.iter().map(|r| r.pos).max();
        for r in page.rows {
            seen.pairs.insert((r.key, r.digest));
        }
        w = if naive {
            highest.map_or(w, |p| FeedPos(p.0 + 1))
        } else {
            page.next
        };
        if last {
            return Ok(seen);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Creates and updates documents `short-<t>-<i>` until `stop`; returns how many applies.
fn short_writer(store: &dyn HubStore, t: usize, stop: &AtomicBool) -> anyhow::Result<u64> {
    let mut rng = rand::thread_rng();
    let mut docs: Vec<(DocKey, Automerge)> = Vec::new();
    let mut applies = 0;
    while !stop.load(Ordering::SeqCst) {
        if docs.is_empty() || rng.gen_bool(0.5) {
            let k = key(&format!("short-{t}-{}", docs.len()));
            let d = new_doc("0");
            store.apply(
                vec![HubWrite {
                    key: k.clone(),
                    chunk: d.save(),
                }],
                vec![],
            )?;
            docs.push((k, d));
        } else {
            let i = rng.gen_range(0..docs.len());
            let (k, d) = &mut docs[i];
            let c = change(d, &applies.to_string());
            store.apply(
                vec![HubWrite {
                    key: k.clone(),
                    chunk: c,
                }],
                vec![],
            )?;
        }
        applies += 1;
    }
    Ok(applies)
}

/// Checks that the correct reader saw every document's final digest; returns how many the
/// naive reader missed.
fn check(store: &dyn HubStore, correct: &Seen, naive: &Seen) -> anyhow::Result<usize> {
    let finals = store.entries(&AreaScope::parse(AREA)?, None)?;
    let mut missed = Vec::new();
    let mut naive_missed = 0;
    for (k, e) in &finals {
        let pair = (k.clone(), e.digest);
        if !correct.pairs.contains(&pair) {
            missed.push(k.to_string());
        }
        if !naive.pairs.contains(&pair) {
            naive_missed += 1;
        }
    }
    eprintln!(
        "{:?}: {} documents; feed reader: {} polls, {} rows (repeats allowed), missed {}; naive reader missed {}",
        store.backend(),
        finals.len(),
        correct.polls,
        correct.rows,
        missed.len(),
        naive_missed
    );
    assert!(
        missed.is_empty(),
        "the feed skipped committed documents: {missed:?}"
    );
    Ok(naive_missed)
}

#[test]
fn postgres_feed_skips_no_commit_under_interleaved_long_and_short_transactions(
) -> anyhow::Result<()> {
    let started = Instant::now();
    let pg = PgServer::start()?;
    let url = pg.create_database("feed")?;
    let mut cfg = PostgresConfig::with_url(url);
    cfg.pool_size = 32;
    let store: Arc<dyn HubStore> = Arc::new(PgHubStore::open(&cfg, Limits::default())?);
    let stop = AtomicBool::new(false);
    let writers_done = AtomicBool::new(false);
    let run_for = Duration::from_secs(4);

    let (correct, naive, short, long) = std::thread::scope(|s| -> anyhow::Result<_> {
        let correct = s.spawn(|| read_feed(store.as_ref(), &writers_done, false));
        let naive = s.spawn(|| read_feed(store.as_ref(), &writers_done, true));
        let shorts: Vec<_> = (0..4)
            .map(|t| {
                let store = Arc::clone(&store);
                let stop = &stop;
                s.spawn(move || short_writer(store.as_ref(), t, stop))
            })
            .collect();
        let longs: Vec<_> = (0..3)
            .map(|t| {
                let store = Arc::clone(&store);
                let (stop, pg) = (&stop, &pg);
                s.spawn(move || -> anyhow::Result<BTreeMap<DocKey, HeadsDigest>> {
                    let mut rng = rand::thread_rng();
                    let mut written = BTreeMap::new();
                    let mut n = 0;
                    while !stop.load(Ordering::SeqCst) {
                        let (a, z) = (key(&format!("long-a-{t}-{n}")), key(&format!("long-z-{t}-{n}")));
                        let hold = rng.gen_range(0.3..0.6);
                        let blocker = format!(
                            "BEGIN; INSERT INTO documents (key, area, kind, digest, updated_at_ms, body, bytes) \
                             VALUES ('{z}', '{AREA}', 'hh', decode(repeat('00', 16), 'hex'), 0, decode('00', 'hex'), 1); \
                             SELECT pg_sleep({hold:.3}); ROLLBACK;"
                        );
                        std::thread::scope(|inner| -> anyhow::Result<()> {
                            let held = inner.spawn(|| pg.psql("feed", &blocker));
                            std::thread::sleep(Duration::from_millis(150));
                            let applied = store.apply(
                                vec![
                                    HubWrite { key: a.clone(), chunk: new_doc("a").save() },
                                    HubWrite { key: z.clone(), chunk: new_doc("z").save() },
                                ],
                                vec![],
                            )?;
                            for ap in applied {
                                written.insert(ap.key, ap.digest);
                            }
                            held.join().map_err(|_| anyhow::anyhow!("blocker panicked"))??;
                            Ok(())
                        })?;
                        n += 1;
                    }
                    Ok(written)
                })
            })
            .collect();
        std::thread::sleep(run_for);
        stop.store(true, Ordering::SeqCst);
        let mut short = 0;
        for w in shorts {
            short += w.join().map_err(|_| anyhow::anyhow!("writer panicked"))??;
        }
        let mut long = BTreeMap::new();
        for w in longs {
            long.extend(w.join().map_err(|_| anyhow::anyhow!("writer panicked"))??);
        }
        writers_done.store(true, Ordering::SeqCst);
        let correct = correct
            .join()
            .map_err(|_| anyhow::anyhow!("reader panicked"))??;
        let naive = naive
            .join()
            .map_err(|_| anyhow::anyhow!("reader panicked"))??;
        Ok((correct, naive, short, long))
    })?;

    eprintln!("short applies: {short}; long applies: {}", long.len() / 2);
    assert!(
        short > 50 && long.len() >= 6,
        "the writers ran: {short} short, {} long",
        long.len()
    );
    for (k, d) in &long {
        assert!(
            correct.pairs.contains(&(k.clone(), *d)),
            "long write {k} not seen"
        );
    }
    let naive_missed = check(store.as_ref(), &correct, &naive)?;
    assert!(
        naive_missed > 0,
        "a highest-seen watermark should have skipped the long transactions' rows; the race did not happen"
    );
    eprintln!("done in {:?}", started.elapsed());
    Ok(())
}

#[test]
fn sled_feed_skips_no_commit_under_concurrent_writers() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = store::open(&HubStoreConfig::default(), dir.path())?;
    let stop = AtomicBool::new(false);
    let writers_done = AtomicBool::new(false);
    let (correct, naive) = std::thread::scope(|s| -> anyhow::Result<_> {
        let correct = s.spawn(|| read_feed(store.as_ref(), &writers_done, false));
        let naive = s.spawn(|| read_feed(store.as_ref(), &writers_done, true));
        let writers: Vec<_> = (0..4)
            .map(|t| {
                let (store, stop) = (&store, &stop);
                s.spawn(move || short_writer(store.as_ref(), t, stop))
            })
            .collect();
        std::thread::sleep(Duration::from_secs(2));
        stop.store(true, Ordering::SeqCst);
        let mut applies = 0;
        for w in writers {
            applies += w.join().map_err(|_| anyhow::anyhow!("writer panicked"))??;
        }
        assert!(applies > 50, "the writers ran: {applies}");
        writers_done.store(true, Ordering::SeqCst);
        let correct = correct
            .join()
            .map_err(|_| anyhow::anyhow!("reader panicked"))??;
        let naive = naive
            .join()
            .map_err(|_| anyhow::anyhow!("reader panicked"))??;
        Ok((correct, naive))
    })?;
    check(store.as_ref(), &correct, &naive)?;
    Ok(())
}
