//! Matching rounds: from the hub's store and library to `rec` documents in the store.
//!
//! This module owns one round of the hub's work ([`Engine::round`]), run periodically by the hub
//! and on demand:
//!
//! 1. If the store has had no write since the last round began, the library has not changed and the
//!    day is the same, there is nothing to do.
//! 2. The library's items are loaded into the [`Matcher`] when the library changed.
//! 3. What changed is read from the store's change feed ([`HubStore::changes_since`]) from the
//!    watermark of the last round — or, on a *full pass*, the whole province's index is listed:
//!    on the first round ever (or when the saved state follows another library, other budgets or
//!    another week), when the library or the push-down budgets changed, and when a new week
//!    began. `hh` documents whose heads digest differs from the last one seen (new or changed
//!    households: synced up from villages) are read as [`HouseholdProfile`]s; the first time a
//!    household is seen in this process, its stored `rec` document (if any) tells the matcher
//!    what it was already recommended (so matching state is rebuilt lazily, per household,
//!    after a restart). After the round's writes are durable the feed's next watermark is
//!    saved ([`HubStore::meta_put`], [`STATE_META`]); a restarted engine resumes from it.
//!    The round after a resumed one is a full pass: until it ran, coverage
//!    ([`Engine::coverage`]) counts only the households seen since the start.
//! 4. Every dirty household is matched; each household that got new items (or whose `rec` holds
//!    items no longer in the library) gets its `rec` document updated — loaded, changed with
//!    [`Rec::write_to`] (only what differs), and committed in one durable batch per 1,000.
//!
//! 5. Needs (`need`) new or changed since the last round — or every need when an `expert`
//!    document changed — get expert suggestions ([`suggest_experts`]) written as their `match`
//!    document when they changed; an open need with suggestions becomes `matched` (the status
//!    change syncs back down with the need).
//! 6. Feedback (`fb`) documents new or changed since the last round are read and summarised
//!    (reached, viewed, helped) for [`Engine::coverage`]; an unreadable one counts as nothing.
//! 7. The push-down plan: every village whose `rec` documents changed (every village with `rec`
//!    documents in the first round after start, so a changed budget takes effect) is planned
//!    again within its byte budget ([`PushdownConfig`], [`Engine::push_plan`]), and its `rec`
//!    items get `push` = whether their file was chosen (only documents whose flags differ are
//!    written). The engine keeps each village's file demand in memory (`VillagePlan`: per file
//!    its size and households, per `rec` document its files — built from the documents once per
//!    village after start), so a round loads only the `rec` documents it wrote plus those holding
//!    a file whose choice flipped, not the whole village. A village whose plan could not be
//!    written is planned again next round.
//!
//! The hub only reads `hh` documents: it never asks for, reads or writes `hp` (the sync scope of a
//! hub-role peer refuses them).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use automerge::Automerge;
use cunyun_protocol::area::AreaScope;
use cunyun_protocol::digest::HeadsDigest;
use cunyun_protocol::expert::{suggest_experts, Expert, NeedMatch, Suggestion};
use cunyun_protocol::feedback::Feedback;
use cunyun_protocol::fields::Date;
use cunyun_protocol::household::HouseholdProfile;
use cunyun_protocol::key::{DocKey, Kind};
use cunyun_protocol::matching::{select_for_budget, FileDemand, Library, Pick};
use cunyun_protocol::need::{LocalNeed, NeedStatus};
use cunyun_protocol::rec::{Rec, RecItem, Week};
use serde::Serialize;

use crate::config::PushdownConfig;
use crate::library::ContentLibrary;
use crate::matcher::Matcher;
use crate::store::{FeedPos, HubStore, HubStoreError, HubWrite};

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
    /// `match` documents written (expert suggestions for local needs).
    pub matches_written: usize,
    /// Households dropped from matching and coverage because their tombstone (`del`) arrived.
    pub households_deleted: usize,
    /// Villages whose push-down plan was computed.
    pub villages_planned: usize,
    /// `rec` documents whose `push` flags changed.
    pub plans_written: usize,
}

/// Why a round failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] HubStoreError),
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
    /// Library item id → content id (hex) of its signed manifest.
    content_ids: HashMap<String, String>,
    day: Option<Date>,
    experts: BTreeMap<String, Expert>,
    /// Feedback summaries by `fb` key.
    feedback: BTreeMap<DocKey, crate::coverage::FeedbackSummary>,
    /// Villages whose push-down plan is to be computed, with the `rec` documents written since
    /// their last plan.
    plan_pending: BTreeMap<cunyun_protocol::area::AreaCode, BTreeSet<DocKey>>,
    /// Each village's file demand and current plan, once built.
    plans: HashMap<cunyun_protocol::area::AreaCode, VillagePlan>,
    /// Whether every village with `rec` documents was planned since start (or the saved state
    /// says the plans on record follow this configuration).
    planned_all: bool,
    /// The feed position the next incremental round reads from.
    watermark: FeedPos,
    /// Fingerprint of the library and push-down budgets the matching state follows.
    fingerprint: String,
    /// Whether the saved state was looked at (the first round of this process).
    resumed: bool,
    /// A process that resumed from the saved watermark owes one full pass: until it ran,
    /// coverage counts only the households seen since the start. The round after the resumed
    /// one runs it (so the hub serves and matches at once, and its figures are whole one
    /// round interval later).
    full_pass_owed: bool,
    /// What was saved last ([`Engine::save_state`] writes only when it differs).
    saved: Option<SavedState>,
}

/// What one round's listing (full pass or feed) found to work on.
#[derive(Default)]
struct Seen {
    profiles: BTreeMap<DocKey, HouseholdProfile>,
    changed_needs: Vec<DocKey>,
    experts_changed: bool,
}

/// The engine's durable state ([`HubStore::meta_put`] under [`STATE_META`]): where the feed
/// was read to, and what the matching done so far followed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
struct SavedState {
    /// The feed position to read from next.
    watermark: u64,
    /// [`Engine::fingerprint`] of the library and push-down budgets.
    fingerprint: String,
    /// The matching day (its week decides the weekly caps).
    day: String,
}

/// The metadata name of the engine's [`SavedState`].
pub const STATE_META: &str = "engine.round";

/// The hub's matching engine over its store (see the module documentation).
pub struct Engine {
    store: Arc<dyn HubStore>,
    scope: AreaScope,
    pushdown: PushdownConfig,
    state: Mutex<State>,
}

use cunyun_platform::clock::now_ms;

impl Engine {
    /// An engine over `store` for the hub's `scope`, giving at most `per_week` new items per
    /// household per week.
    pub fn new(store: Arc<dyn HubStore>, scope: AreaScope, today: Date, per_week: usize) -> Engine {
        Engine {
            store,
            scope,
            pushdown: PushdownConfig::default(),
            state: Mutex::new(State {
                matcher: Matcher::new(today, per_week),
                known: HashMap::new(),
                store_writes: u64::MAX,
                library_version: 0,
                library_ids: HashSet::new(),
                content_ids: HashMap::new(),
                day: None,
                experts: BTreeMap::new(),
                feedback: BTreeMap::new(),
                plan_pending: BTreeMap::new(),
                plans: HashMap::new(),
                planned_all: false,
                watermark: FeedPos::START,
                fingerprint: String::new(),
                resumed: false,
                full_pass_owed: false,
                saved: None,
            }),
        }
    }

    /// The same engine with these push-down budgets (default: [`PushdownConfig::default`]).
    pub fn with_pushdown(mut self, pushdown: PushdownConfig) -> Engine {
        self.pushdown = pushdown;
        self
    }

    /// The configured byte budget of `village`.
    pub fn budget_bytes(&self, village: &cunyun_protocol::area::AreaCode) -> u64 {
        self.pushdown.budget_bytes(village)
    }

    /// Households known to the matcher.
    pub fn households(&self) -> usize {
        self.state
            .lock()
            .map(|s| s.matcher.households())
            .unwrap_or(0)
    }

    /// Which recommended files to push to `village` within `budget` bytes: every rendition its
    /// `rec` documents name (with the content id of a signed manifest, so a node can fetch it),
    /// with its size and how many households it was recommended to, chosen by
    /// [`select_for_budget`] (most households per byte first). Returns the chosen files, then
    /// the ones left out.
    pub fn push_plan(
        &self,
        village: &cunyun_protocol::area::AreaCode,
        budget: u64,
    ) -> Result<(Vec<FileDemand>, Vec<FileDemand>), EngineError> {
        Ok(plan_of(&self.village_recs(village)?, budget))
    }

    /// The `rec` documents of `village` (unreadable ones skipped).
    fn village_recs(
        &self,
        village: &cunyun_protocol::area::AreaCode,
    ) -> Result<Vec<(DocKey, Automerge, Rec)>, EngineError> {
        let mut out = Vec::new();
        for (key, _) in self.store.entries(&village.scope(), Some(Kind::Rec))? {
            let Some(doc) = self.store.get(&key)? else {
                continue;
            };
            match Rec::read_from(&doc) {
                Ok(rec) => out.push((key, doc, rec)),
                Err(e) => {
                    tracing::warn!(key = %key, error = %e, "rec document unreadable; not planned")
                }
            }
        }
        Ok(out)
    }

    /// Plans `village` within its configured budget after its `rec` documents `written` changed
    /// (see step 7 of the module doc) and writes each affected `rec` item's `push` flag where it
    /// differs. Returns the number of `rec` documents written.
    fn plan_village(
        &self,
        plans: &mut HashMap<cunyun_protocol::area::AreaCode, VillagePlan>,
        village: &cunyun_protocol::area::AreaCode,
        written: &BTreeSet<DocKey>,
    ) -> Result<usize, EngineError> {
        let budget = self.pushdown.budget_bytes(village);
        let mut docs: BTreeMap<DocKey, (Automerge, Rec)> = BTreeMap::new();
        let plan = match plans.entry(*village) {
            std::collections::hash_map::Entry::Occupied(e) => {
                let plan = e.into_mut();
                for key in written {
                    match self.store.get(key)?.map(|d| (Rec::read_from(&d), d)) {
                        Some((Ok(rec), doc)) => {
                            plan.set_rec(key, Some(&rec));
                            docs.insert(key.clone(), (doc, rec));
                        }
                        Some((Err(_), _)) | None => plan.set_rec(key, None),
                    }
                }
                let flipped: HashSet<u32> = plan.replan(budget).into_iter().collect();
                if !flipped.is_empty() {
                    let holders: Vec<DocKey> = plan
                        .by_rec
                        .iter()
                        .filter(|(k, files)| {
                            !docs.contains_key(*k) && files.iter().any(|f| flipped.contains(f))
                        })
                        .map(|(k, _)| k.clone())
                        .collect();
                    for key in holders {
                        if let Some(doc) = self.store.get(&key)? {
                            if let Ok(rec) = Rec::read_from(&doc) {
                                docs.insert(key, (doc, rec));
                            }
                        }
                    }
                }
                plan
            }
            std::collections::hash_map::Entry::Vacant(e) => {
                let mut plan = VillagePlan::default();
                for (key, doc, rec) in self.village_recs(village)? {
                    plan.set_rec(&key, Some(&rec));
                    docs.insert(key, (doc, rec));
                }
                plan.replan(budget);
                e.insert(plan)
            }
        };
        let mut writes = Vec::new();
        for (key, (mut doc, mut rec)) in docs {
            let mut changed = false;
            for (id, item) in rec.items.iter_mut() {
                let push = plan.is_chosen(id, &item.rendition);
                if item.push != push {
                    item.push = push;
                    changed = true;
                }
            }
            if changed {
                if let Some(w) = commit_view(&mut doc, &key, |tx| rec.write_to(tx))? {
                    writes.push(w);
                }
            }
        }
        let written = writes.len();
        if !writes.is_empty() {
            self.store.apply(writes, Vec::new())?;
        }
        tracing::debug!(
            target: "cunyun::_events::push_plan",
            village = %village,
            budget,
            files = plan.files.len(),
            pushed = plan.chosen.iter().filter(|c| **c).count(),
            recs_written = written
        );
        Ok(written)
    }

    /// Runs `f` while no matching round runs: operator writes to documents a round also writes
    /// (`need` status, `expert`) go through here, so the two never commit on the same heads.
    pub fn exclusive<T>(&self, f: impl FnOnce() -> T) -> T {
        let _guard = self.state.lock();
        f()
    }

    /// Coverage figures per area from the matching state.
    pub fn coverage(&self) -> crate::coverage::Coverage {
        self.state
            .lock()
            .map(|s| {
                let mut c = s.matcher.coverage();
                for (key, fb) in &s.feedback {
                    c.add_feedback(*key.area(), *fb);
                }
                c
            })
            .unwrap_or_default()
    }

    /// Runs one round as of `today` (blocking: call it off the async runtime).
    pub fn round(&self, library: &ContentLibrary, today: Date) -> Result<RoundReport, EngineError> {
        let mut report = RoundReport::default();
        let mut guard = self.state.lock().map_err(|_| EngineError::Rec {
            key: String::new(),
            message: "匹配状态锁已损坏".into(),
        })?;
        let st = &mut *guard;
        let writes = self.store.writes();
        let lib_version = library.version();
        if writes == st.store_writes
            && lib_version == st.library_version
            && st.day == Some(today)
            && !st.full_pass_owed
        {
            return Ok(report);
        }
        report.ran = true;
        let week_changed = st.day.is_some_and(|d| Week::of(d) != Week::of(today));
        let lib_changed = lib_version != st.library_version;
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
            st.content_ids = records
                .iter()
                .filter_map(|r| Some((r.id.clone(), r.content.clone()?)))
                .collect();
            for r in records {
                if st.matcher.library().get(&r.id) != Some(&r.meta) {
                    st.matcher.upsert_content(&r.id, r.meta);
                }
            }
            st.library_ids = ids;
            st.library_version = lib_version;
        }
        // Where to look: the whole province (a full pass) or only what the feed lists.
        let full = self.decide_full_pass(st, library, today, lib_changed, week_changed)?;
        let mut seen = Seen::default();
        let next_watermark = if full {
            // Taken before the listing: anything committed later is in the next round's feed.
            let mark = self.store.watermark()?;
            for (key, entry) in self.store.entries(&self.scope, None)? {
                if key.kind() == Kind::Rec && !st.planned_all {
                    st.plan_pending.entry(*key.area()).or_default();
                }
                self.note_key(st, &mut report, &mut seen, key, entry.digest)?;
            }
            mark
        } else {
            let page = self.store.changes_since(st.watermark)?;
            for row in page.rows {
                if self.scope.contains(row.key.area()) {
                    self.note_key(st, &mut report, &mut seen, row.key, row.digest)?;
                }
            }
            page.next
        };
        let Seen {
            mut profiles,
            changed_needs,
            experts_changed,
        } = seen;
        // Match every dirty household, in batches.
        let dirty = st.matcher.take_dirty();
        for keys in dirty.chunks(BATCH) {
            let mut batch = Vec::with_capacity(keys.len());
            for k in keys {
                let p = match profiles.remove(k) {
                    Some(p) => p,
                    None => match self.store.get(k)? {
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
            report.items_added += results.iter().map(Vec::len).sum::<usize>();
            let jobs: Vec<RecJob<'_>> = batch
                .iter()
                .zip(&results)
                .map(|((key, profile), picks)| RecJob {
                    key: key.with_kind(Kind::Rec),
                    village: profile.village,
                    picks,
                })
                .collect();
            let store = self.store.as_ref();
            let writes = rec_writes(&jobs, st.matcher.library(), &st.content_ids, today, |k| {
                store.get(k)
            })?;
            // A household deleted while this round ran gets no `rec` document.
            let mut writes = writes;
            writes.retain(|w| !matches!(crate::store::deleted(store, &w.key), Ok(true)));
            report.recs_written += writes.len();
            let written: Vec<DocKey> = writes.iter().map(|w| w.key.clone()).collect();
            if !writes.is_empty() {
                self.store.apply(writes, Vec::new())?;
            }
            for key in written {
                st.plan_pending.entry(*key.area()).or_default().insert(key);
            }
        }
        let needs = if experts_changed {
            // Every need: one index range of need entries.
            self.store
                .entries(&self.scope, Some(Kind::Need))?
                .into_iter()
                .map(|(k, _)| k)
                .collect()
        } else {
            changed_needs
        };
        report.matches_written = self.match_needs(&st.experts, &needs, today)?;
        st.planned_all = true;
        while let Some((village, keys)) = st.plan_pending.pop_first() {
            match self.plan_village(&mut st.plans, &village, &keys) {
                Ok(n) => report.plans_written += n,
                Err(e) => {
                    // Built again from the documents next round.
                    st.plans.remove(&village);
                    st.plan_pending.insert(village, keys);
                    return Err(e);
                }
            }
            report.villages_planned += 1;
        }
        // The count from before the scan: anything written since (synced in during this round, or
        // our own writes) makes the next round look again.
        st.store_writes = writes;
        // Every write of this round is durable (apply returned): the next round, in this
        // process or after a restart, reads the feed from here.
        st.watermark = next_watermark.max(st.watermark);
        self.save_state(st, today)?;
        if report.households_changed > 0 || report.recs_written > 0 {
            tracing::info!(
                target: "cunyun::_events::match_round",
                changed = report.households_changed,
                matched = report.households_matched,
                recs = report.recs_written,
                items = report.items_added,
                villages_planned = report.villages_planned,
                plans = report.plans_written
            );
        }
        Ok(report)
    }

    /// Whether this round lists the whole province (a full pass) rather than reading the
    /// feed: on the first round of the process unless the saved state follows the same library,
    /// budgets and week (then the feed is read from the saved watermark and matching state is
    /// rebuilt per household from its `rec` document when it changes); when the library or the
    /// budgets changed; when a new week began (every household may get new items).
    fn decide_full_pass(
        &self,
        st: &mut State,
        library: &ContentLibrary,
        today: Date,
        lib_changed: bool,
        week_changed: bool,
    ) -> Result<bool, EngineError> {
        let mut full = week_changed;
        if lib_changed {
            let fp = self.fingerprint(library);
            full |= fp != st.fingerprint;
            st.fingerprint = fp;
        }
        if st.resumed {
            let owed = std::mem::take(&mut st.full_pass_owed);
            return Ok(full || owed);
        }
        st.resumed = true;
        // Experts are few and every need is matched against all of them: read them once.
        for (key, entry) in self.store.entries(&self.scope, Some(Kind::Expert))? {
            st.known.insert(key.clone(), entry.digest);
            match self.store.get(&key)?.map(|d| Expert::read_from(&d)) {
                Some(Ok(e)) => {
                    st.experts.insert(key.id().to_string(), e);
                }
                Some(Err(e)) => {
                    tracing::warn!(key = %key, error = %e, "expert document unreadable");
                }
                None => {}
            }
        }
        let saved = match self.store.meta_get(STATE_META)? {
            Some(bytes) => match serde_json::from_slice::<SavedState>(&bytes) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!(error = %e, "saved matching state unreadable; full pass");
                    None
                }
            },
            None => None,
        };
        let resume = saved.filter(|s| {
            s.fingerprint == st.fingerprint
                && Date::parse(&s.day).is_some_and(|d| Week::of(d) == Week::of(today))
        });
        match resume {
            Some(s) => {
                st.watermark = FeedPos(s.watermark);
                st.saved = Some(s.clone());
                st.full_pass_owed = true;
                // The plans on record follow these budgets; villages are planned again as
                // their `rec` documents change.
                st.planned_all = true;
                tracing::info!(
                    watermark = s.watermark,
                    "matching resumes from the change feed"
                );
                Ok(false)
            }
            None => Ok(true),
        }
    }

    /// A digest of everything the matching state follows besides the documents: the library
    /// (ids, metadata, signed content ids) and the push-down budgets.
    fn fingerprint(&self, library: &ContentLibrary) -> String {
        let mut h = blake3::Hasher::new();
        h.update(
            serde_json::to_string(&library.list())
                .unwrap_or_default()
                .as_bytes(),
        );
        h.update(format!("{:?}", self.pushdown).as_bytes());
        h.finalize().to_hex().to_string()
    }

    /// Saves where the feed was read to (after the round's writes are durable).
    fn save_state(&self, st: &mut State, today: Date) -> Result<(), EngineError> {
        let saved = SavedState {
            watermark: st.watermark.0,
            fingerprint: st.fingerprint.clone(),
            day: today.to_string(),
        };
        if st.saved.as_ref() == Some(&saved) {
            return Ok(());
        }
        let bytes = serde_json::to_vec(&saved).map_err(|e| EngineError::Rec {
            key: STATE_META.to_string(),
            message: e.to_string(),
        })?;
        self.store.meta_put(STATE_META, &bytes)?;
        st.saved = Some(saved);
        Ok(())
    }

    /// Looks at one document the listing (full pass) or the feed named, with its digest now:
    /// households are read and marked for matching, needs noted, feedback summarised, experts
    /// reloaded, tombstones applied (steps 3, 5 and 6 of the module doc). A document whose
    /// digest is the one already seen is skipped (the feed repeats).
    fn note_key(
        &self,
        st: &mut State,
        report: &mut RoundReport,
        seen: &mut Seen,
        key: DocKey,
        digest: HeadsDigest,
    ) -> Result<(), EngineError> {
        let profiles = &mut seen.profiles;
        let changed_needs = &mut seen.changed_needs;
        if key.kind() == Kind::Del {
            // A deleted household: out of matching and coverage (its documents were removed
            // from the store when the tombstone arrived).
            if st.known.insert(key.clone(), digest).is_none() {
                let hh = key.with_kind(Kind::Hh);
                let fb = key.with_kind(Kind::Fb);
                st.matcher.remove_household(&hh);
                st.known.remove(&hh);
                st.known.remove(&fb);
                st.feedback.remove(&fb);
                profiles.remove(&hh);
                // Its `rec` is gone too: the village's plan no longer counts its files.
                st.plan_pending
                    .entry(*key.area())
                    .or_default()
                    .insert(key.with_kind(Kind::Rec));
                report.households_deleted += 1;
            }
            return Ok(());
        }
        if !matches!(key.kind(), Kind::Hh | Kind::Need | Kind::Expert | Kind::Fb)
            || st.known.get(&key) == Some(&digest)
        {
            return Ok(());
        }
        if key.kind() != Kind::Hh {
            st.known.insert(key.clone(), digest);
            if key.kind() == Kind::Need {
                changed_needs.push(key);
                return Ok(());
            }
            if key.kind() == Kind::Fb {
                match self.store.get(&key)?.map(|d| Feedback::read_from(&d)) {
                    Some(Ok(fb)) => {
                        st.feedback
                            .insert(key, crate::coverage::FeedbackSummary::of(&fb));
                    }
                    Some(Err(e)) => {
                        tracing::warn!(key = %key, error = %e, "feedback document unreadable");
                        st.feedback.remove(&key);
                    }
                    None => {
                        st.feedback.remove(&key);
                    }
                }
                return Ok(());
            }
            seen.experts_changed = true;
            match self.store.get(&key)?.map(|d| Expert::read_from(&d)) {
                Some(Ok(e)) => {
                    st.experts.insert(key.id().to_string(), e);
                }
                Some(Err(e)) => {
                    tracing::warn!(key = %key, error = %e, "expert document unreadable");
                    st.experts.remove(key.id());
                }
                None => {
                    st.experts.remove(key.id());
                }
            }
            return Ok(());
        }
        let first = st.known.insert(key.clone(), digest).is_none();
        let Some(doc) = self.store.get(&key)? else {
            return Ok(());
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
        Ok(())
    }

    /// Suggests experts for each need in `needs` and writes its `match` document when the
    /// suggestions changed; an open need with suggestions becomes `matched`. Returns the number of
    /// `match` documents written.
    fn match_needs(
        &self,
        experts: &BTreeMap<String, Expert>,
        needs: &[DocKey],
        today: Date,
    ) -> Result<usize, EngineError> {
        let mut writes = Vec::new();
        let mut written = 0;
        for key in needs {
            let Some(mut need_doc) = self.store.get(key)? else {
                continue;
            };
            let need = match LocalNeed::read_from(&need_doc) {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(key = %key, error = %e, "need unreadable; not matched");
                    continue;
                }
            };
            if matches!(need.status, NeedStatus::Resolved | NeedStatus::Closed) {
                continue;
            }
            let suggestions: BTreeMap<String, Suggestion> =
                suggest_experts(&need, experts.iter().map(|(id, e)| (id.as_str(), e)))
                    .into_iter()
                    .collect();
            let match_key = key.with_kind(Kind::Match);
            let existing = self.store.get(&match_key)?;
            let same = existing
                .as_ref()
                .and_then(|d| NeedMatch::read_from(d).ok())
                .is_some_and(|m| m.suggestions == suggestions);
            if !same {
                let m = NeedMatch {
                    area: need.area,
                    updated: today,
                    suggestions: suggestions.clone(),
                };
                let mut doc = existing.unwrap_or_default();
                match commit_view(&mut doc, &match_key, |tx| m.write_to(tx)) {
                    Ok(Some(w)) => {
                        writes.push(w);
                        written += 1;
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(key = %match_key, error = %e, "match document not written");
                        continue;
                    }
                }
            }
            // An open need with suggestions is matched; a matched one whose village declined
            // every suggestion and accepted none falls back to open (待对接), so it reads as
            // waiting for an expert again instead of 已匹配 with nobody to call.
            let next_status = match need.status {
                NeedStatus::Open if !suggestions.is_empty() => Some(NeedStatus::Matched),
                NeedStatus::Matched
                    if suggestions.is_empty() && need.accepted_expert().is_none() =>
                {
                    Some(NeedStatus::Open)
                }
                _ => None,
            };
            if let Some(status) = next_status {
                let mut next = need.clone();
                next.status = status;
                // Never before the need was raised (the hub's date may lag a node's).
                next.updated = Some(need.created.map_or(today, |c| c.max(today)));
                if need.check_transition(&next).is_ok() {
                    match commit_view(&mut need_doc, key, |tx| next.write_to(tx)) {
                        Ok(Some(w)) => writes.push(w),
                        Ok(None) => {}
                        Err(e) => {
                            tracing::warn!(key = %key, error = %e, "need status not updated");
                        }
                    }
                }
            }
        }
        if !writes.is_empty() {
            self.store.apply(writes, Vec::new())?;
        }
        Ok(written)
    }

    fn note_existing_rec(&self, matcher: &mut Matcher, key: &DocKey) -> Result<(), EngineError> {
        let rec_key = key.with_kind(Kind::Rec);
        if let Some(doc) = self.store.get(&rec_key)? {
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

/// One village's file demand and push-down plan, kept by the engine between rounds (step 7 of
/// the module doc). Files are indexed in order of first sight; a file no household wants any
/// more keeps its slot with zero households (never chosen).
#[derive(Debug, Default)]
struct VillagePlan {
    files: Vec<FileDemand>,
    index: HashMap<(String, String), u32>,
    /// Files (indices) of each `rec` document of the village.
    by_rec: HashMap<DocKey, Vec<u32>>,
    /// Whether each file is in the plan.
    chosen: Vec<bool>,
}

impl VillagePlan {
    /// Replaces what `key` contributes to the demand with the items of `rec` (none: the
    /// document is gone or unreadable). Items without a signed manifest take no budget.
    fn set_rec(&mut self, key: &DocKey, rec: Option<&Rec>) {
        for i in self.by_rec.remove(key).unwrap_or_default() {
            if let Some(f) = self.files.get_mut(i as usize) {
                f.households = f.households.saturating_sub(1);
            }
        }
        let Some(rec) = rec else { return };
        let mut mine = Vec::with_capacity(rec.items.len());
        for (id, it) in &rec.items {
            if it.content.is_none() {
                continue;
            }
            let slot = (id.clone(), it.rendition.clone());
            let i = match self.index.get(&slot) {
                Some(&i) => i,
                None => {
                    let i = self.files.len() as u32;
                    self.files.push(FileDemand {
                        content_id: id.clone(),
                        rendition: it.rendition.clone(),
                        bytes: it.bytes,
                        households: 0,
                    });
                    self.chosen.push(false);
                    self.index.insert(slot, i);
                    i
                }
            };
            let f = &mut self.files[i as usize];
            f.bytes = it.bytes;
            f.households += 1;
            mine.push(i);
        }
        self.by_rec.insert(key.clone(), mine);
    }

    /// Chooses again within `budget` ([`select_for_budget`]); returns the files whose choice
    /// changed.
    fn replan(&mut self, budget: u64) -> Vec<u32> {
        let mut now = vec![false; self.files.len()];
        for i in select_for_budget(&self.files, budget) {
            now[i] = true;
        }
        let flipped = (0..now.len())
            .filter(|&i| now[i] != self.chosen[i])
            .map(|i| i as u32)
            .collect();
        self.chosen = now;
        flipped
    }

    /// Whether the plan pushes this item's rendition.
    fn is_chosen(&self, id: &str, rendition: &str) -> bool {
        self.index
            .get(&(id.to_string(), rendition.to_string()))
            .is_some_and(|&i| self.chosen[i as usize])
    }
}

/// The file demand of a village's `rec` documents and the files [`select_for_budget`] picks
/// within `budget` (see [`Engine::push_plan`]).
fn plan_of(recs: &[(DocKey, Automerge, Rec)], budget: u64) -> (Vec<FileDemand>, Vec<FileDemand>) {
    let mut demand: BTreeMap<(&str, &str), FileDemand> = BTreeMap::new();
    for (_, _, rec) in recs {
        for (id, it) in &rec.items {
            if it.content.is_none() {
                // No signed manifest: nothing a node could fetch, so it takes no budget.
                continue;
            }
            demand
                .entry((id.as_str(), it.rendition.as_str()))
                .or_insert_with(|| FileDemand {
                    content_id: id.clone(),
                    rendition: it.rendition.clone(),
                    bytes: it.bytes,
                    households: 0,
                })
                .households += 1;
        }
    }
    let files: Vec<FileDemand> = demand.into_values().collect();
    let chosen = select_for_budget(&files, budget);
    let mut taken = vec![false; files.len()];
    for &i in &chosen {
        taken[i] = true;
    }
    let picked = chosen.iter().map(|&i| files[i].clone()).collect();
    let left = files
        .iter()
        .zip(&taken)
        .filter(|(_, t)| !**t)
        .map(|(f, _)| f.clone())
        .collect();
    (picked, left)
}

/// One household's new picks, to be written into its `rec` document.
pub struct RecJob<'a> {
    /// The `rec` document's key.
    pub key: DocKey,
    /// The household's village.
    pub village: cunyun_protocol::area::AreaCode,
    /// The new items.
    pub picks: &'a [Pick],
}

/// Builds the `rec` document changes for `jobs` on every core: each document is loaded with
/// `load` (or started empty), gets the new picks, loses items no longer live in `library`, and is
/// written with [`Rec::write_to`] (only what differs). Each item's `content` is set from
/// `content_ids` (library item id → content id hex of its signed manifest). Jobs with nothing
/// to change give no write.
pub fn rec_writes<F>(
    jobs: &[RecJob<'_>],
    library: &Library,
    content_ids: &HashMap<String, String>,
    today: Date,
    load: F,
) -> Result<Vec<HubWrite>, EngineError>
where
    F: Fn(&DocKey) -> Result<Option<Automerge>, HubStoreError> + Sync,
{
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, jobs.len().max(1));
    let chunk = jobs.len().div_ceil(threads).max(1);
    let load = &load;
    let parts: Vec<Result<Vec<HubWrite>, EngineError>> = std::thread::scope(|s| {
        let handles: Vec<_> = jobs
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    let mut out = Vec::new();
                    for job in part {
                        if let Some(w) =
                            rec_write(job, library, content_ids, today, load(&job.key)?)?
                        {
                            out.push(w);
                        }
                    }
                    Ok(out)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(EngineError::Rec {
                        key: String::new(),
                        message: "推荐记录写入线程异常退出".into(),
                    })
                })
            })
            .collect()
    });
    let mut writes = Vec::new();
    for p in parts {
        writes.extend(p?);
    }
    Ok(writes)
}

fn rec_write(
    job: &RecJob<'_>,
    library: &Library,
    content_ids: &HashMap<String, String>,
    today: Date,
    existing: Option<Automerge>,
) -> Result<Option<HubWrite>, EngineError> {
    let mut rec = match existing.as_ref().map(Rec::read_from) {
        Some(Ok(r)) => r,
        Some(Err(e)) => {
            tracing::warn!(key = %job.key, error = %e, "rec document unreadable; rewritten");
            Rec::new(job.village, today)
        }
        None => Rec::new(job.village, today),
    };
    let before = rec.items.len();
    rec.items
        .retain(|id, _| library.get(id).is_some_and(|m| m.is_live(today)));
    let pruned = rec.items.len() != before;
    let stale = rec
        .items
        .iter()
        .any(|(id, i)| i.content.as_ref() != content_ids.get(id));
    if job.picks.is_empty() && !pruned && !stale {
        return Ok(None);
    }
    rec.updated = today;
    let week = Week::of(today);
    rec.add(job.picks.iter().map(|p| {
        let title = library.get(&p.content_id).map_or("", |m| m.title.as_str());
        (p.content_id.clone(), RecItem::from_pick(p, title, week))
    }));
    for (id, item) in rec.items.iter_mut() {
        item.content = content_ids.get(id).cloned();
    }
    let mut doc = existing.unwrap_or_default();
    let heads = doc.get_heads();
    doc.set_author(Some(automerge::Author::from(
        HUB_AUTHOR.as_bytes().to_vec(),
    )));
    let mut tx = doc.transaction();
    rec.write_to(&mut tx).map_err(|e| EngineError::Rec {
        key: job.key.to_string(),
        message: e.to_string(),
    })?;
    tx.commit_with(hub_commit("write rec"));
    let chunk = if heads.is_empty() {
        doc.save()
    } else {
        doc.save_after(&heads)
    };
    Ok(Some(HubWrite {
        key: job.key.clone(),
        chunk,
    }))
}

/// The Automerge author of every change the hub makes (`rec`, `match`, need status), so the
/// audit view ([`cunyun_platform::audit::record_changes`]) shows who changed a record.
pub const HUB_AUTHOR: &str = "hub";

/// Commit options of a hub change: its message and time (seconds), read by the audit view.
fn hub_commit(what: &str) -> automerge::transaction::CommitOptions {
    automerge::transaction::CommitOptions::default()
        .with_message(format!("{what} by {HUB_AUTHOR}"))
        .with_time((now_ms() / 1000) as i64)
}

/// Applies `write` to `doc` in one transaction and returns the store write for the change, or
/// `None` when nothing changed.
fn commit_view(
    doc: &mut Automerge,
    key: &DocKey,
    write: impl FnOnce(
        &mut automerge::transaction::Transaction<'_>,
    ) -> Result<(), cunyun_protocol::fields::ViewError>,
) -> Result<Option<HubWrite>, EngineError> {
    let heads = doc.get_heads();
    doc.set_author(Some(automerge::Author::from(
        HUB_AUTHOR.as_bytes().to_vec(),
    )));
    let mut tx = doc.transaction();
    write(&mut tx).map_err(|e| EngineError::Rec {
        key: key.to_string(),
        message: e.to_string(),
    })?;
    tx.commit_with(hub_commit(&format!("write {}", key.kind())));
    if doc.get_heads() == heads {
        return Ok(None);
    }
    let chunk = if heads.is_empty() {
        doc.save()
    } else {
        doc.save_after(&heads)
    };
    Ok(Some(HubWrite {
        key: key.clone(),
        chunk,
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::store::sled::SledHubStore;
    use cunyun_platform::store::StoreConfig;
    use cunyun_protocol::area::AreaCode;
    use cunyun_protocol::taxonomy::Tag;

    #[test]
    fn push_plan_serves_most_households_per_byte_within_the_budget() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn HubStore> = Arc::new(
            SledHubStore::open(&dir.path().join("store"), StoreConfig::default()).unwrap(),
        );
        let village = AreaCode::parse("511424104201").unwrap();
        let today = Date::parse("2026-04-15").unwrap();
        let item = |rendition: &str, bytes: u64| RecItem {
            title: "t".into(),
            rendition: rendition.into(),
            bytes,
            score: 1000,
            week: Week::of(today),
            tags: [Tag::LivAsf].into_iter().collect(),
            reason: String::new(),
            content: Some("ab".repeat(32)),
            push: false,
        };
        let mut writes = Vec::new();
        for h in 0..4 {
            let mut rec = Rec::new(village, today);
            rec.items.insert("audio".into(), item("main", 2_000_000));
            if h < 3 {
                rec.items.insert("video".into(), item("480p", 30_000_000));
            }
            if h == 0 {
                rec.items.insert("leaflet".into(), item("main", 900_000));
                // Without a signed manifest nothing could fetch it: it takes no budget.
                let mut bare = item("main", 10);
                bare.content = None;
                rec.items.insert("bare".into(), bare);
            }
            let key = DocKey::new(village, Kind::Rec, format!("h{h}")).unwrap();
            let mut doc = Automerge::new();
            writes.push(
                commit_view(&mut doc, &key, |tx| rec.write_to(tx))
                    .unwrap()
                    .unwrap(),
            );
        }
        // Another village's recommendations do not count.
        let other = AreaCode::parse("511424104202").unwrap();
        let mut rec = Rec::new(other, today);
        rec.items.insert("video".into(), item("480p", 30_000_000));
        let key = DocKey::new(other, Kind::Rec, "h9").unwrap();
        writes.push(
            commit_view(&mut Automerge::new(), &key, |tx| rec.write_to(tx))
                .unwrap()
                .unwrap(),
        );
        store.apply(writes, Vec::new()).unwrap();
        let engine = Engine::new(store, AreaScope::parse("51").unwrap(), today, 3);
        let (picked, left) = engine.push_plan(&village, 10_000_000).unwrap();
        let ids: Vec<(&str, u32)> = picked
            .iter()
            .map(|f| (f.content_id.as_str(), f.households))
            .collect();
        assert_eq!(ids, vec![("audio", 4), ("leaflet", 1)]);
        assert_eq!(left.len(), 1);
        assert_eq!(
            (left[0].content_id.as_str(), left[0].households),
            ("video", 3)
        );
        let (picked, left) = engine.push_plan(&village, 40_000_000).unwrap();
        assert_eq!(picked.len(), 3);
        assert!(left.is_empty());
        // Every change the hub wrote carries its author and time, for the audit view.
        let docs = engine
            .store
            .entries(&AreaScope::parse("511424").unwrap(), None)
            .unwrap()
            .into_iter()
            .map(|(k, _)| {
                let d = engine.store.get(&k).unwrap().unwrap();
                (k, d)
            });
        let changes = cunyun_platform::audit::record_changes_of(docs, &Default::default(), 100);
        assert_eq!(changes.len(), 5);
        assert!(changes
            .iter()
            .all(|c| c.actor == HUB_AUTHOR && c.ts_ms > 0 && c.detail == "write rec by hub"));

        // The plan is written into the village's rec documents as `push` flags, per the
        // configured budget; raising the budget pushes more; the other village is untouched.
        let plan = |engine: &Engine, written: &[&str]| -> usize {
            let keys: BTreeSet<DocKey> = written.iter().map(|k| k.parse().unwrap()).collect();
            let mut st = engine.state.lock().unwrap();
            engine.plan_village(&mut st.plans, &village, &keys).unwrap()
        };
        let flags = |engine: &Engine, key: &str| -> BTreeMap<String, bool> {
            let key: DocKey = key.parse().unwrap();
            let rec = Rec::read_from(&engine.store.get(&key).unwrap().unwrap()).unwrap();
            rec.items.into_iter().map(|(id, i)| (id, i.push)).collect()
        };
        let mut cfg = PushdownConfig {
            village_budget_mb: 1_000,
            ..PushdownConfig::default()
        };
        cfg.budget_mb
            .insert(AreaScope::parse("511424104201").unwrap(), 10);
        let engine = engine.with_pushdown(cfg.clone());
        assert_eq!(engine.budget_bytes(&village), 10_000_000);
        assert_eq!(plan(&engine, &[]), 4);
        let h0 = flags(&engine, "511424104201/rec/h0");
        assert_eq!(
            h0,
            [
                ("audio", true),
                ("bare", false),
                ("leaflet", true),
                ("video", false)
            ]
            .map(|(k, v)| (k.to_string(), v))
            .into_iter()
            .collect()
        );
        assert!(!flags(&engine, "511424104201/rec/h1")["video"]);
        assert!(!flags(&engine, "511424104202/rec/h9")["video"]);
        // Planning again with the same budget writes nothing.
        assert_eq!(plan(&engine, &[]), 0);
        cfg.budget_mb
            .insert(AreaScope::parse("511424104201").unwrap(), 40);
        let engine = engine.with_pushdown(cfg);
        assert_eq!(plan(&engine, &[]), 3);
        assert!(flags(&engine, "511424104201/rec/h1")["video"]);
        assert!(flags(&engine, "511424104201/rec/h0")["leaflet"]);

        // Incrementally: h3 is now recommended a 9 MB poster (one household: 1/9 MB beats the
        // video's 3/30 MB). Within 40 MB both no longer fit with the rest (2 + 0.9 + 30 + 9 >
        // 40), so the poster takes the video's place: h3 (written) and the video's holders h0–h2
        // (flipped) are rewritten, nothing else is loaded.
        let h3: DocKey = "511424104201/rec/h3".parse().unwrap();
        let mut doc = engine.store.get(&h3).unwrap().unwrap();
        let mut rec = Rec::read_from(&doc).unwrap();
        rec.items.insert("poster".into(), item("main", 9_000_000));
        let w = commit_view(&mut doc, &h3, |tx| rec.write_to(tx))
            .unwrap()
            .unwrap();
        engine.store.apply(vec![w], Vec::new()).unwrap();
        assert_eq!(plan(&engine, &["511424104201/rec/h3"]), 4);
        assert!(flags(&engine, "511424104201/rec/h3")["poster"]);
        for h in ["h0", "h1", "h2"] {
            assert!(
                !flags(&engine, &format!("511424104201/rec/{h}"))["video"],
                "{h}"
            );
        }
        // The incremental plan agrees with one built from the documents.
        let (picked, _) = engine.push_plan(&village, 40_000_000).unwrap();
        let mut ids: Vec<&str> = picked.iter().map(|f| f.content_id.as_str()).collect();
        ids.sort();
        assert_eq!(ids, vec!["audio", "leaflet", "poster"]);
    }

    /// A store that counts what the engine reads through it.
    struct Counting {
        inner: Arc<dyn HubStore>,
        /// Keys loaded with `get`.
        loaded: Mutex<Vec<DocKey>>,
        /// Index entries and feed rows listed.
        listed: std::sync::atomic::AtomicUsize,
    }

    impl Counting {
        fn take(&self) -> (Vec<DocKey>, usize) {
            let loaded = std::mem::take(&mut *self.loaded.lock().unwrap());
            let listed = self.listed.swap(0, std::sync::atomic::Ordering::SeqCst);
            (loaded, listed)
        }
        fn count(&self, n: usize) {
            self.listed
                .fetch_add(n, std::sync::atomic::Ordering::SeqCst);
        }
    }

    impl HubStore for Counting {
        fn backend(&self) -> crate::store::BackendName {
            self.inner.backend()
        }
        fn apply(
            &self,
            writes: Vec<HubWrite>,
            removes: Vec<DocKey>,
        ) -> Result<Vec<crate::store::Applied>, HubStoreError> {
            self.inner.apply(writes, removes)
        }
        fn get(&self, key: &DocKey) -> Result<Option<Automerge>, HubStoreError> {
            self.loaded.lock().unwrap().push(key.clone());
            self.inner.get(key)
        }
        fn entry(&self, key: &DocKey) -> Result<Option<crate::store::HubEntry>, HubStoreError> {
            self.inner.entry(key)
        }
        fn entries(
            &self,
            scope: &AreaScope,
            kind: Option<Kind>,
        ) -> Result<Vec<(DocKey, crate::store::HubEntry)>, HubStoreError> {
            let e = self.inner.entries(scope, kind)?;
            self.count(e.len());
            Ok(e)
        }
        fn entries_range(
            &self,
            start: &[u8],
            end: &[u8],
        ) -> Result<Vec<(DocKey, crate::store::HubEntry)>, HubStoreError> {
            let e = self.inner.entries_range(start, end)?;
            self.count(e.len());
            Ok(e)
        }
        fn watermark(&self) -> Result<FeedPos, HubStoreError> {
            self.inner.watermark()
        }
        fn changes_in_range(
            &self,
            since: FeedPos,
            start: &[u8],
            end: &[u8],
        ) -> Result<Vec<crate::store::FeedRow>, HubStoreError> {
            let rows = self.inner.changes_in_range(since, start, end)?;
            self.count(rows.len());
            Ok(rows)
        }
        fn changes_since(&self, since: FeedPos) -> Result<crate::store::FeedPage, HubStoreError> {
            let p = self.inner.changes_since(since)?;
            self.count(p.rows.len());
            Ok(p)
        }
        fn watch_writes(&self) -> tokio::sync::watch::Receiver<u64> {
            self.inner.watch_writes()
        }
        fn writes(&self) -> u64 {
            self.inner.writes()
        }
        fn stats(&self) -> Result<crate::store::HubStats, HubStoreError> {
            self.inner.stats()
        }
        fn meta_get(&self, name: &str) -> Result<Option<Vec<u8>>, HubStoreError> {
            self.inner.meta_get(name)
        }
        fn meta_put(&self, name: &str, value: &[u8]) -> Result<(), HubStoreError> {
            self.inner.meta_put(name, value)
        }
    }

    fn pig_profile(village: AreaCode, pigs: u8) -> HouseholdProfile {
        let mut p = HouseholdProfile::new(village, 1, 2);
        p.age_18_59 = 2;
        p.livestock.insert(
            cunyun_protocol::household::Livestock::Pig,
            cunyun_protocol::household::HerdEntry { herd_band: pigs },
        );
        p
    }

    fn put_profile(store: &dyn HubStore, key: &DocKey, p: &HouseholdProfile) {
        let mut doc = store.get(key).unwrap().unwrap_or_default();
        let w = commit_view(&mut doc, key, |tx| p.write_to(tx))
            .unwrap()
            .unwrap();
        store.apply(vec![w], Vec::new()).unwrap();
    }

    #[test]
    fn rounds_read_only_what_the_feed_lists_and_a_restart_resumes_from_the_watermark() {
        const N: usize = 200;
        let dir = tempfile::tempdir().unwrap();
        let sled: Arc<dyn HubStore> = Arc::new(
            SledHubStore::open(&dir.path().join("store"), StoreConfig::default()).unwrap(),
        );
        let files = Arc::new(crate::files::HubFiles::open(dir.path()).unwrap());
        let library = ContentLibrary::open(&dir.path().join("library"), files).unwrap();
        let file = dir.path().join("asf.md");
        std::fs::write(&file, "# 防非洲猪瘟\n").unwrap();
        for (i, tag) in ["liv.asf", "liv.pig", "liv.asf"].iter().enumerate() {
            let meta = serde_json::json!({"title": format!("养猪{i}"), "tags": [tag],
                "format": "article", "review_date": "2026-03-01"});
            std::fs::write(&file, format!("# 养猪{i}\n")).unwrap();
            library.add(&meta, &file, &Default::default()).unwrap();
        }
        let village = AreaCode::parse("511424104201").unwrap();
        let keys: Vec<DocKey> = (0..N)
            .map(|i| DocKey::new(village, Kind::Hh, format!("h{i:03}")).unwrap())
            .collect();
        for k in &keys {
            put_profile(sled.as_ref(), k, &pig_profile(village, 1));
        }
        let today = Date::parse("2026-04-15").unwrap();
        let counting = Arc::new(Counting {
            inner: Arc::clone(&sled),
            loaded: Mutex::new(Vec::new()),
            listed: Default::default(),
        });
        let store: Arc<dyn HubStore> = counting.clone();
        let scope = AreaScope::parse("51").unwrap();
        let engine = Engine::new(Arc::clone(&store), scope, today, 2);

        // The first round ever: a full pass over the province.
        let r = engine.round(&library, today).unwrap();
        assert_eq!(r.households_changed, N);
        assert_eq!(r.recs_written, N);
        let (loaded, listed) = counting.take();
        let hh_loaded = loaded.iter().filter(|k| k.kind() == Kind::Hh).count();
        eprintln!(
            "full pass: {} documents loaded ({hh_loaded} hh), {listed} entries listed",
            loaded.len()
        );
        assert_eq!(hh_loaded, N);
        assert!(listed >= N, "{listed}");
        // Its own rec writes come back through the feed: nothing is loaded for them.
        engine.round(&library, today).unwrap();
        let (loaded, _) = counting.take();
        assert!(loaded.is_empty(), "{loaded:?}");

        // One household changes: the next round reads it and nothing else of the province.
        put_profile(sled.as_ref(), &keys[7], &pig_profile(village, 3));
        let r = engine.round(&library, today).unwrap();
        assert_eq!(r.households_changed, 1);
        let (loaded, listed) = counting.take();
        eprintln!(
            "after one change: {} documents loaded ({:?}), {listed} feed rows",
            loaded.len(),
            loaded
        );
        let hh: Vec<&DocKey> = loaded.iter().filter(|k| k.kind() == Kind::Hh).collect();
        assert_eq!(hh, vec![&keys[7]]);
        assert!(loaded.iter().all(|k| k.id() == keys[7].id()), "{loaded:?}");
        assert!(listed <= 3, "{listed} rows listed for one change");
        assert_eq!(engine.households(), N);

        // A restarted engine (same store, same library) resumes from the stored watermark:
        // another changed household is the only one it reads; its matching state comes from
        // its rec document (items already recommended are not recommended again).
        drop(engine);
        let saved: SavedState =
            serde_json::from_slice(&store.meta_get(STATE_META).unwrap().unwrap()).unwrap();
        assert!(saved.watermark > 0);
        let before =
            Rec::read_from(&store.get(&keys[42].with_kind(Kind::Rec)).unwrap().unwrap()).unwrap();
        counting.take();
        put_profile(sled.as_ref(), &keys[42], &pig_profile(village, 3));
        let engine = Engine::new(Arc::clone(&store), scope, today, 2);
        let r = engine.round(&library, today).unwrap();
        let (loaded, listed) = counting.take();
        eprintln!(
            "restart: {} documents loaded ({:?}), {listed} rows listed",
            loaded.len(),
            loaded
        );
        assert_eq!(r.households_changed, 1);
        let hh: Vec<&DocKey> = loaded.iter().filter(|k| k.kind() == Kind::Hh).collect();
        assert_eq!(hh, vec![&keys[42]]);
        assert!(listed <= 3, "{listed} rows listed after a restart");
        let after =
            Rec::read_from(&store.get(&keys[42].with_kind(Kind::Rec)).unwrap().unwrap()).unwrap();
        assert_eq!(
            before.items.keys().collect::<Vec<_>>(),
            after.items.keys().collect::<Vec<_>>(),
            "the weekly cap (2) was used up before the restart: nothing new"
        );
        assert_eq!(
            engine.households(),
            1,
            "state is rebuilt lazily, per changed household"
        );
        // The next round, with nothing written, is the full pass the resume owes: coverage is
        // whole again, and nothing new is recommended (each household's state comes from its
        // rec document).
        let r = engine.round(&library, today).unwrap();
        assert!(r.ran, "the owed full pass runs without a write");
        assert_eq!(r.recs_written, 0, "{r:?}");
        let (_, listed) = counting.take();
        assert!(listed >= N, "{listed}");
        assert_eq!(engine.households(), N);
        assert!(
            !engine.round(&library, today).unwrap().ran,
            "owed once only"
        );

        // A library change means a full pass again.
        let meta = serde_json::json!({"title": "新内容", "tags": ["liv.pig"],
            "format": "article", "review_date": "2026-03-01"});
        std::fs::write(&file, "# 新内容\n").unwrap();
        library.add(&meta, &file, &Default::default()).unwrap();
        engine.round(&library, today).unwrap();
        let (_, listed) = counting.take();
        assert!(listed >= N, "{listed}");
        assert_eq!(engine.households(), N);
    }

    #[test]
    fn a_matched_need_whose_village_declined_every_expert_is_open_again() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn HubStore> = Arc::new(
            SledHubStore::open(&dir.path().join("store"), StoreConfig::default()).unwrap(),
        );
        let files = Arc::new(crate::files::HubFiles::open(dir.path()).unwrap());
        let library = ContentLibrary::open(&dir.path().join("library"), files).unwrap();
        let province = AreaCode::parse("510000000000").unwrap();
        let expert = crate::experts::save(
            store.as_ref(),
            province,
            None,
            &serde_json::json!({"name": "李明", "organisation": "眉山市农业科学研究院",
                "title": "研究员", "fields": {"plt.citrus": true}, "regions": {"511424": true},
                "services": {"onsite": true}}),
            "test",
        )
        .unwrap();
        let need = LocalNeed::from_json(&serde_json::json!({"area": "511424104201",
            "requester": "coop", "title": "柑橘大实蝇防控", "tags": {"plt.citrus": true},
            "contact_role": "合作社理事长", "created": "2026-04-01", "updated": "2026-04-01"}))
        .unwrap();
        let key = need.key("n1").unwrap();
        let mut doc = Automerge::new();
        let w = commit_view(&mut doc, &key, |tx| need.write_to(tx))
            .unwrap()
            .unwrap();
        store.apply(vec![w], Vec::new()).unwrap();
        let today = Date::parse("2026-04-15").unwrap();
        let engine = Engine::new(
            Arc::clone(&store),
            AreaScope::parse("51").unwrap(),
            today,
            2,
        );
        let status = |store: &dyn HubStore| {
            LocalNeed::read_from(&store.get(&key).unwrap().unwrap())
                .unwrap()
                .status
        };

        engine.round(&library, today).unwrap();
        assert_eq!(status(store.as_ref()), NeedStatus::Matched);

        // The village asks for another expert; there is no other: the need waits again.
        let mut doc = store.get(&key).unwrap().unwrap();
        let mut declined = LocalNeed::read_from(&doc).unwrap();
        declined.expert_choice.insert(
            expert.id.clone(),
            cunyun_protocol::need::ExpertChoice::Declined,
        );
        let w = commit_view(&mut doc, &key, |tx| declined.write_to(tx))
            .unwrap()
            .unwrap();
        store.apply(vec![w], Vec::new()).unwrap();
        engine.round(&library, today).unwrap();
        assert_eq!(status(store.as_ref()), NeedStatus::Open);
        let m = NeedMatch::read_from(&store.get(&key.with_kind(Kind::Match)).unwrap().unwrap())
            .unwrap();
        assert!(m.suggestions.is_empty(), "{:?}", m.suggestions);

        // The village takes the expert after all: suggested again, the need is matched.
        let mut doc = store.get(&key).unwrap().unwrap();
        let mut accepted = LocalNeed::read_from(&doc).unwrap();
        accepted.expert_choice.clear();
        accepted.expert_choice.insert(
            expert.id.clone(),
            cunyun_protocol::need::ExpertChoice::Accepted,
        );
        let w = commit_view(&mut doc, &key, |tx| accepted.write_to(tx))
            .unwrap()
            .unwrap();
        store.apply(vec![w], Vec::new()).unwrap();
        engine.round(&library, today).unwrap();
        assert_eq!(status(store.as_ref()), NeedStatus::Matched);
    }
}
