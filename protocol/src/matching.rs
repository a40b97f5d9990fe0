//! Matching: which content items to recommend to a household, and which files to push to a village.
//!
//! This module owns the scorer that the hub runs (and a node may run too): pure functions over a
//! [`HouseholdProfile`], a [`Library`] of content metadata and the date, no I/O.
//!
//! **Household tags** ([`household_tags`]): the tags the trigger rules derive
//! ([`derive_tags`]) plus the household's stated needs. Stated needs outrank derived tags
//! ([`STATED_WEIGHT`] by priority, against [`DERIVED_WEIGHT`]); the default tags every household
//! gets weigh least ([`DEFAULT_WEIGHT`]).
//!
//! **Score** of item *c* for household *h*:
//! `Σ weight(h, t) for t in tags(c) ∩ tags(h)` × season(c, month) × freshness(c, today) ×
//! region(c, village) × audience(c, h) × format(c, h); items the household was already
//! recommended or has viewed are left out (an infinite penalty: a rec document keeps what it
//! recommended, so a new pick is always a new item), and so are expired items, items whose regions
//! do not contain the village and items with no rendition the household can use.
//!
//! - season: [`SEASON_IN`] when the current month is one of the item's months, [`SEASON_NEXT`]
//!   when next month is (lead time to prepare), [`SEASON_ALL_YEAR`] for items without months,
//!   [`SEASON_OFF`] otherwise.
//! - freshness: 1 up to a year after the review date, then falling linearly to
//!   [`FRESHNESS_FLOOR`] at three years.
//! - region: the longest of the item's region prefixes that contains the village decides:
//!   [`region_fit`]; no regions = the whole province.
//! - audience: 1 when the household has a member in one of the item's age bands (or the item has
//!   none), [`AUDIENCE_MISS`] otherwise.
//! - format: the best rendition by the household's media profile and language ([`MediaFit`]),
//!   which is also the rendition recommended.
//!
//! **Selection** ([`Library::recommend`]): first each stated need, priority 1 before 2 before 3
//! before none, gets the best-scoring item carrying its tag that is in season or all-year (an
//! out-of-season item is not forced in; the need competes on score below), so that generic
//! items whose many derived tags add up cannot take every weekly slot from what the household
//! asked for. Then the best candidates by score fill the rest greedily up to the
//! caller's limit (the weekly cap minus what was already recommended this week) with diversity:
//! each pick's score is multiplied by [`DIVERSITY`] for every earlier pick whose main tag (the
//! household tag weighing most among the item's) is the same.
//!
//! **Cost**: the library keeps an inverted index tag → live items, with each item's season ×
//! freshness factor precomputed for the library's date, so matching a household costs the
//! postings of its tags, not the library; the per-item factors that depend on the household
//! (region, audience, format) are computed only for candidates whose upper bound can still enter
//! the best list.
//!
//! **Byte budget** ([`select_for_budget`]): which files to push to a village: greedily the most
//! households served per byte first, while they fit.

use std::collections::HashMap;

use serde::Serialize;

use crate::area::{AreaCode, Level};
use crate::fields::Date;
use crate::household::{Channel, HouseholdProfile, Language};
use crate::library::{ContentMeta, Format, Rendition};
use crate::taxonomy::{Tag, TAG_COUNT};
use crate::triggers::{derive_tags, Reason, DEFAULT_TAGS};

/// Weight of a derived tag.
pub const DERIVED_WEIGHT: f32 = 1.0;
/// Weight of a default tag (every household gets it).
pub const DEFAULT_WEIGHT: f32 = 0.35;
/// Weight of a stated need by priority: 1, 2, 3, none.
pub const STATED_WEIGHT: [f32; 4] = [3.0, 2.6, 2.3, 2.0];
/// Season factor in one of the item's months.
pub const SEASON_IN: f32 = 1.2;
/// Season factor when next month is one of the item's months.
pub const SEASON_NEXT: f32 = 0.8;
/// Season factor of an all-year item.
pub const SEASON_ALL_YEAR: f32 = 1.0;
/// Season factor out of season.
pub const SEASON_OFF: f32 = 0.2;
/// Lowest freshness factor (three years or more after review).
pub const FRESHNESS_FLOOR: f32 = 0.6;
/// Audience factor when nobody in the household is in the item's age bands.
pub const AUDIENCE_MISS: f32 = 0.3;
/// Factor per earlier pick with the same main tag.
pub const DIVERSITY: f32 = 0.5;
/// New items per household per week, by default.
pub const DEFAULT_PER_WEEK: usize = 3;

/// Where a household tag comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TagSource {
    /// Stated by the household, with its priority (1 = most important) if any.
    Stated(Option<u8>),
    /// Derived from the profile by a trigger rule.
    Derived,
    /// A default tag every household gets.
    Default,
}

/// One tag a household wants, with its weight and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WantedTag {
    /// The tag.
    pub tag: Tag,
    /// Its weight in the score.
    pub weight: f32,
    /// Where it comes from.
    pub source: TagSource,
    /// Why, in Chinese (`家中养猪`, `农户自述需求`).
    pub reason: String,
}

/// The household's tags: stated needs and derived tags, each tag once with its highest weight.
pub fn household_tags(p: &HouseholdProfile) -> Vec<WantedTag> {
    let mut out: Vec<WantedTag> = p
        .stated_needs
        .iter()
        .map(|(&tag, need)| {
            let i = need.priority.map_or(3, |p| usize::from(p.clamp(1, 3)) - 1);
            WantedTag {
                tag,
                weight: STATED_WEIGHT[i],
                source: TagSource::Stated(need.priority),
                reason: "农户自述需求".to_string(),
            }
        })
        .collect();
    for (tag, Reason { code, text }) in derive_tags(p) {
        if p.stated_needs.contains_key(&tag) {
            continue;
        }
        let default = code == "default" || DEFAULT_TAGS.contains(&tag);
        out.push(WantedTag {
            tag,
            weight: if default {
                DEFAULT_WEIGHT
            } else {
                DERIVED_WEIGHT
            },
            source: if default {
                TagSource::Default
            } else {
                TagSource::Derived
            },
            reason: text,
        });
    }
    out
}

/// The household's stated needs, most important first (priority 1, 2, 3, then without one).
fn stated_by_priority(tags: &[WantedTag]) -> Vec<Tag> {
    let mut stated: Vec<(u8, Tag)> = tags
        .iter()
        .filter_map(|t| match t.source {
            TagSource::Stated(p) => Some((p.unwrap_or(u8::MAX), t.tag)),
            _ => None,
        })
        .collect();
    stated.sort();
    stated.into_iter().map(|(_, t)| t).collect()
}

/// region × audience × format of an item for a household, or `None` when the item cannot
/// serve it (not for its village, no usable rendition).
fn household_fit(meta: &ContentMeta, profile: &HouseholdProfile, media: &MediaFit) -> Option<f32> {
    let region = region_fit(&meta.regions, &profile.village);
    if region == 0.0 {
        return None;
    }
    let audience =
        if meta.audience.is_empty() || meta.audience.iter().any(|b| b.members(profile) > 0) {
            1.0
        } else {
            AUDIENCE_MISS
        };
    let format = media.best_fit(meta);
    if format <= 0.0 {
        return None;
    }
    Some(region * audience * format)
}

/// The item's tag that weighs most for the household (ties: the smaller tag).
fn main_tag(meta: &ContentMeta, weight: &[f32]) -> Tag {
    meta.tags
        .iter()
        .copied()
        .max_by(|a, b| {
            weight[tag_index(*a)]
                .total_cmp(&weight[tag_index(*b)])
                .then(b.cmp(a))
        })
        .unwrap_or(Tag::SciFrontier)
}

/// Season factor of `months` (empty = all year) in `month`.
pub fn season_fit(months: &std::collections::BTreeSet<u8>, month: u8) -> f32 {
    if months.is_empty() {
        SEASON_ALL_YEAR
    } else if months.contains(&month) {
        SEASON_IN
    } else if months.contains(&(month % 12 + 1)) {
        SEASON_NEXT
    } else {
        SEASON_OFF
    }
}

/// Freshness factor of an item reviewed on `review` as of `today`.
pub fn freshness(review: Date, today: Date) -> f32 {
    let age = today.days_since_epoch() - review.days_since_epoch();
    if age <= 365 {
        return 1.0;
    }
    let t = ((age - 365) as f32 / 730.0).min(1.0);
    1.0 - t * (1.0 - FRESHNESS_FLOOR)
}

/// Region factor of an item for the whole province (no regions).
pub const REGION_ANYWHERE: f32 = 0.9;

/// Region factor of an item with `regions` for a household in `village`: 0 when no region
/// contains the village; otherwise by the level of the longest containing prefix (an item made
/// for the county fits better than one for the whole province).
pub fn region_fit(regions: &[crate::area::AreaScope], village: &AreaCode) -> f32 {
    if regions.is_empty() {
        return REGION_ANYWHERE;
    }
    let best = regions
        .iter()
        .filter(|r| r.contains(village))
        .map(|r| r.level())
        .max();
    match best {
        None => 0.0,
        Some(Level::Province) => 0.9,
        Some(Level::Prefecture) => 1.0,
        Some(Level::County) => 1.1,
        Some(Level::Township) => 1.15,
        Some(Level::Village) => 1.2,
    }
}

/// How well each format and language suits a household, from its media and language profile.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MediaFit {
    format: [f32; 5],
    language: Option<Language>,
}

fn format_index(f: Format) -> usize {
    match f {
        Format::Article => 0,
        Format::Image => 1,
        Format::Audio => 2,
        Format::Video => 3,
        Format::Pdf => 4,
    }
}

impl MediaFit {
    /// The household's format and language preferences.
    ///
    /// Video needs a smartphone that can play it (or a TV, less well); audio always works (the
    /// village loudspeaker, a cadre's phone) and suits households that struggle with phones or
    /// only have elders; articles and images need a smartphone and suit WeChat users; a PDF
    /// leaflet (明白纸) can always be printed by the cadre. The preferred channel adds to its
    /// format.
    pub fn of(p: &HouseholdProfile) -> MediaFit {
        let phone = p.smartphones > 0;
        let mut video: f32 = if phone && p.can_watch_video {
            1.0
        } else if p.has_tv {
            0.4
        } else {
            0.0
        };
        let mut audio: f32 = if p.phone_skill_low || !phone || p.at_home() == p.elders() {
            1.0
        } else {
            0.8
        };
        let mut article: f32 = if p.uses_wechat {
            0.9
        } else if phone {
            0.7
        } else {
            0.3
        };
        if p.phone_skill_low {
            article *= 0.6;
        }
        let image = article * 0.9;
        let mut pdf: f32 = 0.6;
        match p.channel {
            Some(Channel::ShortVideo) if video > 0.0 => video *= 1.1,
            Some(Channel::WechatGroup) => article = article.max(1.0),
            Some(Channel::Loudspeaker) => audio = audio.max(1.1),
            Some(Channel::Paper) | Some(Channel::Visit) => pdf = 1.0,
            _ => {}
        }
        MediaFit {
            format: [article, image, audio, video, pdf],
            language: p.language,
        }
    }

    /// Fit of one rendition: format preference × language fit.
    pub fn rendition(&self, r: &Rendition) -> f32 {
        self.fit(r.format, r.language)
    }

    fn fit(&self, format: Format, language: Language) -> f32 {
        self.format[format_index(format)] * self.language_fit(language, format)
    }

    /// The fit of the best rendition of `meta` (0 when none is usable), without building it.
    pub fn best_fit(&self, meta: &ContentMeta) -> f32 {
        meta.renditions
            .iter()
            .map(|r| self.fit(r.format, r.language))
            .fold(self.fit(meta.format, meta.language), f32::max)
    }

    fn language_fit(&self, lang: Language, format: Format) -> f32 {
        let wanted = self.language.unwrap_or(Language::Mandarin);
        if lang == wanted {
            return 1.0;
        }
        // Sichuanese and Mandarin share the written language and are mutually intelligible.
        let pair = [wanted, lang];
        if pair.contains(&Language::Mandarin) && pair.contains(&Language::Sichuanese) {
            return 0.9;
        }
        if lang == Language::Mandarin {
            // A minority-language household: written Mandarin is often read by the young; spoken
            // Mandarin reaches the old less well.
            return if matches!(format, Format::Audio | Format::Video) {
                0.5
            } else {
                0.7
            };
        }
        0.1
    }

    /// The best rendition of `meta` for the household and its fit, or `None` if none is usable.
    pub fn best(&self, meta: &ContentMeta) -> Option<(Rendition, f32)> {
        let mut best: Option<(Rendition, f32)> = None;
        for r in meta.all_renditions() {
            let fit = self.rendition(&r);
            if fit > 0.0 && best.as_ref().is_none_or(|(_, b)| fit > *b) {
                best = Some((r, fit));
            }
        }
        best
    }
}

/// One library item: its id, metadata and the factors that depend only on the library's date.
#[derive(Debug, Clone)]
struct Item {
    id: String,
    meta: ContentMeta,
    /// season × freshness at the library's date; 0 when the item is expired.
    fixed: f32,
}

/// The content library as the scorer sees it: items and the inverted index tag → live items.
#[derive(Debug, Clone)]
pub struct Library {
    today: Date,
    items: Vec<Option<Item>>,
    by_id: HashMap<String, u32>,
    /// For each tag (by index), the live items carrying it and their fixed factor.
    postings: Vec<Vec<(u32, f32)>>,
    /// By slot: the largest region × audience × format factor the item can get for any
    /// household (an upper bound used to skip hopeless candidates).
    bounds: Vec<f32>,
}

/// The largest format factor [`MediaFit`] gives (a preferred channel's format).
const MAX_FORMAT_FIT: f32 = 1.1;

/// An item's place in a [`Library`]: stable for the item's id while the library lives (slots are
/// never reused, so a household's "already recommended" list never names another item).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Slot(pub u32);

/// One recommended item.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Pick {
    /// The item's slot in the library.
    #[serde(skip)]
    pub slot: Slot,
    /// The content id.
    pub content_id: String,
    /// The rendition recommended (its id; `main` is the main file).
    pub rendition: String,
    /// Its size in bytes.
    pub bytes: u64,
    /// The score.
    pub score: f32,
    /// The household tags the item answers, strongest first.
    pub tags: Vec<Tag>,
    /// Why, in Chinese, e.g. `家中养猪：防非洲猪瘟`.
    pub reason: String,
}

/// Reusable per-thread buffers for [`Library::recommend`].
#[derive(Debug, Default)]
pub struct Scratch {
    acc: Vec<f32>,
    touched: Vec<u32>,
    weight: Vec<f32>,
    order: Vec<(f32, usize)>,
}

/// A candidate kept for the final selection.
#[derive(Debug, Clone, Copy)]
struct Cand {
    item: u32,
    score: f32,
    main_tag: Tag,
}

fn tag_index(t: Tag) -> usize {
    t as usize
}

impl Library {
    /// An empty library as of `today`.
    pub fn new(today: Date) -> Library {
        Library {
            today,
            items: Vec::new(),
            by_id: HashMap::new(),
            postings: vec![Vec::new(); TAG_COUNT],
            bounds: Vec::new(),
        }
    }

    /// The library's date.
    pub fn today(&self) -> Date {
        self.today
    }

    /// Number of items (live or expired).
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether the library has no items.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// The metadata of item `id`.
    pub fn get(&self, id: &str) -> Option<&ContentMeta> {
        let i = *self.by_id.get(id)?;
        self.items
            .get(i as usize)
            .and_then(Option::as_ref)
            .map(|it| &it.meta)
    }

    fn fixed(&self, meta: &ContentMeta) -> f32 {
        if !meta.is_live(self.today) {
            return 0.0;
        }
        season_fit(&meta.months, self.today.month()) * freshness(meta.review_date, self.today)
    }

    /// The slot of item `id`.
    pub fn slot(&self, id: &str) -> Option<Slot> {
        self.by_id.get(id).map(|&s| Slot(s))
    }

    /// The id of the item in `slot`, if it is still in the library.
    pub fn id_at(&self, slot: Slot) -> Option<&str> {
        self.items
            .get(slot.0 as usize)
            .and_then(Option::as_ref)
            .map(|it| it.id.as_str())
    }

    /// Adds or replaces item `id`; a replaced item keeps its slot.
    pub fn upsert(&mut self, id: &str, meta: ContentMeta) {
        let slot = match self.by_id.get(id) {
            Some(&s) => {
                self.unindex(s);
                s
            }
            None => {
                self.items.push(None);
                self.bounds.push(0.0);
                (self.items.len() - 1) as u32
            }
        };
        let fixed = self.fixed(&meta);
        let region_max = if meta.regions.is_empty() {
            REGION_ANYWHERE
        } else {
            meta.regions
                .iter()
                .map(|r| region_fit(std::slice::from_ref(r), &r.area()))
                .fold(0.0, f32::max)
        };
        self.bounds[slot as usize] = region_max * MAX_FORMAT_FIT;
        if fixed > 0.0 {
            for &t in &meta.tags {
                self.postings[tag_index(t)].push((slot, fixed));
            }
        }
        self.items[slot as usize] = Some(Item {
            id: id.to_string(),
            meta,
            fixed,
        });
        self.by_id.insert(id.to_string(), slot);
    }

    fn unindex(&mut self, slot: u32) {
        if let Some(item) = self.items[slot as usize].take() {
            for &t in &item.meta.tags {
                self.postings[tag_index(t)].retain(|&(i, _)| i != slot);
            }
        }
    }

    /// Removes item `id`; whether it was there.
    pub fn remove(&mut self, id: &str) -> bool {
        let Some(slot) = self.by_id.remove(id) else {
            return false;
        };
        self.unindex(slot);
        true
    }

    /// Moves the library to another date: recomputes season and freshness and drops items that
    /// expired from the index.
    pub fn set_today(&mut self, today: Date) {
        self.today = today;
        for p in &mut self.postings {
            p.clear();
        }
        for slot in 0..self.items.len() {
            let Some(item) = self.items[slot].as_ref() else {
                continue;
            };
            let fixed = self.fixed(&item.meta);
            if fixed > 0.0 {
                for &t in &item.meta.tags {
                    self.postings[tag_index(t)].push((slot as u32, fixed));
                }
            }
            if let Some(item) = self.items[slot].as_mut() {
                item.fixed = fixed;
            }
        }
    }

    /// The ids of every item.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.by_id.keys().map(String::as_str)
    }

    /// Up to `limit` new items for the household, best first, never one of `seen` (items
    /// already recommended or viewed) and never an expired one.
    pub fn recommend(
        &self,
        profile: &HouseholdProfile,
        tags: &[WantedTag],
        seen: &[Slot],
        limit: usize,
        scratch: &mut Scratch,
    ) -> Vec<Pick> {
        if limit == 0 || tags.is_empty() {
            return Vec::new();
        }
        let Scratch {
            acc,
            touched,
            weight,
            order,
        } = scratch;
        acc.resize(self.items.len(), 0.0);
        weight.clear();
        weight.resize(TAG_COUNT, 0.0);
        touched.clear();
        for wt in tags {
            let w = &mut weight[tag_index(wt.tag)];
            *w = w.max(wt.weight);
        }
        // Strongest tags first, so the best candidates come early and the bound below prunes
        // more of the rest.
        order.clear();
        order.extend(
            weight
                .iter()
                .enumerate()
                .filter(|(_, &w)| w > 0.0)
                .map(|(i, &w)| (w, i)),
        );
        order.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        for &(w, ti) in order.iter() {
            for &(item, fixed) in &self.postings[ti] {
                let a = &mut acc[item as usize];
                if *a == 0.0 {
                    touched.push(item);
                }
                *a += w * fixed;
            }
        }
        let media = MediaFit::of(profile);
        // Keep the best `keep` candidates; an upper bound (the best possible region, audience
        // and format factors) skips the per-household factors for hopeless ones.
        let keep = limit * 3;
        let mut best: Vec<Cand> = Vec::with_capacity(keep + 1);
        let mut floor = 0.0f32;
        for &item in touched.iter() {
            let base = std::mem::take(&mut acc[item as usize]);
            if base * self.bounds[item as usize] <= floor {
                continue;
            }
            let Some(it) = self.items[item as usize].as_ref() else {
                continue;
            };
            let meta = &it.meta;
            if seen.contains(&Slot(item)) || !meta.is_live(self.today) {
                continue;
            }
            let Some(fit) = household_fit(meta, profile, &media) else {
                continue;
            };
            let score = base * fit;
            if score <= floor && best.len() >= keep {
                continue;
            }
            let main_tag = main_tag(meta, weight);
            best.push(Cand {
                item,
                score,
                main_tag,
            });
            best.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.item.cmp(&b.item)));
            if best.len() > keep {
                best.truncate(keep);
            }
            if best.len() == keep {
                floor = best[keep - 1].score;
            }
        }
        let mut picks: Vec<Pick> = Vec::new();
        let mut used: Vec<Tag> = Vec::new();
        // Stated needs first, by priority: each gets the best in-season (or all-year) item that
        // answers it, so that generic derived tags, which add up over many items' tags, cannot
        // take every slot from what the household asked for.
        for tag in stated_by_priority(tags) {
            if picks.len() >= limit {
                break;
            }
            if picks.iter().any(|p| p.tags.contains(&tag)) {
                continue;
            }
            let Some(c) = self.best_in_season(tag, profile, &media, seen, weight, &picks) else {
                continue;
            };
            best.retain(|b| b.item != c.item);
            used.push(c.main_tag);
            if let Some(p) = self.pick(c, &media, tags, weight) {
                picks.push(p);
            }
        }
        // Then greedy selection with diversity across main tags. Ties go to the smaller content
        // id so results do not depend on insertion order.
        while picks.len() < limit && !best.is_empty() {
            let adjusted = |c: &Cand| {
                let n = used.iter().filter(|&&t| t == c.main_tag).count();
                c.score * DIVERSITY.powi(n as i32)
            };
            let mut bi = 0;
            for (i, c) in best.iter().enumerate().skip(1) {
                let (a, b) = (adjusted(c), adjusted(&best[bi]));
                let better = a > b || (a == b && self.id_of(c.item) < self.id_of(best[bi].item));
                if better {
                    bi = i;
                }
            }
            let c = best.swap_remove(bi);
            used.push(c.main_tag);
            if let Some(p) = self.pick(c, &media, tags, weight) {
                picks.push(p);
            }
        }
        picks
    }

    /// The best candidate carrying `tag` that is in season or all-year, not seen and not
    /// already picked, scored like every candidate (ties: the smaller content id).
    fn best_in_season(
        &self,
        tag: Tag,
        profile: &HouseholdProfile,
        media: &MediaFit,
        seen: &[Slot],
        weight: &[f32],
        picks: &[Pick],
    ) -> Option<Cand> {
        let month = self.today.month();
        let mut top: Option<Cand> = None;
        for &(item, fixed) in &self.postings[tag_index(tag)] {
            if fixed <= 0.0
                || seen.contains(&Slot(item))
                || picks.iter().any(|p| p.slot == Slot(item))
            {
                continue;
            }
            let Some(it) = self.items[item as usize].as_ref() else {
                continue;
            };
            let meta = &it.meta;
            if !meta.is_live(self.today) || season_fit(&meta.months, month) < SEASON_ALL_YEAR {
                continue;
            }
            let Some(fit) = household_fit(meta, profile, media) else {
                continue;
            };
            let base: f32 = meta.tags.iter().map(|t| weight[tag_index(*t)]).sum();
            let score = base * fixed * fit;
            let better = match &top {
                None => true,
                Some(t) => {
                    score > t.score || (score == t.score && self.id_of(item) < self.id_of(t.item))
                }
            };
            if better {
                top = Some(Cand {
                    item,
                    score,
                    main_tag: main_tag(meta, weight),
                });
            }
        }
        top
    }

    fn id_of(&self, item: u32) -> &str {
        self.items[item as usize]
            .as_ref()
            .map_or("", |it| it.id.as_str())
    }

    fn pick(&self, c: Cand, media: &MediaFit, tags: &[WantedTag], weight: &[f32]) -> Option<Pick> {
        let it = self.items[c.item as usize].as_ref()?;
        let (rendition, _) = media.best(&it.meta)?;
        let mut matched: Vec<Tag> = it
            .meta
            .tags
            .iter()
            .copied()
            .filter(|t| weight[tag_index(*t)] > 0.0)
            .collect();
        matched.sort_by(|a, b| {
            weight[tag_index(*b)]
                .total_cmp(&weight[tag_index(*a)])
                .then(a.cmp(b))
        });
        let reason = matched
            .first()
            .and_then(|t| tags.iter().find(|w| w.tag == *t))
            .map(|w| format!("{}：{}", w.reason, w.tag.plain_words()))
            .unwrap_or_default();
        Some(Pick {
            slot: Slot(c.item),
            content_id: it.id.clone(),
            rendition: rendition.id,
            bytes: rendition.bytes,
            score: c.score,
            tags: matched,
            reason,
        })
    }
}

/// A file a village could hold: how big it is and how many of its households it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileDemand {
    /// The content id.
    pub content_id: String,
    /// The rendition id.
    pub rendition: String,
    /// Size in bytes.
    pub bytes: u64,
    /// Households of the village it is recommended to.
    pub households: u32,
}

/// Which files to push to a village within `budget` bytes: the most households served per byte
/// first (ties: more households, then content id), each taken if it still fits. Returns the
/// indices into `files` in the order taken.
pub fn select_for_budget(files: &[FileDemand], budget: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..files.len())
        .filter(|&i| files[i].households > 0)
        .collect();
    // a/x > b/y  ⇔  a·y > b·x, in integers.
    order.sort_by(|&i, &j| {
        let (a, b) = (&files[i], &files[j]);
        let lhs = u128::from(a.households) * u128::from(b.bytes.max(1));
        let rhs = u128::from(b.households) * u128::from(a.bytes.max(1));
        rhs.cmp(&lhs)
            .then(b.households.cmp(&a.households))
            .then(a.content_id.cmp(&b.content_id))
            .then(a.rendition.cmp(&b.rendition))
    });
    let mut left = budget;
    let mut out = Vec::new();
    for i in order {
        if files[i].bytes <= left {
            left -= files[i].bytes;
            out.push(i);
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
