//! Benchmark `store`: durable saves, burst throughput, open time, RSS and disk use.
//!
//! Every save is a real automerge edit of a sample household ([`cunyun_node::sample`]) made
//! the way the node makes it (`write_to` the typed view, `save_incremental`), committed with
//! [`DocStore::commit`], which returns once the write is durable. Metrics:
//!
//! - `save_p99_ms`: 100 household saves per second for 10 s, one at a time on a schedule;
//!   latency is measured from each save's scheduled start (so a slow save also counts against
//!   the ones queued behind it).
//! - `burst_saves_per_s`: 48 threads saving their own households as fast as they can, about
//!   5,000 saves in all.
//! - `disk_bytes_per_household`: a store of 50,000 households (`hh` and the smaller `hp`
//!   document each), 10 edits per household, committed in village batches, then compacted,
//!   closed and vacuumed ([`DocStore::vacuum`]; the node does this at open once the files
//!   have grown to several times the data); the store directory's size divided by 50,000. The
//!   size before the vacuum is printed too.
//! - `open_ms` and `open_rss_mb`: a fresh child process (this binary again, told by an
//!   environment variable) opens that store, loads one household and scans its village; the
//!   time from before the open to the end of the scan, and the child's RSS after it. The
//!   median of three children. The page cache is warm (the store was just written).
//!
//! `CUNYUN_BENCH_HOUSEHOLDS` scales the big store down for quick runs; `CUNYUN_BENCH_STORE_DIR`
//! keeps the stores for inspection.

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use automerge::AutoCommit;
use cunyun_node::sample::{sample_edit, sample_village, SampleHousehold};
use cunyun_platform::store::{DocStore, DocWrite, StoreConfig};
use cunyun_protocol::area::{AreaCode, AreaScope};
use cunyun_protocol::household::{HouseholdPrivate, HouseholdProfile};
use cunyun_protocol::key::{DocKey, Kind};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{dir_bytes, emit, progress, quantile, rss_mb};

const BENCH: &str = "store";
/// Set in the child process that measures the open: the store directory.
const OPEN_DIR_ENV: &str = "CUNYUN_BENCH_STORE_OPEN_DIR";
/// The household key the child loads.
const OPEN_KEY_ENV: &str = "CUNYUN_BENCH_STORE_OPEN_KEY";
/// The scope the child scans.
const OPEN_SCOPE_ENV: &str = "CUNYUN_BENCH_STORE_OPEN_SCOPE";
/// Prefix of the child's one result line.
const OPEN_RESULT: &str = "OPEN_RESULT ";

const STEADY_RATE_PER_S: u64 = 100;
const STEADY_SECS: u64 = 10;
const BURST_THREADS: usize = 48;
const BURST_SAVES: usize = 5_000;
const BIG_HOUSEHOLDS: usize = 50_000;
const BIG_EDITS: usize = 10;
const HOUSEHOLDS_PER_VILLAGE: usize = 200;

/// A household as the node holds it while editing: both typed views and both documents.
struct Household {
    hh_key: DocKey,
    hp_key: DocKey,
    profile: HouseholdProfile,
    private: HouseholdPrivate,
    hh: AutoCommit,
    hp: AutoCommit,
    clock_ms: u64,
}

/// The write for everything changed in `doc` since its last save, if anything changed.
fn write_of(key: &DocKey, doc: &mut AutoCommit, clock_ms: u64) -> Option<DocWrite> {
    let chunk = doc.save_incremental();
    if chunk.is_empty() {
        return None;
    }
    Some(DocWrite {
        key: key.clone(),
        chunk,
        heads: doc.get_heads(),
        updated_at_ms: clock_ms,
    })
}

impl Household {
    /// Creates both documents; returns the household and its two first writes.
    fn create(sample: SampleHousehold, village: AreaCode) -> Result<(Household, Vec<DocWrite>)> {
        let hh_key = DocKey::new(village, Kind::Hh, sample.id.clone())?;
        let hp_key = hh_key.with_kind(Kind::Hp);
        let mut h = Household {
            hh_key,
            hp_key,
            profile: sample.profile,
            private: sample.private,
            hh: AutoCommit::new(),
            hp: AutoCommit::new(),
            clock_ms: 1_760_000_000_000,
        };
        h.profile.write_to(&mut h.hh)?;
        h.private.write_to(&mut h.hp)?;
        let writes = [
            write_of(&h.hh_key, &mut h.hh, h.clock_ms),
            write_of(&h.hp_key, &mut h.hp, h.clock_ms),
        ];
        Ok((h, writes.into_iter().flatten().collect()))
    }

    /// A revisit: one or two profile changes; `private_too` also updates the phone and notes.
    fn edit(&mut self, rng: &mut StdRng, private_too: bool) -> Result<Vec<DocWrite>> {
        self.clock_ms += 60_000;
        let mut writes = Vec::with_capacity(2);
        for _ in 0..8 {
            sample_edit(&mut self.profile, rng);
            self.profile.write_to(&mut self.hh)?;
            if let Some(w) = write_of(&self.hh_key, &mut self.hh, self.clock_ms) {
                writes.push(w);
                break;
            }
        }
        if private_too {
            self.private.phone = format!("13{:09}", rng.gen_range(0..1_000_000_000u64));
            self.private.notes = format!("第{}次走访：电话已更新。", self.clock_ms / 60_000 % 1000);
            self.private.write_to(&mut self.hp)?;
            writes.extend(write_of(&self.hp_key, &mut self.hp, self.clock_ms));
        }
        Ok(writes)
    }
}

/// The `index`-th of 250 village codes in one county (5 townships × 50 villages).
fn village(index: usize) -> Result<AreaCode> {
    let township = 101 + index / 50;
    let village = 201 + index % 50;
    Ok(AreaCode::parse(&format!(
        "510122{township:03}{village:03}"
    ))?)
}

/// Creates `n` households of village `v` and commits their first writes.
fn create_village(store: &DocStore, v: usize, n: usize, seed: u64) -> Result<Vec<Household>> {
    let code = village(v)?;
    let mut households = Vec::with_capacity(n);
    let mut writes = Vec::with_capacity(2 * n);
    for sample in sample_village(code, n, seed) {
        let (h, w) = Household::create(sample, code)?;
        households.push(h);
        writes.extend(w);
    }
    store.commit(writes)?;
    Ok(households)
}

fn config() -> StoreConfig {
    StoreConfig::default()
}

/// Steady 100 saves/s; returns the p99 latency in ms.
fn steady(base: &Path) -> Result<f64> {
    let store = DocStore::open(&base.join("steady"), config())?;
    let mut households = create_village(&store, 0, HOUSEHOLDS_PER_VILLAGE, 1)?;
    let mut rng = StdRng::seed_from_u64(2);
    let n = STEADY_RATE_PER_S * STEADY_SECS;
    let period = Duration::from_nanos(1_000_000_000 / STEADY_RATE_PER_S);
    let mut latencies = Vec::with_capacity(n as usize);
    progress(
        BENCH,
        &format!("steady: {n} saves at {STEADY_RATE_PER_S}/s"),
    );
    let start = Instant::now();
    for i in 0..n {
        let scheduled = start + period * i as u32;
        if let Some(wait) = scheduled.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let h = &mut households[rng.gen_range(0..HOUSEHOLDS_PER_VILLAGE)];
        let private_too = rng.gen_bool(0.2);
        let writes = h.edit(&mut rng, private_too)?;
        store.commit(writes)?;
        latencies.push(scheduled.elapsed().as_secs_f64() * 1e3);
    }
    let s = store.stats();
    let p50 = quantile(&mut latencies, 0.5);
    let p99 = quantile(&mut latencies, 0.99);
    let max = quantile(&mut latencies, 1.0);
    progress(
        BENCH,
        &format!(
            "steady: p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms; {} commits in {} groups, {} fsyncs, {} compactions",
            s.commits, s.commit_groups, s.fsyncs, s.compactions
        ),
    );
    Ok(p99)
}

/// Many concurrent savers; returns durable saves per second.
fn burst(base: &Path) -> Result<f64> {
    let store = DocStore::open(&base.join("burst"), config())?;
    let per_thread = BURST_SAVES.div_ceil(BURST_THREADS);
    // Two households per thread, created up front.
    let all = create_village(&store, 1, 2 * BURST_THREADS, 3)?;
    let mut groups: Vec<Vec<Household>> = Vec::with_capacity(BURST_THREADS);
    let mut all = all.into_iter();
    for _ in 0..BURST_THREADS {
        groups.push(all.by_ref().take(2).collect());
    }
    let before = store.stats();
    let barrier = Arc::new(Barrier::new(BURST_THREADS + 1));
    let handles: Vec<_> = groups
        .into_iter()
        .enumerate()
        .map(|(t, mut mine)| {
            let store = store.clone();
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || -> Result<Vec<f64>> {
                let mut rng = StdRng::seed_from_u64(100 + t as u64);
                let mut latencies = Vec::with_capacity(per_thread);
                barrier.wait();
                for i in 0..per_thread {
                    let started = Instant::now();
                    let h = &mut mine[i % 2];
                    let private_too = rng.gen_bool(0.2);
                    let writes = h.edit(&mut rng, private_too)?;
                    store.commit(writes)?;
                    latencies.push(started.elapsed().as_secs_f64() * 1e3);
                }
                Ok(latencies)
            })
        })
        .collect();
    progress(
        BENCH,
        &format!("burst: {BURST_THREADS} threads × {per_thread} saves"),
    );
    barrier.wait();
    let start = Instant::now();
    let mut latencies = Vec::with_capacity(BURST_THREADS * per_thread);
    for h in handles {
        match h.join() {
            Ok(r) => latencies.extend(r?),
            Err(_) => bail!("a burst thread panicked"),
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let saves = latencies.len() as f64;
    let s = store.stats();
    let groups = s.commit_groups - before.commit_groups;
    progress(
        BENCH,
        &format!(
            "burst: {saves} saves in {elapsed:.2} s; latency p50 {:.1} ms, p99 {:.1} ms; {groups} group commits ({:.1} saves per fsync)",
            quantile(&mut latencies, 0.5),
            quantile(&mut latencies, 0.99),
            saves / groups.max(1) as f64
        ),
    );
    Ok(saves / elapsed)
}

/// Creates village `v` and gives each household nine revisits, committing each round of the
/// village as one commit; returns the first household's key.
fn build_village(store: &DocStore, v: usize, n: usize) -> Result<Option<DocKey>> {
    let mut rng = StdRng::seed_from_u64(10_000 + v as u64);
    let mut hs = create_village(store, v, n, 1000 + v as u64)?;
    // Nine revisits after the creation; the private part changes on three of them.
    for round in 1..BIG_EDITS {
        let mut writes = Vec::with_capacity(2 * n);
        for h in &mut hs {
            writes.extend(h.edit(&mut rng, round % 3 == 0)?);
        }
        store.commit(writes)?;
    }
    Ok(hs.first().map(|h| h.hh_key.clone()))
}

/// Builds the big store with one builder thread per core; returns its directory, one household
/// key and its village scope. Reports the disk use right after compaction and after a vacuum.
fn build_big(base: &Path, households: usize) -> Result<(std::path::PathBuf, DocKey, AreaScope)> {
    let dir = base.join("big");
    let store = DocStore::open(&dir, config())?;
    let villages = households.div_ceil(HOUSEHOLDS_PER_VILLAGE);
    let builders = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(1, 4);
    let started = Instant::now();
    let handles: Vec<_> = (0..builders)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || -> Result<Option<DocKey>> {
                let mut probe = None;
                for v in (t..villages).step_by(builders) {
                    let n = HOUSEHOLDS_PER_VILLAGE.min(households - v * HOUSEHOLDS_PER_VILLAGE);
                    let first = build_village(&store, v, n)?;
                    if v == villages / 2 {
                        probe = first;
                    }
                    if t == 0 && v % 50 == 0 {
                        let s = store.stats();
                        progress(
                            BENCH,
                            &format!(
                                "big: about {} of {households} households, {} chunks, {} compactions, {:.1} MB on disk, {:.0} s",
                                (v + 1) * HOUSEHOLDS_PER_VILLAGE,
                                s.chunks,
                                s.compactions,
                                s.disk_bytes as f64 / 1e6,
                                started.elapsed().as_secs_f64()
                            ),
                        );
                    }
                }
                Ok(probe)
            })
        })
        .collect();
    let mut probe = None;
    for h in handles {
        match h.join() {
            Ok(r) => probe = probe.or(r?),
            Err(_) => bail!("a builder thread panicked"),
        }
    }
    let compacted = store.compact_all()?;
    let s = store.stats();
    progress(
        BENCH,
        &format!(
            "big: compacted {} documents ({} → {} chunks); {} documents, {} chunks, {:.1} MB of payload, \
             {:.1} MB on disk; {:.0} s to build",
            compacted.docs_compacted,
            compacted.chunks_before,
            compacted.chunks_after,
            s.documents,
            s.chunks,
            s.bytes as f64 / 1e6,
            dir_bytes(&dir) as f64 / 1e6,
            started.elapsed().as_secs_f64()
        ),
    );
    drop(store);
    // sled 0.34 never shrinks its file: rewrite it compactly, as the node does at open when
    // the files have grown to several times the data.
    let vacuum = DocStore::vacuum(&dir, &config())?;
    progress(
        BENCH,
        &format!(
            "big: vacuum {:.1} MB → {:.1} MB ({} keys) in {} ms",
            vacuum.bytes_before as f64 / 1e6,
            vacuum.bytes_after as f64 / 1e6,
            vacuum.keys,
            vacuum.millis
        ),
    );
    let probe = probe.context("no household to probe")?;
    let scope = probe.area().scope();
    Ok((dir, probe, scope))
}

/// Runs one child that opens the store; returns (open ms, RSS MB).
fn open_in_child(dir: &Path, key: &DocKey, scope: &AreaScope) -> Result<(f64, f64)> {
    let out = Command::new(std::env::current_exe()?)
        .arg(BENCH)
        .env(OPEN_DIR_ENV, dir)
        .env(OPEN_KEY_ENV, key.to_string())
        .env(OPEN_SCOPE_ENV, scope.to_string())
        .output()
        .context("running the open child")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let Some(line) = stdout.lines().find_map(|l| l.strip_prefix(OPEN_RESULT)) else {
        bail!(
            "the open child printed no result (status {}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let v: serde_json::Value = serde_json::from_str(line)?;
    let ms = v["open_ms"].as_f64().context("open_ms")?;
    let rss = v["rss_mb"].as_f64().context("rss_mb")?;
    progress(
        BENCH,
        &format!(
            "open child: {ms:.1} ms, {rss:.1} MB RSS, scanned {}",
            v["scanned"]
        ),
    );
    Ok((ms, rss))
}

/// The child's side: open, load one document, scan one village, report.
fn open_child(dir: &Path) -> Result<()> {
    let key = DocKey::parse(&std::env::var(OPEN_KEY_ENV)?)?;
    let scope = AreaScope::parse(&std::env::var(OPEN_SCOPE_ENV)?)?;
    let started = Instant::now();
    let store = DocStore::open(dir, config())?;
    let doc = store
        .load(&key)?
        .context("the probe household is missing")?;
    let mut scanned = 0;
    for item in store.scan(&scope) {
        item?;
        scanned += 1;
    }
    let open_ms = started.elapsed().as_secs_f64() * 1e3;
    let rss = rss_mb();
    drop(doc);
    let line = serde_json::json!({ "open_ms": open_ms, "rss_mb": rss, "scanned": scanned });
    println!("{OPEN_RESULT}{line}");
    Ok(())
}

/// Runs the benchmark (or, in the open child, the child's part).
pub fn run() -> Result<()> {
    if let Some(dir) = std::env::var_os(OPEN_DIR_ENV) {
        return open_child(Path::new(&dir));
    }
    let households = std::env::var("CUNYUN_BENCH_HOUSEHOLDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(BIG_HOUSEHOLDS);
    // `CUNYUN_BENCH_STORE_DIR` keeps the stores in that directory for inspection.
    let kept = std::env::var_os("CUNYUN_BENCH_STORE_DIR").map(std::path::PathBuf::from);
    let temp = tempfile::tempdir()?;
    let base = match &kept {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            tempfile::tempdir_in(dir)?.keep()
        }
        None => temp.path().to_path_buf(),
    };
    let base = base.as_path();

    let p99 = steady(base)?;
    emit(BENCH, "save_p99_ms", p99, "ms");

    let rate = burst(base)?;
    emit(BENCH, "burst_saves_per_s", rate, "saves/s");

    let (dir, key, scope) = build_big(base, households)?;
    let disk = dir_bytes(&dir);
    progress(
        BENCH,
        &format!("big: {:.1} MB on disk after compaction", disk as f64 / 1e6),
    );
    emit(
        BENCH,
        "disk_bytes_per_household",
        disk as f64 / households as f64,
        "bytes",
    );

    let mut opens = Vec::new();
    let mut rsss = Vec::new();
    for _ in 0..3 {
        let (ms, rss) = open_in_child(&dir, &key, &scope)?;
        opens.push(ms);
        rsss.push(rss);
    }
    emit(BENCH, "open_ms", quantile(&mut opens, 0.5), "ms");
    emit(BENCH, "open_rss_mb", quantile(&mut rsss, 0.5), "MB");
    Ok(())
}
