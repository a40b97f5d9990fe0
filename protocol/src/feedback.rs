//! Typed view of a feedback document (`fb`): what happened to one household's recommendations.
//!
//! The village node writes one `fb` document per household, keyed `<village>/fb/<household id>`
//! (the household's id, as its `hh` and `rec` keys), so it syncs up to the county and the hub
//! ([`Kind::Fb`]), which counts households reached, viewed and helped. It holds no personal data:
//! content ids, days and counts only. Representation follows [`crate::fields`].
//!
//! | field | JSON | rule |
//! |---|---|---|
//! | `village` | string, 12 digits, village level | required; never changes |
//! | `items` | `{content id: item}` (default {}) | at most [`MAX_FB_ITEMS`]; ids are document ids |
//!
//! Each item (every field a per-day map, so two nodes' edits merge by union or by sum):
//!
//! | field | JSON | Automerge | meaning |
//! |---|---|---|---|
//! | `delivered` | `{YYYY-MM-DD: true}` | map of booleans | the day the file was first available on the node for the household (after a merge, the earliest key counts) |
//! | `views` | `{YYYY-MM-DD: count}` | map of **counters** | times the item was opened that day, 1–[`MAX_VIEWS_PER_DAY`]; concurrent increments add up |
//! | `helpful` | `{YYYY-MM-DD: true}` | map of booleans | the villager tapped 「有帮助」 that day (at most once a day; the earliest key is the day it was rated) |
//!
//! Each item has at most [`MAX_DAYS`] days per map.
//!
//! ```
//! use cunyun_protocol::feedback::Feedback;
//! use cunyun_protocol::fields::Date;
//! let fb = Feedback::from_json(&serde_json::json!({
//!     "village": "511424104201",
//!     "items": {"asf-10": {"delivered": {"2026-04-16": true},
//!         "views": {"2026-04-16": 2, "2026-04-18": 1}, "helpful": {"2026-04-18": true}}}
//! })).expect("valid");
//! let item = &fb.items["asf-10"];
//! assert_eq!(item.view_count(), 3);
//! assert_eq!(item.first_viewed(), Date::parse("2026-04-16"));
//! assert!(item.is_helpful());
//! ```

use std::collections::{BTreeMap, BTreeSet};

use automerge::transaction::Transactable;
use automerge::{ObjId, ObjType, ReadDoc, ScalarValue, ROOT};
use serde::{Serialize, Serializer};
use serde_json::{Map, Value};

use crate::area::{AreaCode, Level};
use crate::fields::{
    check_identity, check_schema, code, doc_to_json, Date, Decoder, FieldError, FieldErrors, Mode,
    ViewError, SCHEMA_VERSION,
};
use crate::key::{DocKey, KeyError, Kind};

/// Most items a feedback document keeps.
pub const MAX_FB_ITEMS: usize = 200;
/// Most days per map of one item.
pub const MAX_DAYS: usize = 400;
/// Most views counted for one item on one day (further opens are not counted).
pub const MAX_VIEWS_PER_DAY: u32 = 1000;

/// Feedback on one recommended item (see the module documentation).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FbItem {
    /// Days the file was recorded as first available (normally one).
    pub delivered: BTreeSet<Date>,
    /// Opens per day.
    pub views: BTreeMap<Date, u32>,
    /// Days the villager rated the item helpful.
    pub helpful: BTreeSet<Date>,
}

impl FbItem {
    /// The day the file first became available for the household.
    pub fn delivered_on(&self) -> Option<Date> {
        self.delivered.first().copied()
    }

    /// How many times the item was opened in all.
    pub fn view_count(&self) -> u64 {
        self.views.values().map(|&n| u64::from(n)).sum()
    }

    /// The first day it was opened.
    pub fn first_viewed(&self) -> Option<Date> {
        self.views.keys().next().copied()
    }

    /// The last day it was opened.
    pub fn last_viewed(&self) -> Option<Date> {
        self.views.keys().next_back().copied()
    }

    /// Whether the villager rated it helpful.
    pub fn is_helpful(&self) -> bool {
        !self.helpful.is_empty()
    }

    /// The day it was first rated helpful.
    pub fn helpful_on(&self) -> Option<Date> {
        self.helpful.first().copied()
    }
}

impl Serialize for FbItem {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let days = |set: &BTreeSet<Date>| -> Map<String, Value> {
            set.iter()
                .map(|d| (d.to_string(), Value::Bool(true)))
                .collect()
        };
        let mut m = Map::new();
        m.insert("delivered".into(), Value::Object(days(&self.delivered)));
        m.insert(
            "views".into(),
            Value::Object(
                self.views
                    .iter()
                    .map(|(d, n)| (d.to_string(), Value::from(*n)))
                    .collect(),
            ),
        );
        m.insert("helpful".into(), Value::Object(days(&self.helpful)));
        Value::Object(m).serialize(s)
    }
}

/// The feedback of one household (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Feedback {
    /// The household's village.
    pub village: AreaCode,
    /// Items by content id.
    pub items: BTreeMap<String, FbItem>,
}

/// What a `record_*` call changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// The document changed.
    Changed,
    /// Nothing to record (already delivered, already rated today, or the day's count is full).
    Unchanged,
}

impl Feedback {
    /// An empty feedback document for a household of `village`.
    pub fn new(village: AreaCode) -> Feedback {
        Feedback {
            village,
            items: BTreeMap::new(),
        }
    }

    /// Parses JSON input, collecting every problem.
    pub fn from_json(value: &Value) -> Result<Feedback, FieldErrors> {
        decode(value, Mode::Input)
    }

    /// Checks a value built in code against the same rules as [`Feedback::from_json`].
    pub fn validate(&self) -> Result<(), FieldErrors> {
        let json = serde_json::to_value(self).map_err(|e| {
            FieldErrors(vec![FieldError::new(
                "",
                code::WRONG_TYPE,
                format!("内部编码失败：{e}"),
            )])
        })?;
        decode(&json, Mode::Input).map(|_| ())
    }

    /// Reads the feedback document.
    pub fn read_from<R: ReadDoc>(doc: &R) -> Result<Feedback, ViewError> {
        let json = doc_to_json(doc)?;
        check_schema(&json, SCHEMA_VERSION)?;
        Ok(decode(&json, Mode::Document)?)
    }

    /// The key of this feedback document for household `id`.
    pub fn key(&self, id: &str) -> Result<DocKey, KeyError> {
        DocKey::new(self.village, Kind::Fb, id)
    }

    /// Validates, then writes only what differs, so that concurrent edits merge: day keys are
    /// added or deleted one by one, and view counts are counters moved by the difference (two
    /// nodes each adding a view to the same day give two). Refuses to change the village.
    pub fn write_to<T: Transactable>(&self, tx: &mut T) -> Result<(), ViewError> {
        self.validate()?;
        check_identity(tx, "village", "所属村", self.village.as_str())?;
        let schema = current_int(tx, &ROOT, "schema")?;
        if let Some(found) = schema.filter(|&f| f > SCHEMA_VERSION) {
            return Err(ViewError::UnsupportedSchema {
                found,
                supported: SCHEMA_VERSION,
            });
        }
        if schema != Some(SCHEMA_VERSION) {
            tx.put(&ROOT, "schema", ScalarValue::Int(SCHEMA_VERSION))?;
        }
        if current_str(tx, &ROOT, "village")?.as_deref() != Some(self.village.as_str()) {
            tx.put(&ROOT, "village", self.village.as_str())?;
        }
        let items = ensure_map(tx, &ROOT, "items")?;
        let stale: Vec<String> = tx
            .keys(&items)
            .filter(|k| !self.items.contains_key(k))
            .collect();
        for k in stale {
            tx.delete(&items, k.as_str())?;
        }
        for (id, item) in &self.items {
            let obj = ensure_map(tx, &items, id)?;
            write_days(tx, &obj, "delivered", &item.delivered)?;
            write_days(tx, &obj, "helpful", &item.helpful)?;
            let views = ensure_map(tx, &obj, "views")?;
            let stale: Vec<String> = tx
                .keys(&views)
                .filter(|k| Date::parse(k).is_none_or(|d| !item.views.contains_key(&d)))
                .collect();
            for k in stale {
                tx.delete(&views, k.as_str())?;
            }
            for (day, &n) in &item.views {
                let key = day.to_string();
                match tx.get(&views, key.as_str())? {
                    Some((automerge::Value::Scalar(s), _))
                        if matches!(s.as_ref(), ScalarValue::Counter(_)) =>
                    {
                        let cur = current_int(tx, &views, &key)?.unwrap_or(0);
                        let by = i64::from(n) - cur;
                        if by != 0 {
                            tx.increment(&views, key.as_str(), by)?;
                        }
                    }
                    _ => tx.put(&views, key.as_str(), ScalarValue::counter(i64::from(n)))?,
                }
            }
        }
        Ok(())
    }

    /// Records that the item's file became available on `day` (only the first time).
    pub fn record_delivered(&mut self, id: &str, day: Date) -> Recorded {
        let item = self.items.entry(id.to_string()).or_default();
        if item.delivered.is_empty() {
            item.delivered.insert(day);
            Recorded::Changed
        } else {
            Recorded::Unchanged
        }
    }

    /// Records one open of the item on `day` (up to [`MAX_VIEWS_PER_DAY`]).
    pub fn record_view(&mut self, id: &str, day: Date) -> Recorded {
        let item = self.items.entry(id.to_string()).or_default();
        if item.views.len() >= MAX_DAYS && !item.views.contains_key(&day) {
            return Recorded::Unchanged;
        }
        let n = item.views.entry(day).or_insert(0);
        if *n >= MAX_VIEWS_PER_DAY {
            return Recorded::Unchanged;
        }
        *n += 1;
        Recorded::Changed
    }

    /// Records that the villager rated the item helpful on `day` (idempotent per day; once
    /// rated, later days add nothing).
    pub fn record_helpful(&mut self, id: &str, day: Date) -> Recorded {
        let item = self.items.entry(id.to_string()).or_default();
        if item.helpful.is_empty() {
            item.helpful.insert(day);
            Recorded::Changed
        } else {
            Recorded::Unchanged
        }
    }

    /// Whether any item's file was delivered.
    pub fn reached(&self) -> bool {
        self.items.values().any(|i| !i.delivered.is_empty())
    }

    /// Whether any item was opened.
    pub fn viewed(&self) -> bool {
        self.items.values().any(|i| i.view_count() > 0)
    }

    /// Whether any item was rated helpful.
    pub fn helped(&self) -> bool {
        self.items.values().any(FbItem::is_helpful)
    }
}

fn write_days<T: Transactable>(
    tx: &mut T,
    obj: &ObjId,
    key: &str,
    days: &BTreeSet<Date>,
) -> Result<(), ViewError> {
    let map = ensure_map(tx, obj, key)?;
    let stale: Vec<String> = tx
        .keys(&map)
        .filter(|k| Date::parse(k).is_none_or(|d| !days.contains(&d)))
        .collect();
    for k in stale {
        tx.delete(&map, k.as_str())?;
    }
    for day in days {
        let k = day.to_string();
        let is_true = matches!(
            tx.get(&map, k.as_str())?,
            Some((automerge::Value::Scalar(s), _)) if matches!(s.as_ref(), ScalarValue::Boolean(true))
        );
        if !is_true {
            tx.put(&map, k.as_str(), true)?;
        }
    }
    Ok(())
}

fn ensure_map<T: Transactable>(
    tx: &mut T,
    obj: &ObjId,
    key: &str,
) -> Result<ObjId, automerge::AutomergeError> {
    match tx.get(obj, key)? {
        Some((automerge::Value::Object(ObjType::Map), id)) => Ok(id),
        _ => tx.put_object(obj, key, ObjType::Map),
    }
}

fn current_int<T: ReadDoc>(
    doc: &T,
    obj: &ObjId,
    key: &str,
) -> Result<Option<i64>, automerge::AutomergeError> {
    Ok(match doc.get(obj, key)? {
        Some((automerge::Value::Scalar(s), _)) => match s.as_ref() {
            ScalarValue::Int(i) => Some(*i),
            ScalarValue::Uint(u) => i64::try_from(*u).ok(),
            ScalarValue::Counter(c) => Some(i64::from(c)),
            _ => None,
        },
        _ => None,
    })
}

fn current_str<T: ReadDoc>(
    doc: &T,
    obj: &ObjId,
    key: &str,
) -> Result<Option<String>, automerge::AutomergeError> {
    Ok(match doc.get(obj, key)? {
        Some((automerge::Value::Scalar(s), _)) => match s.as_ref() {
            ScalarValue::Str(s) => Some(s.to_string()),
            _ => None,
        },
        Some((automerge::Value::Object(ObjType::Text), id)) => Some(doc.text(&id)?),
        _ => None,
    })
}

/// Decodes one per-day map at `path`: keys are dates, values pass `value` (which returns the
/// number to keep, or an error message). `None` after an error.
fn day_map(
    d: &mut Decoder,
    raw: Option<&Value>,
    path: &str,
    zh: &str,
    value: impl Fn(&Value) -> Result<Option<u32>, String>,
) -> Option<BTreeMap<Date, u32>> {
    let before = d.count();
    let mut out = BTreeMap::new();
    match raw {
        None => {}
        Some(Value::Object(map)) => {
            for (k, v) in map {
                let p = format!("{path}.{k}");
                let Some(day) = Date::parse(k) else {
                    d.push(
                        p,
                        code::BAD_FORMAT,
                        format!("{zh}的日期应为“年-月-日”格式，如2026-04-16，现为“{k}”"),
                    );
                    continue;
                };
                match value(v) {
                    Ok(Some(n)) => {
                        out.insert(day, n);
                    }
                    Ok(None) => {}
                    Err(msg) => d.push(p, code::OUT_OF_RANGE, msg),
                }
            }
            if out.len() > MAX_DAYS {
                d.push(
                    path,
                    code::TOO_MANY,
                    format!("{zh}最多记录{MAX_DAYS}天，现有{}天", out.len()),
                );
            }
        }
        Some(_) => d.push(path, code::WRONG_TYPE, format!("{zh}应为以日期为键的对象")),
    }
    (d.count() == before).then_some(out)
}

fn flag_value(zh: &'static str) -> impl Fn(&Value) -> Result<Option<u32>, String> {
    move |v| match v {
        Value::Bool(true) => Ok(Some(1)),
        Value::Bool(false) | Value::Null => Ok(None),
        _ => Err(format!("{zh}的每一天应为true")),
    }
}

fn count_value(v: &Value) -> Result<Option<u32>, String> {
    let n = match v {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64)),
        _ => None,
    };
    match n {
        Some(n) if (1..=i64::from(MAX_VIEWS_PER_DAY)).contains(&n) => Ok(u32::try_from(n).ok()),
        Some(0) => Ok(None),
        Some(n) => Err(format!(
            "每天查看次数应在1到{MAX_VIEWS_PER_DAY}之间，现为{n}"
        )),
        None => Err("每天查看次数应为整数".into()),
    }
}

fn decode(value: &Value, mode: Mode) -> Result<Feedback, FieldErrors> {
    let mut dec = Decoder::new(mode);
    let Some(mut o) = dec.root(value, "反馈记录") else {
        return dec.finish(None);
    };
    let d = &mut dec;
    o.schema(d);
    let village = o.area(d, "village", "所属村", &[Level::Village]);
    let before = d.count();
    let mut items = BTreeMap::new();
    match o.raw("items") {
        None => {}
        Some(Value::Object(map)) => {
            if map.len() > MAX_FB_ITEMS {
                d.push(
                    "items",
                    code::TOO_MANY,
                    format!("反馈条目最多{MAX_FB_ITEMS}条，现有{}条", map.len()),
                );
            }
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
                let p = e.path("delivered");
                let delivered = day_map(d, e.raw("delivered"), &p, "送达", flag_value("送达"));
                let p = e.path("views");
                let views = day_map(d, e.raw("views"), &p, "查看", count_value);
                let p = e.path("helpful");
                let helpful = day_map(d, e.raw("helpful"), &p, "有帮助", flag_value("有帮助"));
                e.finish(d);
                if let (Some(delivered), Some(views), Some(helpful)) = (delivered, views, helpful) {
                    items.insert(
                        id.clone(),
                        FbItem {
                            delivered: delivered.into_keys().collect(),
                            views,
                            helpful: helpful.into_keys().collect(),
                        },
                    );
                }
            }
        }
        Some(_) => d.push(
            "items",
            code::WRONG_TYPE,
            "反馈条目应为以资源编号为键的对象",
        ),
    }
    let items = (d.count() == before).then_some(items);
    o.finish(d);
    let fb = (|| {
        Some(Feedback {
            village: village?,
            items: items?,
        })
    })();
    dec.finish(fb)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use automerge::AutoCommit;
    use proptest::prelude::*;
    use serde_json::json;

    fn village() -> AreaCode {
        AreaCode::parse("511424104201").unwrap()
    }

    fn day(s: &str) -> Date {
        Date::parse(s).unwrap()
    }

    #[test]
    fn recording_is_first_time_idempotent_and_bounded() {
        let mut fb = Feedback::new(village());
        assert_eq!(
            fb.record_delivered("asf", day("2026-04-16")),
            Recorded::Changed
        );
        assert_eq!(
            fb.record_delivered("asf", day("2026-04-17")),
            Recorded::Unchanged
        );
        assert_eq!(fb.items["asf"].delivered_on(), Some(day("2026-04-16")));
        fb.record_view("asf", day("2026-04-16"));
        fb.record_view("asf", day("2026-04-16"));
        fb.record_view("asf", day("2026-04-19"));
        let item = &fb.items["asf"];
        assert_eq!(item.view_count(), 3);
        assert_eq!(item.first_viewed(), Some(day("2026-04-16")));
        assert_eq!(item.last_viewed(), Some(day("2026-04-19")));
        assert!(!fb.helped());
        assert_eq!(
            fb.record_helpful("asf", day("2026-04-19")),
            Recorded::Changed
        );
        assert_eq!(
            fb.record_helpful("asf", day("2026-04-19")),
            Recorded::Unchanged
        );
        assert_eq!(
            fb.record_helpful("asf", day("2026-04-20")),
            Recorded::Unchanged
        );
        assert!(fb.reached() && fb.viewed() && fb.helped());
        for _ in 0..MAX_VIEWS_PER_DAY + 5 {
            fb.record_view("pig", day("2026-04-20"));
        }
        assert_eq!(fb.items["pig"].view_count(), u64::from(MAX_VIEWS_PER_DAY));
        fb.validate().unwrap();
    }

    #[test]
    fn concurrent_edits_on_two_nodes_merge() {
        let mut fb = Feedback::new(village());
        fb.record_delivered("asf", day("2026-04-16"));
        fb.record_view("asf", day("2026-04-16"));
        let mut a = AutoCommit::new();
        fb.write_to(&mut a).unwrap();
        let mut b = a.fork();
        // Node A: one more view today; node B: one more view today and a helpful rating.
        let mut fa = Feedback::read_from(&a).unwrap();
        fa.record_view("asf", day("2026-04-16"));
        fa.write_to(&mut a).unwrap();
        let mut fb_b = Feedback::read_from(&b).unwrap();
        fb_b.record_view("asf", day("2026-04-16"));
        fb_b.record_helpful("asf", day("2026-04-16"));
        fb_b.record_delivered("pig", day("2026-04-16"));
        fb_b.write_to(&mut b).unwrap();
        a.merge(&mut b).unwrap();
        let merged = Feedback::read_from(&a).unwrap();
        let item = &merged.items["asf"];
        assert_eq!(item.view_count(), 3, "both increments kept");
        assert!(item.is_helpful());
        assert!(merged.items["pig"].delivered_on().is_some());
    }

    #[test]
    fn document_round_trip_and_incremental_write() {
        let mut fb = Feedback::new(village());
        fb.record_delivered("asf", day("2026-04-16"));
        let mut doc = AutoCommit::new();
        fb.write_to(&mut doc).unwrap();
        assert_eq!(Feedback::read_from(&doc).unwrap(), fb);
        let heads = doc.get_heads();
        fb.write_to(&mut doc).unwrap();
        assert_eq!(doc.get_heads(), heads, "an unchanged write writes nothing");
        fb.record_view("asf", day("2026-04-17"));
        fb.write_to(&mut doc).unwrap();
        assert_eq!(Feedback::read_from(&doc).unwrap(), fb);
        fb.items.remove("asf");
        fb.write_to(&mut doc).unwrap();
        assert_eq!(Feedback::read_from(&doc).unwrap(), fb);
        fb.village = AreaCode::parse("513401104201").unwrap();
        assert!(matches!(
            fb.write_to(&mut doc),
            Err(ViewError::Identity { .. })
        ));
    }

    #[test]
    fn bad_input_reports_every_error() {
        let errors = Feedback::from_json(&json!({
            "village": "511424000000", "name": "张三",
            "items": {"bad id!": {}, "x": {"delivered": {"2026-4-1": true},
                "views": {"2026-04-01": -1, "2026-04-02": "3"}, "helpful": [1], "extra": 1}}
        }))
        .unwrap_err();
        for (f, c) in [
            ("village", code::WRONG_LEVEL),
            ("name", code::UNKNOWN_FIELD),
            ("items.bad id!", code::BAD_FORMAT),
            ("items.x.delivered.2026-4-1", code::BAD_FORMAT),
            ("items.x.views.2026-04-01", code::OUT_OF_RANGE),
            ("items.x.views.2026-04-02", code::OUT_OF_RANGE),
            ("items.x.helpful", code::WRONG_TYPE),
            ("items.x.extra", code::UNKNOWN_FIELD),
        ] {
            assert!(errors.has(f, c), "{f} {c}: {errors:?}");
        }
        assert!(Feedback::from_json(&json!({"items": {}}))
            .unwrap_err()
            .has("village", code::REQUIRED));
    }

    fn arb_days() -> impl Strategy<Value = BTreeSet<Date>> {
        proptest::collection::btree_set(
            (1u8..=12, 1u8..=28).prop_map(|(m, d)| Date::new(2026, m, d).unwrap()),
            0..4,
        )
    }

    fn arb_fb() -> impl Strategy<Value = Feedback> {
        proptest::collection::btree_map(
            "[a-z0-9_-]{1,20}",
            (
                arb_days(),
                proptest::collection::btree_map(
                    (1u8..=12, 1u8..=28).prop_map(|(m, d)| Date::new(2026, m, d).unwrap()),
                    1..=MAX_VIEWS_PER_DAY,
                    0..5,
                ),
                arb_days(),
            ),
            0..10,
        )
        .prop_map(|m| Feedback {
            village: village(),
            items: m
                .into_iter()
                .map(|(id, (delivered, views, helpful))| {
                    (
                        id,
                        FbItem {
                            delivered,
                            views,
                            helpful,
                        },
                    )
                })
                .collect(),
        })
    }

    proptest! {
        #[test]
        fn json_and_document_round_trip(fb in arb_fb(), next in arb_fb()) {
            let json = serde_json::to_value(&fb).unwrap();
            prop_assert_eq!(&Feedback::from_json(&json).unwrap(), &fb);
            let mut doc = AutoCommit::new();
            fb.write_to(&mut doc).unwrap();
            let loaded = AutoCommit::load(&doc.save()).unwrap();
            prop_assert_eq!(&Feedback::read_from(&loaded).unwrap(), &fb);
            // Overwriting with any other value reads back as that value (counters move by
            // the difference).
            next.write_to(&mut doc).unwrap();
            prop_assert_eq!(Feedback::read_from(&doc).unwrap(), next);
        }
    }
}
