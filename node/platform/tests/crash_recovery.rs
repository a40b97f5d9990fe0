//! Crash recovery of the document store under `kill -9`.
//!
//! Guards against: a commit acknowledged to a caller and then lost, a crash during group
//! commit or compaction that leaves a document unloadable or the index out of step with the
//! chunks.
//!
//! The test re-runs its own binary as a child process (`CUNYUN_CRASH_CHILD_DIR` selects the
//! role, as in sled's `tests/test_crash_recovery.rs`). The child opens the store and commits
//! real automerge changes from several threads (single-document and two-document commits),
//! while another thread keeps calling `compact_all` and automatic compaction runs every four
//! chunks. A thread prints `ACK <key> <change hash>` only after `commit` returned. The parent
//! reads those lines, kills the child with SIGKILL after 100–700 ms, reopens the store and
//! checks that every change ever acknowledged (in this round or earlier ones) is present, that
//! every document loads, that `verify` finds index, chunks and totals consistent and that
//! nothing was quarantined. It repeats this on the same directory and prints a summary;
//! it exits non-zero on any failure. Set `CUNYUN_CRASH_SEED` to replay the kill times.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use automerge::{transaction::Transactable, AutoCommit, ChangeHash, ReadDoc, ROOT};
use cunyun_platform::store::{DocStore, DocWrite, StoreConfig};
use cunyun_protocol::area::AreaScope;
use cunyun_protocol::key::DocKey;
use rand::{Rng, SeedableRng};

const CHILD_ENV: &str = "CUNYUN_CRASH_CHILD_DIR";
const ROUNDS: usize = 8;
const WRITER_THREADS: usize = 6;
const DOCS_PER_THREAD: usize = 6;

fn config() -> StoreConfig {
    StoreConfig {
        compact_after_chunks: 4,
        cache_capacity_bytes: 8 * 1024 * 1024,
        ..StoreConfig::default()
    }
}

fn doc_key(thread: usize, doc: usize) -> DocKey {
    let kind = if doc.is_multiple_of(2) { "hh" } else { "hp" };
    DocKey::parse(&format!("510122104201/{kind}/t{thread}-{}", doc / 2)).expect("valid key")
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Child role: commit forever (until killed), acknowledging on stdout.
fn child(dir: &Path) -> ExitCode {
    let store = match DocStore::open(dir, config()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("child: FATAL open failed: {e}");
            return ExitCode::from(3);
        }
    };
    let out = Arc::new(Mutex::new(std::io::stdout()));
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut handles = Vec::new();
    for t in 0..WRITER_THREADS {
        let store = store.clone();
        let out = Arc::clone(&out);
        handles.push(std::thread::spawn(move || -> Result<(), String> {
            // Continue each document from what the store holds.
            let mut docs = Vec::new();
            for d in 0..DOCS_PER_THREAD {
                let key = doc_key(t, d);
                let doc = match store.load(&key).map_err(|e| format!("load {key}: {e}"))? {
                    Some(am) => AutoCommit::load(&am.save()).map_err(|e| e.to_string())?,
                    None => AutoCommit::new(),
                };
                docs.push((key, doc));
            }
            let mut i: u64 = 0;
            while Instant::now() < deadline {
                i += 1;
                // Every third commit writes two documents atomically (a household's hh and hp).
                let picks: Vec<usize> = if i.is_multiple_of(3) {
                    let d = ((i / 3) as usize % (DOCS_PER_THREAD / 2)) * 2;
                    vec![d, d + 1]
                } else {
                    vec![i as usize % DOCS_PER_THREAD]
                };
                let mut writes = Vec::new();
                let mut acks = Vec::new();
                for d in picks {
                    let (key, doc) = &mut docs[d];
                    doc.put(ROOT, "counter", i as i64)
                        .map_err(|e| e.to_string())?;
                    doc.put(
                        ROOT,
                        format!("f{}", i % 25),
                        format!("value {i} from thread {t}"),
                    )
                    .map_err(|e| e.to_string())?;
                    let chunk = doc.save_incremental();
                    let heads = doc.get_heads();
                    acks.push((
                        key.to_string(),
                        heads.iter().map(|h| hex::encode(h.0)).collect::<Vec<_>>(),
                    ));
                    writes.push(DocWrite {
                        key: key.clone(),
                        chunk,
                        heads,
                        updated_at_ms: now_ms(),
                    });
                }
                store.commit(writes).map_err(|e| format!("commit: {e}"))?;
                let mut out = out.lock().map_err(|_| "stdout lock".to_string())?;
                for (key, heads) in acks {
                    for h in heads {
                        writeln!(out, "ACK {key} {h}").map_err(|e| e.to_string())?;
                    }
                }
                out.flush().map_err(|e| e.to_string())?;
            }
            Ok(())
        }));
    }
    {
        let store = store.clone();
        let out = Arc::clone(&out);
        handles.push(std::thread::spawn(move || -> Result<(), String> {
            while Instant::now() < deadline {
                let stats = store
                    .compact_all()
                    .map_err(|e| format!("compact_all: {e}"))?;
                let mut out = out.lock().map_err(|_| "stdout lock".to_string())?;
                writeln!(out, "COMPACTED {}", stats.docs_compacted).map_err(|e| e.to_string())?;
                out.flush().map_err(|e| e.to_string())?;
                drop(out);
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(())
        }));
    }
    let mut code = ExitCode::SUCCESS;
    for h in handles {
        match h.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                eprintln!("child: FATAL {e}");
                code = ExitCode::from(4);
            }
            Err(_) => {
                eprintln!("child: FATAL thread panicked");
                code = ExitCode::from(5);
            }
        }
    }
    code
}

/// What one round of the parent saw.
struct Round {
    acked_this_round: usize,
    compacted_this_round: u64,
    killed_after_ms: u64,
}

fn run_round(
    dir: &Path,
    kill_after: Duration,
    acked: &mut BTreeMap<String, BTreeSet<String>>,
) -> Result<Round, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut child = Command::new(exe)
        .env(CHILD_ENV, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("spawn child: {e}"))?;
    let stdout = child.stdout.take().ok_or("no child stdout")?;
    let reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stdout).lines() {
            match line {
                Ok(l) => lines.push(l),
                Err(_) => break,
            }
        }
        lines
    });
    let started = Instant::now();
    std::thread::sleep(kill_after);
    let early_exit = child.try_wait().map_err(|e| e.to_string())?;
    // SIGKILL on unix.
    child.kill().map_err(|e| format!("kill child: {e}"))?;
    child.wait().map_err(|e| e.to_string())?;
    let killed_after_ms = started.elapsed().as_millis() as u64;
    if let Some(status) = early_exit {
        return Err(format!("child exited on its own before the kill: {status}"));
    }
    let lines = reader.join().map_err(|_| "reader thread panicked")?;
    let mut acked_this_round = 0;
    let mut compacted_this_round = 0;
    for line in lines {
        let mut parts = line.split(' ');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some("ACK"), Some(key), Some(hash), None) => {
                acked
                    .entry(key.to_string())
                    .or_default()
                    .insert(hash.to_string());
                acked_this_round += 1;
            }
            (Some("COMPACTED"), Some(n), None, None) => {
                compacted_this_round += n.parse::<u64>().unwrap_or(0)
            }
            _ => {}
        }
    }
    Ok(Round {
        acked_this_round,
        compacted_this_round,
        killed_after_ms,
    })
}

/// Reopens the store and checks every acknowledged change; returns the number checked.
fn check(dir: &Path, acked: &BTreeMap<String, BTreeSet<String>>) -> Result<usize, String> {
    let store = DocStore::open(dir, config()).map_err(|e| format!("reopen: {e}"))?;
    let mut problems = Vec::new();
    let mut checked = 0;
    for (key, hashes) in acked {
        let doc_key = DocKey::parse(key).map_err(|e| e.to_string())?;
        let doc = match store.load(&doc_key) {
            Ok(Some(doc)) => doc,
            Ok(None) => {
                problems.push(format!("{key}: acknowledged document missing"));
                continue;
            }
            Err(e) => {
                problems.push(format!("{key}: {e}"));
                continue;
            }
        };
        for h in hashes {
            let bytes = hex::decode(h).map_err(|e| e.to_string())?;
            let hash = ChangeHash::try_from(bytes.as_slice()).map_err(|e| e.to_string())?;
            if doc.get_change_by_hash(&hash).is_none() {
                problems.push(format!("{key}: acknowledged change {h} lost"));
            }
            checked += 1;
        }
    }
    // Every document in the index loads, acknowledged or not.
    let scope = AreaScope::parse("51").map_err(|e| e.to_string())?;
    for item in store.scan(&scope) {
        match item {
            Ok((key, _)) => {
                if let Err(e) = store.load(&key) {
                    problems.push(format!("{key}: does not load: {e}"));
                }
            }
            Err(e) => problems.push(format!("scan: {e}")),
        }
    }
    match store.verify() {
        Ok(report) => problems.extend(report.problems),
        Err(e) => problems.push(format!("verify: {e}")),
    }
    let stats = store.stats();
    if stats.digest_mismatches > 0 {
        problems.push(format!(
            "{} index digests differ from the documents' heads",
            stats.digest_mismatches
        ));
    }
    let q = store.quarantined();
    if !q.is_empty() {
        problems.push(format!("quarantined after a crash: {q:?}"));
    }
    if problems.is_empty() {
        Ok(checked)
    } else {
        Err(problems.join("\n  "))
    }
}

fn parent() -> ExitCode {
    let started = Instant::now();
    let seed = std::env::var("CUNYUN_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(now_ms);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("crash_recovery: FAILED: tempdir: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut acked = BTreeMap::new();
    let mut total_checked = 0;
    let mut total_compacted = 0;
    for round in 0..ROUNDS {
        let kill_after = Duration::from_millis(rng.gen_range(100..=700));
        let outcome = run_round(dir.path(), kill_after, &mut acked).and_then(|r| {
            let checked = check(dir.path(), &acked)?;
            Ok((r, checked))
        });
        match outcome {
            Ok((r, checked)) => {
                total_checked = checked;
                total_compacted += r.compacted_this_round;
                println!(
                    "round {round}: killed after {} ms, {} new acks, {} docs compacted by compact_all, \
                     {checked} acknowledged changes verified",
                    r.killed_after_ms, r.acked_this_round, r.compacted_this_round
                );
            }
            Err(e) => {
                println!("crash_recovery: FAILED in round {round} (seed {seed}):\n  {e}");
                return ExitCode::FAILURE;
            }
        }
        if started.elapsed() > Duration::from_secs(55) {
            println!("crash_recovery: FAILED: took longer than 55 s (seed {seed})");
            return ExitCode::FAILURE;
        }
    }
    if total_checked == 0 {
        println!("crash_recovery: FAILED: no change was ever acknowledged (seed {seed})");
        return ExitCode::FAILURE;
    }
    println!(
        "crash_recovery: ok: {ROUNDS} kill -9 rounds, {total_checked} acknowledged changes in {} documents all present, \
         {total_compacted} explicit compactions, seed {seed}, {:.1} s",
        acked.len(),
        started.elapsed().as_secs_f64()
    );
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    match std::env::var_os(CHILD_ENV) {
        Some(dir) => child(Path::new(&dir)),
        None => parent(),
    }
}
