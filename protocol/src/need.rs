//! Typed view of a local science-and-technology need (`need`, 科技所需).
//!
//! This module owns the need schema: who asks (a village collective, cooperative, firm or family
//! farm), what they ask for (title, description, need tags), where it stands (status and its
//! allowed transitions), and how it was received (satisfaction, only once resolved). A need is
//! public: it names a contact *role*, never a person's phone. Representation in JSON and in
//! Automerge follows [`crate::fields`]; the title, description and contact role are `Text`.
//!
//! The need's id is the document id of its key `<area>/need/<id>`; it is not repeated inside.
//!
//! | field | JSON | rule |
//! |---|---|---|
//! | `area` | string, 12 digits | required; a county, township or village code |
//! | `requester` | [`Requester`] id | required |
//! | `title` | string | required, 1–60 characters, one line (Text) |
//! | `description` | string (default "") | ≤ 2000 characters (Text) |
//! | `tags` | `{tag id: true}` (default {}) | need tags of the tree, at most [`MAX_NEED_TAGS`] |
//! | `status` | [`NeedStatus`] id (default "open") | changes follow [`NeedStatus::can_become`] |
//! | `satisfaction` | integer 1–5 or null | only when `status` is `resolved` |
//! | `contact_role` | string (default "") | ≤ 30 characters, one line (Text), e.g. `村支书` |
//! | `created`, `updated` | `YYYY-MM-DD` or null | `updated` not before `created`; the caller (which has a clock) fills them in |
//! | `expert_choice` | `{expert id: "accepted" \| "declined"}` (default {}) | the village's answer to the hub's suggestions ([`ExpertChoice`]): at most one accepted, at most [`MAX_EXPERT_CHOICES`] entries; a declined expert is not suggested again |
//!
//! ```
//! use cunyun_protocol::need::{LocalNeed, NeedStatus};
//! let need = LocalNeed::from_json(&serde_json::json!({
//!     "area": "510122104201", "requester": "coop",
//!     "title": "柑橘大实蝇绿色防控技术指导",
//!     "description": "合作社有柑橘300亩，去年大实蝇危害严重，希望专家现场指导诱杀和清园。",
//!     "tags": {"plt.citrus": true, "plt.pesticide": true},
//!     "contact_role": "合作社理事长", "created": "2025-04-02", "updated": "2025-04-02"
//! })).expect("valid");
//! assert_eq!(need.status, NeedStatus::Open);
//! ```

use std::collections::{BTreeMap, BTreeSet};

use automerge::transaction::Transactable;
use automerge::ReadDoc;
use serde::Serialize;
use serde_json::Value;

use crate::area::{AreaCode, Level};
use crate::fields::{
    check_identity, check_schema, code, coded_enum, doc_to_json, serialize_set, write_root, Date,
    Decoder, FieldError, FieldErrors, Mode, TextRule, ViewError, SCHEMA_VERSION,
};
use crate::key::{DocKey, KeyError, Kind};
use crate::taxonomy::Tag;

/// Most answers to expert suggestions per need.
pub const MAX_EXPERT_CHOICES: usize = 20;
/// Most tags per need.
pub const MAX_NEED_TAGS: usize = 10;
/// Longest title, in characters.
pub const MAX_TITLE_CHARS: usize = 60;
/// Longest description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 2000;
/// Free-text fields of the need document, stored as Automerge `Text`.
pub const NEED_TEXT_FIELDS: [&str; 3] = ["title", "description", "contact_role"];

coded_enum! {
    /// Who raises the need.
    pub enum Requester {
        VillageCollective = "village_collective", "村集体";
        Coop = "coop", "合作社";
        Enterprise = "enterprise", "企业";
        FamilyFarm = "family_farm", "家庭农场";
        Other = "other", "其他";
    }
}

coded_enum! {
    /// Where a need stands.
    pub enum NeedStatus {
        Open = "open", "待对接";
        Matched = "matched", "已匹配";
        InService = "in_service", "服务中";
        Resolved = "resolved", "已解决";
        Closed = "closed", "已关闭";
    }
}

impl NeedStatus {
    /// The statuses this one may change to (besides staying the same):
    ///
    /// - open → matched, closed
    /// - matched → in_service, open (the match fell through), closed
    /// - in_service → resolved, closed
    /// - resolved → none (a recurring problem is a new need)
    /// - closed → open (reopened)
    pub const fn next(self) -> &'static [NeedStatus] {
        match self {
            NeedStatus::Open => &[NeedStatus::Matched, NeedStatus::Closed],
            NeedStatus::Matched => &[NeedStatus::InService, NeedStatus::Open, NeedStatus::Closed],
            NeedStatus::InService => &[NeedStatus::Resolved, NeedStatus::Closed],
            NeedStatus::Resolved => &[],
            NeedStatus::Closed => &[NeedStatus::Open],
        }
    }

    /// Whether a need in this status may change to `to`; staying the same is always allowed.
    pub fn can_become(self, to: NeedStatus) -> bool {
        self == to || self.next().contains(&to)
    }
}

coded_enum! {
    /// The village's answer to one expert the hub suggested for its need.
    pub enum ExpertChoice {
        Accepted = "accepted", "选定";
        Declined = "declined", "请换一位";
    }
}

/// A local science-and-technology need (科技所需). Public; reaches the hub.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LocalNeed {
    /// The area it belongs to: a county, township or village code.
    pub area: AreaCode,
    /// Who raises it.
    pub requester: Requester,
    /// Short title, 1–60 characters (Text).
    pub title: String,
    /// Description, up to 2000 characters (Text).
    pub description: String,
    /// Need tags.
    #[serde(serialize_with = "serialize_set")]
    pub tags: BTreeSet<Tag>,
    /// Where it stands.
    pub status: NeedStatus,
    /// Satisfaction 1–5, only once resolved.
    pub satisfaction: Option<u8>,
    /// The contact's role, e.g. `村支书` (Text). Never a personal phone number.
    pub contact_role: String,
    /// Date raised.
    pub created: Option<Date>,
    /// Date last updated.
    pub updated: Option<Date>,
    /// The village's answers to suggested experts, by expert id.
    pub expert_choice: BTreeMap<String, ExpertChoice>,
}

const TITLE: TextRule = TextRule {
    max_chars: MAX_TITLE_CHARS,
    required: true,
    multiline: false,
};
const DESCRIPTION: TextRule = TextRule {
    max_chars: MAX_DESCRIPTION_CHARS,
    required: false,
    multiline: true,
};
const CONTACT_ROLE: TextRule = TextRule {
    max_chars: 30,
    required: false,
    multiline: false,
};

impl LocalNeed {
    /// A new open need with only the required fields set.
    pub fn new(area: AreaCode, requester: Requester, title: impl Into<String>) -> LocalNeed {
        LocalNeed {
            area,
            requester,
            title: title.into(),
            description: String::new(),
            tags: BTreeSet::new(),
            status: NeedStatus::Open,
            satisfaction: None,
            contact_role: String::new(),
            created: None,
            updated: None,
            expert_choice: BTreeMap::new(),
        }
    }

    /// The expert the village accepted, if any.
    pub fn accepted_expert(&self) -> Option<&str> {
        self.expert_choice
            .iter()
            .find(|(_, c)| **c == ExpertChoice::Accepted)
            .map(|(id, _)| id.as_str())
    }

    /// Whether the village asked for another expert than `expert_id`.
    pub fn declines(&self, expert_id: &str) -> bool {
        self.expert_choice.get(expert_id) == Some(&ExpertChoice::Declined)
    }

    /// Parses API or form input, collecting every problem.
    pub fn from_json(value: &Value) -> Result<LocalNeed, FieldErrors> {
        Self::decode(value, Mode::Input)
    }

    /// Checks a value built in code against the same rules as [`LocalNeed::from_json`].
    pub fn validate(&self) -> Result<(), FieldErrors> {
        let json = serde_json::to_value(self).map_err(|e| {
            FieldErrors(vec![FieldError::new(
                "",
                code::WRONG_TYPE,
                format!("内部编码失败：{e}"),
            )])
        })?;
        Self::decode(&json, Mode::Input).map(|_| ())
    }

    /// Checks that `next` is an allowed update of `self`: the status change follows
    /// [`NeedStatus::can_become`], and the area and creation date do not change.
    pub fn check_transition(&self, next: &LocalNeed) -> Result<(), FieldErrors> {
        let mut errors = Vec::new();
        if !self.status.can_become(next.status) {
            let allowed: Vec<&str> = self.status.next().iter().map(|s| s.zh_name()).collect();
            let allowed = if allowed.is_empty() {
                "不能再改变".to_string()
            } else {
                format!("只能改为{}", allowed.join("、"))
            };
            errors.push(FieldError::new(
                "status",
                code::BAD_TRANSITION,
                format!(
                    "需求状态不能从“{}”改为“{}”，{allowed}",
                    self.status.zh_name(),
                    next.status.zh_name()
                ),
            ));
        }
        if self.area != next.area {
            errors.push(FieldError::new(
                "area",
                code::IMMUTABLE,
                "需求所属区划不能修改",
            ));
        }
        if self.created.is_some() && self.created != next.created {
            errors.push(FieldError::new(
                "created",
                code::IMMUTABLE,
                "需求的提出日期不能修改",
            ));
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(FieldErrors(errors))
        }
    }

    /// Reads the need from its document (missing fields read as defaults; consistency is not
    /// checked, see [`crate::fields`]).
    pub fn read_from<R: ReadDoc>(doc: &R) -> Result<LocalNeed, ViewError> {
        let json = doc_to_json(doc)?;
        check_schema(&json, SCHEMA_VERSION)?;
        Ok(Self::decode(&json, Mode::Document)?)
    }

    /// Validates, then writes into `tx` only the fields that differ from the document. Refuses
    /// to change the area of an existing document.
    pub fn write_to<T: Transactable>(&self, tx: &mut T) -> Result<(), ViewError> {
        self.validate()?;
        check_identity(tx, "area", "所属区划", self.area.as_str())?;
        let desired = serde_json::to_value(self).map_err(|e| ViewError::Encode(e.to_string()))?;
        write_root(tx, &desired, &NEED_TEXT_FIELDS)
    }

    /// The key of this need's document, given its id.
    pub fn key(&self, id: &str) -> Result<DocKey, KeyError> {
        DocKey::new(self.area, Kind::Need, id)
    }

    fn decode(value: &Value, mode: Mode) -> Result<LocalNeed, FieldErrors> {
        let mut dec = Decoder::new(mode);
        let Some(mut o) = dec.root(value, "科技需求") else {
            return dec.finish(None);
        };
        let d = &mut dec;
        o.schema(d);
        let area = o.area(
            d,
            "area",
            "所属区划",
            &[Level::County, Level::Township, Level::Village],
        );
        let requester = o.coded_or(d, "requester", "需求方类型", None);
        let title = o.text(d, "title", "需求标题", TITLE);
        let description = o.text(d, "description", "需求描述", DESCRIPTION);
        let tags = o.set(d, "tags", "需求标签", MAX_NEED_TAGS);
        let status = o.coded_or(d, "status", "需求状态", Some(NeedStatus::Open));
        let satisfaction = o.opt_small(d, "satisfaction", "满意度", 1, 5);
        let contact_role = o.text(d, "contact_role", "联系人职务", CONTACT_ROLE);
        let created = o.date(d, "created", "提出日期");
        let updated = o.date(d, "updated", "更新日期");
        let expert_choice = expert_choices(&mut o, d);
        o.finish(d);
        if d.mode() == Mode::Input {
            if let (Some(Some(_)), Some(status)) = (satisfaction, status) {
                if status != NeedStatus::Resolved {
                    d.push(
                        "satisfaction",
                        code::INCONSISTENT,
                        format!(
                            "只有已解决的需求才能评价满意度，当前状态为“{}”",
                            status.zh_name()
                        ),
                    );
                }
            }
            if let (Some(Some(c)), Some(Some(u))) = (created, updated) {
                if u < c {
                    d.push(
                        "updated",
                        code::INCONSISTENT,
                        format!("更新日期（{u}）早于提出日期（{c}）"),
                    );
                }
            }
        }
        let need = (|| {
            Some(LocalNeed {
                area: area?,
                requester: requester?,
                title: title?,
                description: description?,
                tags: tags?,
                status: status?,
                satisfaction: satisfaction?,
                contact_role: contact_role?,
                created: created?,
                updated: updated?,
                expert_choice: expert_choice?,
            })
        })();
        dec.finish(need)
    }
}

/// Reads `expert_choice`: `{expert id: "accepted" | "declined"}`; a `null` entry (a merge patch
/// withdrawing an answer) is no entry.
fn expert_choices(
    o: &mut crate::fields::Obj<'_>,
    d: &mut Decoder,
) -> Option<BTreeMap<String, ExpertChoice>> {
    let path = o.path("expert_choice");
    let before = d.count();
    let mut out = BTreeMap::new();
    match o.raw("expert_choice") {
        None | Some(Value::Null) => {}
        Some(Value::Object(map)) => {
            for (id, v) in map {
                let item = format!("{path}.{id}");
                if !crate::key::valid_id(id) {
                    d.push(
                        item.clone(),
                        code::BAD_FORMAT,
                        format!("专家编号“{id}”无效"),
                    );
                    continue;
                }
                match v {
                    Value::Null => {}
                    Value::String(c) => match ExpertChoice::parse(c) {
                        Some(c) => {
                            out.insert(id.clone(), c);
                        }
                        None => d.push(
                            item,
                            code::UNKNOWN_VALUE,
                            format!("对专家的答复“{c}”无效，应为 accepted（选定）或 declined（请换一位）"),
                        ),
                    },
                    _ => d.push(
                        item,
                        code::WRONG_TYPE,
                        "对专家的答复应为 \"accepted\" 或 \"declined\"",
                    ),
                }
            }
        }
        Some(_) => d.push(
            path.clone(),
            code::WRONG_TYPE,
            "对专家的答复应为对象，如 {\"e0123456789abcdef\": \"accepted\"}",
        ),
    }
    if d.mode() == Mode::Input {
        if out.len() > MAX_EXPERT_CHOICES {
            d.push(
                path.clone(),
                code::TOO_MANY,
                format!(
                    "对专家的答复最多{MAX_EXPERT_CHOICES}条，现有{}条",
                    out.len()
                ),
            );
        }
        let accepted = out
            .values()
            .filter(|c| **c == ExpertChoice::Accepted)
            .count();
        if accepted > 1 {
            d.push(
                path,
                code::INCONSISTENT,
                format!("一条需求只能选定一位专家，现选定了{accepted}位"),
            );
        }
    }
    (d.count() == before).then_some(out)
}

#[cfg(test)]
mod tests {
    use automerge::{AutoCommit, ObjType, ROOT};
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    fn example() -> Value {
        json!({
            "area": "510122104201", "requester": "coop",
            "title": "柑橘大实蝇绿色防控技术指导",
            "description": "合作社有柑橘300亩，去年大实蝇危害严重。\n希望专家现场指导诱杀和清园。",
            "tags": {"plt.citrus": true, "plt.pesticide": true},
            "status": "open", "satisfaction": null,
            "contact_role": "合作社理事长", "created": "2025-04-02", "updated": "2025-04-02"
        })
    }

    #[test]
    fn parses_and_serialises_back() {
        let n = LocalNeed::from_json(&example()).expect("valid");
        assert_eq!(n.requester, Requester::Coop);
        assert_eq!(n.tags.len(), 2);
        let json = serde_json::to_value(&n).expect("serialise");
        let mut expected = example();
        expected["expert_choice"] = json!({});
        assert_eq!(json, expected);
        assert_eq!(LocalNeed::from_json(&json).expect("again"), n);
        assert_eq!(
            n.key("n0001").map(|k| k.to_string()),
            Ok("510122104201/need/n0001".into())
        );
    }

    #[test]
    fn collects_every_error() {
        let errs = LocalNeed::from_json(&json!({
            "area": "510000000000",
            "requester": "government",
            "title": "标".repeat(61),
            "tags": {"plt.nope": true},
            "status": "done",
            "satisfaction": 6,
            "contact_role": "村支书\n王",
            "created": "2025-4-2",
            "phone": "13812345678"
        }))
        .expect_err("invalid");
        for (field, c) in [
            ("area", code::WRONG_LEVEL),
            ("requester", code::UNKNOWN_VALUE),
            ("title", code::TOO_LONG),
            ("tags.plt.nope", code::UNKNOWN_VALUE),
            ("status", code::UNKNOWN_VALUE),
            ("satisfaction", code::OUT_OF_RANGE),
            ("contact_role", code::BAD_FORMAT),
            ("created", code::BAD_FORMAT),
            ("phone", code::UNKNOWN_FIELD),
        ] {
            assert!(errs.has(field, c), "missing {field}/{c}: {errs:#?}");
        }
        assert_eq!(errs.len(), 9, "{errs:#?}");
        let errs = LocalNeed::from_json(&json!({"area": "510122104201", "title": "  "}))
            .expect_err("invalid");
        assert!(errs.has("title", code::REQUIRED));
        assert!(errs.has("requester", code::REQUIRED));
        let too_many: serde_json::Map<String, Value> = Tag::all()
            .take(11)
            .map(|t| (t.id().into(), json!(true)))
            .collect();
        let mut v = example();
        v["tags"] = Value::Object(too_many);
        assert!(LocalNeed::from_json(&v)
            .expect_err("too many")
            .has("tags", code::TOO_MANY));
    }

    #[test]
    fn consistency() {
        let mut v = example();
        v["satisfaction"] = json!(4);
        let errs = LocalNeed::from_json(&v).expect_err("not resolved");
        assert!(errs.has("satisfaction", code::INCONSISTENT));
        v["status"] = json!("resolved");
        assert!(LocalNeed::from_json(&v).is_ok());
        v["updated"] = json!("2025-04-01");
        let errs = LocalNeed::from_json(&v).expect_err("updated before created");
        assert!(errs.has("updated", code::INCONSISTENT));
        // Townships and counties may raise needs too.
        v["updated"] = json!("2025-05-01");
        v["area"] = json!("510122104000");
        assert!(LocalNeed::from_json(&v).is_ok());
        v["area"] = json!("510122000000");
        assert!(LocalNeed::from_json(&v).is_ok());
    }

    #[test]
    fn status_transitions() {
        use NeedStatus::*;
        let allowed = [
            (Open, Matched),
            (Open, Closed),
            (Matched, InService),
            (Matched, Open),
            (Matched, Closed),
            (InService, Resolved),
            (InService, Closed),
            (Closed, Open),
        ];
        for from in NeedStatus::ALL.iter().copied() {
            for to in NeedStatus::ALL.iter().copied() {
                let expected = from == to || allowed.contains(&(from, to));
                assert_eq!(from.can_become(to), expected, "{from:?} → {to:?}");
            }
        }
        let old = LocalNeed::from_json(&example()).expect("valid");
        let mut next = old.clone();
        next.status = Matched;
        assert_eq!(old.check_transition(&next), Ok(()));
        next.status = Resolved;
        next.satisfaction = Some(5);
        let errs = old.check_transition(&next).expect_err("open → resolved");
        assert!(errs.has("status", code::BAD_TRANSITION));
        assert!(errs.iter().all(|e| e.message.contains("待对接")));
        next.status = Open;
        next.created = Date::parse("2025-01-01");
        next.area = AreaCode::parse("510122104202").expect("valid");
        let errs = old.check_transition(&next).expect_err("immutable");
        assert!(errs.has("created", code::IMMUTABLE) && errs.has("area", code::IMMUTABLE));
    }

    #[test]
    fn document_round_trip_and_concurrent_edits() {
        let n = LocalNeed::from_json(&example()).expect("valid");
        let mut a = AutoCommit::new();
        n.write_to(&mut a).expect("write");
        a.commit();
        assert_eq!(LocalNeed::read_from(&a).expect("read"), n);
        for k in NEED_TEXT_FIELDS {
            let (v, _) = a.get(ROOT, k).expect("get").expect("present");
            assert_eq!(v, automerge::Value::Object(ObjType::Text), "{k}");
        }
        let (v, _) = a.get(ROOT, "status").expect("get").expect("present");
        assert_eq!(v.as_str(), Some("open"));
        n.write_to(&mut a).expect("again");
        assert_eq!(a.pending_ops(), 0);

        let mut b = a.fork();
        let mut na = n.clone();
        na.title = "柑橘大实蝇绿色防控现场技术指导".into();
        na.tags.insert(Tag::DigCoop);
        na.write_to(&mut a).expect("a");
        a.commit();
        let mut nb = n.clone();
        nb.description = format!("{}\n联系时间：工作日上午。", n.description);
        nb.status = NeedStatus::Matched;
        nb.tags.remove(&Tag::PltPesticide);
        nb.write_to(&mut b).expect("b");
        b.commit();
        a.merge(&mut b).expect("merge");
        let merged = LocalNeed::read_from(&a).expect("read");
        assert_eq!(merged.title, na.title);
        assert_eq!(merged.description, nb.description);
        assert_eq!(merged.status, NeedStatus::Matched);
        assert_eq!(
            merged.tags.iter().copied().collect::<Vec<_>>(),
            vec![Tag::PltCitrus, Tag::DigCoop]
        );
        let mut other = n.clone();
        other.area = AreaCode::parse("510122104202").expect("valid");
        assert!(matches!(
            other.write_to(&mut a),
            Err(ViewError::Identity { .. })
        ));
    }

    #[test]
    fn expert_choice_accepts_one_expert_and_refuses_bad_answers_in_chinese() {
        let mut v = example();
        v["expert_choice"] = json!({"e0123456789abcdef": "accepted", "e1111111111111111": "declined", "e2222222222222222": null});
        let n = LocalNeed::from_json(&v).expect("valid");
        assert_eq!(n.accepted_expert(), Some("e0123456789abcdef"));
        assert!(n.declines("e1111111111111111"));
        assert!(!n.declines("e0123456789abcdef"));
        assert_eq!(n.expert_choice.len(), 2, "a null answer is no answer");

        v["expert_choice"] =
            json!({"e0123456789abcdef": "accepted", "e1111111111111111": "accepted"});
        let e = LocalNeed::from_json(&v).expect_err("two accepted");
        assert!(e.has("expert_choice", code::INCONSISTENT), "{e:?}");
        assert!(e.to_string().contains("只能选定一位专家"), "{e}");

        v["expert_choice"] = json!({"e0123456789abcdef": "maybe", "bad id!": "declined"});
        let e = LocalNeed::from_json(&v).expect_err("bad answers");
        assert!(
            e.has("expert_choice.e0123456789abcdef", code::UNKNOWN_VALUE),
            "{e:?}"
        );
        assert!(e.has("expert_choice.bad id!", code::BAD_FORMAT), "{e:?}");

        v["expert_choice"] = json!(["e0123456789abcdef"]);
        let e = LocalNeed::from_json(&v).expect_err("not an object");
        assert!(e.has("expert_choice", code::WRONG_TYPE), "{e:?}");
    }

    #[test]
    fn scalar_strings_read_as_text() {
        let mut doc = AutoCommit::new();
        doc.put(ROOT, "area", "510122104201").expect("put");
        doc.put(ROOT, "requester", "enterprise").expect("put");
        doc.put(ROOT, "title", "茶园机采").expect("put");
        let status = doc.put_object(ROOT, "status", ObjType::Text).expect("text");
        doc.splice_text(&status, 0, 0, "in_service")
            .expect("splice");
        let n = LocalNeed::read_from(&doc).expect("read");
        assert_eq!(n.title, "茶园机采");
        assert_eq!(n.status, NeedStatus::InService);
        assert_eq!(n.description, "");
    }

    fn arb_need() -> impl Strategy<Value = LocalNeed> {
        (
            prop::sample::select(vec!["510122104201", "510122104000", "510122000000"]),
            prop::sample::select(Requester::ALL),
            "[^\\p{Cc}]{1,60}",
            "[^\\p{Cc}]{0,80}|[\\p{Han}\n]{0,80}",
            prop::collection::btree_set(prop::sample::select(Tag::ALL), 0..=MAX_NEED_TAGS),
            prop::sample::select(NeedStatus::ALL),
            1u8..=5,
            "[\\p{Han}]{0,6}",
            prop::option::of((2020u16..2030, 1u8..=12, 1u8..=28, 0u16..2)),
        )
            .prop_filter("title must not be blank", |t| !t.2.trim().is_empty())
            .prop_map(
                |(area, requester, title, description, tags, status, sat, role, dates)| {
                    let created = dates.and_then(|(y, m, d, _)| Date::new(y, m, d));
                    let updated = dates.and_then(|(y, m, d, add)| Date::new(y + add, m, d));
                    LocalNeed {
                        area: AreaCode::parse(area).expect("valid"),
                        requester,
                        title,
                        description,
                        tags,
                        status,
                        satisfaction: (status == NeedStatus::Resolved).then_some(sat),
                        contact_role: role,
                        created,
                        updated,
                        expert_choice: BTreeMap::new(),
                    }
                },
            )
            .prop_flat_map(|n| {
                (
                    Just(n),
                    prop::collection::btree_map(
                        "e[0-9a-f]{16}",
                        Just(ExpertChoice::Declined),
                        0..4,
                    ),
                    prop::option::of("e[0-9a-f]{16}"),
                )
            })
            .prop_map(|(mut n, declined, accepted)| {
                n.expert_choice = declined;
                if let Some(a) = accepted {
                    n.expert_choice.insert(a, ExpertChoice::Accepted);
                }
                n
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]

        #[test]
        fn generated_needs_round_trip(n in arb_need(), m in arb_need()) {
            prop_assert_eq!(n.validate(), Ok(()));
            let json = serde_json::to_value(&n).expect("serialise");
            prop_assert_eq!(&LocalNeed::from_json(&json).expect("from_json"), &n);
            let mut doc = AutoCommit::new();
            n.write_to(&mut doc).expect("write");
            doc.commit();
            prop_assert_eq!(&LocalNeed::read_from(&doc).expect("read"), &n);
            n.write_to(&mut doc).expect("again");
            prop_assert_eq!(doc.pending_ops(), 0);
            // Overwrite with another need of the same area.
            let m = LocalNeed { area: n.area, ..m };
            m.write_to(&mut doc).expect("write m");
            prop_assert_eq!(&LocalNeed::read_from(&doc).expect("read m"), &m);
        }
    }
}
