//! Benchmark plumbing: the JSON-lines output format and small measuring helpers.
//!
//! Every benchmark prints one JSON object per metric on stdout,
//! `{"bench":"store","metric":"save_p99_ms","value":3.1,"unit":"ms"}`, and progress on stderr.

use std::io::Write;

pub mod amrepo;
pub mod gossip;
#[path = "match.rs"]
pub mod matching;
pub mod store;
pub mod sync;
pub mod transfer;
pub mod webapp;

/// Prints one metric as a JSON line on stdout.
pub fn emit(bench: &str, metric: &str, value: f64, unit: &str) {
    let line =
        serde_json::json!({ "bench": bench, "metric": metric, "value": value, "unit": unit });
    let mut out = std::io::stdout().lock();
    // A closed stdout is not worth crashing a benchmark over.
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Prints a progress line on stderr.
pub fn progress(bench: &str, msg: &str) {
    eprintln!("[{bench}] {msg}");
}

/// The value at quantile `q` (0..=1) of `samples`, which it sorts.
pub fn quantile(samples: &mut [f64], q: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    samples.sort_by(|a, b| a.total_cmp(b));
    let idx = ((samples.len() - 1) as f64 * q).round() as usize;
    samples[idx.min(samples.len() - 1)]
}

/// Resident set size of this process in MiB, from `/proc/self/status`.
pub fn rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Total size in bytes of the regular files below `dir`.
pub fn dir_bytes(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    for e in entries.flatten() {
        match e.metadata() {
            Ok(m) if m.is_dir() => total += dir_bytes(&e.path()),
            Ok(m) => total += m.len(),
            Err(_) => {}
        }
    }
    total
}
