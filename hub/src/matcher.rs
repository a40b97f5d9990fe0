//! The hub's incremental matching state: the content library index and, per household, what it
//! needs to decide who to re-match.
//!
//! This module owns *which households need matching* and the bookkeeping between runs; the
//! scoring itself is [`cunyun_protocol::matching`]. Per household it keeps only a compact state
//! (the tag set as a bitmap, the items already recommended, how many new items it got this week),
//! about a hundred bytes, so a province of millions fits; profiles themselves stay in the store.
//!
//! What makes a household dirty (to be matched again):
//! - its `hh` document changed ([`Matcher::upsert_household`]);
//! - a content item was added or changed whose tags it has and whose regions contain its village
//!   ([`Matcher::upsert_content`]), or an item it was recommended was removed;
//! - a new week began ([`Matcher::set_today`]): everyone may get new items again.
//!
//! [`Matcher::match_households`] matches a batch on every core and records the picks; the caller
//! writes them as `rec` documents.

use std::collections::{BTreeSet, HashMap};

use cunyun_protocol::area::AreaScope;
use cunyun_protocol::fields::Date;
use cunyun_protocol::household::HouseholdProfile;
use cunyun_protocol::key::DocKey;
use cunyun_protocol::library::ContentMeta;
use cunyun_protocol::matching::{household_tags, Library, Pick, Scratch, Slot, DEFAULT_PER_WEEK};
use cunyun_protocol::rec::Week;
use cunyun_protocol::taxonomy::Tag;

/// A set of tags as a bitmap (98 tags fit in two words).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct TagBits([u64; 2]);

impl TagBits {
    fn insert(&mut self, t: Tag) {
        let i = t as usize;
        self.0[i / 64] |= 1 << (i % 64);
    }

    fn contains(&self, t: Tag) -> bool {
        let i = t as usize;
        self.0[i / 64] & (1 << (i % 64)) != 0
    }

    fn of(tags: impl IntoIterator<Item = Tag>) -> TagBits {
        let mut b = TagBits::default();
        for t in tags {
            b.insert(t);
        }
        b
    }

    fn intersects(&self, other: &TagBits) -> bool {
        (self.0[0] & other.0[0]) | (self.0[1] & other.0[1]) != 0
    }
}

/// What the hub remembers about one household between runs.
#[derive(Debug, Clone, Default)]
struct HhState {
    tags: TagBits,
    /// Items already recommended (or viewed): never recommended again.
    seen: Vec<Slot>,
    /// The week of the last new items and how many there were.
    week: Option<Week>,
    new_this_week: u8,
}

/// The incremental matching state (see the module documentation).
pub struct Matcher {
    library: Library,
    per_week: usize,
    households: HashMap<DocKey, HhState>,
    dirty: BTreeSet<DocKey>,
    threads: usize,
}

impl Matcher {
    /// An empty matcher as of `today`, giving at most `per_week` new items per household per week.
    pub fn new(today: Date, per_week: usize) -> Matcher {
        Matcher {
            library: Library::new(today),
            per_week,
            households: HashMap::new(),
            dirty: BTreeSet::new(),
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }

    /// A matcher with the default weekly cap.
    pub fn with_defaults(today: Date) -> Matcher {
        Matcher::new(today, DEFAULT_PER_WEEK)
    }

    /// The content library.
    pub fn library(&self) -> &Library {
        &self.library
    }

    /// Number of households known.
    pub fn households(&self) -> usize {
        self.households.len()
    }

    /// Number of households waiting to be matched.
    pub fn dirty_len(&self) -> usize {
        self.dirty.len()
    }

    /// Every household with its tags and how many items it was recommended.
    pub fn household_summaries(&self) -> impl Iterator<Item = (&DocKey, Vec<Tag>, usize)> + '_ {
        self.households.iter().map(|(k, st)| {
            let tags = Tag::ALL
                .iter()
                .copied()
                .filter(|&t| st.tags.contains(t))
                .collect();
            (k, tags, st.seen.len())
        })
    }

    /// Takes the households waiting to be matched, in key order.
    pub fn take_dirty(&mut self) -> Vec<DocKey> {
        std::mem::take(&mut self.dirty).into_iter().collect()
    }

    /// Moves to another day; a new week makes every household eligible for new items.
    pub fn set_today(&mut self, today: Date) {
        let old = Week::of(self.library.today());
        self.library.set_today(today);
        if Week::of(today) != old {
            self.dirty.extend(self.households.keys().cloned());
        }
    }

    /// Records a household's (new or changed) profile and marks it dirty.
    pub fn upsert_household(&mut self, key: &DocKey, profile: &HouseholdProfile) {
        let tags = TagBits::of(household_tags(profile).into_iter().map(|w| w.tag));
        self.households.entry(key.clone()).or_default().tags = tags;
        self.dirty.insert(key.clone());
    }

    /// Forgets a household.
    pub fn remove_household(&mut self, key: &DocKey) {
        self.households.remove(key);
        self.dirty.remove(key);
    }

    /// Records items a household was already recommended (from its stored `rec` document) or
    /// viewed (from feedback), so they are never recommended again; `week_count` is how many of
    /// them were new in `week`.
    pub fn note_recommended(&mut self, key: &DocKey, ids: &[&str], week: Week, week_count: usize) {
        let slots: Vec<Slot> = ids.iter().filter_map(|id| self.library.slot(id)).collect();
        let st = self.households.entry(key.clone()).or_default();
        for s in slots {
            if !st.seen.contains(&s) {
                st.seen.push(s);
            }
        }
        if st.week.is_none_or(|w| w < week) {
            st.week = Some(week);
            st.new_this_week = week_count.min(usize::from(u8::MAX)) as u8;
        }
    }

    /// Adds or changes a content item and marks every household it may concern dirty.
    pub fn upsert_content(&mut self, id: &str, meta: ContentMeta) {
        let tags = TagBits::of(meta.tags.iter().copied());
        let regions: Vec<AreaScope> = meta.regions.clone();
        self.library.upsert(id, meta);
        for (key, st) in &self.households {
            if st.tags.intersects(&tags)
                && (regions.is_empty() || regions.iter().any(|r| r.contains(key.area())))
            {
                self.dirty.insert(key.clone());
            }
        }
    }

    /// Removes a content item; households it was recommended to are marked dirty (their `rec`
    /// documents drop it).
    pub fn remove_content(&mut self, id: &str) -> bool {
        let Some(slot) = self.library.slot(id) else {
            return false;
        };
        self.library.remove(id);
        for (key, st) in &self.households {
            if st.seen.contains(&slot) {
                self.dirty.insert(key.clone());
            }
        }
        true
    }

    /// Matches `batch` (households and their current profiles) on every core, records the picks
    /// (they count against this week's cap and are never recommended again) and returns them in
    /// the batch's order.
    pub fn match_households(&mut self, batch: &[(DocKey, HouseholdProfile)]) -> Vec<Vec<Pick>> {
        let week = Week::of(self.library.today());
        let threads = self.threads.clamp(1, batch.len().max(1));
        let chunk = batch.len().div_ceil(threads).max(1);
        let lib = &self.library;
        let households = &self.households;
        let per_week = self.per_week;
        let results: Vec<(TagBits, Vec<Pick>)> = std::thread::scope(|s| {
            let handles: Vec<_> = batch
                .chunks(chunk)
                .map(|part| {
                    s.spawn(move || {
                        let mut scratch = Scratch::default();
                        part.iter()
                            .map(|(key, profile)| {
                                let tags = household_tags(profile);
                                let (seen, used): (&[Slot], usize) = match households.get(key) {
                                    Some(st) => (
                                        &st.seen,
                                        if st.week == Some(week) {
                                            usize::from(st.new_this_week)
                                        } else {
                                            0
                                        },
                                    ),
                                    None => (&[], 0),
                                };
                                let limit = per_week.saturating_sub(used);
                                let picks =
                                    lib.recommend(profile, &tags, seen, limit, &mut scratch);
                                (TagBits::of(tags.iter().map(|w| w.tag)), picks)
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap_or_default())
                .collect()
        });
        let mut out = Vec::with_capacity(results.len());
        for ((key, _), (tags, picks)) in batch.iter().zip(results) {
            let st = self.households.entry(key.clone()).or_default();
            st.tags = tags;
            if st.week != Some(week) {
                st.week = Some(week);
                st.new_this_week = 0;
            }
            for p in &picks {
                st.seen.push(p.slot);
                st.new_this_week = st.new_this_week.saturating_add(1);
            }
            self.dirty.remove(key);
            out.push(picks);
        }
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use cunyun_protocol::area::AreaCode;
    use cunyun_protocol::household::{HerdEntry, Livestock};
    use cunyun_protocol::key::Kind;

    fn key(v: &str, id: &str) -> DocKey {
        DocKey::new(AreaCode::parse(v).unwrap(), Kind::Hh, id).unwrap()
    }

    fn pig_household(v: &str) -> HouseholdProfile {
        let mut p = HouseholdProfile::new(AreaCode::parse(v).unwrap(), 1, 2);
        p.age_18_59 = 2;
        p.livestock
            .insert(Livestock::Pig, HerdEntry { herd_band: 1 });
        p
    }

    fn item(title: &str, tags: &[&str], regions: &[&str]) -> ContentMeta {
        ContentMeta::from_json(&serde_json::json!({
            "title": title, "tags": tags, "regions": regions, "format": "audio",
            "bytes": 1000, "review_date": "2026-01-01"
        }))
        .unwrap()
    }

    #[test]
    fn weekly_cap_seen_items_and_dirty_tracking() {
        let today = Date::parse("2026-04-15").unwrap();
        let mut m = Matcher::new(today, 2);
        for i in 0..5 {
            m.upsert_content(&format!("asf{i}"), item("猪瘟", &["liv.asf"], &[]));
        }
        let k = key("511424104201", "h1");
        let p = pig_household("511424104201");
        m.upsert_household(&k, &p);
        assert_eq!(m.take_dirty(), vec![k.clone()]);
        let r = m.match_households(&[(k.clone(), p.clone())]);
        assert_eq!(r[0].len(), 2);
        // Same week: the cap is used up.
        let r2 = m.match_households(&[(k.clone(), p.clone())]);
        assert!(r2[0].is_empty());
        // Next week: two more, never the first two again.
        m.set_today(Date::parse("2026-04-22").unwrap());
        assert_eq!(m.dirty_len(), 1);
        let r3 = m.match_households(&[(k.clone(), p.clone())]);
        assert_eq!(r3[0].len(), 2);
        let first: Vec<&str> = r[0].iter().map(|p| p.content_id.as_str()).collect();
        assert!(r3[0]
            .iter()
            .all(|p| !first.contains(&p.content_id.as_str())));
        assert_eq!(m.dirty_len(), 0);
    }

    #[test]
    fn content_changes_dirty_only_concerned_households() {
        let mut m = Matcher::with_defaults(Date::parse("2026-04-15").unwrap());
        let here = key("511424104201", "h1");
        let there = key("513401104201", "h2");
        m.upsert_household(&here, &pig_household("511424104201"));
        m.upsert_household(&there, &pig_household("513401104201"));
        m.take_dirty();
        // A tag neither household has: nobody.
        m.upsert_content("kiwi", item("猕猴桃", &["plt.kiwi"], &[]));
        assert_eq!(m.dirty_len(), 0);
        // Pig content for one county: only that county's household.
        m.upsert_content("asf", item("猪瘟", &["liv.asf"], &["511424"]));
        assert_eq!(m.take_dirty(), vec![here.clone()]);
        // Province-wide pig content: both.
        m.upsert_content("asf2", item("猪瘟2", &["liv.asf"], &[]));
        assert_eq!(m.take_dirty().len(), 2);
        // Removing an item re-matches only the households it was recommended to.
        m.match_households(&[(here.clone(), pig_household("511424104201"))]);
        assert!(m.remove_content("asf"));
        assert_eq!(m.take_dirty(), vec![here.clone()]);
        m.remove_household(&here);
        assert_eq!(m.households(), 1);
    }

    #[test]
    fn noted_recommendations_are_not_repeated() {
        let mut m = Matcher::new(Date::parse("2026-04-15").unwrap(), 3);
        m.upsert_content("a", item("猪瘟", &["liv.asf"], &[]));
        m.upsert_content("b", item("养猪", &["liv.pig"], &[]));
        let k = key("511424104201", "h1");
        m.note_recommended(&k, &["a"], Week::of(Date::parse("2026-04-15").unwrap()), 2);
        let r = m.match_households(&[(k, pig_household("511424104201"))]);
        let ids: Vec<&str> = r[0].iter().map(|p| p.content_id.as_str()).collect();
        assert_eq!(ids, vec!["b"]);
    }
}
