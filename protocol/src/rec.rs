//! Typed view of a recommendation document (`rec`): what the hub recommends to one household.
//!
//! The hub writes one `rec` document per household, keyed `<village>/rec/<household id>` (the
//! household's id, the same as its `hh` key's), so it lies in the village's scope and syncs down
//! to the village node and its county ([`Kind::Rec`]). Only the hub writes it; nodes read it to
//! show and fetch the recommended content. Representation follows [`crate::fields`].
//!
//! | field | JSON | rule |
//! |---|---|---|
//! | `village` | string, 12 digits, village level | required; never changes |
//! | `updated` | `YYYY-MM-DD` | required: the day of the last matching |
//! | `items` | `{content id: item}` (default {}) | at most [`MAX_REC_ITEMS`]; ids are document ids |
//!
//! Each item:
//!
//! | field | JSON | rule |
//! |---|---|---|
//! | `title` | string | required, ≤ 60 characters: the content's title, so a node can list the item before its manifest arrives |
//! | `rendition` | string | required: the rendition chosen for the household (`main` = the main file) |
//! | `bytes` | integer ≥ 0 | size of that rendition |
//! | `score` | integer ≥ 0 | the matching score in thousandths |
//! | `week` | `YYYY-Www` | required: the ISO week in which it was recommended |
//! | `tags` | `{tag id: true}` | the household's tags the item answers, at least one |
//! | `reason` | string | ≤ 100 characters, zh-CN, e.g. `家中养猪：防非洲猪瘟` |
//! | `content` | string, 64 hex digits | optional: the [`ContentId`](crate::manifest::ContentId) of the item's hub-signed manifest, so a node knows which manifest to fetch (absent in documents written before the hub signed manifests) |
//! | `push` | boolean (default `true`) | the hub's push-down plan: whether the file is within the village's byte budget, so nodes pre-fetch it; `false` = still recommended, fetched on demand when opened. Absent (documents written before the budget) reads as `true` |
//!
//! **The push-down plan.** The hub decides per village which files to push within that village's
//! byte budget ([`crate::matching::select_for_budget`]) and writes the decision into every `rec`
//! item of the village as `push`; the same item carries the same flag in every `rec` document of
//! one village. A node pre-fetches the files of the items flagged `push` in any `rec` document in
//! its scope (a county: the union of its villages' plans). Adding `push` kept the schema at 1:
//! document readers ignore fields they do not know, so an older node reads the flag as absent and
//! pre-fetches everything, as it did before.
//!
//! ```
//! use cunyun_protocol::rec::{Rec, Week};
//! let rec = Rec::from_json(&serde_json::json!({
//!     "village": "511424104201", "updated": "2026-04-15",
//!     "items": {"asf-10": {"title": "非洲猪瘟防控十要点", "rendition": "main",
//!         "bytes": 34000000, "score": 1080, "week": "2026-W16",
//!         "tags": {"liv.asf": true}, "reason": "家中养猪：防非洲猪瘟"}}
//! })).expect("valid");
//! assert_eq!(rec.new_in_week(Week::parse("2026-W16").expect("week")), 1);
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use automerge::transaction::Transactable;
use automerge::ReadDoc;
use serde::Serialize;
use serde_json::Value;

use crate::area::{AreaCode, Level};
use crate::fields::{
    check_identity, check_schema, code, doc_to_json, serialize_set, write_root, Date, Decoder,
    FieldErrors, Mode, TextRule, ViewError, SCHEMA_VERSION,
};
use crate::key::{DocKey, KeyError, Kind};
use crate::matching::Pick;
use crate::taxonomy::Tag;

/// Most items a rec document keeps (the hub drops the oldest weeks first).
pub const MAX_REC_ITEMS: usize = 40;

/// An ISO 8601 week, written `YYYY-Www`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Week {
    year: u16,
    week: u8,
}

impl Week {
    /// The ISO week `date` falls in.
    pub fn of(date: Date) -> Week {
        let days = date.days_since_epoch();
        // 1970-01-01 was a Thursday; 0 = Monday.
        let weekday = (days + 3).rem_euclid(7);
        let thursday = days - weekday + 3;
        // The ISO year is the year of that Thursday.
        let mut year = date.year();
        for y in [date.year().saturating_add(1), date.year(), date.year() - 1] {
            if let Some(jan1) = Date::new(y, 1, 1) {
                if jan1.days_since_epoch() <= thursday {
                    year = y;
                    break;
                }
            }
        }
        let jan1 = Date::new(year, 1, 1).map_or(thursday, Date::days_since_epoch);
        let week = ((thursday - jan1) / 7 + 1) as u8;
        Week { year, week }
    }

    /// Parses `YYYY-Www` (week 01–53).
    pub fn parse(s: &str) -> Option<Week> {
        let b = s.as_bytes();
        if b.len() != 8 || b[4] != b'-' || b[5] != b'W' {
            return None;
        }
        let digits = |r: std::ops::Range<usize>| {
            let p = s.get(r)?;
            p.bytes()
                .all(|c| c.is_ascii_digit())
                .then(|| p.parse::<u16>().ok())?
        };
        let year = digits(0..4)?;
        let week = u8::try_from(digits(6..8)?).ok()?;
        ((1900..=2199).contains(&year) && (1..=53).contains(&week)).then_some(Week { year, week })
    }
}

impl fmt::Display for Week {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-W{:02}", self.year, self.week)
    }
}

impl fmt::Debug for Week {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for Week {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// One recommended item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecItem {
    /// The content's title.
    pub title: String,
    /// The rendition chosen for the household.
    pub rendition: String,
    /// Its size in bytes.
    pub bytes: u64,
    /// The score in thousandths.
    pub score: u32,
    /// The week it was recommended in.
    pub week: Week,
    /// The household tags it answers.
    #[serde(serialize_with = "serialize_set")]
    pub tags: BTreeSet<Tag>,
    /// Why, in Chinese.
    pub reason: String,
    /// The content id (hex) of the item's signed manifest, when the hub knows it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// Whether the village's byte budget pushes the file down (see the module documentation).
    pub push: bool,
}

impl RecItem {
    /// The item for a scorer's pick, recommended in `week`.
    pub fn from_pick(pick: &Pick, title: &str, week: Week) -> RecItem {
        RecItem {
            title: title.chars().take(TITLE.max_chars).collect(),
            rendition: pick.rendition.clone(),
            bytes: pick.bytes,
            score: (pick.score.max(0.0) * 1000.0).round().min(u32::MAX as f32) as u32,
            week,
            tags: pick.tags.iter().copied().collect(),
            reason: pick.reason.chars().take(REASON.max_chars).collect(),
            content: None,
            // Not planned until the hub's budget pass for the village says so.
            push: false,
        }
    }
}

/// The recommendations for one household (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rec {
    /// The household's village.
    pub village: AreaCode,
    /// The day of the last matching.
    pub updated: Date,
    /// Items by content id.
    pub items: BTreeMap<String, RecItem>,
}

const TITLE: TextRule = TextRule {
    max_chars: 60,
    required: true,
    multiline: false,
};
const RENDITION: TextRule = TextRule {
    max_chars: 16,
    required: true,
    multiline: false,
};
const REASON: TextRule = TextRule {
    max_chars: 100,
    required: false,
    multiline: false,
};

impl Rec {
    /// An empty rec document for a household of `village`.
    pub fn new(village: AreaCode, updated: Date) -> Rec {
        Rec {
            village,
            updated,
            items: BTreeMap::new(),
        }
    }

    /// Parses JSON input, collecting every problem.
    pub fn from_json(value: &Value) -> Result<Rec, FieldErrors> {
        decode(value, Mode::Input)
    }

    /// Checks a value built in code against the same rules as [`Rec::from_json`].
    pub fn validate(&self) -> Result<(), FieldErrors> {
        let json = serde_json::to_value(self).map_err(|e| {
            FieldErrors(vec![crate::fields::FieldError::new(
                "",
                code::WRONG_TYPE,
                format!("内部编码失败：{e}"),
            )])
        })?;
        decode(&json, Mode::Input).map(|_| ())
    }

    /// Reads the rec document.
    pub fn read_from<R: ReadDoc>(doc: &R) -> Result<Rec, ViewError> {
        let json = doc_to_json(doc)?;
        check_schema(&json, SCHEMA_VERSION)?;
        Ok(decode(&json, Mode::Document)?)
    }

    /// Validates, then writes only what differs; refuses to change the village.
    pub fn write_to<T: Transactable>(&self, tx: &mut T) -> Result<(), ViewError> {
        self.validate()?;
        check_identity(tx, "village", "所属村", self.village.as_str())?;
        let desired = serde_json::to_value(self).map_err(|e| ViewError::Encode(e.to_string()))?;
        write_root(tx, &desired, &[])
    }

    /// The key of this rec document for household `id`.
    pub fn key(&self, id: &str) -> Result<DocKey, KeyError> {
        DocKey::new(self.village, Kind::Rec, id)
    }

    /// How many items were recommended in `week`.
    pub fn new_in_week(&self, week: Week) -> usize {
        self.items.values().filter(|i| i.week == week).count()
    }

    /// Adds items, then drops the oldest (earliest week, then lowest score) beyond
    /// [`MAX_REC_ITEMS`].
    pub fn add(&mut self, items: impl IntoIterator<Item = (String, RecItem)>) {
        self.items.extend(items);
        while self.items.len() > MAX_REC_ITEMS {
            let oldest = self
                .items
                .iter()
                .min_by(|a, b| a.1.week.cmp(&b.1.week).then(a.1.score.cmp(&b.1.score)))
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => {
                    self.items.remove(&k);
                }
                None => break,
            }
        }
    }
}

fn decode(value: &Value, mode: Mode) -> Result<Rec, FieldErrors> {
    let mut dec = Decoder::new(mode);
    let Some(mut o) = dec.root(value, "推荐记录") else {
        return dec.finish(None);
    };
    let d = &mut dec;
    o.schema(d);
    let village = o.area(d, "village", "所属村", &[Level::Village]);
    let updated = o.date(d, "updated", "匹配日期");
    if matches!(updated, Some(None)) {
        d.push("updated", code::REQUIRED, "匹配日期为必填项");
    }
    let before = d.count();
    let mut items = BTreeMap::new();
    match o.raw("items") {
        None => {}
        Some(Value::Object(map)) => {
            for (id, v) in map {
                let path = format!("items.{id}");
                if !crate::key::valid_id(id) {
                    d.push(
                        path.clone(),
                        code::BAD_FORMAT,
                        format!("资源编号“{id}”无效：应为1到64位字母、数字、-或_"),
                    );
                    continue;
                }
                let Some(mut e) = d.nested(v, &path) else {
                    continue;
                };
                let title = e.text(d, "title", "资源标题", TITLE);
                let rendition = e.text(d, "rendition", "版本", RENDITION);
                let bytes = e
                    .int(d, "bytes", "文件大小", 0, i64::MAX, Some(0))
                    .and_then(|n| u64::try_from(n).ok());
                let score = e
                    .int(d, "score", "匹配得分", 0, i64::from(u32::MAX), Some(0))
                    .and_then(|n| u32::try_from(n).ok());
                let week_path = e.path("week");
                let week = match e.raw("week") {
                    Some(Value::String(s)) => match Week::parse(s) {
                        Some(w) => Some(w),
                        None => {
                            d.push(
                                week_path,
                                code::BAD_FORMAT,
                                format!("推荐周应为“年-W周”格式，如2026-W16，现为“{s}”"),
                            );
                            None
                        }
                    },
                    Some(_) => {
                        d.push(week_path, code::WRONG_TYPE, "推荐周应为文字");
                        None
                    }
                    None => {
                        d.push(week_path, code::REQUIRED, "推荐周为必填项");
                        None
                    }
                };
                let tags: Option<BTreeSet<Tag>> = e.set(d, "tags", "匹配标签", usize::MAX);
                if mode == Mode::Input && tags.as_ref().is_some_and(BTreeSet::is_empty) {
                    d.push(format!("{path}.tags"), code::REQUIRED, "匹配标签至少一个");
                }
                let reason = e.text(d, "reason", "推荐理由", REASON);
                let content_path = e.path("content");
                let content = match e.raw("content") {
                    None | Some(Value::Null) => Some(None),
                    Some(Value::String(s))
                        if s.len() == 64
                            && s.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) =>
                    {
                        Some(Some(s.clone()))
                    }
                    Some(_) => {
                        d.push(
                            content_path,
                            code::BAD_FORMAT,
                            "内容编号应为64位小写十六进制数字",
                        );
                        None
                    }
                };
                let push_path = e.path("push");
                let push = match e.raw("push") {
                    None | Some(Value::Null) => Some(true),
                    Some(Value::Bool(b)) => Some(*b),
                    Some(_) => {
                        d.push(
                            push_path,
                            code::WRONG_TYPE,
                            "是否推送应为是或否（true/false）",
                        );
                        None
                    }
                };
                e.finish(d);
                if let (Some(title), Some(rendition), Some(bytes), Some(score), Some(week)) =
                    (title, rendition, bytes, score, week)
                {
                    if let (Some(tags), Some(reason), Some(content), Some(push)) =
                        (tags, reason, content, push)
                    {
                        items.insert(
                            id.clone(),
                            RecItem {
                                title,
                                rendition,
                                bytes,
                                score,
                                week,
                                tags,
                                reason,
                                content,
                                push,
                            },
                        );
                    }
                }
            }
        }
        Some(_) => d.push(
            "items",
            code::WRONG_TYPE,
            "推荐条目应为以资源编号为键的对象",
        ),
    }
    if items.len() > MAX_REC_ITEMS && mode == Mode::Input {
        d.push(
            "items",
            code::TOO_MANY,
            format!("推荐条目最多{MAX_REC_ITEMS}条，现有{}条", items.len()),
        );
    }
    let items = (d.count() == before).then_some(items);
    o.finish(d);
    let rec = (|| {
        Some(Rec {
            village: village?,
            updated: updated??,
            items: items?,
        })
    })();
    dec.finish(rec)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use automerge::AutoCommit;
    use proptest::prelude::*;
    use serde_json::json;

    fn item(week: &str, score: u32) -> RecItem {
        RecItem {
            title: "非洲猪瘟防控十要点".into(),
            rendition: "main".into(),
            bytes: 34_000_000,
            score,
            week: Week::parse(week).unwrap(),
            tags: [Tag::LivAsf].into_iter().collect(),
            reason: "家中养猪：防非洲猪瘟".into(),
            content: None,
            push: true,
        }
    }

    #[test]
    fn iso_weeks() {
        for (d, w) in [
            ("2026-04-15", "2026-W16"),
            ("2026-01-01", "2026-W01"),
            ("2021-01-03", "2020-W53"),
            ("2024-12-30", "2025-W01"),
            ("2027-01-01", "2026-W53"),
            ("2026-12-28", "2026-W53"),
        ] {
            assert_eq!(Week::of(Date::parse(d).unwrap()).to_string(), w, "{d}");
        }
        assert_eq!(Week::parse("2026-W16").unwrap().to_string(), "2026-W16");
        for bad in ["2026-16", "2026-W00", "2026-W54", "2026-Wx1", "x026-W10"] {
            assert!(Week::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn document_round_trip_and_incremental_write() {
        let mut rec = Rec::new(
            AreaCode::parse("511424104201").unwrap(),
            Date::parse("2026-04-15").unwrap(),
        );
        rec.add([("asf-10".to_string(), item("2026-W16", 1080))]);
        let mut doc = AutoCommit::new();
        rec.write_to(&mut doc).unwrap();
        assert_eq!(Rec::read_from(&doc).unwrap(), rec);
        // A second item next week: written without touching the first.
        let heads = doc.get_heads();
        rec.add([("falls".to_string(), item("2026-W17", 900))]);
        rec.write_to(&mut doc).unwrap();
        assert_eq!(Rec::read_from(&doc).unwrap(), rec);
        assert!(doc.get_changes(&heads).len() == 1);
        // Writing the same again changes nothing.
        let heads = doc.get_heads();
        rec.write_to(&mut doc).unwrap();
        assert_eq!(doc.get_heads(), heads);
        // Removing an item removes it from the document.
        rec.items.remove("asf-10");
        rec.write_to(&mut doc).unwrap();
        assert_eq!(Rec::read_from(&doc).unwrap(), rec);
        // The village never changes.
        rec.village = AreaCode::parse("513401104201").unwrap();
        assert!(matches!(
            rec.write_to(&mut doc),
            Err(ViewError::Identity { .. })
        ));
    }

    #[test]
    fn oldest_items_are_dropped_beyond_the_limit() {
        let mut rec = Rec::new(
            AreaCode::parse("511424104201").unwrap(),
            Date::parse("2026-04-15").unwrap(),
        );
        rec.add((0..MAX_REC_ITEMS).map(|i| (format!("c{i}"), item("2026-W16", 500))));
        rec.add([("old".to_string(), item("2026-W01", 9000))]);
        assert_eq!(rec.items.len(), MAX_REC_ITEMS);
        assert!(!rec.items.contains_key("old"));
        assert_eq!(
            rec.new_in_week(Week::parse("2026-W16").unwrap()),
            MAX_REC_ITEMS
        );
    }

    #[test]
    fn bad_input_reports_every_error() {
        let errors = Rec::from_json(&json!({
            "village": "511424000000", "items": {"bad id!": {}, "x": {"title": "", "rendition": "main",
            "week": "2026-16", "tags": {}, "reason": "a\nb", "extra": 1, "content": "abc",
            "push": "yes"}}
        }))
        .unwrap_err();
        for (f, c) in [
            ("village", code::WRONG_LEVEL),
            ("updated", code::REQUIRED),
            ("items.bad id!", code::BAD_FORMAT),
            ("items.x.title", code::REQUIRED),
            ("items.x.week", code::BAD_FORMAT),
            ("items.x.tags", code::REQUIRED),
            ("items.x.reason", code::BAD_FORMAT),
            ("items.x.extra", code::UNKNOWN_FIELD),
            ("items.x.content", code::BAD_FORMAT),
            ("items.x.push", code::WRONG_TYPE),
        ] {
            assert!(errors.has(f, c), "{f} {c}: {errors:?}");
        }
    }

    #[test]
    fn push_defaults_to_planned_when_absent() {
        let mut v = json!({"village": "511424104201", "updated": "2026-04-15",
            "items": {"asf-10": {"title": "非洲猪瘟防控十要点", "rendition": "main",
                "week": "2026-W16", "tags": {"liv.asf": true}}}});
        assert!(Rec::from_json(&v).unwrap().items["asf-10"].push);
        v["items"]["asf-10"]["push"] = json!(false);
        let rec = Rec::from_json(&v).unwrap();
        assert!(!rec.items["asf-10"].push);
        // Always written, so a reader never has to guess.
        assert_eq!(
            serde_json::to_value(&rec).unwrap()["items"]["asf-10"]["push"],
            false
        );
    }

    fn arb_rec() -> impl Strategy<Value = Rec> {
        proptest::collection::btree_map(
            "[a-z0-9_-]{1,20}",
            (
                "[\u{4e00}-\u{4e2f}a-z]{1,60}",
                0u64..=u64::from(u32::MAX) * 4,
                any::<u32>(),
                1u8..=52,
                proptest::collection::btree_set(proptest::sample::select(Tag::ALL), 1..4),
                proptest::option::of("[0-9a-f]{64}"),
                any::<bool>(),
            ),
            0..10,
        )
        .prop_map(|m| {
            let mut rec = Rec::new(
                AreaCode::parse("511424104201").unwrap(),
                Date::parse("2026-04-15").unwrap(),
            );
            for (id, (title, bytes, score, week, tags, content, push)) in m {
                rec.items.insert(
                    id,
                    RecItem {
                        title,
                        rendition: "480p".into(),
                        bytes,
                        score,
                        week: Week::parse(&format!("2026-W{week:02}")).unwrap(),
                        tags,
                        reason: "家中养猪：防非洲猪瘟".into(),
                        content,
                        push,
                    },
                );
            }
            rec
        })
    }

    proptest! {
        #[test]
        fn json_and_document_round_trip(rec in arb_rec()) {
            let json = serde_json::to_value(&rec).unwrap();
            prop_assert_eq!(&Rec::from_json(&json).unwrap(), &rec);
            let mut doc = AutoCommit::new();
            rec.write_to(&mut doc).unwrap();
            let bytes = doc.save();
            let loaded = AutoCommit::load(&bytes).unwrap();
            prop_assert_eq!(Rec::read_from(&loaded).unwrap(), rec);
        }
    }
}
