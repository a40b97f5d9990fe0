//! Benchmark `match`: the hub matching a province of household profiles against its library.
//!
//! 1,000,000 household profiles (1,000 villages × 1,000 households from `sample_village`, spread
//! over 20 prefectures × 10 counties of Sichuan; kept as structs, not Automerge documents, the
//! private parts dropped at once) and 5,000 content items with generated, realistic metadata (1–3
//! tags weighted towards production and health, a third of the items seasonal, a quarter for a
//! prefecture or county only, video/audio/article/PDF with alternative renditions, review dates
//! over three years, 5 % expired).
//!
//! - `match_1m_s`: every household through the hub's [`Matcher::match_households`] (tags from
//!   the trigger rules and stated needs, scoring, diversity, rendition choice, weekly cap) on all
//!   cores, in batches of 10,000.
//! - `match_1m_cpu_s`: the CPU seconds (all threads) the matching used, which unlike wall time
//!   does not depend on how busy the shared machine is.
//! - `match_peak_rss_mb`: the peak RSS (VmHWM) of this process, reset just before the profiles are
//!   generated, so it covers the profiles, the library, the matcher state and the matching.
//! - `rematch_1000_ms`: a week later, 1,000 households edited (`sample_edit`) go through the
//!   incremental path: `upsert_household`, `take_dirty`, `match_households`, and the `rec`
//!   document changes built by the engine's `rec_writes` (on every core; each document starts
//!   empty, since the bench keeps no store of a million); median of 5 runs with different
//!   households. Writing them to the sled store is not included. `rematch_1000_cpu_ms` is the
//!   CPU time of the same (100 Hz clock ticks, so ±10 ms).

use std::time::Instant;

use anyhow::Context;
use cunyun_hub::engine::{rec_writes, RecJob};
use cunyun_hub::matcher::Matcher;
use cunyun_node::sample::{sample_edit, sample_village};
use cunyun_protocol::area::{AreaCode, AreaScope};
use cunyun_protocol::fields::Date;
use cunyun_protocol::household::{HouseholdProfile, Language};
use cunyun_protocol::key::{DocKey, Kind};
use cunyun_protocol::library::{AgeBand, ContentMeta, Format, Rendition};
use cunyun_protocol::taxonomy::{Group, Tag};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{emit, progress, quantile};

const VILLAGES: usize = 1_000;
const PER_VILLAGE: usize = 1_000;
const ITEMS: usize = 5_000;
const BATCH: usize = 10_000;

fn village_code(i: usize) -> anyhow::Result<AreaCode> {
    let prefecture = 1 + i % 20;
    let county = 1 + (i / 20) % 10;
    let township = 100 + (i / 200) % 5;
    let village = 200 + i % 200;
    Ok(AreaCode::parse(&format!(
        "51{prefecture:02}{county:02}{township:03}{village:03}"
    ))?)
}

/// Realistic content metadata for item `i`.
fn gen_item(rng: &mut ChaCha8Rng, today: Date) -> anyhow::Result<ContentMeta> {
    let groups: [(Group, u32); 8] = [
        (Group::Plt, 30),
        (Group::Liv, 18),
        (Group::Hlt, 20),
        (Group::Saf, 12),
        (Group::Eco, 6),
        (Group::Dig, 6),
        (Group::Pol, 5),
        (Group::Sci, 3),
    ];
    let total: u32 = groups.iter().map(|g| g.1).sum();
    let mut tags = std::collections::BTreeSet::new();
    let n = *[1usize, 1, 2, 2, 3].choose(rng).unwrap_or(&1);
    while tags.len() < n {
        let mut r = rng.gen_range(0..total);
        let mut group = Group::Plt;
        for (g, w) in groups {
            if r < w {
                group = g;
                break;
            }
            r -= w;
        }
        let in_group: Vec<Tag> = group.tags().collect();
        if let Some(&t) = in_group.choose(rng) {
            tags.insert(t);
        }
    }
    let regions = match rng.gen_range(0..100) {
        0..=74 => Vec::new(),
        75..=89 => vec![AreaScope::parse(&format!(
            "51{:02}",
            rng.gen_range(1..=20)
        ))?],
        _ => vec![AreaScope::parse(&format!(
            "51{:02}{:02}",
            rng.gen_range(1..=20),
            rng.gen_range(1..=10)
        ))?],
    };
    let months = if rng.gen_bool(0.35) {
        let start: u8 = rng.gen_range(1..=12);
        (0..rng.gen_range(2..=4u8))
            .map(|k| (start + k - 1) % 12 + 1)
            .collect()
    } else {
        Default::default()
    };
    let audience = if rng.gen_bool(0.15) {
        [AgeBand::Age60To69, AgeBand::Age70Plus]
            .into_iter()
            .collect()
    } else if rng.gen_bool(0.05) {
        [AgeBand::Age0To5, AgeBand::Age6To14].into_iter().collect()
    } else {
        Default::default()
    };
    let (format, bytes) = match rng.gen_range(0..100) {
        0..=39 => (Format::Video, rng.gen_range(10_000_000..60_000_000)),
        40..=59 => (Format::Audio, rng.gen_range(1_000_000..5_000_000)),
        60..=84 => (Format::Article, rng.gen_range(300_000..1_500_000)),
        85..=92 => (Format::Pdf, rng.gen_range(500_000..5_000_000)),
        _ => (Format::Image, rng.gen_range(200_000..2_000_000)),
    };
    let mut renditions = Vec::new();
    if format == Format::Video {
        renditions.push(Rendition {
            id: "480p".into(),
            format: Format::Video,
            language: Language::Mandarin,
            bytes: bytes / 3,
        });
        if rng.gen_bool(0.5) {
            renditions.push(Rendition {
                id: "audio".into(),
                format: Format::Audio,
                language: Language::Sichuanese,
                bytes: 2_400_000,
            });
        }
    }
    if rng.gen_bool(0.05) {
        renditions.push(Rendition {
            id: "yi".into(),
            format: Format::Audio,
            language: Language::Yi,
            bytes: 2_400_000,
        });
    }
    let back = rng.gen_range(0..3 * 365);
    let review_date = date_days_before(today, back);
    let expires = if rng.gen_bool(0.05) {
        // Already expired.
        Some(date_days_before(today, rng.gen_range(1..back.max(2))))
            .filter(|&e| e > review_date)
            .or(Some(today))
    } else {
        review_date.add_years(3)
    };
    let meta = ContentMeta {
        title: format!(
            "{}科普第{}期",
            tags.iter().next().map_or("", |t| t.plain_words()),
            rng.gen_range(1..500)
        )
        .chars()
        .take(60)
        .collect(),
        summary: String::new(),
        tags,
        regions,
        months,
        audience,
        language: Language::Mandarin,
        format,
        bytes,
        renditions,
        source: "科普中国".into(),
        review_date,
        expires: expires.filter(|&e| e > review_date),
    };
    meta.validate()
        .map_err(|e| anyhow::anyhow!("generated item invalid: {e:?}"))?;
    Ok(meta)
}

fn date_days_before(today: Date, days: i32) -> Date {
    // Walk back whole days; at most three years, so this is cheap enough for 5,000 items.
    let target = today.days_since_epoch() - days;
    let mut y = today.year();
    loop {
        let jan1 = Date::new(y, 1, 1).map_or(0, Date::days_since_epoch);
        if jan1 <= target {
            break;
        }
        y -= 1;
    }
    let mut d = Date::new(y, 1, 1).unwrap_or(today);
    for m in 1..=12u8 {
        for day in 1..=31u8 {
            if let Some(c) = Date::new(y, m, day) {
                if c.days_since_epoch() == target {
                    d = c;
                }
            }
        }
    }
    d
}

/// CPU time (user + system) this process used so far, in seconds.
fn cpu_s() -> f64 {
    // getrusage would need `unsafe` (denied in this workspace), so read /proc.
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses and may contain spaces).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

fn vm_hwm_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Runs the benchmark.
pub fn run() -> anyhow::Result<()> {
    const B: &str = "match";
    let today = Date::new(2026, 4, 15).context("date")?;
    // Reset the peak RSS to what is resident now (Linux: 5 > clear_refs).
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    progress(B, &format!("generating {ITEMS} content items"));
    let mut rng = ChaCha8Rng::seed_from_u64(20_260_415);
    let mut matcher = Matcher::with_defaults(today);
    for i in 0..ITEMS {
        let meta = gen_item(&mut rng, today)?;
        matcher.upsert_content(&format!("c{i:05}"), meta);
    }
    progress(
        B,
        &format!("generating {} household profiles", VILLAGES * PER_VILLAGE),
    );
    let t = Instant::now();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut households: Vec<(DocKey, HouseholdProfile)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|w| {
                s.spawn(move || -> anyhow::Result<Vec<(DocKey, HouseholdProfile)>> {
                    let mut out = Vec::new();
                    for v in (w..VILLAGES).step_by(threads) {
                        let village = village_code(v)?;
                        for h in sample_village(village, PER_VILLAGE, v as u64) {
                            out.push((DocKey::new(village, Kind::Hh, h.id)?, h.profile));
                        }
                    }
                    Ok(out)
                })
            })
            .collect();
        let mut all = Vec::new();
        for h in handles {
            all.extend(
                h.join()
                    .map_err(|_| anyhow::anyhow!("generator panicked"))??,
            );
        }
        Ok::<_, anyhow::Error>(all)
    })?;
    progress(
        B,
        &format!(
            "generated in {:.1} s; RSS {:.0} MB",
            t.elapsed().as_secs_f64(),
            super::rss_mb()
        ),
    );

    progress(B, "matching every household");
    let t = Instant::now();
    let cpu0 = cpu_s();
    let mut picks_total = 0usize;
    let mut empty = 0usize;
    for batch in households.chunks(BATCH) {
        for picks in matcher.match_households(batch) {
            picks_total += picks.len();
            empty += usize::from(picks.is_empty());
        }
    }
    let match_s = t.elapsed().as_secs_f64();
    let match_cpu = cpu_s() - cpu0;
    progress(
        B,
        &format!(
            "{} households in {match_s:.1} s: {picks_total} picks, {empty} with none",
            households.len()
        ),
    );
    anyhow::ensure!(
        picks_total > households.len(),
        "matching picked almost nothing"
    );
    emit(B, "match_1m_s", match_s, "s");
    // CPU seconds of the matching (all threads): on a shared machine, wall time depends on how
    // much of the two cores the benchmark got; this does not.
    emit(B, "match_1m_cpu_s", match_cpu, "s");
    emit(B, "match_peak_rss_mb", vm_hwm_mb(), "MB");

    // A week later, 1,000 changed households through the incremental path.
    let mut samples = Vec::new();
    let mut cpu_samples = Vec::new();
    let mut day = today;
    for run in 0..5u64 {
        day = Date::new(2026, 4, 22 + 2 * run as u8).context("date")?;
        matcher.set_today(day);
        let _ = matcher.take_dirty();
        let mut rng = ChaCha8Rng::seed_from_u64(run);
        let chosen: Vec<usize> =
            rand::seq::index::sample(&mut rng, households.len(), 1_000).into_vec();
        for &i in &chosen {
            sample_edit(&mut households[i].1, &mut rng);
        }
        let t = Instant::now();
        let c0 = cpu_s();
        for &i in &chosen {
            let (k, p) = &households[i];
            matcher.upsert_household(k, p);
        }
        let dirty = matcher.take_dirty();
        let batch: Vec<(DocKey, HouseholdProfile)> = chosen
            .iter()
            .map(|&i| households[i].clone())
            .filter(|(k, _)| dirty.binary_search(k).is_ok())
            .collect();
        let results = matcher.match_households(&batch);
        let jobs: Vec<RecJob<'_>> = batch
            .iter()
            .zip(&results)
            .map(|((k, p), picks)| RecJob {
                key: k.with_kind(Kind::Rec),
                village: p.village,
                picks,
            })
            .collect();
        // Each household's rec document starts empty here (the bench has no store of 1M).
        let writes = rec_writes(
            &jobs,
            matcher.library(),
            &std::collections::HashMap::new(),
            day,
            |_| Ok(None),
        )?;
        let doc_bytes: usize = writes.iter().map(|w| w.chunk.len()).sum();
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        cpu_samples.push((cpu_s() - c0) * 1000.0);
        let picked: usize = results.iter().map(Vec::len).sum();
        progress(
            B,
            &format!(
                "run {run}: {} households re-matched in {ms:.1} ms, {picked} new items, {doc_bytes} rec bytes",
                batch.len()
            ),
        );
        anyhow::ensure!(
            batch.len() == 1_000,
            "not every changed household was dirty"
        );
        samples.push(ms);
    }
    let _ = day;
    emit(B, "rematch_1000_ms", quantile(&mut samples, 0.5), "ms");
    emit(
        B,
        "rematch_1000_cpu_ms",
        quantile(&mut cpu_samples, 0.5),
        "ms",
    );
    Ok(())
}
