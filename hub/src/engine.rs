//! Matching rounds: from the hub's store and library to `rec` documents in the store.
//!
//! This module owns one round of the hub's work ([`Engine::round`]), run periodically by the hub
//! and on demand:
//!
//! 1. If the store has had no write since the last round, the library has not changed and the
//!    day is the same, there is nothing to do.
//! 2. The library's items are loaded into the [`Matcher`] when the library changed.
//! 3. The store's index is scanned for `hh` documents whose heads digest differs from the last
//!    one seen (new or changed households: synced up from villages). Each is read as a
//!    [`HouseholdProfile`]; the first time a household is seen, its stored `rec` document (if any)
//!    tells the matcher what it was already recommended.
//! 4. Every dirty household is matched; each household that got new items (or whose `rec` holds
//!    items no longer in the library) gets its `rec` document updated — loaded, changed with
//!    [`Rec::write_to`] (only what differs), and committed in one durable batch per 1,000.
//!
//! The hub only reads `hh` documents: it never asks for, reads or writes `hp` (the sync scope of a
//! hub-role peer refuses them).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;

use automerge::Automerge;
use cunyun_node::store::{DocStore, DocWrite, StoreError};
use cunyun_protocol::area::AreaScope;
use cunyun_protocol::digest::HeadsDigest;
use cunyun_protocol::fields::Date;
use cunyun_protocol::household::HouseholdProfile;
use cunyun_protocol::key::{DocKey, Kind};
use cunyun_protocol::rec::{Rec, RecItem, Week};
use serde::Serialize;

use crate::library::ContentLibrary;
use crate::matcher::Matcher;

/// Households matched per batch (and `rec` documents per durable commit).
const BATCH: usize = 1_000;

/// What one round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RoundReport {
    /// Whether the round found anything to look at.
    pub ran: bool,
    /// `hh` documents new or changed since the last round.
    pub households_changed: usize,
    /// Households matched.
    pub households_matched: usize,
    /// `rec` documents written.
    pub recs_written: usize,
    /// New items recommended.
    pub items_added: usize,
    /// `hh` documents that could not be read.
    pub unreadable: usize,
}

/// Why a round failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A `rec` document could not be written.
    #[error("推荐记录写入失败（{key}）：{message}")]
    Rec {
        /// The document.
        key: String,
        /// What went wrong.
        message: String,
    },
}

struct State {
    matcher: Matcher,
    known: HashMap<DocKey, HeadsDigest>,
    store_writes: u64,
    library_version: u64,
    library_ids: HashSet<String>,
    day: Option<Date>,
}

/// The hub's matching engine over its store (see the module documentation).
pub struct Engine {
    store: DocStore,
    scope: AreaScope,
    state: Mutex<State>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Engine {
    /// An engine over `store` for the hub's `scope`, giving at most `per_week` new items per
    /// household per week.
    pub fn new(store: DocStore, scope: AreaScope, today: Date, per_week: usize) -> Engine {
        Engine {
            store,
            scope,
            state: Mutex::new(State {
                matcher: Matcher::new(today, per_week),
                known: HashMap::new(),
                store_writes: u64::MAX,
                library_version: 0,
                library_ids: HashSet::new(),
                day: None,
            }),
        }
    }

    /// Households known to the matcher.
    pub fn households(&self) -> usize {
        self.state
            .lock()
            .map(|s| s.matcher.households())
            .unwrap_or(0)
    }

    /// Runs one round as of `today` (blocking: call it off the async runtime).
    pub fn round(&self, library: &ContentLibrary, today: Date) -> Result<RoundReport, EngineError> {
        let mut report = RoundReport::default();
        let mut guard = self.state.lock().map_err(|_| EngineError::Rec {
            key: String::new(),
            message: "匹配状态锁已损坏".into(),
        })?;
        let st = &mut *guard;
        let writes = self.store.stats().writes;
        let lib_version = library.version();
        if writes == st.store_writes && lib_version == st.library_version && st.day == Some(today) {
            return Ok(report);
        }
        report.ran = true;
        if st.day != Some(today) {
            st.matcher.set_today(today);
            st.day = Some(today);
        }
        if lib_version != st.library_version {
            let records = library.list();
            let ids: HashSet<String> = records.iter().map(|r| r.id.clone()).collect();
            for gone in st.library_ids.difference(&ids) {
                st.matcher.remove_content(gone);
            }
            for r in records {
                if st.matcher.library().get(&r.id) != Some(&r.meta) {
                    st.matcher.upsert_content(&r.id, r.meta);
                }
            }
            st.library_ids = ids;
            st.library_version = lib_version;
        }
        // New and changed households.
        let mut profiles: BTreeMap<DocKey, HouseholdProfile> = BTreeMap::new();
        for item in self.store.scan(&self.scope) {
            let (key, entry) = item?;
            if key.kind() != Kind::Hh || st.known.get(&key) == Some(&entry.digest) {
                continue;
            }
            let first = st.known.insert(key.clone(), entry.digest).is_none();
            let Some(doc) = self.store.load(&key)? else {
                continue;
            };
            match HouseholdProfile::read_from(&doc) {
                Ok(p) => {
                    if first {
                        self.note_existing_rec(&mut st.matcher, &key)?;
                    }
                    st.matcher.upsert_household(&key, &p);
                    profiles.insert(key, p);
                    report.households_changed += 1;
                }
                Err(e) => {
                    report.unreadable += 1;
                    tracing::warn!(key = %key, error = %e, "household profile unreadable; not matched");
                }
            }
        }
        // Match every dirty household, in batches.
        let dirty = st.matcher.take_dirty();
        let week = Week::of(today);
        for keys in dirty.chunks(BATCH) {
            let mut batch = Vec::with_capacity(keys.len());
            for k in keys {
                let p = match profiles.remove(k) {
                    Some(p) => p,
                    None => match self.store.load(k)? {
                        Some(doc) => match HouseholdProfile::read_from(&doc) {
                            Ok(p) => p,
                            Err(_) => continue,
                        },
                        None => {
                            st.matcher.remove_household(k);
                            continue;
                        }
                    },
                };
                batch.push((k.clone(), p));
            }
            let results = st.matcher.match_households(&batch);
            report.households_matched += batch.len();
            let mut writes = Vec::new();
            for ((key, profile), picks) in batch.iter().zip(results) {
                let rec_key = key.with_kind(Kind::Rec);
                let existing = self.store.load(&rec_key)?;
                let mut rec = match existing.as_ref().map(Rec::read_from) {
                    Some(Ok(r)) => r,
                    Some(Err(e)) => {
                        tracing::warn!(key = %rec_key, error = %e, "rec document unreadable; rewritten");
                        Rec::new(profile.village, today)
                    }
                    None => Rec::new(profile.village, today),
                };
                let before = rec.items.len();
                let matcher = &st.matcher;
                rec.items
                    .retain(|id, _| matcher.library().get(id).is_some_and(|m| m.is_live(today)));
                let pruned = rec.items.len() != before;
                if picks.is_empty() && !pruned {
                    continue;
                }
                report.items_added += picks.len();
                rec.updated = today;
                rec.add(picks.iter().map(|p| {
                    let title = matcher
                        .library()
                        .get(&p.content_id)
                        .map_or("", |m| m.title.as_str());
                    (p.content_id.clone(), RecItem::from_pick(p, title, week))
                }));
                let mut doc = existing.unwrap_or_else(Automerge::new);
                let heads = doc.get_heads();
                let mut tx = doc.transaction();
                rec.write_to(&mut tx).map_err(|e| EngineError::Rec {
                    key: rec_key.to_string(),
                    message: e.to_string(),
                })?;
                tx.commit();
                let chunk = if heads.is_empty() {
                    doc.save()
                } else {
                    doc.save_after(&heads)
                };
                writes.push(DocWrite {
                    key: rec_key,
                    chunk,
                    heads: doc.get_heads(),
                    updated_at_ms: now_ms(),
                });
            }
            report.recs_written += writes.len();
            if !writes.is_empty() {
                self.store.commit(writes)?;
            }
        }
        st.store_writes = self.store.stats().writes;
        if report.households_changed > 0 || report.recs_written > 0 {
            tracing::info!(
                target: "cunyun::_events::match_round",
                changed = report.households_changed,
                matched = report.households_matched,
                recs = report.recs_written,
                items = report.items_added
            );
        }
        Ok(report)
    }

    fn note_existing_rec(&self, matcher: &mut Matcher, key: &DocKey) -> Result<(), EngineError> {
        let rec_key = key.with_kind(Kind::Rec);
        if let Some(doc) = self.store.load(&rec_key)? {
            if let Ok(rec) = Rec::read_from(&doc) {
                let latest = rec.items.values().map(|i| i.week).max();
                if let Some(week) = latest {
                    let ids: Vec<&str> = rec.items.keys().map(String::as_str).collect();
                    matcher.note_recommended(key, &ids, week, rec.new_in_week(week));
                }
            }
        }
        Ok(())
    }
}
